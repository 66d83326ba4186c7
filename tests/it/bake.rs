//! `rbuild bake` on the monorepo fixture (tests/fixtures/bake/monorepo): three services on one `base`
//! target (`contexts = { base = "target:base" }`), as docker-bake.hcl and as compose.yaml. Behaviour
//! followed: docker/buildx's bake (file lookup, --set, matrix, --print), read in its source.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{expect_success, Env, Registry, RBUILD};

/// The fixture copied into the test's dir (bake reads its files from the working directory).
fn monorepo(env: &Env) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bake/monorepo");
    let dst = env.dir.path().join("monorepo");
    for entry in walkdir::WalkDir::new(&src) {
        let entry = entry.expect("walk fixture");
        let to = dst.join(entry.path().strip_prefix(&src).expect("under fixture"));
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&to).expect("mkdir");
        } else {
            std::fs::copy(entry.path(), &to).expect("copy fixture file");
        }
    }
    dst
}

/// `rbuild --root STORE bake ARGS…` in `dir`, with extra environment variables.
fn bake(env: &Env, dir: &Path, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(RBUILD);
    cmd.arg("--root")
        .arg(env.root())
        .arg("bake")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("TAG")
        .env_remove("REGISTRY")
        .env_remove("WORK")
        .stdin(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("running rbuild bake")
}

fn bake_ok(env: &Env, dir: &Path, vars: &[(&str, &str)], args: &[&str]) -> (String, String) {
    expect_success(&bake(env, dir, vars, args), args)
}

/// How many vertices of a plain log whose name contains `needle` missed the cache (ran).
fn runs(stderr: &str, needle: &str) -> usize {
    let mut names = std::collections::HashMap::new();
    let mut count = 0;
    for line in stderr.lines() {
        let Some((num, what)) = line.strip_prefix('#').and_then(|r| r.split_once(' ')) else {
            continue;
        };
        if what.starts_with("cache miss") {
            if names.get(num).is_some_and(|n: &String| n.contains(needle)) {
                count += 1;
            }
        } else if what.starts_with('[') {
            names
                .entry(num.to_owned())
                .or_insert_with(|| what.to_owned());
        }
    }
    count
}

#[test]
fn bake_hcl_builds_every_service_and_runs_shared_steps_once() {
    let env = Env::new();
    env.busybox();
    let dir = monorepo(&env);
    let (_, stderr) = bake_ok(
        &env,
        &dir,
        &[],
        &["-f", "docker-bake.hcl", "--progress", "plain"],
    );
    assert_eq!(
        env.run_sh("mono/api:dev", "cat /app/greeting.txt"),
        "hello from api (none)\n"
    );
    assert_eq!(
        env.run_sh("mono/worker:dev", "cat /app/greeting.txt"),
        "hi from worker (none)\n"
    );
    assert_eq!(
        env.run_sh("mono/web:DEV", "cat /base.txt /shared/lib.txt"),
        "base built\nshared lib\n"
    );
    // The base target's steps ran once for the three services, and so did the step every service
    // Dockerfile has in common (the others waited for it and took its record).
    assert_eq!(
        runs(
            &stderr,
            "RUN i=0; while [ $i -lt 1 ]; do i=$((i+1)); done; echo \"base built\""
        ),
        1,
        "{stderr}"
    );
    assert_eq!(runs(&stderr, "RUN mkdir -p /shared"), 1, "{stderr}");
    assert_eq!(
        runs(&stderr, "RUN echo \"tooling shared by every service\""),
        1,
        "{stderr}"
    );
    // Progress lines name their target, as buildx prefixes them.
    for t in ["base", "api", "worker", "web"] {
        assert!(
            stderr.contains(&format!("[{t}] exporting to image")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("[api 9/10] RUN i=0"), "{stderr}");
    // Nothing to do the second time.
    let (_, again) = bake_ok(
        &env,
        &dir,
        &[],
        &["-f", "docker-bake.hcl", "--progress", "plain"],
    );
    assert_eq!(runs(&again, "RUN"), 0, "{again}");
}

#[test]
fn bake_compose_builds_the_same_project_with_interpolation() {
    let env = Env::new();
    env.busybox();
    let dir = monorepo(&env);
    bake_ok(
        &env,
        &dir,
        &[("TAG", "c1")],
        &["-f", "compose.yaml", "--progress", "plain"],
    );
    assert_eq!(
        env.run_sh("mono/api:c1", "cat /app/greeting.txt"),
        "hello from api (none)\n"
    );
    assert_eq!(
        env.run_sh("mono/worker:c1", "cat /app/greeting.txt"),
        "hi from worker (none)\n"
    );
    assert_eq!(
        env.run_sh("mono/web:c1", "cat /tooling.txt"),
        "tooling shared by every service\n"
    );
    // A dockerfile_inline service, on the same base target.
    assert_eq!(
        env.run_sh("mono/probe:c1", "cat /probe.txt"),
        "shared lib\n"
    );
}

#[test]
fn bake_set_and_variables_override_as_buildx_documents() {
    let env = Env::new();
    env.busybox();
    let dir = monorepo(&env);
    bake_ok(
        &env,
        &dir,
        &[("TAG", "2")],
        &[
            "-f",
            "docker-bake.hcl",
            "--set",
            "worker.args.GREETING=yo",
            "--set",
            "api.tags=other/api:x",
            "--set",
            "w*.labels.team=backend",
            "--set",
            "worker.attest=type=provenance",
            "api",
            "worker",
        ],
    );
    // The environment's TAG replaces the variable's default; --set wins over the file.
    assert_eq!(
        env.run_sh("mono/worker:2", "cat /app/greeting.txt"),
        "yo from worker (none)\n"
    );
    assert_eq!(
        env.run_sh("other/api:x", "cat /app/greeting.txt"),
        "hello from api (none)\n"
    );
    let (inspect, _) = env.ok(&["inspect", "mono/worker:2"]);
    assert!(inspect.contains("\"team\": \"backend\""), "{inspect}");
    // `attest` is the target's --attest: worker has provenance naming its target, api has none.
    let (provenance, _) = env.ok(&["inspect", "--provenance", "mono/worker:2"]);
    assert!(
        provenance.contains("\"build-arg:GREETING\": \"yo\""),
        "{provenance}"
    );
    env.fails(&["inspect", "--provenance", "other/api:x"]);
    // Only the targets asked for (and base, which they need) were built.
    let (images, _) = env.ok(&["images"]);
    assert!(!images.contains("mono/web"), "{images}");
    assert!(!images.contains("mono/api"), "{images}");
}

#[test]
fn bake_print_matches_the_snapshot() {
    let env = Env::new();
    let dir = monorepo(&env);
    let (stdout, _) = bake_ok(&env, &dir, &[], &["-f", "docker-bake.hcl", "--print"]);
    insta::assert_snapshot!("bake_print_default", stdout);
    let (tools, _) = bake_ok(
        &env,
        &dir,
        &[("TAG", "9")],
        &[
            "-f",
            "docker-bake.hcl",
            "--print",
            "tools",
            "--set",
            "*.args.WORK=5",
        ],
    );
    insta::assert_snapshot!("bake_print_tools_matrix", tools);
}

#[test]
fn bake_matrix_expands_to_one_target_per_value() {
    let env = Env::new();
    env.busybox();
    let dir = monorepo(&env);
    let (stdout, _) = bake_ok(
        &env,
        &dir,
        &[],
        &["-f", "docker-bake.hcl", "--print", "cli"],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("--print is JSON");
    let mut names: Vec<&String> = v["target"].as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["base", "cli-full", "cli-slim"]);
    bake_ok(&env, &dir, &[], &["-f", "docker-bake.hcl", "cli-slim"]);
    assert_eq!(
        env.run_sh("mono/cli:slim-dev", "cat /app/greeting.txt"),
        "hello from cli (slim)\n"
    );
}

#[test]
fn bake_failing_target_is_named_with_its_dockerfile_line() {
    let env = Env::new();
    env.busybox();
    let dir = monorepo(&env);
    let args = [
        "-f",
        "docker-bake.hcl",
        "--progress",
        "plain",
        "--set",
        "web.args.FAIL=1",
    ];
    // api's last RUN would loop for minutes: web's failure stops it (the first failure stops them all).
    let mut slow_api = args.to_vec();
    slow_api.extend(["--set", "api.args.WORK=200000000"]);
    let started = std::time::Instant::now();
    let out = bake(&env, &dir, &[], &slow_api);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "api was not stopped: {:?}\n{stderr}",
        started.elapsed()
    );
    // Cancelled while running, or (on a slow machine) stopped before it started.
    assert!(
        stderr.contains("target api: cancelled (another target failed)")
            || stderr.contains("target api: not built"),
        "{stderr}"
    );
    assert!(stderr.contains("error: target \"web\" failed"), "{stderr}");
    assert!(
        stderr.contains(
            "web/Dockerfile:8: `RUN test \"1\" != 1 || exit 3` failed: exited with code 3"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("1 target(s) failed: web"), "{stderr}");
    // --keep-going: the others are built all the same, and the run still fails.
    let mut kg = args.to_vec();
    kg.push("--keep-going");
    let out = bake(&env, &dir, &[], &kg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("1 target(s) failed: web"), "{stderr}");
    assert_eq!(
        env.run_sh("mono/api:dev", "cat /app/greeting.txt"),
        "hello from api (none)\n"
    );
    assert_eq!(
        env.run_sh("mono/worker:dev", "cat /app/greeting.txt"),
        "hi from worker (none)\n"
    );
}

#[test]
fn bake_bad_input_is_a_clear_error() {
    let env = Env::new();
    let dir = monorepo(&env);
    let se = |args: &[&str]| {
        let out = bake(&env, &dir, &[], args);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(se(&["-f", "docker-bake.hcl", "nope"]).contains("no target or group named \"nope\""));
    assert!(se(&["-f", "docker-bake.hcl", "--set", "api.colour=red"])
        .contains("--set api.colour=red: unknown key"));
    std::fs::write(dir.join("broken.hcl"), "target \"a\" {\n  tags = [\n").unwrap();
    assert!(se(&["-f", "broken.hcl"]).contains("broken.hcl: "));
    let empty = env.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = bake(&env, &empty, &[], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no bake file found"));
}

#[test]
fn bake_default_files_merge_compose_then_hcl() {
    // No -f: compose.yaml and docker-bake.hcl are both read, compose first (buildx's order), so the
    // default group has compose's services (in name order) and then the HCL's.
    let env = Env::new();
    let dir = monorepo(&env);
    let (stdout, _) = bake_ok(&env, &dir, &[], &["--print"]);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("--print is JSON");
    assert_eq!(
        v["group"]["default"]["targets"],
        serde_json::json!(["api", "base", "probe", "web", "worker"])
    );
    // The HCL's fields lie over compose's: web has the HCL's second tag.
    assert_eq!(
        v["target"]["web"]["tags"],
        serde_json::json!(["mono/web:dev", "mono/web:DEV"])
    );
}

#[test]
fn bake_push_sends_every_target_to_the_registry() {
    let reg = Registry::start();
    let env = Env::new();
    env.busybox();
    let dir = monorepo(&env);
    let prefix = format!("{}/", reg.addr);
    let (stdout, _) = bake_ok(
        &env,
        &dir,
        &[("REGISTRY", &prefix)],
        &["-f", "docker-bake.hcl", "--push"],
    );
    for svc in ["api", "worker", "web"] {
        assert!(
            stdout.contains(&format!("{}mono/{svc}@sha256:", prefix)),
            "{stdout}"
        );
    }
    // Another store pulls each and runs it.
    let other = Env::new();
    for (svc, says) in [
        ("api", "hello from api"),
        ("worker", "hi from worker"),
        ("web", "hello from web"),
    ] {
        let image = format!("{prefix}mono/{svc}:dev");
        other.ok(&["pull", &image]);
        assert_eq!(
            other.run_sh(&image, "cat /app/greeting.txt"),
            format!("{says} (none)\n")
        );
    }
}

#[test]
fn bake_named_contexts_reach_the_build() {
    let env = Env::new();
    env.busybox();
    let dir = monorepo(&env);
    std::fs::write(
        dir.join("image.hcl"),
        r#"target "img" {
  context = "api"
  contexts = { thebase = "docker-image://busybox:local", src = "worker" }
  dockerfile-inline = "FROM thebase\nCOPY --from=src app.txt /from-src.txt\nRUN echo from-image > /x.txt\n"
  tags = ["img:1"]
}
"#,
    )
    .unwrap();
    bake_ok(&env, &dir, &[], &["-f", "image.hcl", "img"]);
    assert_eq!(
        env.run_sh(
            "img:1",
            "cat /x.txt /from-src.txt; test -x /bin/busybox && echo bb"
        ),
        "from-image\nworker app\nbb\n"
    );
}

#[test]
fn bake_each_target_keeps_its_own_outputs_and_cache_export() {
    let env = Env::new();
    env.busybox();
    let dir = monorepo(&env);
    bake_ok(
        &env,
        &dir,
        &[],
        &[
            "-f",
            "docker-bake.hcl",
            "--set",
            "api.output=type=oci,dest=api.tar",
            "--set",
            "worker.cache-to=type=local,dest=worker-cache",
        ],
    );
    let listing = crate::common::sh(Command::new("tar").arg("-tf").arg(dir.join("api.tar")));
    assert!(listing.lines().any(|l| l == "index.json"), "{listing}");
    assert!(dir.join("worker-cache/index.json").is_file());
    // The targets without them built as usual.
    assert_eq!(
        env.run_sh("mono/web:dev", "cat /app/greeting.txt"),
        "hello from web (none)\n"
    );
}

/// buildx's HCL beyond the basics (#24's follow-up): `function` blocks with variadic parameters,
/// `target.NAME.FIELD` references (a matrix target by its expanded name), a typed `list(string)`
/// variable read from the environment as CSV, its `validation`, and built-ins (title, sha256, substr,
/// merge, join) — the values buildx's hclparser gives for the same file.
#[test]
fn bake_functions_and_target_references_build_as_buildx_resolves_them() {
    let env = Env::new();
    env.busybox();
    let dir = monorepo(&env);
    let files = ["-f", "docker-bake.hcl", "-f", "docker-bake.release.hcl"];
    let mut args = files.to_vec();
    args.push("api-release");
    bake_ok(&env, &dir, &[("VERSIONS", "1.0,2.0")], &args);
    // The expected suffix from coreutils, not from rbuild's own sha256.
    let sum = Command::new("sh")
        .args(["-c", "printf %s 1.0,2.0 | sha256sum"])
        .output()
        .expect("sha256sum");
    let short = String::from_utf8_lossy(&sum.stdout)[..8].to_owned();
    let want = format!("Hi from api (slim-{short})\n");
    assert_eq!(
        env.run_sh("mono/api-release:1.0", "cat /app/greeting.txt"),
        want
    );
    assert_eq!(
        env.run_sh("mono/api-release:2.0", "cat /app/greeting.txt"),
        want
    );
    // --print shows what the references resolved to; the inherited label came from api's parent.
    let mut print = files.to_vec();
    print.extend(["--print", "api-release"]);
    let (stdout, _) = bake_ok(&env, &dir, &[], &print);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("--print is JSON");
    let t = &v["target"]["api-release"];
    assert_eq!(t["tags"], serde_json::json!(["mono/api-release:1.0"]));
    assert_eq!(t["args"]["GREETING"], "Hi");
    assert_eq!(t["labels"]["org.opencontainers.image.vendor"], "mono");
    // The validation fails with its message, the file and the line, and nothing is built.
    let out = bake(&env, &dir, &[("VERSIONS", "1.0,")], &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("docker-bake.release.hcl:7: variable \"VERSIONS\" validation")
            && stderr.contains("VERSIONS must not hold an empty version."),
        "{stderr}"
    );
    assert!(!stderr.contains("#1 "), "{stderr}");
}
