//! Build checks end to end: `--check` / `--call=check` output and exit status, the `# check=`
//! directive and `BUILDKIT_DOCKERFILE_CHECK`, warnings at the end of a normal build, `--call outline`
//! and `--call targets`.
//!
//! Expected behaviour follows current docker/buildx (`commands/build.go` `printResult`/`printWarnings`,
//! tests/build.go `testBuildCheck`: the report on stdout, exit status 1 when a check fires) and
//! moby/buildkit: the lab's dockerd 20.10 predates build checks.

use std::path::Path;

use crate::common::Env;

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `rbuild ARGS`: (exit code, stdout, stderr).
fn run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = env.rbuild(args);
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!se.contains("panicked"), "rbuild panicked: {se}");
    (
        out.status.code().expect("not killed by a signal"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        se,
    )
}

#[test]
fn check_exits_nonzero_when_a_rule_fires_and_runs_nothing() {
    let env = Env::new();
    let ctx = env.context(
        "warn",
        &[
            (
                "Dockerfile",
                "FROM scratch as build\nCOPY a /a\nRUN false\nFROM build\nCMD echo hi\n",
            ),
            ("a", "a\n"),
        ],
    );
    let (code, stdout, stderr) = run(&env, &["build", "--check", "-t", "checked:1", path(&ctx)]);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.starts_with("Check complete, 2 warnings have been found!\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n\
             'as' and 'FROM' keywords' casing do not match\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("   1 | >>> FROM scratch as build\n"),
        "{stdout}"
    );
    assert!(stdout.contains("   5 | >>> CMD echo hi\n"), "{stdout}");
    // Validated without running: `RUN false` did not fail it, and nothing was tagged.
    assert!(stderr.contains("check complete, no errors"), "{stderr}");
    let (images, _) = env.ok(&["images"]);
    assert!(
        !images.contains("checked"),
        "--check tagged an image: {images}"
    );
    // ignorestatus=true: the same report, exit status 0.
    let (code, stdout, _) = run(
        &env,
        &["build", "--call=check,ignorestatus=true", path(&ctx)],
    );
    assert_eq!(code, 0);
    assert!(stdout.contains("2 warnings have been found"), "{stdout}");
}

#[test]
fn check_without_warnings_exits_zero() {
    let env = Env::new();
    let ctx = env.context(
        "clean",
        &[
            ("Dockerfile", "FROM scratch AS build\nCOPY a /a\n"),
            ("a", "a\n"),
        ],
    );
    let (stdout, _) = env.ok(&["build", "--call=check", path(&ctx)]);
    assert_eq!(stdout, "Check complete, no warnings found.\n");
    let (stdout, _) = env.ok(&["build", "--call", "check,format=json", path(&ctx)]);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn check_prints_the_warnings_then_the_build_error() {
    let env = Env::new();
    let ctx = env.context(
        "bad",
        &[
            ("Dockerfile", "FROM scratch as build\nCOPY --bogus=1 a /a\n"),
            ("a", "a\n"),
        ],
    );
    let (code, stdout, stderr) = run(&env, &["build", "--check", path(&ctx)]);
    assert_eq!(code, 1);
    assert!(stdout.contains("WARNING: FromAsCasing"), "{stdout}");
    assert!(stderr.contains("unknown flag: bogus"), "{stderr}");
}

#[test]
fn check_prints_the_warnings_before_a_parse_error() {
    // BuildKit's testWarningsBeforeError: rules on the lines before an unknown instruction still fire.
    let env = Env::new();
    let ctx = env.context(
        "unparsable",
        &[(
            "Dockerfile",
            "FROM scratch AS BadStageName\nMAINTAINER me@example.org\nBADCMD\n",
        )],
    );
    let (code, stdout, stderr) = run(&env, &["build", "--check", path(&ctx)]);
    assert_eq!(code, 1);
    assert!(
        stdout.starts_with("Check complete, 2 warnings have been found!\n"),
        "{stdout}"
    );
    assert!(stdout.contains("WARNING: StageNameCasing"), "{stdout}");
    assert!(stderr.contains("unknown instruction: BADCMD"), "{stderr}");
}

#[test]
fn check_directive_skips_rules_and_error_true_fails_the_build() {
    let env = Env::new();
    let skipped = env.context(
        "skip",
        &[
            (
                "Dockerfile",
                "# check=skip=FromAsCasing,MaintainerDeprecated\nFROM scratch as build\nMAINTAINER me\nCOPY a /a\n",
            ),
            ("a", "a\n"),
        ],
    );
    let (stdout, _) = env.ok(&["build", "--check", path(&skipped)]);
    assert_eq!(stdout, "Check complete, no warnings found.\n");

    let strict = env.context(
        "strict",
        &[
            (
                "Dockerfile",
                "# check=error=true\nFROM scratch as build\nCOPY a /a\n",
            ),
            ("a", "a\n"),
        ],
    );
    // A normal build fails before running anything, naming the rules, and tags nothing.
    let err = env.fails(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "strict:1",
        path(&strict),
    ]);
    assert!(
        err.contains("lint violation found for rules: FromAsCasing"),
        "{err}"
    );
    assert!(err.contains("1 warning found"), "{err}");
    assert!(!err.contains("COPY a /a\n#"), "a step ran: {err}");
    let (images, _) = env.ok(&["images"]);
    assert!(!images.contains("strict"), "{images}");
    let (code, stdout, _) = run(&env, &["build", "--check", path(&strict)]);
    assert_eq!(code, 1);
    assert!(
        stdout.ends_with("\nlint violation found for rules: FromAsCasing\n"),
        "{stdout}"
    );

    // BUILDKIT_DOCKERFILE_CHECK replaces the directive, as BuildKit's build arg does.
    env.build_plain(
        "strict:1",
        &strict,
        &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"],
    );
    let bad = env.fails(&[
        "build",
        "--build-arg",
        "BUILDKIT_DOCKERFILE_CHECK=oops",
        path(&strict),
    ]);
    assert!(
        bad.contains("failed to parse BUILDKIT_DOCKERFILE_CHECK: invalid check option \"oops\""),
        "{bad}"
    );
}

#[test]
fn warnings_print_once_at_the_end_of_a_build() {
    let env = Env::new();
    let ctx = env.context(
        "end",
        &[
            (
                "Dockerfile",
                "FROM scratch as build\nMAINTAINER me\nCOPY a /a\n",
            ),
            ("a", "a\n"),
        ],
    );
    let (_, stderr) = env.build_plain("end:1", &ctx, &[]);
    assert_eq!(stderr.matches("2 warnings found").count(), 1, "{stderr}");
    let summary = stderr.find("2 warnings found:").expect("summary");
    assert!(
        stderr.find("naming to end:1").expect("export") < summary,
        "the summary comes at the end: {stderr}"
    );
    assert!(
        stderr[summary..].contains(
            " - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)\n \
             - MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label (line 2)\n"
        ),
        "{stderr}"
    );
    // -q prints none of it (as buildx in quiet mode); rawjson gives one event per warning.
    let (_, quiet) = env.ok(&["build", "-q", "-t", "end:1", path(&ctx)]);
    assert!(!quiet.contains("warning"), "{quiet}");
    let (_, json) = env.ok(&["build", "--progress", "rawjson", "-t", "end:1", path(&ctx)]);
    let checks: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .filter(|v| v["event"] == "check")
        .collect();
    assert_eq!(checks.len(), 2, "{json}");
}

const DESCRIBED: &str = "\
# VERSION the release to build
ARG VERSION=1.0

# base the shared base
FROM scratch AS base
# FLAVOR which variant
ARG FLAVOR=slim
RUN --mount=type=secret,id=token,required=true --mount=type=ssh true

# release the image we ship
FROM base AS release
ARG UNUSED_HERE
FROM scratch
";

#[test]
fn call_outline_lists_args_and_secrets_with_descriptions() {
    let env = Env::new();
    let ctx = env.context("outline", &[("Dockerfile", DESCRIBED)]);
    let (stdout, _) = env.ok(&[
        "build",
        "--call=outline",
        "--target",
        "release",
        "--build-arg",
        "FLAVOR=full",
        path(&ctx),
    ]);
    assert_eq!(
        stdout,
        "TARGET:      release\n\
         DESCRIPTION: the image we ship\n\
         \n\
         BUILD ARG     VALUE   DESCRIPTION\n\
         FLAVOR        full    which variant\n\
         UNUSED_HERE           \n\
         \n\
         SECRET   REQUIRED\n\
         token    true\n\
         \n\
         SSH       REQUIRED\n\
         default   \n\
         \n"
    );
    let (stdout, _) = env.ok(&[
        "build",
        "--call=outline,format=json",
        "--target",
        "base",
        path(&ctx),
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON outline");
    assert_eq!(v["args"][0]["name"], "FLAVOR");
    assert_eq!(v["args"][0]["description"], "which variant");
    assert_eq!(v["secrets"][0]["name"], "token");
    let err = env.fails(&["build", "--call=outline", "--target", "nope", path(&ctx)]);
    assert!(
        err.contains("target stage \"nope\" could not be found"),
        "{err}"
    );
}

#[test]
fn call_targets_lists_stages_with_descriptions() {
    let env = Env::new();
    let ctx = env.context("targets", &[("Dockerfile", DESCRIBED)]);
    let (stdout, _) = env.ok(&["build", "--call=targets", path(&ctx)]);
    assert_eq!(
        stdout,
        "TARGET    DESCRIPTION\n\
         base      the shared base\n\
         release   the image we ship\n\
         (default) \n"
    );
    let (stdout, _) = env.ok(&["build", "--call=targets,format=json", path(&ctx)]);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON targets");
    assert_eq!(v["targets"][2]["default"], true);
    assert_eq!(v["targets"][0]["description"], "the shared base");
    let err = env.fails(&["build", "--call=bogus", path(&ctx)]);
    assert!(err.contains("unknown method \"bogus\""), "{err}");
}
