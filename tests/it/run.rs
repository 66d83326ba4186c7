use crate::common::{Env, Registry};

#[test]
fn run_passes_exit_code_env_and_command() {
    let env = Env::new();
    env.busybox();
    let out = env.rbuild(&[
        "run",
        "-e",
        "WHO=tester",
        "busybox:local",
        "sh",
        "-c",
        "echo hi $WHO; exit 42",
    ]);
    assert_eq!(out.status.code(), Some(42));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi tester");
}

#[test]
fn run_is_sandboxed() {
    let env = Env::new();
    env.busybox();
    let (out, _) = env.ok(&[
        "run",
        "busybox:local",
        "sh",
        "-c",
        "ls /proc | grep -c '^[0-9]'; grep CapEff /proc/self/status",
    ]);
    let mut lines = out.lines();
    let pids: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(pids <= 5, "the container sees host processes: {out}");
    assert_eq!(
        lines.next().unwrap().split_whitespace().nth(1),
        Some("00000000a80425fb")
    );
}

#[test]
fn run_of_a_missing_image_fails_clearly() {
    let env = Env::new();
    let err = env.fails(&["run", "nosuch:img", "true"]);
    assert!(err.contains("nosuch"), "{err}");
}

#[test]
fn run_pulls_an_image_that_is_only_in_a_registry() {
    let producer = Env::new();
    producer.busybox();
    let reg = Registry::start();
    let image = format!("{}/demo/runme:1", reg.addr);
    let ctx = producer.context(
        "runme",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo pulled and run > /msg\nCMD [\"cat\", \"/msg\"]\n",
        )],
    );
    producer.ok(&["build", "-t", &image, "--push", ctx.to_str().unwrap()]);

    // A fresh store has nothing: `rbuild run` resolves the image on its registry and fetches its layers.
    let fresh = Env::new();
    let (out, _) = fresh.ok(&["run", &image]);
    assert_eq!(out, "pulled and run\n");
    // Its blobs are now in that store: with the registry gone it still runs.
    drop(reg);
    let (out, _) = fresh.ok(&["run", &image, "cat", "/msg"]);
    assert_eq!(out, "pulled and run\n");
}

/// RUN steps and `rbuild run` get a volatile overlay: no syncfs of the host file system when it goes
/// away, fsync inside is free; what a RUN wrote is still its layer.
#[test]
fn the_rootfs_overlay_is_volatile_and_the_layer_is_whole() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "volatile",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN grep ' / / ' /proc/self/mountinfo > /mountinfo && head -c 3000000 /dev/zero > /zeros && sync\n",
        )],
    );
    env.build_plain("volatile:1", &ctx, &[]);
    let mountinfo = env.run_sh("volatile:1", "cat /mountinfo; wc -c < /zeros");
    assert!(mountinfo.contains("fsync=volatile"), "{mountinfo}");
    assert!(mountinfo.trim_end().ends_with("3000000"), "{mountinfo}");
    let run = env.run_sh("volatile:1", "grep ' / / ' /proc/self/mountinfo");
    assert!(run.contains("fsync=volatile"), "{run}");
}
