//! Supply-chain attestations for built images: SLSA provenance and SPDX SBOMs as in-toto statements,
//! and DSSE envelopes that sign them.
//!
//! The build (in `src/`) hands this crate what it knows — the image manifest digest, the build's
//! parameters, the resolved base images and downloads, the steps and their cache keys — and a read-only
//! view of the final image's file tree. This crate turns them into documents; it does no network I/O,
//! knows nothing of registries or of the solver, and never sees a secret's value except to redact it.
//!
//! - [`provenance::Provenance`] → an in-toto Statement v1 with a SLSA Provenance v1 predicate.
//! - [`sbom::scan`] reads package databases (dpkg, apk, npm, Python metadata) from a [`sbom::Tree`];
//!   [`sbom::spdx_document`] writes them as SPDX 2.3 JSON.
//! - [`dsse::SigningKey`] / [`dsse::VerifyingKey`] sign and check DSSE envelopes (ECDSA P-256 or Ed25519,
//!   PEM as cosign and openssl write them).
//!
//! ```
//! let statement = attest::Statement::new(
//!     vec![attest::Subject::sha256("app", &"ab".repeat(32))],
//!     attest::provenance::PREDICATE_TYPE,
//!     serde_json::json!({}),
//! );
//! assert_eq!(statement.type_, attest::STATEMENT_TYPE);
//! ```
#![forbid(unsafe_code)]

pub mod dsse;
pub mod provenance;
pub mod redact;
pub mod sbom;
mod statement;

pub use statement::{Statement, Subject, STATEMENT_TYPE};

/// Why an attestation could not be made, signed or checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file is not a key this crate can use.
    #[error("{path}: {message}")]
    Key { path: String, message: String },
    /// A DSSE envelope failed verification.
    #[error("signature verification failed: {0}")]
    Verify(String),
    /// An envelope or statement is not what it should be.
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
    /// Reading a file of the image tree failed.
    #[error("reading {path} in the image")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
