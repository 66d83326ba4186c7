//! Garbage collection: least-recently-used pruning of cache records and base-image resolutions, and
//! removal of every blob and snapshot nothing refers to any more.
//!
//! What refers to what:
//! - a **tag** keeps its manifest (or index and child manifests), configs and layer blobs, and the
//!   snapshots of its layers (by the config's diff_ids). Tags are never pruned; remove the tag first.
//! - a **cache record** keeps the digests the solver listed in [`Store::cache_put_with_refs`]: each
//!   names a blob, a snapshot (diff_id), or both.
//! - a **base-image resolution** ([`Store::base_put`]) keeps what its manifest reaches, as a tag does.
//!
//! Records and resolutions are the *owners* that pruning evicts (by age, by LRU until under a size, or
//! all); blobs and snapshots are then removed exactly when no remaining owner, tag, or `in_use` item
//! reaches them. A blob or snapshot that was never registered anywhere is garbage on every prune.
//!
//! Builds in other processes are protected by leases: a build holds [`Store::lease`] (a shared `flock`)
//! while it runs, and `prune` takes the same lock exclusively, so it waits for running builds and builds
//! wait for a running prune. The calling process's own lease is upgraded, and what it still needs is
//! named through `in_use`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use oci::{media_type, Descriptor, Digest, Index, Manifest};
use rusqlite::params;
use rustix::fs::FlockOperation;
use serde::Deserialize;

use crate::blob::rename_noreplace;
use crate::session::{flock_retry, now_ms};
use crate::{dir_size, Error, Store};

/// The lock that builds hold shared and `prune` holds exclusive.
pub(crate) const GC_LOCK: &str = "gc";

/// What [`Store::prune`] removes beyond unreferenced blobs and snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Remove every cache record, base-image resolution and cache mount (not tags or what they reach).
    pub all: bool,
    /// Evict least-recently-used records and resolutions until blobs and snapshots fit in this many bytes.
    pub keep_bytes: Option<u64>,
    /// Remove records, resolutions and cache mounts not used for this long.
    pub older_than: Option<Duration>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Cache records removed.
    pub records: u64,
    /// Base-image resolutions removed.
    pub bases: u64,
    /// Blobs removed.
    pub blobs: u64,
    /// Snapshots removed.
    pub snapshots: u64,
    /// Cache-mount directories removed.
    pub mounts: u64,
    /// Bytes freed by the removed blobs and snapshots.
    pub bytes: u64,
}

/// Something `prune` may remove, as offered to its `in_use` callback; answering true keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcItem<'a> {
    /// A cache record, by key.
    Record(&'a str),
    /// A base-image resolution, by reference.
    Base(&'a str),
    /// A blob, by digest.
    Blob(&'a Digest),
    /// A snapshot, by diff_id.
    Snapshot(&'a Digest),
    /// A cache mount, by the id given to [`Store::cache_mount_dir`].
    Mount(&'a str),
}

/// A build's protection from `prune` in other processes; see [`Store::lease`]. Released on drop.
#[derive(Debug)]
pub struct Lease {
    state: std::sync::Arc<LeaseState>,
}

/// The per-store lease lock: one open file (one `flock`) shared by all leases of this process, so that
/// `prune` in this process can upgrade it instead of deadlocking against its own shared lock.
#[derive(Debug, Default)]
pub(crate) struct LeaseState {
    inner: Mutex<LeaseInner>,
}

#[derive(Debug, Default)]
struct LeaseInner {
    file: Option<File>,
    count: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self
            .state
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        inner.count -= 1;
        if inner.count == 0 {
            // Closing the file releases the shared lock.
            inner.file = None;
        }
    }
}

/// An owner (record or base resolution) with its last use and what it references.
struct Owner {
    kind: OwnerKind,
    name: String,
    last_used: i64,
    refs: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OwnerKind {
    Record,
    Base,
}

/// What a descriptor reaches: blob hexes and snapshot (diff_id) hexes.
#[derive(Default)]
struct Reach {
    hexes: HashSet<String>,
}

#[derive(Deserialize)]
struct ConfigRootFs {
    #[serde(default)]
    rootfs: Option<DiffIds>,
}

#[derive(Deserialize)]
struct DiffIds {
    #[serde(default)]
    diff_ids: Vec<Digest>,
}

impl Store {
    /// Protects what this process's build uses from `prune` in other processes until the lease drops.
    ///
    /// Take one for the whole of a build (before the first cache lookup, until the image is tagged or
    /// pushed). Blocks while another process prunes. Cheap to take many times: leases of one store share
    /// one lock.
    pub fn lease(&self) -> Result<Lease, Error> {
        let mut inner = self
            .leases
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if inner.file.is_none() {
            let path = self.lock_file_path(GC_LOCK);
            let file = crate::open_lock_file(&path)?;
            flock_retry(&file, FlockOperation::LockShared)
                .map_err(|source| Error::Lock { path, source })?;
            inner.file = Some(file);
        }
        inner.count += 1;
        Ok(Lease {
            state: self.leases.clone(),
        })
    }

    /// Removes cache records, base-image resolutions and cache mounts chosen by `opts`, then every blob
    /// and snapshot nothing refers to (see the `gc` module docs for what refers to what).
    ///
    /// `in_use` is asked about each candidate; answering true keeps it (and what it references). Waits for
    /// builds holding a [`lease`](Self::lease) in other processes to finish; leases of this store are
    /// upgraded, so do not call it from a thread that other threads' builds depend on without naming
    /// their items in `in_use`.
    pub fn prune(
        &self,
        opts: PruneOptions,
        in_use: &dyn Fn(GcItem<'_>) -> bool,
    ) -> Result<PruneReport, Error> {
        // Prunes take turns first, so that upgrading our shared lease below (which briefly drops it)
        // cannot let another prune in.
        let _prune = self.lock("prune")?;
        let leases = self
            .leases
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let gc_path = self.lock_file_path(GC_LOCK);
        let own_file;
        let gc_file = match &leases.file {
            Some(f) => f,
            None => {
                own_file = crate::open_lock_file(&gc_path)?;
                &own_file
            }
        };
        tracing::debug!("waiting for builds to release their leases");
        flock_retry(gc_file, FlockOperation::LockExclusive).map_err(|source| Error::Lock {
            path: gc_path.clone(),
            source,
        })?;
        let result = self.prune_locked(opts, in_use);
        if let Some(f) = &leases.file {
            flock_retry(f, FlockOperation::LockShared).map_err(|source| Error::Lock {
                path: gc_path,
                source,
            })?;
        }
        result
    }

    fn prune_locked(
        &self,
        opts: PruneOptions,
        in_use: &dyn Fn(GcItem<'_>) -> bool,
    ) -> Result<PruneReport, Error> {
        let mut report = PruneReport::default();
        let now = now_ms();
        let cutoff = opts
            .older_than
            .map(|d| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));

        // Roots: tags, never removed.
        let mut rooted = HashSet::new();
        for (_, d) in self.list_tags()? {
            rooted.extend(self.reach(&d).hexes);
        }

        // Owners, least recently used first.
        let mut owners = self.owners()?;
        owners.sort_by_key(|o| o.last_used);
        let kept_by_caller = |o: &Owner| match o.kind {
            OwnerKind::Record => in_use(GcItem::Record(&o.name)),
            OwnerKind::Base => in_use(GcItem::Base(&o.name)),
        };
        let mut evict = vec![false; owners.len()];
        for (i, o) in owners.iter().enumerate() {
            let expired = opts.all || cutoff.is_some_and(|c| o.last_used < c);
            evict[i] = expired && !kept_by_caller(o);
        }

        // What exists on disk, with sizes.
        let blobs = self.blob_sizes()?;
        let snapshots = self.snapshot_sizes()?;
        let size_of = |hex: &str| {
            blobs.get(hex).copied().unwrap_or(0) + snapshots.get(hex).copied().unwrap_or(0)
        };
        let caller_keeps = |hex: &str| {
            let d: Digest = format!("sha256:{hex}")
                .parse()
                .expect("store names are digest hexes");
            (blobs.contains_key(hex) && in_use(GcItem::Blob(&d)))
                || (snapshots.contains_key(hex) && in_use(GcItem::Snapshot(&d)))
        };

        // Reference counts from surviving owners.
        let mut refcount: HashMap<&str, usize> = HashMap::new();
        for (o, _) in owners.iter().zip(&evict).filter(|(_, e)| !**e) {
            for r in &o.refs {
                *refcount.entry(r.as_str()).or_default() += 1;
            }
        }
        let live = |hex: &str, refcount: &HashMap<&str, usize>| {
            rooted.contains(hex) || refcount.get(hex).is_some_and(|n| *n > 0)
        };

        if let Some(limit) = opts.keep_bytes {
            let mut kept_protected: HashMap<&str, bool> = HashMap::new();
            let mut total: u64 = blobs
                .keys()
                .chain(snapshots.keys())
                .collect::<HashSet<_>>()
                .into_iter()
                .filter(|h| {
                    live(h, &refcount)
                        || *kept_protected
                            .entry(h.as_str())
                            .or_insert_with(|| caller_keeps(h))
                })
                .map(|h| size_of(h))
                .sum();
            for (i, o) in owners.iter().enumerate() {
                if total <= limit {
                    break;
                }
                if evict[i] || kept_by_caller(o) {
                    continue;
                }
                evict[i] = true;
                for r in &o.refs {
                    let n = refcount.get_mut(r.as_str()).expect("counted above");
                    *n -= 1;
                    if !live(r, &refcount)
                        && !*kept_protected
                            .entry(r.as_str())
                            .or_insert_with(|| caller_keeps(r))
                    {
                        total = total.saturating_sub(size_of(r));
                    }
                }
            }
        }

        // Remove the evicted owners first: a crash after this leaves unreferenced files, never a record
        // that points at a removed file.
        let evicted: Vec<&Owner> = owners
            .iter()
            .zip(&evict)
            .filter(|(_, e)| **e)
            .map(|(o, _)| o)
            .collect();
        if !evicted.is_empty() {
            self.db.write("remove pruned records", |tx| {
                let mut del_record =
                    tx.prepare_cached("DELETE FROM cache_records WHERE key = ?1")?;
                let mut del_base = tx.prepare_cached("DELETE FROM bases WHERE reference = ?1")?;
                for o in &evicted {
                    match o.kind {
                        OwnerKind::Record => del_record.execute([&o.name])?,
                        OwnerKind::Base => del_base.execute([&o.name])?,
                    };
                }
                Ok(())
            })?;
        }
        for o in &evicted {
            match o.kind {
                OwnerKind::Record => report.records += 1,
                OwnerKind::Base => report.bases += 1,
            }
        }

        // Sweep blobs and snapshots nothing reaches.
        for (hex, size) in &snapshots {
            let d: Digest = format!("sha256:{hex}")
                .parse()
                .expect("store names are digest hexes");
            if live(hex, &refcount) || in_use(GcItem::Snapshot(&d)) {
                continue;
            }
            self.remove_snapshot(&d)?;
            report.snapshots += 1;
            report.bytes += size;
        }
        for (hex, size) in &blobs {
            let d: Digest = format!("sha256:{hex}")
                .parse()
                .expect("store names are digest hexes");
            if live(hex, &refcount) || in_use(GcItem::Blob(&d)) {
                continue;
            }
            match fs_err::remove_file(self.blob_path(&d)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
            tracing::debug!(digest = %d, size, "pruned blob");
            report.blobs += 1;
            report.bytes += size;
        }

        report.mounts = self.prune_mounts(opts.all, cutoff, in_use)?;
        if let Err(e) = crate::session::clean_dead(&self.root.join("tmp")) {
            tracing::warn!(error = %e, "failed to clean store scratch space");
        }
        tracing::info!(?report, "pruned store");
        Ok(report)
    }

    fn owners(&self) -> Result<Vec<Owner>, Error> {
        let (records, bases) = self.db.read("list cache records", |c| {
            let mut refs: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut stmt = c.prepare("SELECT key, digest FROM cache_refs")?;
            for row in
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            {
                let (k, d) = row?;
                refs.entry(k).or_default().push(d);
            }
            let mut stmt = c.prepare("SELECT key, last_used FROM cache_records")?;
            let records = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .map(|row| {
                    let (key, last_used) = row?;
                    let refs = refs.remove(&key).unwrap_or_default();
                    Ok(Owner {
                        kind: OwnerKind::Record,
                        name: key,
                        last_used,
                        refs,
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut stmt = c.prepare("SELECT reference, descriptor, last_used FROM bases")?;
            let bases = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((records, bases))
        })?;
        let mut owners = records;
        for (reference, json, last_used) in bases {
            let refs = match serde_json::from_str::<Descriptor>(&json) {
                Ok(d) => self.reach(&d).hexes.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(%reference, error = %e, "invalid stored base-image resolution; it will be pruned");
                    Vec::new()
                }
            };
            owners.push(Owner {
                kind: OwnerKind::Base,
                name: reference,
                last_used,
                refs,
            });
        }
        Ok(owners)
    }

    /// Everything `d` reaches among present blobs: itself, child manifests, configs, layers, and the
    /// diff_ids (snapshot keys) listed in configs.
    fn reach(&self, d: &Descriptor) -> Reach {
        let mut reach = Reach::default();
        self.reach_into(d, &mut reach, 0);
        reach
    }

    fn reach_into(&self, d: &Descriptor, reach: &mut Reach, depth: u32) {
        reach.hexes.insert(d.digest.hex().to_owned());
        if depth > 4 {
            return;
        }
        let Ok(bytes) = self.read_blob(&d.digest) else {
            return;
        };
        if media_type::is_index(&d.media_type) {
            if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
                for child in &index.manifests {
                    self.reach_into(child, reach, depth + 1);
                }
            }
        } else if media_type::is_manifest(&d.media_type) {
            if let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) {
                reach
                    .hexes
                    .extend(m.layers.iter().map(|l| l.digest.hex().to_owned()));
                reach.hexes.insert(m.config.digest.hex().to_owned());
                let config = self.read_blob(&m.config.digest).ok();
                let diff_ids = config
                    .and_then(|c| serde_json::from_slice::<ConfigRootFs>(&c).ok())
                    .and_then(|c| c.rootfs)
                    .map(|r| r.diff_ids)
                    .unwrap_or_default();
                reach
                    .hexes
                    .extend(diff_ids.iter().map(|d| d.hex().to_owned()));
            }
        }
    }

    fn blob_sizes(&self) -> Result<HashMap<String, u64>, Error> {
        let mut out = HashMap::new();
        for entry in fs_err::read_dir(&self.blobs)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hex(&name) {
                out.insert(name, entry.metadata()?.len());
            }
        }
        Ok(out)
    }

    fn snapshot_sizes(&self) -> Result<HashMap<String, u64>, Error> {
        let recorded: HashMap<String, i64> = self.db.read("list snapshots", |c| {
            let mut stmt = c.prepare("SELECT diff_id, size FROM snapshots")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        let mut out = HashMap::new();
        for entry in fs_err::read_dir(&self.snapshots)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_hex(&name) {
                continue;
            }
            // A snapshot renamed into place by a process that died before recording it has no row.
            let size = match recorded.get(&name) {
                Some(s) => u64::try_from(*s).unwrap_or(0),
                None => dir_size(&entry.path())?,
            };
            out.insert(name, size);
        }
        Ok(out)
    }

    /// Removes a snapshot: first renamed into scratch space (so it vanishes at once from
    /// `snapshot_path`), then deleted, then forgotten in the database.
    fn remove_snapshot(&self, d: &Digest) -> Result<(), Error> {
        let path = self.snapshots.join(d.hex());
        let doomed: PathBuf = self.session.dir().join(format!("gc-{}", d.hex()));
        if rename_noreplace(&path, &doomed).map_err(|source| Error::Rename {
            from: path.clone(),
            to: doomed.clone(),
            source,
        })? {
            fs_err::remove_dir_all(&doomed)?;
        }
        self.db.write("forget pruned snapshot", |tx| {
            tx.execute("DELETE FROM snapshots WHERE diff_id = ?1", [d.hex()])?;
            Ok(())
        })?;
        tracing::debug!(diff_id = %d, "pruned snapshot");
        Ok(())
    }

    fn prune_mounts(
        &self,
        all: bool,
        cutoff: Option<i64>,
        in_use: &dyn Fn(GcItem<'_>) -> bool,
    ) -> Result<u64, Error> {
        if !all && cutoff.is_none() {
            return Ok(0);
        }
        let cutoff = if all {
            i64::MAX
        } else {
            cutoff.expect("checked above")
        };
        let mounts: Vec<(String, String)> = self.db.read("list cache mounts", |c| {
            let mut stmt = c.prepare("SELECT hash, id FROM mounts WHERE last_used < ?1")?;
            let rows = stmt.query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        let mut removed = 0;
        for (hash, id) in mounts {
            if in_use(GcItem::Mount(&id)) {
                continue;
            }
            // `sharing=locked` users hold this lock while the mount is in use.
            let Some(_guard) = self.try_lock(&crate::mount_lock_name(&id))? else {
                continue;
            };
            let path = self.mounts.join(&hash);
            let doomed = self.session.dir().join(format!("gc-mount-{hash}"));
            if rename_noreplace(&path, &doomed).map_err(|source| Error::Rename {
                from: path.clone(),
                to: doomed.clone(),
                source,
            })? {
                fs_err::remove_dir_all(&doomed)?;
            }
            self.db.write("forget pruned cache mount", |tx| {
                tx.execute("DELETE FROM mounts WHERE hash = ?1", [&hash])?;
                Ok(())
            })?;
            removed += 1;
        }
        Ok(removed)
    }
}

fn is_hex(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
