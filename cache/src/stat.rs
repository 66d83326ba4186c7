//! The build-context stat cache: for each (context root, relative path), the stat fields seen when the
//! file's content digest was last computed. A file whose inode, size, mtime and ctime are unchanged is not
//! read again, so a no-op rebuild reads no context file contents.

use std::collections::HashMap;

use rusqlite::params;

use crate::session::now_ms;
use crate::{Error, Store};

/// The stat fields that must all match for a cached digest to be trusted.
///
/// ctime is included because it changes on every content write even when a tool restores mtime
/// (`touch -r`, `rsync -t`, `tar x`), and it cannot be set from user space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatKey {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
}

/// One stat cache row: the stat fields and the digest computed from the contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatEntry {
    /// Stat fields when the digest was computed.
    pub stat: StatKey,
    /// Content digest (opaque to the store).
    pub digest: String,
}

// SQLite integers are i64; inode numbers and sizes fit (sizes are < 2^63, inode bits are kept as is).
#[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
fn to_sql(v: u64) -> i64 {
    v as i64
}
#[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss)]
fn from_sql(v: i64) -> u64 {
    v as u64
}

impl Store {
    /// Every stat cache entry recorded for context `root` (an absolute path, as the caller spells it).
    pub fn stat_cache_load(&self, root: &str) -> Result<HashMap<String, StatEntry>, Error> {
        self.db.read("read stat cache", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT path, ino, size, mtime_ns, ctime_ns, digest FROM stat_cache WHERE root = ?1",
            )?;
            let rows = stmt.query_map([root], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    StatEntry {
                        stat: StatKey {
                            ino: from_sql(r.get(1)?),
                            size: from_sql(r.get(2)?),
                            mtime_ns: r.get(3)?,
                            ctime_ns: r.get(4)?,
                        },
                        digest: r.get(5)?,
                    },
                ))
            })?;
            rows.collect()
        })
    }

    /// Records (or replaces) stat cache entries for context `root`, in one transaction.
    pub fn stat_cache_store(
        &self,
        root: &str,
        entries: &[(String, StatEntry)],
    ) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        self.db.write("write stat cache", |tx| {
            let now = now_ms();
            let mut insert = tx.prepare_cached(
                "INSERT INTO stat_cache (root, path, ino, size, mtime_ns, ctime_ns, digest, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (root, path) DO UPDATE SET ino = excluded.ino, size = excluded.size,
                   mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns, digest = excluded.digest,
                   last_used = excluded.last_used",
            )?;
            for (path, e) in entries {
                insert.execute(params![
                    root,
                    path,
                    to_sql(e.stat.ino),
                    to_sql(e.stat.size),
                    e.stat.mtime_ns,
                    e.stat.ctime_ns,
                    e.digest,
                    now
                ])?;
            }
            Ok(())
        })
    }

    /// Forgets the stat cache of every context (it only saves work; nothing depends on it).
    /// Returns the number of entries removed.
    pub fn stat_cache_clear(&self) -> Result<usize, Error> {
        self.db.write("clear stat cache", |tx| {
            Ok(tx.execute("DELETE FROM stat_cache", [])?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cache_round_trip_per_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let e = |ino, digest: &str| StatEntry {
            stat: StatKey {
                ino,
                size: 3,
                mtime_ns: 1_700_000_000_123_456_789,
                ctime_ns: -5,
            },
            digest: digest.to_owned(),
        };
        store
            .stat_cache_store(
                "/ctx/a",
                &[("x".into(), e(u64::MAX, "d1")), ("y/z".into(), e(7, "d2"))],
            )
            .unwrap();
        store
            .stat_cache_store("/ctx/b", &[("x".into(), e(1, "other"))])
            .unwrap();
        store
            .stat_cache_store("/ctx/a", &[("x".into(), e(9, "d3"))])
            .unwrap();
        let a = store.stat_cache_load("/ctx/a").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a["x"], e(9, "d3"));
        assert_eq!(a["y/z"], e(7, "d2"));
        // Reopening keeps it; other roots are separate.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.stat_cache_load("/ctx/b").unwrap()["x"].digest,
            "other"
        );
        assert!(store.stat_cache_load("/ctx/c").unwrap().is_empty());
        assert_eq!(store.stat_cache_clear().unwrap(), 3);
        assert!(store.stat_cache_load("/ctx/a").unwrap().is_empty());
    }
}
