//! The registry client's error type.

use std::path::PathBuf;

use oci::Digest;

/// What went wrong talking to a registry; every variant names the registry or reference involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client could not be built (bad user agent, TLS setup).
    #[error("failed to set up the http client")]
    Setup {
        /// Underlying cause.
        #[source]
        source: reqwest::Error,
    },
    /// The Docker config file with registry credentials could not be read or parsed.
    #[error("failed to read registry credentials from {}", path.display())]
    DockerConfig {
        /// The config.json that was read.
        path: PathBuf,
        /// Underlying cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Docker credential helper (`docker-credential-<name> get`) could not be run or failed.
    #[error("credential helper {helper} failed for registry {registry}")]
    CredentialHelper {
        /// The helper program, e.g. `docker-credential-pass`.
        helper: String,
        /// Registry host asked about.
        registry: String,
        /// Underlying cause: the spawn error, or the exit status with what the helper printed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A registry CA file (`--registry-ca`, certs.d) could not be read or holds no PEM certificate.
    #[error("failed to load registry CA certificates from {}", path.display())]
    RegistryCa {
        /// The CA file or certs.d directory.
        path: PathBuf,
        /// Underlying cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Docker config file could not be written by [`crate::login`] or [`crate::logout`].
    #[error("failed to write registry credentials to {}", path.display())]
    WriteDockerConfig {
        /// The config.json being written.
        path: PathBuf,
        /// Underlying cause.
        #[source]
        source: std::io::Error,
    },
    /// The tag or digest does not exist in the repository (or the repository does not exist).
    #[error("manifest unknown: image {reference} not found")]
    NotFound {
        /// The reference asked for, e.g. `127.0.0.1:5000/app:1`.
        reference: String,
    },
    /// A blob the caller expected to exist is not in the repository.
    #[error("blob {digest} not found in {repository}")]
    BlobNotFound {
        /// `registry/repository`.
        repository: String,
        /// The missing blob.
        digest: Digest,
    },
    /// No connection could be made (refused, DNS failure, timeout, TLS handshake failure).
    #[error("cannot reach registry {registry}: check the address, port and that the registry is running")]
    Unreachable {
        /// Registry host (and port).
        registry: String,
        /// Underlying cause.
        #[source]
        source: reqwest::Error,
    },
    /// The connection broke or the body could not be read after the registry answered.
    #[error("transfer from registry {registry} failed")]
    Transfer {
        /// Registry host (and port).
        registry: String,
        /// Underlying cause.
        #[source]
        source: reqwest::Error,
    },
    /// The registry asks for credentials that we don't have or that it rejected.
    #[error("registry {registry} requires authentication: {reason}")]
    Unauthorized {
        /// Registry host (and port).
        registry: String,
        /// Why authentication failed, e.g. that no credentials are configured.
        reason: String,
    },
    /// The registry knows who we are but refuses the operation (HTTP 403).
    #[error("registry {registry} denied access to {repository}")]
    Denied {
        /// Registry host (and port).
        registry: String,
        /// Repository path.
        repository: String,
    },
    /// Content does not hash to the digest that names it.
    #[error("{what} {expected} has digest {actual}")]
    DigestMismatch {
        /// `blob` or `manifest`.
        what: &'static str,
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A request made no progress for the stall timeout (a frozen or trickling registry).
    #[error("registry {registry} stalled: no progress for {}s on {request}{}", .stall.as_secs_f64(), attempts_note(*.attempts))]
    Stalled {
        /// Registry host (and port).
        registry: String,
        /// The request, as `METHOD url`.
        request: String,
        /// The stall timeout.
        stall: std::time::Duration,
        /// How many attempts stalled (retries stop at the retry budget).
        attempts: u32,
    },
    /// A manifest's body does not hash to the `Docker-Content-Digest` the registry sent with it.
    #[error("registry {registry} sent manifest {reference} with Docker-Content-Digest {header}, but the manifest it sent has digest {actual}")]
    ContentDigestMismatch {
        /// Registry host (and port).
        registry: String,
        /// The reference asked for.
        reference: String,
        /// The header's value.
        header: String,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// Content is not as long as its descriptor says.
    #[error("{what} {digest} has size {actual}, expected {expected}")]
    SizeMismatch {
        /// `blob`, `manifest` or `file`.
        what: &'static str,
        /// The content's digest.
        digest: Digest,
        /// Size from the descriptor.
        expected: u64,
        /// Size received (or, once over the limit, read so far).
        actual: u64,
    },
    /// The registry refused the request body as too large (HTTP 413).
    #[error("registry {registry} refused {what} as too large (413 payload too large): raise the registry's or proxy's body size limit")]
    TooLarge {
        /// Registry host (and port).
        registry: String,
        /// What was sent, e.g. `blob sha256:…`.
        what: String,
    },
    /// An index has no manifest for the wanted platform.
    #[error("image {reference} has no manifest for platform {platform} (available: {available})")]
    NoMatchingPlatform {
        /// The reference asked for.
        reference: String,
        /// Wanted platform, `os/arch[/variant]`.
        platform: String,
        /// Platforms in the index, comma-separated.
        available: String,
    },
    /// The manifest's media type is not one we understand.
    #[error("image {reference} has unsupported manifest media type {media_type:?}")]
    UnsupportedMediaType {
        /// The reference asked for.
        reference: String,
        /// Media type from Content-Type or the manifest's `mediaType`.
        media_type: String,
    },
    /// The manifest or index is not valid JSON of the expected shape.
    #[error("invalid manifest for image {reference}")]
    InvalidManifest {
        /// The reference asked for.
        reference: String,
        /// Underlying cause.
        #[source]
        source: serde_json::Error,
    },
    /// The registry answered in a way the protocol does not allow (missing Location, bad token JSON…).
    #[error("unexpected answer from registry {registry}: {detail}")]
    Protocol {
        /// Registry host (and port).
        registry: String,
        /// What was wrong.
        detail: String,
    },
    /// Any other unexpected HTTP status.
    #[error("registry answered {status} to {method} {url}: {body}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// HTTP method.
        method: String,
        /// Request URL.
        url: String,
        /// Start of the response body; for registry errors, `CODE: message` lines.
        body: String,
    },
    /// Reading the local blob file failed.
    #[error("failed to read blob {digest} from disk")]
    ReadFile {
        /// The blob being pushed.
        digest: Digest,
        /// Underlying cause (carries the path).
        #[source]
        source: std::io::Error,
    },
    /// Writing into the caller's sink failed.
    #[error("failed to write blob {digest}")]
    WriteSink {
        /// The blob being fetched.
        digest: Digest,
        /// Underlying cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether retrying the same request later may succeed (connection trouble, 5xx, 408, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Transfer { .. } | Error::Stalled { .. } => true,
            Error::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            _ => false,
        }
    }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" ({attempts} attempts)")
    } else {
        String::new()
    }
}
