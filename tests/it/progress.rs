//! `--progress` modes: every line a build shows goes through one reporter.

use std::process::Command;

use crate::common::{expect_success, Env, Registry, RBUILD};

fn s(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

const DOCKERFILE: &str = "FROM busybox:local\nRUN echo building && echo out > /out\nCOPY a /a\n";

/// A build that pushes and exports its cache with `--progress rawjson`: every stderr line is a JSON
/// object (steps, tasks, log records), the tasks are numbered vertices like the steps, and stdout holds
/// only the pushed reference.
#[test]
fn rawjson_progress_is_json_on_every_line_including_push_and_cache_export() {
    let env = Env::new();
    env.busybox();
    let registry = Registry::start();
    let ctx = env.context("ctx", &[("Dockerfile", DOCKERFILE), ("a", "a\n")]);
    let cache = env.dir.path().join("cache");
    let tag = format!("{}/progress/app:1", registry.addr);
    let out = Command::new(RBUILD)
        .args(["--root", s(&env.root()), "build", "--progress", "rawjson"])
        .args(["-t", &tag, "--push"])
        .args(["--cache-to", &format!("type=local,dest={}", s(&cache))])
        .args([
            "-o",
            &format!("type=oci,dest={}", s(&env.dir.path().join("app.tar"))),
        ])
        .arg(s(&ctx))
        // Log records at info level go through the same JSON stream.
        .env("RBUILD_LOG", "info")
        .output()
        .unwrap();
    let (stdout, stderr) = expect_success(&out, &["build", "--progress", "rawjson"]);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}\n{stderr}"))
        })
        .collect();
    let names_of = |event: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["event"] == event)
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect()
    };
    let done = names_of("done");
    for task in [
        "exporting to image".to_owned(),
        "exporting to oci image format".to_owned(),
        format!("pushing {tag}"),
        format!("exporting cache to {}:latest", s(&cache)),
    ] {
        assert!(
            done.contains(&task),
            "no done event for {task:?}: {done:?}\n{stderr}"
        );
    }
    let status: Vec<String> = events
        .iter()
        .filter(|e| e["event"] == "status")
        .filter_map(|e| e["line"].as_str().map(str::to_owned))
        .collect();
    assert!(
        status.iter().any(|l| l.starts_with("naming to ")),
        "{status:?}"
    );
    assert!(
        status
            .iter()
            .any(|l| l.starts_with(&format!("pushed {tag}@sha256:"))),
        "{status:?}"
    );
    assert!(
        status.iter().any(|l| l.starts_with("exported cache to ")),
        "{status:?}"
    );
    let logs: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "log")
        .filter_map(|e| e["line"].as_str())
        .collect();
    assert!(
        logs.contains(&"building"),
        "the RUN's output is a log event: {logs:?}"
    );
    // Steps and tasks share one numbering, each number once.
    let mut begun: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "begin")
        .filter_map(|e| e["step"].as_u64())
        .collect();
    let count = begun.len();
    begun.sort_unstable();
    begun.dedup();
    assert_eq!(begun.len(), count, "a vertex began twice: {stderr}");
    assert_eq!(stdout.trim().lines().count(), 1, "stdout: {stdout:?}");
    let name = tag.trim_end_matches(":1");
    assert!(
        stdout.starts_with(&format!("{name}@sha256:")),
        "stdout: {stdout:?}"
    );
}

/// A failing build in rawjson mode ends with a JSON error object, not a rendered diagnostic.
#[test]
fn rawjson_progress_reports_a_failure_as_json() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context("ctx", &[("Dockerfile", "FROM busybox:local\nRUN exit 3\n")]);
    let out = env.rbuild(&["build", "--progress", "rawjson", s(&ctx)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().expect("some output");
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(v["event"], "error");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{v}"
    );
    for l in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
    }
}

/// Runs `rbuild build --progress tty` under a real pseudo-terminal (`script` from util-linux) and returns
/// what the terminal received.
fn tty_build(env: &Env, ctx: &std::path::Path, no_color: bool) -> String {
    let cmd = format!(
        "{RBUILD} --root {} build --progress tty --no-cache -t tty:1 {}",
        s(&env.root()),
        s(ctx)
    );
    let mut c = Command::new("script");
    // What the terminal received is script's stdout; no typescript file is kept.
    c.args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("COLUMNS", "80");
    if no_color {
        c.env("NO_COLOR", "1");
    } else {
        c.env_remove("NO_COLOR");
    }
    let out = c.output().expect("running script (util-linux)");
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{screen}");
    screen
}

/// The live view redraws in place while a step runs (cursor up + erase), colors its states unless
/// NO_COLOR is set, and ends with BuildKit's summary line.
#[test]
fn tty_progress_redraws_in_place_and_ends_with_the_summary() {
    crate::common::require("/usr/bin/script", "bsdutils");
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.2; done\n",
        )],
    );
    let screen = tty_build(&env, &ctx, false);
    assert!(
        screen.contains("\x1b[J"),
        "the live area is erased and redrawn: {screen:?}"
    );
    assert!(screen.contains("tick 6"), "{screen:?}");
    assert!(
        screen.contains("\x1b[32mDONE"),
        "DONE is green in color mode: {screen:?}"
    );
    let last = screen
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(
        last.contains("[+] Building") && last.contains("FINISHED"),
        "ends with the summary: {last:?}"
    );
    let plain = tty_build(&env, &ctx, true);
    assert!(
        plain.contains("\x1b[J"),
        "NO_COLOR keeps the redraw: {plain:?}"
    );
    assert!(
        !plain.contains("\x1b[32m") && !plain.contains("\x1b[1m"),
        "NO_COLOR: no colors: {plain:?}"
    );
    assert!(plain.trim_end().ends_with("FINISHED"), "{plain:?}");
}
