//! [`Isolation::Chroot`](crate::Isolation::Chroot): the command runs in a private copy of the
//! rootfs entered with `chroot(2)`, for environments where namespaces and mounts are refused (a
//! Kubernetes pod with Docker's default capabilities: no `CAP_SYS_ADMIN`).
//!
//! ```text
//! caller ──spawn──▶ outside process (host namespaces; a child subreaper)
//!                     │ 1. copies the merged lower dirs to work/rootfs (a real copy, never links)
//!                     │ 2. /dev nodes, /etc/hosts, /etc/resolv.conf and the mounts, as plain files
//!                     │ 3. records (ino, ctime, mtime, size, kind) of every other path
//!                     └─fork─▶ command (chroot, cwd, user, capabilities, seccomp, execve)
//!                     │ 4. kills whatever the command left running
//!                     │ 5. copies read-write binds back, deletes secrets
//!                     │ 6. diffs the rootfs against the record into the upper dir (overlay format)
//! ```
//!
//! The upper dir gets the same contract as in the namespace mode, so the caller turns it into a
//! layer unchanged. Nothing the runner put in the rootfs enters it: `/dev`, `/proc`, `/sys`, the
//! generated files and every mount target are left out of the diff, so the image's own content
//! at those paths stays visible.
//!
//! Replaced directories are written with one whiteout per lower child instead of an opaque
//! marker: `trusted.overlay.opaque` cannot be set without `CAP_SYS_ADMIN`, which this mode lacks.
//! See docs/ISOLATION.md for what this mode does not isolate.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, CWD};
use rustix::process::{Pid, Signal, WaitOptions};

use crate::command::{forward_until_sigchld, reap_all, Program, DEFAULT_CAPS, FORWARDED};
use crate::rootfs::components;
use crate::setup::{die, Context, SetupError};
use crate::sys::{self, Fork, SignalSet};
use crate::{MountSpec, Network, Spec, EXIT_SETUP_FAILED};

/// `CAP_SYS_CHROOT`: dropped from the command's set, since with it a root process leaves a
/// chroot with a second `chroot` (the classic escape).
const CAP_SYS_CHROOT: u32 = 18;
/// `CAP_SYS_ADMIN`: needed to install a seccomp filter without `no_new_privs`.
const CAP_SYS_ADMIN: u32 = 21;

/// The command's capabilities: Docker's default set without `CAP_SYS_CHROOT`.
pub(crate) const CHROOT_CAPS: u64 = DEFAULT_CAPS & !(1 << CAP_SYS_CHROOT);

/// The error for [`Network::None`], which needs a network namespace.
pub(crate) const NETWORK_NONE_ERROR: &str = "--network=none needs a network namespace, which \
     --isolation=chroot does not create; use the default network or the default isolation";

/// Threads copying file contents into the rootfs.
const COPY_THREADS: usize = 4;

/// Device nodes made in `/dev` with the host's major/minor numbers.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Runs the whole chroot sandbox in the outside process; returns the command's exit code.
pub(crate) fn run(spec: &Spec) -> Result<i32, SetupError> {
    if spec.network == Network::None {
        return Err(SetupError::msg(NETWORK_NONE_ERROR));
    }
    if spec.readonly_rootfs {
        return Err(SetupError::msg(
            "a read-only rootfs needs a mount, which --isolation=chroot cannot make",
        ));
    }
    rustix::process::umask(Mode::from_raw_mode(0o022));
    let rootfs = spec.work.join("rootfs");
    fs_err::create_dir(&rootfs).ctx(|| "failed to create the rootfs".into())?;
    materialize(&spec.lowers, &rootfs).ctx(|| {
        format!(
            "failed to copy the image into the rootfs {}",
            rootfs.display()
        )
    })?;
    let mut setup = Setup::default();
    let result = setup
        .prepare(spec, &rootfs)
        .and_then(|()| run_command(spec, &rootfs));
    // Secrets go whatever happened, before anything else can fail.
    setup.remove_secrets(&rootfs);
    let code = result?;
    setup.copy_back(&rootfs)?;
    let record = setup.record.take().expect("prepare recorded the rootfs");
    let changes = diff(&rootfs, &record, &setup.excluded)
        .ctx(|| "failed to compare the rootfs with the image".into())?;
    write_upper(&rootfs, &spec.upper, &changes)
        .ctx(|| format!("failed to write the changes to {}", spec.upper.display()))?;
    Ok(code)
}

// ---------------------------------------------------------------------------------------------
// The merged lower dirs
// ---------------------------------------------------------------------------------------------

/// A merged node of a stack of overlay-format dirs.
#[derive(Debug, Clone)]
enum Node {
    /// A directory, made of these host directories, topmost first.
    Dir(Vec<PathBuf>),
    /// A non-directory.
    Other(PathBuf),
}

/// Whether a snapshot directory is opaque: `trusted.overlay.opaque=y`, or `user.overlay.opaque=y`
/// as rootless mode writes it.
fn is_opaque(path: &Path) -> io::Result<bool> {
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        match xattr::get(path, name) {
            Ok(Some(v)) if v == b"y" => return Ok(true),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The merged root of `lowers` (base first).
fn merged_root(lowers: &[PathBuf]) -> io::Result<Node> {
    let mut dirs = Vec::new();
    for l in lowers.iter().rev() {
        dirs.push(l.clone());
        if is_opaque(l)? {
            break;
        }
    }
    Ok(Node::Dir(dirs))
}

/// Looks `name` up in a merged directory, with overlay semantics.
fn lookup(dirs: &[PathBuf], name: &OsStr) -> io::Result<Option<Node>> {
    let mut found = Vec::new();
    for d in dirs {
        let host = d.join(name);
        let meta = match fs_err::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            let opaque = is_opaque(&host)?;
            found.push(host);
            if opaque {
                break;
            }
        } else if !found.is_empty() {
            // A non-directory or whiteout below a directory ends the merge.
            break;
        } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
            return Ok(None);
        } else {
            return Ok(Some(Node::Other(host)));
        }
    }
    Ok((!found.is_empty()).then_some(Node::Dir(found)))
}

/// The visible children of a merged directory, sorted by name.
fn children(dirs: &[PathBuf]) -> io::Result<Vec<(OsString, Node)>> {
    let mut names: Vec<OsString> = Vec::new();
    let mut seen = HashSet::new();
    for d in dirs {
        for e in fs_err::read_dir(d)? {
            let name = e?.file_name();
            if seen.insert(name.clone()) {
                names.push(name);
            }
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        if let Some(node) = lookup(dirs, &name)? {
            out.push((name, node));
        }
    }
    Ok(out)
}

/// Resolves `path` in the merged view of `lowers`, following symlinks inside it (never above
/// its root), at most 40 of them.
fn resolve(lowers: &[PathBuf], path: &str) -> io::Result<Option<Node>> {
    let mut pending: std::collections::VecDeque<OsString> = components(Path::new(path));
    let mut stack: Vec<Node> = vec![merged_root(lowers)?];
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let Node::Dir(dirs) = stack.last().expect("the root is never popped") else {
            return Ok(None);
        };
        let Some(node) = lookup(dirs, &name)? else {
            return Ok(None);
        };
        if let Node::Other(host) = &node {
            if fs_err::symlink_metadata(host)?.file_type().is_symlink() {
                hops += 1;
                if hops > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs_err::read_link(host)?;
                if target.is_absolute() {
                    stack.truncate(1);
                }
                for c in components(&target).into_iter().rev() {
                    pending.push_front(c);
                }
                continue;
            }
        }
        stack.push(node);
    }
    Ok(stack.pop())
}

// ---------------------------------------------------------------------------------------------
// Copying
// ---------------------------------------------------------------------------------------------

/// How the leaves of a copied tree are made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaves {
    /// Real copies, metadata included: changing them never touches the source.
    Copy,
    /// Hardlinks to the source (a copy when on another filesystem): changes in place reach the
    /// source, as through a read-write bind mount.
    Link,
}

/// A copy in three phases: directories (made while planning), leaves (in parallel), then the
/// directories' metadata, deepest first, so adding children does not change their mtime.
#[derive(Default)]
struct Plan {
    dirs: Vec<(PathBuf, PathBuf)>,
    leaves: Vec<(PathBuf, PathBuf)>,
    /// `(first copy, another name)` for hardlinked sources.
    links: Vec<(PathBuf, PathBuf)>,
    seen: HashMap<(u64, u64), PathBuf>,
}

impl Plan {
    fn node(&mut self, node: &Node, dest: &Path) -> io::Result<()> {
        match node {
            Node::Dir(dirs) => {
                make_dir(dest)?;
                self.dirs.push((dirs[0].clone(), dest.to_owned()));
                for (name, child) in children(dirs)? {
                    self.node(&child, &dest.join(name))?;
                }
            }
            Node::Other(src) => self.leaf(src, dest)?,
        }
        Ok(())
    }

    /// Plans the copy of a plain host tree (no overlay semantics).
    fn host(&mut self, src: &Path, dest: &Path) -> io::Result<()> {
        let meta = fs_err::symlink_metadata(src)?;
        if meta.is_dir() {
            make_dir(dest)?;
            self.dirs.push((src.to_owned(), dest.to_owned()));
            let mut names: Vec<OsString> = fs_err::read_dir(src)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort();
            for name in names {
                self.host(&src.join(&name), &dest.join(&name))?;
            }
            Ok(())
        } else {
            self.leaf(src, dest)
        }
    }

    fn leaf(&mut self, src: &Path, dest: &Path) -> io::Result<()> {
        remove_any(dest)?;
        let meta = fs_err::symlink_metadata(src)?;
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.seen.get(&key) {
                self.links.push((first.clone(), dest.to_owned()));
                return Ok(());
            }
            self.seen.insert(key, dest.to_owned());
        }
        self.leaves.push((src.to_owned(), dest.to_owned()));
        Ok(())
    }

    fn execute(self, leaves: Leaves) -> io::Result<()> {
        let next = AtomicUsize::new(0);
        let error = Mutex::new(None);
        let threads = COPY_THREADS.min(self.leaves.len().div_ceil(64)).max(1);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((src, dest)) = self.leaves.get(i) else {
                        return;
                    };
                    if let Err(e) = copy_leaf(src, dest, leaves) {
                        error.lock().expect("copy error lock").get_or_insert(e);
                        next.store(usize::MAX / 2, Ordering::Relaxed);
                        return;
                    }
                });
            }
        });
        wait_single_threaded();
        if let Some(e) = error.into_inner().expect("copy error lock") {
            return Err(e);
        }
        for (first, dest) in &self.links {
            fs_err::hard_link(first, dest)?;
        }
        for (src, dest) in self.dirs.iter().rev() {
            copy_metadata(src, dest, &fs_err::symlink_metadata(src)?)?;
        }
        Ok(())
    }
}

/// Copies the merged `lowers` (base first) into the empty directory `dest`.
fn materialize(lowers: &[PathBuf], dest: &Path) -> io::Result<()> {
    let mut plan = Plan::default();
    plan.node(&merged_root(lowers)?, dest)?;
    plan.execute(Leaves::Copy)
}

/// The copy threads are joined, but a thread's task may linger in `/proc/self/task` for a
/// moment after `join`; [`sys::fork`] refuses to fork while it does.
fn wait_single_threaded() {
    for _ in 0..1000 {
        match std::fs::read_dir("/proc/self/task").map(Iterator::count) {
            Ok(n) if n > 1 => std::thread::sleep(std::time::Duration::from_millis(1)),
            _ => return,
        }
    }
}

/// `mkdir` with mode 0755 (before the umask), naming the path on failure.
fn mkdir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("failed to create {}: {e}", path.display()),
            )
        })
}

/// Makes sure `dest` is a directory, replacing a non-directory.
fn make_dir(dest: &Path) -> io::Result<()> {
    match fs_err::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs_err::remove_file(dest)?;
            fs_err::create_dir(dest)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs_err::create_dir(dest),
        Err(e) => Err(e),
    }
}

/// Removes whatever is at `path` (a whole tree for a directory); nothing there is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs_err::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs_err::remove_dir_all(path),
        Ok(_) => fs_err::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `dest` a copy (or, with [`Leaves::Link`], a hardlink) of the non-directory `src`.
fn copy_leaf(src: &Path, dest: &Path, leaves: Leaves) -> io::Result<()> {
    let meta = fs_err::symlink_metadata(src)?;
    let ft = meta.file_type();
    if leaves == Leaves::Link {
        match std::fs::hard_link(src, dest) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) && !ft.is_socket() => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "failed to link {} to {}: {e}",
                        src.display(),
                        dest.display()
                    ),
                ))
            }
        }
    }
    if ft.is_file() {
        fs_err::copy(src, dest)?;
    } else if ft.is_symlink() {
        fs_err::os::unix::fs::symlink(fs_err::read_link(src)?, dest)?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let kind = if ft.is_char_device() {
            FileType::CharacterDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else {
            FileType::Fifo
        };
        rustix::fs::mknodat(
            CWD,
            dest,
            kind,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("failed to create {}: {e}", dest.display()),
            )
        })?;
    } else {
        // A socket only works as a hardlink of the listening one.
        tracing::debug!(path = %src.display(), "skipping socket");
        return Ok(());
    }
    copy_metadata(src, dest, &meta)
}

/// Copies owner, mode (after chown, which clears setuid), xattrs (after chown, which clears
/// `security.capability`; never the overlay's own) and times, never following a symlink.
fn copy_metadata(src: &Path, dest: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let fail = |what: &str, e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("failed to {what} {}: {e}", dest.display()),
        )
    };
    let symlink = meta.file_type().is_symlink();
    rustix::fs::chownat(
        CWD,
        dest,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| fail("chown", e.into()))?;
    if !symlink {
        rustix::fs::chmodat(
            CWD,
            dest,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            AtFlags::empty(),
        )
        .map_err(|e| fail("chmod", e.into()))?;
    }
    let names = match xattr::list(src) {
        Ok(names) => names.collect::<Vec<_>>(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
        Err(e) => return Err(fail("list the xattrs of the source of", e)),
    };
    for name in names {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
        if bytes.starts_with(b"trusted.overlay.") || bytes.starts_with(b"user.overlay.") {
            continue;
        }
        let Some(value) = xattr::get(src, &name)? else {
            continue;
        };
        if let Err(e) = xattr::set(dest, &name, &value) {
            match e.raw_os_error() {
                Some(libc::ENOTSUP) => {}
                Some(libc::EPERM) if symlink => {}
                _ => return Err(fail(&format!("set xattr {name:?} on"), e)),
            }
        }
    }
    let ts = |s, ns| Timespec {
        tv_sec: s,
        tv_nsec: ns,
    };
    rustix::fs::utimensat(
        CWD,
        dest,
        &Timestamps {
            last_access: ts(meta.atime(), meta.atime_nsec()),
            last_modification: ts(meta.mtime(), meta.mtime_nsec()),
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| fail("set the times of", e.into()))
}

// ---------------------------------------------------------------------------------------------
// Setup: /dev, generated files, mounts
// ---------------------------------------------------------------------------------------------

/// What a path inside the rootfs should be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Dir,
    File,
}

/// Makes sure `path` exists in the rootfs `root` (`mkdir -p`, plus a final empty file for
/// [`Leaf::File`]), following symlinks as the command would see them (an absolute target starts
/// at `root`, `..` stops at it); an existing final entry of the other kind is replaced. Returns
/// the resolved, symlink-free path relative to `root`.
///
/// Only for the setup: nothing else runs in the rootfs then, so the answer stays true.
fn ensure(root: &Path, path: &str, leaf: Leaf) -> io::Result<PathBuf> {
    let mut pending = components(Path::new(path));
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        let host = root.join(&next);
        let last = pending.is_empty();
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs_err::read_link(&host)?;
                if target.is_absolute() {
                    cur = PathBuf::new();
                }
                for c in components(&target).into_iter().rev() {
                    pending.push_front(c);
                }
            }
            Ok(meta) => {
                let want_dir = !last || leaf == Leaf::Dir;
                if want_dir && !meta.is_dir() {
                    fs_err::remove_file(&host)?;
                    mkdir(&host)?;
                } else if !want_dir && meta.is_dir() {
                    fs_err::remove_dir_all(&host)?;
                    fs_err::File::create(&host)?;
                }
                cur = next;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if last && leaf == Leaf::File {
                    fs_err::File::create(&host)?;
                } else {
                    mkdir(&host)?;
                }
                cur = next;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// A read-write bind: the rootfs copy is synced back to `source` after the run.
struct WritableBind {
    source: PathBuf,
    /// Resolved target, relative to the rootfs.
    target: PathBuf,
    record: Record,
}

/// A secret file written into the rootfs, deleted after the run.
struct Secret {
    target: PathBuf,
    dev_ino: (u64, u64),
}

/// What the setup put into the rootfs.
#[derive(Default)]
struct Setup {
    /// Paths (relative to the rootfs) left out of the diff: runner files and mount targets.
    excluded: Vec<PathBuf>,
    binds: Vec<WritableBind>,
    secrets: Vec<Secret>,
    /// The rootfs as the command gets it, without the excluded paths.
    record: Option<Record>,
}

fn hosts_file(hostname: &str, extra: &[(String, String)]) -> String {
    let mut s =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, addr) in extra {
        s.push_str(&format!("{addr}\t{name}\n"));
    }
    s
}

impl Setup {
    fn prepare(&mut self, spec: &Spec, root: &Path) -> Result<(), SetupError> {
        for skipped in ["proc", "sys"] {
            // Cannot be mounted: the image's own (normally empty) directories stay, and what
            // the command writes there is discarded as in the namespace mode.
            self.excluded.push(PathBuf::from(skipped));
        }
        self.dev(root).ctx(|| "failed to create /dev".into())?;
        let hostname = if spec.hostname.is_empty() {
            "rbuild"
        } else {
            spec.hostname.as_str()
        };
        self.write_file(
            root,
            "/etc/hosts",
            hosts_file(hostname, &spec.extra_hosts).as_bytes(),
            0o644,
        )
        .ctx(|| "failed to write /etc/hosts".into())?;
        let resolv = match fs_err::read("/etc/resolv.conf") {
            Ok(content) => content,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).ctx(|| "failed to read the host's resolv.conf".into()),
        };
        self.write_file(root, "/etc/resolv.conf", &resolv, 0o644)
            .ctx(|| "failed to write /etc/resolv.conf".into())?;
        for m in &spec.mounts {
            self.mount(root, m)?;
        }
        self.record =
            Some(record(root, &self.excluded).ctx(|| "failed to record the rootfs".into())?);
        Ok(())
    }

    /// A fresh `/dev` (whatever the image had there is kept out of the diff).
    fn dev(&mut self, root: &Path) -> io::Result<()> {
        let dev = root.join("dev");
        remove_any(&dev)?;
        mkdir(&dev)?;
        self.excluded.push(PathBuf::from("dev"));
        for name in DEVICES {
            let host = fs_err::metadata(Path::new("/dev").join(name))?;
            rustix::fs::mknodat(
                CWD,
                dev.join(name),
                FileType::CharacterDevice,
                Mode::from_raw_mode(host.mode() & 0o7777),
                host.rdev(),
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("failed to create /dev/{name}: {e}"),
                )
            })?;
            rustix::fs::chmodat(
                CWD,
                dev.join(name),
                Mode::from_raw_mode(host.mode() & 0o7777),
                AtFlags::empty(),
            )?;
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            fs_err::os::unix::fs::symlink(target, dev.join(link))?;
        }
        let shm = dev.join("shm");
        mkdir(&shm)?;
        rustix::fs::chmodat(CWD, &shm, Mode::from_raw_mode(0o1777), AtFlags::empty())?;
        Ok(())
    }

    /// Writes a generated file at `path` (symlinks followed inside the rootfs).
    fn write_file(&mut self, root: &Path, path: &str, content: &[u8], mode: u32) -> io::Result<()> {
        let rel = ensure(root, path, Leaf::File)?;
        let host = root.join(&rel);
        // A new inode: the image's may be a hardlink of a file that enters the layer.
        fs_err::remove_file(&host)?;
        fs_err::write(&host, content)?;
        rustix::fs::chmodat(CWD, &host, Mode::from_raw_mode(mode), AtFlags::empty())?;
        self.excluded.push(rel);
        Ok(())
    }

    fn mount(&mut self, root: &Path, m: &MountSpec) -> Result<(), SetupError> {
        match m {
            MountSpec::Bind {
                source,
                target,
                readonly,
            } => {
                let meta =
                    fs_err::metadata(source).ctx(|| "failed to stat a bind source".into())?;
                let leaf = if meta.is_dir() { Leaf::Dir } else { Leaf::File };
                let rel = self.target(root, target, leaf)?;
                let mut plan = Plan::default();
                let leaves = if *readonly {
                    Leaves::Copy
                } else {
                    Leaves::Link
                };
                plan.host(source, &root.join(&rel))
                    .and_then(|()| plan.execute(leaves))
                    .ctx(|| format!("failed to copy {} to {target}", source.display()))?;
                if !*readonly && meta.is_dir() {
                    let record = record(&root.join(&rel), &[])
                        .ctx(|| format!("failed to record {target}"))?;
                    self.binds.push(WritableBind {
                        source: source.clone(),
                        target: rel,
                        record,
                    });
                }
            }
            MountSpec::Overlay {
                lowers,
                source,
                target,
                ..
            } => {
                let node = resolve(lowers, source)
                    .ctx(|| format!("failed to resolve mount source {source}"))?
                    .ok_or_else(|| {
                        SetupError::msg(format!(
                            "failed to open mount source {source}: no such file or directory"
                        ))
                    })?;
                let leaf = if matches!(node, Node::Dir(_)) {
                    Leaf::Dir
                } else {
                    Leaf::File
                };
                let rel = self.target(root, target, leaf)?;
                let mut plan = Plan::default();
                plan.node(&node, &root.join(&rel))
                    .and_then(|()| plan.execute(Leaves::Copy))
                    .ctx(|| format!("failed to copy mount source {source} to {target}"))?;
            }
            MountSpec::File {
                content,
                target,
                mode,
                uid,
                gid,
            } => {
                let rel = self.target(root, target, Leaf::File)?;
                let host = root.join(&rel);
                let write = || -> io::Result<(u64, u64)> {
                    // A new inode: the image's may be a hardlink of a file that enters the layer.
                    fs_err::remove_file(&host)?;
                    fs_err::write(&host, &content.0)?;
                    rustix::fs::chownat(
                        CWD,
                        &host,
                        Some(rustix::fs::Uid::from_raw(*uid)),
                        Some(rustix::fs::Gid::from_raw(*gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )?;
                    rustix::fs::chmodat(
                        CWD,
                        &host,
                        Mode::from_raw_mode(mode & 0o7777),
                        AtFlags::empty(),
                    )?;
                    let meta = fs_err::symlink_metadata(&host)?;
                    Ok((meta.dev(), meta.ino()))
                };
                let written = write();
                if let Ok(meta) = fs_err::symlink_metadata(&host) {
                    // Deleted after the run even if writing failed half-way.
                    self.secrets.push(Secret {
                        target: rel,
                        dev_ino: (meta.dev(), meta.ino()),
                    });
                }
                written.ctx(|| format!("failed to write the file mount {target}"))?;
            }
            MountSpec::Tmpfs { target, .. } => {
                let rel = self.target(root, target, Leaf::Dir)?;
                let host = root.join(&rel);
                remove_any(&host)
                    .and_then(|()| fs_err::create_dir(&host))
                    .and_then(|()| {
                        Ok(rustix::fs::chmodat(
                            CWD,
                            &host,
                            Mode::from_raw_mode(0o1777),
                            AtFlags::empty(),
                        )?)
                    })
                    .ctx(|| format!("failed to create the tmpfs directory {target}"))?;
            }
        }
        Ok(())
    }

    /// Creates a mount target and leaves it out of the diff.
    fn target(&mut self, root: &Path, target: &str, leaf: Leaf) -> Result<PathBuf, SetupError> {
        let rel =
            ensure(root, target, leaf).ctx(|| format!("failed to create mountpoint {target}"))?;
        if rel.as_os_str().is_empty() {
            return Err(SetupError::msg(format!(
                "cannot mount on {target}: it is the root directory"
            )));
        }
        if leaf == Leaf::Dir {
            // A directory target starts empty, as a mount would hide what is below it.
            let host = root.join(&rel);
            for e in fs_err::read_dir(&host).ctx(|| format!("failed to list {target}"))? {
                let e = e.ctx(|| format!("failed to list {target}"))?;
                remove_any(&e.path()).ctx(|| format!("failed to empty {target}"))?;
            }
        }
        self.excluded.push(rel.clone());
        Ok(rel)
    }

    /// Deletes the secret files; failures are reported but cannot be acted on. A directory
    /// that only changed by this deletion stays unchanged for the diff.
    #[allow(clippy::print_stderr)] // the runner reports on stderr
    fn remove_secrets(&mut self, root: &Path) {
        for s in &self.secrets {
            let host = root.join(&s.target);
            if !no_symlinks(root, &s.target) {
                continue;
            }
            match std::fs::symlink_metadata(&host) {
                Ok(m) if (m.dev(), m.ino()) == s.dev_ino => {}
                _ => continue,
            }
            let parent = s.target.parent().unwrap_or(Path::new(""));
            let stamp = |p: &Path| std::fs::symlink_metadata(root.join(p)).map(|m| Stamp::of(&m));
            let untouched = match (&self.record, stamp(parent)) {
                (Some(record), Ok(now)) => record.get(parent) == Some(&now),
                _ => false,
            };
            if let Err(e) = std::fs::remove_file(&host) {
                eprintln!(
                    "rbuild-runner: failed to delete the secret file {}: {e}",
                    host.display()
                );
                continue;
            }
            if let (true, Some(record), Ok(now)) = (untouched, &mut self.record, stamp(parent)) {
                record.insert(parent.to_owned(), now);
            }
        }
    }

    /// Applies the command's changes in read-write binds to their sources.
    fn copy_back(&self, root: &Path) -> Result<(), SetupError> {
        for b in &self.binds {
            if !no_symlinks(root, &b.target) {
                // The command replaced the target (or a parent) with a symlink: following it
                // could copy host files; its changes are dropped.
                tracing::warn!(target = %b.target.display(), "bind target replaced, changes dropped");
                continue;
            }
            let from = root.join(&b.target);
            let changes = diff(&from, &b.record, &[])
                .ctx(|| format!("failed to compare /{}", b.target.display()))?;
            apply_to(&from, &b.source, &changes).ctx(|| {
                format!(
                    "failed to copy the changes of /{} back to {}",
                    b.target.display(),
                    b.source.display()
                )
            })?;
        }
        Ok(())
    }
}

/// Whether no component of `rel` under `root` is a symlink (after the run, before trusting
/// a path the command could have changed).
fn no_symlinks(root: &Path, rel: &Path) -> bool {
    let mut cur = root.to_owned();
    for c in rel.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if !m.file_type().is_symlink() => {}
            _ => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------------------

/// Forks the command into the rootfs, forwards signals, waits, then kills what it left.
fn run_command(spec: &Spec, rootfs: &Path) -> Result<i32, SetupError> {
    let root_meta = fs_err::metadata(rootfs).ctx(|| "failed to stat the rootfs".into())?;
    let root_id = (root_meta.dev(), root_meta.ino());
    let last_cap: u32 = fs_err::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ctx(|| "failed to read the last capability".into())?
        .trim()
        .parse()
        .map_err(|_| SetupError::msg("unreadable /proc/sys/kernel/cap_last_cap"))?;
    let may_filter = spec.no_new_privs
        || rustix::thread::capabilities(None)
            .is_ok_and(|c| c.effective.bits() & (1 << CAP_SYS_ADMIN) != 0);
    let me = rustix::process::getpid();
    // Orphans (a `RUN sleep 1000 &`) are reparented to us, so we can reap and kill them.
    rustix::process::set_child_subreaper(Some(me))
        .ctx(|| "failed to become a child subreaper".into())?;
    let mut waited: Vec<i32> = FORWARDED.to_vec();
    waited.push(libc::SIGCHLD);
    let signals = SignalSet::new(&waited);
    let original_mask = signals.block().ctx(|| "failed to block signals".into())?;
    let child = match sys::fork().ctx(|| "failed to fork the command".into())? {
        Fork::Child => command(spec, rootfs, &original_mask, last_cap, may_filter),
        Fork::Parent(pid) => pid,
    };
    let code = loop {
        forward_until_sigchld(&signals, child).ctx(|| "failed to wait for signals".into())?;
        if let Some(code) = reap_all(child) {
            break code;
        }
    };
    kill_leftovers(me, root_id);
    Ok(code)
}

/// The forked command: enters the rootfs and executes; never returns.
fn command(
    spec: &Spec,
    rootfs: &Path,
    original_mask: &SignalSet,
    last_cap: u32,
    may_filter: bool,
) -> ! {
    let prepared = (|| -> Result<Program, SetupError> {
        // If the outside process dies (rbuild killed), so does the command.
        rustix::process::set_parent_process_death_signal(Some(Signal::KILL))
            .ctx(|| "failed to set the parent death signal".into())?;
        rustix::process::chroot(rootfs)
            .ctx(|| format!("failed to chroot to {}", rootfs.display()))?;
        rustix::process::chdir("/").ctx(|| "failed to enter the rootfs".into())?;
        // Inside the chroot, symlinks in the image cannot lead out of it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&spec.cwd)
            .ctx(|| format!("failed to create the working directory {}", spec.cwd))?;
        let mut program = Program::prepare(spec)?;
        program.caps = CHROOT_CAPS;
        program.last_cap = Some(last_cap);
        if !may_filter {
            // Installing a filter needs no_new_privs or CAP_SYS_ADMIN; see docs/ISOLATION.md.
            program.seccomp.clear();
        }
        Ok(program)
    })();
    match prepared {
        Ok(program) => program.exec(original_mask),
        Err(e) => die(EXIT_SETUP_FAILED, &e),
    }
}

/// SIGKILLs every process left by the command: our descendants (orphans come to us as the
/// subreaper) and any process whose root is the rootfs; reaps them. Retries while new ones
/// appear (a process may fork while we kill).
fn kill_leftovers(me: Pid, root_id: (u64, u64)) {
    for _ in 0..200 {
        let found = leftovers(me, root_id);
        if found.is_empty() {
            break;
        }
        for pid in &found {
            // Gone in the meantime is fine.
            let _ = rustix::process::kill_process(*pid, Signal::KILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
        while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
    }
    while let Ok(Some(_)) = rustix::process::waitpid(None, WaitOptions::NOHANG) {}
}

fn leftovers(me: Pid, root_id: (u64, u64)) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parents = HashMap::new();
    let mut in_root = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me.as_raw_nonzero().get() {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok())
            {
                parents.insert(pid, ppid);
            }
        }
        if let Ok(m) = std::fs::metadata(e.path().join("root")) {
            if (m.dev(), m.ino()) == root_id {
                in_root.push(pid);
            }
        }
    }
    let me = me.as_raw_nonzero().get();
    let mut out: HashSet<i32> = in_root.into_iter().collect();
    for &pid in parents.keys() {
        let mut p = pid;
        for _ in 0..1000 {
            match parents.get(&p) {
                Some(&pp) if pp == me => {
                    out.insert(pid);
                    break;
                }
                Some(&pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
    }
    out.into_iter().filter_map(Pid::from_raw).collect()
}

// ---------------------------------------------------------------------------------------------
// Record and diff
// ---------------------------------------------------------------------------------------------

/// What identifies the state of one path: a change to content, metadata or links moves ctime
/// (mtime and size as a second guard on filesystems with coarse timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
    size: u64,
    /// `st_mode & S_IFMT`.
    kind: u32,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
            size: if m.is_dir() { 0 } else { m.size() },
            kind: m.mode() & libc::S_IFMT,
        }
    }

    fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
}

/// Stamps of every path under a root, by path relative to it.
type Record = HashMap<PathBuf, Stamp>;

fn is_excluded(rel: &Path, excluded: &[PathBuf]) -> bool {
    excluded.iter().any(|e| rel.starts_with(e))
}

/// Records every path under `root` but the `excluded` ones.
fn record(root: &Path, excluded: &[PathBuf]) -> io::Result<Record> {
    fn walk(root: &Path, rel: &Path, excluded: &[PathBuf], out: &mut Record) -> io::Result<()> {
        for e in fs_err::read_dir(root.join(rel))? {
            let child = rel.join(e?.file_name());
            if is_excluded(&child, excluded) {
                continue;
            }
            let meta = fs_err::symlink_metadata(root.join(&child))?;
            out.insert(child.clone(), Stamp::of(&meta));
            if meta.is_dir() {
                walk(root, &child, excluded, out)?;
            }
        }
        Ok(())
    }
    let mut out = Record::new();
    walk(root, Path::new(""), excluded, &mut out)?;
    Ok(out)
}

/// One change of a tree against its record, in overlay terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// A new directory, or one whose own metadata changed.
    Dir(PathBuf),
    /// A new or changed non-directory.
    Leaf(PathBuf),
    /// A recorded path that is gone.
    Delete(PathBuf),
}

/// The changes under `root` since `record` was taken, parents before children. A deleted
/// directory is one [`Change::Delete`]; in a new or replaced directory everything is new, and
/// the recorded children that are gone are deleted (a whiteout hides them below).
fn diff(root: &Path, record: &Record, excluded: &[PathBuf]) -> io::Result<Vec<Change>> {
    struct Walk<'a> {
        root: &'a Path,
        record: &'a Record,
        excluded: &'a [PathBuf],
        out: Vec<Change>,
        /// The directories present now.
        dirs: HashSet<PathBuf>,
        /// Every path present now.
        present: HashSet<PathBuf>,
    }
    impl Walk<'_> {
        fn dir(&mut self, rel: &Path, all_new: bool) -> io::Result<()> {
            let mut names: Vec<OsString> = fs_err::read_dir(self.root.join(rel))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort();
            for name in names {
                let child = rel.join(name);
                if is_excluded(&child, self.excluded) {
                    continue;
                }
                let meta = fs_err::symlink_metadata(self.root.join(&child))?;
                let now = Stamp::of(&meta);
                let old = self.record.get(&child);
                self.present.insert(child.clone());
                if now.is_dir() {
                    self.dirs.insert(child.clone());
                    let replaced = old.is_none_or(|o| !o.is_dir() || o.ino != now.ino);
                    if all_new || replaced || old != Some(&now) {
                        self.out.push(Change::Dir(child.clone()));
                    }
                    self.dir(&child, all_new || replaced)?;
                } else if all_new || old != Some(&now) {
                    self.out.push(Change::Leaf(child));
                }
            }
            Ok(())
        }
    }
    let mut w = Walk {
        root,
        record,
        excluded,
        out: Vec::new(),
        dirs: HashSet::from([PathBuf::new()]),
        present: HashSet::new(),
    };
    w.dir(Path::new(""), false)?;
    let mut deleted: Vec<&PathBuf> = record
        .keys()
        .filter(|p| !w.present.contains(*p) && !is_excluded(p, excluded))
        .filter(|p| w.dirs.contains(p.parent().unwrap_or(Path::new(""))))
        .collect();
    deleted.sort();
    w.out
        .extend(deleted.into_iter().map(|p| Change::Delete(p.clone())));
    Ok(w.out)
}

/// Moves a non-directory from the rootfs to `dest` (a copy when across filesystems).
fn move_leaf(src: &Path, dest: &Path) -> io::Result<()> {
    match std::fs::rename(src, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => copy_leaf(src, dest, Leaves::Copy),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "failed to move {} to {}: {e}",
                src.display(),
                dest.display()
            ),
        )),
    }
}

/// Writes `changes` of the tree at `root` into `upper` in overlay format. Leaves are moved out
/// of `root` (it is discarded afterwards); hardlinks among them stay hardlinks.
fn write_upper(root: &Path, upper: &Path, changes: &[Change]) -> io::Result<()> {
    // Every directory the upper dir needs, with the rootfs metadata it gets, read before
    // moving leaves out changes the rootfs directories' mtimes.
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut seen = HashSet::new();
    for c in changes {
        let (Change::Dir(p) | Change::Leaf(p) | Change::Delete(p)) = c;
        let mut wanted: Vec<&Path> = p.ancestors().skip(1).collect();
        wanted.pop(); // the root itself
        if let Change::Dir(p) = c {
            wanted.insert(0, p);
        }
        for a in wanted.into_iter().rev() {
            if seen.insert(a.to_owned()) {
                dirs.push(a.to_owned());
            }
        }
    }
    let metas: Vec<std::fs::Metadata> = dirs
        .iter()
        .map(|d| fs_err::symlink_metadata(root.join(d)))
        .collect::<io::Result<_>>()?;
    for d in &dirs {
        make_dir(&upper.join(d))?;
    }
    for c in changes {
        match c {
            Change::Dir(_) => {}
            Change::Leaf(p) => move_leaf(&root.join(p), &upper.join(p))?,
            Change::Delete(p) => rustix::fs::mknodat(
                CWD,
                upper.join(p),
                FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("failed to create a whiteout for /{}: {e}", p.display()),
                )
            })?,
        }
    }
    for (d, meta) in dirs.iter().zip(&metas).rev() {
        copy_metadata(&root.join(d), &upper.join(d), meta)?;
    }
    Ok(())
}

/// Applies `changes` of the tree at `from` to the plain tree `to` (a bind source).
fn apply_to(from: &Path, to: &Path, changes: &[Change]) -> io::Result<()> {
    let mut dirs = Vec::new();
    for c in changes {
        match c {
            Change::Dir(p) => {
                let meta = fs_err::symlink_metadata(from.join(p))?;
                make_dir(&to.join(p))?;
                dirs.push((p, meta));
            }
            Change::Leaf(p) => {
                let dest = to.join(p);
                match fs_err::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => fs_err::remove_dir_all(&dest)?,
                    _ => {}
                }
                // rename() replaces a non-directory; onto a hardlink of itself it does nothing.
                move_leaf(&from.join(p), &dest)?;
            }
            Change::Delete(p) => remove_any(&to.join(p))?,
        }
    }
    for (p, meta) in dirs.iter().rev() {
        copy_metadata(&from.join(p), &to.join(p), meta)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, content: &str) {
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, content).unwrap();
    }

    /// A rootfs copied from one lower dir, its record, and an upper dir.
    struct Case {
        _dir: tempfile::TempDir,
        lower: PathBuf,
        root: PathBuf,
        upper: PathBuf,
    }

    impl Case {
        fn new(files: &[(&str, &str)]) -> (Self, Record) {
            let dir = tempfile::tempdir().unwrap();
            let lower = dir.path().join("lower");
            let root = dir.path().join("root");
            let upper = dir.path().join("upper");
            fs_err::create_dir(&lower).unwrap();
            fs_err::create_dir(&upper).unwrap();
            for (p, c) in files {
                write(&lower.join(p), c);
            }
            fs_err::create_dir(&root).unwrap();
            materialize(std::slice::from_ref(&lower), &root).unwrap();
            let rec = record(&root, &[]).unwrap();
            (
                Self {
                    _dir: dir,
                    lower,
                    root,
                    upper,
                },
                rec,
            )
        }

        fn upper(&self, rec: &Record) -> Vec<Change> {
            let changes = diff(&self.root, rec, &[]).unwrap();
            write_upper(&self.root, &self.upper, &changes).unwrap();
            changes
        }

        fn is_whiteout(&self, rel: &str) -> bool {
            let m = fs_err::symlink_metadata(self.upper.join(rel)).unwrap();
            m.file_type().is_char_device() && m.rdev() == 0
        }
    }

    fn leaf(p: &str) -> Change {
        Change::Leaf(p.into())
    }

    fn dir(p: &str) -> Change {
        Change::Dir(p.into())
    }

    fn del(p: &str) -> Change {
        Change::Delete(p.into())
    }

    #[test]
    fn unchanged_rootfs_gives_an_empty_upper() {
        let (c, rec) = Case::new(&[("etc/passwd", "root"), ("bin/sh", "x")]);
        assert_eq!(c.upper(&rec), vec![]);
        assert_eq!(fs_err::read_dir(&c.upper).unwrap().count(), 0);
    }

    #[test]
    fn added_modified_in_place_and_deleted() {
        let (c, rec) = Case::new(&[("etc/passwd", "root"), ("etc/group", "g"), ("a/b/c", "1")]);
        use std::io::Write;
        let mut f = fs_err::OpenOptions::new()
            .append(true)
            .open(c.root.join("etc/passwd"))
            .unwrap();
        f.write_all(b"\nuser").unwrap();
        drop(f);
        write(&c.root.join("etc/new"), "n");
        fs_err::remove_file(c.root.join("etc/group")).unwrap();
        fs_err::remove_dir_all(c.root.join("a")).unwrap();
        let changes = c.upper(&rec);
        assert_eq!(
            changes,
            vec![
                dir("etc"),
                leaf("etc/new"),
                leaf("etc/passwd"),
                del("a"),
                del("etc/group")
            ]
        );
        // The in-place edit did not touch the lower dir (a real copy, not a link).
        assert_eq!(
            fs_err::read_to_string(c.lower.join("etc/passwd")).unwrap(),
            "root"
        );
        assert_eq!(
            fs_err::read_to_string(c.upper.join("etc/passwd")).unwrap(),
            "root\nuser"
        );
        assert!(c.is_whiteout("a"));
        assert!(c.is_whiteout("etc/group"));
        assert!(!c.upper.join("a/b").exists());
    }

    #[test]
    fn metadata_change_and_parents_keep_rootfs_metadata() {
        let (c, rec) = Case::new(&[("usr/bin/tool", "t"), ("usr/lib/x", "x")]);
        fs_err::set_permissions(
            c.root.join("usr/bin"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::chown(c.root.join("usr/lib/x"), Some(7), Some(8)).unwrap();
        fs_err::set_permissions(
            c.root.join("usr/bin/tool"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        let changes = c.upper(&rec);
        assert_eq!(
            changes,
            vec![dir("usr/bin"), leaf("usr/bin/tool"), leaf("usr/lib/x")]
        );
        let m = |p: &str| fs_err::symlink_metadata(c.upper.join(p)).unwrap();
        assert_eq!(m("usr/bin").mode() & 0o7777, 0o700);
        assert_eq!(m("usr/bin/tool").mode() & 0o7777, 0o4755);
        assert_eq!((m("usr/lib/x").uid(), m("usr/lib/x").gid()), (7, 8));
        let lower_usr = fs_err::symlink_metadata(c.lower.join("usr")).unwrap();
        assert_eq!(m("usr").mtime(), lower_usr.mtime());
        assert_eq!(m("usr").mode(), lower_usr.mode());
    }

    #[test]
    fn replaced_kinds_and_replaced_directory() {
        let (c, rec) = Case::new(&[
            ("f", "file"),
            ("d/x", "x"),
            ("r/keep", "old"),
            ("r/gone", "g"),
            ("r/sub/deep", "d"),
        ]);
        fs_err::remove_file(c.root.join("f")).unwrap();
        fs_err::create_dir(c.root.join("f")).unwrap();
        fs_err::remove_dir_all(c.root.join("d")).unwrap();
        std::os::unix::fs::symlink("/f", c.root.join("d")).unwrap();
        fs_err::remove_dir_all(c.root.join("r")).unwrap();
        write(&c.root.join("r/keep"), "new");
        fs_err::create_dir(c.root.join("r/sub")).unwrap();
        let changes = c.upper(&rec);
        assert_eq!(
            changes,
            vec![
                leaf("d"),
                dir("f"),
                dir("r"),
                leaf("r/keep"),
                dir("r/sub"),
                del("r/gone"),
                del("r/sub/deep"),
            ]
        );
        assert!(fs_err::symlink_metadata(c.upper.join("d"))
            .unwrap()
            .file_type()
            .is_symlink());
        // No opaque marker: the lower children of the replaced directory are whited out.
        assert!(c.is_whiteout("r/gone"));
        assert!(c.is_whiteout("r/sub/deep"));
        assert_eq!(
            fs_err::read_to_string(c.upper.join("r/keep")).unwrap(),
            "new"
        );
    }

    #[test]
    fn hardlinks_stay_hardlinks() {
        let (c, rec) = Case::new(&[("bin/busybox", "bb")]);
        fs_err::hard_link(c.root.join("bin/busybox"), c.root.join("bin/sh")).unwrap();
        let changes = c.upper(&rec);
        assert_eq!(
            changes,
            vec![dir("bin"), leaf("bin/busybox"), leaf("bin/sh")]
        );
        let a = fs_err::metadata(c.upper.join("bin/busybox")).unwrap();
        let b = fs_err::metadata(c.upper.join("bin/sh")).unwrap();
        assert_eq!(a.ino(), b.ino());
    }

    #[test]
    fn materialize_applies_whiteouts_and_opaque_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let (l1, l2, root) = (
            dir.path().join("l1"),
            dir.path().join("l2"),
            dir.path().join("root"),
        );
        write(&l1.join("a"), "a1");
        write(&l1.join("gone"), "g");
        write(&l1.join("o/old"), "old");
        write(&l1.join("m/low"), "low");
        write(&l2.join("a"), "a2");
        write(&l2.join("o/new"), "new");
        write(&l2.join("m/high"), "high");
        rustix::fs::mknodat(
            CWD,
            l2.join("gone"),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .unwrap();
        xattr::set(l2.join("o"), "trusted.overlay.opaque", b"y").unwrap();
        fs_err::hard_link(l2.join("a"), l2.join("a-link")).unwrap();
        fs_err::create_dir(&root).unwrap();
        materialize(&[l1, l2.clone()], &root).unwrap();
        let mut names: Vec<String> = record(&root, &[])
            .unwrap()
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "a-link", "m", "m/high", "m/low", "o", "o/new"]);
        assert_eq!(fs_err::read_to_string(root.join("a")).unwrap(), "a2");
        let ino = |p: &str| fs_err::metadata(root.join(p)).unwrap().ino();
        assert_eq!(ino("a"), ino("a-link"));
        assert_ne!(ino("a"), fs_err::metadata(l2.join("a")).unwrap().ino());
    }

    #[test]
    fn ensure_follows_symlinks_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs_err::create_dir_all(root.join("real")).unwrap();
        std::os::unix::fs::symlink("/real", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../outside", root.join("up")).unwrap();
        assert_eq!(
            ensure(&root, "/etc/hosts", Leaf::File).unwrap(),
            PathBuf::from("real/hosts")
        );
        assert!(root.join("real/hosts").is_file());
        assert_eq!(
            ensure(&root, "/up/x", Leaf::Dir).unwrap(),
            PathBuf::from("outside/x")
        );
        assert!(root.join("outside/x").is_dir());
        assert!(!dir.path().join("outside").exists());
    }

    #[test]
    fn copy_back_applies_changes_to_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let (src, target) = (dir.path().join("src"), dir.path().join("t"));
        write(&src.join("keep"), "k");
        write(&src.join("edit"), "e");
        write(&src.join("rm/x"), "x");
        let mut plan = Plan::default();
        plan.host(&src, &target).unwrap();
        plan.execute(Leaves::Link).unwrap();
        let rec = record(&target, &[]).unwrap();
        fs_err::write(target.join("edit"), "edited").unwrap();
        write(&target.join("new/n"), "n");
        fs_err::remove_dir_all(target.join("rm")).unwrap();
        let changes = diff(&target, &rec, &[]).unwrap();
        apply_to(&target, &src, &changes).unwrap();
        assert_eq!(fs_err::read_to_string(src.join("edit")).unwrap(), "edited");
        assert_eq!(fs_err::read_to_string(src.join("new/n")).unwrap(), "n");
        assert_eq!(fs_err::read_to_string(src.join("keep")).unwrap(), "k");
        assert!(!src.join("rm").exists());
    }
}
