//! Multi-platform builds (issue #20) with real emulation (Debian's qemu-user-static through binfmt_misc),
//! the real registry, skopeo and umoci. The arm64 content is Debian's busybox-static:arm64
//! (scripts/install-deps.sh), made into a two-platform base index by rbuild itself: no Docker Hub.
//! Behaviour followed: BuildKit's dockerfile2llb (FROM --platform, BUILD*/TARGET* args) and buildx
//! (one manifest per platform in an index, `type=local` dirs named `linux_arm64`, push-by-digest +
//! `imagetools create`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{require, sh, skopeo_umoci_unpack, step_status, Env, Registry};

const ARM64_BUSYBOX: &str = "/var/cache/rbuild-test/arm64/busybox";

/// Registers qemu-aarch64 (idempotent: `rbuild binfmt --install` keeps a handler that is there).
fn arm64_emulation(env: &Env) {
    require("/usr/bin/qemu-aarch64-static", "qemu-user-static");
    let (out, _) = env.ok(&["binfmt", "--install", "arm64"]);
    assert!(
        out.contains("installed arm64") || out.contains("already registered"),
        "{out}"
    );
    let (list, _) = env.ok(&["binfmt"]);
    assert!(
        list.contains("emulated:") && list.contains("arm64"),
        "{list}"
    );
}

/// Builds `busybase` (linux/amd64 + linux/arm64 index) in `env`'s store from the two busybox binaries;
/// `platforms` picks which.
fn base_index(env: &Env, platforms: &str) {
    assert!(
        Path::new(ARM64_BUSYBOX).exists(),
        "{ARM64_BUSYBOX} is missing: run scripts/install-deps.sh"
    );
    let ctx = env.context(
        "base",
        &[(
            "Dockerfile",
            "FROM scratch\nARG TARGETARCH\nCOPY busybox-${TARGETARCH} /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        )],
    );
    std::fs::copy("/bin/busybox", ctx.join("busybox-amd64")).expect("copy busybox");
    std::fs::copy(ARM64_BUSYBOX, ctx.join("busybox-arm64")).expect("copy arm64 busybox");
    env.ok(&[
        "build",
        "--platform",
        platforms,
        "--build-arg",
        "SOURCE_DATE_EPOCH=0",
        "-t",
        "busybase",
        ctx.to_str().unwrap(),
    ]);
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn two_platform_build_emulates_the_target_runs_and_builds_the_buildplatform_stage_once() {
    let env = Env::new();
    arm64_emulation(&env);
    base_index(&env, "linux/amd64,linux/arm64");
    let reg = Registry::start();
    let ctx = env.context(
        "app",
        &[(
            "Dockerfile",
            "FROM --platform=$BUILDPLATFORM busybase AS build\n\
             RUN uname -m > /build-arch && cat /proc/sys/kernel/random/uuid > /stamp\n\
             FROM busybase\n\
             ARG TARGETARCH TARGETPLATFORM BUILDPLATFORM\n\
             COPY --from=build /build-arch /stamp /\n\
             RUN uname -m > /arch && echo \"$TARGETARCH $TARGETPLATFORM $BUILDPLATFORM\" > /args\n",
        )],
    );
    let tag = format!("{}/app:1", reg.addr);
    let out = env.dir.path().join("out");
    let tar = env.dir.path().join("app.tar");
    let (stdout, stderr) = env.build_plain(
        &tag,
        &ctx,
        &[
            "--platform",
            "linux/amd64",
            "--platform",
            "linux/arm64",
            "--push",
            "-o",
            &format!("type=local,dest={}", out.display()),
            "-o",
            &format!("type=oci,dest={}", tar.display()),
        ],
    );
    // The build-platform stage ran once: the two platforms' graphs run together, and the second to reach
    // it waited on its cache key and took the first one's result.
    let mut ran = [
        step_status(&stderr, "[linux/amd64] [build 2/2] RUN uname -m"),
        step_status(&stderr, "[linux/arm64] [build 2/2] RUN uname -m"),
    ];
    ran.sort();
    assert_eq!(ran, ["CACHED", "RAN"], "{stderr}");
    let pushed = stdout.trim().rsplit_once('@').expect("name@digest").1;

    // The registry holds one index with a manifest per platform.
    let raw = json(&sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{tag}"),
    ])));
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let plats: Vec<String> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(plats, ["linux/amd64", "linux/arm64"]);
    for (arch, uname) in [("amd64", "x86_64"), ("arm64", "aarch64")] {
        let inspected = json(&sh(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--override-os",
            "linux",
            "--override-arch",
            arch,
            &format!("docker://{tag}"),
        ])));
        assert_eq!(inspected["Architecture"], arch);
        // Each platform's RUN ran on its architecture (aarch64 through qemu); the build stage ran natively.
        let (arch_file, _) = env.ok(&[
            "run",
            "--platform",
            &format!("linux/{arch}"),
            &tag,
            "cat",
            "/arch",
            "/args",
            "/build-arch",
        ]);
        assert_eq!(
            arch_file.lines().collect::<Vec<_>>(),
            [uname, &format!("{arch} linux/{arch} linux/amd64"), "x86_64"]
        );
        assert_eq!(read(out.join(format!("linux_{arch}/arch"))), uname);
        let dir = env.dir.path().join(format!("umoci-{arch}"));
        std::fs::create_dir_all(&dir).unwrap();
        let rootfs = skopeo_umoci_unpack_arch(&dir, &tag, arch);
        assert_eq!(read(rootfs.join("arch")), uname);
    }
    // One build-platform stage result in both images.
    assert_eq!(
        read(out.join("linux_amd64/stamp")),
        read(out.join("linux_arm64/stamp"))
    );
    // The local store names the index; images and inspect show its platforms.
    let (list, _) = env.ok(&[
        "images",
        "--format",
        "{{.Repository}} {{.Platforms}} {{.Digest}}",
    ]);
    assert!(
        list.contains(&format!(
            "{}/app linux/amd64,linux/arm64 {pushed}",
            reg.addr
        )),
        "{list}"
    );
    let (inspect, _) = env.ok(&["inspect", &tag]);
    let inspect = json(&inspect);
    assert_eq!(inspect["Manifests"][1]["Config"]["architecture"], "arm64");
    // The OCI archive's index.json names the index, whose blob lists both platforms.
    let layout = env.dir.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    sh(Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout));
    let top = json(&read(layout.join("index.json")));
    assert_eq!(top["manifests"][0]["digest"], pushed);
    let idx = json(&read(
        layout
            .join("blobs/sha256")
            .join(pushed.trim_start_matches("sha256:")),
    ));
    assert_eq!(idx["manifests"].as_array().unwrap().len(), 2);
}

/// `skopeo copy --override-arch` of one platform of a pushed index, then `umoci unpack`.
fn skopeo_umoci_unpack_arch(dir: &Path, image: &str, arch: &str) -> PathBuf {
    let oci = dir.join("oci");
    sh(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        arch,
        &format!("docker://{image}"),
        &format!("oci:{}:app", oci.display()),
    ]));
    let bundle = dir.join("bundle");
    sh(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:app", oci.display()),
        bundle.to_str().unwrap(),
    ]));
    bundle.join("rootfs")
}

#[test]
fn push_by_digest_on_two_runners_then_imagetools_create_gives_the_one_build_index() {
    let reg = Registry::start();
    let dockerfile =
        "FROM busybase\nARG TARGETARCH\nRUN uname -m > /arch && echo $TARGETARCH > /t\n";
    let common = ["--build-arg", "SOURCE_DATE_EPOCH=0"];
    // The one-build form.
    let one = Env::new();
    arm64_emulation(&one);
    base_index(&one, "linux/amd64,linux/arm64");
    let ctx = one.context("app", &[("Dockerfile", dockerfile)]);
    let tag = format!("{}/app:one", reg.addr);
    let mut args = vec!["--platform", "linux/amd64,linux/arm64", "--push"];
    args.extend(common);
    let (stdout, _) = one.build_plain(&tag, &ctx, &args);
    let one_digest = stdout.trim().rsplit_once('@').unwrap().1.to_owned();

    // Two runners, one platform each, pushed by digest only.
    let mut sources = Vec::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let runner = Env::new();
        base_index(&runner, "linux/amd64,linux/arm64");
        let ctx = runner.context("app", &[("Dockerfile", dockerfile)]);
        let meta = runner.dir.path().join("meta.json");
        let mut args = vec!["build", "--progress", "plain", "--platform", platform, "-o"];
        let out = format!("type=registry,name={}/app,push-by-digest=true", reg.addr);
        args.push(&out);
        args.extend(["--metadata-file", meta.to_str().unwrap()]);
        args.extend(common);
        args.push(ctx.to_str().unwrap());
        let (stdout, _) = runner.ok(&args);
        let digest = json(&read(meta))["containerimage.digest"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(stdout.trim(), format!("{}/app@{digest}", reg.addr));
        sources.push(format!("{}/app@{digest}", reg.addr));
    }
    // No tag was pushed by the runners.
    let tags = json(&sh(Command::new("skopeo").args([
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/app", reg.addr),
    ])));
    assert_eq!(tags["Tags"], serde_json::json!(["one"]));
    let stitched = format!("{}/app:stitched", reg.addr);
    let mut args = vec!["imagetools", "create", "-t", &stitched];
    args.extend(sources.iter().map(String::as_str));
    let (stdout, _) = one.ok(&args);
    assert_eq!(stdout.trim(), format!("{}/app@{one_digest}", reg.addr));
    let raw = sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{stitched}"),
    ]));
    let raw_one = sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{tag}"),
    ]));
    assert_eq!(raw, raw_one);
    // The stitched tag reads like any multi-platform image.
    let (a, h) = (one.dir.path().join("stitched"), one.dir.path().join("host"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&h).unwrap();
    let arm = skopeo_umoci_unpack_arch(&a, &stitched, "arm64");
    assert_eq!(read(arm.join("arch")), "aarch64");
    let host = skopeo_umoci_unpack(&h, &stitched);
    assert_eq!(read(host.join("t")), "amd64");
}

#[test]
fn a_foreign_run_without_a_binfmt_handler_fails_before_any_step_naming_the_fix() {
    let env = Env::new();
    let (list, _) = env.ok(&["binfmt"]);
    assert!(
        !list.contains(" s390x "),
        "this test needs a host with no s390x handler: {list}"
    );
    let ctx = env.context(
        "s390x",
        &[(
            "Dockerfile",
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"true\"]\n",
        )],
    );
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    let err = env.fails(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64,linux/s390x",
        "-t",
        "odd",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        err.contains("RUN for linux/s390x needs emulation")
            && err.contains("rbuild binfmt --install s390x")
            && err.contains("Dockerfile:1"),
        "{err}"
    );
    // Nothing ran, for any platform.
    assert!(!err.contains("#1 "), "{err}");
    let (images, _) = env.ok(&["images", "-q"]);
    assert!(images.trim().is_empty(), "{images}");
}

#[test]
fn a_cache_export_of_two_platforms_serves_both_platforms_in_a_fresh_store() {
    let dockerfile =
        "FROM busybase\nARG TARGETARCH\nRUN uname -m > /arch && echo $TARGETARCH > /t\n";
    let first = Env::new();
    arm64_emulation(&first);
    base_index(&first, "linux/amd64,linux/arm64");
    let cache = first.dir.path().join("cache");
    let ctx = first.context("app", &[("Dockerfile", dockerfile)]);
    first.build_plain(
        "app",
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    );
    let fresh = Env::new();
    base_index(&fresh, "linux/amd64,linux/arm64");
    let ctx = fresh.context("app", &[("Dockerfile", dockerfile)]);
    let (_, stderr) = fresh.build_plain(
        "app",
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    );
    for p in ["linux/amd64", "linux/arm64"] {
        assert_eq!(
            step_status(&stderr, &format!("[{p}] [3/3] RUN uname -m")),
            "CACHED",
            "{stderr}"
        );
    }
    let (arm, _) = fresh.ok(&["run", "--platform", "linux/arm64", "app", "cat", "/arch"]);
    assert_eq!(arm.trim(), "aarch64");
}

/// buildx: `--oci-mediatypes=false` (`oci-mediatypes=false`) pushes a Docker manifest list; its docker
/// exporter refuses several platforms ("docker exporter does not currently support exporting manifest
/// lists"), before the build runs.
#[test]
fn docker_media_types_push_a_manifest_list_and_a_docker_archive_of_two_platforms_is_refused() {
    let env = Env::new();
    arm64_emulation(&env);
    base_index(&env, "linux/amd64,linux/arm64");
    let reg = Registry::start();
    let ctx = env.context(
        "app",
        &[("Dockerfile", "FROM busybase\nRUN uname -m > /arch\n")],
    );
    let tag = format!("{}/app:docker", reg.addr);
    env.build_plain(
        &tag,
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--oci-mediatypes=false",
            "--push",
        ],
    );
    let raw = json(&sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{tag}"),
    ])));
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    for m in raw["manifests"].as_array().unwrap() {
        assert_eq!(
            m["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }
    let archive = env.dir.path().join("d.tar");
    let err = env.fails(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=docker,dest={}", archive.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(
        err.contains("docker exporter does not currently support exporting manifest lists"),
        "{err}"
    );
    assert!(!archive.exists());
    assert!(!err.contains("RUN uname"), "the build ran: {err}");
}

/// The sandbox does not break emulation: with the F flag the kernel holds the interpreter, so an
/// arm64 RUN needs no qemu in the rootfs, in chroot isolation too (a pod without CAP_SYS_ADMIN).
#[test]
fn an_emulated_run_needs_no_interpreter_in_the_rootfs_in_chroot_isolation_too() {
    let env = Env::new();
    arm64_emulation(&env);
    base_index(&env, "linux/amd64,linux/arm64");
    let ctx = env.context(
        "chroot",
        &[(
            "Dockerfile",
            "FROM busybase\nRUN uname -m > /arch && ! test -e /usr/bin/qemu-aarch64-static\n",
        )],
    );
    env.build_plain(
        "chroot-arm",
        &ctx,
        &["--isolation=chroot", "--platform", "linux/arm64"],
    );
    let (arch, _) = env.ok(&[
        "run",
        "--isolation=chroot",
        "--platform",
        "linux/arm64",
        "chroot-arm",
        "cat",
        "/arch",
    ]);
    assert_eq!(arch.trim(), "aarch64");
}

/// The files named `name` under the store's cache mounts.
fn cache_mount_files(env: &Env, name: &str) -> usize {
    std::fs::read_dir(env.root().join("mounts"))
        .expect("the store's cache mounts")
        .filter(|d| d.as_ref().unwrap().path().join(name).exists())
        .count()
}

// BuildKit shares the vertex of a $BUILDPLATFORM stage between the platforms of one build even under
// --no-cache (it solves them in one session); rbuild's solves of one build share such a step in-process.
#[test]
fn no_cache_runs_the_buildplatform_stage_once_per_build_not_once_per_platform() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "nocache",
        &[(
            "Dockerfile",
            "FROM --platform=$BUILDPLATFORM busybox:local AS build\n\
             RUN cat /proc/sys/kernel/random/uuid > /stamp\n\
             FROM scratch\n\
             COPY --from=build /stamp /\n",
        )],
    );
    let stamps = |out: &str| {
        let out = env.dir.path().join(out);
        let (_, stderr) = env.build_plain(
            "nocache:1",
            &ctx,
            &[
                "--no-cache",
                "--platform",
                "linux/amd64,linux/arm64",
                "-o",
                &format!("type=local,dest={}", out.display()),
            ],
        );
        let mut ran = [
            step_status(&stderr, "[linux/amd64] [build 2/2] RUN cat"),
            step_status(&stderr, "[linux/arm64] [build 2/2] RUN cat"),
        ];
        ran.sort();
        assert_eq!(ran, ["CACHED", "RAN"], "{stderr}");
        [
            read(out.join("linux_amd64/stamp")),
            read(out.join("linux_arm64/stamp")),
        ]
    };
    let first = stamps("out1");
    assert_eq!(first[0], first[1], "the stage ran once for both platforms");
    // The next --no-cache build runs it again: nothing of the first build is reused.
    let second = stamps("out2");
    assert_eq!(second[0], second[1]);
    assert_ne!(first[0], second[0]);
}

// A failing platform cancels the others at once (BuildKit cancels the session's other vertices): the
// other platform's RUN, started before the failure, is killed before it reaches its end marker.
#[test]
fn a_failing_platform_kills_the_other_platforms_run_and_the_error_names_platform_and_line() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "cancel",
        &[(
            "Dockerfile",
            "FROM --platform=$BUILDPLATFORM busybox:local\n\
             ARG TARGETARCH\n\
             RUN --mount=type=cache,id=m,target=/m \
             if [ \"$TARGETARCH\" = arm64 ]; then \
               i=0; while [ ! -e /m/start ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; exit 3; \
             fi; touch /m/start; sleep 60; touch /m/end\n",
        )],
    );
    let stderr = env.fails(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64,linux/arm64",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        stderr.lines().any(|l| l.contains("× [linux/arm64] ")
            && l.contains("/Dockerfile:3: `RUN")
            && l.ends_with("failed: exited with code 3")),
        "{stderr}"
    );
    assert_eq!(cache_mount_files(&env, "start"), 1, "{stderr}");
    assert_eq!(cache_mount_files(&env, "end"), 0, "{stderr}");
}

// `rbuild push` of a local index tag pushes every image by digest and then the index, as
// `docker push` of a multi-platform image does (buildx's imagetools would too).
#[test]
fn rbuild_push_of_a_local_index_tag_pushes_the_index_and_each_platforms_image() {
    let env = Env::new();
    let reg = Registry::start();
    let ctx = env.context(
        "pushidx",
        &[(
            "Dockerfile",
            "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}.txt /arch\n",
        )],
    );
    std::fs::write(ctx.join("amd64.txt"), "amd64").unwrap();
    std::fs::write(ctx.join("arm64.txt"), "arm64").unwrap();
    let iid = env.dir.path().join("iid");
    env.build_plain(
        "multi:1",
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--iidfile",
            iid.to_str().unwrap(),
        ],
    );
    let index = read(iid);
    let dest = format!("{}/team/multi:1", reg.addr);
    let (out, _) = env.ok(&["push", "multi:1", &dest]);
    assert_eq!(out, format!("{}/team/multi@{index}\n", reg.addr));
    let raw = json(&sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{dest}"),
    ])));
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2, "{raw}");
    for (arch, want) in [("amd64", "amd64"), ("arm64", "arm64")] {
        let dir = env.dir.path().join(format!("unpacked-{arch}"));
        std::fs::create_dir_all(&dir).unwrap();
        let rootfs = skopeo_umoci_unpack_arch(&dir, &dest, arch);
        assert_eq!(read(rootfs.join("arch")), want);
    }
}

/// With --push, each platform's RUN layer goes up while it is written (as a one-platform push does,
/// tests/it/export.rs), and the push of the index after the build sends none of them again.
#[test]
fn a_two_platform_push_uploads_each_platforms_run_layer_while_it_is_written() {
    let env = Env::new();
    arm64_emulation(&env);
    base_index(&env, "linux/amd64,linux/arm64");
    let reg = Registry::start();
    let ctx = env.context(
        "app",
        &[(
            "Dockerfile",
            "FROM busybase\nRUN head -c 3000000 /dev/urandom > /big.bin && uname -m > /arch\n",
        )],
    );
    let tag = format!("{}/eager/multi:1", reg.addr);
    let out = Command::new(crate::common::RBUILD)
        .args([
            "--root",
            env.root().to_str().unwrap(),
            "build",
            "--progress",
            "plain",
        ])
        .args([
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            &tag,
            "--push",
        ])
        .arg(&ctx)
        .env("RBUILD_LOG", "registry::client=debug,export::eager=debug")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (_, stderr) = crate::common::expect_success(&out, &["build", "--push"]);
    let index = json(&sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{tag}"),
    ])));
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{index}");
    for m in manifests {
        let digest = m["digest"].as_str().unwrap();
        let manifest = json(&sh(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}/eager/multi@{digest}", reg.addr),
        ])));
        let run_layer = manifest["layers"].as_array().unwrap().last().unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_owned();
        let arch = &m["platform"]["architecture"];
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("blob pushed while it was written") && l.contains(&run_layer)),
            "the {arch} RUN layer {run_layer} was not pushed while written:\n{stderr}"
        );
        assert_eq!(
            reg.requests("PUT", &format!("digest={}", run_layer.replace(':', "%3A"))),
            1,
            "the {arch} RUN layer was sent once:\n{}",
            reg.log()
        );
    }
}

/// `-o type=local` of a two-platform build with attestations: each platform's directory holds its
/// own provenance next to its tree, about its own image (BuildKit's local exporter, exporter/local:
/// each platform's files are made with that platform's attestations).
#[test]
fn a_two_platform_local_output_has_each_platforms_attestations_in_its_directory() {
    let env = Env::new();
    arm64_emulation(&env);
    base_index(&env, "linux/amd64,linux/arm64");
    let ctx = env.context(
        "app",
        &[("Dockerfile", "FROM busybase\nRUN uname -m > /arch\n")],
    );
    let dest = env.dir.path().join("out");
    env.build_plain(
        "app:att",
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=mode=min",
            "-o",
            &format!("type=local,dest={}", dest.display()),
        ],
    );
    let (inspect, _) = env.ok(&["inspect", "app:att"]);
    let inspect = json(&inspect);
    for (dir, arch) in [("linux_amd64", "x86_64"), ("linux_arm64", "aarch64")] {
        assert_eq!(read(dest.join(dir).join("arch")), arch);
        let p = json(&read(dest.join(dir).join("provenance.json")));
        let subject = p["subject"][0]["digest"]["sha256"].as_str().unwrap();
        assert!(
            inspect.to_string().contains(&format!("sha256:{subject}")),
            "{dir}'s provenance is about one of the index's images: {subject} in {inspect}"
        );
        let platform = &p["predicate"]["buildDefinition"]["externalParameters"]["platform"];
        assert_eq!(platform, &format!("linux/{}", &dir[6..]), "{p}");
    }
    assert!(
        !dest.join("provenance.json").exists(),
        "no file for the index itself"
    );
}
