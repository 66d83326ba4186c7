//! runner: runs one command in a sandbox made of Linux namespaces and an overlayfs rootfs.
//!
//! A [`Spec`] names the overlay lower dirs (the image snapshot), an upper dir that receives the
//! command's changes (after the run it *is* the layer diff), the command, its user, environment,
//! working directory and extra mounts. [`spawn`] re-executes the host binary with [`INIT_ARG`];
//! that process (the "outside" process) creates a pid namespace and forks the sandbox's PID 1,
//! which builds the rootfs (new mount, ipc and uts namespaces, plus a network namespace with only
//! `lo` for [`Network::None`]), pivots into it and runs the command with Docker's default
//! capability set and seccomp profile ([`Seccomp`]). When the command ends the outside process
//! removes from the upper dir every mountpoint the runner had to create (`/etc/hosts`, `/proc`,
//! …) so they do not pollute the layer, and exits with the command's status.
//!
//! Kernels: Linux 5.10 and newer. What the sandbox uses that is newer than 5.10 (`lowerdir+`,
//! `mount_setattr`, …) is probed once per process ([`probe`], [`Features`]) before the first
//! sandbox starts, and each missing feature has a fallback that keeps the behaviour.
//!
//! Rootless mode: [`enter_rootless`] moves an unprivileged caller into a user namespace (with its
//! subordinate ids mapped by `newuidmap`/`newgidmap`) where everything above works as root.
//!
//! Deliberately not here: cgroups/resource limits, image formats. This crate
//! depends on no other rbuild crate and is the only one with `unsafe`
//! (all of it in `sys/linux.rs`).
//!
//! # Exit status of the spawned process
//!
//! * the command's exit code when it exits normally;
//! * `128 + signal` when the command is killed by a signal;
//! * `125` when the sandbox could not be set up (bad spec, mount failure, unknown user, …), with a
//!   message on stderr starting with `rbuild-runner: `;
//! * `127` (command not found) or `126` (not executable), also with an `rbuild-runner: ` message.
//!
//! A command that itself exits with 125 cannot be told apart from a setup failure (as in Docker).
//!
//! # Example
//!
//! ```no_run
//! // First statement of the host binary's main(): in the re-executed sandbox process this
//! // runs the init and never returns.
//! runner::init_if_requested();
//!
//! let spec = runner::Spec {
//!     lowers: vec!["/snapshots/base".into()],
//!     upper: "/tmp/run/upper".into(),
//!     work: "/tmp/run/work".into(),
//!     args: vec!["sh".into(), "-c".into(), "echo hi".into()],
//!     env: vec!["PATH=/usr/bin:/bin".into()],
//!     cwd: "/".into(),
//!     user: String::new(),
//!     hostname: "rbuild".into(),
//!     network: runner::Network::None,
//!     mounts: vec![],
//!     readonly_rootfs: false,
//!     no_new_privs: false,
//!     seccomp: runner::Seccomp::Default,
//!     tty: false,
//!     isolation: runner::Isolation::Namespaces,
//!     extra_hosts: vec![],
//!     limits: runner::Limits::default(),
//!     capabilities: runner::Capabilities::Default,
//!     devices: vec![],
//! };
//! let exe = std::env::current_exe().unwrap();
//! let io = std::process::Stdio::inherit;
//! let status = runner::spawn(&spec, &exe, io(), io(), io()).unwrap().wait().unwrap();
//! assert!(status.success());
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
pub mod binfmt;
#[cfg(target_os = "linux")]
mod cgroup;
#[cfg(target_os = "linux")]
mod chroot;
#[cfg(target_os = "linux")]
mod cleanup;
#[cfg(target_os = "linux")]
mod command;

mod fuse;
#[cfg(target_os = "linux")]
mod init;
#[cfg(target_os = "linux")]
mod kernel;
#[cfg(target_os = "linux")]
mod overlay;
#[cfg(target_os = "linux")]
mod rootfs;
#[cfg(target_os = "linux")]
mod seccomp;
#[cfg(target_os = "linux")]
mod setup;
mod sys;
mod user;
#[cfg(target_os = "linux")]
mod userns;

#[cfg(target_os = "linux")]
pub use kernel::{probe, FeatureReport, Features, FALLBACKS, FALLBACKS_ENV};
#[cfg(target_os = "linux")]
pub use userns::{enter_rootless, id_map, subordinate_ranges, Caller, IdRange, RootlessError};

/// Whether this process runs in a user namespace other than the initial one (rootless mode, see
/// [`enter_rootless`]): its `/proc/self/uid_map` is not the identity map of all ids. Overlay mounts
/// then use `userxattr`, and `/sys` is bound from the host when no network namespace is created.
pub fn in_user_namespace() -> bool {
    static IN_USERNS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *IN_USERNS.get_or_init(|| match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    })
}

/// Argument that makes [`init_if_requested`] run the sandbox init instead of returning.
pub const INIT_ARG: &str = "__rbuild-runner-init";

/// Exit status of the spawned process when the sandbox could not be set up.
pub const EXIT_SETUP_FAILED: i32 = 125;

/// Everything needed to run one command in a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// Overlay lower dirs, base (bottom) layer first. May be empty (`FROM scratch`).
    pub lowers: Vec<PathBuf>,
    /// Overlay upper dir; exists. After the run it holds the command's changes.
    pub upper: PathBuf,
    /// Scratch dir on the same filesystem as `upper`; exists. The runner creates `ovl/` (the
    /// overlay work dir), `rootfs/` (the mountpoint) and a few generated files in it; the caller
    /// deletes it after the run.
    pub work: PathBuf,
    /// argv; `args[0]` is looked up in `PATH` (from `env`) when it contains no `/`.
    pub args: Vec<String>,
    /// Environment, `KEY=value`. `HOME` is added from `/etc/passwd` when missing.
    pub env: Vec<String>,
    /// Absolute working directory; created (root, 0755) if missing, and kept in the upper dir.
    pub cwd: String,
    /// `""` (root), `uid`, `uid:gid`, `name` or `name:group`, resolved in the container's
    /// `/etc/passwd` and `/etc/group`.
    pub user: String,
    /// Hostname inside the sandbox (`"rbuild"` when empty).
    pub hostname: String,
    /// Network namespace choice.
    pub network: Network,
    /// Extra mounts, applied in order after `/proc`, `/dev`, `/sys` and `/etc/hosts`.
    pub mounts: Vec<MountSpec>,
    /// Mount the rootfs read-only (`false` for builds).
    pub readonly_rootfs: bool,
    /// Set `no_new_privs` before executing the command, so setuid/setgid bits and file
    /// capabilities grant nothing (Docker's `--security-opt no-new-privileges`).
    #[serde(default)]
    pub no_new_privs: bool,
    /// System call filter of the command.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// The command's stdin is a terminal (the slave side of a pty): run it in a new session
    /// with that terminal as its controlling terminal, as `docker run -t` does.
    #[serde(default)]
    pub tty: bool,
    /// How the command is isolated from the host.
    #[serde(default)]
    pub isolation: Isolation,
    /// Extra `/etc/hosts` entries, `(name, address)` (`--add-host`).
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// `/dev/shm` size and resource limits of the command.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities of the command when it runs as root.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Host device nodes given to the command (`RUN --device`, through CDI): bound at their path
    /// inside, the only binds that keep device access (every other bind and `/dev` are `nodev`).
    /// Namespace isolation only.
    #[serde(default)]
    pub devices: Vec<DeviceNode>,
}

/// A host device node bound into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNode {
    /// The node on the host (a character or block device).
    pub host: PathBuf,
    /// Absolute path inside the sandbox.
    pub path: String,
}

/// The capability set of a command run as root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Capabilities {
    /// Docker's default set (CapEff `00000000a80425fb`).
    #[default]
    Default,
    /// Every capability the caller holds (BuildKit's `RUN --security=insecure`; pair it with
    /// [`Seccomp::Unconfined`]). Namespace isolation only: chroot mode keeps its set.
    All,
}

/// Resource limits of the command (`--shm-size`, `--ulimit`, and the cgroup limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Size of the `/dev/shm` tmpfs in bytes; 0 is Docker's 64 MiB. Namespace isolation only (in
    /// chroot mode `/dev/shm` is a directory of the rootfs).
    pub shm_size: u64,
    /// Set with `setrlimit(2)` before the command starts, in order.
    pub rlimits: Vec<Rlimit>,
    /// Memory, CPU and process limits of the whole sandbox, through a cgroup of its own.
    pub cgroup: CgroupLimits,
}

/// The cgroup limits of a sandbox; all `None` creates no cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupLimits {
    /// Parent cgroup, relative to each hierarchy's root (`ci/builds`); created if missing.
    /// `None`: the cgroup the sandbox's caller is in.
    pub parent: Option<String>,
    /// Memory limit in bytes (the OOM killer ends the command beyond it).
    pub memory: Option<u64>,
    /// CPU time in microseconds the sandbox may use per `cpu_period`.
    pub cpu_quota: Option<u64>,
    /// The CPU accounting period in microseconds (default 100000).
    pub cpu_period: Option<u64>,
    /// Maximum number of processes (and threads).
    pub pids: Option<u64>,
    /// Memory plus swap in bytes (docker's `--memory-swap`, at least `memory`); `-1`: unlimited
    /// swap. `None`: no swap beyond `memory`.
    #[serde(default)]
    pub memory_swap: Option<i64>,
    /// Relative CPU weight (docker's `--cpu-shares`, 2..=262144, 1024 the default); `cpu.weight`
    /// on cgroup v2, converted as runc does.
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// CPUs the sandbox may run on (docker's `--cpuset-cpus`, e.g. `0-1,3`).
    #[serde(default)]
    pub cpuset_cpus: Option<String>,
}

impl CgroupLimits {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.cpu_quota.is_none()
            && self.pids.is_none()
            && self.cpu_shares.is_none()
            && self.cpuset_cpus.is_none()
    }
}

/// One resource limit (`--ulimit TYPE=SOFT[:HARD]`); `u64::MAX` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Docker's name of the limit: `nofile`, `nproc`, `core`, `stack`, `memlock`, …
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// The `--ulimit` names Docker accepts, with the resource each sets.
#[cfg(target_os = "linux")]
pub(crate) const RLIMIT_NAMES: &[(&str, rustix::process::Resource)] = {
    use rustix::process::Resource as R;
    &[
        ("core", R::Core),
        ("cpu", R::Cpu),
        ("data", R::Data),
        ("fsize", R::Fsize),
        ("locks", R::Locks),
        ("memlock", R::Memlock),
        ("msgqueue", R::Msgqueue),
        ("nice", R::Nice),
        ("nofile", R::Nofile),
        ("nproc", R::Nproc),
        ("rss", R::Rss),
        ("rtprio", R::Rtprio),
        ("rttime", R::Rttime),
        ("sigpending", R::Sigpending),
        ("stack", R::Stack),
        ("as", R::As),
    ]
};

impl Rlimit {
    /// Parses Docker's `TYPE=SOFT[:HARD]` (`-1` or `unlimited`: no limit; HARD defaults to SOFT).
    pub fn parse(s: &str) -> Result<Self, String> {
        const NAMES: &[&str] = &[
            "core",
            "cpu",
            "data",
            "fsize",
            "locks",
            "memlock",
            "msgqueue",
            "nice",
            "nofile",
            "nproc",
            "rss",
            "rtprio",
            "rttime",
            "sigpending",
            "stack",
            "as",
        ];
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| format!("invalid ulimit {s:?}: expected TYPE=SOFT[:HARD]"))?;
        if !NAMES.contains(&name) {
            return Err(format!(
                "invalid ulimit type {name:?}: one of {}",
                NAMES.join(", ")
            ));
        }
        let value = |v: &str| match v {
            "-1" | "unlimited" => Ok(u64::MAX),
            v => v
                .parse::<u64>()
                .map_err(|_| format!("invalid ulimit {s:?}: {v:?} is not a number")),
        };
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (value(soft)?, value(hard)?),
            None => (value(values)?, value(values)?),
        };
        if soft > hard {
            return Err(format!(
                "invalid ulimit {s:?}: the soft limit is above the hard limit"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            soft,
            hard,
        })
    }
}

/// How the sandbox isolates the command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// Namespaces and an overlay rootfs (needs `CAP_SYS_ADMIN`; this crate's documentation).
    #[default]
    Namespaces,
    /// For environments that refuse namespaces and mounts (a Kubernetes pod with Docker's
    /// default capabilities): the merged lower dirs are copied to `work/rootfs`, the command
    /// runs there after `chroot(2)` (with Docker's capabilities minus `CAP_SYS_CHROOT`), and
    /// its changes are diffed into the upper dir afterwards. Mounts become copies (read-write
    /// binds are copied back), `/dev` holds device nodes made with `mknod`, `/proc` and `/sys`
    /// are the image's directories. No pid, network, ipc or uts isolation:
    /// [`Network::None`] fails, the hostname is the host's. See docs/ISOLATION.md.
    Chroot,
}

/// System call filter applied to the command (never to the runner's own setup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    /// Docker's default profile, for a process with Docker's default capabilities: about 350
    /// syscalls allowed, namespace creation (`unshare`, `clone` with namespace flags, `setns`),
    /// mounts, keyrings, `bpf`, `perf_event_open`, module loading, `reboot`, clock setting and
    /// the like fail with `EPERM`. Supported on x86_64 and aarch64; elsewhere the sandbox setup
    /// fails. The command shows `Seccomp: 2` in `/proc/self/status`.
    #[default]
    Default,
    /// No filter (Docker's `--security-opt seccomp=unconfined`).
    Unconfined,
}

/// Network namespace of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace.
    Host,
    /// A new network namespace with only the loopback interface, up.
    None,
}

/// An extra mount inside the sandbox; its target is created in the rootfs if missing (and
/// removed from the upper dir afterwards).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSpec {
    /// Recursive bind mount of a host path (file or directory).
    Bind {
        source: PathBuf,
        target: String,
        readonly: bool,
    },
    /// A fresh tmpfs; `size` in bytes, 0 for the kernel default (half of RAM).
    Tmpfs { target: String, size: u64 },
    /// An overlay of `lowers` (base first, may be empty), of which the directory or file at
    /// `source` is mounted at `target`. `source` is resolved inside the overlay (symlinks
    /// cannot leave it). Read-only when `scratch` is `None`; otherwise writes go to an upper
    /// dir made inside `scratch` (an existing directory on a filesystem that can hold an
    /// overlay upper dir), which the caller discards afterwards.
    Overlay {
        lowers: Vec<PathBuf>,
        source: String,
        target: String,
        scratch: Option<PathBuf>,
    },
    /// A read-only file holding `content`, on a tmpfs private to the sandbox (never on disk),
    /// with the given permission bits and owner. Meant for build secrets.
    File {
        content: SecretBytes,
        target: String,
        mode: u32,
        uid: u32,
        gid: u32,
    },
}

/// Bytes that must not be shown: `Debug` prints only their length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretBytes(pub Vec<u8>);

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

/// Error starting the sandbox process. Failures inside the sandbox are reported through the
/// child's exit status instead (see the crate docs).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to encode the sandbox spec")]
    Encode(#[source] serde_json::Error),
    #[error("failed to create the pipe for the sandbox spec")]
    Pipe(#[source] std::io::Error),
    #[error("failed to start the sandbox process {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{exe} did not start the sandbox init: its main() must call runner::init_if_requested() first")]
    NotInit { exe: PathBuf },
    #[error("failed to send the spec to the sandbox process")]
    SendSpec(#[source] std::io::Error),
    #[error("the kernel probe {exe} gave no answer: {detail}")]
    Probe { exe: PathBuf, detail: String },
    #[error("sandboxes are only supported on linux")]
    Unsupported,
}

/// Runs the sandbox init if this process was started by [`spawn`]; otherwise returns at once.
///
/// Must be the first thing the host binary's `main()` does, before any thread is started: the
/// init forks, which is only sound in a single-threaded process. When `argv[1]` is [`INIT_ARG`]
/// this never returns.
pub fn init_if_requested() {
    #[cfg(target_os = "linux")]
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == kernel::PROBE_ARG)
    {
        kernel::main();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == INIT_ARG) {
        #[cfg(target_os = "linux")]
        init::main();
        #[cfg(not(target_os = "linux"))]
        std::process::exit(EXIT_SETUP_FAILED);
    }
}

/// Starts the sandbox by re-executing `exe` (normally `std::env::current_exe()`) with
/// [`INIT_ARG`].
///
/// Blocks until the new process acknowledges that it runs the init (one `execve`, a few ms);
/// fails with [`Error::NotInit`] if `exe` does not call [`init_if_requested`].
/// The spec travels over a pipe (never argv or env, so it may carry secrets). The given stdio
/// is what the command gets. Wait on the returned child for the exit status described in the
/// crate docs; killing it (even with SIGKILL) kills every process of the sandbox, but then the
/// upper dir is not cleaned of mountpoints and should be discarded.
pub fn spawn(
    spec: &Spec,
    exe: &Path,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Child, Error> {
    #[cfg(target_os = "linux")]
    {
        init::spawn(spec, exe, stdin, stdout, stderr)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (spec, exe, stdin, stdout, stderr); // unused off linux
        Err(Error::Unsupported)
    }
}

/// Opens a new pseudo-terminal pair: `(master, slave)`, both close-on-exec.
///
/// Give the slave as the command's stdio with [`Spec::tty`] set; relay the master.
pub fn open_pty() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    #[cfg(target_os = "linux")]
    {
        sys::open_pty()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}
