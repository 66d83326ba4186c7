use std::process::Command;

use crate::common::{require, sh, Env, Registry};

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

/// An uncompressed tar with one regular file at `name` (raw bytes: the tar crate refuses `..`).
fn raw_tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(512 + data.len().div_ceil(512) * 512 + 1024, 0);
    out
}

// See: #19. A base whose layer does not unpack (here an entry `../escape`) failed at the first RUN that used
// it, pointing at that RUN. The base is unpacked by its FROM step now, so the error points at the FROM line;
// a kilobytes-long entry path is shortened in the message.
#[test]
fn r19_unpack_error_of_a_base_points_at_its_from_line() {
    require("/usr/bin/skopeo", "skopeo");
    let env = Env::new();
    let reg = Registry::start();
    let long = format!("{}/../escape", "d/".repeat(600));
    for (tag, entry) in [("dotdot", "../escape".to_owned()), ("long", long)] {
        // An OCI layout holding the hostile image, copied to the registry by skopeo.
        let layout = env.dir.path().join(format!("evil-{tag}"));
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |bytes: &[u8]| {
            let d = oci::Digest::sha256_of(bytes);
            std::fs::write(blobs.join(d.hex()), bytes).unwrap();
            (d, bytes.len())
        };
        let layer = if entry.len() <= 100 {
            raw_tar(&entry, b"x")
        } else {
            // A PAX `path` record carries the long name.
            let rec = format!(" path={entry}\n");
            let mut len = rec.len();
            len += (len + len.to_string().len()).to_string().len();
            let pax = format!("{len}{rec}");
            let mut t = raw_tar("PaxHeaders/e", pax.as_bytes());
            t[156] = b'x';
            t[148..156].fill(b' ');
            let sum: u32 = t[..512].iter().map(|&b| u32::from(b)).sum();
            t[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            t.truncate(512 + pax.len().div_ceil(512) * 512);
            t.extend(raw_tar("placeholder", b"x"));
            t
        };
        let (layer_d, layer_n) = put(&layer);
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_d}"]}},"config":{{}}}}"#
        );
        let (config_d, config_n) = put(config.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{config_n}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_d}","size":{layer_n}}}]}}"#
        );
        let (manifest_d, manifest_n) = put(manifest.as_bytes());
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::write(
            layout.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_d}","size":{manifest_n},"annotations":{{"org.opencontainers.image.ref.name":"1"}}}}]}}"#
            ),
        )
        .unwrap();
        let image = format!("{}/evil/{tag}:1", reg.addr);
        sh(Command::new("skopeo").args([
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:1", layout.display()),
            &format!("docker://{image}"),
        ]));
        let ctx = env.context(
            &format!("evilbase-{tag}"),
            &[("Dockerfile", &format!("FROM {image}\nRUN true\n"))],
        );
        let err = env.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
        assert!(err.contains("refusing layer entry"), "{err}");
        assert!(err.contains("Dockerfile:1"), "not at the FROM line: {err}");
        assert!(!err.contains("Dockerfile:2"), "{err}");
        if tag == "long" {
            assert!(err.contains("characters)…"), "{err}");
            assert!(
                !err.contains(&"d/".repeat(100)),
                "the long path in full: {err}"
            );
        }
    }
}
