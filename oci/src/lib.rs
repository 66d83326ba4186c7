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
mod layer;
mod manifest;
mod platform;
mod reference;
mod snapshot;
pub mod time;

pub use config::{Empty, Healthcheck, History, ImageConfig, RootFs, RunConfig};
pub use digest::{Digest, DigestParseError, Hasher, HashingWriter};
pub use layer::{
    in_user_namespace, is_empty_dir, is_opaque_dir, merge_layer_dir, overlay_opaque_xattr,
    recompress_layer, unpack_layer, write_layer, write_layer_early, Below, Compression, EarlyGzip,
    LayerError, LayerInfo, LayerOptions, Precompressed, DEFAULT_GZIP_LEVEL, MAX_GZIP_LEVEL,
    OPAQUE_MARKER, OVERLAY_OPAQUE_XATTR, USER_OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX,
};
pub use manifest::{media_type, Descriptor, Index, Manifest, Platform};
pub use platform::PlatformParseError;
pub use reference::{Reference, ReferenceParseError, DOCKER_HUB};
pub use snapshot::{MergedView, Resolved};
