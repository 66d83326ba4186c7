//! Per-process scratch space under `root/tmp`, and the cleanup of scratch space left by dead processes.
//!
//! Every open [`Store`](crate::Store) owns a session: a directory `tmp/<id>/` holding all of its temporary
//! files and directories, and a lock file `tmp/<id>.lock` on which it holds an exclusive `flock` for as long
//! as it lives. The kernel drops the lock when the process dies, even on `kill -9`, so `Store::open` can tell
//! a dead session from a live one by trying to take its lock without blocking: if it gets the lock, the owner
//! is gone and the session directory is removed. This is exact where a pid or age check is not: it works
//! across pid namespaces (containers sharing a store), is immune to pid reuse, and never removes the files
//! of a slow build that is still running, however old they are.
//!
//! Order matters so that a cleaner never sees a live session without its lock: the lock file is created
//! under a `pending-` name, locked, and only then renamed to `<id>.lock`; the directory is created after
//! that. A `<id>/` directory without `<id>.lock` is therefore an orphan of a cleaner that died mid-way.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{flock, FlockOperation};

const PENDING_PREFIX: &str = "pending-";
const LOCK_SUFFIX: &str = ".lock";
/// A `pending-` file older than this belongs to a process that died between creating and renaming it.
const PENDING_MAX_AGE: Duration = Duration::from_secs(60);

/// A live session: its scratch directory and the held lock.
#[derive(Debug)]
pub(crate) struct Session {
    dir: PathBuf,
    lock_path: PathBuf,
    // Held for the flock; closing it releases the lock.
    _lock: File,
}

impl Session {
    /// Creates a new session under `tmp`.
    pub(crate) fn create(tmp: &Path) -> io::Result<Session> {
        let pending = tempfile::Builder::new()
            .prefix(PENDING_PREFIX)
            .tempfile_in(tmp)?;
        flock_retry(pending.as_file(), FlockOperation::NonBlockingLockExclusive)?;
        let name = pending
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(PENDING_PREFIX))
            .expect("tempfile names are the prefix plus ascii characters")
            .to_owned();
        let id = format!("s-{name}");
        let lock_path = tmp.join(format!("{id}{LOCK_SUFFIX}"));
        let lock = pending.persist(&lock_path).map_err(|e| e.error)?;
        let dir = tmp.join(&id);
        fs_err::create_dir(&dir)?;
        tracing::debug!(dir = %dir.display(), "store session created");
        Ok(Session {
            dir,
            lock_path,
            _lock: lock,
        })
    }

    /// This session's scratch directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Best effort: whatever is left is removed by the next `Store::open` once our lock is gone.
        if let Err(e) = fs_err::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(error = %e, "failed to remove store session directory");
            }
        }
        if let Err(e) = fs_err::remove_file(&self.lock_path) {
            tracing::debug!(error = %e, "failed to remove store session lock");
        }
    }
}

/// Removes the sessions of dead processes under `tmp`; returns how many entries were removed.
pub(crate) fn clean_dead(tmp: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let mut lock_names = std::collections::HashSet::new();
    let mut dirs = Vec::new();
    for entry in fs_err::read_dir(tmp)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if let Some(id) = name.strip_suffix(LOCK_SUFFIX) {
            lock_names.insert(id.to_owned());
            if clean_session(tmp, id, &path)? {
                removed += 1;
            }
        } else if name.starts_with(PENDING_PREFIX) {
            // A fresh store's openers race here: the pending file of another one is renamed to its
            // lock between the listing and this stat (See: #19). Gone is fine.
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let old = meta.modified()?.elapsed().unwrap_or_default() > PENDING_MAX_AGE;
            if old && remove_file_if_present(&path)? {
                removed += 1;
            }
        } else if entry.file_type()?.is_dir() {
            dirs.push((name, path));
        }
    }
    for (name, path) in dirs {
        // Check the lock again now: a session created after the listing has its lock before its dir.
        if !lock_names.contains(&name) && !tmp.join(format!("{name}{LOCK_SUFFIX}")).exists() {
            tracing::debug!(dir = %path.display(), "removing orphaned session directory");
            remove_dir_if_present(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes session `id` if its owner is dead; returns whether it did.
fn clean_session(tmp: &Path, id: &str, lock_path: &Path) -> io::Result<bool> {
    let file = match File::open(lock_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match flock_retry(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
        Err(e) => return Err(e),
    }
    let dir = tmp.join(id);
    tracing::debug!(dir = %dir.display(), "removing scratch space of a dead process");
    remove_dir_if_present(&dir)?;
    remove_file_if_present(lock_path)?;
    Ok(true)
}

fn remove_dir_if_present(path: &Path) -> io::Result<()> {
    match fs_err::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_file_if_present(path: &Path) -> io::Result<bool> {
    match fs_err::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// `flock`, retried when a signal interrupts it.
pub(crate) fn flock_retry(file: &File, op: FlockOperation) -> io::Result<()> {
    loop {
        match flock(file, op) {
            Err(rustix::io::Errno::INTR) => {}
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Milliseconds since the Unix epoch, the unit of every timestamp in the database.
pub(crate) fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_session_survives_cleanup_and_dead_one_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let live = Session::create(tmp.path()).unwrap();
        fs_err::write(live.dir().join("f"), b"x").unwrap();
        assert_eq!(clean_dead(tmp.path()).unwrap(), 0);
        assert!(live.dir().join("f").exists());

        // An orphaned dir (no lock file) and a stale session whose lock nobody holds.
        fs_err::create_dir(tmp.path().join("s-orphan")).unwrap();
        fs_err::create_dir(tmp.path().join("s-dead")).unwrap();
        fs_err::write(tmp.path().join("s-dead.lock"), b"").unwrap();
        assert_eq!(clean_dead(tmp.path()).unwrap(), 2);
        assert!(!tmp.path().join("s-orphan").exists());
        assert!(!tmp.path().join("s-dead").exists());
        assert!(!tmp.path().join("s-dead.lock").exists());
        assert!(live.dir().join("f").exists());

        let dir = live.dir().to_owned();
        drop(live);
        assert!(!dir.exists());
        assert_eq!(fs_err::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
