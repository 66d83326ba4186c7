//! The command process: resolved inside the rootfs ([`Program::prepare`]), stripped of
//! privileges and executed ([`Program::exec`]); and how PID 1 (or the chroot supervisor) waits
//! for it, forwarding signals.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::setup::{die, Context, SetupError};
use crate::sys::{self, SignalSet};
use crate::{Spec, EXIT_SETUP_FAILED};

/// Docker's default capability set (`CapEff`/`CapPrm`/`CapBnd` 00000000a80425fb): chown,
/// dac_override, fowner, fsetid, kill, setgid, setuid, setpcap, net_bind_service, net_raw,
/// sys_chroot, mknod, audit_write, setfcap.
pub(crate) const DEFAULT_CAPS: u64 = 0xa804_25fb;

/// Signals the outside process and PID 1 pass on to the command.
pub(crate) const FORWARDED: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Waits for the next `SIGCHLD` among `signals` (blocked), passing every other one on to `child`.
pub(crate) fn forward_until_sigchld(signals: &SignalSet, child: Pid) -> io::Result<()> {
    loop {
        let sig = signals.wait()?;
        if sig == libc::SIGCHLD {
            return Ok(());
        }
        // The child may have just exited; ESRCH is fine.
        let _ = rustix::process::kill_process(
            child,
            Signal::from_named_raw(sig).expect("forwarded signals are named"),
        );
    }
}

/// Reaps every exited child (orphans come back to a PID 1 or a subreaper); returns the exit code of
/// `child` if it was among them.
pub(crate) fn reap_all(child: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match rustix::process::waitpid(None, WaitOptions::NOHANG) {
            Ok(Some((pid, status))) if pid == child => code = Some(exit_code(status)),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return code,
        }
    }
}

pub(crate) fn exit_code(status: WaitStatus) -> i32 {
    if let Some(code) = status.exit_status() {
        code
    } else if let Some(sig) = status.terminating_signal() {
        128 + sig
    } else {
        EXIT_SETUP_FAILED
    }
}

/// The command, resolved inside the rootfs, ready to run.
pub(crate) struct Program {
    args: Vec<CString>,
    env: Vec<CString>,
    path_dirs: Vec<String>,
    cwd: String,
    identity: crate::user::Identity,
    no_new_privs: bool,
    tty: bool,
    rlimits: Vec<crate::Rlimit>,
    /// Seccomp programs, in installation order (empty when unconfined).
    pub(crate) seccomp: Vec<seccompiler::BpfProgram>,
    /// Capabilities the command keeps when it runs as root.
    pub(crate) caps: u64,
    /// The highest capability number, when already known (read from `/proc` otherwise).
    pub(crate) last_cap: Option<u32>,
    /// Close inherited descriptors with `close_range` (see `kernel::Features::close_range`).
    pub(crate) close_range: bool,
}

fn cstring(s: &str) -> Result<CString, SetupError> {
    CString::new(s).map_err(|_| SetupError::msg(format!("{s:?} contains a NUL byte")))
}

impl Program {
    /// Resolves the user and environment; runs in PID 1 after `pivot_root`.
    pub(crate) fn prepare(spec: &Spec) -> Result<Self, SetupError> {
        let read = |p: &str| match fs_err::read_to_string(p) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).ctx(|| format!("failed to read {p}")),
        };
        let identity =
            crate::user::resolve(&spec.user, &read("/etc/passwd")?, &read("/etc/group")?)
                .map_err(SetupError::msg)?;
        let mut env = spec.env.clone();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", identity.home.as_deref().unwrap_or("/")));
        }
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        Ok(Self {
            args: spec
                .args
                .iter()
                .map(|a| cstring(a))
                .collect::<Result<_, _>>()?,
            path_dirs: path.split(':').map(str::to_owned).collect(),
            env: env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
            cwd: spec.cwd.clone(),
            identity,
            no_new_privs: spec.no_new_privs,
            tty: spec.tty,
            rlimits: spec.limits.rlimits.clone(),
            seccomp: crate::seccomp::filters(spec.seccomp)?,
            caps: match spec.capabilities {
                crate::Capabilities::Default => DEFAULT_CAPS,
                // Bits past the kernel's last capability are skipped when the set is applied.
                crate::Capabilities::All => u64::MAX,
            },
            last_cap: None,
            close_range: true,
        })
    }

    /// Drops privileges and executes the command; runs in the forked command process.
    pub(crate) fn exec(self, original_mask: &SignalSet) -> ! {
        if let Err(e) = self.drop_privileges(original_mask) {
            die(EXIT_SETUP_FAILED, &e);
        }
        let name = self.args[0].to_bytes();
        let candidates: Vec<CString> = if name.contains(&b'/') {
            vec![self.args[0].clone()]
        } else {
            self.path_dirs
                .iter()
                .map(|d| {
                    let dir = if d.is_empty() { "." } else { d.as_str() };
                    let mut p = Path::new(dir)
                        .join(std::ffi::OsStr::from_bytes(name))
                        .into_os_string()
                        .into_vec();
                    p.retain(|&b| b != 0);
                    CString::new(p).expect("NUL bytes removed")
                })
                .collect()
        };
        let mut denied = None;
        for candidate in &candidates {
            let err = sys::execve(candidate, &self.args, &self.env);
            match err.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => {}
                Some(libc::EACCES) => denied = Some(err),
                _ => die(126, &format!("{}: {err}", candidate.to_string_lossy())),
            }
        }
        let shown = self.args[0].to_string_lossy();
        match denied {
            Some(err) => die(126, &format!("{shown}: {err}")),
            None if candidates.len() == 1 && name.contains(&b'/') => {
                die(127, &format!("{shown}: no such file or directory"))
            }
            None => die(127, &format!("{shown}: executable file not found in $PATH")),
        }
    }

    fn drop_privileges(&self, original_mask: &SignalSet) -> Result<(), SetupError> {
        sys::reset_signal_dispositions();
        self.set_rlimits()?;
        if self.tty {
            sys::take_controlling_terminal(0)
                .ctx(|| "failed to make stdin the controlling terminal".into())?;
        }
        original_mask
            .set_mask()
            .ctx(|| "failed to restore the signal mask".into())?;
        let last_cap: u32 = match self.last_cap {
            Some(c) => c,
            None => fs_err::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ctx(|| "failed to read the last capability".into())?
                .trim()
                .parse()
                .map_err(|_| SetupError::msg("unreadable /proc/sys/kernel/cap_last_cap"))?,
        };
        // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it now, while it is
        // still held (as runc does). The filter then also covers the remaining setup syscalls
        // (prctl, setgroups, setres[ug]id, capset, chdir, close_range, execve), which the
        // default profile allows. With no_new_privs, install as late as possible instead.
        if !self.no_new_privs {
            self.install_seccomp()?;
        }
        for cap in 0..=last_cap {
            if cap >= 64 || self.caps & (1 << cap) == 0 {
                sys::drop_bounding_capability(cap)
                    .ctx(|| format!("failed to drop capability {cap} from the bounding set"))?;
            }
        }
        // rustix's set_thread_* calls change only the calling thread; this process has one.
        let id = &self.identity;
        let groups: Vec<_> = id
            .groups
            .iter()
            .map(|&g| rustix::process::Gid::from_raw(g))
            .collect();
        rustix::thread::set_thread_groups(&groups)
            .ctx(|| "failed to set supplementary groups".into())?;
        let gid = rustix::process::Gid::from_raw(id.gid);
        rustix::thread::set_thread_res_gid(gid, gid, gid)
            .ctx(|| format!("failed to set gid {}", id.gid))?;
        let uid = rustix::process::Uid::from_raw(id.uid);
        // For a non-root uid this also clears the permitted and effective sets, as in Docker.
        rustix::thread::set_thread_res_uid(uid, uid, uid)
            .ctx(|| format!("failed to set uid {}", id.uid))?;
        if id.uid == 0 {
            // Only capabilities this process holds (capset refuses others): "all" is all of those.
            let held = rustix::thread::capabilities(None)
                .ctx(|| "failed to read the capabilities".into())?
                .permitted
                .bits();
            let caps = CapabilitySet::from_bits_retain(self.caps & held);
            rustix::thread::set_capabilities(
                None,
                CapabilitySets {
                    effective: caps,
                    permitted: caps,
                    inheritable: CapabilitySet::empty(),
                },
            )
            .ctx(|| "failed to set capabilities".into())?;
        }
        rustix::process::chdir(self.cwd.as_str())
            .ctx(|| format!("failed to change directory to {}", self.cwd))?;
        sys::close_fds_from(3, self.close_range)
            .ctx(|| "failed to close inherited file descriptors".into())?;
        if self.no_new_privs {
            rustix::thread::set_no_new_privs(true).ctx(|| "failed to set no_new_privs".into())?;
            self.install_seccomp()?;
        }
        Ok(())
    }

    /// `--ulimit`: lowering always works; raising a hard limit needs `CAP_SYS_RESOURCE` in the
    /// initial user namespace, which many CI hosts (and this project's) do not grant.
    fn set_rlimits(&self) -> Result<(), SetupError> {
        for l in &self.rlimits {
            let resource = crate::RLIMIT_NAMES
                .iter()
                .find(|(n, _)| *n == l.name)
                .map(|(_, r)| *r)
                .ok_or_else(|| SetupError::msg(format!("unknown ulimit {:?}", l.name)))?;
            let limit = |v: u64| (v != u64::MAX).then_some(v);
            let now = rustix::process::getrlimit(resource);
            let wanted = rustix::process::Rlimit {
                current: limit(l.soft),
                maximum: limit(l.hard),
            };
            if let Err(e) = rustix::process::setrlimit(resource, wanted) {
                let shown =
                    |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
                let raised = match (now.maximum, limit(l.hard)) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(have), Some(want)) => want > have,
                };
                return Err(SetupError::msg(if raised {
                    format!(
                        "ulimit {}: cannot raise the hard limit from {} to {} (raising needs \
                         CAP_SYS_RESOURCE and stays under the kernel's maximum; give a lower limit)",
                        l.name,
                        shown(now.maximum),
                        shown(limit(l.hard))
                    )
                } else {
                    format!("ulimit {}: setrlimit failed: {e}", l.name)
                }));
            }
        }
        Ok(())
    }

    fn install_seccomp(&self) -> Result<(), SetupError> {
        for program in &self.seccomp {
            sys::install_seccomp_filter(program)
                .ctx(|| "failed to install the seccomp filter".into())?;
        }
        Ok(())
    }
}
