//! Registry credentials: Docker's config.json (`auths`, `credHelpers`, `credsStore`, `identitytoken`),
//! podman's auth.json as a fallback, and [`login`]/[`logout`] to edit config.json.
//!
//! Lookup order for a registry, as in Docker: its `credHelpers` entry, else the `credsStore` helper, then
//! `auths` in config.json, then `auths` in the containers auth.json. A helper that has nothing for the
//! registry (it exits non-zero saying "credentials not found") makes the lookup go on; any other helper
//! failure is an error, since silently pulling anonymously would hide it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::Error;

/// A user name and password for one registry.
#[derive(Clone)]
pub(crate) struct BasicCredentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// What we can prove our identity to a registry with.
#[derive(Clone)]
pub(crate) enum Secret {
    /// User name and password: Basic auth, or Basic auth to the token service.
    Basic(BasicCredentials),
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user): exchanged at the token
    /// service with `grant_type=refresh_token`.
    IdentityToken(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Basic(b) => b.fmt(f),
            Secret::IdentityToken(_) => f.write_str("IdentityToken(..)"),
        }
    }
}

/// Credential sources for all registries, with helper answers cached per registry host.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    /// The config file looked at, for messages; `None` when there was no place to look.
    pub(crate) source: Option<PathBuf>,
    /// Whether `source` exists.
    pub(crate) found: bool,
    auths: HashMap<String, Secret>,
    /// `credHelpers`: registry host → helper name (`docker-credential-<name>`).
    helpers: HashMap<String, String>,
    /// `credsStore`: the helper for every registry without a `credHelpers` entry.
    store: Option<String>,
    /// `auths` of the containers (podman) auth.json.
    fallback: HashMap<String, Secret>,
    /// Searched for `docker-credential-*` before `PATH`.
    helper_dir: Option<PathBuf>,
    /// Resolved answers by normalised host (helpers are slow processes; ask each once).
    resolved: Mutex<HashMap<String, Option<Secret>>>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The config.json Docker would read: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker").join("config.json"))
}

/// The auth.json podman/skopeo/buildah would read: `$REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`.
pub fn default_containers_auth() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(f));
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(|dir| Path::new(&dir).join("containers").join("auth.json"))
}

/// The registry host a `login`/`logout` argument names, as references spell it: `https://index.docker.io/v1/`
/// → `docker.io`; `http://host:5000/x` → `host:5000`.
pub fn normalise_host(key: &str) -> String {
    let s = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => oci::DOCKER_HUB.to_owned(),
        other => other.to_owned(),
    }
}

/// The key Docker uses for a registry in `auths` and on a helper's stdin.
fn server_key(host: &str) -> String {
    if host == oci::DOCKER_HUB {
        "https://index.docker.io/v1/".to_owned()
    } else {
        host.to_owned()
    }
}

/// Reads a config file; `Ok(None)` when it does not exist.
fn read_config(path: &Path) -> Result<Option<DockerConfig>, Error> {
    let text = match fs_err::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::DockerConfig {
                path: path.to_owned(),
                source: Box::new(e),
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::DockerConfig {
            path: path.to_owned(),
            source: Box::new(e),
        })
}

/// The secrets of an `auths` map, by normalised host; entries with nothing usable are skipped.
fn parse_auths(
    path: &Path,
    auths: HashMap<String, DockerAuth>,
) -> Result<HashMap<String, Secret>, Error> {
    let bad = |msg: String| Error::DockerConfig {
        path: path.to_owned(),
        source: msg.into(),
    };
    let mut out = HashMap::new();
    for (key, entry) in auths {
        let secret = if let Some(tok) = entry.identitytoken.filter(|t| !t.is_empty()) {
            Secret::IdentityToken(tok)
        } else if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let decoded = base64_decode(auth.trim())
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| bad(format!("auths.{key}.auth is not base64 of user:password")))?;
            let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                bad(format!(
                    "auths.{key}.auth has no ':' between user and password"
                ))
            })?;
            Secret::Basic(BasicCredentials {
                username: user.to_owned(),
                password: pass.to_owned(),
            })
        } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
            Secret::Basic(BasicCredentials { username, password })
        } else {
            continue;
        };
        // The first key wins when several name the same host (`docker.io` and the v1 URL).
        out.entry(normalise_host(&key)).or_insert(secret);
    }
    Ok(out)
}

impl Credentials {
    /// Reads `config` (Docker) and `fallback` (containers auth.json); missing files mean no credentials,
    /// malformed ones are errors (as in Docker).
    pub(crate) fn load(
        config: Option<&Path>,
        fallback: Option<&Path>,
        helper_dir: Option<PathBuf>,
    ) -> Result<Self, Error> {
        let mut creds = Self {
            source: config.map(Path::to_owned),
            helper_dir,
            ..Self::default()
        };
        if let Some(path) = config {
            if let Some(c) = read_config(path)? {
                creds.found = true;
                creds.auths = parse_auths(path, c.auths)?;
                creds.helpers = c
                    .cred_helpers
                    .into_iter()
                    .map(|(k, v)| (normalise_host(&k), v))
                    .collect();
                creds.store = c.creds_store.filter(|s| !s.is_empty());
            }
        }
        if let Some(path) = fallback {
            if let Some(c) = read_config(path)? {
                creds.fallback = parse_auths(path, c.auths)?;
            }
        }
        Ok(creds)
    }

    /// Only `username`/`password` for `registry`, as [`crate::Client::check_login`] tries them.
    pub(crate) fn single(registry: &str, username: &str, password: &str) -> Self {
        let mut creds = Self::default();
        creds.auths.insert(
            normalise_host(registry),
            Secret::Basic(BasicCredentials {
                username: username.to_owned(),
                password: password.to_owned(),
            }),
        );
        creds
    }

    /// Credentials for a registry as written in a reference (`docker.io`, `127.0.0.1:5000`).
    pub(crate) async fn get(&self, registry: &str) -> Result<Option<Secret>, Error> {
        let host = normalise_host(registry);
        if let Some(known) = self
            .resolved
            .lock()
            .expect("credentials cache lock is never poisoned: no panics inside")
            .get(&host)
        {
            return Ok(known.clone());
        }
        let helper = self.helpers.get(&host).or(self.store.as_ref());
        let mut found = match helper {
            Some(name) => self.run_helper(name, &host).await?,
            None => None,
        };
        if found.is_none() {
            found = self
                .auths
                .get(&host)
                .or_else(|| self.fallback.get(&host))
                .cloned();
        }
        self.resolved
            .lock()
            .expect("credentials cache lock is never poisoned: no panics inside")
            .insert(host, found.clone());
        Ok(found)
    }

    /// Runs `docker-credential-<name> get` with the server on stdin.
    async fn run_helper(&self, name: &str, host: &str) -> Result<Option<Secret>, Error> {
        let program = format!("docker-credential-{name}");
        let path = self
            .helper_dir
            .as_ref()
            .map(|d| d.join(&program))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(&program));
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::CredentialHelper {
            helper: program.clone(),
            registry: host.to_owned(),
            source,
        };
        tracing::debug!(
            helper = program,
            registry = host,
            "asking credential helper"
        );
        let mut child = tokio::process::Command::new(&path)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| fail(Box::new(e)))?;
        let mut stdin = child
            .stdin
            .take()
            .expect("stdin was set to piped just above");
        // A helper may exit without reading stdin; a broken pipe then is not the failure to report.
        let written = stdin.write_all(server_key(host).as_bytes()).await;
        drop(stdin);
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| fail(Box::new(e)))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // docker-credential-helpers' ErrCredentialsNotFound goes to stdout.
            if stdout.contains("credentials not found") || stderr.contains("credentials not found")
            {
                return Ok(None);
            }
            let said = if stderr.trim().is_empty() {
                stdout.trim()
            } else {
                stderr.trim()
            };
            return Err(fail(format!("{} ({said})", out.status).into()));
        }
        written.map_err(|e| fail(Box::new(e)))?;
        #[derive(Deserialize)]
        struct HelperAnswer {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret", default)]
            secret: String,
        }
        let answer: HelperAnswer = serde_json::from_str(stdout.trim())
            .map_err(|e| fail(format!("invalid JSON on stdout: {e}").into()))?;
        if answer.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if answer.username == "<token>" {
            Secret::IdentityToken(answer.secret)
        } else {
            Secret::Basic(BasicCredentials {
                username: answer.username,
                password: answer.secret,
            })
        }))
    }
}

/// Stores `user`/`password` for `registry` in the Docker config at `config_path` as `auths.<host>.auth`,
/// keeping every other key; creates the file (mode 0600) and its directory when missing.
///
/// This writes config.json even when it names a `credsStore`: such a store is asked first, so stale
/// credentials there still win.
pub fn login(config_path: &Path, registry: &str, user: &str, password: &str) -> Result<(), Error> {
    let host = normalise_host(registry);
    let mut config = read_json(config_path)?;
    let auths = auths_object(config_path, &mut config)?;
    auths.retain(|k, _| normalise_host(k) != host);
    auths.insert(
        server_key(&host),
        serde_json::json!({ "auth": base64_encode(format!("{user}:{password}").as_bytes()) }),
    );
    write_json(config_path, &config)
}

/// Removes the `auths` entries for `registry` from the Docker config at `config_path`; returns whether
/// there was one. A missing file is not an error.
pub fn logout(config_path: &Path, registry: &str) -> Result<bool, Error> {
    let host = normalise_host(registry);
    if !config_path.exists() {
        return Ok(false);
    }
    let mut config = read_json(config_path)?;
    let auths = auths_object(config_path, &mut config)?;
    let before = auths.len();
    auths.retain(|k, _| normalise_host(k) != host);
    if auths.len() == before {
        return Ok(false);
    }
    write_json(config_path, &config)?;
    Ok(true)
}

fn read_json(path: &Path) -> Result<serde_json::Value, Error> {
    match fs_err::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(serde_json::json!({})),
        Ok(text) => serde_json::from_str(&text).map_err(|e| Error::DockerConfig {
            path: path.to_owned(),
            source: Box::new(e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(Error::DockerConfig {
            path: path.to_owned(),
            source: Box::new(e),
        }),
    }
}

fn auths_object<'a>(
    path: &Path,
    config: &'a mut serde_json::Value,
) -> Result<&'a mut serde_json::Map<String, serde_json::Value>, Error> {
    let bad = |msg: &str| Error::DockerConfig {
        path: path.to_owned(),
        source: msg.into(),
    };
    let obj = config
        .as_object_mut()
        .ok_or_else(|| bad("the top level is not a JSON object"))?;
    obj.entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| bad("auths is not a JSON object"))
}

/// Replaces `path` atomically (temp file in the same directory, then rename) with 0600 permissions.
fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), Error> {
    let fail = |source: std::io::Error| Error::WriteDockerConfig {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(fail)?;
    // tempfile creates the file with mode 0600, which is what a file of passwords should have.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    let mut text =
        serde_json::to_string_pretty(value).expect("a serde_json::Value always serialises");
    text.push('\n');
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Decodes standard base64 (padding optional); `None` if malformed.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Encodes standard base64 with padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut buf = [0u8; 3];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: Option<Secret>) -> (String, String) {
        match s {
            Some(Secret::Basic(b)) => (b.username, b.password),
            other => panic!("expected basic credentials, got {other:?}"),
        }
    }

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "user:pa ss:w0rd!", "\u{e9}t\u{e9}"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes(),
                "{s}"
            );
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("ab!c").is_none());
    }

    #[tokio::test]
    async fn reads_docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs_err::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},"127.0.0.1:5000":{"auth":"dXNlcjpwYXNz"},"plain.example":{"username":"u","password":"p"},"tok.example":{"auth":"","identitytoken":"refresh-me"}}}"#,
        )
        .unwrap();
        let c = Credentials::load(Some(&path), None, None).unwrap();
        assert_eq!(
            basic(c.get("docker.io").await.unwrap()),
            ("hub".into(), "secret".into())
        );
        assert_eq!(basic(c.get("127.0.0.1:5000").await.unwrap()).1, "pass");
        assert_eq!(basic(c.get("plain.example").await.unwrap()).0, "u");
        assert!(matches!(
            c.get("tok.example").await.unwrap(),
            Some(Secret::IdentityToken(t)) if t == "refresh-me"
        ));
        assert!(c.get("other:5000").await.unwrap().is_none());

        let missing =
            Credentials::load(Some(&dir.path().join("missing.json")), None, None).unwrap();
        assert!(!missing.found);
        assert!(missing.get("docker.io").await.unwrap().is_none());
        fs_err::write(&path, "{not json").unwrap();
        let err = Credentials::load(Some(&path), None, None).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[tokio::test]
    async fn containers_auth_json_is_a_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("config.json");
        let podman = dir.path().join("auth.json");
        fs_err::write(
            &docker,
            r#"{"auths":{"a.example":{"auth":"ZG9ja2VyOjE="}}}"#,
        )
        .unwrap();
        fs_err::write(
            &podman,
            r#"{"auths":{"a.example":{"auth":"cG9kbWFuOjE="},"quay.io/org/repo":{"auth":"cG9kbWFuOjI="}}}"#,
        )
        .unwrap();
        let c = Credentials::load(Some(&docker), Some(&podman), None).unwrap();
        assert_eq!(basic(c.get("a.example").await.unwrap()).0, "docker");
        assert_eq!(
            basic(c.get("quay.io").await.unwrap()),
            ("podman".into(), "2".into())
        );
    }

    #[test]
    fn login_and_logout_keep_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        login(&path, "docker.io", "me", "pw").unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            v["auths"]["https://index.docker.io/v1/"]["auth"],
            base64_encode(b"me:pw")
        );
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs_err::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        fs_err::write(
            &path,
            r#"{"auths":{"http://reg:5000/":{"auth":"b2xkOm9sZA=="},"keep.example":{"auth":"eDp5"}},"credHelpers":{"gcr.io":"gcloud"},"psFormat":"x"}"#,
        )
        .unwrap();
        login(&path, "reg:5000", "new", "pass").unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["credHelpers"]["gcr.io"], "gcloud");
        assert_eq!(v["auths"]["keep.example"]["auth"], "eDp5");
        assert!(v["auths"].get("http://reg:5000/").is_none(), "{v}");
        assert_eq!(v["auths"]["reg:5000"]["auth"], base64_encode(b"new:pass"));

        assert!(logout(&path, "reg:5000").unwrap());
        assert!(!logout(&path, "reg:5000").unwrap());
        assert!(!logout(&dir.path().join("none.json"), "reg:5000").unwrap());
        let v: serde_json::Value =
            serde_json::from_str(&fs_err::read_to_string(&path).unwrap()).unwrap();
        assert!(v["auths"].get("reg:5000").is_none());
        assert_eq!(v["auths"]["keep.example"]["auth"], "eDp5");
    }
}
