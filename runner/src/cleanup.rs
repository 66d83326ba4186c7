//! Removing the runner's own mountpoints from the upper dir after the run.
//!
//! Creating `/etc/hosts` as a mountpoint in an image without it leaves an empty `etc/hosts`
//! (and maybe `etc/`) in the upper dir, which would end up in the layer. PID 1 reports every
//! such path ([`Created`]); here the outside process, after the overlay is gone, removes the
//! ones the command did not turn into real content.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::rootfs::Created;

/// Removes from `upper` the mountpoints in `created`, then the parent directories the runner
/// created or caused to be copied up, if the command left them empty and unchanged.
pub(crate) fn clean_upper(upper: &Path, lowers: &[PathBuf], created: &[Created]) {
    for c in created.iter().rev() {
        if let Created::Mountpoint(rel) = c {
            let path = upper.join(rel);
            let result = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(e) => Err(e),
            };
            log_failure(&path, result);
        }
    }
    let mut dirs: Vec<&Created> = created
        .iter()
        .filter(|c| !matches!(c, Created::Mountpoint(_)))
        .collect();
    // Deepest first, so a parent is only considered once its children are gone.
    dirs.sort_by_key(|c| std::cmp::Reverse(depth(c)));
    for c in dirs {
        let (rel, lower) = match c {
            Created::Parent(rel) => (rel, None),
            Created::CopiedUp(rel) => (rel, top_lower(lowers, rel)),
            Created::Mountpoint(_) => unreachable!("filtered above"),
        };
        let path = upper.join(rel);
        if is_untouched_empty_dir(&path, lower.as_ref()) {
            log_failure(&path, std::fs::remove_dir(&path));
        }
    }
}

fn depth(c: &Created) -> usize {
    match c {
        Created::Mountpoint(p) | Created::Parent(p) | Created::CopiedUp(p) => {
            Path::new(p).components().count()
        }
    }
}

fn log_failure(path: &Path, result: io::Result<()>) {
    match result {
        Ok(()) => {
            tracing::debug!(path = %path.display(), "removed runner mountpoint from upper dir")
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "failed to remove runner mountpoint from upper dir")
        }
    }
}

/// Metadata of `rel` in the topmost lower dir that has it.
fn top_lower(lowers: &[PathBuf], rel: &str) -> Option<std::fs::Metadata> {
    lowers
        .iter()
        .rev()
        .find_map(|l| std::fs::symlink_metadata(l.join(rel)).ok())
}

/// An empty, non-opaque directory whose mode and owner match `lower` (or the runner's
/// root:root 0755 when there is no lower version).
fn is_untouched_empty_dir(path: &Path, lower: Option<&std::fs::Metadata>) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_dir() {
        return false;
    }
    let Ok(mut entries) = std::fs::read_dir(path) else {
        return false;
    };
    if entries.next().is_some() {
        return false;
    }
    let mut buf = [0u8; 8];
    if ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|name| rustix::fs::lgetxattr(path, *name, &mut buf).is_ok())
    {
        return false;
    }
    let (mode, uid, gid) = lower.map_or((0o755, 0, 0), |l| (l.mode() & 0o7777, l.uid(), l.gid()));
    meta.mode() & 0o7777 == mode && meta.uid() == uid && meta.gid() == gid
}
