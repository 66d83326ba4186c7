use crate::common::{Env, Registry};

/// The tag still names the image it named before the failed build.
fn tag_unchanged(env: &Env, name: &str, before: &str) {
    let (images, _) = env.ok(&["images"]);
    let line = images
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .to_owned();
    assert_eq!(line, before, "a failed build changed tag {name}");
}

fn tagged_line(env: &Env, name: &str) -> String {
    let (images, _) = env.ok(&["images"]);
    images
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn missing_dockerfile_and_context() {
    let env = Env::new();
    let empty = env.context("empty", &[]);
    let err = env.fails(&["build", "-t", "x", empty.to_str().unwrap()]);
    assert!(
        err.contains("Dockerfile not found") && err.contains("empty/Dockerfile"),
        "{err}"
    );
    let err = env.fails(&["build", "-t", "x", "/nonexistent/ctx"]);
    assert!(
        err.contains("build context /nonexistent/ctx not found"),
        "{err}"
    );
    let err = env.fails(&[
        "build",
        "-t",
        "x",
        "-f",
        "/nonexistent/Dockerfile",
        empty.to_str().unwrap(),
    ]);
    assert!(err.contains("/nonexistent/Dockerfile"), "{err}");
}

#[test]
fn unknown_instruction_names_file_line_and_suggests() {
    let env = Env::new();
    let ctx = env.context("bad", &[("Dockerfile", "FROM scratch\nRUNN echo hi\n")]);
    let err = env.fails(&["build", "-t", "x", ctx.to_str().unwrap()]);
    assert!(
        err.contains("Dockerfile:2:1"),
        "names file:line:column: {err}"
    );
    assert!(err.contains("RUN"), "suggests RUN: {err}");
    assert!(err.contains("RUNN echo hi"), "shows the source line: {err}");
}

#[test]
fn failing_run_names_its_line_and_exit_code_and_keeps_the_tag() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "fail",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo one\nRUN echo about to fail && exit 7\n",
        )],
    );
    let c = ctx.to_str().unwrap();
    let before = tagged_line(&env, "busybox:local");
    let err = env.fails(&["build", "-t", "busybox:local", "--progress", "plain", c]);
    assert!(err.contains("exited with code 7"), "{err}");
    assert!(err.contains("Dockerfile:3"), "points at line 3: {err}");
    assert!(
        err.contains("about to fail"),
        "the step's output is shown: {err}"
    );
    tag_unchanged(&env, "busybox:local", &before);
}

#[test]
fn unreachable_registry_and_missing_image_are_named() {
    let env = Env::new();
    // Port 9 (discard) on loopback: nothing listens.
    let ctx = env.context(
        "unreach",
        &[("Dockerfile", "FROM 127.0.0.1:9/nothing/here:1\nRUN true\n")],
    );
    let err = env.fails(&["build", "-t", "x:1", ctx.to_str().unwrap()]);
    assert!(err.contains("127.0.0.1:9"), "names the registry: {err}");
    assert!(!err.contains("panicked"));

    let reg = Registry::start();
    let ctx = env.context(
        "missing",
        &[("Dockerfile", &format!("FROM {}/no/such:image\n", reg.addr))],
    );
    let err = env.fails(&["build", "-t", "x:1", ctx.to_str().unwrap()]);
    assert!(
        err.contains("no/such:image") && err.contains("not found"),
        "names the image: {err}"
    );
    let (images, _) = env.ok(&["images"]);
    assert!(
        !images.contains("x:1"),
        "no tag for a failed build: {images}"
    );
}

#[test]
fn copy_outside_the_context_is_refused() {
    let env = Env::new();
    let ctx = env.context(
        "escape",
        &[("Dockerfile", "FROM scratch\nCOPY ../outside /x\n")],
    );
    std::fs::write(env.dir.path().join("outside"), "secret").unwrap();
    let err = env.fails(&["build", "-t", "x:1", ctx.to_str().unwrap()]);
    assert!(err.contains("outside the build context"), "{err}");
}

// See: #19. `-o type=oci,dest=/no/such/dir/x.tar` made /no/such/dir silently. buildx opens the file, so a
// missing directory fails; rbuild says so before building and makes no directory the user did not name.
// --iidfile and --metadata-file too.
#[test]
fn r19_output_and_iidfile_into_a_missing_directory_fail_before_building() {
    let env = Env::new();
    let ctx = env.context(
        "missingdir",
        &[("Dockerfile", "FROM scratch\nCOPY f /f\n"), ("f", "x\n")],
    );
    let missing = env.dir.path().join("no/such/dir");
    for (flags, shown) in [
        (
            vec![
                "-o".to_owned(),
                format!("type=oci,dest={}/x.tar", missing.display()),
            ],
            "--output",
        ),
        (
            vec![
                "-o".to_owned(),
                format!("type=docker,dest={}/x.tar", missing.display()),
            ],
            "--output",
        ),
        (
            vec!["--iidfile".to_owned(), format!("{}/iid", missing.display())],
            "--iidfile",
        ),
        (
            vec![
                "--metadata-file".to_owned(),
                format!("{}/m.json", missing.display()),
            ],
            "--metadata-file",
        ),
    ] {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend(flags.iter().map(String::as_str));
        args.push(ctx.to_str().unwrap());
        let err = env.fails(&args);
        assert!(
            err.contains(shown) && err.contains("does not exist"),
            "{err}"
        );
        assert!(!err.contains("COPY f"), "it built first: {err}");
        assert!(!env.dir.path().join("no").exists(), "{err}");
    }
    // A directory output is what the user named: made, as BuildKit does.
    let out = env.dir.path().join("made/oci-dir/");
    env.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={}/,tar=false", out.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(out.join("index.json").is_file());
}
