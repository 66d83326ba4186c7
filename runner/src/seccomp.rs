//! Docker's default seccomp profile for the command, compiled to BPF with `seccompiler`.
//!
//! The profile is moby's `profiles/seccomp/default.json` resolved for a process holding
//! Docker's default capabilities (`command::DEFAULT_CAPS`: no `CAP_SYS_ADMIN`, but
//! `CAP_SYS_CHROOT`) on the native ABI of x86_64 or aarch64:
//!
//! * every syscall in [`ALLOWED`] is allowed, plus `chroot` (granted by `CAP_SYS_CHROOT`);
//! * `personality` only for `PER_LINUX`, `PER_LINUX32`, `UNAME26`, `UNAME26|PER_LINUX32` and the
//!   `0xffffffff` query; `socket` for every family but `AF_VSOCK`; `clone` only without
//!   namespace flags (so `unshare -U`, `CLONE_NEWUSER` and friends fail);
//! * `clone3` fails with `ENOSYS` (its flags are in memory, out of the filter's reach), so libc
//!   falls back to `clone`, where the flags are checked;
//! * everything else fails with `EPERM`: `mount`, `umount2`, `pivot_root`, `unshare`, `setns`,
//!   `keyctl`, `add_key`, `request_key`, `bpf`, `perf_event_open`, `kexec_load`, module
//!   loading, `swapon`, `reboot`, `settimeofday`, `acct`, `open_by_handle_at`, `userfaultfd`,
//!   `quotactl`, `syslog`, …
//!
//! Like runc, syscalls newer than any in the table fail with `ENOSYS` instead of `EPERM`, so
//! that libc fallbacks for syscalls the kernel gained later keep working.
//!
//! Two filters are stacked, because a seccompiler filter has a single "match" action: the
//! allow-list (mismatch `EPERM`), then a small hand-written one returning `ENOSYS` for `clone3`
//! and unknown numbers. When several filters return `SECCOMP_RET_ERRNO` the kernel uses the data
//! of the most recently installed one, so `ENOSYS` wins. Only the native ABI is allowed: x32
//! syscalls get `ENOSYS`, and the i386 ABI (`int 0x80`) kills the process (Docker's profile
//! also allows those two ABIs).

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use std::collections::BTreeMap;

use seccompiler::BpfProgram;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use seccompiler::{
    sock_filter, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::setup::SetupError;
use crate::Seccomp;

#[cfg(target_arch = "x86_64")]
const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::x86_64;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const ARCH: seccompiler::TargetArch = seccompiler::TargetArch::aarch64;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// Namespace flags `clone` must not carry: `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
/// CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7e02_0000;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// `AF_VSOCK`, the one socket family Docker's profile refuses.
const AF_VSOCK: u64 = 40;

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// `personality(2)` arguments Docker allows: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `UNAME26 | PER_LINUX32` and `0xffffffff` (query the current personality).
const PERSONALITIES: [u64; 5] = [0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Syscalls allowed unconditionally, by number for this architecture, sorted by number.
/// Derived from Docker's default profile (its unconditional allow-list, the `minKernel 4.8`
/// group, the architecture-specific groups, and the syscalls newer Docker releases added).
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const ALLOWED: &[(&str, i64)] = &[
    ("read", 0), ("write", 1), ("open", 2), ("close", 3), ("stat", 4), ("fstat", 5), ("lstat", 6),
    ("poll", 7), ("lseek", 8), ("mmap", 9), ("mprotect", 10), ("munmap", 11), ("brk", 12),
    ("rt_sigaction", 13), ("rt_sigprocmask", 14), ("rt_sigreturn", 15), ("ioctl", 16),
    ("pread64", 17), ("pwrite64", 18), ("readv", 19), ("writev", 20), ("access", 21), ("pipe", 22),
    ("select", 23), ("sched_yield", 24), ("mremap", 25), ("msync", 26), ("mincore", 27),
    ("madvise", 28), ("shmget", 29), ("shmat", 30), ("shmctl", 31), ("dup", 32), ("dup2", 33),
    ("pause", 34), ("nanosleep", 35), ("getitimer", 36), ("alarm", 37), ("setitimer", 38),
    ("getpid", 39), ("sendfile", 40), ("connect", 42), ("accept", 43), ("sendto", 44),
    ("recvfrom", 45), ("sendmsg", 46), ("recvmsg", 47), ("shutdown", 48), ("bind", 49),
    ("listen", 50), ("getsockname", 51), ("getpeername", 52), ("socketpair", 53),
    ("setsockopt", 54), ("getsockopt", 55), ("fork", 57), ("vfork", 58), ("execve", 59),
    ("exit", 60), ("wait4", 61), ("kill", 62), ("uname", 63), ("semget", 64), ("semop", 65),
    ("semctl", 66), ("shmdt", 67), ("msgget", 68), ("msgsnd", 69), ("msgrcv", 70), ("msgctl", 71),
    ("fcntl", 72), ("flock", 73), ("fsync", 74), ("fdatasync", 75), ("truncate", 76),
    ("ftruncate", 77), ("getdents", 78), ("getcwd", 79), ("chdir", 80), ("fchdir", 81),
    ("rename", 82), ("mkdir", 83), ("rmdir", 84), ("creat", 85), ("link", 86), ("unlink", 87),
    ("symlink", 88), ("readlink", 89), ("chmod", 90), ("fchmod", 91), ("chown", 92), ("fchown", 93),
    ("lchown", 94), ("umask", 95), ("gettimeofday", 96), ("getrlimit", 97), ("getrusage", 98),
    ("sysinfo", 99), ("times", 100), ("ptrace", 101), ("getuid", 102), ("getgid", 104),
    ("setuid", 105), ("setgid", 106), ("geteuid", 107), ("getegid", 108), ("setpgid", 109),
    ("getppid", 110), ("getpgrp", 111), ("setsid", 112), ("setreuid", 113), ("setregid", 114),
    ("getgroups", 115), ("setgroups", 116), ("setresuid", 117), ("getresuid", 118),
    ("setresgid", 119), ("getresgid", 120), ("getpgid", 121), ("setfsuid", 122), ("setfsgid", 123),
    ("getsid", 124), ("capget", 125), ("capset", 126), ("rt_sigpending", 127),
    ("rt_sigtimedwait", 128), ("rt_sigqueueinfo", 129), ("rt_sigsuspend", 130),
    ("sigaltstack", 131), ("utime", 132), ("mknod", 133), ("statfs", 137), ("fstatfs", 138),
    ("getpriority", 140), ("setpriority", 141), ("sched_setparam", 142), ("sched_getparam", 143),
    ("sched_setscheduler", 144), ("sched_getscheduler", 145), ("sched_get_priority_max", 146),
    ("sched_get_priority_min", 147), ("sched_rr_get_interval", 148), ("mlock", 149),
    ("munlock", 150), ("mlockall", 151), ("munlockall", 152), ("modify_ldt", 154), ("prctl", 157),
    ("arch_prctl", 158), ("adjtimex", 159), ("setrlimit", 160), ("sync", 162), ("gettid", 186),
    ("readahead", 187), ("setxattr", 188), ("lsetxattr", 189), ("fsetxattr", 190),
    ("getxattr", 191), ("lgetxattr", 192), ("fgetxattr", 193), ("listxattr", 194),
    ("llistxattr", 195), ("flistxattr", 196), ("removexattr", 197), ("lremovexattr", 198),
    ("fremovexattr", 199), ("tkill", 200), ("time", 201), ("futex", 202),
    ("sched_setaffinity", 203), ("sched_getaffinity", 204), ("set_thread_area", 205),
    ("io_setup", 206), ("io_destroy", 207), ("io_getevents", 208), ("io_submit", 209),
    ("io_cancel", 210), ("get_thread_area", 211), ("epoll_create", 213), ("epoll_ctl_old", 214),
    ("epoll_wait_old", 215), ("remap_file_pages", 216), ("getdents64", 217),
    ("set_tid_address", 218), ("restart_syscall", 219), ("semtimedop", 220), ("fadvise64", 221),
    ("timer_create", 222), ("timer_settime", 223), ("timer_gettime", 224),
    ("timer_getoverrun", 225), ("timer_delete", 226), ("clock_gettime", 228), ("clock_getres", 229),
    ("clock_nanosleep", 230), ("exit_group", 231), ("epoll_wait", 232), ("epoll_ctl", 233),
    ("tgkill", 234), ("utimes", 235), ("mq_open", 240), ("mq_unlink", 241), ("mq_timedsend", 242),
    ("mq_timedreceive", 243), ("mq_notify", 244), ("mq_getsetattr", 245), ("waitid", 247),
    ("ioprio_set", 251), ("ioprio_get", 252), ("inotify_init", 253), ("inotify_add_watch", 254),
    ("inotify_rm_watch", 255), ("openat", 257), ("mkdirat", 258), ("mknodat", 259),
    ("fchownat", 260), ("futimesat", 261), ("newfstatat", 262), ("unlinkat", 263),
    ("renameat", 264), ("linkat", 265), ("symlinkat", 266), ("readlinkat", 267), ("fchmodat", 268),
    ("faccessat", 269), ("pselect6", 270), ("ppoll", 271), ("set_robust_list", 273),
    ("get_robust_list", 274), ("splice", 275), ("tee", 276), ("sync_file_range", 277),
    ("vmsplice", 278), ("utimensat", 280), ("epoll_pwait", 281), ("signalfd", 282),
    ("timerfd_create", 283), ("eventfd", 284), ("fallocate", 285), ("timerfd_settime", 286),
    ("timerfd_gettime", 287), ("accept4", 288), ("signalfd4", 289), ("eventfd2", 290),
    ("epoll_create1", 291), ("dup3", 292), ("pipe2", 293), ("inotify_init1", 294), ("preadv", 295),
    ("pwritev", 296), ("rt_tgsigqueueinfo", 297), ("recvmmsg", 299), ("fanotify_mark", 301),
    ("prlimit64", 302), ("name_to_handle_at", 303), ("clock_adjtime", 305), ("syncfs", 306),
    ("sendmmsg", 307), ("getcpu", 309), ("process_vm_readv", 310), ("process_vm_writev", 311),
    ("sched_setattr", 314), ("sched_getattr", 315), ("renameat2", 316), ("seccomp", 317),
    ("getrandom", 318), ("memfd_create", 319), ("execveat", 322), ("membarrier", 324),
    ("mlock2", 325), ("copy_file_range", 326), ("preadv2", 327), ("pwritev2", 328),
    ("pkey_mprotect", 329), ("pkey_alloc", 330), ("pkey_free", 331), ("statx", 332),
    ("io_pgetevents", 333), ("rseq", 334), ("pidfd_send_signal", 424), ("io_uring_setup", 425),
    ("io_uring_enter", 426), ("io_uring_register", 427), ("pidfd_open", 434), ("close_range", 436),
    ("openat2", 437), ("faccessat2", 439), ("epoll_pwait2", 441), ("landlock_create_ruleset", 444),
    ("landlock_add_rule", 445), ("landlock_restrict_self", 446), ("memfd_secret", 447),
    ("process_mrelease", 448), ("futex_waitv", 449), ("cachestat", 451), ("fchmodat2", 452),
    ("map_shadow_stack", 453), ("futex_wake", 454), ("futex_wait", 455), ("futex_requeue", 456),
    ("mseal", 462), ("setxattrat", 463), ("getxattrat", 464), ("listxattrat", 465),
    ("removexattrat", 466),
];

#[cfg(target_arch = "aarch64")]
#[rustfmt::skip]
const ALLOWED: &[(&str, i64)] = &[
    ("io_setup", 0), ("io_destroy", 1), ("io_submit", 2), ("io_cancel", 3), ("io_getevents", 4),
    ("setxattr", 5), ("lsetxattr", 6), ("fsetxattr", 7), ("getxattr", 8), ("lgetxattr", 9),
    ("fgetxattr", 10), ("listxattr", 11), ("llistxattr", 12), ("flistxattr", 13),
    ("removexattr", 14), ("lremovexattr", 15), ("fremovexattr", 16), ("getcwd", 17),
    ("eventfd2", 19), ("epoll_create1", 20), ("epoll_ctl", 21), ("epoll_pwait", 22), ("dup", 23),
    ("dup3", 24), ("fcntl", 25), ("inotify_init1", 26), ("inotify_add_watch", 27),
    ("inotify_rm_watch", 28), ("ioctl", 29), ("ioprio_set", 30), ("ioprio_get", 31), ("flock", 32),
    ("mknodat", 33), ("mkdirat", 34), ("unlinkat", 35), ("symlinkat", 36), ("linkat", 37),
    ("renameat", 38), ("statfs", 43), ("fstatfs", 44), ("truncate", 45), ("ftruncate", 46),
    ("fallocate", 47), ("faccessat", 48), ("chdir", 49), ("fchdir", 50), ("fchmod", 52),
    ("fchmodat", 53), ("fchownat", 54), ("fchown", 55), ("openat", 56), ("close", 57),
    ("pipe2", 59), ("getdents64", 61), ("lseek", 62), ("read", 63), ("write", 64), ("readv", 65),
    ("writev", 66), ("pread64", 67), ("pwrite64", 68), ("preadv", 69), ("pwritev", 70),
    ("sendfile", 71), ("pselect6", 72), ("ppoll", 73), ("signalfd4", 74), ("vmsplice", 75),
    ("splice", 76), ("tee", 77), ("readlinkat", 78), ("newfstatat", 79), ("fstat", 80),
    ("sync", 81), ("fsync", 82), ("fdatasync", 83), ("sync_file_range", 84), ("timerfd_create", 85),
    ("timerfd_settime", 86), ("timerfd_gettime", 87), ("utimensat", 88), ("capget", 90),
    ("capset", 91), ("exit", 93), ("exit_group", 94), ("waitid", 95), ("set_tid_address", 96),
    ("futex", 98), ("set_robust_list", 99), ("get_robust_list", 100), ("nanosleep", 101),
    ("getitimer", 102), ("setitimer", 103), ("timer_create", 107), ("timer_gettime", 108),
    ("timer_getoverrun", 109), ("timer_settime", 110), ("timer_delete", 111),
    ("clock_gettime", 113), ("clock_getres", 114), ("clock_nanosleep", 115), ("ptrace", 117),
    ("sched_setparam", 118), ("sched_setscheduler", 119), ("sched_getscheduler", 120),
    ("sched_getparam", 121), ("sched_setaffinity", 122), ("sched_getaffinity", 123),
    ("sched_yield", 124), ("sched_get_priority_max", 125), ("sched_get_priority_min", 126),
    ("sched_rr_get_interval", 127), ("restart_syscall", 128), ("kill", 129), ("tkill", 130),
    ("tgkill", 131), ("sigaltstack", 132), ("rt_sigsuspend", 133), ("rt_sigaction", 134),
    ("rt_sigprocmask", 135), ("rt_sigpending", 136), ("rt_sigtimedwait", 137),
    ("rt_sigqueueinfo", 138), ("rt_sigreturn", 139), ("setpriority", 140), ("getpriority", 141),
    ("setregid", 143), ("setgid", 144), ("setreuid", 145), ("setuid", 146), ("setresuid", 147),
    ("getresuid", 148), ("setresgid", 149), ("getresgid", 150), ("setfsuid", 151),
    ("setfsgid", 152), ("times", 153), ("setpgid", 154), ("getpgid", 155), ("getsid", 156),
    ("setsid", 157), ("getgroups", 158), ("setgroups", 159), ("uname", 160), ("getrlimit", 163),
    ("setrlimit", 164), ("getrusage", 165), ("umask", 166), ("prctl", 167), ("getcpu", 168),
    ("gettimeofday", 169), ("adjtimex", 171), ("getpid", 172), ("getppid", 173), ("getuid", 174),
    ("geteuid", 175), ("getgid", 176), ("getegid", 177), ("gettid", 178), ("sysinfo", 179),
    ("mq_open", 180), ("mq_unlink", 181), ("mq_timedsend", 182), ("mq_timedreceive", 183),
    ("mq_notify", 184), ("mq_getsetattr", 185), ("msgget", 186), ("msgctl", 187), ("msgrcv", 188),
    ("msgsnd", 189), ("semget", 190), ("semctl", 191), ("semtimedop", 192), ("semop", 193),
    ("shmget", 194), ("shmctl", 195), ("shmat", 196), ("shmdt", 197), ("socketpair", 199),
    ("bind", 200), ("listen", 201), ("accept", 202), ("connect", 203), ("getsockname", 204),
    ("getpeername", 205), ("sendto", 206), ("recvfrom", 207), ("setsockopt", 208),
    ("getsockopt", 209), ("shutdown", 210), ("sendmsg", 211), ("recvmsg", 212), ("readahead", 213),
    ("brk", 214), ("munmap", 215), ("mremap", 216), ("execve", 221), ("mmap", 222),
    ("fadvise64", 223), ("mprotect", 226), ("msync", 227), ("mlock", 228), ("munlock", 229),
    ("mlockall", 230), ("munlockall", 231), ("mincore", 232), ("madvise", 233),
    ("remap_file_pages", 234), ("rt_tgsigqueueinfo", 240), ("accept4", 242), ("recvmmsg", 243),
    ("wait4", 260), ("prlimit64", 261), ("fanotify_mark", 263), ("name_to_handle_at", 264),
    ("clock_adjtime", 266), ("syncfs", 267), ("sendmmsg", 269), ("process_vm_readv", 270),
    ("process_vm_writev", 271), ("sched_setattr", 274), ("sched_getattr", 275), ("renameat2", 276),
    ("seccomp", 277), ("getrandom", 278), ("memfd_create", 279), ("execveat", 281),
    ("membarrier", 283), ("mlock2", 284), ("copy_file_range", 285), ("preadv2", 286),
    ("pwritev2", 287), ("pkey_mprotect", 288), ("pkey_alloc", 289), ("pkey_free", 290),
    ("statx", 291), ("io_pgetevents", 292), ("rseq", 293), ("pidfd_send_signal", 424),
    ("io_uring_setup", 425), ("io_uring_enter", 426), ("io_uring_register", 427),
    ("pidfd_open", 434), ("close_range", 436), ("openat2", 437), ("faccessat2", 439),
    ("epoll_pwait2", 441), ("landlock_create_ruleset", 444), ("landlock_add_rule", 445),
    ("landlock_restrict_self", 446), ("memfd_secret", 447), ("process_mrelease", 448),
    ("futex_waitv", 449), ("cachestat", 451), ("fchmodat2", 452), ("map_shadow_stack", 453),
    ("futex_wake", 454), ("futex_wait", 455), ("futex_requeue", 456), ("mseal", 462),
    ("setxattrat", 463), ("getxattrat", 464), ("listxattrat", 465), ("removexattrat", 466),
];

/// The filters for `seccomp`, in installation order (empty for [`Seccomp::Unconfined`]).
pub(crate) fn filters(seccomp: Seccomp) -> Result<Vec<BpfProgram>, SetupError> {
    match seccomp {
        Seccomp::Unconfined => Ok(Vec::new()),
        Seccomp::Default => default_filters(),
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn default_filters() -> Result<Vec<BpfProgram>, SetupError> {
    Ok(vec![allow_list()?, enosys()])
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn default_filters() -> Result<Vec<BpfProgram>, SetupError> {
    Err(SetupError::msg(
        "the default seccomp profile is not available on this architecture",
    ))
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn allow_list() -> Result<BpfProgram, SetupError> {
    let compile_error =
        |e: seccompiler::BackendError| SetupError::msg(format!("invalid seccomp filter: {e}"));
    let cond = |op, value| {
        SeccompCondition::new(0, SeccompCmpArgLen::Qword, op, value).map_err(compile_error)
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    // Docker's default capabilities include CAP_SYS_CHROOT, which grants chroot in the profile.
    rules.insert(libc::SYS_chroot, Vec::new());
    let personality = PERSONALITIES
        .iter()
        .map(|&p| SeccompRule::new(vec![cond(SeccompCmpOp::Eq, p)?]).map_err(compile_error))
        .collect::<Result<_, _>>()?;
    rules.insert(libc::SYS_personality, personality);
    rules.insert(
        libc::SYS_socket,
        vec![SeccompRule::new(vec![cond(SeccompCmpOp::Ne, AF_VSOCK)?]).map_err(compile_error)?],
    );
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![cond(
            SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
            0,
        )?])
        .map_err(compile_error)?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        ARCH,
    )
    .map_err(compile_error)?;
    BpfProgram::try_from(filter).map_err(compile_error)
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// Highest syscall number in the allow-list; anything above it is unknown to the profile.
fn highest_known() -> u32 {
    let nr = ALLOWED.iter().map(|&(_, nr)| nr).max().unwrap_or(0);
    u32::try_from(nr).expect("syscall numbers fit in u32")
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
/// `ENOSYS` for `clone3` and for syscalls newer than the profile; allows everything else (the
/// allow-list filter decides those).
fn enosys() -> BpfProgram {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const NR_OFFSET: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ARCH_OFFSET: u32 = 4; // offsetof(struct seccomp_data, arch)
    let insn = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    let clone3 = u32::try_from(libc::SYS_clone3).expect("syscall numbers fit in u32");
    let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    vec![
        insn(LD_W_ABS, 0, 0, ARCH_OFFSET),
        insn(JEQ_K, 1, 0, AUDIT_ARCH),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        insn(LD_W_ABS, 0, 0, NR_OFFSET),
        insn(JEQ_K, 2, 0, clone3),
        insn(JGT_K, 1, 0, highest_known()),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        insn(RET_K, 0, 0, enosys),
    ]
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(name: &str) -> bool {
        ALLOWED.iter().any(|&(n, _)| n == name)
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in ALLOWED.windows(2) {
            assert!(pair[0].1 < pair[1].1, "{pair:?}");
        }
        let mut names: Vec<&str> = ALLOWED.iter().map(|&(n, _)| n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALLOWED.len());
    }

    #[test]
    fn numbers_match_libc() {
        let number = |name: &str| ALLOWED.iter().find(|&&(n, _)| n == name).map(|&(_, nr)| nr);
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("write", libc::SYS_write),
            ("openat", libc::SYS_openat),
            ("execve", libc::SYS_execve),
            ("exit_group", libc::SYS_exit_group),
            ("futex", libc::SYS_futex),
            ("rseq", libc::SYS_rseq),
            ("close_range", libc::SYS_close_range),
            ("prctl", libc::SYS_prctl),
            ("capset", libc::SYS_capset),
            ("setresuid", libc::SYS_setresuid),
            ("wait4", libc::SYS_wait4),
            ("statx", libc::SYS_statx),
            ("seccomp", libc::SYS_seccomp),
            ("getrandom", libc::SYS_getrandom),
            ("faccessat2", libc::SYS_faccessat2),
        ] {
            assert_eq!(number(name), Some(nr), "{name}");
        }
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "init_module",
            "finit_module",
            "delete_module",
            "swapon",
            "swapoff",
            "reboot",
            "settimeofday",
            "clock_settime",
            "acct",
            "lookup_dcookie",
            "open_by_handle_at",
            "userfaultfd",
            "quotactl",
            "syslog",
            "fsopen",
            "fsmount",
            "move_mount",
            "open_tree",
            "clone",
            "clone3",
            "personality",
            "socket",
            "chroot",
        ] {
            assert!(!allowed(name), "{name} must not be allowed unconditionally");
        }
    }

    #[test]
    fn filters_compile() {
        assert!(filters(Seccomp::Unconfined).unwrap().is_empty());
        let programs = filters(Seccomp::Default).unwrap();
        assert_eq!(programs.len(), 2);
        // The kernel refuses programs longer than BPF_MAXINSNS.
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() <= 4096));
    }
}
