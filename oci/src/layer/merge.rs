//! Several overlay-format layer directories as one (`--squash`, `--squash-all`).
//!
//! Layers are applied in order onto one directory in the same format, so [`crate::write_layer`] turns
//! the result into a single layer with the same effect as the stack: a whiteout removes what earlier
//! layers put at its path, an opaque directory replaces the directory, anything else replaces the entry.
//! Whiteouts and opaque markers stay only where the layers below the merged ones have the path: overlayfs
//! lists the whiteouts of a directory no other layer has (`ls` shows a name that then does not exist).
//! Owners, modes, mtimes and xattrs are kept; files are copied (hard links across layers become copies).

use std::io;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, CWD};

/// What lies below the merged layers: whether a path (relative, `/`-separated) exists there.
pub type Below<'a> = &'a dyn Fn(&str) -> bool;

/// Applies the overlay-format layer directory `upper` onto `merged`.
pub fn merge_layer_dir(upper: &Path, merged: &Path, below: Below<'_>) -> io::Result<()> {
    merge_dir(upper, merged, "", below)
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn merge_dir(src: &Path, dst: &Path, rel: &str, below: Below<'_>) -> io::Result<()> {
    for entry in fs_err::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        let (s, d) = (src.join(&name), dst.join(&name));
        let child = if rel.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{rel}/{}", name.to_string_lossy())
        };
        let meta = fs_err::symlink_metadata(&s)?;
        let hides = below(&child);
        if is_whiteout(&meta) {
            remove_all(&d)?;
            if hides {
                copy_entry(&s, &d, &meta, hides)?;
            }
            continue;
        }
        if meta.is_dir() {
            let replace = crate::is_opaque_dir(&s)?
                || !std::fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir());
            if replace {
                remove_all(&d)?;
                fs_err::create_dir(&d)?;
            }
            merge_dir(&s, &d, &child, below)?;
            // After the contents: writing into the directory moved its mtime.
            copy_meta(&s, &d, &meta, hides)?;
            continue;
        }
        remove_all(&d)?;
        copy_entry(&s, &d, &meta, hides)?;
    }
    Ok(())
}

fn remove_all(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs_err::remove_dir_all(p),
        Ok(_) => fs_err::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn copy_entry(s: &Path, d: &Path, meta: &std::fs::Metadata, hides: bool) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_file() {
        fs_err::copy(s, d)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs_err::read_link(s)?, d)?;
    } else {
        let kind = FileType::from_raw_mode(meta.mode());
        rustix::fs::mknodat(
            CWD,
            d,
            kind,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )?;
    }
    copy_meta(s, d, meta, hides)
}

/// Owner, mode, xattrs (opaque markers only when the path exists below: `hides`) and times of `s`
/// onto `d`.
fn copy_meta(s: &Path, d: &Path, meta: &std::fs::Metadata, hides: bool) -> io::Result<()> {
    let ft = meta.file_type();
    std::os::unix::fs::lchown(d, Some(meta.uid()), Some(meta.gid()))?;
    if !ft.is_symlink() {
        // After chown, which clears set-id bits.
        rustix::fs::chmodat(
            CWD,
            d,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            AtFlags::empty(),
        )?;
    }
    for name in xattr::list(s)? {
        let opaque =
            name == crate::OVERLAY_OPAQUE_XATTR || name == crate::USER_OVERLAY_OPAQUE_XATTR;
        if opaque && !hides {
            continue;
        }
        if let Some(value) = xattr::get(s, &name)? {
            xattr::set(d, &name, &value)?;
        }
    }
    let ts = |sec: i64, nsec: i64| Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    rustix::fs::utimensat(
        CWD,
        d,
        &Timestamps {
            last_access: ts(meta.atime(), meta.atime_nsec()),
            last_modification: ts(meta.mtime(), meta.mtime_nsec()),
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_layers_replace_remove_and_hide_what_earlier_ones_wrote() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2, m) = (t.path().join("l1"), t.path().join("l2"), t.path().join("m"));
        for d in [&l1, &l2, &m] {
            fs_err::create_dir_all(d).unwrap();
        }
        fs_err::create_dir_all(l1.join("app")).unwrap();
        fs_err::write(l1.join("app/a"), "a1").unwrap();
        fs_err::write(l1.join("app/b"), "b1").unwrap();
        fs_err::write(l1.join("gone"), "x").unwrap();
        fs_err::write(l2.join("app-new"), "n").unwrap();
        fs_err::create_dir_all(l2.join("app")).unwrap();
        fs_err::write(l2.join("app/a"), "a2").unwrap();
        // A whiteout: the 0/0 character device overlayfs writes for a deleted file.
        rustix::fs::mknodat(
            CWD,
            l2.join("gone"),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .unwrap();
        // `gone` is also in a base layer below: its whiteout stays.
        let base_has = |p: &str| p == "gone";
        merge_layer_dir(&l1, &m, &base_has).unwrap();
        merge_layer_dir(&l2, &m, &base_has).unwrap();
        assert_eq!(fs_err::read_to_string(m.join("app/a")).unwrap(), "a2");
        assert_eq!(fs_err::read_to_string(m.join("app/b")).unwrap(), "b1");
        assert!(is_whiteout(
            &fs_err::symlink_metadata(m.join("gone")).unwrap()
        ));
        let all = t.path().join("all");
        fs_err::create_dir(&all).unwrap();
        merge_layer_dir(&l1, &all, &|_| false).unwrap();
        merge_layer_dir(&l2, &all, &|_| false).unwrap();
        assert!(std::fs::symlink_metadata(all.join("gone")).is_err());
        assert!(all.join("app-new").exists());
    }
}
