use crate::common::Env;

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
