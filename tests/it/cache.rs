//! Tests for this area live here; see the mod comment in main.rs.
//! The store under concurrency and crashes, the context stat cache, GC, cache policies.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{steps, Env, Registry, RBUILD};

/// Removes ANSI escape sequences (tracing colours its fields when it thinks it may).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `key=N` in the stat cache debug line.
fn stat_field(stderr: &str, key: &str) -> usize {
    let clean = strip_ansi(stderr);
    let line = clean
        .lines()
        .find(|l| l.contains("context stat cache"))
        .unwrap_or_else(|| panic!("no stat cache debug line in:\n{clean}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

fn build_logged(env: &Env, ctx: &Path, tag: &str) -> String {
    let out = Command::new(RBUILD)
        .arg("--root")
        .arg(env.root())
        .args(["build", "--progress", "plain", "-t", tag])
        .arg(ctx)
        .env("NO_COLOR", "1")
        .env("RBUILD_LOG", "warn,exec::context=debug")
        .stdin(Stdio::null())
        .output()
        .expect("running rbuild");
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build failed:\n{se}");
    se
}

#[test]
fn noop_rebuild_reads_no_context_file_contents() {
    let env = Env::new();
    env.busybox();
    let mut files: Vec<(String, String)> = (0..50)
        .map(|i| (format!("src/f{i}.txt"), format!("file {i}\n")))
        .collect();
    files.push((
        "Dockerfile".into(),
        "FROM busybox:local\nCOPY . /app\nRUN cat /app/src/f7.txt > /seen\n".into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let ctx = env.context("ctx", &refs);
    // Files changed in the last 2 s are not trusted to the stat cache (same-tick rewrites); age them.
    std::thread::sleep(Duration::from_millis(2100));

    let first = build_logged(&env, &ctx, "app:1");
    assert_eq!(stat_field(&first, "hits"), 0, "{first}");
    assert_eq!(stat_field(&first, "reads"), 51, "{first}");

    let noop = build_logged(&env, &ctx, "app:1");
    assert_eq!(stat_field(&noop, "reads"), 0, "{noop}");
    assert_eq!(stat_field(&noop, "hits"), 51, "{noop}");
    assert!(steps(&noop).values().all(|s| *s == "CACHED"), "{noop}");

    // touch: stat changes, contents do not: the file is read again and the build is a full hit.
    let f7 = ctx.join("src/f7.txt");
    filetime::set_file_mtime(&f7, filetime::FileTime::from_unix_time(1_600_000_000, 0)).unwrap();
    let touched = build_logged(&env, &ctx, "app:1");
    assert_eq!(stat_field(&touched, "reads"), 1, "{touched}");
    assert!(
        steps(&touched).values().all(|s| *s == "CACHED"),
        "{touched}"
    );

    // Same size, mtime put back: ctime still changes, so the new contents are seen.
    std::fs::write(&f7, "FILE 7\n").unwrap();
    filetime::set_file_mtime(&f7, filetime::FileTime::from_unix_time(1_600_000_000, 0)).unwrap();
    let edited = build_logged(&env, &ctx, "app:1");
    assert_eq!(stat_field(&edited, "reads"), 1, "{edited}");
    let st = steps(&edited);
    assert!(
        st.iter().any(|(n, s)| n.contains("RUN cat") && *s == "RAN"),
        "{edited}"
    );
    let (out, _) = env.ok(&["run", "app:1", "cat", "/seen"]);
    assert_eq!(out, "FILE 7\n");
}

const SHARED: &str = "FROM busybox:local
COPY a.txt /a.txt
RUN sleep 1 && cat /a.txt > /b.txt && head -c 200000 /dev/urandom > /rand
RUN wc -c /rand > /size
";

#[test]
fn three_processes_on_one_store_all_succeed_and_share_hits() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context("ctx", &[("Dockerfile", SHARED), ("a.txt", "a\n")]);
    let spawn = |tag: &str| {
        Command::new(RBUILD)
            .arg("--root")
            .arg(env.root())
            .args(["build", "--progress", "plain", "-t", tag])
            .arg(&ctx)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rbuild")
    };
    let round = |prefix: &str| -> Vec<String> {
        let children: Vec<_> = (0..3).map(|i| spawn(&format!("{prefix}:{i}"))).collect();
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                let se = String::from_utf8_lossy(&out.stderr).into_owned();
                assert!(out.status.success(), "concurrent build failed:\n{se}");
                se
            })
            .collect()
    };
    round("first");
    for i in 0..3 {
        let (out, _) = env.ok(&["run", &format!("first:{i}"), "cat", "/b.txt"]);
        assert_eq!(out, "a\n");
    }
    // A second round of three at once: every step is a hit on what the first round recorded.
    for se in round("second") {
        let st = steps(&se);
        assert!(!st.is_empty(), "{se}");
        assert!(st.values().all(|s| *s == "CACHED"), "not shared:\n{se}");
    }
}

/// Every blob a tag reaches exists.
fn assert_tags_complete(root: &Path) {
    let store = cache::Store::open(root).unwrap();
    for (name, desc) in store.list_tags().unwrap() {
        let manifest: oci::Manifest =
            serde_json::from_slice(&store.read_blob(&desc.digest).unwrap()).unwrap();
        assert!(store.has_blob(&manifest.config.digest), "{name}: config");
        for l in &manifest.layers {
            assert!(store.has_blob(&l.digest), "{name}: layer {}", l.digest);
        }
    }
}

#[test]
fn kill_9_at_any_point_leaves_a_store_the_next_build_uses() {
    let env = Env::new();
    env.busybox();
    let df = "FROM busybox:local
COPY a.txt /a.txt
RUN head -c 3000000 /dev/urandom > /r1 && sleep 0.3
RUN cat /a.txt /a.txt > /b.txt && head -c 3000000 /dev/zero > /r2
COPY c.txt /c.txt
";
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", df), ("a.txt", "a\n"), ("c.txt", "c\n")],
    );
    // Deterministic "random" kill points spread over a build (about 1-2 s here).
    let delays_ms = [40u64, 170, 330, 520, 760, 1010, 1400];
    for (i, delay) in delays_ms.iter().enumerate() {
        // Vary the content so that each attempt has work to do.
        std::fs::write(ctx.join("a.txt"), format!("a{}\n", i % 3)).unwrap();
        let mut child = Command::new(RBUILD)
            .arg("--root")
            .arg(env.root())
            .args(["build", "-q", "-t", "app:killed"])
            .arg(&ctx)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        let _ = child.kill(); // SIGKILL; it may have finished already
        let _ = child.wait();
        assert_tags_complete(&env.root());
        // See: #19. The store's own verification agrees: nothing corrupt, no dangling tag or record.
        let (out, err) = env.ok(&["check"]);
        assert!(out.is_empty() && err.contains("all good"), "{out}{err}");
    }
    // The next builds succeed, reuse whatever the killed ones recorded, and give working images.
    for v in 0..3 {
        std::fs::write(ctx.join("a.txt"), format!("a{v}\n")).unwrap();
        let tag = format!("app:{v}");
        env.ok(&["build", "-t", &tag, ctx.to_str().unwrap()]);
        let (out, _) = env.ok(&["run", &tag, "cat", "/b.txt", "/c.txt"]);
        assert_eq!(out, format!("a{v}\na{v}\nc\n"));
        let (out, _) = env.ok(&["run", &tag, "wc", "-c", "/r2"]);
        assert!(out.contains("3000000"), "{out}");
    }
    assert_tags_complete(&env.root());
}

#[test]
fn prune_keeps_tagged_images_runnable_and_du_reports() {
    let env = Env::new();
    env.busybox();
    let df = "FROM busybox:local\nCOPY v.txt /v.txt\nRUN head -c 2000000 /dev/urandom > /big\n";
    let ctx = env.context("ctx", &[("Dockerfile", df), ("v.txt", "1\n")]);
    env.ok(&["build", "-t", "keep:1", ctx.to_str().unwrap()]);
    // An untagged build result: only cache records reach it.
    std::fs::write(ctx.join("v.txt"), "2\n").unwrap();
    env.ok(&["build", ctx.to_str().unwrap()]);
    let (du_before, _) = env.ok(&["du"]);
    assert!(du_before.contains("blobs"), "{du_before}");

    // A filter that matches nothing recent removes no records.
    let (out, _) = env.ok(&["prune", "--filter", "until=24h"]);
    assert!(out.contains("removed 0 cache records"), "{out}");
    let (out, _) = env.ok(&["prune", "--all"]);
    assert!(!out.contains("removed 0 cache records"), "{out}");
    let (du_after, _) = env.ok(&["du"]);
    let blob_count = |du: &str| -> u64 {
        du.lines()
            .find(|l| l.starts_with("blobs"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no blobs line in {du}"))
    };
    assert!(
        blob_count(&du_after) < blob_count(&du_before),
        "before:\n{du_before}\nafter:\n{du_after}"
    );
    // Tagged images still run (busybox:local and keep:1), and still build on.
    let (out, _) = env.ok(&["run", "keep:1", "cat", "/v.txt"]);
    assert_eq!(out, "1\n");
    let (out, _) = env.ok(&["run", "keep:1", "wc", "-c", "/big"]);
    assert!(out.contains("2000000"), "{out}");
    assert_tags_complete(&env.root());
    env.ok(&["build", "-t", "again:1", ctx.to_str().unwrap()]);

    let bad = env.fails(&["prune", "--keep-storage", "lots"]);
    assert!(bad.contains("lots"), "{bad}");
    env.ok(&["prune", "--keep-storage", "1KB"]);
    let (out, _) = env.ok(&["run", "again:1", "cat", "/v.txt"]);
    assert_eq!(out, "2\n");
}

#[test]
fn no_cache_filter_reruns_only_that_stage() {
    let env = Env::new();
    env.busybox();
    let df = "FROM busybox:local AS deps
RUN echo deps > /deps.txt

FROM busybox:local AS tools
RUN echo tools > /tools.txt

FROM busybox:local
COPY --from=deps /deps.txt /deps.txt
COPY --from=tools /tools.txt /tools.txt
RUN cat /deps.txt /tools.txt > /all.txt
";
    let ctx = env.context("ctx", &[("Dockerfile", df)]);
    let c = ctx.to_str().unwrap();
    env.ok(&["build", "--progress", "plain", "-t", "app:1", c]);
    let (_, se) = env.ok(&[
        "build",
        "--progress",
        "plain",
        "--no-cache-filter",
        "tools",
        "-t",
        "app:1",
        c,
    ]);
    let st = steps(&se);
    let status = |needle: &str| {
        st.iter()
            .find(|(n, _)| n.contains(needle))
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("no step {needle:?} in:\n{se}"))
    };
    assert_eq!(status("echo tools"), "RAN", "{se}");
    assert_eq!(status("echo deps"), "CACHED", "{se}");
    let (out, _) = env.ok(&["run", "app:1", "cat", "/all.txt"]);
    assert_eq!(out, "deps\ntools\n");
}

#[test]
fn pulled_bases_are_reused_without_the_registry_and_pull_re_resolves() {
    let producer = Env::new();
    producer.busybox();
    let reg = Registry::start();
    let base = format!("{}/lib/base:1", reg.addr);
    let version = |v: &str| {
        producer.context(
            &format!("base-{v}"),
            &[(
                "Dockerfile",
                &format!("FROM busybox:local\nRUN echo {v} > /version\n"),
            )],
        )
    };
    let push = |ctx: &Path| producer.ok(&["build", "-t", &base, "--push", ctx.to_str().unwrap()]);
    push(&version("v1"));

    // Another store (another machine) builds FROM the registry image.
    let consumer = Env::new();
    let app = consumer.context(
        "app",
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN cat /version > /seen\n"),
        )],
    );
    let a = app.to_str().unwrap();
    let seen = |tag: &str| consumer.ok(&["run", tag, "cat", "/seen"]).0;
    consumer.ok(&["build", "-t", "app:1", a]);
    assert_eq!(seen("app:1"), "v1\n");

    // The tag moves on the registry. Without --pull the base this store pulled is used, as docker build
    // does: every step is a hit. With --pull the new base comes in and the RUN re-runs.
    push(&version("v2"));
    let (_, log) = consumer.ok(&["build", "--progress", "plain", "-t", "app:2", a]);
    assert!(!log.contains("cache miss"), "{log}");
    assert_eq!(seen("app:2"), "v1\n");
    let (_, log) = consumer.ok(&["build", "--pull", "--progress", "plain", "-t", "app:3", a]);
    assert!(log.contains("cache miss"), "{log}");
    assert_eq!(seen("app:3"), "v2\n");

    // With the registry gone, a rebuild needs nothing from it; --pull says which registry it cannot reach.
    drop(reg);
    let (_, log) = consumer.ok(&["build", "--progress", "plain", "-t", "app:4", a]);
    assert!(
        !log.contains("cache miss") && !log.contains("unreachable"),
        "{log}"
    );
    let err = consumer.fails(&["build", "--pull", "-t", "app:5", a]);
    assert!(err.contains("127.0.0.1"), "{err}");
}

#[test]
fn a_rebuild_that_changes_nothing_keeps_the_image_id_and_writes_no_blob() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "same-id",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo hi > /x\nCMD [\"cat\", \"/x\"]\n",
        )],
    );
    let c = ctx.to_str().unwrap();
    let blobs = || {
        std::fs::read_dir(env.root().join("blobs/sha256"))
            .unwrap()
            .count()
    };
    let id1 = env.ok(&["build", "-q", "-t", "same:1", c]).0;
    // A later build time: without the reuse, the config's `created` would differ.
    std::thread::sleep(Duration::from_millis(1100));
    let before = blobs();
    let id2 = env.ok(&["build", "-q", "-t", "same:1", c]).0;
    assert_eq!(
        id1, id2,
        "a no-op rebuild keeps the image ID, as BuildKit's"
    );
    assert_eq!(blobs(), before, "and writes no new blob");

    // Anything that changes the image (here a label) gives a new one.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local\nRUN echo hi > /x\nCMD [\"cat\", \"/x\"]\nLABEL v=2\n",
    )
    .unwrap();
    let id3 = env.ok(&["build", "-q", "-t", "same:1", c]).0;
    assert_ne!(id1, id3);
    assert_eq!(env.ok(&["run", "same:1"]).0, "hi\n");
}

// See: #19. Several processes creating one fresh store at once failed about 1 in 40 with `failed to enable
// WAL: database is locked`: 20 rounds of 8 processes, each on a store nobody opened before.
#[test]
fn r19_concurrent_first_use_of_a_fresh_store() {
    let base = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let root = base.path().join(format!("store-{round}"));
        let children: Vec<_> = (0..8)
            .map(|_| {
                std::process::Command::new(crate::common::RBUILD)
                    .arg("--root")
                    .arg(&root)
                    .arg("images")
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "round {round}: {err}");
            // Not even a warning: racing openers are normal on a build-farm node.
            assert!(!err.contains("WARN"), "round {round}: {err}");
        }
    }
}

// See: #19. On a cold store, concurrent builds sharing steps ran every shared step in every process. With
// the per-cache-key lock, one process runs each shared step; the others wait and report it CACHED.
#[test]
fn r19_concurrent_identical_builds_run_each_shared_step_once() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "dedupe",
        &[
            ("deps.txt", "a\nb\n"),
            (
                "Dockerfile",
                "FROM busybox:local\nCOPY deps.txt /\nRUN sleep 2 && cp /deps.txt /installed\nRUN cat /installed\n",
            ),
        ],
    );
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(RBUILD)
                .arg("--root")
                .arg(env.root())
                .args(["build", "--progress", "plain", "-t", &format!("dedupe:{i}")])
                .arg(&ctx)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let logs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{log}");
            log
        })
        .collect();
    for step in ["COPY deps.txt", "RUN sleep 2", "RUN cat"] {
        let ran = logs
            .iter()
            .filter(|l| crate::common::step_status(l, step) == "RAN")
            .count();
        assert_eq!(
            ran,
            1,
            "{step} ran in {ran} of 4 builds:\n{}",
            logs.join("\n----\n")
        );
    }
    for i in 0..4 {
        assert_eq!(
            env.run_sh(&format!("dedupe:{i}"), "cat /installed"),
            "a\nb\n"
        );
    }
}

// See: #19. `rbuild check` reports a corrupt layer blob and what needs it, exits 1; `--repair` removes
// them; the next build redoes the work and the store checks clean again.
#[test]
fn r19_check_reports_and_repair_removes_a_corrupt_layer() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "check",
        &[("Dockerfile", "FROM busybox:local\nRUN echo hi > /hi\n")],
    );
    env.build_plain("checked:1", &ctx, &[]);
    let (out, err) = env.ok(&["check"]);
    assert!(out.is_empty() && err.contains("all good"), "{out}{err}");
    // Flip the RUN layer's bytes (the image's last layer).
    let last = env.layers("checked:1").pop().unwrap();
    let blob = env
        .root()
        .join("blobs/sha256")
        .join(last.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let out = env.rbuild(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("corrupt blob {last}")), "{text}");
    assert!(text.contains("broken tag checked:1"), "{text}");
    assert!(text.contains("broken cache record"), "{text}");
    let (out, _) = env.ok(&["check", "--repair"]);
    assert!(out.contains("removed"), "{out}");
    env.ok(&["check"]);
    let (_, log) = env.build_plain("checked:1", &ctx, &[]);
    assert_eq!(crate::common::step_status(&log, "RUN echo hi"), "RAN");
    assert_eq!(env.run_sh("checked:1", "cat /hi"), "hi\n");
    env.ok(&["check"]);
}
