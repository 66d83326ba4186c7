//! The differential's CI subset: each case under tests/differential/ is built by rbuild and compared, tree
//! and config, with what BuildKit built from it (`expected.txt`, recorded in the lab with
//! `bench/differential/differential.py record tests/differential/<case>`; `current-buildkit.txt` says
//! where current BuildKit differs from the lab's 0.8 and why). The comparison is the harness's own
//! (`differential.py check`: skopeo copy, `umoci unpack`, listing), so CI and the lab judge alike.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{require, Env};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds case `name` with rbuild (bases: the busybox image built here, passed as `BASE`) and asserts that
/// the harness finds no difference from BuildKit's recorded image.
fn matches_buildkit(name: &str) {
    require("/usr/bin/python3", "python3");
    require("/usr/bin/skopeo", "skopeo");
    require("/usr/bin/umoci", "umoci");
    let case = repo().join("tests/differential").join(name);
    let dockerfile =
        std::fs::read_to_string(case.join("context/Dockerfile")).expect("case Dockerfile");
    let env = Env::new();
    let mut args = vec!["build".to_owned(), "--progress".into(), "plain".into()];
    if dockerfile.contains("$BASE") {
        env.busybox();
        args.extend(["--build-arg".into(), "BASE=busybox:local".into()]);
    }
    let out = env.dir.path().join("out");
    args.extend([
        "-o".into(),
        format!("type=oci,dest={},tar=false", out.display()),
        case.join("context").display().to_string(),
    ]);
    env.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let check = Command::new("/usr/bin/python3")
        .arg(repo().join("bench/differential/differential.py"))
        .arg("check")
        .arg(&case)
        .arg(&out)
        .output()
        .expect("running differential.py");
    assert!(
        check.status.success(),
        "rbuild's image of {name} differs from BuildKit's:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(Path::new(&case.join("expected.txt")).exists());
}

/// #17 item 1: `ARG NAME="$NAME-dev"` in a stage FROM another sees the parent's NAME; a bare `ARG NAME`
/// keeps it.
#[test]
fn args_are_inherited_from_the_parent_stage_as_in_buildkit() {
    matches_buildkit("arg-inheritance");
}

/// #17 item 5 and the config fields of a scratch stage (ENV, LABEL, EXPOSE, USER, VOLUME, STOPSIGNAL,
/// HEALTHCHECK, ENTRYPOINT, CMD with ArgsEscaped), history included.
#[test]
fn scratch_stage_config_matches_buildkit() {
    matches_buildkit("scratch-config");
}

/// #17 item 5: WorkingDir "/" by default; a relative WORKDIR and `COPY a.txt .` under it.
#[test]
fn scratch_stage_working_dir_matches_buildkit() {
    matches_buildkit("scratch-workdir");
}

/// COPY rules: directory contents, wildcards, trailing slash, --chown, --chmod on a file, symlinks kept.
#[test]
fn copy_semantics_match_buildkit() {
    matches_buildkit("copy-semantics");
}

/// RUN output (modes, owners, symlinks, hardlinks, a fifo, sticky dirs) carried into a scratch stage by
/// COPY --from.
#[test]
fn copy_from_a_run_stage_matches_buildkit() {
    matches_buildkit("multistage-run");
}

/// #17 item 10: ADD of a tar with a PAX global header.
#[test]
fn add_of_a_tar_with_a_pax_global_header_matches_buildkit() {
    matches_buildkit("pax-global-header");
}

/// An ARG assigned after an ENV of the same name wins in RUN's environment and expansion; a valueless
/// ARG is not set.
#[test]
fn arg_and_env_order_in_run_matches_buildkit() {
    matches_buildkit("arg-env-order");
}
