//! A client for the OCI distribution API (registries): resolve and pull manifests, stream blobs out and in,
//! push manifests; with anonymous, Bearer-token and Basic auth and retries of transient failures.
//! Credentials come from Docker's config.json (`auths`, `identitytoken`, `credHelpers`, `credsStore`) and
//! podman's auth.json; [`login`]/[`logout`] edit config.json. Pushes mount blobs across repositories when
//! asked ([`Client::push_blob_from`]) and fall back to chunked uploads when a registry wants them.
//!
//! It never writes the local store: fetched blobs go to a caller-provided writer (verified against their
//! digest and size as they stream), pushed blobs are read from a caller-provided file path. It doesn't
//! know about build graphs or caches. Main types: [`Client`], [`ClientOptions`], [`PulledManifest`],
//! [`Error`].
//!
//! Transport: reqwest with rustls. Loopback registries (and those in
//! [`ClientOptions::insecure_registries`]) use plain http; others https, verified against the system CA
//! store (`rustls-platform-verifier`, which on Linux reads `SSL_CERT_FILE`/`SSL_CERT_DIR` via
//! `rustls-native-certs`). `HTTP(S)_PROXY`/`NO_PROXY` are honoured except for loopback registries.
//! There is no total timeout: a request fails when it makes no progress for
//! [`ClientOptions::stall_timeout`] (30 s by default, `RBUILD_REGISTRY_STALL_TIMEOUT`), and retries stop
//! after [`ClientOptions::retry_budget`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), registry::Error> {
//! let client = registry::Client::new(registry::ClientOptions::default())?;
//! let r: oci::Reference = "127.0.0.1:5000/app:1".parse().unwrap();
//! let pulled = client.get_manifest(&r, &oci::Platform::host()).await?;
//! let config = client.fetch_blob_bytes(&r, &pulled.manifest.config).await?;
//! # let _ = config;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod auth;
mod client;
mod credentials;
mod error;
mod retry;
mod stall;

pub use client::{
    default_certs_d, registries_in_certs_d, Client, ClientOptions, Growth, PulledManifest,
    PushOutcome, PutManifest, RawManifest, UploadMethod, DEFAULT_CHUNK_SIZE,
};
pub use credentials::{
    default_containers_auth, default_docker_config, login, logout, normalise_host,
};
pub use error::Error;
pub use stall::{default_stall_timeout, DEFAULT_STALL_TIMEOUT};
