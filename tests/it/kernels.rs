//! Debian's real cloud kernels booted in QEMU (TCG, no KVM), running rbuild's build scenarios
//! (tests/fixtures/kernels/scenario.sh) through scripts/kernel-vm.sh: Linux 5.10 (bullseye), the
//! oldest kernel rbuild supports, and 6.1 (bookworm), both older than the `lowerdir+` of 6.8. See: #16.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::common::require;

/// What one VM run printed: the scenario's checks and markers.
struct VmRun {
    console: String,
}

impl VmRun {
    #[allow(clippy::print_stdout)] // the VM's report, shown with --nocapture
    fn boot(suite: &str) -> Self {
        require("/usr/bin/qemu-system-x86_64", "qemu-system-x86");
        require("/usr/bin/cpio", "cpio");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let started = Instant::now();
        let out = Command::new(root.join("scripts/kernel-vm.sh"))
            .arg(suite)
            .arg(env!("CARGO_BIN_EXE_rbuild"))
            .arg(root.join("tests/fixtures/kernels/scenario.sh"))
            .output()
            .expect("scripts/kernel-vm.sh runs");
        let console = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Shown with --nocapture: the VM's results and how long it took.
        println!(
            "{suite}: VM run took {:.0?}\n{}",
            started.elapsed(),
            console
                .lines()
                .filter(|l| l.contains("RBUILD-VM-"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            out.status.success() && console.contains("RBUILD-VM-DONE rc=0"),
            "the {suite} VM did not finish ({}):\n{stderr}\n{console}",
            out.status
        );
        Self { console }
    }

    /// The line of `marker` (without it).
    fn line(&self, marker: &str) -> &str {
        self.console
            .lines()
            .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.trim()))
            .unwrap_or_else(|| panic!("no {marker} line in:\n{}", self.console))
    }

    #[track_caller]
    fn passed(&self, check: &str) {
        let status = self.line(&format!("RBUILD-VM-CHECK {check} "));
        assert!(
            status.starts_with("ok"),
            "check {check} failed on {}:\n{}",
            self.line("RBUILD-VM-KERNEL"),
            self.console
        );
    }

    /// The probed features, from `rbuild info --format json` in the VM.
    fn features(&self) -> serde_json::Value {
        let json = self.line("RBUILD-VM-PROBE");
        serde_json::from_str(json).unwrap_or_else(|e| panic!("rbuild info: {e}: {json}"))
    }

    fn feature(&self, name: &str) -> bool {
        let f = self.features();
        f["kernel"]["features"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .and_then(|x| x["available"].as_bool())
            .unwrap_or_else(|| panic!("no feature {name} in {f}"))
    }
}

const ROOT_CHECKS: &[&str] = &[
    "cgroup2_limits",
    "cgroup2_oom",
    "build",
    "run",
    "rebuild_all_cached",
    "network_none",
    "layers_128",
    "chroot",
];

#[test]
fn linux_5_10_builds_with_classic_overlay_options_and_rootless_through_fuse_overlayfs() {
    let vm = VmRun::boot("bullseye");
    assert!(vm.line("RBUILD-VM-KERNEL").starts_with("5.10."));
    for check in ROOT_CHECKS {
        vm.passed(check);
    }
    assert!(!vm.feature("overlay lowerdir+"));
    assert!(!vm.feature("mount_setattr"), "mount_setattr is 5.12");
    assert!(vm.feature("overlay volatile"), "volatile is 5.10");
    // No overlay in a user namespace before 5.11: without fuse-overlayfs, the clear error naming
    // the ways out; with it, rootless builds through it.
    let error = vm.line("RBUILD-VM-ROOTLESS-ERROR");
    assert!(
        error.contains("Linux 5.11 or newer")
            && error.contains("fuse-overlayfs")
            && error.contains("run rbuild as root"),
        "{error}"
    );
    assert!(
        vm.line("RBUILD-VM-ROOTLESS-FUSE")
            .contains("fuse-overlayfs"),
        "{}",
        vm.console
    );
    vm.passed("rootless_fuse");
}

#[test]
fn linux_6_1_builds_with_classic_overlay_options_rootless_included() {
    let vm = VmRun::boot("bookworm");
    assert!(vm.line("RBUILD-VM-KERNEL").starts_with("6.1."));
    for check in ROOT_CHECKS {
        vm.passed(check);
    }
    vm.passed("rootless");
    vm.passed("rootless_fuse"); // kernel overlay still: fuse-overlayfs is for kernels without it
    assert!(!vm.feature("overlay lowerdir+"), "lowerdir+ is 6.8");
    assert!(vm.feature("mount_setattr"));
}

/// `rbuild info --format json` on the host: each probed feature with its code path, the isolation, the
/// store's file system and free space, rootless ids, registries.
#[test]
fn info_json_reports_kernel_features_isolation_store_and_registries() {
    let env = crate::common::Env::new();
    let (out, _) = env.ok(&[
        "info",
        "--format",
        "json",
        "--registry-mirror",
        "http://127.0.0.1:5999",
    ]);
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    let features = info["kernel"]["features"].as_array().unwrap();
    for name in [
        "mount API",
        "overlay lowerdir+",
        "overlay",
        "overlay volatile",
        "mount_setattr",
        "close_range",
        "seccomp",
    ] {
        let f = features
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        assert!(f["available"].is_boolean() && f["path"].as_str().is_some_and(|p| !p.is_empty()));
    }
    assert_eq!(info["isolation"]["usable"], true, "{out}");
    assert_eq!(info["rootless"]["rootless"], false);
    assert_eq!(info["store"]["path"], env.root().to_str().unwrap());
    assert!(info["store"]["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(info["registries"]["mirrors"][0], "http://127.0.0.1:5999");
    assert_eq!(info["problems"].as_array().unwrap().len(), 0, "{out}");
    let (text, _) = env.ok(&["info"]);
    assert!(
        text.contains("overlay lowerdir+") && text.contains("problems: none"),
        "{text}"
    );
}

/// With the fallbacks for kernels before 6.8 forced on this kernel, a build works the same, and
/// `-vv` names the code path each probed feature chose.
#[test]
fn forced_old_kernel_fallbacks_build_the_same_and_show_at_vv() {
    let env = crate::common::Env::new();
    env.busybox();
    let ctx = env.context(
        "fallbacks",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN mkdir -p /d/x && echo a > /f\nRUN rm -rf /d /f && mkdir /d\n\
             RUN --mount=type=bind,target=/m,ro test ! -e /d/x && test ! -e /f && echo ok > /ok\n",
        )],
    );
    let out = Command::new(crate::common::RBUILD)
        .args([
            "--root",
            env.root().to_str().unwrap(),
            "-vv",
            "build",
            "--progress",
            "plain",
        ])
        .args(["-t", "fb:1", ctx.to_str().unwrap()])
        .env("RBUILD_KERNEL_FALLBACKS", "all")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("kernel: classic lowerdir= option with short relative names"),
        "{stderr}"
    );
    assert!(stderr.contains("kernel: read-only bind mounts remounted after attaching"));
    assert!(stderr.contains("kernel: upper dir synced at unmount"));
    assert_eq!(env.run_sh("fb:1", "cat /ok"), "ok\n");
}
