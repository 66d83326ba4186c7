//! OCI image types and formats: digests, references, descriptors, manifests, indexes, the image config
//! (with Docker's extra fields), and layer tars (write from a directory, apply to a snapshot).
//!
//! This crate does no network I/O and knows nothing of build graphs. Main types: [`Digest`],
//! [`Reference`], [`Manifest`], [`ImageConfig`].
//!
//! ```
//! let r: oci::Reference = "alpine".parse().unwrap();
//! assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
//! ```
#![forbid(unsafe_code)]

mod config;
mod digest;
mod manifest;
mod reference;

pub use config::{Empty, Healthcheck, History, ImageConfig, RootFs, RunConfig};
pub use digest::{Digest, DigestParseError, Hasher, HashingWriter};
pub use manifest::{media_type, Descriptor, Index, Manifest, Platform};
pub use reference::{Reference, ReferenceParseError, DOCKER_HUB};
