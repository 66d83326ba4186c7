//! Real sandbox tests (run as root): namespaces, overlay, mounts, users, capabilities, cleanup.
//!
//! `harness = false`: the binary re-executes itself as the sandbox init, so `main` must call
//! `runner::init_if_requested()` before anything else (libtest would start threads first).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a test runner reports on stdout

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use runner::{MountSpec, Network, Seccomp, Spec};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "sleep", "touch", "mkdir", "rm", "hostname", "grep", "wc",
    "pwd", "test", "true", "head", "stat", "kill", "env", "readlink", "mount", "unshare",
    "nsenter", "linux32", "chroot", "mknod",
];

/// A busybox-only rootfs with no /etc, /proc, /dev or /sys (like a `FROM scratch` image).
fn base() -> &'static Path {
    static BASE: OnceLock<tempfile::TempDir> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox"))
            .expect("/bin/busybox is missing: apt-get install busybox-static");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        dir
    })
    .path()
}

/// A layer holding `/etc/passwd` and `/etc/group`.
fn etc_layer() -> &'static Path {
    static ETC: OnceLock<tempfile::TempDir> = OnceLock::new();
    ETC.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1235:App:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "root:x:0:\napp:x:1235:\nextra:x:555:app\n",
        )
        .unwrap();
        dir
    })
    .path()
}

struct Sandbox {
    _dir: tempfile::TempDir,
    spec: Spec,
}

impl Sandbox {
    fn new(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("upper")).unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let spec = Spec {
            lowers: vec![base().to_owned()],
            upper: dir.path().join("upper"),
            work: dir.path().join("work"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            hostname: "sandbox-test".into(),
            network: Network::None,
            mounts: vec![],
            readonly_rootfs: false,
            no_new_privs: false,
            seccomp: Seccomp::Default,
            tty: false,
            isolation: runner::Isolation::Namespaces,
            extra_hosts: vec![],
            limits: runner::Limits::default(),
            capabilities: runner::Capabilities::Default,
            devices: vec![],
        };
        Self { _dir: dir, spec }
    }

    fn sh(script: &str) -> Self {
        Self::new(&["sh", "-c", script])
    }

    fn upper(&self) -> &Path {
        &self.spec.upper
    }

    fn run(&self) -> Output {
        let exe = std::env::current_exe().unwrap();
        let child = runner::spawn(
            &self.spec,
            &exe,
            Stdio::null(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .unwrap();
        let out = child.wait_with_output().unwrap();
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code(), 0, "command failed: {self:?}");
        self
    }
}

fn upper_entries(upper: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walk(upper) {
        out.push(e.strip_prefix(upper).unwrap().display().to_string());
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

fn echo_output_is_captured() {
    let out = Sandbox::new(&["echo", "hello", "world"]).run().ok();
    assert_eq!(out.stdout, "hello world\n");
}

fn exit_code_passes_through() {
    assert_eq!(Sandbox::sh("exit 3").run().code(), 3);
}

fn killed_command_gives_128_plus_signal() {
    assert_eq!(Sandbox::sh("kill -9 $$").run().code(), 137);
}

fn missing_command_is_127() {
    let out = Sandbox::new(&["no-such-command"]).run();
    assert_eq!(out.code(), 127, "{out:?}");
    assert!(
        out.stderr.contains("rbuild-runner: no-such-command"),
        "{out:?}"
    );
}

fn setup_failure_is_125() {
    let mut sb = Sandbox::new(&["true"]);
    sb.spec.lowers = vec![PathBuf::from("/nonexistent/lower")];
    let out = sb.run();
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(out.stderr.starts_with("rbuild-runner: "), "{out:?}");
}

fn written_file_lands_in_upper() {
    let sb = Sandbox::sh("mkdir -p /out && echo data > /out/file");
    sb.run().ok();
    assert_eq!(
        std::fs::read_to_string(sb.upper().join("out/file")).unwrap(),
        "data\n"
    );
    // Only the command's changes: no etc/hosts, proc, dev, sys mountpoints.
    assert_eq!(upper_entries(sb.upper()), ["out", "out/file"]);
}

fn deleting_a_lower_file_makes_a_whiteout() {
    let layer = tempfile::tempdir().unwrap();
    std::fs::write(layer.path().join("victim"), "x").unwrap();
    let mut sb = Sandbox::sh("rm /victim && test ! -e /victim");
    sb.spec.lowers.push(layer.path().to_owned());
    sb.run().ok();
    let meta = std::fs::symlink_metadata(sb.upper().join("victim")).unwrap();
    assert!(meta.file_type().is_char_device(), "{meta:?}");
    assert_eq!(meta.rdev(), 0);
}

fn mountpoints_are_cleaned_from_upper() {
    // Scratch-like lower: /etc, /proc, /dev, /sys, /etc/hosts all had to be created.
    let sb = Sandbox::sh("cat /etc/hosts && echo x > /etc/mine");
    let out = sb.run().ok();
    assert!(out.stdout.contains("sandbox-test"), "{out:?}");
    assert_eq!(upper_entries(sb.upper()), ["etc", "etc/mine"]);

    // /etc exists in a lower: creating /etc/hosts copies it up; nothing must remain.
    let mut sb = Sandbox::new(&["true"]);
    sb.spec.lowers.push(etc_layer().to_owned());
    sb.run().ok();
    assert_eq!(upper_entries(sb.upper()), Vec::<String>::new());

    // Extra mount targets too.
    let mut sb = Sandbox::sh("test -d /mnt/deep/tmp");
    sb.spec.mounts.push(MountSpec::Tmpfs {
        target: "/mnt/deep/tmp".into(),
        size: 1 << 20,
    });
    sb.run().ok();
    assert_eq!(upper_entries(sb.upper()), Vec::<String>::new());
}

fn host_processes_are_invisible() {
    let out = Sandbox::sh("cat /proc/1/cmdline; echo; ls /proc")
        .run()
        .ok();
    let first = out.stdout.lines().next().unwrap();
    assert!(first.contains(runner::INIT_ARG), "{out:?}");
    let pids = out
        .stdout
        .lines()
        .skip(1)
        .filter(|l| l.parse::<u32>().is_ok())
        .count();
    assert!(pids <= 4, "{out:?}");
}

fn capabilities_are_dockers_default() {
    let out = Sandbox::sh("grep -E '^Cap(Eff|Prm|Bnd|Inh|Amb)' /proc/self/status")
        .run()
        .ok();
    assert!(out.stdout.contains("CapEff:\t00000000a80425fb"), "{out:?}");
    assert!(out.stdout.contains("CapPrm:\t00000000a80425fb"), "{out:?}");
    assert!(out.stdout.contains("CapBnd:\t00000000a80425fb"), "{out:?}");
    assert!(out.stdout.contains("CapInh:\t0000000000000000"), "{out:?}");
    assert!(out.stdout.contains("CapAmb:\t0000000000000000"), "{out:?}");
}

fn cwd_is_created() {
    let mut sb = Sandbox::new(&["pwd"]);
    sb.spec.cwd = "/work/dir".into();
    let out = sb.run().ok();
    assert_eq!(out.stdout, "/work/dir\n");
    let meta = std::fs::metadata(sb.upper().join("work/dir")).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o755, 0));
}

fn numeric_user() {
    let mut sb = Sandbox::sh("id -u; id -g; grep CapEff /proc/self/status");
    sb.spec.user = "1000:1000".into();
    let out = sb.run().ok();
    assert_eq!(out.stdout, "1000\n1000\nCapEff:\t0000000000000000\n");
}

fn named_user_from_passwd() {
    let mut sb = Sandbox::sh("id -u; id -g; id -G; echo $HOME");
    sb.spec.lowers.push(etc_layer().to_owned());
    sb.spec.user = "app".into();
    let out = sb.run().ok();
    assert_eq!(out.stdout, "1234\n1235\n1235 555\n/home/app\n");
}

fn unknown_user_fails_setup() {
    let mut sb = Sandbox::new(&["true"]);
    sb.spec.lowers.push(etc_layer().to_owned());
    sb.spec.user = "nobody".into();
    let out = sb.run();
    assert_eq!(out.code(), 125, "{out:?}");
    assert!(
        out.stderr
            .contains("rbuild-runner: unable to find user nobody"),
        "{out:?}"
    );
    // Mountpoints are cleaned even when setup fails after creating them.
    assert_eq!(upper_entries(sb.upper()), Vec::<String>::new());
}

fn network_none_has_only_loopback() {
    let out = Sandbox::sh("cat /proc/net/dev").run().ok();
    let ifaces: Vec<&str> = out
        .stdout
        .lines()
        .skip(2)
        .map(|l| l.split(':').next().unwrap().trim())
        .collect();
    assert_eq!(ifaces, ["lo"], "{out:?}");
}

fn no_host_fds_leak() {
    let out = Sandbox::new(&["ls", "/proc/self/fd"]).run().ok();
    let fds: Vec<&str> = out.stdout.split_whitespace().collect();
    assert!(fds.len() <= 4, "{out:?}");
}

fn hundred_lowers() {
    let layers = tempfile::tempdir().unwrap();
    let mut sb = Sandbox::sh("ls /layers | wc -l");
    for i in 0..100 {
        let dir = layers.path().join(format!("l{i:03}/layers"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), "").unwrap();
        sb.spec.lowers.push(layers.path().join(format!("l{i:03}")));
    }
    let out = sb.run().ok();
    assert_eq!(out.stdout.trim(), "100");
}

fn upper_layer_order_is_respected() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    std::fs::write(a.path().join("which"), "bottom").unwrap();
    std::fs::write(b.path().join("which"), "top").unwrap();
    let mut sb = Sandbox::new(&["cat", "/which"]);
    sb.spec.lowers.push(a.path().to_owned());
    sb.spec.lowers.push(b.path().to_owned());
    assert_eq!(sb.run().ok().stdout, "top");
}

/// The same snapshot twice in one stack (two steps made the same layer) mounts, and reads as
/// the higher copy. See: #17.
fn repeated_lower_dir_is_mounted_once() {
    let copy = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    std::fs::write(copy.path().join("f"), "original\n").unwrap();
    std::fs::write(run.path().join("f"), "changed\n").unwrap();
    let mut sb = Sandbox::new(&["cat", "/f"]);
    sb.spec.lowers.push(copy.path().to_owned());
    sb.spec.lowers.push(run.path().to_owned());
    sb.spec.lowers.push(copy.path().to_owned());
    assert_eq!(sb.run().ok().stdout, "original\n");
}

/// More lower dirs than one overlay takes (500): the lowest are merged into an overlay below.
fn six_hundred_lowers_are_merged_below_the_top() {
    let layers = tempfile::tempdir().unwrap();
    let mut sb = Sandbox::sh("ls /layers | wc -l; cat /which; test ! -e /layers/f7");
    for i in 0..600 {
        let dir = layers.path().join(format!("l{i:03}/layers"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), "").unwrap();
        std::fs::write(
            layers.path().join(format!("l{i:03}/which")),
            format!("{i}\n"),
        )
        .unwrap();
        sb.spec.lowers.push(layers.path().join(format!("l{i:03}")));
    }
    // A whiteout high in the stack hides a file of a merged layer.
    let wh = layers.path().join("wh/layers");
    std::fs::create_dir_all(&wh).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        wh.join("f7"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    sb.spec.lowers.insert(550, layers.path().join("wh"));
    let out = sb.run().ok();
    assert_eq!(out.stdout, "599\n599\n", "{out:?}");
}

/// The probe finds what this kernel offers, and `RBUILD_KERNEL_FALLBACKS` turns features off.
fn kernel_probe_reports_features_and_forced_fallbacks() {
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = runner::probe(&exe, &dir.path().join("probe")).unwrap();
    assert_eq!(f.overlay, Ok(()), "{f:?}");
    assert_eq!(f.seccomp, Ok(()), "{f:?}");
    assert!(f.mount_api, "{f:?}");
    assert!(
        !dir.path().join("probe").exists(),
        "the probe's scratch dir is removed"
    );
    let forced = std::process::Command::new(&exe)
        .arg("probe-all-fallbacks")
        .arg(dir.path().join("probe2"))
        .env(runner::FALLBACKS_ENV, "all")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&forced.stdout);
    assert!(forced.status.success(), "{forced:?}");
    let g: runner::Features = serde_json::from_str(&text).unwrap();
    assert!(
        !g.lowerdir_append && !g.overlay_volatile && !g.mount_setattr && !g.close_range,
        "{g:?}"
    );
    assert_eq!(g.overlay, Ok(()), "{g:?}");
    let names: Vec<&str> = g.report().iter().map(|r| r.name).collect();
    assert!(
        names.contains(&"overlay lowerdir+") && names.contains(&"mount_setattr"),
        "{names:?}"
    );
}

/// The rootfs is mounted the way the probe chose: short relative names in `lowerdir=` without
/// `lowerdir+` (and `volatile` only when the kernel has it).
fn rootfs_mount_follows_the_probed_features() {
    let exe = std::env::current_exe().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = runner::probe(&exe, &dir.path().join("probe")).unwrap();
    let out = Sandbox::new(&["grep", " / / ", "/proc/self/mountinfo"])
        .run()
        .ok();
    assert!(out.stdout.contains(" - overlay "), "{out:?}");
    assert_eq!(
        out.stdout.contains(",lowerdir=0,"),
        !f.lowerdir_append,
        "{out:?}"
    );
    // Shown as `volatile`, or as `fsync=volatile` since Linux 6.4.
    assert_eq!(
        out.stdout.contains("volatile"),
        f.overlay_volatile,
        "{out:?}"
    );
}

/// Host pids whose command line is exactly `needle`.
fn host_pids_with_cmdline(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s))
            .collect::<Vec<_>>()
            .join(" ")
            == needle
        {
            out.push(pid);
        }
    }
    out
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn killing_outside_process_kills_sandbox() {
    let sb = Sandbox::new(&["sleep", "987654"]);
    let exe = std::env::current_exe().unwrap();
    let mut child =
        runner::spawn(&sb.spec, &exe, Stdio::null(), Stdio::null(), Stdio::null()).unwrap();
    wait_until("the command runs", || {
        !host_pids_with_cmdline("sleep 987654").is_empty()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the command is gone", || {
        host_pids_with_cmdline("sleep 987654").is_empty()
    });
}

fn proc_and_sys_are_masked_and_readonly() {
    // Masked files read empty; masked directories are empty (whichever exist on this kernel).
    let masked_files = [
        "/proc/interrupts",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/kcore",
    ];
    let masked_dirs = ["/sys/firmware", "/proc/acpi", "/proc/scsi"];
    let mut script = String::new();
    for f in masked_files.iter().filter(|f| Path::new(f).exists()) {
        script += &format!("echo {f} $(cat {f} | wc -c);");
    }
    for d in masked_dirs.iter().filter(|d| Path::new(d).exists()) {
        script += &format!("echo {d} $(ls -A {d} | wc -l);");
    }
    let out = Sandbox::sh(&format!(
        "{script} \
         echo x > /proc/sys/kernel/domainname 2>/dev/null && echo proc-sys-writable; \
         echo x > /proc/sysrq-trigger 2>/dev/null && echo sysrq-writable; \
         touch /sys/x 2>/dev/null && echo sysfs-writable; \
         mkdir /tmp2 && mount -t tmpfs tmpfs /tmp2 2>/dev/null && echo mount-allowed; \
         echo done"
    ))
    .run()
    .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 3, "{out:?}");
    for line in &lines[..lines.len() - 1] {
        assert!(line.ends_with(" 0"), "{line} is not masked: {out:?}");
    }
    assert_eq!(lines.last(), Some(&"done"), "{out:?}");
}

fn dev_is_minimal_and_works() {
    let out = Sandbox::sh(
        "ls /dev; echo hi > /dev/null; head -c 5 /dev/zero | wc -c; head -c 5 /dev/urandom | wc -c; \
         readlink /dev/ptmx; test -c /dev/pts/ptmx && echo pts; touch /dev/shm/x && echo shm",
    )
    .run()
    .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    for expected in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "fd", "ptmx",
    ] {
        assert!(
            lines.contains(&expected),
            "missing /dev/{expected}: {out:?}"
        );
    }
    assert!(
        out.stdout.ends_with("5\n5\npts/ptmx\npts\nshm\n"),
        "{out:?}"
    );
}

// See: #19. `RUN mknod /k c 1 11 && echo x > /k` wrote to the host's kernel log. Nodes can still be
// made (CAP_MKNOD, as in Docker) and land in the layer, but none opens: not on the rootfs, not in /dev,
// not in a writable bind (a cache mount) or a tmpfs. Char 1:3 (null) and the block device of the host's
// root file system exist on every host, so without nodev they would open (the test would see it).
fn r19_device_nodes_can_be_created_but_not_opened() {
    let st = rustix::fs::stat("/").unwrap();
    let (major, minor) = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    let rw = tempfile::tempdir().unwrap();
    let script = format!(
        "for d in / /dev/ /mnt/rw/ /mnt/tmp/; do \
           mknod ${{d}}c c 1 3 && mknod ${{d}}b b {major} {minor} && test -c ${{d}}c && test -b ${{d}}b || exit 9; \
           echo x 2>&1 > ${{d}}c || echo char-denied; \
           head -c 1 ${{d}}b 2>&1 >/dev/null || echo block-denied; \
         done; echo x > /dev/null && echo default-null-works"
    );
    let mut sb = Sandbox::sh(&script);
    sb.spec.mounts = vec![
        MountSpec::Bind {
            source: rw.path().to_owned(),
            target: "/mnt/rw".into(),
            readonly: false,
        },
        MountSpec::Tmpfs {
            target: "/mnt/tmp".into(),
            size: 0,
        },
    ];
    let out = sb.run().ok();
    let denied = out.stdout.matches("Permission denied").count();
    assert_eq!(
        out.stdout.matches("char-denied").count(),
        4,
        "a char device opened: {out:?}"
    );
    assert_eq!(
        out.stdout.matches("block-denied").count(),
        4,
        "a block device opened: {out:?}"
    );
    assert_eq!(denied, 8, "{out:?}");
    assert!(out.stdout.ends_with("default-null-works\n"), "{out:?}");
    // The rootfs's nodes land in the layer (upper dir), as images that ship device nodes need.
    let c = std::fs::symlink_metadata(sb.upper().join("c")).unwrap();
    assert!(c.file_type().is_char_device());
    assert_eq!(c.rdev(), rustix::fs::makedev(1, 3));
    assert!(std::fs::symlink_metadata(sb.upper().join("b"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(std::fs::symlink_metadata(rw.path().join("c"))
        .unwrap()
        .file_type()
        .is_char_device());
}

fn hostname_and_hosts_file() {
    let out = Sandbox::sh("hostname; grep -c sandbox-test /etc/hosts; grep -c '::1' /etc/hosts")
        .run()
        .ok();
    assert_eq!(out.stdout, "sandbox-test\n1\n1\n");
}

fn host_network_sees_host_interfaces() {
    let host = std::fs::read_to_string("/proc/net/dev").unwrap();
    let mut sb = Sandbox::new(&["cat", "/proc/net/dev"]);
    sb.spec.network = Network::Host;
    let out = sb.run().ok();
    let names = |s: &str| -> Vec<String> {
        s.lines()
            .skip(2)
            .map(|l| l.split(':').next().unwrap().trim().to_owned())
            .collect()
    };
    assert_eq!(names(&out.stdout), names(&host));
}

fn bind_mounts_and_readonly() {
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("data"), "from host").unwrap();
    let file = host.path().join("single");
    std::fs::write(&file, "one file").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let mut sb = Sandbox::sh(
        "cat /mnt/ro/data; echo; cat /etc/single; echo; touch /mnt/ro/new 2>/dev/null || echo ro-denied; \
         echo written > /mnt/rw/out",
    );
    sb.spec.mounts = vec![
        MountSpec::Bind {
            source: host.path().to_owned(),
            target: "/mnt/ro".into(),
            readonly: true,
        },
        MountSpec::Bind {
            source: file,
            target: "/etc/single".into(),
            readonly: true,
        },
        MountSpec::Bind {
            source: rw.path().to_owned(),
            target: "/mnt/rw".into(),
            readonly: false,
        },
    ];
    let out = sb.run().ok();
    assert_eq!(out.stdout, "from host\none file\nro-denied\n");
    assert_eq!(
        std::fs::read_to_string(rw.path().join("out")).unwrap(),
        "written\n"
    );
    assert!(!host.path().join("new").exists());
    assert_eq!(upper_entries(sb.upper()), Vec::<String>::new());
}

fn tmpfs_mount_is_not_in_upper() {
    let mut sb = Sandbox::sh("echo x > /cache/f && grep -c ' /cache tmpfs' /proc/mounts");
    sb.spec.mounts.push(MountSpec::Tmpfs {
        target: "/cache".into(),
        size: 4 << 20,
    });
    assert_eq!(sb.run().ok().stdout, "1\n");
    assert_eq!(upper_entries(sb.upper()), Vec::<String>::new());
}

fn readonly_rootfs() {
    let mut sb =
        Sandbox::sh("touch /x 2>/dev/null || echo denied; touch /dev/shm/y && echo tmpfs-ok");
    sb.spec.readonly_rootfs = true;
    assert_eq!(sb.run().ok().stdout, "denied\ntmpfs-ok\n");
}

fn symlinked_mountpoint_stays_inside_rootfs() {
    // An image whose /etc is an absolute symlink must not make the runner write on the host.
    let layer = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), layer.path().join("etc")).unwrap();
    let mut sb = Sandbox::sh("cat /etc/hosts | grep -c localhost");
    sb.spec.lowers.push(layer.path().to_owned());
    assert_eq!(sb.run().ok().stdout, "2\n");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(upper_entries(sb.upper()), Vec::<String>::new());
}

fn signals_are_forwarded() {
    use std::io::BufRead;
    let sb =
        Sandbox::sh("trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done");
    let exe = std::env::current_exe().unwrap();
    let mut child =
        runner::spawn(&sb.spec, &exe, Stdio::null(), Stdio::piped(), Stdio::null()).unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(42));
}

fn orphans_are_reaped_and_command_status_wins() {
    // A background child outlives the command; the sandbox still ends with the command's code.
    let out = Sandbox::sh("sleep 1000 & exit 5").run();
    assert_eq!(out.code(), 5, "{out:?}");
}

fn parallel_spawns_from_threads() {
    // spawn() from a multi-threaded caller (like the solver) must not mix up spec pipes.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let sb = Sandbox::new(&["echo", &format!("sandbox {i}")]);
                sb.run().ok().stdout
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), format!("sandbox {i}\n"));
    }
}

fn exe_without_init_is_an_error() {
    // A binary that ignores INIT_ARG (here /bin/true) must not look like a successful run.
    let sb = Sandbox::new(&["true"]);
    let err = runner::spawn(
        &sb.spec,
        Path::new("/bin/true"),
        Stdio::null(),
        Stdio::null(),
        Stdio::null(),
    )
    .unwrap_err();
    assert!(matches!(err, runner::Error::NotInit { .. }), "{err:?}");
}

fn status_fields(out: &Output) -> (String, String) {
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {out:?}"))
            .trim()
            .to_owned()
    };
    (field("Seccomp:"), field("NoNewPrivs:"))
}

const STATUS_SCRIPT: &str = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status";

fn seccomp_filter_is_on_by_default() {
    let out = Sandbox::sh(STATUS_SCRIPT).run().ok();
    assert_eq!(status_fields(&out), ("2".into(), "0".into()), "{out:?}");
    // A non-root user has no CAP_SYS_ADMIN when the filter would be installed after setuid;
    // it is installed before, so it is there too.
    let mut sb = Sandbox::sh(STATUS_SCRIPT);
    sb.spec.user = "1000:1000".into();
    let out = sb.run().ok();
    assert_eq!(status_fields(&out), ("2".into(), "0".into()), "{out:?}");
}

fn seccomp_blocks_user_namespaces() {
    // Without CAP_SYS_ADMIN the kernel still lets anyone create a user namespace; only the
    // filter stops it (clone/unshare with namespace flags), as in Docker.
    let script = "unshare -U true && echo unshared; \
                  unshare -n true 2>/dev/null && echo netns; \
                  chroot / true && echo chroot; linux32 true && echo linux32";
    let out = Sandbox::sh(script).run().ok();
    assert_eq!(out.stdout, "chroot\nlinux32\n", "{out:?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");

    let mut sb = Sandbox::sh(script);
    sb.spec.seccomp = Seccomp::Unconfined;
    let out = sb.run().ok();
    assert_eq!(out.stdout, "unshared\nchroot\nlinux32\n", "{out:?}");
}

fn unconfined_has_no_filter() {
    let mut sb = Sandbox::sh(STATUS_SCRIPT);
    sb.spec.seccomp = Seccomp::Unconfined;
    let out = sb.run().ok();
    assert_eq!(status_fields(&out), ("0".into(), "0".into()), "{out:?}");
}

fn no_new_privs_when_asked() {
    for user in ["", "1000:1000"] {
        let mut sb = Sandbox::sh(STATUS_SCRIPT);
        sb.spec.user = user.into();
        sb.spec.no_new_privs = true;
        let out = sb.run().ok();
        assert_eq!(status_fields(&out), ("2".into(), "1".into()), "{out:?}");
    }
    let mut sb = Sandbox::sh(STATUS_SCRIPT);
    sb.spec.no_new_privs = true;
    sb.spec.seccomp = Seccomp::Unconfined;
    let out = sb.run().ok();
    assert_eq!(status_fields(&out), ("0".into(), "1".into()), "{out:?}");
}

fn spec_without_security_fields_uses_defaults() {
    // Specs serialized before these fields existed still deserialize, with the safe defaults.
    let sb = Sandbox::new(&["true"]);
    let mut json = serde_json::to_value(&sb.spec).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.remove("seccomp").unwrap();
    obj.remove("no_new_privs").unwrap();
    let spec: Spec = serde_json::from_value(json).unwrap();
    assert_eq!(spec.seccomp, Seccomp::Default);
    assert!(!spec.no_new_privs);
}

/// Runs in the sandbox (the test binary itself, with the host's libc bind-mounted): things a
/// real program does under the filter.
fn seccomp_probe() {
    // glibc creates threads with clone3 and falls back to clone only on ENOSYS.
    let sum: u32 = (0..8u32)
        .map(|i| std::thread::spawn(move || i * 2))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    println!("threads {sum}");
    let status = std::process::Command::new("/bin/true").status().unwrap();
    println!("spawn {}", status.success());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::net::TcpStream::connect(addr).unwrap();
    println!("tcp ok");
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(a);
    println!("unix ok");
    std::fs::create_dir_all("/tmp/m").unwrap();
    let err = rustix::mount::mount(
        "none",
        "/tmp/m",
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap_err();
    println!("mount errno {}", err.raw_os_error());
}

fn real_program_works_under_the_filter() {
    // The test binary is dynamically linked: give it the host's /usr and /lib* layout.
    let layer = tempfile::tempdir().unwrap();
    let mut sb = Sandbox::new(&["/probe", "seccomp-probe"]);
    sb.spec.lowers.push(layer.path().to_owned());
    sb.spec.mounts.push(MountSpec::Bind {
        source: "/usr".into(),
        target: "/usr".into(),
        readonly: true,
    });
    for dir in ["lib", "lib64", "lib32"] {
        let host = Path::new("/").join(dir);
        match std::fs::read_link(&host) {
            Ok(target) => std::os::unix::fs::symlink(target, layer.path().join(dir)).unwrap(),
            Err(_) if host.is_dir() => sb.spec.mounts.push(MountSpec::Bind {
                source: host.clone(),
                target: format!("/{dir}"),
                readonly: true,
            }),
            Err(_) => {}
        }
    }
    sb.spec.mounts.push(MountSpec::Bind {
        source: std::env::current_exe().unwrap(),
        target: "/probe".into(),
        readonly: true,
    });
    let out = sb.run().ok();
    assert_eq!(
        out.stdout, "threads 56\nspawn true\ntcp ok\nunix ok\nmount errno 1\n",
        "{out:?}"
    );
}

fn overlay_mount_is_readonly_and_resolves_inside() {
    // Two layers: the upper one deletes nothing but adds a file and a symlink that tries to leave.
    let bottom = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bottom.path().join("src/sub")).unwrap();
    std::fs::write(bottom.path().join("src/sub/a"), "bottom a").unwrap();
    let top = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(top.path().join("src/sub")).unwrap();
    std::fs::write(top.path().join("src/sub/b"), "top b").unwrap();
    std::os::unix::fs::symlink("/etc", top.path().join("src/escape")).unwrap();
    std::os::unix::fs::symlink("/../../../src/sub", top.path().join("src/up")).unwrap();
    let mut sb = Sandbox::sh(
        "cat /m/a /m/b; echo; touch /m/c 2>/dev/null || echo ro-denied; cat /e/passwd 2>/dev/null || echo no-host-passwd; ls /whole",
    );
    let lowers = vec![bottom.path().to_owned(), top.path().to_owned()];
    sb.spec.mounts = vec![
        MountSpec::Overlay {
            lowers: lowers.clone(),
            source: "/src/sub".into(),
            target: "/m".into(),
            scratch: None,
        },
        // Symlinks in the source resolve inside the overlay: `..` stops at its root.
        MountSpec::Overlay {
            lowers: lowers.clone(),
            source: "/src/up".into(),
            target: "/whole".into(),
            scratch: None,
        },
    ];
    let out = sb.run().ok();
    assert_eq!(
        out.stdout, "bottom atop b\nro-denied\nno-host-passwd\na\nb\n",
        "{out:?}"
    );
    // A source that resolves to a missing path fails the setup instead of reaching the host.
    sb.spec.mounts = vec![MountSpec::Overlay {
        lowers,
        source: "/src/escape/passwd".into(),
        target: "/e".into(),
        scratch: None,
    }];
    let out = sb.run();
    assert_eq!(out.code(), runner::EXIT_SETUP_FAILED, "{out:?}");
    assert!(!sb.upper().join("e").exists());
}

fn overlay_mount_writes_are_discarded() {
    let lower = tempfile::tempdir().unwrap();
    std::fs::write(lower.path().join("f"), "orig").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut sb = Sandbox::sh("echo changed > /m/f; echo new > /m/g; rm -f /m/f; ls /m");
    sb.spec.mounts = vec![MountSpec::Overlay {
        lowers: vec![],
        source: "/".into(),
        target: "/m".into(),
        scratch: Some(scratch.path().to_owned()),
    }];
    // No lowers: an empty directory.
    assert_eq!(sb.run().ok().stdout, "g\n");
    assert_eq!(upper_entries(sb.upper()), Vec::<String>::new());
    // A fresh sandbox: the rootfs overlay is volatile, and the kernel refuses to mount a work dir that
    // was mounted volatile before (rbuild never reuses one).
    let mut sb = Sandbox::sh("echo changed > /m/f; echo new > /m/g; rm -f /m/f; ls /m");
    let scratch2 = tempfile::tempdir().unwrap();
    sb.spec.mounts = vec![MountSpec::Overlay {
        lowers: vec![lower.path().to_owned()],
        source: "/".into(),
        target: "/m".into(),
        scratch: Some(scratch2.path().to_owned()),
    }];
    assert_eq!(sb.run().ok().stdout, "g\n");
    assert_eq!(
        std::fs::read_to_string(lower.path().join("f")).unwrap(),
        "orig"
    );
    assert!(!lower.path().join("g").exists());
    assert_eq!(upper_entries(sb.upper()), Vec::<String>::new());
}

fn file_mount_holds_content_mode_and_owner() {
    let mut sb = Sandbox::sh(
        "cat /run/secrets/tok; echo; stat -c '%a %u %g' /run/secrets/tok; \
         echo x > /run/secrets/tok 2>/dev/null || echo ro-denied; grep -c ' /run/secrets/tok tmpfs ' /proc/mounts",
    );
    sb.spec.mounts = vec![MountSpec::File {
        content: runner::SecretBytes(b"s3cr3t-value".to_vec()),
        target: "/run/secrets/tok".into(),
        mode: 0o440,
        uid: 1234,
        gid: 1235,
    }];
    let out = sb.run().ok();
    assert_eq!(
        out.stdout, "s3cr3t-value\n440 1234 1235\nro-denied\n1\n",
        "{out:?}"
    );
    assert_eq!(upper_entries(sb.upper()), Vec::<String>::new());
    assert!(!format!("{:?}", sb.spec).contains("s3cr3t"));
    // The work dir keeps only an empty mountpoint: the content was never on disk.
    for p in walk(&sb.spec.work) {
        if p.is_file() {
            assert!(
                !std::fs::read(&p)
                    .unwrap()
                    .windows(6)
                    .any(|w| w == b"s3cr3t"),
                "{p:?}"
            );
        }
    }
}

fn sandbox_dies_with_the_spawning_thread() {
    let sb = Sandbox::new(&["sleep", "876543"]);
    let spec = sb.spec.clone();
    let child = std::thread::spawn(move || {
        let exe = std::env::current_exe().unwrap();
        runner::spawn(&spec, &exe, Stdio::null(), Stdio::null(), Stdio::null()).unwrap()
    })
    .join()
    .unwrap();
    // The spawning thread has exited (as if rbuild had been killed): the sandbox must follow.
    wait_until("the sandbox is gone", || {
        host_pids_with_cmdline("sleep 876543").is_empty()
    });
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

fn main() {
    runner::init_if_requested();
    if std::env::args().nth(1).as_deref() == Some("seccomp-probe") {
        seccomp_probe();
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("probe-all-fallbacks") {
        let scratch = PathBuf::from(std::env::args().nth(2).unwrap());
        let f = runner::probe(&std::env::current_exe().unwrap(), &scratch).unwrap();
        println!("{}", serde_json::to_string(&f).unwrap());
        return;
    }
    let tests: &[(&str, fn())] = &[
        ("echo_output_is_captured", echo_output_is_captured),
        ("exit_code_passes_through", exit_code_passes_through),
        (
            "killed_command_gives_128_plus_signal",
            killed_command_gives_128_plus_signal,
        ),
        ("missing_command_is_127", missing_command_is_127),
        ("setup_failure_is_125", setup_failure_is_125),
        ("written_file_lands_in_upper", written_file_lands_in_upper),
        (
            "deleting_a_lower_file_makes_a_whiteout",
            deleting_a_lower_file_makes_a_whiteout,
        ),
        (
            "mountpoints_are_cleaned_from_upper",
            mountpoints_are_cleaned_from_upper,
        ),
        ("host_processes_are_invisible", host_processes_are_invisible),
        (
            "capabilities_are_dockers_default",
            capabilities_are_dockers_default,
        ),
        ("cwd_is_created", cwd_is_created),
        ("numeric_user", numeric_user),
        ("named_user_from_passwd", named_user_from_passwd),
        ("unknown_user_fails_setup", unknown_user_fails_setup),
        (
            "network_none_has_only_loopback",
            network_none_has_only_loopback,
        ),
        ("no_host_fds_leak", no_host_fds_leak),
        ("hundred_lowers", hundred_lowers),
        (
            "repeated_lower_dir_is_mounted_once",
            repeated_lower_dir_is_mounted_once,
        ),
        (
            "six_hundred_lowers_are_merged_below_the_top",
            six_hundred_lowers_are_merged_below_the_top,
        ),
        (
            "rootfs_mount_follows_the_probed_features",
            rootfs_mount_follows_the_probed_features,
        ),
        (
            "kernel_probe_reports_features_and_forced_fallbacks",
            kernel_probe_reports_features_and_forced_fallbacks,
        ),
        (
            "upper_layer_order_is_respected",
            upper_layer_order_is_respected,
        ),
        (
            "killing_outside_process_kills_sandbox",
            killing_outside_process_kills_sandbox,
        ),
        (
            "proc_and_sys_are_masked_and_readonly",
            proc_and_sys_are_masked_and_readonly,
        ),
        ("dev_is_minimal_and_works", dev_is_minimal_and_works),
        (
            "r19_device_nodes_can_be_created_but_not_opened",
            r19_device_nodes_can_be_created_but_not_opened,
        ),
        ("hostname_and_hosts_file", hostname_and_hosts_file),
        (
            "host_network_sees_host_interfaces",
            host_network_sees_host_interfaces,
        ),
        ("bind_mounts_and_readonly", bind_mounts_and_readonly),
        ("tmpfs_mount_is_not_in_upper", tmpfs_mount_is_not_in_upper),
        (
            "overlay_mount_is_readonly_and_resolves_inside",
            overlay_mount_is_readonly_and_resolves_inside,
        ),
        (
            "overlay_mount_writes_are_discarded",
            overlay_mount_writes_are_discarded,
        ),
        (
            "file_mount_holds_content_mode_and_owner",
            file_mount_holds_content_mode_and_owner,
        ),
        (
            "sandbox_dies_with_the_spawning_thread",
            sandbox_dies_with_the_spawning_thread,
        ),
        ("readonly_rootfs", readonly_rootfs),
        (
            "symlinked_mountpoint_stays_inside_rootfs",
            symlinked_mountpoint_stays_inside_rootfs,
        ),
        ("signals_are_forwarded", signals_are_forwarded),
        (
            "orphans_are_reaped_and_command_status_wins",
            orphans_are_reaped_and_command_status_wins,
        ),
        ("parallel_spawns_from_threads", parallel_spawns_from_threads),
        ("exe_without_init_is_an_error", exe_without_init_is_an_error),
        (
            "seccomp_filter_is_on_by_default",
            seccomp_filter_is_on_by_default,
        ),
        (
            "seccomp_blocks_user_namespaces",
            seccomp_blocks_user_namespaces,
        ),
        ("unconfined_has_no_filter", unconfined_has_no_filter),
        ("no_new_privs_when_asked", no_new_privs_when_asked),
        (
            "spec_without_security_fields_uses_defaults",
            spec_without_security_fields_uses_defaults,
        ),
        (
            "real_program_works_under_the_filter",
            real_program_works_under_the_filter,
        ),
    ];
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        match std::panic::catch_unwind(test) {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.2?})", started.elapsed());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED");
            }
        }
    }
    let fallbacks = std::env::var_os(runner::FALLBACKS_ENV).is_some();
    let mode = if fallbacks {
        " (with every kernel fallback)"
    } else {
        ""
    };
    println!("{passed} passed, {failed} failed{mode}");
    // Once more with every fallback for kernels older than this one (classic lowerdir=, no
    // volatile, read-only remounts, descriptors closed one by one), which the VM test
    // (tests/it/kernels.rs) runs on real old kernels.
    if !fallbacks {
        let again = std::process::Command::new(std::env::current_exe().unwrap())
            .args(filter.as_slice())
            .env(runner::FALLBACKS_ENV, "all")
            .status()
            .unwrap();
        if !again.success() {
            failed += 1;
        }
    }
    if failed > 0 {
        std::process::exit(1);
    }
}
