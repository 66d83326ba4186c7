//! The error type of every store operation.

use std::path::PathBuf;

use oci::Digest;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed; `fs_err` puts the path in the message.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A written blob hashed to something other than what the caller expected.
    #[error("blob {expected} has digest {actual}")]
    DigestMismatch {
        /// What the caller expected.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// A blob that an operation needs is not in the store.
    #[error("blob {digest} is not in the store")]
    MissingBlob {
        /// The missing blob.
        digest: Digest,
    },
    /// Reading a blob failed for a reason other than absence.
    #[error("failed to read blob {digest}")]
    ReadBlob {
        /// The blob being read.
        digest: Digest,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// Moving a finished blob or snapshot into place failed.
    #[error("failed to move {from} to {to}")]
    Rename {
        /// The temporary path.
        from: PathBuf,
        /// The destination in the store.
        to: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A SQLite operation on the store database failed.
    #[error("store database {path}: failed to {op}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. "set tag app:latest".
        op: String,
        /// The SQLite failure.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer rbuild with a schema this build does not know.
    #[error(
        "store database {path} has schema version {found}, newer than the supported {supported}"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A stored JSON value (descriptor, manifest) could not be decoded.
    #[error("invalid JSON in {what}")]
    Json {
        /// What was being decoded.
        what: String,
        /// The decoding failure.
        #[source]
        source: serde_json::Error,
    },
    /// Taking or releasing a file lock failed.
    #[error("failed to lock {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// No tag or image of the store has this name.
    #[error("no image {name} in the local store")]
    UnknownImage {
        /// The name as given.
        name: String,
    },
    /// A build or `rbuild run` uses the image this tag names.
    #[error(
        "image {name} is in use by a running build or `rbuild run`; try again when it has finished"
    )]
    ImageInUse {
        /// The tag.
        name: String,
    },
    /// An image ID prefix that names more than one image.
    #[error("image ID {name} names more than one image; give more digits")]
    AmbiguousImage {
        /// The prefix as given.
        name: String,
    },
    /// A name that is not a valid image reference.
    #[error("invalid image name {name:?}: {reason}")]
    BadReference {
        /// The name as given.
        name: String,
        /// Why.
        reason: String,
    },
}
