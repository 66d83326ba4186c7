//! Downloads for `ADD URL`: streamed into the store as a blob (digest computed on the way), checked
//! against `--checksum`, remembered for the build so the cache key and the step use the same bytes.
//!
//! TLS trusts the system's CA store (reqwest with rustls and the platform verifier, as the registry
//! client does), so downloads work behind TLS-intercepting proxies; `HTTP(S)_PROXY`/`NO_PROXY` apply.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _, Result};
use oci::Digest;

/// One download of this build.
#[derive(Clone, Debug)]
struct Fetched {
    digest: Digest,
    /// `Last-Modified`, when the server sent one.
    modified: Option<SystemTime>,
}

/// The downloads of one build.
pub struct Downloads {
    store: Arc<cache::Store>,
    rt: tokio::runtime::Handle,
    /// Made on the first download: loading the system's CA store costs milliseconds every build otherwise.
    http: std::sync::OnceLock<reqwest::Client>,
    fetched: Mutex<HashMap<String, Fetched>>,
}

impl Downloads {
    pub fn new(store: Arc<cache::Store>, rt: tokio::runtime::Handle) -> Self {
        Self {
            store,
            rt,
            http: std::sync::OnceLock::new(),
            fetched: Mutex::new(HashMap::new()),
        }
    }

    fn http(&self) -> Result<&reqwest::Client> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let c = reqwest::Client::builder()
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .build()
            .context("setting up the HTTP client for ADD URL")?;
        Ok(self.http.get_or_init(|| c))
    }

    /// The content key of a download: its `--checksum` (no network), or the digest of the bytes fetched now.
    pub fn content_key(&self, h: &graph::Http) -> Result<String> {
        if let Some(sum) = &h.checksum {
            return Ok(sum.clone());
        }
        Ok(self.fetch(h)?.digest.to_string())
    }

    /// Writes the downloaded file as `dir/{filename}`: mode 0600 and the server's `Last-Modified` as mtime
    /// (as BuildKit does).
    pub fn materialize(&self, h: &graph::Http, dir: &Path) -> Result<()> {
        let f = self.fetch(h)?;
        let target = dir.join(&h.filename);
        let mut src = self.store.open_blob(&f.digest)?;
        let mut dst = fs_err::File::create(&target)?;
        std::io::copy(&mut src, &mut dst)
            .with_context(|| format!("writing {}", target.display()))?;
        drop(dst);
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if let Some(t) = f.modified {
            filetime::set_file_mtime(&target, filetime::FileTime::from_system_time(t))?;
        }
        Ok(())
    }

    /// Downloads `url` into the file `target` (a build context tarball; the blob stays in the store until
    /// `rbuild prune`).
    pub fn download_to(&self, url: &str, target: &Path) -> Result<()> {
        let f = self.rt.block_on(self.download(url))?;
        let mut src = self.store.open_blob(&f.digest)?;
        let mut dst = fs_err::File::create(target)?;
        std::io::copy(&mut src, &mut dst)
            .with_context(|| format!("writing {}", target.display()))?;
        Ok(())
    }

    /// The download of `h.url` in this build, fetching it the first time.
    fn fetch(&self, h: &graph::Http) -> Result<Fetched> {
        if let Some(f) = self.lock().get(&h.url) {
            return Ok(f.clone());
        }
        let f = self
            .rt
            .block_on(self.download(&h.url))
            .with_context(|| format!("ADD {}", h.url))?;
        if let Some(sum) = &h.checksum {
            if f.digest.to_string() != *sum {
                bail!(
                    "ADD {}: checksum mismatch: expected {sum}, downloaded content is {}",
                    h.url,
                    f.digest
                );
            }
        }
        self.lock().insert(h.url.clone(), f.clone());
        Ok(f)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fetched>> {
        self.fetched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn download(&self, url: &str) -> Result<Fetched> {
        let mut resp = self
            .http()?
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow!("cannot download: {}", error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("the server answered {status}");
        }
        let modified = resp
            .headers()
            .get(reqwest::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(httpdate_parse);
        let mut w = self.store.blob_writer()?;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| anyhow!("download interrupted: {}", error_chain(&e)))?
        {
            w.write_all(&chunk)?;
        }
        let (digest, _) = w.commit(None)?;
        Ok(Fetched { digest, modified })
    }
}

/// `e` with its sources, `: `-separated (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Parses an RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn httpdate_parse(v: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    let secs = oci::time::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        let t = httpdate_parse("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        let t = httpdate_parse("Mon, 23 Nov 2026 00:00:00 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_795_392_000
        );
        assert!(httpdate_parse("yesterday").is_none());
    }
}
