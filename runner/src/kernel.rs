//! Probing the kernel for the features the sandbox uses that are newer than Linux 5.10 (the
//! oldest kernel rbuild supports), so that each one gets its fallback on older kernels.
//!
//! Every decision comes from trying the feature, never from the version string: distribution
//! kernels backport features, and a module may be missing on a new kernel. The probe runs in a
//! process of its own (the host binary re-executed with [`PROBE_ARG`]), because it needs a
//! private mount namespace, which a multi-threaded caller cannot enter. [`crate::spawn`] probes
//! once per process, before the first sandbox, and hands the result to every sandbox it starts.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{FsOpenFlags, MountPropagationFlags, OpenTreeFlags, UnmountFlags};
use rustix::thread::UnshareFlags;
use serde::{Deserialize, Serialize};

use crate::sys;

/// Argument that makes [`crate::init_if_requested`] run the probe (the next argument is the
/// scratch directory) and print [`Features`] as JSON on stdout.
pub(crate) const PROBE_ARG: &str = "__rbuild-runner-probe";

/// What the kernel offers the sandbox, as found by [`probe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::struct_excessive_bools)] // one flag per probed kernel feature
pub struct Features {
    /// The new mount API (`fsopen`, `fsmount`, `move_mount`, `open_tree`; Linux 5.2). Without
    /// it the default isolation cannot work (below rbuild's floor): only chroot isolation.
    pub mount_api: bool,
    /// `fsconfig(fd, "lowerdir+", dir)` (Linux 6.8): lower dirs given one by one, any number.
    /// Otherwise the classic `lowerdir=a:b:c` option of mount(2), limited to one page, with
    /// short relative names (see `overlay::Classic`).
    pub lowerdir_append: bool,
    /// Whether an overlay (with the options the sandbox uses) can be mounted here at all, and
    /// the kernel's error when not (no overlay module; in a user namespace before Linux 5.11).
    pub overlay: Result<(), String>,
    /// The overlay `volatile` option (Linux 5.10): no syncfs of the upper dir's file system at
    /// unmount. Without it the unmount syncs, slower but the same result.
    pub overlay_volatile: bool,
    /// `mount_setattr` (Linux 5.12), to make detached bind mounts read-only before attaching
    /// them. Otherwise they are remounted read-only (`MS_REMOUNT|MS_BIND|MS_RDONLY`) once
    /// attached.
    pub mount_setattr: bool,
    /// `close_range` (Linux 5.9). Otherwise the command's inherited descriptors are closed one
    /// by one from `/proc/self/fd`.
    pub close_range: bool,
    /// Whether the default seccomp filter loads (numbers the kernel does not know are only
    /// compared, so this holds on any kernel with seccomp filters), or the error.
    pub seccomp: Result<(), String>,
    /// The probe ran in a user namespace (rootless mode): overlay needs `userxattr` (Linux 5.11).
    /// Rootless builds on older kernels use `fuse-overlayfs` when it is there.
    pub user_namespace: bool,
    /// Where kernel overlay cannot be mounted in the user namespace (rootless before Linux 5.11):
    /// `fuse-overlayfs`, when it is installed and `/dev/fuse` is usable (see the `fuse` module).
    #[serde(default)]
    pub fuse_overlayfs: Option<PathBuf>,
}

/// One probed feature, for display: what it is and which code path it selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeatureReport {
    /// Short name (`lowerdir+`, `mount_setattr`, …).
    pub name: &'static str,
    /// Whether the kernel has it.
    pub available: bool,
    /// The code path it selects.
    pub path: String,
}

impl Features {
    /// Whether the default isolation (namespaces with an overlay rootfs) works here, and a line
    /// saying why or why not.
    pub fn isolation(&self) -> (bool, String) {
        if !self.mount_api {
            return (
                false,
                "Linux 5.2 or newer is needed (rbuild supports 5.10 and newer)".into(),
            );
        }
        match (&self.overlay, &self.fuse_overlayfs) {
            (Ok(()), _) => (true, "namespaces and an overlay rootfs".into()),
            (Err(_), Some(bin)) => (
                true,
                format!("namespaces and a fuse-overlayfs rootfs ({})", bin.display()),
            ),
            (Err(e), None) => (false, format!("overlay cannot be mounted here: {e}")),
        }
    }

    /// What to do about each feature missing here that RUN steps need; empty when nothing is.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let (usable, detail) = self.isolation();
        if !usable {
            out.push(if self.user_namespace {
                "RUN steps fail: this kernel has no overlay in a user namespace, which rootless \
                 builds need (Linux 5.11 or newer): install fuse-overlayfs (with /dev/fuse usable), \
                 or run rbuild as root"
                    .to_owned()
            } else {
                format!(
                    "RUN steps fail ({detail}): load the overlay module (modprobe overlay), keep \
                     the store on ext4, xfs or btrfs, or use --isolation=chroot"
                )
            });
        }
        if let Err(e) = &self.seccomp {
            out.push(format!(
                "the default seccomp profile does not load ({e}): RUN steps fail"
            ));
        }
        out
    }

    /// What a kernel with everything the sandbox can use offers; the assumption when no probe ran.
    pub(crate) fn newest() -> Self {
        Self {
            mount_api: true,
            lowerdir_append: true,
            overlay: Ok(()),
            overlay_volatile: true,
            mount_setattr: true,
            close_range: true,
            seccomp: Ok(()),
            user_namespace: crate::in_user_namespace(),
            fuse_overlayfs: None,
        }
    }

    /// Whether sandboxes mount their overlays with fuse-overlayfs (kernel overlay unusable here).
    pub(crate) fn uses_fuse(&self) -> bool {
        self.overlay.is_err() && self.fuse_overlayfs.is_some()
    }

    /// Each probed feature with the code path it selects, for `-vv` logs and `rbuild info`.
    pub fn report(&self) -> Vec<FeatureReport> {
        let f = |name, available, yes: &str, no: &str| FeatureReport {
            name,
            available,
            path: if available { yes } else { no }.to_owned(),
        };
        let mut out = vec![
            f(
                "mount API",
                self.mount_api,
                "fsopen/fsmount/open_tree/move_mount",
                "missing (Linux < 5.2): only --isolation=chroot works",
            ),
            f(
                "overlay lowerdir+",
                self.lowerdir_append,
                "lower dirs added one by one with fsconfig",
                "classic lowerdir= option with short relative names (one page; deeper stacks are merged)",
            ),
        ];
        out.push(FeatureReport {
            name: "overlay",
            available: self.overlay.is_ok(),
            path: match &self.overlay {
                Ok(()) if self.user_namespace => "kernel overlay with userxattr".into(),
                Ok(()) => "kernel overlay".into(),
                Err(e) => match &self.fuse_overlayfs {
                    Some(bin) => format!("unavailable ({e}): fuse-overlayfs ({})", bin.display()),
                    None => format!("unavailable ({e})"),
                },
            },
        });
        out.extend([
            f(
                "overlay volatile",
                self.overlay_volatile,
                "no sync of the upper dir at unmount",
                "upper dir synced at unmount",
            ),
            f(
                "mount_setattr",
                self.mount_setattr,
                "read-only bind mounts made before attaching",
                "read-only bind mounts remounted after attaching",
            ),
            f(
                "close_range",
                self.close_range,
                "close_range",
                "descriptors closed one by one from /proc/self/fd",
            ),
        ]);
        out.push(FeatureReport {
            name: "seccomp",
            available: self.seccomp.is_ok(),
            path: match &self.seccomp {
                Ok(()) => "default profile loads".into(),
                Err(e) => format!("default profile fails to load: {e}"),
            },
        });
        out
    }

    /// The error for a sandbox that cannot have an overlay rootfs here, naming the ways out.
    pub(crate) fn overlay_error(&self) -> Option<String> {
        let Err(e) = &self.overlay else {
            return None;
        };
        if self.fuse_overlayfs.is_some() {
            return None;
        }
        Some(if self.user_namespace {
            format!(
                "this kernel cannot mount overlay in a user namespace ({e}): rootless builds \
                 need Linux 5.11 or newer, or fuse-overlayfs (apt-get install fuse-overlayfs, \
                 with /dev/fuse usable); on this kernel install it or run rbuild as root"
            )
        } else {
            format!(
                "this kernel cannot mount overlay ({e}): load the overlay module \
                 (modprobe overlay) or use --isolation=chroot"
            )
        })
    }
}

/// Probes the kernel by running `exe` (the host binary, whose `main()` calls
/// [`crate::init_if_requested`]) with [`PROBE_ARG`]. `scratch` is a directory that does not exist
/// yet, on the file system that holds the snapshots (the probe's overlay goes there); it is
/// removed afterwards.
///
/// # Errors
/// When the probe process cannot be started or its answer cannot be read.
pub fn probe(exe: &Path, scratch: &Path) -> Result<Features, crate::Error> {
    let out = Command::new(exe)
        .arg(PROBE_ARG)
        .arg(scratch)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| crate::Error::Spawn {
            exe: exe.to_owned(),
            source,
        });
    // The probe unmounts what it mounted; what it made on disk goes now, whatever happened.
    if let Err(e) = fs_err::remove_dir_all(scratch) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(error = %e, "failed to remove the kernel probe's scratch dir");
        }
    }
    let out = out?;
    serde_json::from_slice(&out.stdout).map_err(|e| crate::Error::Probe {
        exe: exe.to_owned(),
        detail: format!("{e} ({})", out.status),
    })
}

/// The features, probed once per process (see [`probe`]), with each fallback logged at debug
/// level. A probe that cannot run is logged as a warning, and the newest kernel is assumed
/// (each sandbox then fails with the kernel's own error where that was wrong).
pub(crate) fn cached(exe: &Path, work: &Path) -> Features {
    static FEATURES: std::sync::OnceLock<Features> = std::sync::OnceLock::new();
    FEATURES
        .get_or_init(|| {
            let scratch = work.with_file_name(format!(
                "{}.probe",
                work.file_name().map_or("work".into(), |n| n.to_string_lossy())
            ));
            match probe(exe, &scratch) {
                Ok(f) => {
                    for r in f.report() {
                        tracing::debug!(
                            feature = r.name,
                            available = r.available,
                            "kernel: {}",
                            r.path
                        );
                    }
                    f
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failed to probe the kernel; assuming Linux 6.8 or newer");
                    Features::newest()
                }
            }
        })
        .clone()
}

/// Entry point of the probe process; never returns.
pub(crate) fn main() -> ! {
    let scratch = std::env::args_os().nth(2).map(PathBuf::from);
    let features = match scratch {
        Some(s) => run(&s),
        None => crate::setup::die(crate::EXIT_SETUP_FAILED, &"no scratch dir for the probe"),
    };
    let json = serde_json::to_vec(&features).expect("features serialize");
    let mut stdout = io::stdout().lock();
    if stdout
        .write_all(&json)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(crate::EXIT_SETUP_FAILED);
    }
    std::process::exit(0)
}

fn errno_text(e: Errno) -> String {
    io::Error::from(e).to_string()
}

/// Environment variable naming features the probe reports as missing whatever the kernel has
/// (comma-separated [`FALLBACKS`] names, or `all`): runs the fallbacks on a new kernel, for
/// tests and benchmarks.
pub const FALLBACKS_ENV: &str = "RBUILD_KERNEL_FALLBACKS";

/// The features [`FALLBACKS_ENV`] can turn off.
pub const FALLBACKS: &[&str] = &[
    "lowerdir+",
    "volatile",
    "mount_setattr",
    "close_range",
    "userns-overlay",
];

/// The probes themselves, in this (single-threaded, throwaway) process.
fn run(scratch: &Path) -> Features {
    let forced = std::env::var(FALLBACKS_ENV).unwrap_or_default();
    let forced: Vec<&str> = forced.split(',').map(str::trim).collect();
    let off = |name: &str| forced.contains(&"all") || forced.contains(&name);
    let mut f = probe_here(scratch, off("userns-overlay"));
    f.lowerdir_append &= !off("lowerdir+");
    f.overlay_volatile &= !off("volatile");
    f.mount_setattr &= !off("mount_setattr");
    f.close_range &= !off("close_range");
    f
}

/// `no_userns_overlay`: act as if kernel overlay could not be mounted in a user namespace.
fn probe_here(scratch: &Path, no_userns_overlay: bool) -> Features {
    let mut f = Features::newest();
    f.close_range = sys::close_range_works();
    f.mount_setattr = sys::mount_setattr_exists();
    // A private mount namespace, so nothing mounted here is seen outside or outlives us.
    let private = sys::unshare(UnshareFlags::NEWNS).is_ok()
        && rustix::mount::mount_change(
            "/",
            MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
        )
        .is_ok();
    match rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fs) => {
            // Before 6.8 the key is unknown (EINVAL), or, before overlay took the new API (6.5),
            // stored for a mount that would fail. Only 6.8+ looks the path up, and finds none.
            let missing = scratch.join("missing");
            f.lowerdir_append = matches!(
                rustix::mount::fsconfig_set_string(&fs, "lowerdir+", &missing),
                Err(Errno::NOENT)
            );
        }
        Err(Errno::NOSYS) => {
            f.mount_api = false;
            f.lowerdir_append = false;
        }
        Err(e) => {
            f.lowerdir_append = false;
            f.overlay = Err(format!("overlay: {}", errno_text(e)));
        }
    }
    if f.overlay.is_ok() {
        if private {
            probe_overlay(scratch, &mut f);
        } else {
            f.overlay = Err("cannot create a mount namespace".into());
        }
    }
    if no_userns_overlay && f.user_namespace && f.overlay.is_ok() {
        f.overlay = Err(format!("turned off by {FALLBACKS_ENV}"));
    }
    // Rootless without kernel overlay: fuse-overlayfs, if a probe mount of it works (before the
    // seccomp filter below, which would refuse it the mount).
    if f.overlay.is_err() && f.user_namespace && private {
        f.fuse_overlayfs = crate::fuse::probe(&scratch.join("fuse"));
    }
    f.seccomp = crate::seccomp::filters(crate::Seccomp::Default)
        .map_err(|e| e.to_string())
        .and_then(|programs| {
            programs.iter().try_for_each(|p| {
                sys::install_seccomp_filter(p).map_err(|e| format!("failed to load: {e}"))
            })
        });
    f
}

/// Mounts a small overlay with the options a sandbox uses, with `volatile` and without.
fn probe_overlay(scratch: &Path, f: &mut Features) {
    let made = ["l0", "l1", "u", "w", "m"]
        .iter()
        .try_for_each(|d| fs_err::create_dir_all(scratch.join(d)));
    if let Err(e) = made {
        f.overlay = Err(format!("failed to create the probe's dirs: {e}"));
        return;
    }
    let lowers = [scratch.join("l0"), scratch.join("l1")];
    let lowers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    let (upper, work, target) = (scratch.join("u"), scratch.join("w"), scratch.join("m"));
    let user_namespace = f.user_namespace;
    let mut n = 0;
    let mut attempt = |volatile: bool| {
        n += 1;
        let links = scratch.join(format!("links{n}"));
        crate::overlay::mount_classic(
            &links,
            &lowers,
            Some((&upper, &work)),
            user_namespace,
            volatile,
            &target,
        )
    };
    match attempt(true) {
        Ok(()) => f.overlay_volatile = true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            f.overlay_volatile = false;
            if let Err(e) = attempt(false) {
                f.overlay = Err(e.to_string());
            }
        }
        Err(e) => f.overlay = Err(e.to_string()),
    }
    if f.overlay.is_ok() {
        if f.mount_setattr {
            // The syscall exists; check that it applies to a detached tree as the sandbox uses it.
            f.mount_setattr =
                rustix::fs::open(&target, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                    .ok()
                    .and_then(|fd| {
                        rustix::mount::open_tree(
                            &fd,
                            "",
                            OpenTreeFlags::OPEN_TREE_CLONE
                                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                                | OpenTreeFlags::AT_EMPTY_PATH,
                        )
                        .ok()
                    })
                    .is_some_and(|tree| sys::make_tree_readonly(&tree).is_ok());
        }
        // Unmounted before the scratch dir is removed by the caller; the namespace would drop it
        // at exit anyway.
        let _ = rustix::mount::unmount(&target, UnmountFlags::DETACH);
    }
}
