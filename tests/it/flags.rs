//! buildx's build flags that shape every RUN step, each seen from inside a RUN: `--add-host`,
//! `--shm-size`, `--ulimit`, `--secret id=X` from the environment. Behaviour follows
//! `docker buildx build` (buildx v0.17 `build/build.go`; BuildKit's `ExtraHosts`, `ShmSize`, `Ulimit`).

use crate::common::{expect_success, Env, RBUILD};

#[test]
fn add_host_shm_size_and_ulimit_apply_to_every_run() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "run-flags",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN grep db.internal /etc/hosts > /hosts && grep v6.internal /etc/hosts >> /hosts\n\
             RUN df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n\
             RUN echo $(ulimit -Sn) $(ulimit -Hn) > /nofile\n",
        )],
    );
    env.build_plain(
        "flags:1",
        &ctx,
        &[
            "--add-host",
            "db.internal:10.1.2.3",
            "--add-host",
            "v6.internal=::1",
            "--shm-size",
            "128m",
            "--ulimit",
            "nofile=512:1024",
        ],
    );
    assert_eq!(
        env.run_sh("flags:1", "cat /hosts"),
        "10.1.2.3\tdb.internal\n::1\tv6.internal\n"
    );
    assert_eq!(env.run_sh("flags:1", "cat /shm"), "131072\n");
    assert_eq!(env.run_sh("flags:1", "cat /nofile"), "512 1024\n");
}

#[test]
fn ulimit_above_the_hard_limit_fails_clearly() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "ulimit-raise",
        &[("Dockerfile", "FROM busybox:local\nRUN ulimit -Hn\n")],
    );
    // Above the kernel's maximum of open files: no process may raise its hard limit there.
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let limit = format!("nofile={0}:{0}", nr_open + 1);
    let e = env.fails(&["build", "--ulimit", &limit, ctx.to_str().unwrap()]);
    assert!(
        e.contains("ulimit nofile: cannot raise the hard limit"),
        "{e}"
    );
    let e = env.fails(&["build", "--ulimit", "nofiles=1", ctx.to_str().unwrap()]);
    assert!(e.contains("invalid ulimit type \"nofiles\""), "{e}");
    let e = env.fails(&["build", "--add-host", "db", ctx.to_str().unwrap()]);
    assert!(e.contains("expected HOST:IP"), "{e}");
}

#[test]
fn secret_by_id_alone_reads_the_environment_variable_of_that_name() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "secret-env",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             # The value is compared base64-encoded: the Dockerfile's text is in the history.\n\
             RUN --mount=type=secret,id=API_TOKEN,env=TOKEN test \"$TOKEN\" = \"$(echo czNjcjN0LWJ5LWVudg== | base64 -d)\" && echo ok > /ok\n\
             RUN --mount=type=secret,id=other cat /run/secrets/other > /dev/null && echo ok2 >> /ok\n",
        )],
    );
    let out = std::process::Command::new(crate::common::RBUILD)
        .arg("--root")
        .arg(env.root())
        .args([
            "build",
            "-t",
            "sec:1",
            "--secret",
            "id=API_TOKEN",
            "--secret",
            "id=other,env=OTHER_VAR",
        ])
        .arg(&ctx)
        .env("API_TOKEN", "s3cr3t-by-env")
        .env("OTHER_VAR", "other-value")
        .output()
        .unwrap();
    crate::common::expect_success(&out, &["build", "--secret", "id=API_TOKEN"]);
    assert_eq!(env.run_sh("sec:1", "cat /ok"), "ok\nok2\n");
    crate::common::assert_not_in_store(&env.root(), "s3cr3t-by-env");
}

/// The cgroup path of this process in the hierarchy with the memory controller (v1), or the unified one.
fn own_memory_cgroup() -> String {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let line = |want: &dyn Fn(&str) -> bool| {
        text.lines()
            .find(|l| want(l.split(':').nth(1).unwrap_or("")))
            .map(|l| l.splitn(3, ':').nth(2).unwrap().to_owned())
    };
    line(&|c| c.split(',').any(|x| x == "memory"))
        .or_else(|| line(&str::is_empty))
        .unwrap()
}

#[test]
fn cgroup_limits_are_seen_inside_a_run_and_a_memory_overrun_fails_clearly() {
    let env = Env::new();
    env.busybox();
    // v1 shows each controller under its name, the unified hierarchy the files at the top.
    let ctx = env.context(
        "cgroups",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN cd /sys/fs/cgroup && \
                 (cat memory/memory.limit_in_bytes 2>/dev/null || cat memory.max) > /memory && \
                 (cat pids/pids.max 2>/dev/null || cat pids.max) > /pids && \
                 (echo $(cat cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us) 2>/dev/null || cat cpu.max) > /cpu && \
                 cat /proc/self/cgroup > /cgroup\n",
        )],
    );
    let parent = format!("{}/rbuild-it-{}", own_memory_cgroup(), std::process::id());
    env.build_plain(
        "cg:1",
        &ctx,
        &["--memory", "64m", "--pids-limit", "50", "--cpus", "0.5"],
    );
    assert_eq!(
        env.run_sh("cg:1", "cat /memory /pids /cpu"),
        "67108864\n50\n50000 100000\n"
    );
    // Nothing is left behind: the RUN's cgroup is gone.
    let cg = env.run_sh("cg:1", "grep memory /cgroup || grep '^0::' /cgroup");
    let leaf = cg.trim().rsplit('/').next().unwrap().to_owned();
    assert!(leaf.starts_with("rbuild-"), "{cg}");
    let roots = [
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ];
    let own = own_memory_cgroup();
    for root in roots {
        let p = std::path::Path::new(root)
            .join(own.trim_start_matches('/'))
            .join(&leaf);
        assert!(!p.exists(), "{} was left behind", p.display());
    }

    // --cgroup-parent: the RUN's cgroup is made below it.
    let only_cgroup = env.context(
        "cgroups-parent",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN cat /proc/self/cgroup > /cgroup\n",
        )],
    );
    env.build_plain(
        "cg:2",
        &only_cgroup,
        &["--memory", "64m", "--cgroup-parent", &parent],
    );
    let seen = env.run_sh("cg:2", "cat /cgroup");
    assert!(seen.contains(&format!("{parent}/rbuild-")), "{seen}");
    for root in roots {
        // The parent made for the test (empty again now) goes; a missing one is fine.
        let _ =
            std::fs::remove_dir(std::path::Path::new(root).join(parent.trim_start_matches('/')));
    }

    let hog = env.context(
        "cgroups-oom",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN dd if=/dev/zero of=/dev/null bs=200M count=1\n",
        )],
    );
    let e = env.fails(&["build", "--memory", "64m", hog.to_str().unwrap()]);
    assert!(
        e.contains("out of memory: the command was killed for using more than the memory limit of 67108864 bytes (64 MiB, --memory)"),
        "{e}"
    );
}

#[test]
fn security_insecure_and_network_host_need_allow() {
    let env = Env::new();
    env.busybox();
    // BuildKit's insecure mode: every capability, no seccomp filter (mount works, CapEff is full).
    let ctx = env.context(
        "insecure",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN grep -E '^(CapEff|Seccomp):' /proc/self/status | tr -d ' \\t' > /sandboxed\n\
             RUN --security=insecure grep -E '^(CapEff|Seccomp):' /proc/self/status | tr -d ' \\t' > /insecure && \
                 mkdir -p /m && mount -t tmpfs none /m && umount /m && echo mounted >> /insecure\n",
        )],
    );
    let c = ctx.to_str().unwrap();
    let e = env.fails(&["build", c]);
    assert!(
        e.contains("RUN --security=insecure is not allowed: build with --allow security.insecure"),
        "{e}"
    );
    env.ok(&["build", "--allow", "security.insecure", "-t", "ins:1", c]);
    // Every capability rbuild holds (as this test does: root, on some hosts without a few).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let held = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    assert_eq!(
        env.run_sh("ins:1", "cat /sandboxed /insecure"),
        format!("CapEff:00000000a80425fb\nSeccomp:2\nCapEff:{held}\nSeccomp:0\nmounted\n")
    );
    // A cached insecure step still needs the entitlement.
    let e = env.fails(&["build", c]);
    assert!(e.contains("--allow security.insecure"), "{e}");

    let net = env.context(
        "net-host",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN --network=host true\n",
        )],
    );
    let n = net.to_str().unwrap();
    let e = env.fails(&["build", n]);
    assert!(
        e.contains("RUN --network=host is not allowed: build with --allow network.host"),
        "{e}"
    );
    env.ok(&["build", "--allow", "network.host", n]);
    env.ok(&["build", "--network", "host", n]);
    let e = env.fails(&["build", "--allow", "device=x", n]);
    assert!(e.contains("unknown entitlement"), "{e}");
}

#[test]
fn squash_makes_one_layer_on_the_base_and_squash_all_one_layer() {
    let env = Env::new();
    env.busybox();
    let layer_count = |image: &str| {
        let (so, _) = env.ok(&["inspect", image]);
        let v: serde_json::Value = serde_json::from_str(&so).unwrap();
        v["Manifest"]["layers"].as_array().unwrap().len()
    };
    let base = layer_count("busybox:local");
    let ctx = env.context(
        "squash",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN echo a > /a && mkdir /d && echo x > /d/x\n\
             RUN echo b > /b && echo y > /d/y\n\
             RUN rm /a /d/x /bin/ls\n",
        )],
    );
    let show = "test ! -e /a && test ! -e /d/x && test ! -e /bin/ls && cat /b /d/y";
    env.build_plain("sq:plain", &ctx, &[]);
    assert_eq!(layer_count("sq:plain"), base + 3);
    env.build_plain("sq:new", &ctx, &["--squash"]);
    assert_eq!(
        layer_count("sq:new"),
        base + 1,
        "the base's layers, then one"
    );
    // The base's /bin/ls stays deleted: the squashed layer keeps its whiteout.
    assert_eq!(env.run_sh("sq:new", show), "b\ny\n");
    env.build_plain("sq:all", &ctx, &["--squash-all"]);
    assert_eq!(layer_count("sq:all"), 1);
    assert_eq!(env.run_sh("sq:all", show), "b\ny\n");
    // A build on the squashed image sees the same files.
    let on = env.context(
        "on-squashed",
        &[(
            "Dockerfile",
            "FROM sq:new\nRUN cat /b > /seen && ls /d > /ls\n",
        )],
    );
    env.build_plain("sq:on", &on, &[]);
    assert_eq!(env.run_sh("sq:on", "cat /seen /ls"), "b\ny\n");
    let e = env.fails(&["build", "--squash", "--squash-all", ctx.to_str().unwrap()]);
    assert!(e.contains("cannot be used with"), "{e}");
}

/// `--add-host NAME:host-gateway` reaches a service of the host from a RUN. buildx (current
/// docker/buildx `toBuildkitExtraHosts`) puts its worker's host-gateway IP there (dockerd's bridge
/// gateway); rbuild's RUN shares the host's network namespace, so the host is 127.0.0.1 (see
/// docs/MIGRATING.md).
#[test]
fn add_host_gateway_reaches_a_service_on_the_host() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf).unwrap();
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nfrom-host")
            .unwrap();
    });
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "host-gateway",
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox:local\n\
                 RUN grep host.docker.internal /etc/hosts > /hosts \
                     && wget -qO /answer http://host.docker.internal:{port}/\n"
            ),
        )],
    );
    env.build_plain(
        "gw:1",
        &ctx,
        &["--add-host", "host.docker.internal:host-gateway"],
    );
    server.join().unwrap();
    assert_eq!(
        env.run_sh("gw:1", "cat /hosts"),
        "127.0.0.1\thost.docker.internal\n"
    );
    assert_eq!(env.run_sh("gw:1", "cat /answer"), "from-host");
}

/// docker build's `--memory-swap`, `--cpu-shares` and `--cpuset-cpus`, seen from inside a RUN: the
/// files of its own cgroup (v1 names, or v2's `memory.swap.max` = swap beyond `--memory`, and
/// `cpu.weight` converted from the shares as runc does) and the CPUs the kernel lets it run on.
/// Follows docker/dockerd's flag semantics (`--memory-swap` is memory plus swap, -1 unlimited).
#[test]
fn memory_swap_cpu_shares_and_cpuset_apply_to_every_run() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "cg-more",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN cd /sys/fs/cgroup && \
                 (cat memory/memory.memsw.limit_in_bytes 2>/dev/null || cat memory.swap.max) > /swap && \
                 (cat cpu/cpu.shares 2>/dev/null || cat cpu.weight) > /shares && \
                 (cat cpuset/cpuset.cpus 2>/dev/null || cat cpuset.cpus) > /cpuset && \
                 grep Cpus_allowed_list /proc/self/status | cut -f2 > /allowed\n",
        )],
    );
    env.build_plain(
        "cgm:1",
        &ctx,
        &[
            "--memory",
            "64m",
            "--memory-swap",
            "96m",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
        ],
    );
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let (swap, shares) = if v1 {
        ("100663296", "512")
    } else {
        ("33554432", "20")
    };
    assert_eq!(
        env.run_sh("cgm:1", "cat /swap /shares /cpuset /allowed"),
        format!("{swap}\n{shares}\n0\n0\n")
    );
    let e = env.fails(&["build", "--memory-swap", "32m", ctx.to_str().unwrap()]);
    assert!(e.contains("--memory-swap needs --memory"), "{e}");
    let e = env.fails(&[
        "build",
        "--memory",
        "64m",
        "--memory-swap",
        "32m",
        ctx.to_str().unwrap(),
    ]);
    assert!(e.contains("must be at least --memory"), "{e}");
}

/// `rbuild --root <store> ARGS…` with the CDI spec dirs set to `dirs`.
fn rbuild_cdi(env: &Env, dirs: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(RBUILD)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .env("NO_COLOR", "1")
        .env("RBUILD_CDI_SPEC_DIRS", dirs)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running rbuild")
}

// BuildKit ≥ 0.20 (docs/cdi.md, client_cdi_test.go): a CDI device's env, device nodes and mounts
// reach the RUN; it needs `--allow device` unless its spec has the autoallow annotation; a missing
// device fails the build only when required.
#[test]
fn run_device_applies_a_cdi_spec_and_needs_allow_device() {
    let env = Env::new();
    env.busybox();
    let specs = env.context("cdi", &[("shared/f", "from-host\n")]);
    let shared = specs.join("shared");
    std::fs::write(
        specs.join("test.yaml"),
        format!(
            "cdiVersion: \"0.6.0\"\nkind: rbuild.test/dev\ndevices:\n- name: zero\n  containerEdits:\n    \
             env: [CDI_FOO=injected]\n    deviceNodes:\n    - path: /dev/mydev\n      hostPath: /dev/zero\n    \
             mounts:\n    - hostPath: {}\n      containerPath: /opt/cdi\n      options: [ro, bind]\n",
            shared.display()
        ),
    )
    .unwrap();
    std::fs::write(
        specs.join("auto.json"),
        r#"{"cdiVersion":"0.6.0","kind":"rbuild.test/auto",
            "annotations":{"org.mobyproject.buildkit.device.autoallow":"true"},
            "devices":[{"name":"a","containerEdits":{"env":["AUTO=yes"]}}]}"#,
    )
    .unwrap();
    let ctx = env.context(
        "device",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN --device=rbuild.test/dev=zero,required sh -c 'echo $CDI_FOO > /out; \
                 head -c 3 /dev/mydev | od -An -tx1 | tr -d \" \" >> /out; cat /opt/cdi/f >> /out; \
                 touch /opt/cdi/w 2>/dev/null || echo ro >> /out'\n",
        )],
    );
    let c = ctx.to_str().unwrap();
    let out = rbuild_cdi(&env, &specs, &["build", c]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("device rbuild.test/dev=zero is requested by the build but not allowed: build with --allow device"),
        "{e}"
    );
    let args = ["build", "--allow", "device", "-t", "dev:1", c];
    expect_success(&rbuild_cdi(&env, &specs, &args), &args);
    assert_eq!(
        env.run_sh("dev:1", "cat /out; test -e /opt/cdi || echo no-mountpoint"),
        "injected\n000000\nfrom-host\nro\nno-mountpoint\n"
    );

    // The autoallow annotation needs no --allow; a missing optional device is left out with a
    // warning; a missing required one fails.
    let auto = env.context(
        "device-auto",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN --device=rbuild.test/auto --device=rbuild.test/dev=nope sh -c 'echo $AUTO > /auto'\n",
        )],
    );
    let args = ["build", "-t", "dev:2", auto.to_str().unwrap()];
    let (_, se) = expect_success(&rbuild_cdi(&env, &specs, &args), &args);
    assert!(
        se.contains("RUN --device=rbuild.test/dev=nope: device not found in the CDI specs"),
        "{se}"
    );
    assert_eq!(env.run_sh("dev:2", "cat /auto"), "yes\n");
    let req = env.context(
        "device-req",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN --device=rbuild.test/dev=nope,required true\n",
        )],
    );
    let out = rbuild_cdi(
        &env,
        &specs,
        &["build", "--allow", "device", req.to_str().unwrap()],
    );
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        e.contains("RUN --device=rbuild.test/dev=nope: required device not found"),
        "{e}"
    );
}
