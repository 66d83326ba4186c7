//! Safe wrappers around `fork`, `execve`, signal masks and a few `ioctl`s.
//!
//! Everything here is a thin shim: the policy lives in `init.rs` and `rootfs.rs`. Each wrapper
//! documents what its caller must guarantee, and each `unsafe` block says why it holds.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use rustix::process::Pid;

/// Result of [`fork`].
pub(crate) enum Fork {
    /// We are the new child process.
    Child,
    /// We are the parent; this is the child's pid.
    Parent(Pid),
}

/// Fails unless the calling process has exactly one thread.
///
/// `fork` in a multi-threaded process leaves locks (malloc, stdio) held by threads that no longer
/// exist; the sandbox init runs before anything could start a thread, and this check keeps it so.
fn ensure_single_threaded() -> io::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads == 1 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "cannot fork a process with {threads} threads"
        )))
    }
}

/// Forks the calling process, which must be single-threaded (checked).
pub(crate) fn fork() -> io::Result<Fork> {
    ensure_single_threaded()?;
    // SAFETY: the process has a single thread (checked above), so the child inherits no lock held
    // by another thread and may keep running ordinary Rust code, allocation included.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(
            Pid::from_raw(pid).expect("fork returned a positive pid"),
        )),
    }
}

/// Replaces the process image; returns only on failure.
pub(crate) fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    // SAFETY: `path` and every element are NUL-terminated strings that outlive the call, and
    // both pointer arrays end with a null pointer as execve(2) requires.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// `close_range(first, last, 0)` as a raw syscall (glibc has a wrapper only since 2.34).
fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; callers hold no Rust object owning one of
    // them that would be used afterwards (see the callers).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the kernel has `close_range` (Linux 5.9). Closes nothing.
pub(crate) fn close_range_works() -> bool {
    close_range(u32::MAX, u32::MAX).is_ok()
}

/// Closes every file descriptor from `first` upwards, with `close_range` when `use_close_range`
/// (and the kernel has it), otherwise one by one as listed in `/proc/self/fd`.
pub(crate) fn close_fds_from(first: u32, use_close_range: bool) -> io::Result<()> {
    if use_close_range {
        match close_range(first, u32::MAX) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            other => return other,
        }
    }
    // Listed first and closed after: the listing holds a descriptor of its own.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if u32::try_from(fd).is_ok_and(|f| f >= first) {
            // SAFETY: as for close_range above; EBADF (the listing's own, now closed,
            // descriptor) is harmless.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Takes ownership of a file descriptor inherited from the parent process.
///
/// Returns `None` if `fd` is not open. Must be called at most once per descriptor.
pub(crate) fn take_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1;
    if !open {
        return None;
    }
    // SAFETY: the descriptor is open (checked above) and nothing else in this process owns it:
    // it was placed there by `inherit_fds_as` in the parent and is taken once, at startup.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the child of `cmd` receive each `(fd, target)` descriptor as `target`, without
/// `FD_CLOEXEC`. At most four descriptors.
pub(crate) fn inherit_fds_as(cmd: &mut Command, fds: &[(RawFd, RawFd)]) {
    assert!(
        fds.len() <= 4,
        "inherit_fds_as takes at most four descriptors"
    );
    let mut pairs = [(-1, -1); 4];
    pairs[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    let hook = move || {
        // First move every source above the targets, so a source that happens to sit on
        // another pair's target number is not clobbered by that pair's dup2.
        let mut moved = [-1; 4];
        for (i, &(fd, _)) in pairs[..count].iter().enumerate() {
            // SAFETY: F_DUPFD_CLOEXEC is async-signal-safe and only creates a descriptor.
            let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
            if new == -1 {
                return Err(io::Error::last_os_error());
            }
            moved[i] = new;
        }
        for (i, &(_, target)) in pairs[..count].iter().enumerate() {
            // SAFETY: dup2 is async-signal-safe; the new descriptor has FD_CLOEXEC clear.
            // The temporary copies keep FD_CLOEXEC and vanish at execve.
            if unsafe { libc::dup2(moved[i], target) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only calls async-signal-safe functions (fcntl, dup2) and allocates
    // nothing, as required between fork and exec in a possibly multi-threaded parent.
    unsafe { cmd.pre_exec(hook) };
}

/// Makes the child of `cmd` get SIGKILL when the thread that spawns it dies (a killed rbuild
/// must not leave a sandbox running). If the spawning process is already gone by the time the
/// hook runs, the child fails to start instead.
pub(crate) fn kill_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    let hook = move || {
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid are plain, async-signal-safe syscalls.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        if u32::try_from(ppid).ok() != Some(parent) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe syscalls and allocates nothing.
    unsafe { cmd.pre_exec(hook) };
}

/// Makes the calling process a session leader with `fd` (a terminal) as its controlling
/// terminal.
pub(crate) fn take_controlling_terminal(fd: RawFd) -> io::Result<()> {
    rustix::process::setsid()?;
    // SAFETY: TIOCSCTTY takes an int argument and touches no memory of ours.
    if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A set of signals.
#[derive(Clone, Copy)]
pub(crate) struct SignalSet(libc::sigset_t);

impl SignalSet {
    pub(crate) fn new(signals: &[i32]) -> Self {
        // SAFETY: sigset_t is plain data; sigemptyset initializes it before any use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t.
        unsafe { libc::sigemptyset(&raw mut set) };
        for &sig in signals {
            // SAFETY: `set` is initialized; invalid numbers only make sigaddset fail.
            unsafe { libc::sigaddset(&raw mut set, sig) };
        }
        Self(set)
    }

    /// Blocks these signals for the calling thread and returns the previous mask.
    pub(crate) fn block(&self) -> io::Result<SignalSet> {
        let mut old = SignalSet::new(&[]);
        // SAFETY: both pointers refer to valid sigset_t values.
        let rc =
            unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const self.0, &raw mut old.0) };
        if rc == 0 {
            Ok(old)
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }

    /// Replaces the signal mask of the calling thread with this set.
    pub(crate) fn set_mask(&self) -> io::Result<()> {
        // SAFETY: the pointer refers to a valid sigset_t; the old mask is not requested.
        let rc = unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &raw const self.0, std::ptr::null_mut())
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    }

    /// Waits for one of these (blocked) signals and returns its number.
    pub(crate) fn wait(&self) -> io::Result<i32> {
        loop {
            // SAFETY: the set is valid; a null siginfo pointer is allowed.
            let sig = unsafe { libc::sigwaitinfo(&raw const self.0, std::ptr::null_mut()) };
            if sig >= 0 {
                return Ok(sig);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// Resets every catchable signal to its default action.
///
/// Rust's runtime ignores SIGPIPE, and ignored signals survive execve; the command must start
/// with default dispositions like under any shell.
pub(crate) fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMIN() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours; failures (invalid numbers) are harmless.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// Removes capability number `cap` from the bounding set.
pub(crate) fn drop_bounding_capability(cap: u32) -> io::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes an integer argument and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs a seccomp BPF program on the calling thread.
///
/// Unlike `seccompiler::apply_filter`, this does not set `no_new_privs` first: the caller must
/// either have set it or hold `CAP_SYS_ADMIN` (as runc does when no-new-privileges is off).
pub(crate) fn install_seccomp_filter(program: &[seccompiler::sock_filter]) -> io::Result<()> {
    let len =
        u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = libc::sock_fprog {
        len,
        // seccompiler's `sock_filter` is `#[repr(C)]` with the kernel's fields (u16, u8, u8,
        // u32), exactly like libc's.
        filter: program.as_ptr().cast_mut().cast::<libc::sock_filter>(),
    };
    // SAFETY: `prog` points to `len` valid instructions for the duration of the call; the
    // kernel copies the program and keeps no pointer to our memory. It only reads through
    // the pointer, so casting away const is fine.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `struct mount_attr` from `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Makes a detached mount tree (from `open_tree`) read-only, submounts included.
pub(crate) fn make_tree_readonly(tree: &OwnedFd) -> io::Result<()> {
    set_tree_attrs(tree, 0x1) // MOUNT_ATTR_RDONLY
}

/// Makes a detached mount tree (from `open_tree`) `nodev`, submounts included: device nodes on it can
/// be created (and land in a layer) but not opened. See: #19.
pub(crate) fn make_tree_nodev(tree: &OwnedFd) -> io::Result<()> {
    set_tree_attrs(tree, 0x4) // MOUNT_ATTR_NODEV
}

/// Sets the `MOUNT_ATTR_*` bits `attr_set` on a detached mount tree and its submounts (`mount_setattr`,
/// Linux 5.12; callers fall back to a remount without it).
fn set_tree_attrs(tree: &OwnedFd, attr_set: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from a valid struct laid out
    // as the kernel's `struct mount_attr`; the path is an empty NUL-terminated string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The size of a memory page: how much mount(2) copies as the options of a mount.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf only reads a constant of the C library.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Whether the kernel has `mount_setattr` (Linux 5.12): called with no mount, it fails with
/// `EBADF` or `EINVAL` if it exists and `ENOSYS` otherwise.
pub(crate) fn mount_setattr_exists() -> bool {
    // SAFETY: a null attribute pointer with size 0 and fd -1: the kernel reads no memory of
    // ours before failing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            std::ptr::null::<MountAttr>(),
            0usize,
        )
    };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

/// Brings the loopback interface of the current network namespace up.
pub(crate) fn loopback_up() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: socket(2) returns a new descriptor that we own immediately below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::try_from(*src).expect("ascii fits in c_char");
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled ifru_flags in the call above.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).expect("IFF_UP fits");
    }
    // SAFETY: SIOCSIFFLAGS reads a valid ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `unshare(2)` for namespace flags (never `CLONE_FILES`).
pub(crate) fn unshare(flags: rustix::thread::UnshareFlags) -> io::Result<()> {
    assert!(
        !flags.contains(rustix::thread::UnshareFlags::FILES),
        "unshare wrapper is for namespaces only"
    );
    // SAFETY: without CLONE_FILES no thread can observe a descriptor table change, which is
    // the only hazard `unshare_unsafe` documents.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(io::Error::from)
}

/// `posix_openpt` + `grantpt` + `unlockpt` + open of the slave.
pub(crate) fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt returns a new descriptor (or -1) that we own immediately below.
    let raw = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: the descriptor is a pty master; ptsname_r writes at most `name.len()` bytes.
    let ok = unsafe {
        libc::grantpt(raw) == 0
            && libc::unlockpt(raw) == 0
            && libc::ptsname_r(raw, name.as_mut_ptr(), name.len()) == 0
    };
    if !ok {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    let slave = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    Ok((master, slave))
}
