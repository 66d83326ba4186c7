//! Unpacking a layer blob into an overlay-format directory, safely.
//!
//! Every entry is created relative to a directory file descriptor reached by opening one path component
//! at a time with `O_NOFOLLOW | O_DIRECTORY`, so no entry can escape `dest` through `..`, an absolute path,
//! or a symlink or hardlink created by an earlier entry.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use tar::EntryType;

use super::sparse;
use super::{
    overlay_opaque_xattr, LayerError, OPAQUE_MARKER, USER_OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX,
};
use crate::{Digest, Hasher};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The uncompressed tar stream of a layer blob: gzip or zstd per the magic bytes, else a plain tar.
pub(super) fn decoder<'a>(
    blob: impl Read + 'a,
    _media_type: &str,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    let mut blob = BufReader::with_capacity(128 * 1024, blob);
    let head = blob.fill_buf().map_err(LayerError::Blob)?;
    Ok(if head.starts_with(&GZIP_MAGIC) {
        Box::new(flate2::bufread::MultiGzDecoder::new(blob))
    } else if head.starts_with(&ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(blob).map_err(LayerError::Blob)?)
    } else {
        Box::new(blob)
    })
}

/// Unpacks a layer blob into `dest` in overlay format and returns its diff_id.
///
/// The blob is gzip, zstd or an uncompressed tar, per `media_type` and the magic bytes. `.wh.<name>`
/// becomes a character device 0/0 named `<name>`; `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its
/// directory. Leading `/` is dropped from entry paths; an entry with a `..` component, a hardlink target
/// outside `dest`, or a path through a non-directory (such as a symlink unpacked earlier) is refused.
/// Symlink targets are stored verbatim and never followed. Owners, modes (with setuid/setgid/sticky),
/// mtimes and `SCHILY.xattr.*` records are applied, except `trusted.overlay.*` xattrs. The diff_id is the
/// sha256 of the whole uncompressed tar stream, computed while reading. `dest` is created if missing.
pub fn unpack_layer(blob: impl Read, media_type: &str, dest: &Path) -> Result<Digest, LayerError> {
    let stream = decoder(blob, media_type)?;
    let mut hashed = HashingReader {
        inner: stream,
        hasher: Hasher::new(),
    };

    fs_err::create_dir_all(dest).map_err(|source| LayerError::Unpack {
        path: dest.display().to_string(),
        source,
    })?;
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LayerError::Unpack {
        path: dest.display().to_string(),
        source: e.into(),
    })?;
    let mut unpacker = Unpacker {
        root,
        dest: dest.to_owned(),
        dirs: Vec::new(),
    };

    let mut archive = tar::Archive::new(&mut hashed);
    for entry in archive.entries().map_err(LayerError::Blob)? {
        let entry = entry.map_err(LayerError::Blob)?;
        unpacker.entry(entry)?;
    }
    // The tar reader stops at the end-of-archive blocks; the diff_id covers every byte of the stream.
    io::copy(&mut hashed, &mut io::sink()).map_err(LayerError::Blob)?;
    unpacker.finish_dirs()?;
    Ok(hashed.hasher.finish())
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Ownership, mode and times of an entry (PAX records override the header).
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Unpacker {
    root: OwnedFd,
    dest: PathBuf,
    /// Directories whose mtime is set last, after their children stopped changing it.
    dirs: Vec<(Vec<Vec<u8>>, Timespec)>,
}

impl Unpacker {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let header_path = entry.path_bytes().into_owned();
        let sparse = sparse::Sparse::of(&mut entry).map_err(|e| match e {
            sparse::Error::Io(e) => LayerError::Blob(e),
            sparse::Error::Bad(reason) => LayerError::BadSparse {
                path: String::from_utf8_lossy(&header_path).into_owned(),
                reason,
            },
        })?;
        // GNU sparse 0.1 and 1.0 store the file under `GNUSparseFile.<pid>/<name>` and its real name in
        // a PAX record (readers that don't know the format unpack the raw fragments there).
        let raw_path = match sparse.as_ref().and_then(|s| s.name.clone()) {
            Some(name) => name,
            None => header_path,
        };
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let unpack_err = |source: io::Error| LayerError::Unpack {
            path: shown.clone(),
            source,
        };
        let mut comps =
            components(&raw_path).ok_or_else(|| unsafe_path(&shown, "has a `..` component"))?;
        let mut kind = entry.header().entry_type();
        if kind == EntryType::Regular && raw_path.ends_with(b"/") {
            // Pre-POSIX tars mark directories only by the trailing slash.
            kind = EntryType::Directory;
        }
        if !materialized(kind) {
            // Nothing to create, so touch nothing: a PAX global header (`tar --format=pax` with
            // global records, `git archive`'s `pax_global_header`) has a name such as
            // `/tmp/GlobalHead.1.1` whose parents must not appear. Docker's untar ignores global
            // headers too. See: #17
            tracing::debug!(path = %shown, ?kind, "skipping tar entry that is not a file");
            return Ok(());
        }
        let Some(name) = comps.pop() else {
            // The root itself (`./`): its metadata applies to `dest`.
            if kind == EntryType::Directory {
                let meta = read_meta(&mut entry).map_err(LayerError::Blob)?;
                let dir = dup_dir(&self.root).map_err(unpack_err)?;
                apply_fd_meta(&dir, &meta).map_err(unpack_err)?;
                self.dirs.push((Vec::new(), meta.mtime));
            }
            return Ok(());
        };
        let parent = self.open_dir(&comps, true, &shown)?;

        if name == OPAQUE_MARKER.as_bytes() {
            return match rustix::fs::fsetxattr(
                &parent,
                overlay_opaque_xattr(),
                b"y",
                XattrFlags::empty(),
            ) {
                // Without CAP_SYS_ADMIN (a pod running --isolation=chroot) `trusted.*` cannot be
                // set; the user xattr says the same to every reader of snapshots.
                Err(rustix::io::Errno::PERM) => rustix::fs::fsetxattr(
                    &parent,
                    USER_OVERLAY_OPAQUE_XATTR,
                    b"y",
                    XattrFlags::empty(),
                )
                .map_err(|e| unpack_err(e.into())),
                other => other.map_err(|e| unpack_err(e.into())),
            };
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                // Other `.wh..wh.` names are aufs bookkeeping (such as `.wh..wh.plnk`), not content.
                tracing::debug!(path = %shown, "skipping aufs metadata entry");
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(unsafe_path(&shown, "is a whiteout of nothing"));
            }
            remove_existing(&parent, hidden, &self.dest, &comps).map_err(unpack_err)?;
            return rustix::fs::mknodat(
                &parent,
                OsStr::from_bytes(hidden),
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| unpack_err(e.into()));
        }

        let meta = read_meta(&mut entry).map_err(LayerError::Blob)?;
        let name_os = OsStr::from_bytes(&name);
        if kind == EntryType::Directory {
            let dir = match rustix::fs::statat(&parent, name_os, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    open_child_dir(&parent, &name).map_err(unpack_err)?
                }
                Ok(_) => {
                    remove_existing(&parent, &name, &self.dest, &comps).map_err(unpack_err)?;
                    make_dir(&parent, &name).map_err(unpack_err)?
                }
                Err(rustix::io::Errno::NOENT) => make_dir(&parent, &name).map_err(unpack_err)?,
                Err(e) => return Err(unpack_err(e.into())),
            };
            apply_fd_meta(&dir, &meta).map_err(unpack_err)?;
            comps.push(name);
            self.dirs.push((comps, meta.mtime));
            return Ok(());
        }

        remove_existing(&parent, &name, &self.dest, &comps).map_err(unpack_err)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    &parent,
                    name_os,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| unpack_err(e.into()))?;
                let mut file = std::fs::File::from(fd);
                match &sparse {
                    Some(sparse) if kind != EntryType::GNUSparse => {
                        let stored = entry.header().entry_size().unwrap_or(0);
                        sparse
                            .write(&mut entry, stored, &mut file)
                            .map_err(|e| match e {
                                sparse::Error::Io(e) => LayerError::Blob(e),
                                sparse::Error::Bad(reason) => LayerError::BadSparse {
                                    path: shown.clone(),
                                    reason,
                                },
                            })?;
                    }
                    // Old GNU sparse entries (type `S`): the tar crate reads them with the holes filled.
                    _ => {
                        io::copy(&mut entry, &mut file).map_err(LayerError::Blob)?;
                    }
                }
                apply_fd_meta(&file, &meta).map_err(unpack_err)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(std::borrow::Cow::into_owned)
                    .unwrap_or_default();
                let shown_target = String::from_utf8_lossy(&target).into_owned();
                let mut tcomps = components(&target).ok_or_else(|| {
                    unsafe_path(&shown_target, "is a hardlink target with a `..` component")
                })?;
                let tname = tcomps
                    .pop()
                    .ok_or_else(|| unsafe_path(&shown_target, "is a hardlink to the root"))?;
                let tparent = self.open_dir(&tcomps, false, &shown_target)?;
                // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never what it points to.
                rustix::fs::linkat(
                    &tparent,
                    OsStr::from_bytes(&tname),
                    &parent,
                    name_os,
                    AtFlags::empty(),
                )
                .map_err(|e| unpack_err(e.into()))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(std::borrow::Cow::into_owned)
                    .unwrap_or_default();
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, name_os)
                    .map_err(|e| unpack_err(e.into()))?;
                self.apply_at_meta(&parent, &comps, &name, &meta, true)
                    .map_err(unpack_err)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (ft, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let header = entry.header();
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if kind == EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                match rustix::fs::mknodat(&parent, name_os, ft, Mode::from_raw_mode(meta.mode), dev)
                {
                    Ok(()) => {}
                    // A user namespace may create fifos and whiteouts but no device node; rootless
                    // builders (buildah, BuildKit) leave such nodes out of the snapshot too. The
                    // layer blob itself keeps them.
                    Err(rustix::io::Errno::PERM)
                        if ft != FileType::Fifo && super::in_user_namespace() =>
                    {
                        tracing::warn!(path = %shown, "device node left out: a user namespace (rootless mode) cannot create device nodes");
                        return Ok(());
                    }
                    Err(e) => return Err(unpack_err(e.into())),
                }
                self.apply_at_meta(&parent, &comps, &name, &meta, false)
                    .map_err(unpack_err)?;
            }
            other => {
                tracing::debug!(path = %shown, kind = ?other, "skipping unsupported tar entry type");
            }
        }
        Ok(())
    }

    /// Opens the directory `comps` below the root, one component at a time without following symlinks,
    /// creating missing directories (mode 0755, root-owned) when `create` is set.
    fn open_dir(
        &self,
        comps: &[Vec<u8>],
        create: bool,
        shown: &str,
    ) -> Result<OwnedFd, LayerError> {
        let mut cur = dup_dir(&self.root).map_err(|source| LayerError::Unpack {
            path: shown.to_owned(),
            source,
        })?;
        for comp in comps {
            cur = match open_child_dir(&cur, comp) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => make_dir(&cur, comp)
                    .map_err(|source| LayerError::Unpack {
                        path: shown.to_owned(),
                        source,
                    })?,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    return Err(unsafe_path(
                        shown,
                        "goes through a symlink or non-directory",
                    ));
                }
                Err(source) => {
                    return Err(LayerError::Unpack {
                        path: shown.to_owned(),
                        source,
                    })
                }
            };
        }
        Ok(cur)
    }

    /// Applies owner, mode, xattrs and times to the non-directory `name` in `parent`.
    fn apply_at_meta(
        &self,
        parent: &OwnedFd,
        comps: &[Vec<u8>],
        name: &[u8],
        meta: &Meta,
        symlink: bool,
    ) -> io::Result<()> {
        let name = OsStr::from_bytes(name);
        rustix::fs::chownat(
            parent,
            name,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| owner_error(e, meta))?;
        if !symlink {
            // The node was just created by us and is not a symlink, so chmodat cannot follow anything.
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )?;
        }
        if !meta.xattrs.is_empty() {
            // Parents were opened without following symlinks and the last component is not followed.
            let mut host = self.dest.clone();
            host.extend(comps.iter().map(|c| OsStr::from_bytes(c)));
            host.push(name);
            for (key, value) in &meta.xattrs {
                rustix::fs::lsetxattr(&host, key.as_str(), value, XattrFlags::empty())?;
            }
        }
        let times = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    /// Sets directory mtimes, deepest first, now that nothing is created in them any more.
    fn finish_dirs(&mut self) -> Result<(), LayerError> {
        for (comps, mtime) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let shown = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
            let times = Timestamps {
                last_access: mtime,
                last_modification: mtime,
            };
            let result = match comps.split_last() {
                None => rustix::fs::futimens(&self.root, &times),
                Some((name, parents)) => {
                    let parent = self.open_dir(parents, false, &shown)?;
                    rustix::fs::utimensat(
                        &parent,
                        OsStr::from_bytes(name),
                        &times,
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                }
            };
            result.map_err(|e| LayerError::Unpack {
                path: shown,
                source: e.into(),
            })?;
        }
        Ok(())
    }
}

/// Whether an entry of this type becomes something in the tree (everything else is skipped).
fn materialized(kind: EntryType) -> bool {
    matches!(
        kind,
        EntryType::Regular
            | EntryType::Continuous
            | EntryType::GNUSparse
            | EntryType::Directory
            | EntryType::Link
            | EntryType::Symlink
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo
    )
}

fn unsafe_path(path: &str, reason: &'static str) -> LayerError {
    LayerError::UnsafePath {
        path: path.to_owned(),
        reason,
    }
}

/// Splits a tar path into normal components: `/` and `.` are dropped, `..` makes it `None`.
fn components(path: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return None,
            other => out.push(other.to_vec()),
        }
    }
    Some(out)
}

fn dup_dir(fd: &OwnedFd) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn open_child_dir(parent: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(
        parent,
        OsStr::from_bytes(name),
        flags,
        Mode::empty(),
    )?)
}

fn make_dir(parent: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    match rustix::fs::mkdirat(parent, OsStr::from_bytes(name), Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    open_child_dir(parent, name)
}

/// Removes whatever is at `name` in `parent` (a directory tree too), so a later entry replaces it.
fn remove_existing(
    parent: &OwnedFd,
    name: &[u8],
    dest: &Path,
    comps: &[Vec<u8>],
) -> io::Result<()> {
    let name_os = OsStr::from_bytes(name);
    match rustix::fs::unlinkat(parent, name_os, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(rustix::io::Errno::ISDIR) => {
            // Every parent was just opened with O_NOFOLLOW, so this host path has no symlink above
            // `name`; remove_dir_all does not follow symlinks inside the tree.
            let mut host = dest.to_owned();
            host.extend(comps.iter().map(|c| OsStr::from_bytes(c)));
            host.push(name_os);
            fs_err::remove_dir_all(host)
        }
        Err(e) => Err(e.into()),
    }
}

/// Explains a failed chown: in a user namespace (rootless mode) `EINVAL` means the owner is outside
/// the ids the namespace maps.
fn owner_error(e: rustix::io::Errno, meta: &Meta) -> io::Error {
    if e != rustix::io::Errno::INVAL || !super::in_user_namespace() {
        return e.into();
    }
    let mapped = |file: &str| {
        std::fs::read_to_string(file)
            .map(|map| {
                map.lines()
                    .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "owner {}:{} is outside the ids of this user namespace (rootless mode maps {} uids and {} gids: \
             the user's own id and its ranges in /etc/subuid and /etc/subgid); give the user a range of at least \
             {} ids there",
            meta.uid,
            meta.gid,
            mapped("/proc/self/uid_map"),
            mapped("/proc/self/gid_map"),
            u64::from(meta.uid.max(meta.gid)) + 1
        ),
    )
}

/// Applies owner, then mode (chown clears setuid bits), then xattrs (chown clears
/// `security.capability`), then times to an open file or directory.
fn apply_fd_meta(fd: &impl AsFd, meta: &Meta) -> io::Result<()> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(meta.uid)),
        Some(rustix::fs::Gid::from_raw(meta.gid)),
    )
    .map_err(|e| owner_error(e, meta))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))?;
    for (key, value) in &meta.xattrs {
        rustix::fs::fsetxattr(fd, key.as_str(), value, XattrFlags::empty())?;
    }
    let times = Timestamps {
        last_access: meta.mtime,
        last_modification: meta.mtime,
    };
    rustix::fs::futimens(fd, &times)?;
    Ok(())
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
    let header = entry.header();
    let mut meta = Meta {
        uid: u32::try_from(header.uid().unwrap_or(0)).unwrap_or(0),
        gid: u32::try_from(header.gid().unwrap_or(0)).unwrap_or(0),
        mode: header.mode().unwrap_or(0o644) & 0o7777,
        mtime: Timespec {
            tv_sec: i64::try_from(header.mtime().unwrap_or(0)).unwrap_or(0),
            tv_nsec: 0,
        },
        xattrs: Vec::new(),
    };
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax {
            let ext = ext?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let text = std::str::from_utf8(value).ok();
            match key {
                b"uid" => meta.uid = text.and_then(|t| t.parse().ok()).unwrap_or(meta.uid),
                b"gid" => meta.gid = text.and_then(|t| t.parse().ok()).unwrap_or(meta.gid),
                b"mtime" => meta.mtime = text.and_then(parse_pax_time).unwrap_or(meta.mtime),
                _ => {
                    let Some(name) = key.strip_prefix(b"SCHILY.xattr.") else {
                        continue;
                    };
                    let Ok(name) = std::str::from_utf8(name) else {
                        continue;
                    };
                    // A layer must not forge overlayfs metadata (whiteouts, redirects) in a snapshot.
                    if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
                        continue;
                    }
                    meta.xattrs.push((name.to_owned(), value.to_vec()));
                }
            }
        }
    }
    Ok(meta)
}

/// Parses a PAX time, `<seconds>[.<fraction>]`.
fn parse_pax_time(text: &str) -> Option<Timespec> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let mut tv_nsec: i64 = digits.parse().ok()?;
    if tv_sec < 0 && tv_nsec > 0 {
        // "-1.5" is 1.5 s before the epoch: -2 s + 0.5 s.
        return Some(Timespec {
            tv_sec: tv_sec - 1,
            tv_nsec: 1_000_000_000 - tv_nsec,
        });
    }
    tv_nsec = tv_nsec.min(999_999_999);
    Some(Timespec { tv_sec, tv_nsec })
}
