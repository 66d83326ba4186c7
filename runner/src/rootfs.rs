//! Building the sandbox's filesystem view in PID 1: overlay rootfs, pivot_root, `/proc`,
//! `/dev`, `/sys`, `/etc/hosts`, extra mounts, masked and read-only paths.
//!
//! Mountpoints are created *after* `pivot_root`, so a symlink in the image (`/etc -> /host`)
//! resolves inside the rootfs and can never make us create or mount over a host path. Host
//! objects that must appear inside (device nodes, generated files, bind sources) are cloned as
//! detached mounts with `open_tree` before the pivot and attached with `move_mount` after it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, CWD};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};
use rustix::thread::UnshareFlags;
use serde::{Deserialize, Serialize};

use crate::kernel::Features;
use crate::setup::{Context, SetupError};
use crate::{MountSpec, Network, Spec};

/// A path (relative to the rootfs, no leading `/`) that exists in the upper dir only because
/// the runner needed a mountpoint there. The outside process removes these after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Created {
    /// A mountpoint file or directory the runner created.
    Mountpoint(String),
    /// A missing parent directory of a mountpoint the runner created.
    Parent(String),
    /// An existing lower directory copied up into the upper dir when a mountpoint was created
    /// inside it.
    CopiedUp(String),
}

/// Masked like runc's defaults: directories get an empty read-only tmpfs, files `/dev/null`.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Made read-only like runc's defaults.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host device nodes bind-mounted into the sandbox's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What kind of node a mountpoint is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    Dir,
    File,
}

/// Whether a created path is recorded for removal from the upper dir.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Record {
    Yes,
    No,
}

/// Creates mountpoints inside the (already pivoted) rootfs and records what lands in the upper dir.
struct Mountpoints<'a> {
    upper: OwnedFd,
    root_dev: u64,
    created: &'a mut Vec<Created>,
}

/// The components of `path` that name something (`..` kept, `/` and `.` dropped), for a walk that
/// resolves one component at a time.
pub(crate) fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn rel(path: &Path) -> String {
    path.strip_prefix("/")
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

impl Mountpoints<'_> {
    /// Makes sure `path` exists (like `mkdir -p`, plus a final empty file for [`Leaf::File`]),
    /// following symlinks inside the rootfs; returns the resolved, symlink-free path.
    fn ensure(&mut self, path: &str, leaf: Leaf, record: Record) -> io::Result<PathBuf> {
        let mut pending = components(Path::new(path));
        let mut cur = PathBuf::from("/");
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                cur.pop();
                continue;
            }
            let next = cur.join(&name);
            match std::fs::symlink_metadata(&next) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > 40 {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = std::fs::read_link(&next)?;
                    if target.is_absolute() {
                        cur = PathBuf::from("/");
                    }
                    for c in components(&target).into_iter().rev() {
                        pending.push_front(c);
                    }
                }
                Ok(meta) => {
                    if !pending.is_empty() && !meta.is_dir() {
                        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                    }
                    cur = next;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let last = pending.is_empty();
                    let on_overlay =
                        record == Record::Yes && std::fs::metadata(&cur)?.dev() == self.root_dev;
                    if on_overlay {
                        self.note_copy_ups(&cur);
                    }
                    if last && leaf == Leaf::File {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o644)
                            .open(&next)?;
                    } else {
                        std::fs::DirBuilder::new().mode(0o755).create(&next)?;
                    }
                    if on_overlay {
                        self.created.push(if last {
                            Created::Mountpoint(rel(&next))
                        } else {
                            Created::Parent(rel(&next))
                        });
                    }
                    cur = next;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cur)
    }

    /// Records the ancestors of `dir` that are not in the upper dir yet: creating an entry in
    /// `dir` copies them up.
    fn note_copy_ups(&mut self, dir: &Path) {
        for a in dir.ancestors() {
            let r = rel(a);
            if r.is_empty() {
                break;
            }
            let in_upper =
                rustix::fs::statat(&self.upper, r.as_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok();
            let known = self
                .created
                .iter()
                .any(|c| matches!(c, Created::CopiedUp(p) if *p == r));
            if !in_upper && !known {
                self.created.push(Created::CopiedUp(r));
            }
        }
    }
}

fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: MountFlags,
    data: &str,
) -> Result<(), SetupError> {
    let data = std::ffi::CString::new(data).expect("mount options have no NUL");
    rustix::mount::mount(src, target, fstype, flags, data.as_c_str())
        .ctx(|| format!("failed to mount {fstype} on {}", target.display()))
}

fn attach(tree: &OwnedFd, target: &Path) -> Result<(), SetupError> {
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .ctx(|| format!("failed to attach a mount on {}", target.display()))
}

/// A detached mount (from `open_tree`) to attach in the sandbox.
struct Tree {
    fd: OwnedFd,
    /// Flags still to be set once attached: the kernel has no `mount_setattr` (before 5.12) to set
    /// them while detached.
    remount: Option<Remount>,
}

/// Flags a tree gets by a remount after it is attached.
#[derive(Clone, Copy, Debug)]
struct Remount {
    readonly: bool,
    nodev: bool,
    /// The mounts below it too.
    recursive: bool,
}

impl Tree {
    fn new(fd: OwnedFd) -> Self {
        Self { fd, remount: None }
    }

    /// The tree made read-only (with its submounts when `recursive`): now, or once attached.
    fn readonly(fd: OwnedFd, recursive: bool, features: &Features) -> Result<Self, SetupError> {
        Self::with(fd, true, false, recursive, features)
    }

    /// The tree made read-only and/or `nodev` (with its submounts when `recursive`): now with
    /// `mount_setattr`, or by a remount once attached.
    fn with(
        fd: OwnedFd,
        readonly: bool,
        nodev: bool,
        recursive: bool,
        features: &Features,
    ) -> Result<Self, SetupError> {
        if !features.mount_setattr {
            let remount = (readonly || nodev).then_some(Remount {
                readonly,
                nodev,
                recursive,
            });
            return Ok(Self { fd, remount });
        }
        if nodev {
            crate::sys::make_tree_nodev(&fd)
                .ctx(|| "failed to make a detached mount nodev".into())?;
        }
        if readonly {
            crate::sys::make_tree_readonly(&fd)
                .ctx(|| "failed to make a detached mount read-only".into())?;
        }
        Ok(Self::new(fd))
    }

    fn attach(&self, target: &Path) -> Result<(), SetupError> {
        attach(&self.fd, target)?;
        if let Some(r) = self.remount {
            remount(target, r)?;
        }
        Ok(())
    }
}

/// Makes the attached mount at `target` read-only and/or nodev (and the mounts below it when
/// `recursive`) the way it was done before `mount_setattr`: `MS_REMOUNT|MS_BIND` with the flags,
/// keeping those the mount has, which the kernel refuses to clear in a user namespace (locked flags).
fn remount(target: &Path, r: Remount) -> Result<(), SetupError> {
    use rustix::fs::StatVfsMountFlags as S;
    let mut points = vec![target.to_owned()];
    if r.recursive {
        let info = fs_err::read_to_string("/proc/self/mountinfo")
            .ctx(|| "failed to read the mount table".into())?;
        points.extend(submounts(&info, target));
    }
    for p in points {
        let have = rustix::fs::statvfs(&p)
            .ctx(|| format!("failed to read the mount flags of {}", p.display()))?
            .f_flag;
        let mut flags = MountFlags::BIND;
        if r.readonly {
            flags |= MountFlags::RDONLY;
        }
        if r.nodev {
            flags |= MountFlags::NODEV;
        }
        for (s, m) in [
            (S::NOSUID, MountFlags::NOSUID),
            (S::NODEV, MountFlags::NODEV),
            (S::NOEXEC, MountFlags::NOEXEC),
            (S::NOATIME, MountFlags::NOATIME),
            (S::NODIRATIME, MountFlags::NODIRATIME),
            (S::RELATIME, MountFlags::RELATIME),
        ] {
            if have.contains(s) {
                flags |= m;
            }
        }
        if have.contains(S::RDONLY) {
            flags |= MountFlags::RDONLY;
        }
        rustix::mount::mount_remount(&p, flags, "")
            .ctx(|| format!("failed to remount {} ({flags:?})", p.display()))?;
    }
    Ok(())
}

/// The mount points strictly below `target` in a `/proc/self/mountinfo` text.
fn submounts(mountinfo: &str, target: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p != target && p.starts_with(target))
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| {
            d.iter()
                .all(|c| (b'0'..=b'3').contains(&d[0]) && (b'0'..=b'7').contains(c))
        });
        if let (b'\\', Some(d)) = (b[i], octal) {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn clone_tree(source: &Path, recursive: bool) -> Result<OwnedFd, SetupError> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    rustix::mount::open_tree(CWD, source, flags)
        .ctx(|| format!("failed to clone a bind mount of {}", source.display()))
}

/// Creates a detached mount of a fresh `fstype` (proc, sysfs) with these attributes.
///
/// Made before `pivot_root`: in a user namespace the kernel only allows a new proc or sysfs
/// while an unobstructed one is visible in the mount namespace ("mount too revealing"), and the
/// host's are gone once the old root is detached.
fn detached_fs(fstype: &str, attrs: MountAttrFlags) -> Result<OwnedFd, SetupError> {
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)
        .ctx(|| format!("failed to open a {fstype} filesystem context"))?;
    if let Err(e) = rustix::mount::fsconfig_create(&fs) {
        let log = fs_log(&fs);
        return Err(e).ctx(|| format!("failed to create a {fstype} filesystem ({log})"));
    }
    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .ctx(|| format!("failed to mount {fstype}"))
}

/// Reads the messages the kernel attached to a filesystem context, for a useful error.
fn fs_log(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        out.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
    }
    out.join("; ")
}

/// Where an overlay's changes go.
struct Upper<'a> {
    upper: &'a Path,
    work: &'a Path,
}

/// Mounts an overlay of `lowers` (base first, at least one; two without an upper dir) at
/// `target`: with `lowerdir+` on kernels that have it, otherwise with the classic option (see
/// the `overlay` module). `tag` names the overlay's scratch paths in `work`.
fn overlay(
    work: &Path,
    tag: &str,
    lowers: &[&Path],
    upper: Option<Upper<'_>>,
    target: &Path,
    features: &Features,
) -> Result<(), SetupError> {
    if let Some(Upper { work, .. }) = &upper {
        fs_err::create_dir_all(work).ctx(|| "failed to create the overlay work dir".into())?;
    }
    let user_namespace = crate::in_user_namespace();
    // No syncfs of the upper dir's file system when the overlay goes away (Linux ≥ 5.10; older
    // kernels keep syncing, see kernel::Features): that unmount otherwise writes back every dirty
    // page of the whole host file system, a third of a second after a RUN that wrote 500 MB here
    // and more on a busy node, and fsync in the RUN (dpkg's, per file) becomes free. The upper dir
    // is scratch space: its layer blob is fsynced when it is stored, and its snapshot is then as
    // durable as every other snapshot (unpacked layers and COPY results are not synced either).
    // buildah mounts its build containers the same way.
    let volatile = features.overlay_volatile && upper.is_some();
    if let (true, Some(bin)) = (features.uses_fuse(), &features.fuse_overlayfs) {
        let upper = upper.map(|u| (u.upper, u.work));
        return crate::fuse::mount(bin, lowers, upper, target);
    }
    // Past overlay's own depth limit only the classic path merges layers.
    if !features.lowerdir_append || lowers.len() > crate::overlay::MAX_LAYERS {
        let links = work.join(format!("links-{tag}"));
        let upper = upper.map(|u| (u.upper, u.work));
        return crate::overlay::mount_classic(
            &links,
            lowers,
            upper,
            user_namespace,
            volatile,
            target,
        );
    }
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .ctx(|| "failed to open an overlay filesystem context".into())?;
    let fail = |what: String, e: rustix::io::Errno| {
        let log = fs_log(&fs);
        let what = if log.is_empty() {
            what
        } else {
            format!("{what} ({log})")
        };
        Err::<(), _>(e).ctx(|| what)
    };
    // `lowerdir+` appends below the layers given so far: the top layer comes first.
    for lower in lowers.iter().rev() {
        if let Err(e) = rustix::mount::fsconfig_set_string(&fs, "lowerdir+", *lower) {
            fail(
                format!("failed to add overlay lower dir {}", lower.display()),
                e,
            )?;
        }
    }
    // See: #19. A RUN has CAP_MKNOD (as in Docker): the nodes it makes land in its layer, but nodev
    // keeps them from opening host devices (Docker's device cgroup does that; it may be missing here).
    let mut attrs = MountAttrFlags::MOUNT_ATTR_NODEV;
    if let Some(Upper { upper, work }) = upper {
        for (key, value) in [("upperdir", upper), ("workdir", work)] {
            if let Err(e) = rustix::mount::fsconfig_set_string(&fs, key, value) {
                fail(
                    format!("failed to set overlay {key} {}", value.display()),
                    e,
                )?;
            }
        }
    } else {
        attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
    }
    for (key, value) in crate::overlay::options(user_namespace, volatile) {
        let set = match &value {
            Some(v) => rustix::mount::fsconfig_set_string(&fs, key, v),
            None => rustix::mount::fsconfig_set_flag(&fs, key),
        };
        if let Err(e) = set {
            let shown = value.map_or(key.to_owned(), |v| format!("{key}={v}"));
            fail(format!("failed to set overlay option {shown}"), e)?;
        }
    }
    if let Err(e) = rustix::mount::fsconfig_create(&fs) {
        fail("failed to create the overlay filesystem".into(), e)?;
    }
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
        .ctx(|| "failed to mount the overlay filesystem".into())?;
    attach(&mnt, target)
}

fn mount_overlay(spec: &Spec, target: &Path, features: &Features) -> Result<(), SetupError> {
    let work = &spec.work;
    let empty;
    let mut lowers = crate::overlay::dedupe(&spec.lowers);
    if lowers.is_empty() {
        empty = work.join("empty");
        fs_err::create_dir_all(&empty).ctx(|| "failed to create an empty lower dir".into())?;
        lowers.push(empty.as_path());
    }
    let ovl_work = work.join("ovl");
    overlay(
        work,
        "root",
        &lowers,
        Some(Upper {
            upper: &spec.upper,
            work: &ovl_work,
        }),
        target,
        features,
    )
}

/// Clones the tree at `source` inside an overlay of `lowers` (see [`MountSpec::Overlay`]).
/// `n` numbers the mount, for its scratch paths in the work dir.
fn overlay_tree(
    work: &Path,
    n: usize,
    lowers: &[PathBuf],
    source: &str,
    scratch: Option<&PathBuf>,
    features: &Features,
) -> Result<(OwnedFd, Leaf), SetupError> {
    let lowers = crate::overlay::dedupe(lowers);
    // A read-only overlay (no upper dir) needs two lower dirs, any overlay one; distinct empty
    // dirs pad them (the same dir twice would be "overlapping layers").
    let needed = if scratch.is_some() { 1 } else { 2 };
    let empties: Vec<PathBuf> = (lowers.len()..needed)
        .map(|i| work.join(format!("empty-lower{i}")))
        .collect();
    for e in &empties {
        fs_err::create_dir_all(e).ctx(|| "failed to create an empty lower dir".into())?;
    }
    let all: Vec<&Path> = empties.iter().map(PathBuf::as_path).chain(lowers).collect();
    let (upper, ovl_work) = match scratch {
        Some(dir) => {
            let upper = dir.join("upper");
            fs_err::create_dir_all(&upper)
                .ctx(|| format!("failed to create {}", upper.display()))?;
            (Some(upper), dir.join("work"))
        }
        None => (None, PathBuf::new()),
    };
    // Mounted in this (private) mount namespace only, to clone the selected subtree from it.
    let at = work.join(format!("mnt{n}"));
    fs_err::create_dir_all(&at).ctx(|| format!("failed to create {}", at.display()))?;
    overlay(
        work,
        &format!("mnt{n}"),
        &all,
        upper.as_deref().map(|upper| Upper {
            upper,
            work: &ovl_work,
        }),
        &at,
        features,
    )?;
    let root = rustix::fs::open(
        &at,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("failed to open {}", at.display()))?;
    let rel = source.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let fd = rustix::fs::openat2(
        &root,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )
    .ctx(|| format!("failed to open mount source {source}"))?;
    let leaf = if rustix::fs::fstat(&fd)
        .ctx(|| format!("failed to stat mount source {source}"))?
        .st_mode
        & libc::S_IFMT
        == libc::S_IFDIR
    {
        Leaf::Dir
    } else {
        Leaf::File
    };
    let tree = rustix::mount::open_tree(
        &fd,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .ctx(|| format!("failed to clone mount source {source}"))?;
    Ok((tree, leaf))
}

/// Makes every mount of this namespace private, so nothing mounted here propagates out.
pub(crate) fn private_mounts() -> Result<(), SetupError> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .ctx(|| "failed to make mounts private".into())
}

/// A read-only file holding `content` on a fresh tmpfs (see [`MountSpec::File`]).
fn file_tree(
    work: &Path,
    n: usize,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
    features: &Features,
) -> Result<Tree, SetupError> {
    let dir = work.join(format!("file{n}"));
    fs_err::create_dir_all(&dir).ctx(|| format!("failed to create {}", dir.display()))?;
    mount(
        "tmpfs",
        &dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        "mode=0700",
    )?;
    let path = dir.join("f");
    let fd = rustix::fs::open(
        &path,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .ctx(|| "failed to create a file mount".into())?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, content).ctx(|| "failed to write a file mount".into())?;
    rustix::fs::fchown(
        &file,
        Some(rustix::process::Uid::from_raw(uid)),
        Some(rustix::process::Gid::from_raw(gid)),
    )
    .ctx(|| "failed to chown a file mount".into())?;
    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & 0o7777))
        .ctx(|| "failed to chmod a file mount".into())?;
    drop(file);
    let tree = clone_tree(&path, false)?;
    Tree::readonly(tree, false, features)
}

fn hosts_file(hostname: &str, extra: &[(String, String)]) -> String {
    let mut s =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for (name, addr) in extra {
        s.push_str(&format!("{addr}\t{name}\n"));
    }
    s
}

/// Builds the rootfs and enters it. Runs in PID 1; on return the process is inside the new
/// mount namespace with `/` being the sandbox rootfs. Paths created in the upper dir are
/// appended to `created` as they are made, so they can be cleaned even after a failure.
pub(crate) fn prepare(
    spec: &Spec,
    features: &Features,
    cgroups: &[(String, PathBuf)],
    created: &mut Vec<Created>,
) -> Result<(), SetupError> {
    if let Some(e) = features.overlay_error() {
        return Err(SetupError::msg(e));
    }
    // With fuse-overlayfs, its daemons mount in the outside process's (private) namespace and
    // the sandbox gets its own only just before pivot_root: pivot_root moves the root of every
    // process of its namespace that has the old one, which would take the daemons' view of the
    // host (and /proc) away from them.
    let fuse = features.uses_fuse();
    let mut flags = UnshareFlags::NEWUTS | UnshareFlags::NEWIPC;
    if !fuse {
        flags |= UnshareFlags::NEWNS;
    }
    if spec.network == Network::None {
        flags |= UnshareFlags::NEWNET;
    }
    crate::sys::unshare(flags).ctx(|| "failed to create namespaces".into())?;
    if spec.network == Network::None {
        crate::sys::loopback_up().ctx(|| "failed to bring up the loopback interface".into())?;
    }
    rustix::process::umask(Mode::from_raw_mode(0o022));
    if !fuse {
        private_mounts()?;
    }

    let work = &spec.work;
    let rootfs = work.join("rootfs");
    fs_err::create_dir_all(&rootfs).ctx(|| "failed to create the rootfs mountpoint".into())?;
    let hostname = if spec.hostname.is_empty() {
        "rbuild"
    } else {
        spec.hostname.as_str()
    };
    let hosts = work.join("hosts");
    fs_err::write(&hosts, hosts_file(hostname, &spec.extra_hosts))
        .ctx(|| "failed to write the hosts file".into())?;
    let resolv = work.join("resolv.conf");
    let resolv_conf = match fs_err::read("/etc/resolv.conf") {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).ctx(|| "failed to read the host's resolv.conf".into()),
    };
    fs_err::write(&resolv, resolv_conf).ctx(|| "failed to write resolv.conf".into())?;

    mount_overlay(spec, &rootfs, features)?;
    let upper = rustix::fs::open(
        &spec.upper,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("failed to open the upper dir {}", spec.upper.display()))?;

    // Everything that comes from the host is cloned now, while the host is still visible.
    let devices = DEVICES
        .iter()
        .map(|d| {
            let tree = clone_tree(&Path::new("/dev").join(d), false)?;
            Ok((*d, Tree::new(tree)))
        })
        .collect::<Result<Vec<_>, SetupError>>()?;
    // See: #19 and `RUN --device`. Only nodes that are devices on the host, as the user allowed them.
    let extra_devices = spec
        .devices
        .iter()
        .map(|d| {
            let meta = fs_err::metadata(&d.host)
                .ctx(|| format!("device {} not found", d.host.display()))?;
            let ft = meta.file_type();
            if !(ft.is_char_device() || ft.is_block_device()) {
                return Err(SetupError::msg(format!(
                    "{} is not a device node",
                    d.host.display()
                )));
            }
            Ok((d.path.as_str(), Tree::new(clone_tree(&d.host, false)?)))
        })
        .collect::<Result<Vec<_>, SetupError>>()?;
    let hosts_tree = Tree::new(clone_tree(&hosts, false)?);
    let nosuid_nodev_noexec_attrs = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    let proc_tree = Tree::new(detached_fs("proc", nosuid_nodev_noexec_attrs)?);
    // Rootless without a network namespace of our own: sysfs may not be mounted (the kernel wants
    // the network namespace owned by our user namespace), so the host's /sys is bound read-only,
    // as rootless podman does.
    let sys_tree = if crate::in_user_namespace() && spec.network != Network::None {
        Tree::readonly(clone_tree(Path::new("/sys"), true)?, true, features)?
    } else {
        Tree::new(detached_fs(
            "sysfs",
            nosuid_nodev_noexec_attrs | MountAttrFlags::MOUNT_ATTR_RDONLY,
        )?)
    };
    let resolv_tree = Tree::new(clone_tree(&resolv, false)?);
    let cgroup_trees = cgroups
        .iter()
        .map(|(at, dir)| {
            Ok((
                at,
                Tree::readonly(clone_tree(dir, false)?, false, features)?,
            ))
        })
        .collect::<Result<Vec<_>, SetupError>>()?;
    let mut binds = Vec::new();
    for (n, m) in spec.mounts.iter().enumerate() {
        match m {
            MountSpec::Bind {
                source, readonly, ..
            } => {
                let tree = clone_tree(source, true)?;
                // See: #19. Writable binds (cache mounts, `-v`) must not open device nodes made in
                // them either; Docker refuses device nodes of a bind without --device as well.
                let tree = Tree::with(tree, *readonly, true, true, features)?;
                let leaf = if fs_err::metadata(source)
                    .ctx(|| "failed to stat a bind source".into())?
                    .is_dir()
                {
                    Leaf::Dir
                } else {
                    Leaf::File
                };
                binds.push(Some((tree, leaf)));
            }
            MountSpec::Overlay {
                lowers,
                source,
                scratch,
                ..
            } => {
                let (tree, leaf) =
                    overlay_tree(work, n, lowers, source, scratch.as_ref(), features)?;
                binds.push(Some((Tree::new(tree), leaf)));
            }
            MountSpec::File {
                content,
                mode,
                uid,
                gid,
                ..
            } => binds.push(Some((
                file_tree(work, n, &content.0, *mode, *uid, *gid, features)?,
                Leaf::File,
            ))),
            MountSpec::Tmpfs { .. } => binds.push(None),
        }
    }

    if fuse {
        crate::sys::unshare(UnshareFlags::NEWNS)
            .ctx(|| "failed to create a mount namespace".into())?;
        private_mounts()?;
    }
    rustix::process::chdir(&rootfs).ctx(|| "failed to enter the rootfs".into())?;
    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    // only the new root, with no directory needed for the old one.
    rustix::process::pivot_root(".", ".").ctx(|| "failed to pivot_root".into())?;
    rustix::mount::unmount(".", UnmountFlags::DETACH)
        .ctx(|| "failed to detach the old root".into())?;
    rustix::process::chdir("/").ctx(|| "failed to enter the new root".into())?;

    let root_dev = fs_err::metadata("/")
        .ctx(|| "failed to stat the new root".into())?
        .dev();
    let mut mp = Mountpoints {
        upper,
        root_dev,
        created,
    };
    let mut ensure = |path: &str, leaf: Leaf| {
        mp.ensure(path, leaf, Record::Yes)
            .ctx(|| format!("failed to create mountpoint {path}"))
    };

    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    let proc_dir = ensure("/proc", Leaf::Dir)?;
    proc_tree.attach(&proc_dir)?;

    let dev = ensure("/dev", Leaf::Dir)?;
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        // nodev: the default devices below are bind mounts of the host's (their own mounts); a node
        // made in /dev by a RUN does not open (See: #19).
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::STRICTATIME,
        "mode=755,size=65536k",
    )?;
    for (name, tree) in &devices {
        let target = ensure(&format!("/dev/{name}"), Leaf::File)?;
        tree.attach(&target)?;
    }
    for (path, tree) in &extra_devices {
        let target = ensure(path, Leaf::File)?;
        tree.attach(&target)?;
    }
    let pts = ensure("/dev/pts", Leaf::Dir)?;
    mount(
        "devpts",
        &pts,
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )?;
    let shm = ensure("/dev/shm", Leaf::Dir)?;
    mount(
        "shm",
        &shm,
        "tmpfs",
        nosuid_nodev_noexec,
        &format!(
            "mode=1777,size={}k",
            if spec.limits.shm_size == 0 {
                65536
            } else {
                spec.limits.shm_size.div_ceil(1024)
            }
        ),
    )?;
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(target, link).ctx(|| format!("failed to create {link}"))?;
    }

    let sys = ensure("/sys", Leaf::Dir)?;
    sys_tree.attach(&sys)?;
    if !cgroup_trees.is_empty() {
        // The sandbox's own cgroups, read-only, as runc shows them (sysfs has no other way in).
        let top = Path::new("/sys/fs/cgroup");
        if cgroup_trees.iter().any(|(at, _)| !at.is_empty()) {
            mount(
                "tmpfs",
                top,
                "tmpfs",
                nosuid_nodev_noexec,
                "mode=755,size=64k",
            )?;
        }
        for (at, tree) in &cgroup_trees {
            let target = top.join(at);
            if !at.is_empty() {
                fs_err::create_dir(&target)
                    .ctx(|| format!("failed to create {}", target.display()))?;
            }
            tree.attach(&target)?;
        }
    }

    let target = ensure("/etc/hosts", Leaf::File)?;
    hosts_tree.attach(&target)?;
    let target = ensure("/etc/resolv.conf", Leaf::File)?;
    resolv_tree.attach(&target)?;

    for (m, bind) in spec.mounts.iter().zip(&binds) {
        match (m, bind) {
            (
                MountSpec::Bind { target, .. }
                | MountSpec::Overlay { target, .. }
                | MountSpec::File { target, .. },
                Some((tree, leaf)),
            ) => {
                let target = ensure(target, *leaf)?;
                tree.attach(&target)?;
            }
            (MountSpec::Tmpfs { target, size }, _) => {
                let target = ensure(target, Leaf::Dir)?;
                let data = if *size == 0 {
                    "mode=1777".to_owned()
                } else {
                    format!("mode=1777,size={size}")
                };
                mount(
                    "tmpfs",
                    &target,
                    "tmpfs",
                    MountFlags::NOSUID | MountFlags::NODEV,
                    &data,
                )?;
            }
            (MountSpec::Bind { .. } | MountSpec::Overlay { .. } | MountSpec::File { .. }, None) => {
                unreachable!("every bind, overlay and file mount was cloned above")
            }
        }
    }

    rustix::system::sethostname(hostname.as_bytes()).ctx(|| "failed to set the hostname".into())?;

    for path in MASKED_PATHS {
        match fs_err::metadata(path) {
            Ok(meta) if meta.is_dir() => mount(
                "tmpfs",
                Path::new(path),
                "tmpfs",
                nosuid_nodev_noexec | MountFlags::RDONLY,
                "size=0",
            )?,
            Ok(_) => rustix::mount::mount_bind("/dev/null", *path)
                .ctx(|| format!("failed to mask {path}"))?,
            Err(_) => {}
        }
    }
    for path in READONLY_PATHS {
        if fs_err::symlink_metadata(path).is_ok() {
            rustix::mount::mount_bind(*path, *path).ctx(|| format!("failed to bind {path}"))?;
            rustix::mount::mount_remount(
                *path,
                MountFlags::BIND | MountFlags::RDONLY | nosuid_nodev_noexec,
                "",
            )
            .ctx(|| format!("failed to make {path} read-only"))?;
        }
    }

    // The working directory is a real change of the layer (as in Docker), so it is not recorded.
    mp.ensure(&spec.cwd, Leaf::Dir, Record::No)
        .ctx(|| format!("failed to create the working directory {}", spec.cwd))?;

    if spec.readonly_rootfs {
        rustix::mount::mount_remount("/", MountFlags::BIND | MountFlags::RDONLY, "")
            .ctx(|| "failed to make the rootfs read-only".into())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submounts_are_those_strictly_below_with_escapes_undone() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
30 22 0:5 / /mnt/a rw - tmpfs t rw
31 30 0:6 / /mnt/a/b\\040c rw - tmpfs t rw
32 22 0:7 / /mnt/ab rw - tmpfs t rw
";
        assert_eq!(
            submounts(info, Path::new("/mnt/a")),
            vec![PathBuf::from("/mnt/a/b c")]
        );
        assert_eq!(unescape_mountinfo("x\\134y\\9"), "x\\y\\9");
    }
}
