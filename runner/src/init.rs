//! The three processes of a sandbox: the outside process, PID 1, and the command.
//!
//! ```text
//! caller ──spawn──▶ outside process (host namespaces; unshares only the pid namespace)
//!                     └─fork─▶ PID 1 (new mount/uts/ipc[/net] namespaces, builds the rootfs)
//!                                └─fork─▶ command (user, capabilities, cwd, execve)
//! ```
//! The outside process stays in the host mount namespace so that, after PID 1 is gone (and
//! with it the overlay mount), it can clean the upper dir of the mountpoints PID 1 reported.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rustix::process::{Pid, Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use crate::command::{exit_code, forward_until_sigchld, reap_all, Program, FORWARDED};
use crate::kernel::Features;
use crate::rootfs::Created;
use crate::setup::{die, unshare_error, Context, SetupError};
use crate::sys::{self, Fork, SignalSet};
use crate::{Error, Spec, EXIT_SETUP_FAILED};

/// Descriptor on which the outside process receives the JSON spec.
const SPEC_FD: i32 = 3;

/// Descriptor on which the outside process acknowledges that it runs the sandbox init.
const ACK_FD: i32 = 4;

pub(crate) fn spawn(
    spec: &Spec,
    exe: &Path,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<Child, Error> {
    // Probed once per process, in the caller, where a fallback can be logged (`-vv`).
    let features = (spec.isolation == crate::Isolation::Namespaces)
        .then(|| crate::kernel::cached(exe, &spec.work));
    let json = serde_json::to_vec(&LaunchRef { spec, features }).map_err(Error::Encode)?;
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

/// What the caller sends the outside process: the spec, and the kernel's features (`None` for
/// chroot isolation, which does not use them).
#[derive(serde::Serialize)]
struct LaunchRef<'a> {
    spec: &'a Spec,
    features: Option<Features>,
}

/// [`LaunchRef`], received.
#[derive(serde::Deserialize)]
struct Launch {
    spec: Spec,
    features: Option<Features>,
}

fn read_spec() -> Result<Launch, SetupError> {
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
    if !spec.devices.is_empty() && spec.isolation == crate::Isolation::Chroot {
        return Err(SetupError::msg(
            "devices (RUN --device) need namespace isolation, not chroot",
        ));
    }
    if let Some(d) = spec.devices.iter().find(|d| !d.path.starts_with('/')) {
        return Err(SetupError::msg(format!(
            "device path {:?} is not absolute",
            d.path
        )));
    }
    Ok(())
}

/// The outside process: pid namespace, PID 1, signal forwarding, upper dir cleanup.
fn outside() -> Result<i32, SetupError> {
    let Launch { spec, features } = read_spec()?;
    let features = features.unwrap_or_else(Features::newest);
    validate(&spec)?;
    let cgroup = crate::cgroup::Cgroup::create(&spec.limits.cgroup)?;
    if features.uses_fuse() && spec.isolation != crate::Isolation::Chroot {
        // fuse-overlayfs's mounts and daemons live in a namespace of this process, which goes
        // with it (see rootfs::prepare).
        sys::unshare(UnshareFlags::NEWNS).map_err(|e| unshare_error(e, "a mount namespace"))?;
        crate::rootfs::private_mounts()?;
    }
    let status = if spec.isolation == crate::Isolation::Chroot {
        crate::chroot::run(&spec)
    } else {
        let shown = cgroup
            .as_ref()
            .map(crate::cgroup::Cgroup::sandbox_mounts)
            .unwrap_or_default();
        sandbox(&spec, &features, &shown)
    };
    if cgroup.is_some_and(crate::cgroup::Cgroup::finish) {
        let limit = spec.limits.cgroup.memory.unwrap_or_default();
        crate::setup::report(&format!(
            "out of memory: the command was killed for using more than the memory limit of \
             {limit} bytes ({} MiB, --memory)",
            limit >> 20
        ));
    }
    status
}

/// PID 1 in new namespaces, with the command under it; returns the exit code.
fn sandbox(
    spec: &Spec,
    features: &Features,
    cgroups: &[(String, std::path::PathBuf)],
) -> Result<i32, SetupError> {
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
            std::process::exit(pid1_main(spec, features, cgroups, report_w, original_mask));
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
    if features.overlay.is_err() && features.fuse_overlayfs.is_some() {
        // Only in a user namespace, where snapshots mark opaque dirs with `user.overlay.opaque`.
        crate::fuse::normalize(&spec.upper, &spec.lowers, "user.overlay.opaque")?;
    }
    crate::cleanup::clean_upper(&spec.upper, &spec.lowers, &created);
    Ok(status)
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

/// PID 1 of the sandbox; returns its exit code.
fn pid1_main(
    spec: &Spec,
    features: &Features,
    cgroups: &[(String, std::path::PathBuf)],
    report: OwnedFd,
    original_mask: SignalSet,
) -> i32 {
    // Killing the outside process must take the whole sandbox down. The outside process is
    // single-threaded, so "parent thread exits" means "outside process exits".
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        die(
            EXIT_SETUP_FAILED,
            &format!("failed to set the parent death signal: {e}"),
        );
    }
    let mut created = Vec::new();
    let prepared = crate::rootfs::prepare(spec, features, cgroups, &mut created);
    let mut report = std::fs::File::from(report);
    for c in &created {
        let mut line = serde_json::to_vec(c).expect("paths serialize");
        line.push(b'\n');
        // Losing the report only leaves mountpoints in the upper dir; not worth failing.
        let _ = report.write_all(&line);
    }
    drop(report);
    let command = match prepared.and_then(|()| Program::prepare(spec)) {
        Ok(mut c) => {
            c.close_range = features.close_range;
            c
        }
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
