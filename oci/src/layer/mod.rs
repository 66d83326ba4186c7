//! Layer tars: writing an overlay-format directory as an OCI layer, and unpacking a layer blob back into an
//! overlay-format directory.
//!
//! A snapshot directory is in *overlay format*: a deleted path is a character device 0/0 (an overlay
//! whiteout) and an opaque directory carries the xattr `trusted.overlay.opaque=y` — or, in a user namespace
//! (rootless mode, where `trusted.*` xattrs cannot be set and overlay is mounted with `userxattr`),
//! `user.overlay.opaque=y`; readers accept both ([`is_opaque_dir`]). A layer tar says the same
//! with `.wh.<name>` and `.wh..wh..opq` entries. [`write_layer`] converts one way, [`unpack_layer`] the other.

use std::io;
use std::path::PathBuf;

use crate::Digest;

mod early;
mod gzip;
mod merge;
mod pax;
mod sparse;
mod unpack;
mod write;

pub use early::{EarlyGzip, Precompressed};
pub use gzip::{DEFAULT_GZIP_LEVEL, MAX_GZIP_LEVEL};
pub use merge::{merge_layer_dir, Below};
pub use unpack::unpack_layer;
pub use write::{is_empty_dir, recompress_layer, write_layer, write_layer_early};

/// Prefix of a whiteout entry in a layer tar (`.wh.<name>` deletes `<name>`).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the entry that makes its directory opaque (hides all lower content).
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The overlayfs xattr that marks an opaque directory in a snapshot.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same xattr as overlayfs names it when mounted with `userxattr` (in a user namespace).
pub const USER_OVERLAY_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// Whether this process runs in a user namespace other than the initial one (rootless mode): its
/// `/proc/self/uid_map` is not the identity map of all ids.
pub fn in_user_namespace() -> bool {
    static IN_USERNS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_USERNS.get_or_init(|| match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    })
}

/// The opaque-directory xattr this process writes into snapshots: `user.overlay.opaque` in a user
/// namespace (where only `user.*` xattrs can be set), `trusted.overlay.opaque` otherwise.
pub fn overlay_opaque_xattr() -> &'static str {
    if in_user_namespace() {
        USER_OVERLAY_OPAQUE_XATTR
    } else {
        OVERLAY_OPAQUE_XATTR
    }
}

/// Whether a snapshot directory is opaque: either opaque xattr is `y` (not following symlinks).
pub fn is_opaque_dir(path: &std::path::Path) -> io::Result<bool> {
    for name in [OVERLAY_OPAQUE_XATTR, USER_OVERLAY_OPAQUE_XATTR] {
        match xattr::get(path, name) {
            Ok(Some(value)) if value == b"y" => return Ok(true),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The compression applied to a written layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip (RFC 1952): members of at most 1 MiB compressed by libdeflate, the same bytes for every
    /// [`LayerOptions::threads`]; media type `application/vnd.oci.image.layer.v1.tar+gzip`.
    #[default]
    Gzip,
    /// A plain tar; media type `application/vnd.oci.image.layer.v1.tar`.
    Uncompressed,
    /// zstd, always through libzstd's multithreaded path (at least one worker), so the bytes are the same
    /// for every [`LayerOptions::threads`]; media type `application/vnd.oci.image.layer.v1.tar+zstd`.
    Zstd,
}

impl Compression {
    /// The compression a layer media type names (`None` for one we cannot tell).
    pub fn of_media_type(mt: &str) -> Option<Self> {
        if crate::media_type::is_gzip_layer(mt) {
            Some(Self::Gzip)
        } else if crate::media_type::is_zstd_layer(mt) {
            Some(Self::Zstd)
        } else if mt.ends_with(".tar") || mt.ends_with("rootfs.diff.tar") {
            Some(Self::Uncompressed)
        } else {
            None
        }
    }

    /// The OCI layer media type of blobs with this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::Gzip => crate::media_type::OCI_LAYER_GZIP,
            Self::Uncompressed => crate::media_type::OCI_LAYER_TAR,
            Self::Zstd => crate::media_type::OCI_LAYER_ZSTD,
        }
    }
}

/// Options for [`write_layer`].
#[derive(Debug, Clone, Default)]
pub struct LayerOptions {
    /// The compression of the written blob.
    pub compression: Compression,
    /// The compression level (gzip: 0–12, default 6; zstd: 1–22, default 3); `None` means the default.
    pub level: Option<u32>,
    /// Clamps every mtime in the tar to at most this many seconds since the epoch (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<i64>,
    /// How many threads compress (`None` means 1). The bytes do not depend on it: gzip members are
    /// compressed independently, and zstd always takes libzstd's multithreaded path.
    pub threads: Option<usize>,
}

/// What [`write_layer`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The sha256 of the uncompressed tar (goes into the image config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The sha256 of the written (compressed) bytes (goes into the manifest).
    pub digest: Digest,
    /// The number of written bytes.
    pub size: u64,
    /// The OCI layer media type matching the compression.
    pub media_type: &'static str,
}

/// Why writing or unpacking a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A file of the directory being written could not be read.
    #[error("failed to read {path}")]
    Read {
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The layer stream could not be written.
    #[error("failed to write the layer stream")]
    Write(#[source] io::Error),
    /// The layer blob could not be read or decoded.
    #[error("failed to read the layer blob")]
    Blob(#[source] io::Error),
    /// A tar entry could not be created in the destination.
    #[error("failed to unpack layer entry {:?}", shorten(path))]
    Unpack {
        /// The entry path as written in the tar.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A tar entry would escape the destination or go through something that is not a directory.
    #[error("refusing layer entry {:?}: {reason}", shorten(path))]
    UnsafePath {
        /// The entry path (or hardlink target) as written in the tar.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A sparse file's map (GNU sparse formats in PAX records) is malformed or does not fit its data.
    #[error("layer entry {:?} has a bad sparse map: {reason}", shorten(path))]
    BadSparse {
        /// The entry path as written in the tar.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The blob's media type or compression is not supported.
    #[error("unsupported layer media type or compression {media_type:?}")]
    Unsupported {
        /// The media type, or a description of the detected compression.
        media_type: String,
    },
}

/// An entry path as errors show it: at most 60 characters from each end (a hostile layer's paths may be
/// kilobytes long). See: #19.
fn shorten(path: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 60;
    let chars = path.chars().count();
    if chars <= 2 * KEEP + 1 {
        return path.into();
    }
    let head: String = path.chars().take(KEEP).collect();
    let tail: String = path.chars().skip(chars - KEEP).collect();
    format!("{head}…({} characters)…{tail}", chars - 2 * KEEP).into()
}

#[cfg(test)]
mod shorten_tests {
    // See: #19. A long entry path gives a readable error.
    #[test]
    fn r19_long_entry_paths_are_shortened_in_errors() {
        let long = format!("{}/x", "a/".repeat(2000));
        let e = super::LayerError::UnsafePath {
            path: long.clone(),
            reason: "has a `..` component",
        };
        let text = e.to_string();
        assert!(text.len() < 200, "{text}");
        assert!(
            text.contains("(3882 characters)") && text.ends_with("has a `..` component"),
            "{text}"
        );
        let short = super::LayerError::UnsafePath {
            path: "../x".into(),
            reason: "has a `..` component",
        };
        assert_eq!(
            short.to_string(),
            "refusing layer entry \"../x\": has a `..` component"
        );
    }
}
