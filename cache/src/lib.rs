//! rbuild's local store: blobs by digest, snapshots (unpacked layers), image tags, cache-key records,
//! base-image resolutions, cache-mount directories and cross-process locks, under one root directory.
//!
//! The root is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), so other tools can
//! read tagged images (`skopeo inspect oci:<root>:app:latest`). Beside it, rbuild keeps `snapshots/<hex>/`
//! (unpacked layers keyed by diff_id), `mounts/<hash>/` (`RUN --mount=type=cache`), `locks/`, `tmp/` and a
//! SQLite database `db.sqlite` (WAL) for tags, records and bookkeeping.
//!
//! Several rbuild processes may share one root at the same time. Blobs are written to a temp file,
//! fsynced and renamed into place; snapshots are renamed into place with `RENAME_NOREPLACE`; database
//! writes are `BEGIN IMMEDIATE` transactions. Nothing refers to a blob before the blob is complete: a tag
//! is only set when its manifest and everything the manifest references are present.
//!
//! Garbage collection ([`Store::prune`]) evicts cache records and base-image resolutions by age or LRU
//! and then removes every blob and snapshot that no tag, record or resolution reaches. Builds hold a
//! [`Store::lease`] so that a prune in another process waits for them.
//!
//! This crate does not know what a cache key means (records are opaque bytes owned by the solver), does
//! not talk to registries, and does not write layer contents (it only moves finished directories).
//!
//! Main type: [`Store`].
//!
//! ```
//! let root = tempfile::tempdir().unwrap();
//! let store = cache::Store::open(root.path()).unwrap();
//! let digest = store.put_blob(b"hello").unwrap();
//! assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
//! ```
#![forbid(unsafe_code)]

mod blob;
mod check;
mod db;
mod error;
mod gc;
mod session;
mod stat;
mod tags;
mod units;

use std::collections::BTreeMap;
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci::{media_type, Descriptor, Digest, Index, Manifest};
use rusqlite::{params, OptionalExtension};
use rustix::fs::FlockOperation;

pub use blob::BlobWriter;
pub use check::{CheckReport, Repair};
pub use error::Error;
pub use units::{parse_duration, parse_size};

/// The file system a store lives on (or would be made on): its name and the bytes free there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// `ext4`, `xfs`, `btrfs`, `tmpfs`, `overlay`, … or the `statfs` magic in hex.
    pub name: String,
    /// Bytes available to unprivileged users, when known.
    pub free_bytes: Option<u64>,
}

impl Filesystem {
    /// The file system of `root`, or of its nearest existing parent when it does not exist yet.
    pub fn of(root: &Path) -> Self {
        let existing = root
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("/"));
        let name = rustix::fs::statfs(existing)
            .map_or_else(|e| format!("unknown ({e})"), |s| Self::name_of(s.f_type));
        let free_bytes = rustix::fs::statvfs(existing)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
        Self { name, free_bytes }
    }

    /// Whether overlay upper dirs (and so RUN steps) can live on it.
    pub fn holds_overlay_uppers(&self) -> bool {
        !matches!(self.name.as_str(), "overlay" | "nfs" | "fuse")
    }

    /// The name of a file system from its `statfs` magic number.
    fn name_of(magic: i64) -> String {
        match magic {
            0xEF53 => "ext4",
            0x5846_5342 => "xfs",
            0x9123_683E => "btrfs",
            0x0102_1994 => "tmpfs",
            0x794C_7630 => "overlay",
            0x2FC1_2FC1 => "zfs",
            0x6969 => "nfs",
            0x6573_5546 => "fuse",
            0xF2F5_2010 => "f2fs",
            _ => return format!("0x{magic:x}"),
        }
        .to_owned()
    }
}

pub use gc::{GcItem, Lease, PruneOptions, PruneReport};
pub use stat::{StatEntry, StatKey};

use crate::blob::{atomic_write, fsync_dir, rename_noreplace};
use crate::db::Db;
use crate::session::{flock_retry, now_ms, Session};

/// The annotation that names a tag in `index.json`, as the OCI image layout defines it.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The local store; open once per process and share it (`Arc<Store>`): it is `Send + Sync`.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    blobs: PathBuf,
    snapshots: PathBuf,
    mounts: PathBuf,
    locks: PathBuf,
    empty: PathBuf,
    db: Db,
    session: Session,
    leases: std::sync::Arc<gc::LeaseState>,
}

/// Disk usage of a store, as [`Store::usage`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Number of blobs.
    pub blobs: u64,
    /// Total size of blobs, in bytes.
    pub blob_bytes: u64,
    /// Number of committed snapshots.
    pub snapshots: u64,
    /// Total size of regular files in snapshots when they were committed, in bytes.
    pub snapshot_bytes: u64,
    /// Number of cache records.
    pub records: u64,
    /// Number of cache-mount directories.
    pub mounts: u64,
}

/// An exclusive cross-process lock taken by [`Store::lock`]; released on drop (or when the process dies).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
    path: PathBuf,
    /// Unlink the lock file when released (locks named by a cache key, of which there are many).
    transient: bool,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.transient {
            // Unlinked while still held: a process that opened the file before can then take a lock
            // nobody else sees, alongside one on a new file. Both look the record up again first, so
            // both find this holder's result; only after a failure may both run the step.
            if let Err(e) = fs_err::remove_file(&self.path) {
                tracing::debug!(error = %e, "failed to remove a lock file");
            }
        }
    }
}

impl LockGuard {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Marks `dir` as a "top directory" (`FS_TOPDIR_FL`, `chattr +T`) so that ext4's Orlov allocator places
/// each directory made in it (a snapshot, a build's scratch space, a cache mount) in a block group of its
/// own choosing, with the files of that tree near it, rather than in `dir`'s group.
///
/// Why: ext4 without a journal (this project's CI machines) skips inodes freed in the last
/// `dirty_expire_centisecs` (30 s) when allocating, scanning past each of them; after a large deletion
/// (`rbuild prune`, a removed store) every file created in the same group pays that scan. Measured on the
/// deps-then-src bench right after deleting the store: 13–30 s cold builds without the flag, 3.6–5.0 s with
/// it (docs/PERFORMANCE.md). Elsewhere it only spreads independent trees, as ext4 does for top-level
/// directories. Filesystems without the flag (tmpfs, xfs, btrfs) refuse it; that is fine.
fn spread_subdirs(dir: &Path) {
    let Ok(fd) = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) else {
        return;
    };
    if let Ok(flags) = rustix::fs::ioctl_getflags(&fd) {
        if !flags.contains(rustix::fs::IFlags::TOPDIR) {
            if let Err(e) = rustix::fs::ioctl_setflags(&fd, flags | rustix::fs::IFlags::TOPDIR) {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot mark as a top directory");
            }
        }
    }
}

/// The mode of the store's root and of its directories that hold image contents or scratch space.
///
/// Only the owner may enter them: a layer may hold a setuid-root binary or a device node, and a snapshot
/// (or a RUN's upper dir, or a cache mount) is a plain directory on the host, so any user able to reach it
/// could run that binary as root (issue #19). Docker keeps `/var/lib/docker` 0710 for the same reason. The
/// contents of snapshots keep their own modes: a container sees them through its mount, never through
/// this path.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with [`PRIVATE_DIR_MODE`] from the start, or restricts an existing
/// one (a store made by an older rbuild, which used the umask).
fn private_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
    {
        Ok(()) => {}
        Err(source) => {
            return Err(io::Error::new(
                source.kind(),
                format!(
                    "failed to create store directory {}: {source}",
                    dir.display()
                ),
            )
            .into())
        }
    }
    let meta = fs_err::metadata(dir)?;
    if meta.permissions().mode() & 0o7777 != PRIVATE_DIR_MODE {
        tracing::info!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o7777), "making store directory private");
        fs_err::set_permissions(dir, Permissions::from_mode(PRIVATE_DIR_MODE))?;
    }
    Ok(())
}

impl Store {
    /// Opens the store at `root`, creating the layout and database schema as needed.
    ///
    /// The root and its directories of image contents and scratch space get [`PRIVATE_DIR_MODE`], also
    /// when an older rbuild created them with the umask.
    ///
    /// Also removes the scratch space (`tmp/`) of processes that died while using this store; the scratch
    /// space of live processes is never touched (see the `session` module: each process holds a `flock`).
    pub fn open(root: &Path) -> Result<Store, Error> {
        let blobs = root.join("blobs").join("sha256");
        let snapshots = root.join("snapshots");
        let mounts = root.join("mounts");
        let locks = root.join("locks");
        let tmp = root.join("tmp");
        let empty = root.join("empty");
        private_dir(root)?;
        for dir in [&blobs, &snapshots, &mounts, &locks, &tmp, &empty] {
            fs_err::create_dir_all(dir)?;
        }
        // See: #19. The root alone would do, but each directory that holds image contents or build
        // scratch space is private too, so that no single mode change (an operator's `chmod 755` of the
        // root, an older rbuild's store) exposes setuid files or device nodes of a layer to other users.
        for dir in [&root.join("blobs"), &snapshots, &mounts, &tmp] {
            private_dir(dir)?;
        }
        for dir in [&snapshots, &mounts, &tmp] {
            spread_subdirs(dir);
        }
        match session::clean_dead(&tmp) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "removed scratch space left by dead rbuild processes"
            ),
            // Another process cleaning at the same time can make entries vanish under us; not fatal.
            Err(e) => tracing::warn!(error = %e, "failed to clean store scratch space"),
        }
        let session = Session::create(&tmp)?;
        let db = {
            // See: #19. Processes opening a fresh store at once raced in SQLite's switch to WAL (which
            // takes the database's exclusive lock while others hold a shared one, a case SQLite answers
            // with SQLITE_BUSY at once rather than through the busy handler) and in schema creation.
            // Openers take turns; an open of an up-to-date store holds this lock for well under a
            // millisecond, and processes that already opened the store never take it.
            let path = locks.join("db-open.lock");
            let file = open_lock_file(&path)?;
            flock_retry(&file, FlockOperation::LockExclusive)
                .map_err(|source| Error::Lock { path, source })?;
            Db::open(&root.join("db.sqlite"))?
        };
        let store = Store {
            root: root.to_owned(),
            blobs,
            snapshots,
            mounts,
            locks,
            empty,
            db,
            session,
            leases: std::sync::Arc::default(),
        };
        let layout = root.join("oci-layout");
        if !layout.exists() {
            atomic_write(
                store.session.dir(),
                &layout,
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
        }
        if !root.join("index.json").exists() {
            store
                .db
                .write("write index.json", |tx| store.write_index(tx))?;
        }
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    // ---- blobs ----

    /// Where blob `d` lives (whether or not it is present).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// Whether blob `d` is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Starts writing a blob; see [`BlobWriter`].
    pub fn blob_writer(&self) -> Result<BlobWriter, Error> {
        BlobWriter::new(self.session.dir(), self.blobs.clone(), true)
    }

    /// A [`BlobWriter`] that does not hash, for a caller that hashes the very bytes it writes (the
    /// layer writer, whose digest is already a SHA-256 over its output): hashing again would cost a
    /// second pass over every layer. [`BlobWriter::commit`] must then be given that digest.
    pub fn blob_writer_hashed_by_caller(&self) -> Result<BlobWriter, Error> {
        BlobWriter::new(self.session.dir(), self.blobs.clone(), false)
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, Error> {
        let digest = Digest::sha256_of(bytes);
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)?;
        w.commit(Some(&digest))?;
        Ok(digest)
    }

    /// Reads a whole blob into memory.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, Error> {
        std::fs::read(self.blob_path(d)).map_err(|source| blob_error(d, source))
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, d: &Digest) -> Result<File, Error> {
        File::open(self.blob_path(d)).map_err(|source| blob_error(d, source))
    }

    /// A new empty temp directory (mode 0755) in this process's scratch space, on the store's file system.
    ///
    /// Build a snapshot in it (or in a subdirectory of it) and pass that to [`commit_snapshot`](Self::commit_snapshot).
    pub fn tmp_dir(&self) -> Result<tempfile::TempDir, Error> {
        Ok(tempfile::Builder::new()
            .prefix("dir-")
            .permissions(Permissions::from_mode(0o755))
            .tempdir_in(self.session.dir())
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "failed to create a temp dir in {}: {e}",
                        self.session.dir().display()
                    ),
                )
            })?)
    }

    // ---- snapshots ----

    /// The directory of the committed snapshot for layer `diff_id`, if there is one; marks it used.
    pub fn snapshot_path(&self, diff_id: &Digest) -> Option<PathBuf> {
        let path = self.snapshots.join(diff_id.hex());
        if !path.is_dir() {
            return None;
        }
        let touched = self.db.write("mark snapshot used", |tx| {
            tx.execute(
                "UPDATE snapshots SET last_used = ?1 WHERE diff_id = ?2",
                params![now_ms(), diff_id.hex()],
            )?;
            Ok(())
        });
        if let Err(e) = touched {
            // Only LRU order suffers; the snapshot itself is fine.
            tracing::warn!(%diff_id, error = %e, "failed to mark snapshot used");
        }
        Some(path)
    }

    /// Moves a finished directory into `snapshots/<diff_id hex>` and returns the final path.
    ///
    /// `dir` must be on the store's file system: a [`tmp_dir`](Self::tmp_dir) (the `TempDir` itself) or a
    /// directory inside one (e.g. an overlay upper dir). If another thread or process committed the same
    /// `diff_id` first, `dir` is removed and the existing path returned. Contents are not fsynced (as with
    /// containerd's overlay snapshotter); a snapshot can always be unpacked again from its blob.
    pub fn commit_snapshot(
        &self,
        dir: impl AsRef<Path>,
        diff_id: &Digest,
    ) -> Result<PathBuf, Error> {
        let from = dir.as_ref().to_owned();
        let dest = self.snapshots.join(diff_id.hex());
        let size = if dest.exists() { 0 } else { dir_size(&from)? };
        let won = !dest.exists()
            && rename_noreplace(&from, &dest).map_err(|source| Error::Rename {
                from: from.clone(),
                to: dest.clone(),
                source,
            })?;
        if won {
            fsync_dir(&self.snapshots)?;
            tracing::debug!(%diff_id, size, "snapshot committed");
        } else {
            tracing::debug!(%diff_id, "snapshot already committed; discarding ours");
            match fs_err::remove_dir_all(&from) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        // A TempDir's own cleanup now finds nothing to remove.
        drop(dir);
        let now = now_ms();
        self.db.write("record snapshot", |tx| {
            tx.execute(
                "INSERT INTO snapshots (diff_id, size, created, last_used) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (diff_id) DO UPDATE SET last_used = excluded.last_used",
                params![diff_id.hex(), i64::try_from(size).unwrap_or(i64::MAX), now],
            )?;
            Ok(())
        })?;
        Ok(dest)
    }

    /// A permanent empty directory (the lower dir of `FROM scratch`). Never write into it.
    pub fn empty_dir(&self) -> Result<PathBuf, Error> {
        fs_err::create_dir_all(&self.empty)?;
        Ok(self.empty.clone())
    }

    // ---- tags ----

    /// Points tag `name` (as given, e.g. `app:latest`) at `manifest`, in the database and `index.json`.
    ///
    /// Fails with [`Error::MissingBlob`] unless the manifest blob is present and, for an image manifest,
    /// its config and layers too (for an index, every child manifest the store holds is checked the same
    /// way, and children must be present).
    pub fn set_tag(&self, name: &str, manifest: &Descriptor) -> Result<(), Error> {
        self.check_complete(manifest, 0)?;
        let json = to_json(manifest);
        self.db.write(&format!("set tag {name}"), |tx| {
            // Already so (a rebuild that changed nothing): no write, no index.json rewrite.
            let current: Option<String> = tx
                .query_row("SELECT descriptor FROM tags WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            if current.as_deref() == Some(json.as_str()) {
                return Ok(());
            }
            tx.execute(
                "INSERT INTO tags (name, descriptor, updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET descriptor = excluded.descriptor, updated = excluded.updated",
                params![name, json, now_ms()],
            )?;
            // index.json is written inside the transaction, so writers from several processes take turns
            // and the last file written always matches the committed table.
            self.write_index(tx)
        })?;
        tracing::debug!(tag = name, digest = %manifest.digest, "tag set");
        Ok(())
    }

    /// The manifest descriptor tag `name` points at.
    pub fn resolve_tag(&self, name: &str) -> Result<Option<Descriptor>, Error> {
        let json: Option<String> = self.db.read(&format!("resolve tag {name}"), |c| {
            c.query_row("SELECT descriptor FROM tags WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
        })?;
        json.map(|j| from_json(&j, &format!("tag {name}")))
            .transpose()
    }

    /// Every tag with its manifest descriptor, sorted by name.
    pub fn list_tags(&self) -> Result<Vec<(String, Descriptor)>, Error> {
        let rows = self.db.read("list tags", list_tags)?;
        rows.into_iter()
            .map(|(name, json)| Ok((name.clone(), from_json(&json, &format!("tag {name}"))?)))
            .collect()
    }

    /// Removes tag `name`; returns whether it existed. Blobs stay until pruned.
    pub fn remove_tag(&self, name: &str) -> Result<bool, Error> {
        self.db.write(&format!("remove tag {name}"), |tx| {
            let n = tx.execute("DELETE FROM tags WHERE name = ?1", [name])?;
            if n > 0 {
                self.write_index(tx)?;
            }
            Ok(n > 0)
        })
    }

    fn write_index(&self, conn: &rusqlite::Connection) -> Result<(), db::Fail> {
        let mut manifests = Vec::new();
        for (name, json) in list_tags(conn)? {
            let mut d: Descriptor = from_json(&json, &format!("tag {name}"))?;
            d.annotations.insert(REF_NAME_ANNOTATION.to_owned(), name);
            manifests.push(d);
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            manifests,
            annotations: BTreeMap::new(),
        };
        let mut bytes = serde_json::to_vec_pretty(&index).expect("an Index always serializes");
        bytes.push(b'\n');
        atomic_write(self.session.dir(), &self.root.join("index.json"), &bytes)?;
        Ok(())
    }

    /// Checks that `d` and everything it references are present.
    fn check_complete(&self, d: &Descriptor, depth: u32) -> Result<(), Error> {
        if !self.has_blob(&d.digest) {
            return Err(Error::MissingBlob {
                digest: d.digest.clone(),
            });
        }
        // Indexes of indexes exist but are rare; stop runaway nesting.
        if depth > 4 {
            return Ok(());
        }
        if media_type::is_manifest(&d.media_type) {
            let bytes = self.read_blob(&d.digest)?;
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                what: format!("manifest {}", d.digest),
                source,
            })?;
            for blob in std::iter::once(&m.config).chain(&m.layers) {
                if !self.has_blob(&blob.digest) {
                    return Err(Error::MissingBlob {
                        digest: blob.digest.clone(),
                    });
                }
            }
        } else if media_type::is_index(&d.media_type) {
            let bytes = self.read_blob(&d.digest)?;
            let i: Index = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                what: format!("index {}", d.digest),
                source,
            })?;
            for child in &i.manifests {
                self.check_complete(child, depth + 1)?;
            }
        }
        Ok(())
    }

    // ---- cache records ----

    /// The value of cache record `key`; marks it used.
    pub fn cache_get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.db.write("read cache record", |tx| {
            Ok(tx
                .query_row(
                    "UPDATE cache_records SET last_used = ?1 WHERE key = ?2 RETURNING value",
                    params![now_ms(), key],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    /// Sets cache record `key` to `value` (replacing any previous value and references).
    pub fn cache_put(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.cache_put_with_refs(key, value, &[])
    }

    /// Sets cache record `key` to `value` and records the blobs and snapshots (by digest / diff_id) it
    /// needs, so that pruning keeps them while the record lives.
    pub fn cache_put_with_refs(
        &self,
        key: &str,
        value: &[u8],
        refs: &[Digest],
    ) -> Result<(), Error> {
        self.db.write("write cache record", |tx| {
            let now = now_ms();
            tx.execute(
                "INSERT INTO cache_records (key, value, created, last_used) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, last_used = excluded.last_used",
                params![key, value, now],
            )?;
            tx.execute("DELETE FROM cache_refs WHERE key = ?1", [key])?;
            let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO cache_refs (key, digest) VALUES (?1, ?2)")?;
            for d in refs {
                insert.execute(params![key, d.hex()])?;
            }
            Ok(())
        })
    }

    /// Deletes cache record `key` (and its references); deleting a missing record is not an error.
    pub fn cache_delete(&self, key: &str) -> Result<(), Error> {
        self.db.write("delete cache record", |tx| {
            tx.execute("DELETE FROM cache_records WHERE key = ?1", [key])?;
            Ok(())
        })
    }

    // ---- base image resolutions ----

    /// The manifest descriptor `reference` last resolved to (for offline builds); marks it used.
    pub fn base_get(&self, reference: &str) -> Result<Option<Descriptor>, Error> {
        let json: Option<String> = self.db.write("read base image resolution", |tx| {
            Ok(tx
                .query_row(
                    "UPDATE bases SET last_used = ?1 WHERE reference = ?2 RETURNING descriptor",
                    params![now_ms(), reference],
                    |r| r.get(0),
                )
                .optional()?)
        })?;
        json.map(|j| from_json(&j, &format!("base image {reference}")))
            .transpose()
    }

    /// Remembers that `reference` resolved to `manifest`.
    pub fn base_put(&self, reference: &str, manifest: &Descriptor) -> Result<(), Error> {
        let json = to_json(manifest);
        self.db.write("write base image resolution", |tx| {
            tx.execute(
                "INSERT INTO bases (reference, descriptor, updated, last_used) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (reference) DO UPDATE
                 SET descriptor = excluded.descriptor, updated = excluded.updated, last_used = excluded.last_used",
                params![reference, json, now_ms()],
            )?;
            Ok(())
        })
    }

    // ---- where blobs live on registries ----

    /// Remembers that blob `digest` is in `repository` on `registry` (pulled from or pushed there).
    pub fn blob_source_add(
        &self,
        digest: &Digest,
        registry: &str,
        repository: &str,
    ) -> Result<(), Error> {
        self.db.write("record blob source", |tx| {
            tx.execute(
                "INSERT INTO blob_sources (digest, registry, repository, updated) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (digest, registry, repository) DO UPDATE SET updated = excluded.updated",
                params![digest.to_string(), registry, repository, now_ms()],
            )?;
            Ok(())
        })
    }

    /// The repositories of `registry` known to hold blob `digest`, most recently seen first.
    pub fn blob_sources(&self, digest: &Digest, registry: &str) -> Result<Vec<String>, Error> {
        let digest = digest.to_string();
        self.db.read("read blob sources", |c| {
            let mut stmt = c.prepare_cached(
                "SELECT repository FROM blob_sources WHERE digest = ?1 AND registry = ?2
                 ORDER BY updated DESC",
            )?;
            let rows = stmt.query_map(params![digest, registry], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<Vec<_>, _>>()
        })
    }

    // ---- cache mounts and locks ----

    /// The directory of cache mount `id`, created if needed: `mounts/<sha256(id) hex>`.
    ///
    /// The id is hashed, never used as a path, so any string is safe.
    pub fn cache_mount_dir(&self, id: &str) -> Result<PathBuf, Error> {
        let hash = Digest::sha256_of(id.as_bytes());
        let path = self.mounts.join(hash.hex());
        if !path.is_dir() {
            match fs_err::create_dir(&path) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e.into()),
                _ => {}
            }
            fs_err::set_permissions(&path, Permissions::from_mode(0o755))?;
        }
        self.db.write("record cache mount", |tx| {
            tx.execute(
                "INSERT INTO mounts (hash, id, created, last_used) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (hash) DO UPDATE SET last_used = excluded.last_used",
                params![hash.hex(), id, now_ms()],
            )?;
            Ok(())
        })?;
        Ok(path)
    }

    /// The directory of cache mount `id` if it exists (see [`Store::cache_mount_dir`]); never creates it.
    pub fn existing_cache_mount_dir(&self, id: &str) -> Option<PathBuf> {
        let path = self.mounts.join(Digest::sha256_of(id.as_bytes()).hex());
        path.is_dir().then_some(path)
    }

    /// Takes the exclusive cross-process lock `name`, blocking until it is free.
    ///
    /// The lock is a `flock` on `locks/<sha256(name) hex>`: released when the guard drops or the process
    /// dies. Locks are not reentrant, even within one thread.
    pub fn lock(&self, name: &str) -> Result<LockGuard, Error> {
        self.lock_with(name, FlockOperation::LockExclusive)
            .map(|g| g.expect("blocking flock always returns the lock"))
    }

    /// Takes the exclusive lock `name` if it is free right now.
    pub fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, Error> {
        self.lock_with(name, FlockOperation::NonBlockingLockExclusive)
    }

    /// Takes the lock for running a miss with cache key `key` if it is free right now; see: #19.
    ///
    /// Concurrent builds on one store run an identical miss once: the first takes this lock and runs,
    /// the others wait for it and then read its record. Its file is removed when it is released, so that
    /// the locks of every key ever built don't pile up in `locks/`.
    pub fn try_lock_cache_key(&self, key: &str) -> Result<Option<LockGuard>, Error> {
        let guard = self.lock_with(
            &format!("cache-key:{key}"),
            FlockOperation::NonBlockingLockExclusive,
        )?;
        Ok(guard.map(|mut g| {
            g.transient = true;
            g
        }))
    }

    /// Takes the lock that guards cache mount `id` for `sharing=locked`; `prune` skips a mount whose lock
    /// is held.
    pub fn lock_cache_mount(&self, id: &str) -> Result<LockGuard, Error> {
        self.lock(&mount_lock_name(id))
    }

    fn lock_with(&self, name: &str, op: FlockOperation) -> Result<Option<LockGuard>, Error> {
        let path = self.lock_file_path(name);
        let file = open_lock_file(&path)?;
        match flock_retry(&file, op) {
            Ok(()) => Ok(Some(LockGuard {
                _file: file,
                path,
                transient: false,
            })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(source) => Err(Error::Lock { path, source }),
        }
    }

    fn lock_file_path(&self, name: &str) -> PathBuf {
        self.locks.join(Digest::sha256_of(name.as_bytes()).hex())
    }

    // ---- accounting ----

    /// Disk usage: blobs (from the file system), snapshots, records and mounts (from the database).
    pub fn usage(&self) -> Result<Usage, Error> {
        let mut usage = Usage::default();
        for entry in fs_err::read_dir(&self.blobs)? {
            let meta = entry?.metadata()?;
            if meta.is_file() {
                usage.blobs += 1;
                usage.blob_bytes += meta.len();
            }
        }
        let (snapshots, snapshot_bytes, records, mounts) = self.db.read("compute usage", |c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM snapshots), (SELECT coalesce(sum(size), 0) FROM snapshots),
                        (SELECT count(*) FROM cache_records), (SELECT count(*) FROM mounts)",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?)),
            )
        })?;
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        usage.snapshots = u(snapshots);
        usage.snapshot_bytes = u(snapshot_bytes);
        usage.records = u(records);
        usage.mounts = u(mounts);
        Ok(usage)
    }
}

fn open_lock_file(path: &Path) -> Result<File, Error> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| Error::Lock {
            path: path.to_owned(),
            source,
        })
}

fn mount_lock_name(id: &str) -> String {
    format!("mount:{id}")
}

fn blob_error(d: &Digest, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::NotFound {
        Error::MissingBlob { digest: d.clone() }
    } else {
        Error::ReadBlob {
            digest: d.clone(),
            source,
        }
    }
}

fn list_tags(c: &rusqlite::Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = c.prepare_cached("SELECT name, descriptor FROM tags ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn to_json(d: &Descriptor) -> String {
    serde_json::to_string(d).expect("a Descriptor always serializes")
}

fn from_json(json: &str, what: &str) -> Result<Descriptor, Error> {
    serde_json::from_str(json).map_err(|source| Error::Json {
        what: what.to_owned(),
        source,
    })
}

/// Total size of the regular files under `dir`, in bytes (hard links counted once per name).
fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs_err::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                total += entry.metadata()?.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        (root, store)
    }

    #[test]
    fn trees_made_in_the_store_are_spread_over_block_groups_on_ext4() {
        let (root, _store) = store();
        let on_ext4 = rustix::fs::statfs(root.path()).unwrap().f_type == 0xEF53;
        for dir in ["snapshots", "mounts", "tmp"] {
            let fd = rustix::fs::open(
                root.path().join(dir),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
                rustix::fs::Mode::empty(),
            )
            .unwrap();
            // Elsewhere (tmpfs, xfs) the flag may be refused; the store opens all the same.
            if on_ext4 {
                let flags = rustix::fs::ioctl_getflags(&fd).unwrap();
                assert!(flags.contains(rustix::fs::IFlags::TOPDIR), "{dir}");
            }
        }
        // Opening again keeps the flag and does not fail.
        Store::open(root.path()).unwrap();
    }

    fn scratch_entries(store: &Store) -> usize {
        fs_err::read_dir(store.session.dir()).unwrap().count()
    }

    #[test]
    fn schema_migrates_forward_and_refuses_newer() {
        let root = tempfile::tempdir().unwrap();
        drop(Store::open(root.path()).unwrap());
        let db = rusqlite::Connection::open(root.path().join("db.sqlite")).unwrap();
        // Back to version 1: bases without last_used, holding one row, and no stat cache (version 3).
        db.execute_batch(
            "ALTER TABLE bases DROP COLUMN last_used; DROP TABLE stat_cache; DROP TABLE blob_sources; UPDATE schema_version SET version = 1;
             INSERT INTO bases VALUES ('alpine', '{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",\"size\":0}', 5);",
        )
        .unwrap();
        let store = Store::open(root.path()).unwrap();
        assert_eq!(
            store.base_get("alpine").unwrap().unwrap().digest,
            Digest::sha256_of(b"")
        );
        drop(store);
        db.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        let err = Store::open(root.path()).unwrap_err();
        assert!(
            matches!(err, Error::SchemaTooNew { found: 99, .. }),
            "{err}"
        );
    }

    #[test]
    fn blob_round_trip() {
        let (_root, store) = store();
        let d = store.put_blob(b"hello").unwrap();
        assert_eq!(d, Digest::sha256_of(b"hello"));
        assert!(store.has_blob(&d));
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        assert_eq!(fs_err::read(store.blob_path(&d)).unwrap(), b"hello");
        // Writing it again is a no-op that succeeds.
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        assert_eq!(w.commit(Some(&d)).unwrap(), (d.clone(), 5));
        assert_eq!(scratch_entries(&store), 0);
        let u = store.usage().unwrap();
        assert_eq!((u.blobs, u.blob_bytes), (1, 5));
    }

    #[test]
    fn missing_blob_error_names_the_digest() {
        let (_root, store) = store();
        let d = Digest::sha256_of(b"absent");
        assert!(!store.has_blob(&d));
        let err = store.read_blob(&d).unwrap_err();
        assert!(matches!(err, Error::MissingBlob { .. }));
        assert!(err.to_string().contains(&d.to_string()), "{err}");
    }

    #[test]
    fn digest_mismatch_is_rejected_and_temp_removed() {
        let (_root, store) = store();
        let wrong = Digest::sha256_of(b"something else");
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"actual bytes").unwrap();
        assert_eq!(scratch_entries(&store), 1);
        match w.commit(Some(&wrong)) {
            Err(Error::DigestMismatch { expected, actual }) => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, Digest::sha256_of(b"actual bytes"));
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
        assert_eq!(scratch_entries(&store), 0);
        assert!(!store.has_blob(&Digest::sha256_of(b"actual bytes")));
        assert!(!store.has_blob(&wrong));
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let (_root, store) = store();
        let mut w = store.blob_writer().unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(scratch_entries(&store), 0);
        assert_eq!(store.usage().unwrap().blobs, 0);
    }

    #[test]
    fn cache_records_put_get_delete() {
        let (_root, store) = store();
        assert_eq!(store.cache_get("k").unwrap(), None);
        store.cache_put("k", b"v1").unwrap();
        assert_eq!(store.cache_get("k").unwrap().as_deref(), Some(&b"v1"[..]));
        store.cache_put("k", b"v2").unwrap();
        assert_eq!(store.cache_get("k").unwrap().as_deref(), Some(&b"v2"[..]));
        store
            .cache_put_with_refs(
                "j",
                b"",
                &[Digest::sha256_of(b"a"), Digest::sha256_of(b"a")],
            )
            .unwrap();
        assert_eq!(store.cache_get("j").unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(store.usage().unwrap().records, 2);
        store.cache_delete("k").unwrap();
        store.cache_delete("k").unwrap();
        assert_eq!(store.cache_get("k").unwrap(), None);
        store.cache_delete("j").unwrap();
        let refs: i64 = store
            .db
            .read("count", |c| {
                c.query_row("SELECT count(*) FROM cache_refs", [], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(refs, 0, "references go with their record");
    }

    #[test]
    fn base_resolutions_round_trip() {
        let (_root, store) = store();
        assert_eq!(
            store.base_get("docker.io/library/alpine:3.20").unwrap(),
            None
        );
        let d = Descriptor::new(media_type::OCI_INDEX, Digest::sha256_of(b"idx"), 3);
        store.base_put("docker.io/library/alpine:3.20", &d).unwrap();
        assert_eq!(
            store.base_get("docker.io/library/alpine:3.20").unwrap(),
            Some(d.clone())
        );
        let d2 = Descriptor::new(media_type::OCI_INDEX, Digest::sha256_of(b"idx2"), 4);
        store
            .base_put("docker.io/library/alpine:3.20", &d2)
            .unwrap();
        assert_eq!(
            store.base_get("docker.io/library/alpine:3.20").unwrap(),
            Some(d2)
        );
    }

    #[test]
    fn cache_mount_dirs_hash_the_id() {
        let (root, store) = store();
        let a = store.cache_mount_dir("../../etc").unwrap();
        assert!(a.is_dir());
        assert_eq!(a.parent().unwrap(), root.path().join("mounts"));
        assert_eq!(
            a.file_name().unwrap().to_str().unwrap(),
            Digest::sha256_of(b"../../etc").hex()
        );
        assert_eq!(store.cache_mount_dir("../../etc").unwrap(), a);
        assert_ne!(store.cache_mount_dir("/root/.cache/go").unwrap(), a);
        assert_eq!(store.usage().unwrap().mounts, 2);
    }

    #[test]
    fn locks_exclude_each_other_until_dropped() {
        let (root, store) = store();
        let other = Store::open(root.path()).unwrap();
        let held = store.lock("gc").unwrap();
        assert!(other.try_lock("gc").unwrap().is_none());
        assert!(other.try_lock("cache-mount:x").unwrap().is_some());
        drop(held);
        assert!(other.try_lock("gc").unwrap().is_some());
    }

    #[test]
    fn snapshot_commit_and_lookup() {
        let (_root, store) = store();
        let diff_id = Digest::sha256_of(b"layer");
        assert_eq!(store.snapshot_path(&diff_id), None);
        let tmp = store.tmp_dir().unwrap();
        fs_err::write(tmp.path().join("file"), b"12345").unwrap();
        let path = store.commit_snapshot(tmp, &diff_id).unwrap();
        assert_eq!(store.snapshot_path(&diff_id), Some(path.clone()));
        assert_eq!(fs_err::read(path.join("file")).unwrap(), b"12345");
        let mode = fs_err::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "snapshot roots are traversable by every user");
        let u = store.usage().unwrap();
        assert_eq!((u.snapshots, u.snapshot_bytes), (1, 5));
        // A subdirectory of a tmp dir (an overlay upper dir) works too; the loser's copy is removed.
        let tmp = store.tmp_dir().unwrap();
        let upper = tmp.path().join("upper");
        fs_err::create_dir(&upper).unwrap();
        assert_eq!(store.commit_snapshot(&upper, &diff_id).unwrap(), path);
        assert!(!upper.exists());
        let empty = store.empty_dir().unwrap();
        assert!(empty.is_dir());
        assert_eq!(fs_err::read_dir(&empty).unwrap().count(), 0);
    }

    #[test]
    fn set_tag_requires_manifest_and_its_blobs() {
        let (_root, store) = store();
        let config = store.put_blob(b"{}").unwrap();
        let layer = Digest::sha256_of(b"layer not stored");
        let missing = Descriptor::new(
            media_type::OCI_MANIFEST,
            Digest::sha256_of(b"no manifest"),
            11,
        );
        assert!(
            matches!(store.set_tag("app:latest", &missing), Err(Error::MissingBlob { digest }) if digest == missing.digest)
        );
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            config: Descriptor::new(media_type::OCI_CONFIG, config, 2),
            layers: vec![Descriptor::new(
                media_type::OCI_LAYER_GZIP,
                layer.clone(),
                1,
            )],
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let md = store.put_blob(&bytes).unwrap();
        let desc = Descriptor::new(media_type::OCI_MANIFEST, md, bytes.len() as u64);
        assert!(
            matches!(store.set_tag("app:latest", &desc), Err(Error::MissingBlob { digest }) if digest == layer)
        );
        assert_eq!(store.list_tags().unwrap(), vec![]);
        assert_eq!(store.resolve_tag("app:latest").unwrap(), None);
    }
    /// Runs `cmd` as `nobody` (uid and gid 65534, no supplementary groups) with util-linux `setpriv`.
    fn as_nobody(cmd: &[&std::ffi::OsStr]) -> std::process::Output {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test needs root: it runs a setuid-root binary as nobody"
        );
        // Through `sh`: setpriv itself finds the program before it drops privileges.
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["/bin/sh", "-c", "exec \"$0\" \"$@\""])
            .args(cmd)
            .output()
            .expect("setpriv (util-linux) runs")
    }

    // See: #19. A setuid-root binary in a pulled layer must not be runnable by other users of the host.
    #[test]
    fn r19_store_dirs_private_setuid_binary_unreachable_by_nobody() {
        let base = tempfile::tempdir().unwrap();
        // The temp dir is 0700; open it so that only the store's own modes protect what is inside.
        fs_err::set_permissions(base.path(), Permissions::from_mode(0o755)).unwrap();
        let setuid_id = |dest: &Path| {
            fs_err::copy("/usr/bin/id", dest).unwrap();
            fs_err::set_permissions(dest, Permissions::from_mode(0o4755)).unwrap();
        };
        // Control: the same binary outside the store gives nobody euid 0, so the test can see the attack.
        let control = base.path().join("control-id");
        setuid_id(&control);
        let out = as_nobody(&[control.as_os_str(), "-u".as_ref()]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{out:?}");

        // A store laid out by an older rbuild: every directory 0755.
        let root = base.path().join("store");
        for dir in ["", "blobs/sha256", "snapshots", "mounts", "tmp", "locks"] {
            fs_err::create_dir_all(root.join(dir)).unwrap();
            fs_err::set_permissions(root.join(dir), Permissions::from_mode(0o755)).unwrap();
        }
        let store = Store::open(&root).unwrap();
        for dir in ["", "blobs", "snapshots", "mounts", "tmp"] {
            let mode = fs_err::metadata(root.join(dir))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777;
            assert_eq!(mode, PRIVATE_DIR_MODE, "{dir:?} of the store");
        }

        let tmp = store.tmp_dir().unwrap();
        setuid_id(&tmp.path().join("id"));
        let scratch = tmp.path().join("id");
        let out = as_nobody(&[scratch.as_os_str(), "-u".as_ref()]);
        assert!(!out.status.success(), "scratch space reachable: {out:?}");
        let snapshot = store
            .commit_snapshot(tmp, &Digest::sha256_of(b"setuid layer"))
            .unwrap();
        let cache_mount = store.cache_mount_dir("go-build").unwrap();
        setuid_id(&cache_mount.join("id"));
        for binary in [snapshot.join("id"), cache_mount.join("id")] {
            // Still setuid root, and still 0755 inside: a container sees it as the image made it.
            let mode = fs_err::metadata(&binary).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o4755);
            let out = as_nobody(&[binary.as_os_str(), "-u".as_ref()]);
            assert!(!out.status.success(), "{} ran: {out:?}", binary.display());
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
                "{out:?}"
            );
        }

        // A store created fresh is private from its first directory on.
        let fresh = base.path().join("fresh").join("store");
        drop(Store::open(&fresh).unwrap());
        let mode = fs_err::metadata(&fresh).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, PRIVATE_DIR_MODE);
    }
}
