//! Rootless mode on kernels without overlay in a user namespace (before Linux 5.11): the rootfs
//! and the stage mounts through `fuse-overlayfs`, and its upper dir brought back to the kernel's
//! snapshot format afterwards.
//!
//! fuse-overlayfs runs as root of the user namespace in the sandbox's mount namespace; it
//! daemonizes once the mount is up, so it lives in the sandbox's pid namespace and ends with it.
//! `writeback=0`: every write reaches the upper dir before the syscall returns, so nothing is lost
//! when the daemon is killed with the sandbox.
//!
//! Its upper dir differs from the kernel's where it cannot do what the kernel does (`trusted.*`
//! xattrs, and whiteout devices on some file systems): a deleted path may be a `.wh.NAME` file
//! instead of a 0/0 character device, an opaque directory carries `user.fuseoverlayfs.opaque`
//! and a `.wh..wh..opq` file instead of the overlay xattr, and copied-up entries carry
//! `user.fuseoverlayfs.origin`. [`normalize`] rewrites each into the kernel's form (which the
//! layer diff, the snapshots and fuse-overlayfs itself all read), so the store does not depend
//! on which overlay made a snapshot.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::setup::{Context, SetupError};

/// The file name of fuse-overlayfs's opaque-directory marker.
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The prefix of fuse-overlayfs's own xattrs (`opaque`, `origin`).
const XATTR_PREFIX: &str = "user.fuseoverlayfs.";

/// Where fuse-overlayfs is, when it can work here: the binary in `PATH` and `/dev/fuse` usable.
pub(crate) fn find() -> Option<PathBuf> {
    let bin = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("fuse-overlayfs"))
        .find(|p| p.is_file())?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .ok()?;
    Some(bin)
}

/// fuse-overlayfs when a probe mount of it works here (in the probe's private mount namespace):
/// one lower dir and an upper dir below `scratch`, mounted, seen, unmounted.
pub(crate) fn probe(scratch: &Path) -> Option<PathBuf> {
    let bin = find()?;
    let [lower, upper, work, at] = ["lower", "upper", "work", "mnt"].map(|d| scratch.join(d));
    for d in [&lower, &upper, &work, &at] {
        fs_err::create_dir_all(d).ok()?;
    }
    fs_err::write(lower.join("probe"), "").ok()?;
    let mounted = mount(&bin, &[&lower], Some((&upper, &work)), &at);
    let seen = mounted.is_ok() && at.join("probe").exists();
    if mounted.is_ok() {
        let _ = rustix::mount::unmount(&at, rustix::mount::UnmountFlags::DETACH);
    }
    if let Err(e) = &mounted {
        tracing::debug!("fuse-overlayfs probe: {e}");
    }
    seen.then_some(bin)
}

/// The `-o` option string: `lowers` (bottom first, as the sandbox lists them) top first in
/// `lowerdir=`, as overlay takes them. A `:` or `,` in a path
/// would split it: those are refused (store paths never have them).
fn options(lowers: &[&Path], upper: Option<(&Path, &Path)>) -> Result<String, SetupError> {
    let check = |p: &Path| {
        let s = p.to_str().filter(|s| !s.contains([':', ',']));
        s.map(str::to_owned).ok_or_else(|| {
            SetupError::msg(format!(
                "fuse-overlayfs cannot take the path {} (a ':' or ',' in it)",
                p.display()
            ))
        })
    };
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| check(p))
        .collect::<Result<_, _>>()?;
    let mut opts = format!("lowerdir={}", lower.join(":"));
    if let Some((upper, work)) = upper {
        opts.push_str(&format!(
            ",upperdir={},workdir={}",
            check(upper)?,
            check(work)?
        ));
    }
    opts.push_str(",writeback=0");
    Ok(opts)
}

/// Mounts `lowers` (bottom first) with `upper` (upper dir, work dir) at `target`; read-only without.
pub(crate) fn mount(
    bin: &Path,
    lowers: &[&Path],
    upper: Option<(&Path, &Path)>,
    target: &Path,
) -> Result<(), SetupError> {
    let opts = options(lowers, upper)?;
    let mut cmd = Command::new(bin);
    cmd.arg("-o").arg(&opts);
    if upper.is_none() {
        cmd.arg("-o").arg("ro");
    }
    let out = cmd
        .arg(target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .ctx(|| format!("failed to start {}", bin.display()))?;
    if !out.status.success() {
        return Err(SetupError::msg(format!(
            "fuse-overlayfs failed to mount the rootfs ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Rewrites fuse-overlayfs's markers in `upper` into the kernel's (see the module docs);
/// `lowers` are the layers below it, `opaque_xattr` the store's opaque-directory xattr.
///
/// fuse-overlayfs marks every directory it creates opaque (and whites out the name `.wh..opq`
/// beside the marker); the kernel marks only a directory that replaces one of a lower layer. So
/// does this: a new directory keeps no mark, which also lets the runner's own mountpoint
/// directories be cleaned away when the command left them empty.
pub(crate) fn normalize(
    upper: &Path,
    lowers: &[PathBuf],
    opaque_xattr: &str,
) -> Result<(), SetupError> {
    let mut dirs = vec![upper.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        strip_own_xattrs(&dir)?;
        let mut opaque = xattr::get(&dir, format!("{XATTR_PREFIX}opaque"))
            .ok()
            .flatten()
            .is_some_and(|v| v == b"y");
        let _ = xattr::remove(&dir, format!("{XATTR_PREFIX}opaque"));
        let entries = fs_err::read_dir(&dir).ctx(|| format!("failed to list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.ctx(|| format!("failed to list {}", dir.display()))?;
            let name = entry.file_name();
            let path = entry.path();
            let meta = fs_err::symlink_metadata(&path)
                .ctx(|| format!("failed to stat {}", path.display()))?;
            let kind = meta.file_type();
            let device_whiteout = kind.is_char_device() && meta.rdev() == 0;
            if name == OPAQUE_WHITEOUT {
                fs_err::remove_file(&path)
                    .ctx(|| format!("failed to remove {}", path.display()))?;
                opaque = true;
            } else if device_whiteout && name.as_bytes().starts_with(b".wh.") {
                // A whiteout of a name layers reserve (`.wh..opq`): fuse-overlayfs's own.
                fs_err::remove_file(&path)
                    .ctx(|| format!("failed to remove {}", path.display()))?;
            } else if let Some(hidden) = whiteout_of(&name).filter(|_| kind.is_file()) {
                fs_err::remove_file(&path)
                    .ctx(|| format!("failed to remove {}", path.display()))?;
                let target = dir.join(hidden);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    0,
                )
                .ctx(|| format!("failed to write the whiteout {}", target.display()))?;
            } else if kind.is_dir() {
                dirs.push(path);
            } else if !kind.is_symlink() && !device_whiteout {
                strip_own_xattrs(&path)?;
            }
        }
        let rel = dir.strip_prefix(upper).unwrap_or(Path::new(""));
        let replaces = !rel.as_os_str().is_empty()
            && lowers
                .iter()
                .any(|l| l.join(rel).symlink_metadata().is_ok_and(|m| m.is_dir()));
        if opaque && replaces {
            xattr::set(&dir, opaque_xattr, b"y")
                .ctx(|| format!("failed to mark {} opaque", dir.display()))?;
        }
    }
    Ok(())
}

/// `NAME` for a `.wh.NAME` entry (not the opaque marker).
fn whiteout_of(name: &OsStr) -> Option<&OsStr> {
    let rest = name.as_bytes().strip_prefix(b".wh.")?;
    (!rest.is_empty() && name != OPAQUE_WHITEOUT).then(|| OsStr::from_bytes(rest))
}

/// Removes fuse-overlayfs's bookkeeping xattrs (`origin`) from `path`; `opaque` is read first.
fn strip_own_xattrs(path: &Path) -> Result<(), SetupError> {
    let Ok(names) = xattr::list(path) else {
        return Ok(()); // a file system without xattrs has none of them
    };
    for name in names {
        let shown = name.to_string_lossy();
        if shown.starts_with(XATTR_PREFIX) && shown != format!("{XATTR_PREFIX}opaque") {
            xattr::remove(path, &name)
                .ctx(|| format!("failed to remove {shown} from {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_list_the_lowers_top_first_as_overlay_does_and_turn_the_writeback_cache_off() {
        let o = options(
            &[Path::new("/s/a"), Path::new("/s/b")],
            Some((Path::new("/w/u"), Path::new("/w/o"))),
        )
        .unwrap();
        assert_eq!(
            o,
            "lowerdir=/s/b:/s/a,upperdir=/w/u,workdir=/w/o,writeback=0"
        );
        assert!(options(&[Path::new("/s/a:b")], None).is_err());
    }

    #[test]
    fn aufs_style_markers_become_the_kernels_whiteouts_and_opaque_xattr() {
        let t = tempfile::tempdir().unwrap();
        let (u, lower) = (t.path().join("upper"), t.path().join("lower"));
        fs_err::create_dir_all(lower.join("d/sub")).unwrap();
        fs_err::create_dir_all(u.join("d/sub")).unwrap();
        fs_err::create_dir_all(u.join("new")).unwrap();
        fs_err::write(u.join(".wh.gone"), "").unwrap();
        // What fuse-overlayfs 1.10 leaves in a directory it made: the marker, and a whiteout of
        // the name `.wh..opq`.
        for d in ["d/sub", "new"] {
            fs_err::write(u.join(d).join(".wh..wh..opq"), "").unwrap();
            rustix::fs::mknodat(
                rustix::fs::CWD,
                u.join(d).join(".wh..opq"),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .unwrap();
        }
        fs_err::write(u.join("d/kept"), "x").unwrap();
        xattr::set(u.join("d/kept"), "user.fuseoverlayfs.origin", b"o").unwrap();
        xattr::set(u.join("d"), "user.fuseoverlayfs.opaque", b"y").unwrap();
        normalize(&u, &[lower], "user.overlay.opaque").unwrap();
        let wh = fs_err::symlink_metadata(u.join("gone")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        assert!(!u.join(".wh.gone").exists());
        for d in ["d/sub", "new"] {
            let names: Vec<_> = fs_err::read_dir(u.join(d))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(names.is_empty(), "{d}: {names:?}");
        }
        // Directories that replace a lower one are opaque; a new one is not.
        for (d, want) in [
            ("d", Some(&b"y"[..])),
            ("d/sub", Some(&b"y"[..])),
            ("new", None),
        ] {
            let v = xattr::get(u.join(d), "user.overlay.opaque").unwrap();
            assert_eq!(v.as_deref(), want, "{d}");
            assert_eq!(
                xattr::get(u.join(d), "user.fuseoverlayfs.opaque").unwrap(),
                None
            );
        }
        assert_eq!(
            xattr::get(u.join("d/kept"), "user.fuseoverlayfs.origin").unwrap(),
            None
        );
        assert_eq!(fs_err::read_to_string(u.join("d/kept")).unwrap(), "x");
    }
}
