//! `--isolation=chroot` in a pod-like environment: rbuild runs as root without CAP_SYS_ADMIN
//! (`setpriv` drops it from the bounding set), so no namespace or mount can be made.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{assert_not_in_store, expect_success, require, Env, Registry, RBUILD};

const SETPRIV: &str = "/usr/bin/setpriv";

/// `rbuild --root <store> ARGS…` as root without CAP_SYS_ADMIN, like a Kubernetes pod with
/// Docker's default capabilities.
fn pod(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    require(SETPRIV, "util-linux");
    Command::new(SETPRIV)
        .args(["--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"])
        .arg(RBUILD)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .envs(vars.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running rbuild under setpriv")
}

fn pod_ok(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> (String, String) {
    expect_success(&pod(env, args, vars), args)
}

fn pod_fails(env: &Env, args: &[&str]) -> String {
    let out = pod(env, args, &[]);
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "rbuild {args:?}: {:?}\n{se}",
        out.status
    );
    assert!(!se.contains("panicked"), "rbuild panicked: {se}");
    se
}

fn build(env: &Env, tag: &str, ctx: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--isolation=chroot",
        "-t",
        tag,
    ];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().expect("utf-8 path"));
    pod_ok(env, &args, &[])
}

/// `rbuild run --isolation=chroot IMAGE sh -c SCRIPT` without CAP_SYS_ADMIN; returns stdout.
fn run_sh(env: &Env, image: &str, script: &str) -> String {
    pod_ok(
        env,
        &["run", "--isolation", "chroot", image, "sh", "-c", script],
        &[],
    )
    .0
}

#[test]
fn default_isolation_without_sys_admin_says_to_use_chroot() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context("ns", &[("Dockerfile", "FROM busybox:local\nRUN true\n")]);
    let err = pod_fails(
        &env,
        &["build", "--progress", "plain", ctx.to_str().unwrap()],
    );
    assert!(
        err.contains("cannot create namespaces (Operation not permitted)")
            && err.contains("run with --isolation=chroot"),
        "{err}"
    );
    // `rbuild run` says the same.
    let err = pod_fails(&env, &["run", "busybox:local", "true"]);
    assert!(err.contains("--isolation=chroot"), "{err}");
}

/// Every path of an image outside /proc, /dev and /sys, with kind, owner, mode, link count and
/// (for files) size and content checksum.
const LIST: &str = "find / -path /proc -prune -o -path /dev -prune -o -path /sys -prune -o -print \
     | sort | while read -r p; do if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then \
     echo \"$(stat -c '%n %F %u:%g %a %h %s' \"$p\") $(md5sum < \"$p\" | cut -c1-8)\"; \
     else stat -c '%n %F %u:%g %a' \"$p\"; fi; done";

#[test]
fn chroot_build_records_exactly_the_changes_and_leaves_nothing_running() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "changes",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN echo added > /added && echo extra:x:1500:1500::/:/bin/sh >> /etc/passwd && rm /etc/group && rm -r /var \
             && chown 12:34 /added && chmod 4711 /added && ln -s /added /link && ln /added /hard \
             && mkdir -p /d/e && echo deep > /d/e/f && chmod 700 /root\n\
             RUN sleep 31337 & echo started\n\
             RUN rm -r /home && mkdir /home && echo new > /home/file && rm /link && mkdir /link\n",
        )],
    );
    let mounts_before = std::fs::read_to_string("/proc/mounts").unwrap();
    let (_, log) = build(&env, "chroot:1", &ctx, &[]);
    assert!(log.contains("started"), "{log}");
    let mounts_after = std::fs::read_to_string("/proc/mounts").unwrap();
    let store = env.dir.path().to_str().unwrap();
    assert!(
        !mounts_after.contains(store),
        "a mount of the build is left: {mounts_after}"
    );
    assert_eq!(
        mounts_before.lines().filter(|l| l.contains(store)).count(),
        0
    );
    let pgrep = Command::new("pgrep")
        .args(["-f", "sleep 31337"])
        .output()
        .unwrap();
    assert!(
        pgrep.stdout.is_empty(),
        "a RUN's background process is still running: {}",
        String::from_utf8_lossy(&pgrep.stdout)
    );

    let got = run_sh(
        &env,
        "chroot:1",
        "cat /added; tail -n1 /etc/passwd; test -e /etc/group || echo no-group; \
         test -e /var || echo no-var; stat -c '%a %u %g %h' /added; test -d /link && echo link-dir; \
         [ \"$(stat -c %i /added)\" = \"$(stat -c %i /hard)\" ] && echo hardlinked; \
         cat /d/e/f; ls /home; stat -c %a /root",
    );
    assert_eq!(
        got,
        "added\nextra:x:1500:1500::/:/bin/sh\nno-group\nno-var\n4711 12 34 2\nlink-dir\nhardlinked\ndeep\nfile\n700\n"
    );

    // The same Dockerfile with the default isolation (as root with every capability) gives the
    // same tree: nothing more, nothing less.
    env.build_plain("ns:1", &ctx, &["--no-cache"]);
    let chroot_tree = env.run_sh("chroot:1", LIST);
    let ns_tree = env.run_sh("ns:1", LIST);
    assert!(
        chroot_tree.contains("/added regular file 12:34 4711 2"),
        "{chroot_tree}"
    );
    assert_eq!(chroot_tree, ns_tree);
}

#[test]
fn chroot_mounts_cache_bind_secret_and_network_none() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "mounts",
        &[
            ("dir/a", "ctx-a\n"),
            (
                "Dockerfile",
                "FROM busybox:local\n\
                 RUN --mount=type=cache,id=cc,target=/c,sharing=locked echo x >> /c/log && wc -l < /c/log > /count\n\
                 RUN --mount=type=bind,source=dir,target=/ctx cat /ctx/a > /got && echo w > /ctx/a\n\
                 RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /len && cat /run/secrets/tok > /dev/null\n\
                 RUN --mount=type=tmpfs,target=/tmp echo t > /tmp/t && ls /tmp > /tmpls\n",
            ),
        ],
    );
    let secret_file = env.dir.path().join("tok.txt");
    std::fs::write(&secret_file, SECRET).unwrap();
    let secret = format!("id=tok,src={}", secret_file.display());
    let (so1, se1) = build(&env, "m:1", &ctx, &["--secret", &secret]);
    let (so2, se2) = build(&env, "m:2", &ctx, &["--secret", &secret, "--no-cache"]);
    let expected = |n: u32| format!("{n}\nctx-a\n{}\nt\nno-c no-secret\n", SECRET.len());
    let script = "cat /count /got /len /tmpls; ls /tmp; test -e /c && echo c || echo -n no-c; \
                  test -e /run/secrets || echo ' no-secret'";
    assert_eq!(run_sh(&env, "m:1", script), expected(1));
    assert_eq!(run_sh(&env, "m:2", script), expected(2));
    // The context was not changed by the RUN's write (a read-only bind's writes are discarded).
    assert_eq!(
        std::fs::read_to_string(ctx.join("dir/a")).unwrap(),
        "ctx-a\n"
    );

    // The secret is nowhere in the store (blobs decompressed, records, snapshots) nor the logs.
    for text in [&so1, &se1, &so2, &se2] {
        assert!(!text.contains(SECRET), "secret in build output: {text}");
    }
    assert_not_in_store(&env.root(), SECRET);

    // --network=none cannot work without a network namespace: a clear error.
    let none = env.context("none", &[("Dockerfile", "FROM busybox:local\nRUN true\n")]);
    let err = pod_fails(
        &env,
        &[
            "build",
            "--progress",
            "plain",
            "--isolation=chroot",
            "--network=none",
            none.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains(
            "rbuild-runner: --network=none needs a network namespace, which --isolation=chroot \
             does not create; use the default network or the default isolation"
        ),
        "{err}"
    );
    // RBUILD_ISOLATION is the flag's fallback.
    let out = pod(
        &env,
        &["run", "--network", "none", "busybox:local", "true"],
        &[("RBUILD_ISOLATION", "chroot")],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--network=none needs a network namespace")
    );
}

const SECRET: &str = "Chr00tS3cretValue-0815";

/// A base image whose layers hold an opaque directory and a whiteout, pulled and unpacked by a
/// process without CAP_SYS_ADMIN (which cannot set `trusted.*` xattrs): the deleted files stay
/// deleted in the chroot rootfs.
#[test]
fn chroot_build_on_a_pulled_base_with_an_opaque_directory() {
    let root_env = Env::new();
    root_env.busybox();
    let reg = Registry::start();
    let ctx = root_env.context(
        "base",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN mkdir -p /opt/d && echo old > /opt/d/old && echo gone > /opt/gone\n\
             RUN rm -r /opt/d /opt/gone && mkdir /opt/d && echo new > /opt/d/new\n",
        )],
    );
    let base = format!("{}/chroot/opaque:1", reg.addr);
    root_env.ok(&["build", "-t", &base, "--push", ctx.to_str().unwrap()]);

    let env = Env::new();
    let ctx = env.context(
        "app",
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN ls /opt /opt/d > /listing\n"),
        )],
    );
    build(&env, "opaque:1", &ctx, &[]);
    assert_eq!(
        run_sh(&env, "opaque:1", "cat /listing"),
        "/opt:\nd\n\n/opt/d:\nnew\n"
    );
}
