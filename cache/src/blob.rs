//! Writing blobs: hash while writing to a temp file, fsync, verify, rename into `blobs/sha256/<hex>`.

use std::fs::Permissions;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci::{Digest, Hasher};
use rustix::fs::{renameat_with, RenameFlags, CWD};
use tempfile::NamedTempFile;

use crate::Error;

/// A blob being written; created by [`Store::blob_writer`](crate::Store::blob_writer).
///
/// Bytes go to a temp file in the store's scratch space and are hashed on the way. Nothing is visible
/// under `blobs/` until [`commit`](Self::commit); dropping the writer without committing removes the temp
/// file, and a process killed mid-write leaves a temp file that the next `Store::open` removes.
pub struct BlobWriter {
    inner: BufWriter<NamedTempFile>,
    /// `None` for [`Store::blob_writer_hashed_by_caller`](crate::Store::blob_writer_hashed_by_caller).
    hasher: Option<Hasher>,
    size: u64,
    blobs_dir: PathBuf,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("blobs_dir", &self.blobs_dir)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    pub(crate) fn new(scratch: &Path, blobs_dir: PathBuf, hash: bool) -> Result<BlobWriter, Error> {
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .permissions(Permissions::from_mode(0o644))
            .tempfile_in(scratch)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("failed to create a temp file in {}: {e}", scratch.display()),
                )
            })?;
        Ok(BlobWriter {
            inner: BufWriter::with_capacity(256 * 1024, file),
            hasher: hash.then(Hasher::new),
            size: 0,
            blobs_dir,
        })
    }

    /// The temp file the bytes go to until [`commit`](Self::commit) (readable while it is written: the
    /// bytes reach it through a buffer of 256 KiB).
    pub fn path(&self) -> &Path {
        self.inner.get_ref().path()
    }

    /// Finishes the blob: fsync, check `expected` if given, and move it into place.
    ///
    /// Returns the digest and size in bytes. On a mismatch the temp file is removed and
    /// [`Error::DigestMismatch`] returned. If the blob is already present (another writer won), the temp
    /// file is dropped and the existing blob stands. A writer whose caller hashes must be given the
    /// caller's digest, which names the blob.
    pub fn commit(self, expected: Option<&Digest>) -> Result<(Digest, u64), Error> {
        let size = self.size;
        let tmp = self.inner.into_inner().map_err(|e| e.into_error())?;
        let digest = match (self.hasher, expected) {
            (Some(hasher), expected) => {
                let digest = hasher.finish();
                if let Some(expected) = expected {
                    if *expected != digest {
                        return Err(Error::DigestMismatch {
                            expected: expected.clone(),
                            actual: digest,
                        });
                    }
                }
                digest
            }
            (None, Some(expected)) => expected.clone(),
            (None, None) => {
                return Err(Error::Io(io::Error::other(
                    "a blob hashed by its writer's caller needs the caller's digest",
                )))
            }
        };
        let dest = self.blobs_dir.join(digest.hex());
        if dest.exists() {
            tracing::debug!(%digest, size, "blob already present");
            return Ok((digest, size));
        }
        tmp.as_file().sync_all().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("failed to fsync {}: {e}", tmp.path().display()),
            )
        })?;
        let tmp = tmp.into_temp_path();
        match rename_noreplace(&tmp, &dest) {
            Ok(true) => {
                // The temp path no longer exists; stop TempPath from trying to remove it.
                tmp.keep().map_err(|e| e.error)?;
                fsync_dir(&self.blobs_dir)?;
                tracing::debug!(%digest, size, "blob written");
            }
            // Lost a race with another writer of the same content; `tmp` is removed on drop.
            Ok(false) => tracing::debug!(%digest, size, "blob already present"),
            Err(source) => {
                return Err(Error::Rename {
                    from: tmp.to_path_buf(),
                    to: dest,
                    source,
                })
            }
        }
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Renames `from` to `to` unless `to` exists; returns false (and leaves `from`) if it does.
///
/// `RENAME_NOREPLACE` makes the check and the rename one atomic step, which matters for directories: a
/// plain `rename` silently replaces an empty destination directory that another process just committed.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<bool> {
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY) => Ok(false),
        // File systems without RENAME_NOREPLACE: check, then rename. The window only matters for equal
        // content, so losing it costs a redundant rename, never a wrong result.
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if to.exists() {
                return Ok(false);
            }
            match std::fs::rename(from, to) {
                Ok(()) => Ok(true),
                Err(e) if matches!(e.raw_os_error(), Some(c) if c == rustix::io::Errno::EXIST.raw_os_error() || c == rustix::io::Errno::NOTEMPTY.raw_os_error()) => {
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Fsyncs a directory so that a rename into it survives a crash.
pub(crate) fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs_err::File::open(dir)?.sync_all()
}

/// Replaces `dest` with `bytes` atomically: temp file in `scratch`, fsync, rename, fsync the directory.
pub(crate) fn atomic_write(scratch: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix("write-")
        .permissions(Permissions::from_mode(0o644))
        .tempfile_in(scratch)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| {
        io::Error::new(
            e.error.kind(),
            format!("failed to rename into {}: {}", dest.display(), e.error),
        )
    })?;
    fsync_dir(dest.parent().expect("store files live in a directory"))
}
