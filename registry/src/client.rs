//! The distribution API client: manifests and blobs, pulled and pushed, with auth and retries.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oci::{media_type, Descriptor, Digest, Hasher, Index, Manifest, Platform, Reference};
use reqwest::{header, StatusCode};
use tokio_util::io::ReaderStream;

use crate::auth::Auth;
use crate::credentials::{self, Credentials};
use crate::retry::{
    backoff, retry_delay, retryable_status, status_error, status_error_parts, MAX_RETRIES,
};
use crate::stall::{self, Progress, Stalled};
use crate::Error;

/// Settings for a [`Client`].
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Registries (`host[:port]`) spoken to over plain http. Loopback registries always are.
    pub insecure_registries: Vec<String>,
    /// `User-Agent` header; `rbuild-registry/<version>` when `None`.
    pub user_agent: Option<String>,
    /// The Docker `config.json` to read credentials from; when `None`, `$DOCKER_CONFIG/config.json` or
    /// `~/.docker/config.json`. A missing file means anonymous access.
    pub docker_config: Option<PathBuf>,
    /// The containers (podman) auth.json, read for registries config.json has nothing for; when `None`,
    /// `$REGISTRY_AUTH_FILE` or `$XDG_RUNTIME_DIR/containers/auth.json`.
    pub containers_auth: Option<PathBuf>,
    /// A directory searched for `docker-credential-<name>` helpers before `PATH`.
    pub credential_helper_dir: Option<PathBuf>,
    /// How blobs are uploaded; monolithic (with a chunked fallback) by default.
    pub upload: UploadMethod,
    /// Bytes per PATCH in chunked uploads; [`DEFAULT_CHUNK_SIZE`] when `None`.
    pub chunk_size: Option<u64>,
    /// Extra CA certificates (PEM files, bundles allowed) trusted for one registry each: `(host[:port],
    /// file)`. A registry with a CA is spoken to over https even on loopback.
    pub registry_cas: Vec<(String, PathBuf)>,
    /// A Docker-style `certs.d` directory: `<dir>/<host[:port]>/*.crt` are CAs for that registry. When
    /// `None`, [`default_certs_d`]; a missing directory means none.
    pub certs_d: Option<PathBuf>,
    /// Mirrors tried in order for pulls before the registry itself: `URL` mirrors Docker Hub (as
    /// dockerd's `registry-mirrors`), `REGISTRY=URL` mirrors that registry (as a `registries.conf`
    /// `[[registry.mirror]]`); an `http://` URL is reached without TLS.
    pub mirrors: Vec<String>,
    /// Registries (`host[:port]`, `*` for all) whose TLS certificate is not verified (`--tls-verify=false`);
    /// they are spoken to over https even on loopback.
    pub skip_tls_verify: Vec<String>,
    /// Retries of a failed request or transfer; 3 when `None`.
    pub max_retries: Option<u32>,
    /// How long a request may go without progress (see the `stall` module) before it fails;
    /// [`default_stall_timeout`](crate::default_stall_timeout) when `None`.
    pub stall_timeout: Option<Duration>,
    /// How long a request keeps being retried, from its first attempt: no new attempt starts after this;
    /// twice the stall timeout when `None` (a frozen registry fails a request in about a minute).
    pub retry_budget: Option<Duration>,
}

/// Docker Hub's other spellings in a mirror mapping (`docker.io=…`, `index.docker.io=…`).
fn normalize_registry(host: &str) -> String {
    match host.trim_end_matches('/') {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => oci::DOCKER_HUB.to_owned(),
        other => other.to_owned(),
    }
}

/// The `certs.d` directory read when [`ClientOptions::certs_d`] is `None`: `$RBUILD_CERTS_D`, else
/// Docker's `/etc/docker/certs.d`.
pub fn default_certs_d() -> PathBuf {
    std::env::var_os("RBUILD_CERTS_D")
        .map_or_else(|| PathBuf::from("/etc/docker/certs.d"), PathBuf::from)
}

/// The registries that have a directory with certificates in a Docker-style `certs.d` (CA files,
/// client certificates), sorted; none when it cannot be read.
pub fn registries_in_certs_d(certs_d: &Path) -> Vec<String> {
    let mut hosts: Vec<String> = certs_d_hosts(certs_d)
        .map(|h| h.into_iter().map(|(host, _)| host).collect())
        .unwrap_or_default();
    hosts.sort();
    hosts
}

/// How [`Client::push_blob`] sends a blob's bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UploadMethod {
    /// One PUT with the whole file; when the registry refuses it (400, 405, 415 or 501, other than for a
    /// bad digest or size), a chunked upload in a new session.
    #[default]
    Monolithic,
    /// PATCH requests of [`ClientOptions::chunk_size`] bytes, then a PUT with the digest.
    Chunked,
}

/// Bytes per PATCH in chunked uploads unless [`ClientOptions::chunk_size`] says otherwise.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 << 20;

/// A registry client; cheap to clone, and clones share connections and cached tokens.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Honours `HTTP(S)_PROXY`/`NO_PROXY`.
    http: reqwest::Client,
    /// The same without proxies, for loopback registries (a proxy can't reach our loopback).
    http_direct: reqwest::Client,
    insecure: Vec<String>,
    /// Clients trusting a registry's own CA, by `host[:port]`.
    with_ca: std::collections::HashMap<String, reqwest::Client>,
    /// Mirrors as (mirrored registry, mirror `host[:port]`), in order.
    mirrors: Vec<(String, String)>,
    /// Retries of a failed request or transfer.
    max_retries: u32,
    /// The mirror that served each `registry/repository`'s manifest, for its blobs.
    mirrored: std::sync::Mutex<std::collections::HashMap<String, String>>,
    auth: Auth,
    upload: UploadMethod,
    chunk_size: u64,
    stall: Duration,
    retry_budget: Duration,
}

/// A single-image manifest resolved from a reference.
#[derive(Clone, Debug)]
pub struct PulledManifest {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The exact bytes of the manifest (not of the index it may have been selected from).
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`, computed here.
    pub digest: Digest,
    /// The manifest's media type (OCI or Docker schema2 manifest).
    pub media_type: String,
}

/// How far the writer of a blob that [`Client::push_growing_blob`] uploads has got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Growth {
    /// Still writing.
    Writing,
    /// Written: the blob's digest and size.
    Done {
        /// sha256 of the blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
    },
    /// The write failed; the upload is cancelled.
    Failed,
}

/// What [`Client::push_blob`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The blob was sent.
    Uploaded,
    /// The registry already had it; nothing was sent.
    Exists,
    /// The registry linked it from another repository (cross-repository mount); nothing was sent.
    Mounted,
}

/// Which repository permissions a request needs (the token scope).
#[derive(Clone, Copy)]
enum Access<'a> {
    Pull,
    Push,
    /// Push to this repository and pull from `from` (a cross-repository mount).
    Mount {
        from: &'a str,
    },
}

/// Whether `send` may repeat a request after a connection error, 5xx, 408 or 429.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Idempotent,
    Never,
}

/// Manifests larger than this are refused (the distribution spec suggests registries accept at least 4 MiB).
const MANIFEST_LIMIT: usize = 4 << 20;
/// Read size when streaming a blob file into an upload.
const UPLOAD_CHUNK: usize = 256 << 10;
/// Everything we can resolve, in order of preference.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The `WWW-Authenticate` challenge of a 401 answer, if it has a readable one.
fn challenge_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// What a Docker-style `certs.d/<host>/` holds: CA files (`*.crt`) and a client certificate (`*.cert`
/// with the `*.key` of the same name), as docker reads them.
#[derive(Debug, Default)]
struct HostCerts {
    cas: Vec<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
}

/// The `certs.d` entries under `dir`, by `host[:port]`; none when `dir` is missing.
fn certs_d_hosts(dir: &Path) -> Result<Vec<(String, HostCerts)>, Error> {
    let read_err = |path: &Path, source: std::io::Error| Error::RegistryCa {
        path: path.to_owned(),
        source: Box::new(source),
    };
    let entries = match fs_err::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_err(dir, e))?;
        let host_dir = entry.path();
        if !host_dir.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = fs_err::read_dir(&host_dir)
            .map_err(|e| read_err(&host_dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        files.sort();
        let ext = |p: &Path, x: &str| p.extension().is_some_and(|e| e == x);
        let mut found = HostCerts {
            cas: files.iter().filter(|p| ext(p, "crt")).cloned().collect(),
            client: None,
        };
        if let Some(cert) = files.iter().find(|p| ext(p, "cert")) {
            let key = cert.with_extension("key");
            if !key.is_file() {
                return Err(Error::RegistryCa {
                    path: cert.clone(),
                    source: format!("client certificate without its key {}", key.display()).into(),
                });
            }
            found.client = Some((cert.clone(), key));
        }
        if !found.cas.is_empty() || found.client.is_some() {
            out.push((entry.file_name().to_string_lossy().into_owned(), found));
        }
    }
    Ok(out)
}

fn strip_scheme(s: &str) -> &str {
    let s = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s);
    s.trim_end_matches('/')
}

impl Client {
    /// Builds a client: TLS (rustls, system roots), timeouts, and credentials from the Docker config.
    pub fn new(opts: ClientOptions) -> Result<Self, Error> {
        let stall = opts
            .stall_timeout
            .unwrap_or_else(crate::stall::default_stall_timeout);
        let agent = opts
            .user_agent
            .clone()
            .unwrap_or_else(|| format!("rbuild-registry/{}", env!("CARGO_PKG_VERSION")));
        let builder = || {
            reqwest::Client::builder()
                .user_agent(agent.clone())
                .connect_timeout(Duration::from_secs(30))
            // No read timeout: reqwest's covers the whole request until the answer's headers (a big
            // upload included) and then each body read; the stall watch of `send` and `read_chunk`
            // measures progress instead (see the `stall` module).
        };
        let all_unverified = opts.skip_tls_verify.iter().any(|h| h == "*");
        let http = builder()
            .tls_danger_accept_invalid_certs(all_unverified)
            .build()
            .map_err(|source| Error::Setup { source })?;
        let http_direct = builder()
            .tls_danger_accept_invalid_certs(all_unverified)
            .no_proxy()
            .build()
            .map_err(|source| Error::Setup { source })?;
        let config_path = opts
            .docker_config
            .clone()
            .or_else(credentials::default_docker_config);
        let containers_auth = opts
            .containers_auth
            .clone()
            .or_else(credentials::default_containers_auth);
        let creds = Credentials::load(
            config_path.as_deref(),
            containers_auth.as_deref(),
            opts.credential_helper_dir.clone(),
        )?;
        let mut insecure: Vec<String> = opts
            .insecure_registries
            .iter()
            .map(|s| strip_scheme(s).to_owned())
            .collect();
        let mut mirrors = Vec::new();
        for m in &opts.mirrors {
            let (source, m) = match m.split_once('=') {
                Some((src, url)) => (normalize_registry(strip_scheme(src)), url),
                None => (oci::DOCKER_HUB.to_owned(), m.as_str()),
            };
            let host = strip_scheme(m)
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            if host.is_empty() {
                continue;
            }
            // An http:// mirror is one the user chose to reach without TLS.
            if m.starts_with("http://") {
                insecure.push(host.clone());
            }
            mirrors.push((source, host));
        }
        let mut hosts: std::collections::HashMap<String, HostCerts> =
            std::collections::HashMap::new();
        let certs_d = opts.certs_d.clone().unwrap_or_else(default_certs_d);
        for (host, found) in certs_d_hosts(&certs_d)? {
            let h = hosts.entry(host).or_default();
            h.cas.extend(found.cas);
            h.client = found.client;
        }
        for host in opts.skip_tls_verify.iter().filter(|h| *h != "*") {
            hosts.entry(strip_scheme(host).to_owned()).or_default();
        }
        let skip_all = opts.skip_tls_verify.iter().any(|h| h == "*");
        let skips =
            |host: &str| skip_all || opts.skip_tls_verify.iter().any(|h| strip_scheme(h) == host);
        for (host, file) in &opts.registry_cas {
            hosts
                .entry(strip_scheme(host).to_owned())
                .or_default()
                .cas
                .push(file.clone());
        }
        let mut with_ca = std::collections::HashMap::new();
        for (host, HostCerts { cas: files, client }) in hosts {
            let mut certs = Vec::new();
            for file in &files {
                let pem = fs_err::read(file).map_err(|source| Error::RegistryCa {
                    path: file.clone(),
                    source: Box::new(source),
                })?;
                let found = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                    Error::RegistryCa {
                        path: file.clone(),
                        source: Box::new(source),
                    }
                })?;
                if found.is_empty() {
                    return Err(Error::RegistryCa {
                        path: file.clone(),
                        source: "no PEM certificate in the file".into(),
                    });
                }
                certs.extend(found);
            }
            tracing::debug!(registry = %host, files = ?files, client = ?client, "extra CAs, client certificate");
            let probe = Reference {
                registry: host.clone(),
                repository: String::new(),
                tag: None,
                digest: None,
            };
            let mut b = builder()
                .tls_certs_merge(certs)
                .tls_danger_accept_invalid_certs(skips(&host));
            if let Some((cert, key)) = &client {
                let mut pem = fs_err::read(key).map_err(|source| Error::RegistryCa {
                    path: key.clone(),
                    source: Box::new(source),
                })?;
                pem.push(b'\n');
                pem.extend(fs_err::read(cert).map_err(|source| Error::RegistryCa {
                    path: cert.clone(),
                    source: Box::new(source),
                })?);
                let identity =
                    reqwest::Identity::from_pem(&pem).map_err(|source| Error::RegistryCa {
                        path: cert.clone(),
                        source: Box::new(source),
                    })?;
                b = b.identity(identity);
            }
            let b = if probe.is_loopback() { b.no_proxy() } else { b };
            with_ca.insert(host, b.build().map_err(|source| Error::Setup { source })?);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                http_direct,
                insecure,
                with_ca,
                mirrors,
                max_retries: opts.max_retries.unwrap_or(MAX_RETRIES),
                mirrored: std::sync::Mutex::new(std::collections::HashMap::new()),
                auth: Auth::new(creds),
                upload: opts.upload,
                chunk_size: opts.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE).max(1),
                stall,
                retry_budget: opts.retry_budget.unwrap_or(stall * 2),
            }),
        })
    }

    /// Resolves a reference to a single-image manifest for `platform`, following an OCI index / Docker
    /// manifest list.
    ///
    /// When `r` pins a digest, the bytes fetched must hash to it; the returned digest is always computed
    /// from the bytes of the (selected) manifest.
    pub async fn get_manifest(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<PulledManifest, Error> {
        for (_, mirror) in self
            .inner
            .mirrors
            .iter()
            .filter(|(src, _)| *src == r.registry)
        {
            let via = Reference {
                registry: mirror.clone(),
                ..r.clone()
            };
            match self.get_manifest_from(&via, platform).await {
                Ok(m) => {
                    tracing::info!(reference = %r, %mirror, "resolved through mirror");
                    self.inner
                        .mirrored
                        .lock()
                        .expect("mirror map lock is never poisoned: no panics inside")
                        .insert(format!("{}/{}", r.registry, r.repository), mirror.clone());
                    return Ok(m);
                }
                Err(e) => {
                    tracing::warn!(reference = %r, %mirror, error = %e, "mirror failed, trying the next source");
                }
            }
        }
        self.get_manifest_from(r, platform).await
    }

    async fn get_manifest_from(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<PulledManifest, Error> {
        let top = self
            .fetch_manifest(r, &r.to_string(), &r.manifest_selector(), r.digest.as_ref())
            .await?;
        let chosen = if media_type::is_index(&top.media_type) {
            let index: Index =
                serde_json::from_slice(&top.bytes).map_err(|source| Error::InvalidManifest {
                    reference: r.to_string(),
                    source,
                })?;
            let Some(desc) = index.select(platform) else {
                return Err(Error::NoMatchingPlatform {
                    reference: r.to_string(),
                    platform: platform_string(platform),
                    available: index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(platform_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            tracing::debug!(reference = %r, digest = %desc.digest, "selected manifest from index");
            let child_ref = format!("{}@{}", r.name(), desc.digest);
            let child = self
                .fetch_manifest(r, &child_ref, &desc.digest.to_string(), Some(&desc.digest))
                .await?;
            if child.bytes.len() as u64 != desc.size {
                return Err(Error::SizeMismatch {
                    what: "manifest",
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: child.bytes.len() as u64,
                });
            }
            child
        } else {
            top
        };
        if !media_type::is_manifest(&chosen.media_type) {
            return Err(Error::UnsupportedMediaType {
                reference: r.to_string(),
                media_type: chosen.media_type,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(&chosen.bytes).map_err(|source| Error::InvalidManifest {
                reference: r.to_string(),
                source,
            })?;
        Ok(PulledManifest {
            manifest,
            bytes: chosen.bytes,
            digest: chosen.digest,
            media_type: chosen.media_type,
        })
    }

    /// Streams a blob into `sink`, verifying its digest and size as it goes.
    ///
    /// On error, whatever was written to `sink` must be discarded by the caller. The sink is written from
    /// the async task, so it should be fast (a buffered file is fine).
    pub async fn fetch_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        sink: &mut (dyn Write + Send),
    ) -> Result<(), Error> {
        // A Docker Hub image resolved through a mirror takes its blobs from there when the mirror has them
        // (checked first: a half-written sink can't fall back to another source).
        let mirror = self
            .inner
            .mirrored
            .lock()
            .expect("mirror map lock is never poisoned: no panics inside")
            .get(&format!("{}/{}", r.registry, r.repository))
            .cloned();
        if let Some(mirror) = mirror {
            let via = Reference {
                registry: mirror,
                ..r.clone()
            };
            if matches!(
                self.blob_exists(&via, &desc.digest, Access::Pull).await,
                Ok(true)
            ) {
                return self.fetch_blob_from(&via, desc, sink).await;
            }
        }
        self.fetch_blob_from(r, desc, sink).await
    }

    async fn fetch_blob_from(
        &self,
        r: &Reference,
        desc: &Descriptor,
        sink: &mut (dyn Write + Send),
    ) -> Result<(), Error> {
        let url = format!("{}/blobs/{}", self.base(r), desc.digest);
        let mut hasher = Hasher::new();
        let mut received = 0u64;
        let mut resumes = 0;
        let mut failing_since: Option<Instant> = None;
        loop {
            let offset = received;
            let resp = self
                .send(r, Access::Pull, Retry::Idempotent, || {
                    let req = self.http(r).get(&url);
                    Ok(if offset > 0 {
                        req.header(header::RANGE, format!("bytes={offset}-"))
                    } else {
                        req
                    })
                })
                .await?;
            // A registry may ignore Range and send the whole blob: skip what we already have (same digest,
            // same bytes).
            let mut skip = match resp.status() {
                StatusCode::OK => offset,
                StatusCode::PARTIAL_CONTENT if content_range_start(&resp) == Some(offset) => 0,
                StatusCode::NOT_FOUND => {
                    return Err(Error::BlobNotFound {
                        repository: r.name(),
                        digest: desc.digest.clone(),
                    })
                }
                _ => {
                    return Err(self
                        .unexpected(r, "GET", &format!("blob {}", desc.digest), resp)
                        .await)
                }
            };
            match self
                .stream_body(r, resp, &mut skip, &mut received, &mut hasher, desc, sink)
                .await
            {
                Ok(()) => break,
                Err(e @ (Error::Transfer { .. } | Error::Stalled { .. }))
                    if resumes < self.inner.max_retries
                        && failing_since.get_or_insert_with(Instant::now).elapsed()
                            < self.inner.retry_budget =>
                {
                    tracing::warn!(digest = %desc.digest, received, error = %e, "blob download broke, resuming");
                    tokio::time::sleep(backoff(resumes)).await;
                    resumes += 1;
                }
                Err(e) => return Err(e),
            }
        }
        if received != desc.size {
            return Err(Error::SizeMismatch {
                what: "blob",
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: received,
            });
        }
        let actual = hasher.finish();
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                what: "blob",
                expected: desc.digest.clone(),
                actual,
            });
        }
        sink.flush().map_err(|source| Error::WriteSink {
            digest: desc.digest.clone(),
            source,
        })
    }

    /// Fetches a small blob (an image config) into memory, verified.
    pub async fn fetch_blob_bytes(
        &self,
        r: &Reference,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, Error> {
        // Capacity from the descriptor, capped: a lying descriptor must not make us allocate gigabytes.
        let mut buf = Vec::with_capacity(usize::try_from(desc.size.min(16 << 20)).unwrap_or(0));
        self.fetch_blob(r, desc, &mut buf).await?;
        Ok(buf)
    }

    /// Fetches what `r` names (a manifest or an index) as it is stored: no platform selection, any
    /// `artifactType`. For reading artifacts of our own, such as build caches.
    pub async fn get_manifest_raw(&self, r: &Reference) -> Result<RawManifest, Error> {
        self.fetch_manifest(r, &r.to_string(), &r.manifest_selector(), r.digest.as_ref())
            .await
    }

    /// The referrers of manifest `digest` in `r`'s repository through the OCI 1.1 referrers API (`GET
    /// /v2/<name>/referrers/<digest>`, filtered by `artifact_type` when given): the image index the
    /// registry answers, or `None` when the registry has no referrers API (it answers 404, as the
    /// distribution spec says; the caller then falls back to the `sha256-<hex>` tag schema).
    pub async fn get_referrers(
        &self,
        r: &Reference,
        digest: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Option<Vec<u8>>, Error> {
        let mut url = format!("{}/referrers/{digest}", self.base(r));
        if let Some(t) = artifact_type {
            // Media types hold `/` and `+`: percent-encode them for the query.
            url.push_str("?artifactType=");
            url.push_str(&t.replace('+', "%2B").replace('/', "%2F"));
        }
        let mut resp = self
            .send(r, Access::Pull, Retry::Idempotent, || {
                Ok(self
                    .http(r)
                    .get(&url)
                    .header(header::ACCEPT, media_type::OCI_INDEX))
            })
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => {
                return Err(self
                    .unexpected(r, "GET", &format!("referrers of {digest}"), resp)
                    .await)
            }
        }
        let mut bytes = Vec::new();
        let progress = Progress::new(self.inner.stall);
        let request = format!("GET {url} (body)");
        while let Some(chunk) = self.read_chunk(r, &mut resp, &progress, &request).await? {
            if bytes.len() + chunk.len() > MANIFEST_LIMIT {
                return Err(Error::Protocol {
                    registry: r.registry.clone(),
                    detail: format!(
                        "the referrers of {digest} are larger than {MANIFEST_LIMIT} bytes"
                    ),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(bytes))
    }

    /// Asks the registry to link blob `desc` into `r`'s repository from repository `from` of the same
    /// registry (a cross-repository mount). `Ok(false)` when it did not (the blob is not there, no access,
    /// or mounting unsupported); nothing is uploaded either way.
    pub async fn mount_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        from: &str,
    ) -> Result<bool, Error> {
        if from == r.repository {
            return Ok(false);
        }
        match self.start_upload(r, desc, Some(from)).await? {
            None => Ok(true),
            Some(session) => {
                // The registry opened an upload instead; cancel it rather than leave it to expire.
                let _ = self
                    .send(r, Access::Push, Retry::Never, || {
                        Ok(self.http(r).delete(session.clone()))
                    })
                    .await;
                Ok(false)
            }
        }
    }

    /// Whether the repository of `r` has the blob.
    pub async fn has_blob(&self, r: &Reference, digest: &Digest) -> Result<bool, Error> {
        self.blob_exists(r, digest, Access::Pull).await
    }

    /// Pushes the blob stored at `path` unless the registry has it already.
    ///
    /// HEAD first; if missing, POST an upload session and PUT the file streamed from disk with its
    /// Content-Length (a monolithic upload; the file is never held in memory), or PATCH it in chunks (see
    /// [`UploadMethod`]). On a transient failure the whole upload restarts from a new session, up to three
    /// times.
    pub async fn push_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        path: &Path,
    ) -> Result<PushOutcome, Error> {
        self.push_blob_from(r, desc, path, None).await
    }

    /// [`Client::push_blob`], first asking the registry to mount the blob from repository `from_repo` of
    /// the same registry (e.g. the base image's repository: `library/alpine`).
    ///
    /// A registry that mounts answers 201 and nothing is sent ([`PushOutcome::Mounted`]); one that can't
    /// (blob missing there, no pull access, mounting unsupported) answers 202 with an upload session,
    /// which is then used for a normal upload.
    pub async fn push_blob_from(
        &self,
        r: &Reference,
        desc: &Descriptor,
        path: &Path,
        from_repo: Option<&str>,
    ) -> Result<PushOutcome, Error> {
        if self.blob_exists(r, &desc.digest, Access::Push).await? {
            tracing::debug!(digest = %desc.digest, repository = %r.name(), "blob already present");
            return Ok(PushOutcome::Exists);
        }
        let len = fs_err::metadata(path)
            .map_err(|source| Error::ReadFile {
                digest: desc.digest.clone(),
                source,
            })?
            .len();
        if len != desc.size {
            return Err(Error::SizeMismatch {
                what: "file",
                digest: desc.digest.clone(),
                expected: desc.size,
                actual: len,
            });
        }
        let from_repo = from_repo.filter(|f| *f != r.repository);
        let mut attempt = 0;
        let mut failing_since: Option<Instant> = None;
        loop {
            match self.upload_once(r, desc, path, from_repo).await {
                Ok(outcome) => {
                    tracing::debug!(digest = %desc.digest, size = desc.size, repository = %r.name(), ?outcome, "blob pushed");
                    return Ok(outcome);
                }
                Err(e)
                    if e.is_transient()
                        && attempt < self.inner.max_retries
                        && failing_since.get_or_insert_with(Instant::now).elapsed()
                            < self.inner.retry_budget =>
                {
                    tracing::warn!(digest = %desc.digest, error = %e, attempt, "blob upload failed, restarting");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Uploads the blob being written to `file` (opened for reading) while it is written: one PATCH whose body sends the bytes
    /// as they reach the file, ending when `written` says the blob is done (its digest and size), then the
    /// PUT with the digest. `written` saying the write failed, or any error here, cancels the session;
    /// nothing is retried, since the caller pushes the finished blob the usual way when this did not work
    /// out.
    pub async fn push_growing_blob(
        &self,
        r: &Reference,
        file: std::fs::File,
        mut written: tokio::sync::watch::Receiver<Growth>,
    ) -> Result<Digest, Error> {
        let start = format!("{}/blobs/uploads/", self.base(r));
        let resp = self
            .send(r, Access::Push, Retry::Never, || {
                Ok(self.http(r).post(&start).header(header::CONTENT_LENGTH, 0))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self
                .unexpected(r, "POST", "upload of a layer being written", resp)
                .await);
        }
        let mut session = self.location(r, &resp)?;
        let result = self.feed_growing(r, file, &mut written, &mut session).await;
        if result.is_err() {
            // Not left to expire: the finished blob will be pushed in a session of its own.
            let _ = self
                .send(r, Access::Push, Retry::Never, || {
                    Ok(self.http(r).delete(session.clone()))
                })
                .await;
        }
        result
    }

    /// One PATCH whose body follows the file as it grows (chunked transfer encoding, as `docker push`
    /// streams its layers), then the PUT with the digest.
    async fn feed_growing(
        &self,
        r: &Reference,
        file: std::fs::File,
        written: &mut tokio::sync::watch::Receiver<Growth>,
        session: &mut reqwest::Url,
    ) -> Result<Digest, Error> {
        // The body can be sent once: a retry (after an auth challenge) finds it taken and fails, and the
        // finished blob is pushed the usual way. It is made inside `send` to count into its stall watch.
        let body = std::sync::Mutex::new(Some((file, written.clone())));
        let resp = self
            .send(r, Access::Push, Retry::Never, || {
                let body =
                    body.lock()
                        .expect("body lock")
                        .take()
                        .ok_or_else(|| Error::Protocol {
                            registry: r.registry.clone(),
                            detail: "the registry asked twice for a layer being written".to_owned(),
                        })?;
                let body = growing_body(body.0, body.1);
                Ok(self
                    .http(r)
                    .patch(session.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(body))
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self
                .unexpected(r, "PATCH", "upload of a layer being written", resp)
                .await);
        }
        *session = self.location(r, &resp)?;
        let Growth::Done { digest, size } = written.borrow().clone() else {
            return Err(Error::Protocol {
                registry: r.registry.clone(),
                detail: "the layer upload ended before the layer".to_owned(),
            });
        };
        self.close_upload(r, session.clone(), &digest).await?;
        tracing::debug!(%digest, size, repository = %r.name(), "blob pushed while it was written");
        Ok(digest)
    }

    /// Uploads `bytes` as the manifest of `r` (under its tag, or its digest when it has no tag) and returns
    /// the digest of the bytes.
    pub async fn put_manifest(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, Error> {
        Ok(self.put_manifest_answer(r, media_type, bytes).await?.digest)
    }

    /// [`Client::put_manifest`], also returning what the registry answered that matters to the caller:
    /// the `OCI-Subject` header, which a registry with the OCI 1.1 referrers API sets when the manifest
    /// has a `subject`.
    pub async fn put_manifest_answer(
        &self,
        r: &Reference,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<PutManifest, Error> {
        let digest = Digest::sha256_of(bytes);
        if let Some(pinned) = &r.digest {
            if *pinned != digest {
                return Err(Error::DigestMismatch {
                    what: "manifest",
                    expected: pinned.clone(),
                    actual: digest,
                });
            }
        }
        let selector = r.tag.clone().unwrap_or_else(|| digest.to_string());
        let url = format!("{}/manifests/{selector}", self.base(r));
        let body = Bytes::copy_from_slice(bytes);
        let resp = self
            .send(r, Access::Push, Retry::Idempotent, || {
                Ok(self
                    .http(r)
                    .put(&url)
                    .header(header::CONTENT_TYPE, media_type)
                    .body(stall::counted_bytes(body.clone())))
            })
            .await?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(self
                .unexpected(r, "PUT", &format!("manifest {r}"), resp)
                .await);
        }
        let echoed = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(echoed) = echoed {
            if echoed != digest.to_string() {
                tracing::warn!(reference = %r, ours = %digest, registry = echoed, "registry reports another manifest digest");
            }
        }
        let oci_subject = resp
            .headers()
            .get("oci-subject")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        tracing::debug!(reference = %r, %digest, ?oci_subject, "manifest pushed");
        Ok(PutManifest {
            digest,
            oci_subject,
        })
    }

    /// Checks that `registry` accepts `username`/`password`, as `docker login` does before saving them:
    /// `GET /v2/`, answering its challenge (Basic, or a token fetched with these credentials) with only
    /// them. A registry that asks for no credentials accepts any.
    ///
    /// Rejected credentials are [`Error::Unauthorized`] with a reason naming the user.
    pub async fn check_login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<(), Error> {
        let host = credentials::normalise_host(registry);
        let probe = Reference {
            registry: host.clone(),
            repository: String::new(),
            tag: None,
            digest: None,
        };
        let url = self.base(&probe);
        let auth = Auth::new(Credentials::single(&host, username, password));
        let http = self.http(&probe);
        let rejected = || Error::Unauthorized {
            registry: host.clone(),
            reason: format!("wrong username or password for user {username:?}"),
        };
        let mut challenged = false;
        loop {
            let mut req = http.get(&url);
            if let Some(h) = auth.header(&host, "") {
                req = req.header(header::AUTHORIZATION, h);
            }
            let resp = req.send().await.map_err(|e| {
                if e.is_connect() || e.is_timeout() {
                    Error::Unreachable {
                        registry: host.clone(),
                        source: e,
                    }
                } else {
                    Error::Transfer {
                        registry: host.clone(),
                        source: e,
                    }
                }
            })?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            if status != StatusCode::UNAUTHORIZED {
                return Err(status_error("GET", resp).await);
            }
            if challenged {
                return Err(rejected());
            }
            challenged = true;
            let challenge = challenge_of(&resp);
            match auth
                .authenticate(http, &host, "", challenge.as_deref())
                .await
            {
                Ok(()) => {}
                // The token service refusing these credentials is the same answer as a second 401.
                Err(Error::Unauthorized { .. })
                    if challenge
                        .as_deref()
                        .and_then(crate::auth::Challenge::parse)
                        .is_some() =>
                {
                    return Err(rejected())
                }
                Err(e) => return Err(e),
            }
        }
    }

    // ---- internals ----

    fn http(&self, r: &Reference) -> &reqwest::Client {
        if let Some(c) = self.inner.with_ca.get(&r.registry) {
            c
        } else if r.is_loopback() {
            &self.inner.http_direct
        } else {
            &self.inner.http
        }
    }

    /// `scheme://host/v2/repository`.
    fn base(&self, r: &Reference) -> String {
        let host = r.api_host();
        let insecure = (r.is_loopback() && !self.inner.with_ca.contains_key(&r.registry))
            || self
                .inner
                .insecure
                .iter()
                .any(|i| i == host || *i == r.registry);
        let scheme = if insecure { "http" } else { "https" };
        format!("{scheme}://{host}/v2/{}", r.repository)
    }

    /// The token scope(s) for `access`, space-separated.
    fn scope(r: &Reference, access: Access<'_>) -> String {
        match access {
            Access::Pull => format!("repository:{}:pull", r.repository),
            Access::Push => format!("repository:{}:pull,push", r.repository),
            Access::Mount { from } => {
                format!(
                    "repository:{}:pull,push repository:{from}:pull",
                    r.repository
                )
            }
        }
    }

    /// Sends a request built by `build`, answering one auth challenge and retrying transient failures.
    ///
    /// `build` is called again for every attempt (a streamed body can't be replayed). Returns the response
    /// for any status but 401 (and, when retries are exhausted, 5xx/408/429), for the caller to judge.
    async fn send<F>(
        &self,
        r: &Reference,
        access: Access<'_>,
        retry: Retry,
        build: F,
    ) -> Result<reqwest::Response, Error>
    where
        F: Fn() -> Result<reqwest::RequestBuilder, Error>,
    {
        let scope = Self::scope(r, access);
        let mut attempt = 0;
        let mut stalls = 0;
        let mut challenged = false;
        let started = Instant::now();
        // Retries stop at MAX_RETRIES or when the retry budget is spent, whichever comes first.
        let may_retry = |attempt: u32| {
            retry == Retry::Idempotent
                && attempt < self.inner.max_retries
                && started.elapsed() < self.inner.retry_budget
        };
        loop {
            let progress = Progress::new(self.inner.stall);
            let mut req = stall::scope(&progress, &build)?;
            if let Some(h) = self.inner.auth.header(&r.registry, &scope) {
                req = req.header(header::AUTHORIZATION, h);
            }
            let (client, request) = req.build_split();
            let request = request.map_err(|source| Error::Transfer {
                registry: r.registry.clone(),
                source,
            })?;
            let shown = format!("{} {}", request.method(), request.url());
            let resp = match progress.watch(client.execute(request)).await {
                Ok(Ok(resp)) => resp,
                Err(Stalled) => {
                    stalls += 1;
                    if may_retry(attempt) {
                        tracing::warn!(
                            registry = r.registry,
                            request = shown,
                            attempt,
                            "registry stalled, retrying"
                        );
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(Error::Stalled {
                        registry: r.registry.clone(),
                        request: shown,
                        stall: self.inner.stall,
                        attempts: stalls,
                    });
                }
                Ok(Err(e)) => {
                    if may_retry(attempt) {
                        tracing::debug!(registry = r.registry, error = %e, attempt, "request failed, retrying");
                        tokio::time::sleep(backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    return Err(if e.is_connect() || e.is_timeout() {
                        Error::Unreachable {
                            registry: r.registry.clone(),
                            source: e,
                        }
                    } else {
                        Error::Transfer {
                            registry: r.registry.clone(),
                            source: e,
                        }
                    });
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                if challenged {
                    let reason = if self.inner.auth.has_credentials(&r.registry).await {
                        "it rejected the configured credentials".to_owned()
                    } else {
                        self.inner.auth.no_credentials(&r.registry)
                    };
                    return Err(Error::Unauthorized {
                        registry: r.registry.clone(),
                        reason,
                    });
                }
                challenged = true;
                let challenge = challenge_of(&resp);
                let http = self.http(r);
                let progress = Progress::new(self.inner.stall);
                progress
                    .watch(self.inner.auth.authenticate(
                        http,
                        &r.registry,
                        &scope,
                        challenge.as_deref(),
                    ))
                    .await
                    .map_err(|Stalled| Error::Stalled {
                        registry: r.registry.clone(),
                        request: format!("token request for {scope}"),
                        stall: self.inner.stall,
                        attempts: 1,
                    })??;
                continue;
            }
            if retryable_status(status) && may_retry(attempt) {
                let wait = retry_delay(&resp, attempt);
                tracing::debug!(registry = r.registry, %status, attempt, ?wait, "registry busy or failing, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The next piece of `resp`'s body; fails when the body makes no progress for the stall timeout.
    ///
    /// `progress` spans the whole body (one per response), `request` names it in the error.
    async fn read_chunk(
        &self,
        r: &Reference,
        resp: &mut reqwest::Response,
        progress: &Progress,
        request: &str,
    ) -> Result<Option<Bytes>, Error> {
        match progress.watch(resp.chunk()).await {
            Ok(Ok(chunk)) => {
                if let Some(c) = &chunk {
                    progress.add(c.len() as u64);
                }
                Ok(chunk)
            }
            Ok(Err(source)) => Err(Error::Transfer {
                registry: r.registry.clone(),
                source,
            }),
            Err(Stalled) => Err(Error::Stalled {
                registry: r.registry.clone(),
                request: request.to_owned(),
                stall: self.inner.stall,
                attempts: 1,
            }),
        }
    }

    async fn blob_exists(
        &self,
        r: &Reference,
        digest: &Digest,
        access: Access<'_>,
    ) -> Result<bool, Error> {
        let url = format!("{}/blobs/{digest}", self.base(r));
        let resp = self
            .send(r, access, Retry::Idempotent, || Ok(self.http(r).head(&url)))
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self
                .unexpected(r, "HEAD", &format!("blob {digest}"), resp)
                .await),
        }
    }

    /// One upload: a session (or a mount), then the bytes, monolithic or chunked.
    async fn upload_once(
        &self,
        r: &Reference,
        desc: &Descriptor,
        path: &Path,
        from_repo: Option<&str>,
    ) -> Result<PushOutcome, Error> {
        let Some(session) = self.start_upload(r, desc, from_repo).await? else {
            return Ok(PushOutcome::Mounted);
        };
        if self.inner.upload == UploadMethod::Chunked {
            self.upload_chunked(r, desc, path, session).await?;
            return Ok(PushOutcome::Uploaded);
        }
        let Some((status, raw, url)) = self.put_monolithic(r, desc, path, session).await? else {
            return Ok(PushOutcome::Uploaded);
        };
        if !refuses_monolithic(status, &raw) {
            let what = format!("blob {}", desc.digest);
            return Err(self.unexpected_parts(r, "PUT", &what, status, url, &raw));
        }
        tracing::info!(digest = %desc.digest, %status, registry = r.registry, "registry refused a monolithic upload, uploading in chunks");
        let Some(session) = self.start_upload(r, desc, None).await? else {
            return Ok(PushOutcome::Mounted);
        };
        self.upload_chunked(r, desc, path, session).await?;
        Ok(PushOutcome::Uploaded)
    }

    /// POSTs a new upload session, with a mount request when `from_repo` is given: `None` when the
    /// registry mounted the blob (201), else the session URL (from the 202's Location).
    async fn start_upload(
        &self,
        r: &Reference,
        desc: &Descriptor,
        from_repo: Option<&str>,
    ) -> Result<Option<reqwest::Url>, Error> {
        let mut start =
            reqwest::Url::parse(&format!("{}/blobs/uploads/", self.base(r))).map_err(|e| {
                Error::Protocol {
                    registry: r.registry.clone(),
                    detail: format!("repository {} makes no valid URL: {e}", r.repository),
                }
            })?;
        let access = match from_repo {
            Some(from) => {
                start
                    .query_pairs_mut()
                    .append_pair("mount", &desc.digest.to_string())
                    .append_pair("from", from);
                Access::Mount { from }
            }
            None => Access::Push,
        };
        let resp = self
            .send(r, access, Retry::Never, || {
                Ok(self
                    .http(r)
                    .post(start.clone())
                    .header(header::CONTENT_LENGTH, 0))
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED if from_repo.is_some() => {
                tracing::debug!(digest = %desc.digest, from = from_repo, repository = %r.name(), "blob mounted");
                Ok(None)
            }
            StatusCode::ACCEPTED => {
                if from_repo.is_some() {
                    tracing::debug!(digest = %desc.digest, from = from_repo, "registry did not mount, uploading");
                }
                self.location(r, &resp).map(Some)
            }
            _ => Err(self
                .unexpected(r, "POST", &format!("upload of blob {}", desc.digest), resp)
                .await),
        }
    }

    /// The absolute URL of an upload answer's Location (which may be relative and usually carries its own
    /// query, `_state=…`).
    fn location(&self, r: &Reference, resp: &reqwest::Response) -> Result<reqwest::Url, Error> {
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol {
                registry: r.registry.clone(),
                detail: format!("upload answer {} has no Location header", resp.status()),
            })?;
        resp.url().join(location).map_err(|e| Error::Protocol {
            registry: r.registry.clone(),
            detail: format!("upload Location {location:?} is not a URL: {e}"),
        })
    }

    /// PUTs the whole file into `session`; `Ok(None)` when stored, else the failing status, body and URL
    /// for the caller to judge (it may fall back to a chunked upload).
    async fn put_monolithic(
        &self,
        r: &Reference,
        desc: &Descriptor,
        path: &Path,
        mut session: reqwest::Url,
    ) -> Result<Option<(StatusCode, Bytes, String)>, Error> {
        session
            .query_pairs_mut()
            .append_pair("digest", &desc.digest.to_string());
        let resp = self
            .send(r, Access::Push, Retry::Never, || {
                let file = fs_err::File::open(path).map_err(|source| Error::ReadFile {
                    digest: desc.digest.clone(),
                    source,
                })?;
                let (file, _) = file.into_parts();
                let stream =
                    ReaderStream::with_capacity(tokio::fs::File::from_std(file), UPLOAD_CHUNK);
                let body = stall::counted_stream(stream);
                Ok(self
                    .http(r)
                    .put(session.clone())
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    // An explicit length makes hyper send a sized body instead of chunked encoding, which
                    // some registries and proxies refuse for blob uploads.
                    .header(header::CONTENT_LENGTH, desc.size)
                    .body(body))
            })
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(None);
        }
        let url = resp.url().to_string();
        // The body is only for the message; failing to read it must not hide the status.
        let raw = resp.bytes().await.unwrap_or_default();
        Ok(Some((status, raw, url)))
    }

    /// PATCHes the file into `session` in chunks of `chunk_size` bytes, then PUTs the digest.
    ///
    /// A chunk that fails transiently is not simply resent: the session's status (GET, `Range: 0-<last>`)
    /// says how much the registry kept, and the upload goes on from there. When the status can't be had,
    /// the chunk's error is returned (transient, so the caller restarts in a new session).
    async fn upload_chunked(
        &self,
        r: &Reference,
        desc: &Descriptor,
        path: &Path,
        mut session: reqwest::Url,
    ) -> Result<(), Error> {
        let read_err = |source| Error::ReadFile {
            digest: desc.digest.clone(),
            source,
        };
        let mut file = fs_err::File::open(path).map_err(read_err)?;
        let mut offset = 0u64;
        let mut failures = 0;
        let mut failing_since: Option<Instant> = None;
        while offset < desc.size {
            let len = self.inner.chunk_size.min(desc.size - offset);
            let chunk = read_at(&mut file, offset, len).map_err(read_err)?;
            let end = offset + len - 1;
            let result = self
                .send(r, Access::Push, Retry::Never, || {
                    Ok(self
                        .http(r)
                        .patch(session.clone())
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_RANGE, format!("{offset}-{end}"))
                        .header(header::CONTENT_LENGTH, len)
                        .body(stall::counted_bytes(chunk.clone())))
                })
                .await;
            let error = match result {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    let next = self.location(r, &resp)?;
                    // The registry says what it holds; trust it over what we sent.
                    offset = range_end(&resp).map_or(end + 1, |last| last + 1);
                    session = next;
                    continue;
                }
                Ok(resp) if retryable_status(resp.status()) => status_error("PATCH", resp).await,
                Ok(resp) => {
                    let what = format!("chunk of blob {}", desc.digest);
                    return Err(self.unexpected(r, "PATCH", &what, resp).await);
                }
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            if failures >= self.inner.max_retries
                || failing_since.get_or_insert_with(Instant::now).elapsed()
                    >= self.inner.retry_budget
            {
                return Err(error);
            }
            tracing::warn!(digest = %desc.digest, offset, error = %error, "blob chunk failed, resuming from the registry's offset");
            tokio::time::sleep(backoff(failures)).await;
            failures += 1;
            // A registry that can't say (distribution refuses a status query with a stale `_state` after a
            // lost answer) gets the transient error back, and push_blob restarts in a new session.
            match self.upload_status(r, &session).await {
                Ok(status) => (offset, session) = status,
                Err(e) => {
                    tracing::debug!(error = %e, "upload status unknown, restarting the upload");
                    return Err(error);
                }
            }
        }
        self.close_upload(r, session, &desc.digest).await
    }

    /// Ends an upload session whose bytes are all sent: PUT with the blob's digest, nothing in the body.
    async fn close_upload(
        &self,
        r: &Reference,
        mut session: reqwest::Url,
        digest: &Digest,
    ) -> Result<(), Error> {
        session
            .query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let resp = self
            .send(r, Access::Push, Retry::Never, || {
                Ok(self
                    .http(r)
                    .put(session.clone())
                    .header(header::CONTENT_LENGTH, 0))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self
                .unexpected(r, "PUT", &format!("blob {digest}"), resp)
                .await);
        }
        Ok(())
    }

    /// Asks an upload session how many bytes it holds: (next offset, session URL to go on with).
    async fn upload_status(
        &self,
        r: &Reference,
        session: &reqwest::Url,
    ) -> Result<(u64, reqwest::Url), Error> {
        let resp = self
            .send(r, Access::Push, Retry::Idempotent, || {
                Ok(self.http(r).get(session.clone()))
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.unexpected(r, "GET", "blob upload status", resp).await);
        }
        // distribution answers `0-0` for an empty session too; resending one byte is harmless there but
        // skipping one is not, so `0-0` means "start over".
        let next = range_end(&resp)
            .filter(|last| *last > 0)
            .map_or(0, |last| last + 1);
        let url = if resp.headers().contains_key(header::LOCATION) {
            self.location(r, &resp)?
        } else {
            session.clone()
        };
        Ok((next, url))
    }

    /// GETs `manifests/<selector>`, checks it against `expect`, and works out its media type.
    async fn fetch_manifest(
        &self,
        r: &Reference,
        shown: &str,
        selector: &str,
        expect: Option<&Digest>,
    ) -> Result<RawManifest, Error> {
        let url = format!("{}/manifests/{selector}", self.base(r));
        let mut resp = self
            .send(r, Access::Pull, Retry::Idempotent, || {
                Ok(self
                    .http(r)
                    .get(&url)
                    .header(header::ACCEPT, MANIFEST_ACCEPT))
            })
            .await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(Error::NotFound {
                    reference: shown.to_owned(),
                })
            }
            _ => {
                return Err(self
                    .unexpected(r, "GET", &format!("manifest {shown}"), resp)
                    .await)
            }
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let content_digest = resp
            .headers()
            .get("docker-content-digest")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
        let mut bytes = Vec::new();
        let progress = Progress::new(self.inner.stall);
        let request = format!("GET {url} (body)");
        while let Some(chunk) = self.read_chunk(r, &mut resp, &progress, &request).await? {
            if bytes.len() + chunk.len() > MANIFEST_LIMIT {
                return Err(Error::Protocol {
                    registry: r.registry.clone(),
                    detail: format!("manifest {shown} is larger than {MANIFEST_LIMIT} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let digest = Digest::sha256_of(&bytes);
        // See: #19. As docker's pull does: the registry's own statement of the digest must match what it
        // sent (else a tag could be answered with other bytes than the registry says it holds). Only
        // sha256 is computed here; a header in another algorithm is left to the reference's digest.
        if let Some(header) = content_digest {
            if header.starts_with("sha256:") || !header.contains(':') {
                let matches = header.parse::<Digest>().is_ok_and(|d| d == digest);
                if !matches {
                    return Err(Error::ContentDigestMismatch {
                        registry: r.registry.clone(),
                        reference: shown.to_owned(),
                        header,
                        actual: digest,
                    });
                }
            } else {
                tracing::debug!(reference = shown, %header, "Docker-Content-Digest in an algorithm not checked here");
            }
        }
        if let Some(expected) = expect {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    what: "manifest",
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let media_type =
            if media_type::is_manifest(&content_type) || media_type::is_index(&content_type) {
                content_type
            } else {
                sniff_media_type(&bytes).unwrap_or(content_type)
            };
        Ok(RawManifest {
            bytes,
            digest,
            media_type,
        })
    }

    /// [`Client::unexpected`] for a response already read.
    fn unexpected_parts(
        &self,
        r: &Reference,
        method: &str,
        what: &str,
        status: StatusCode,
        url: String,
        raw: &[u8],
    ) -> Error {
        match status {
            StatusCode::FORBIDDEN => Error::Denied {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
            },
            StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge {
                registry: r.registry.clone(),
                what: what.to_owned(),
            },
            _ => status_error_parts(method, status, url, raw),
        }
    }

    /// Maps an unexpected response to the most specific error.
    async fn unexpected(
        &self,
        r: &Reference,
        method: &str,
        what: &str,
        resp: reqwest::Response,
    ) -> Error {
        match resp.status() {
            StatusCode::FORBIDDEN => Error::Denied {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
            },
            StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge {
                registry: r.registry.clone(),
                what: what.to_owned(),
            },
            _ => status_error(method, resp).await,
        }
    }
}

/// Copies a blob response into `sink` after dropping its first `skip` bytes, hashing and counting.
impl Client {
    /// (see above)
    #[allow(clippy::too_many_arguments)]
    async fn stream_body(
        &self,
        r: &Reference,
        mut resp: reqwest::Response,
        skip: &mut u64,
        received: &mut u64,
        hasher: &mut Hasher,
        desc: &Descriptor,
        sink: &mut (dyn Write + Send),
    ) -> Result<(), Error> {
        let progress = Progress::new(self.inner.stall);
        let request = format!("GET {} (body)", resp.url());
        while let Some(chunk) = self.read_chunk(r, &mut resp, &progress, &request).await? {
            let mut chunk = &chunk[..];
            if *skip > 0 {
                let n = usize::try_from(*skip)
                    .unwrap_or(usize::MAX)
                    .min(chunk.len());
                chunk = &chunk[n..];
                *skip -= n as u64;
            }
            *received += chunk.len() as u64;
            if *received > desc.size {
                return Err(Error::SizeMismatch {
                    what: "blob",
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: *received,
                });
            }
            hasher.update(chunk);
            sink.write_all(chunk).map_err(|source| Error::WriteSink {
                digest: desc.digest.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// The first byte offset of a 206 answer's `Content-Range: bytes <start>-<end>/<size>`.
fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    v.strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// A manifest pushed: its digest and the registry's `OCI-Subject` answer, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutManifest {
    /// The digest of the bytes pushed.
    pub digest: Digest,
    /// The `OCI-Subject` response header: the subject's digest, from a registry that indexed the
    /// manifest for the referrers API itself.
    pub oci_subject: Option<String>,
}

/// A manifest or index as the registry served it, not interpreted ([`Client::get_manifest_raw`]).
#[derive(Clone, Debug)]
pub struct RawManifest {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// sha256 of `bytes`, computed here (and checked against the reference's digest, if it pins one).
    pub digest: Digest,
    /// The media type: the Content-Type when it names a manifest or index, else sniffed from the bytes.
    pub media_type: String,
}

/// The media type of a manifest served as `application/json` (or without a type): its own `mediaType`
/// field, else index vs. manifest by shape (OCI makes `mediaType` optional).
fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    match (p.media_type, p.manifests, p.config) {
        (Some(mt), _, _) => Some(mt),
        (None, Some(_), _) => Some(media_type::OCI_INDEX.to_owned()),
        (None, None, Some(_)) => Some(media_type::OCI_MANIFEST.to_owned()),
        _ => None,
    }
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Whether a failed monolithic PUT means "this registry wants chunks" rather than "this blob is bad".
fn refuses_monolithic(status: StatusCode, body: &[u8]) -> bool {
    let has = |code: &[u8]| body.windows(code.len()).any(|w| w == code);
    matches!(status.as_u16(), 400 | 405 | 415 | 501)
        && !has(b"DIGEST_INVALID")
        && !has(b"SIZE_INVALID")
}

/// Reads `len` bytes of `file` at `offset` (one upload chunk, bounded by the chunk size).
/// A request body that follows a file while it is written: what is in it so far, then what comes, until
/// `written` says the file is done (the body ends at its size) or failed (the body fails).
fn growing_body(
    file: std::fs::File,
    written: tokio::sync::watch::Receiver<Growth>,
) -> reqwest::Body {
    let progress = stall::current();
    let stream = futures_util::stream::unfold(
        (file, 0u64, written, false),
        move |(file, offset, mut written, ended)| {
            let progress = progress.clone();
            async move {
                if ended {
                    return None;
                }
                loop {
                    let state = written.borrow().clone();
                    // Appends reach the file's size only once their bytes are in the file.
                    let have = match &state {
                        Growth::Failed => {
                            let e = std::io::Error::other("the layer could not be written");
                            return Some((Err(e), (file, offset, written, true)));
                        }
                        Growth::Done { size, .. } => *size,
                        Growth::Writing => match file.metadata() {
                            Ok(m) => m.len(),
                            Err(e) => return Some((Err(e), (file, offset, written, true))),
                        },
                    };
                    if have > offset {
                        let len = (have - offset).min(UPLOAD_CHUNK as u64);
                        let mut buf = vec![0u8; usize::try_from(len).expect("a chunk fits")];
                        use std::os::unix::fs::FileExt;
                        return match file.read_exact_at(&mut buf, offset) {
                            Ok(()) => {
                                Some((Ok(Bytes::from(buf)), (file, offset + len, written, false)))
                            }
                            Err(e) => Some((Err(e), (file, offset, written, true))),
                        };
                    }
                    if matches!(state, Growth::Done { .. }) {
                        return None;
                    }
                    // Waiting for the writer is not the registry stalling.
                    if let Some(p) = &progress {
                        p.touch();
                    }
                    // Wake when the writer finishes, or look at the file again soon.
                    let _ =
                        tokio::time::timeout(Duration::from_millis(10), written.changed()).await;
                }
            }
        },
    );
    stall::counted_stream(stream)
}

fn read_at(file: &mut fs_err::File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0; usize::try_from(len).expect("chunk sizes fit in memory")];
    file.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// The last byte offset of an upload answer's `Range: 0-<last>` (some registries write `bytes=0-<last>`).
fn range_end(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(header::RANGE)?.to_str().ok()?.trim();
    let v = v.strip_prefix("bytes=").unwrap_or(v);
    v.split_once('-')?.1.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_media_types() {
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).unwrap(),
            media_type::OCI_INDEX
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"config":{},"layers":[]}"#).unwrap(),
            media_type::OCI_MANIFEST
        );
        assert_eq!(
            sniff_media_type(
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json"}"#
            )
            .unwrap(),
            media_type::DOCKER_MANIFEST_LIST
        );
        assert!(sniff_media_type(b"nope").is_none());
    }

    #[test]
    fn scheme_follows_loopback_and_insecure_list() {
        let c = Client::new(ClientOptions {
            insecure_registries: vec!["http://reg.internal:5000/".into()],
            docker_config: Some(PathBuf::from("/nonexistent/config.json")),
            ..ClientOptions::default()
        })
        .unwrap();
        let base = |s: &str| c.base(&s.parse().unwrap());
        assert_eq!(base("127.0.0.1:5000/a/b:1"), "http://127.0.0.1:5000/v2/a/b");
        assert_eq!(base("localhost/a"), "http://localhost/v2/a");
        assert_eq!(base("reg.internal:5000/a"), "http://reg.internal:5000/v2/a");
        assert_eq!(base("ghcr.io/o/a"), "https://ghcr.io/v2/o/a");
        assert_eq!(
            base("alpine"),
            "https://registry-1.docker.io/v2/library/alpine"
        );
    }

    #[test]
    fn only_refusals_of_the_method_fall_back_to_chunks() {
        let unsupported = br#"{"errors":[{"code":"UNSUPPORTED","message":"x"}]}"#;
        for status in [400, 405, 415, 501] {
            let s = StatusCode::from_u16(status).unwrap();
            assert!(refuses_monolithic(s, unsupported), "{status}");
            assert!(refuses_monolithic(s, b""), "{status}");
        }
        let bad_digest = br#"{"errors":[{"code":"DIGEST_INVALID","message":"x"}]}"#;
        assert!(!refuses_monolithic(StatusCode::BAD_REQUEST, bad_digest));
        assert!(!refuses_monolithic(
            StatusCode::BAD_REQUEST,
            br#"{"errors":[{"code":"SIZE_INVALID"}]}"#
        ));
        for status in [401, 403, 404, 413, 500] {
            let s = StatusCode::from_u16(status).unwrap();
            assert!(!refuses_monolithic(s, unsupported), "{status}");
        }
    }

    /// A self-signed P-256 CA whose key was thrown away: parses, trusts nothing real.
    const TEST_CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBkjCCATmgAwIBAgIURVk0Tdo7u32koN/FTHDcTRsM7C0wCgYIKoZIzj0EAwIw\n\
HjEcMBoGA1UEAwwTcmJ1aWxkIHVuaXQgdGVzdCBDQTAgFw0yNjExMjMxNTIxMzda\n\
GA8yMTI2MTAzMDE1MjEzN1owHjEcMBoGA1UEAwwTcmJ1aWxkIHVuaXQgdGVzdCBD\n\
QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABKoFKvYMo+ngd5UiaO3bllHN+45h\n\
aPBRUyG2Wta/iySFVVOhGomOvaNZc7i1zjdzJzb7Aga2OHJ3QpzHbSRtczajUzBR\n\
MB0GA1UdDgQWBBRp+zBofavUPQkEeU0eQO4yrpRyLTAfBgNVHSMEGDAWgBRp+zBo\n\
favUPQkEeU0eQO4yrpRyLTAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cA\n\
MEQCIFUJZLbCQlwWdA4Yf/Ww0R7A879hpXbjuyMje4ZfdJ9nAiACxir80zZtkM4/\n\
D+R+ULxnzJ5LsWIdyfXUDt6+KD8I2Q==\n\
-----END CERTIFICATE-----\n\
";

    #[test]
    fn certs_d_lists_cas_and_the_client_certificate_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("reg.internal:5000");
        fs_err::create_dir_all(&host).unwrap();
        for f in ["b.crt", "a.crt", "client.cert", "client.key"] {
            fs_err::write(host.join(f), "x").unwrap();
        }
        fs_err::create_dir_all(dir.path().join("empty.example")).unwrap();
        let found = certs_d_hosts(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "reg.internal:5000");
        assert_eq!(found[0].1.cas, vec![host.join("a.crt"), host.join("b.crt")]);
        assert_eq!(
            found[0].1.client,
            Some((host.join("client.cert"), host.join("client.key")))
        );
        assert!(certs_d_hosts(&dir.path().join("missing"))
            .unwrap()
            .is_empty());
        // A client certificate without its key is an error naming the file, not a silent plain client.
        fs_err::remove_file(host.join("client.key")).unwrap();
        let e = certs_d_hosts(dir.path()).unwrap_err().to_string();
        assert!(e.contains("client.cert"), "{e}");
    }

    #[test]
    fn a_registry_with_its_own_ca_is_https_even_on_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        fs_err::write(&ca, TEST_CA_PEM).unwrap();
        let client = Client::new(ClientOptions {
            registry_cas: vec![("127.0.0.1:5443".into(), ca)],
            certs_d: Some(dir.path().join("none")),
            ..Default::default()
        })
        .unwrap();
        let with_ca: Reference = "127.0.0.1:5443/a".parse().unwrap();
        let plain: Reference = "127.0.0.1:5000/a".parse().unwrap();
        assert_eq!(client.base(&with_ca), "https://127.0.0.1:5443/v2/a");
        assert_eq!(client.base(&plain), "http://127.0.0.1:5000/v2/a");
        let bad = Client::new(ClientOptions {
            registry_cas: vec![("h".into(), dir.path().join("nope.crt"))],
            certs_d: Some(dir.path().join("none")),
            ..Default::default()
        })
        .unwrap_err();
        assert!(bad.to_string().contains("nope.crt"), "{bad}");
    }

    #[test]
    fn backoff_doubles() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(2), Duration::from_millis(800));
    }
}
