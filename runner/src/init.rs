//! The three processes of a sandbox: the outside process, PID 1, and the command.
//!
//! ```text
//! caller ──spawn──▶ outside process (host namespaces; unshares only the pid namespace)
//!                     └─fork─▶ PID 1 (new mount/uts/ipc[/net] namespaces, builds the rootfs)
//!                                └─fork─▶ command (user, capabilities, cwd, execve)
//! ```
//! The outside process stays in the host mount namespace so that, after PID 1 is gone (and
//! with it the overlay mount), it can clean the upper dir of the mountpoints PID 1 reported.

use std::ffi::CString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};
use rustix::thread::{CapabilitySet, CapabilitySets, UnshareFlags};

use crate::rootfs::Created;
use crate::sys::{self, Fork, SignalSet};
use crate::{Error, Spec, EXIT_SETUP_FAILED};

/// Descriptor on which the outside process receives the JSON spec.
const SPEC_FD: i32 = 3;

/// Descriptor on which the outside process acknowledges that it runs the sandbox init.
const ACK_FD: i32 = 4;

/// Docker's default capability set (`CapEff`/`CapPrm`/`CapBnd` 00000000a80425fb): chown,
/// dac_override, fowner, fsetid, kill, setgid, setuid, setpcap, net_bind_service, net_raw,
/// sys_chroot, mknod, audit_write, setfcap.
pub(crate) const DEFAULT_CAPS: u64 = 0xa804_25fb;

/// Signals the outside process and PID 1 pass on to the command.
pub(crate) const FORWARDED: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A sandbox setup failure: what was being done, and why it failed.
#[derive(Debug)]
pub(crate) struct SetupError {
    what: String,
    source: Option<io::Error>,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {e}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl SetupError {
    pub(crate) fn msg(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            source: None,
        }
    }
}

/// Adds "what was being done" to an I/O error.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, SetupError>;
}

impl<T, E: Into<io::Error>> Context<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, SetupError> {
        self.map_err(|e| SetupError {
            what: what(),
            source: Some(e.into()),
        })
    }
}

/// Prints a message in the documented format and exits with `code`.
#[allow(clippy::print_stderr)] // stderr is how the sandbox reports to the caller
pub(crate) fn die(code: i32, msg: &dyn fmt::Display) -> ! {
    eprintln!("rbuild-runner: {msg}");
    std::process::exit(code)
}

pub(crate) fn spawn(
    spec: &Spec,
    exe: &Path,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Child, Error> {
    let json = serde_json::to_vec(spec).map_err(Error::Encode)?;
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::Pipe(e.into()))?;
    let (ack_reader, ack_writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::Pipe(e.into()))?;
    let mut cmd = Command::new(exe);
    cmd.arg(crate::INIT_ARG)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    sys::inherit_fds_as(
        &mut cmd,
        &[
            (reader.as_raw_fd(), SPEC_FD),
            (ack_writer.as_raw_fd(), ACK_FD),
        ],
    );
    sys::kill_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        exe: exe.to_owned(),
        source,
    })?;
    drop(reader);
    drop(ack_writer);
    let fail = |child: &mut Child, error: Error| {
        // The process is useless now; reaping it avoids a zombie and its status adds nothing.
        let _ = child.kill();
        let _ = child.wait();
        Err(error)
    };
    // Without the acknowledgement, `exe` is not a binary whose main() calls
    // `init_if_requested` (a libtest binary would silently run no test and exit 0).
    let mut ack = [0u8; 1];
    match std::fs::File::from(ack_reader).read(&mut ack) {
        Ok(1) => {}
        Ok(_) => {
            return fail(
                &mut child,
                Error::NotInit {
                    exe: exe.to_owned(),
                },
            );
        }
        Err(e) => return fail(&mut child, Error::SendSpec(e)),
    }
    if let Err(e) = std::fs::File::from(writer).write_all(&json) {
        return fail(&mut child, Error::SendSpec(e));
    }
    Ok(child)
}

/// Entry point of the re-executed process; never returns.
pub(crate) fn main() -> ! {
    match outside() {
        Ok(code) => std::process::exit(code),
        Err(e) => die(EXIT_SETUP_FAILED, &e),
    }
}

fn read_spec() -> Result<Spec, SetupError> {
    if let Some(ack) = sys::take_inherited_fd(ACK_FD) {
        // If the caller is gone, reading the spec fails next and says so.
        let _ = std::fs::File::from(ack).write_all(b"+");
    }
    let fd = sys::take_inherited_fd(SPEC_FD).ok_or_else(|| {
        SetupError::msg("no spec pipe on fd 3 (start the sandbox with runner::spawn)")
    })?;
    let mut json = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut json)
        .ctx(|| "failed to read the spec".into())?;
    serde_json::from_slice(&json).map_err(|e| SetupError::msg(format!("invalid spec: {e}")))
}

fn validate(spec: &Spec) -> Result<(), SetupError> {
    if spec.args.is_empty() {
        return Err(SetupError::msg("empty command"));
    }
    if !spec.cwd.starts_with('/') {
        return Err(SetupError::msg(format!(
            "working directory {:?} is not absolute",
            spec.cwd
        )));
    }
    Ok(())
}

/// The outside process: pid namespace, PID 1, signal forwarding, upper dir cleanup.
fn outside() -> Result<i32, SetupError> {
    let spec = read_spec()?;
    validate(&spec)?;
    if spec.isolation == crate::Isolation::Chroot {
        return crate::chroot::run(&spec);
    }
    let mut waited: Vec<i32> = FORWARDED.to_vec();
    waited.push(libc::SIGCHLD);
    let signals = SignalSet::new(&waited);
    // Blocked before the fork so PID 1 inherits the mask and no signal is lost in between.
    let original_mask = signals.block().ctx(|| "failed to block signals".into())?;
    let (report_r, report_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .ctx(|| "failed to create the report pipe".into())?;
    sys::unshare(UnshareFlags::NEWPID).map_err(|e| unshare_error(e, "a pid namespace"))?;
    let pid1 = match sys::fork().ctx(|| "failed to fork the sandbox init".into())? {
        Fork::Child => {
            drop(report_r);
            std::process::exit(pid1_main(&spec, report_w, original_mask));
        }
        Fork::Parent(pid) => pid,
    };
    drop(report_w);
    let mut report = Vec::new();
    // A short read only means PID 1 died mid-setup; clean what it managed to report.
    let _ = std::fs::File::from(report_r).read_to_end(&mut report);
    let created: Vec<Created> = report
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let status = wait_forwarding(&signals, pid1)?;
    crate::cleanup::clean_upper(&spec.upper, &spec.lowers, &created);
    Ok(status)
}

/// The setup error for a failed `unshare`: without `CAP_SYS_ADMIN` (a locked-down pod) it
/// says what to use instead.
pub(crate) fn unshare_error(e: io::Error, what: &str) -> SetupError {
    if e.raw_os_error() == Some(libc::EPERM) {
        SetupError::msg(
            "cannot create namespaces (Operation not permitted): this environment does not \
             allow them; run with --isolation=chroot",
        )
    } else {
        SetupError {
            what: format!("failed to create {what}"),
            source: Some(e),
        }
    }
}

/// Waits for `child`, forwarding the signals in [`FORWARDED`] to it; returns its exit code.
fn wait_forwarding(signals: &SignalSet, child: Pid) -> Result<i32, SetupError> {
    loop {
        forward_until_sigchld(signals, child).ctx(|| "failed to wait for signals".into())?;
        match rustix::process::waitpid(Some(child), WaitOptions::NOHANG) {
            Ok(Some((_, status))) => return Ok(exit_code(status)),
            Ok(None) => {}
            Err(e) => return Err(e).ctx(|| "failed to wait for the sandbox init".into()),
        }
    }
}

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

/// PID 1 of the sandbox; returns its exit code.
fn pid1_main(spec: &Spec, report: OwnedFd, original_mask: SignalSet) -> i32 {
    // Killing the outside process must take the whole sandbox down. The outside process is
    // single-threaded, so "parent thread exits" means "outside process exits".
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        die(
            EXIT_SETUP_FAILED,
            &format!("failed to set the parent death signal: {e}"),
        );
    }
    let mut created = Vec::new();
    let prepared = crate::rootfs::prepare(spec, &mut created);
    let mut report = std::fs::File::from(report);
    for c in &created {
        let mut line = serde_json::to_vec(c).expect("paths serialize");
        line.push(b'\n');
        // Losing the report only leaves mountpoints in the upper dir; not worth failing.
        let _ = report.write_all(&line);
    }
    drop(report);
    let command = match prepared.and_then(|()| Program::prepare(spec)) {
        Ok(c) => c,
        Err(e) => die(EXIT_SETUP_FAILED, &e),
    };
    let child = match sys::fork() {
        Ok(Fork::Child) => command.exec(&original_mask),
        Ok(Fork::Parent(pid)) => pid,
        Err(e) => die(
            EXIT_SETUP_FAILED,
            &format!("failed to fork the command: {e}"),
        ),
    };
    let mut waited: Vec<i32> = FORWARDED.to_vec();
    waited.push(libc::SIGCHLD);
    let signals = SignalSet::new(&waited);
    loop {
        if let Err(e) = forward_until_sigchld(&signals, child) {
            die(
                EXIT_SETUP_FAILED,
                &format!("failed to wait for signals: {e}"),
            );
        }
        if let Some(code) = reap_all(child) {
            return code;
        }
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
    /// Seccomp programs, in installation order (empty when unconfined).
    pub(crate) seccomp: Vec<seccompiler::BpfProgram>,
    /// Capabilities the command keeps when it runs as root.
    pub(crate) caps: u64,
    /// The highest capability number, when already known (read from `/proc` otherwise).
    pub(crate) last_cap: Option<u32>,
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
            seccomp: crate::seccomp::filters(spec.seccomp)?,
            caps: DEFAULT_CAPS,
            last_cap: None,
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
            let caps = CapabilitySet::from_bits_retain(self.caps);
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
        sys::close_fds_from(3).ctx(|| "failed to close inherited file descriptors".into())?;
        if self.no_new_privs {
            rustix::thread::set_no_new_privs(true).ctx(|| "failed to set no_new_privs".into())?;
            self.install_seccomp()?;
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
