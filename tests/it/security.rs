use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Env, RBUILD};

#[test]
fn copy_of_an_absolute_host_path_reads_the_context() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "abs",
        &[
            ("Dockerfile", "FROM busybox:local\nCOPY /etc/shadow /got\n"),
            ("etc/shadow", "from-context\n"),
        ],
    );
    env.build_plain("abs:1", &ctx, &[]);
    assert_eq!(env.run_sh("abs:1", "cat /got"), "from-context\n");
    std::fs::remove_file(ctx.join("etc/shadow")).unwrap();
    let err = env.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(!err.contains("root:"), "{err}");
    assert!(
        err.contains("/etc/shadow") && err.contains("not found in the build context"),
        "the COPY fails for its missing source, not for another reason: {err}"
    );
}

/// A context symlink to a host file, named as a COPY source, is followed inside the context only (as
/// BuildKit, which resolves it as if the context were `/`): the build fails saying the link leaves the
/// context, and the host file is read by no one. Symlinks below a copied directory stay symlinks.
/// See: #17 (item 9), #19 (item 9)
#[test]
fn context_symlink_to_a_host_file_is_refused_and_never_read() {
    let env = Env::new();
    env.busybox();
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let ctx = env.context(
        "link",
        &[("Dockerfile", "FROM busybox:local\nCOPY leak /leak\n")],
    );
    std::os::unix::fs::symlink("/etc/hostname", ctx.join("leak")).unwrap();
    let err = env.fails(&["build", "-t", "link:1", ctx.to_str().unwrap()]);
    assert!(err.contains("outside the build context"), "{err}");
    assert!(
        host.trim().is_empty() || !err.contains(host.trim()),
        "{err}"
    );

    let ctx = env.context(
        "link-in-dir",
        &[("Dockerfile", "FROM busybox:local\nCOPY d /d\n")],
    );
    std::fs::create_dir_all(ctx.join("d")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", ctx.join("d/leak")).unwrap();
    env.build_plain("link:2", &ctx, &[]);
    let out = env.run_sh(
        "link:2",
        "readlink /d/leak; cat /d/leak 2>/dev/null || echo dangling",
    );
    assert_eq!(out, "/etc/hostname\ndangling\n");
}

#[test]
fn workdir_through_proc_self_fd_reaches_no_host_file() {
    let env = Env::new();
    env.busybox();
    let marker = format!("rbuild-host-marker-{}", std::process::id());
    std::fs::write(env.dir.path().join(&marker), "host").unwrap();
    for n in 3..=8 {
        let ctx = env.context(
            &format!("fd{n}"),
            &[(
                "Dockerfile",
                &format!(
                    "FROM busybox:local\nWORKDIR /proc/self/fd/{n}\n\
                     RUN find ../../../../../../../../../../ -maxdepth 4 -name 'rbuild-host-marker-*' > /out 2>/dev/null; true\n"
                ),
            )],
        );
        let tag = format!("fd:{n}");
        let out = env.rbuild(&[
            "build",
            "--progress",
            "plain",
            "-t",
            &tag,
            ctx.to_str().unwrap(),
        ]);
        // Either the RUN finds nothing of the host, or the sandbox refuses the working directory (fds
        // of rbuild's own are closed before the chdir): nothing else, in particular no other failure.
        if out.status.success() {
            assert_eq!(env.run_sh(&tag, "cat /out"), "", "fd {n} reached the host");
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            let path = format!("/proc/self/fd/{n}: No such file or directory");
            assert!(
                stderr.contains(&path)
                    && (stderr.contains("failed to change directory to")
                        || stderr.contains("failed to create the working directory")),
                "fd {n}: the build failed for another reason:\n{stderr}"
            );
        }
    }
}

#[test]
fn run_sees_no_host_process_or_mount() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "proc",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN tr '\\0' ' ' < /proc/1/cmdline > /pid1; cat /proc/mounts > /mounts; ls /proc | grep -c '^[0-9]' > /n\n",
        )],
    );
    env.build_plain("proc:1", &ctx, &[]);
    let pid1 = env.run_sh("proc:1", "cat /pid1");
    assert!(
        pid1.contains("__rbuild-runner-init"),
        "PID 1 is not the sandbox init: {pid1}"
    );
    let n: usize = env.run_sh("proc:1", "cat /n").trim().parse().unwrap();
    assert!(n <= 5, "{n} processes visible");
    let mounts = env.run_sh("proc:1", "cat /mounts");
    for line in mounts.lines() {
        let target = line.split_whitespace().nth(1).unwrap();
        assert!(
            target == "/"
                || ["/proc", "/dev", "/sys", "/etc/hosts", "/etc/resolv.conf"]
                    .iter()
                    .any(|p| target == *p || target.starts_with(&format!("{p}/"))),
            "unexpected mount in the sandbox: {line}"
        );
        // Only the rootfs overlay names host dirs (its lower/upper options, as under Docker).
        assert!(
            target == "/" || !line.contains(env.dir.path().to_str().unwrap()),
            "host path shown: {line}"
        );
    }
}

#[test]
fn locked_cache_mount_serialises_concurrent_builds() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "locked",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN --mount=type=cache,id=counter,target=/c,sharing=locked \
             i=0; while [ $i -lt 1000 ]; do n=$(cat /c/n 2>/dev/null || echo 0); echo $((n+1)) > /c/n; i=$((i+1)); done\n\
             RUN --mount=type=cache,id=counter,target=/c,sharing=locked cat /c/n > /count\n",
        )],
    );
    let spawn = |tag: &str| {
        Command::new(RBUILD)
            .args([
                "--root",
                env.root().to_str().unwrap(),
                "build",
                "--no-cache",
                "--progress",
                "plain",
                "-t",
                tag,
            ])
            .arg(&ctx)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("lk:a"), spawn("lk:b"));
    for c in [a, b] {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let counts: Vec<String> = ["lk:a", "lk:b"]
        .iter()
        .map(|t| env.run_sh(t, "cat /count"))
        .collect();
    assert!(
        counts.contains(&"2000\n".to_owned()),
        "lost updates: {counts:?}"
    );
}

fn sandbox_processes(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd).replace('\0', " ").trim() == needle {
                out.push(pid);
            }
        }
    }
    out
}

fn host_mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(str::to_owned)
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn nothing_is_left_behind_after_success_failure_or_kill() {
    let env = Env::new();
    env.busybox();
    let ok = env.context(
        "ok",
        &[("Dockerfile", "FROM busybox:local\nRUN echo ok > /f\n")],
    );
    env.build_plain("ok:1", &ok, &[]);
    let fail = env.context(
        "fail",
        &[("Dockerfile", "FROM busybox:local\nRUN exit 3\n")],
    );
    let err = env.fails(&["build", "--progress", "plain", fail.to_str().unwrap()]);
    assert!(err.contains("exited with code 3"), "{err}");
    assert_eq!(host_mounts_under(env.dir.path()), Vec::<String>::new());

    let slow = env.context(
        "slow",
        &[("Dockerfile", "FROM busybox:local\nRUN sleep 31337\n")],
    );
    let mut child = Command::new(RBUILD)
        .args([
            "--root",
            env.root().to_str().unwrap(),
            "build",
            "--progress",
            "plain",
        ])
        .arg(&slow)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the RUN is running", || {
        !sandbox_processes("sleep 31337").is_empty()
    });
    child.kill().unwrap(); // SIGKILL: rbuild gets no chance to clean up
    child.wait().unwrap();
    wait_until("the sandbox is gone", || {
        sandbox_processes("sleep 31337").is_empty()
    });
    assert_eq!(host_mounts_under(env.dir.path()), Vec::<String>::new());
}

#[test]
fn build_network_none_and_no_new_privileges_reach_run_steps_and_the_cache_key() {
    let env = Env::new();
    env.busybox();
    let host_ifaces = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .filter(|l| l.contains(':'))
        .count();
    let ctx = env.context(
        "net-flags",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN grep -c : /proc/net/dev > /ifaces; grep NoNewPrivs /proc/self/status | tr -d ' \\t' > /nnp\n\
             RUN --network=host grep -c : /proc/net/dev > /ifaces-host\n",
        )],
    );
    let c = ctx.to_str().unwrap();
    let show = "cat /ifaces /nnp /ifaces-host";

    // RUN --network=host needs the network.host entitlement, as in BuildKit.
    env.ok(&["build", "--allow", "network.host", "-t", "net:default", c]);
    let out = env.ok(&["run", "net:default", "sh", "-c", show]).0;
    assert_eq!(out, format!("{host_ifaces}\nNoNewPrivs:0\n{host_ifaces}\n"));

    // Build-wide flags change what RUN sees; the cache does not hand back the default build's layer.
    let (_, log) = env.ok(&[
        "build",
        "--progress",
        "plain",
        "--network",
        "none",
        "--no-new-privileges",
        "--allow",
        "network.host",
        "-t",
        "net:none",
        c,
    ]);
    assert!(
        log.contains("cache miss: build options changed"),
        "the options are in the key: {log}"
    );
    let out = env.ok(&["run", "net:none", "sh", "-c", show]).0;
    assert_eq!(
        out,
        format!("1\nNoNewPrivs:1\n{host_ifaces}\n"),
        "only loopback without a network; RUN --network=host keeps the host's"
    );

    // `rbuild run --security-opt no-new-privileges`, and a clear error for what is not supported.
    let out = env
        .ok(&[
            "run",
            "--security-opt",
            "no-new-privileges",
            "net:default",
            "grep",
            "NoNewPrivs",
            "/proc/self/status",
        ])
        .0;
    assert!(out.contains('1'), "{out}");
    let err = env.fails(&["run", "--security-opt", "apparmor=x", "net:default", "true"]);
    assert!(
        err.contains("--security-opt") && err.contains("apparmor=x"),
        "{err}"
    );
    // seccomp=unconfined drops the filter (Seccomp: 0 in /proc/self/status), as docker run's option.
    let status = |opts: &[&str]| {
        let mut a = vec!["run"];
        a.extend_from_slice(opts);
        a.extend_from_slice(&["net:default", "grep", "^Seccomp:", "/proc/self/status"]);
        env.ok(&a)
            .0
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(status(&[]), "2");
    assert_eq!(status(&["--security-opt", "seccomp=unconfined"]), "0");
}

// See: #19. `RUN mknod /k c 1 11 && echo x > /k` wrote to the host's kernel log. In RUN and in `rbuild run`
// a node can be made (it lands in the layer, as Docker allows) but not opened; a node the image ships
// does not open either. Char 1:3 (null) exists on every host, so an open that worked would show.
#[test]
fn r19_run_and_rbuild_run_create_device_nodes_but_cannot_open_them() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "devnodes",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN mknod /k c 1 3 && (echo x > /k && echo opened || echo denied) > /r 2>&1\n",
        )],
    );
    env.build_plain("devnodes:1", &ctx, &[]);
    let out = env.run_sh(
        "devnodes:1",
        "cat /r; test -c /k && echo shipped; (echo x > /k) 2>&1; mknod /k2 c 1 3 && (echo x > /k2) 2>&1; true",
    );
    // /r holds the shell's own message and "denied"; then the shipped node and the one made at run time.
    assert!(out.contains("denied\nshipped\n"), "{out}");
    assert_eq!(out.matches("Permission denied").count(), 3, "{out}");
    assert!(!out.contains("opened"), "{out}");
}
