use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{require, sh, Env};

const APP: &str = r#"
FROM busybox:local
WORKDIR /app
COPY hello.txt ./
RUN mkdir -p /app/data && echo made > /app/data/made.txt && chmod 4755 /app/data/made.txt && ln -s made.txt /app/data/link
CMD ["cat", "/app/hello.txt"]
"#;

fn app(env: &Env) -> PathBuf {
    env.context("app", &[("Dockerfile", APP), ("hello.txt", "hello\n")])
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("parse json")
}

/// Every path below `root` with its type, mode, owner and content (or link target).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.expect("walk");
        let m = e.path().symlink_metadata().expect("metadata");
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let what = if m.file_type().is_symlink() {
            format!(
                "link {}",
                std::fs::read_link(e.path()).unwrap().to_string_lossy()
            )
        } else if m.is_dir() {
            "dir".to_owned()
        } else if m.is_file() {
            format!("file {:x}", md5ish(&std::fs::read(e.path()).unwrap()))
        } else {
            "other".to_owned()
        };
        out.insert(
            rel,
            format!("{what} mode={:o} uid={} gid={}", m.mode(), m.uid(), m.gid()),
        );
    }
    out
}

/// A cheap content fingerprint (FNV-1a), enough to compare trees.
fn md5ish(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn every_output_at_once_and_real_tools_read_them() {
    require("/usr/bin/skopeo", "skopeo");
    require("/usr/bin/umoci", "umoci");
    let env = Env::new();
    env.busybox();
    let ctx = app(&env);
    let d = env.dir.path();
    let (oci_tar, oci_dir, docker, local, rootfs_tar, meta) = (
        d.join("out/app-oci.tar"),
        d.join("out/layout"),
        d.join("out/app-docker.tar"),
        d.join("out/local"),
        d.join("out/rootfs.tar"),
        d.join("out/meta.json"),
    );
    // File outputs go into an existing directory, as with buildx (r19 in errors.rs).
    std::fs::create_dir(d.join("out")).unwrap();
    env.ok(&[
        "build",
        "-t",
        "app:1",
        "-o",
        &format!("type=oci,dest={}", s(&oci_tar)),
        "-o",
        &format!("type=oci,dest={},tar=false", s(&oci_dir)),
        "-o",
        &format!("type=docker,dest={}", s(&docker)),
        "-o",
        &format!("type=local,dest={}", s(&local)),
        "-o",
        &format!("type=tar,dest={}", s(&rootfs_tar)),
        "-o",
        "type=image,name=app:extra",
        "--metadata-file",
        s(&meta),
        s(&ctx),
    ]);

    // Metadata as buildx writes it.
    let m = json(&meta);
    let digest = m["containerimage.digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{m}");
    assert_eq!(m["containerimage.descriptor"]["digest"], digest.as_str());
    assert_eq!(
        m["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(m["containerimage.config.digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(
        m["image.name"],
        "docker.io/library/app:1,docker.io/library/app:extra"
    );
    let (images, _) = env.ok(&["images"]);
    assert!(images.contains("app:extra"), "{images}");

    let base_layers = inspect(&env, "busybox:local")["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .len();
    // skopeo reads the OCI archive, the OCI directory and the docker archive, all as the same image.
    for transport in [
        format!("oci-archive:{}:app:1", s(&oci_tar)),
        format!("oci:{}:app:extra", s(&oci_dir)),
        format!("docker-archive:{}", s(&docker)),
    ] {
        let raw = sh(Command::new("skopeo").args(["inspect", "--config", &transport]));
        let cfg: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            cfg["config"]["Cmd"],
            serde_json::json!(["cat", "/app/hello.txt"]),
            "{transport}"
        );
        assert_eq!(
            cfg["rootfs"]["diff_ids"].as_array().unwrap().len(),
            base_layers + 3,
            "{transport}: {cfg}"
        );
        let raw = sh(Command::new("skopeo").args(["inspect", &transport]));
        let info: serde_json::Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(
            info["Layers"].as_array().unwrap().len(),
            base_layers + 3,
            "{transport}: {info}"
        );
    }
    let raw = sh(Command::new("skopeo").args(["inspect", &format!("oci:{}:app:1", s(&oci_dir))]));
    let info: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(info["Digest"], digest.as_str());
    // The docker archive names the image as docker load would.
    let listing = sh(Command::new("tar").args(["-xOf", s(&docker), "manifest.json"]));
    let dm: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(dm[0]["RepoTags"], serde_json::json!(["app:1", "app:extra"]));

    // umoci unpack of the OCI output gives the same tree as type=local and as type=tar.
    let bundle = d.join("bundle");
    sh(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:app:1", s(&oci_dir)),
        s(&bundle),
    ]));
    let from_umoci = tree(&bundle.join("rootfs"));
    let from_local = tree(&local);
    assert_eq!(from_umoci, from_local);
    assert!(
        from_local["app/data/made.txt"].contains("mode=104755"),
        "setuid survives: {}",
        from_local["app/data/made.txt"]
    );
    assert!(from_local["app/data/link"].starts_with("link made.txt"));
    assert_eq!(
        std::fs::read_to_string(local.join("app/hello.txt")).unwrap(),
        "hello\n"
    );
    let untar = d.join("untar");
    std::fs::create_dir(&untar).unwrap();
    sh(Command::new("tar").args(["-xpf", s(&rootfs_tar), "-C", s(&untar)]));
    assert_eq!(tree(&untar), from_local);
}

#[test]
fn stdout_output_and_bad_specs() {
    let env = Env::new();
    let ctx = env.context(
        "scratch",
        &[
            ("Dockerfile", "FROM scratch\nCOPY a.txt /\n"),
            ("a.txt", "A\n"),
        ],
    );
    let out = env.rbuild(&["build", "-q", "-o", "-", s(&ctx)]);
    assert!(out.status.success());
    let untar = env.dir.path().join("untar");
    std::fs::create_dir(&untar).unwrap();
    let mut tar = tar::Archive::new(&out.stdout[..]);
    tar.unpack(&untar)
        .unwrap_or_else(|e| panic!("stdout is a tar: {e}"));
    assert_eq!(std::fs::read_to_string(untar.join("a.txt")).unwrap(), "A\n");

    let err = env.fails(&["build", "-o", "type=floppy,dest=x", s(&ctx)]);
    assert!(err.contains("unknown type=floppy"), "{err}");
    let err = env.fails(&["build", "-o", "type=local", s(&ctx)]);
    assert!(err.contains("needs dest="), "{err}");
}

/// Layer blobs of a local image, by reading its manifest through `rbuild inspect`.
fn inspect(env: &Env, name: &str) -> serde_json::Value {
    let (out, _) = env.ok(&["inspect", name]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect prints JSON: {e}\n{out}"))
}

#[test]
fn compression_zstd_uncompressed_force_and_docker_media_types() {
    require("/usr/bin/skopeo", "skopeo");
    let env = Env::new();
    env.busybox();
    let ctx = app(&env);
    let d = env.dir.path();

    env.ok(&[
        "build",
        "-q",
        "-t",
        "z",
        "--compression",
        "zstd",
        "--compression-level",
        "5",
        s(&ctx),
    ]);
    let z = inspect(&env, "z");
    let layers = z["Manifest"]["layers"].as_array().unwrap();
    let base_layers = inspect(&env, "busybox:local")["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .len();
    // The base layers were written as gzip when busybox was built; the new ones are zstd.
    assert_eq!(layers.len(), base_layers + 3);
    for l in &layers[..base_layers] {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    for l in &layers[base_layers..] {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{z}"
        );
    }
    // zstd layers unpack (RUN on top of them, and type=local).
    let child = env.context(
        "child",
        &[(
            "Dockerfile",
            "FROM z\nRUN cat /app/hello.txt /app/data/made.txt > /both\n",
        )],
    );
    env.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=local,dest={}", s(&d.join("zl"))),
        s(&child),
    ]);
    assert_eq!(
        std::fs::read_to_string(d.join("zl/both")).unwrap(),
        "hello\nmade\n"
    );

    env.ok(&[
        "build",
        "-q",
        "-t",
        "zf",
        "--compression",
        "zstd",
        "--force-compression",
        s(&ctx),
    ]);
    let zf = inspect(&env, "zf");
    for l in zf["Manifest"]["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{zf}"
        );
    }
    // Recompression keeps the diff_ids.
    assert_eq!(zf["Config"]["rootfs"], z["Config"]["rootfs"]);

    env.ok(&[
        "build",
        "-q",
        "-t",
        "u",
        "--compression",
        "uncompressed",
        "--force-compression",
        s(&ctx),
    ]);
    let u = inspect(&env, "u");
    for l in u["Manifest"]["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar",
            "{u}"
        );
    }
    assert_eq!(u["Config"]["rootfs"], z["Config"]["rootfs"]);
    // Uncompressed blobs are their own diff_ids.
    let diff_ids = u["Config"]["rootfs"]["diff_ids"].as_array().unwrap();
    for (l, id) in u["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(diff_ids)
    {
        assert_eq!(&l["digest"], id);
    }

    let docker_tar = d.join("dm.tar");
    env.ok(&[
        "build",
        "-q",
        "-t",
        "dm",
        "--oci-mediatypes=false",
        "-o",
        &format!("type=docker,dest={}", s(&docker_tar)),
        s(&ctx),
    ]);
    let dm = inspect(&env, "dm");
    assert_eq!(
        dm["Manifest"]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        dm["Manifest"]["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    for l in dm["Manifest"]["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
    }
    let raw =
        sh(Command::new("skopeo").args(["inspect", &format!("docker-archive:{}", s(&docker_tar))]));
    assert!(raw.contains("\"Layers\""), "{raw}");
}

#[test]
fn labels_annotations_base_and_history() {
    let env = Env::new();
    env.busybox();
    let ctx = app(&env);
    env.ok(&[
        "build",
        "-q",
        "-t",
        "meta",
        "--label",
        "org.example.team=build",
        "--annotation",
        "org.opencontainers.image.source=https://example.com/app",
        s(&ctx),
    ]);
    let m = inspect(&env, "meta");
    assert_eq!(m["Config"]["config"]["Labels"]["org.example.team"], "build");
    let ann = &m["Manifest"]["annotations"];
    assert_eq!(
        ann["org.opencontainers.image.source"],
        "https://example.com/app"
    );
    assert_eq!(
        ann["org.opencontainers.image.base.name"],
        "docker.io/library/busybox:local"
    );
    let base = inspect(&env, "busybox:local");
    assert_eq!(
        ann["org.opencontainers.image.base.digest"],
        base["Descriptor"]["digest"]
    );

    let (h, _) = env.ok(&["history", "meta"]);
    let lines: Vec<&str> = h.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE")
            && lines[0].contains("CREATED BY")
            && lines[0].contains("COMMENT"),
        "{h}"
    );
    let id = m["Id"].as_str().unwrap();
    assert!(
        lines[1].starts_with(&id["sha256:".len()..]["".len()..12 + "".len()]),
        "{h}"
    );
    // Newest first: CMD, RUN, COPY, WORKDIR, then the base's entries.
    assert!(lines[1].contains("CMD"), "{h}");
    assert!(lines[2].contains("RUN"), "{h}");
    assert!(lines[3].contains("COPY"), "{h}");
    assert!(
        lines.iter().skip(2).any(|l| l.starts_with("<missing>")),
        "{h}"
    );
    let history = m["Config"]["history"].as_array().unwrap();
    assert_eq!(lines.len(), history.len() + 1, "{h}");
    let (full, _) = env.ok(&["history", "--no-trunc", "meta"]);
    assert!(full.contains(id), "{full}");
}

/// Builds the busybox base and `APP` in a fresh store with SOURCE_DATE_EPOCH, touching the context first.
fn reproducible_build(mtime: &str, rewrite: bool, epoch_for_base: bool) -> (String, String) {
    let env = Env::new();
    let ctx = app(&env);
    sh(Command::new("touch").args(["-d", mtime, s(&ctx.join("hello.txt"))]));
    if epoch_for_base {
        // The busybox context gets fresh mtimes; the epoch (from the environment) clamps them.
        let bb = env.dir.path().join("busybox");
        std::fs::create_dir_all(&bb).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/busybox");
        for f in ["Dockerfile", "passwd", "group", "nsswitch.conf"] {
            std::fs::copy(src.join(f), bb.join(f)).unwrap();
        }
        std::fs::copy("/bin/busybox", bb.join("busybox")).unwrap();
        sh(Command::new(crate::common::RBUILD)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .arg("--root")
            .arg(env.root())
            .args(["build", "-q", "-t", "busybox:local", s(&bb)]));
    } else {
        env.busybox();
    }
    let meta = env.dir.path().join("meta.json");
    let mut args = vec![
        "build",
        "-q",
        "--build-arg",
        "SOURCE_DATE_EPOCH=1700000000",
        "--metadata-file",
        s(&meta),
    ];
    if rewrite {
        args.push("--rewrite-timestamp");
    }
    args.push(s(&ctx));
    env.ok(&args);
    let m = json(&meta);
    (
        m["containerimage.digest"].as_str().unwrap().to_owned(),
        m["containerimage.config.digest"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

#[test]
fn source_date_epoch_gives_the_same_digest_in_fresh_stores() {
    let a = reproducible_build("2024-01-01 10:00", false, true);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = reproducible_build("2025-06-01 12:34", false, true);
    assert_eq!(a, b, "same context, same epoch, same image digest");

    // Without an epoch for the base, --rewrite-timestamp clamps the base layers and history too, so the
    // image config (its ID) is the same; the manifest differs only by the base-digest annotation.
    let c = reproducible_build("2024-01-01 10:00", true, false);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let d = reproducible_build("2025-06-01 12:34", true, false);
    assert_eq!(c.1, d.1, "--rewrite-timestamp: same config digest");
}

/// `rbuild build --progress plain -t TAG --push CTX` with `RBUILD_LOG=filter`, asserting success;
/// returns stderr (progress and log lines).
fn push_with_log(env: &Env, tag: &str, ctx: &Path, filter: &str) -> String {
    let out = Command::new(crate::common::RBUILD)
        .args(["--root", s(&env.root()), "build", "--progress", "plain"])
        .args(["-t", tag, "--push", s(ctx)])
        .env("RBUILD_LOG", filter)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    crate::common::expect_success(&out, &["build", "--push"]).1
}

const GROWING: &str = r#"
FROM busybox:local
RUN for i in 1 2 3 4 5 6; do head -c 1048576 /dev/urandom >> /big.bin; sleep 0.3; done; \
    head -c 3000000 /dev/zero > /zeros.bin; sleep 3; sha256sum /big.bin /zeros.bin > /sums
"#;

/// A RUN that writes large files slowly: their gzip members are compressed while it runs and used, the
/// layer is byte for byte what compressing it afterwards gives, and skopeo + umoci read it back.
#[test]
fn gzip_members_compressed_during_the_run_give_the_same_layer() {
    let env = Env::new();
    env.busybox();
    let reg = crate::common::Registry::start();
    let ctx = env.context("growing", &[("Dockerfile", GROWING)]);
    let tag = format!("{}/early/app:1", reg.addr);
    let stderr = push_with_log(&env, &tag, &ctx, "exec=debug");
    let line = stderr
        .lines()
        .find(|l| l.contains("gzip members compressed during the RUN"))
        .unwrap_or_else(|| panic!("no early gzip line in\n{stderr}"));
    let count = |key: &str| -> u64 {
        let v = line.split(&format!("{key}=")).nth(1).unwrap_or("");
        v.split_whitespace().next().unwrap().parse().unwrap()
    };
    // big.bin is 6 members, zeros.bin 3, and the RUN idles 3 s at the end: on a quiet machine all 9
    // are early. The watcher runs at nice 19, so a busy machine (other tests) may leave it less; at
    // least some get done, and every early member is used, since nothing rewrote them.
    assert!(count("compressed") >= 1, "{line}");
    assert_eq!(count("used"), count("compressed"), "{line}");

    // The RUN's layer is what compressing its tar afterwards gives, on any thread count.
    let layers = env.layers(&tag);
    let digest = layers.last().unwrap().strip_prefix("sha256:").unwrap();
    let blob = std::fs::read(env.root().join("blobs/sha256").join(digest)).unwrap();
    for threads in [1, 2] {
        let mut again = Vec::new();
        let opts = oci::LayerOptions {
            threads: Some(threads),
            ..oci::LayerOptions::default()
        };
        oci::recompress_layer(
            &blob[..],
            oci::media_type::OCI_LAYER_GZIP,
            &mut again,
            &opts,
        )
        .unwrap();
        assert!(
            again == blob,
            "recompressed on {threads} threads: other bytes"
        );
    }
    let members = blob.windows(4).filter(|w| *w == [0x1f, 0x8b, 8, 0]).count();
    assert!(members >= 9, "{members} gzip members");

    // Real consumers read every member: the files unpacked by umoci match the sums taken in the RUN.
    let rootfs = crate::common::skopeo_umoci_unpack(env.dir.path(), &tag);
    let sums = std::fs::read_to_string(rootfs.join("sums")).unwrap();
    for line in sums.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        let bytes = std::fs::read(rootfs.join(path.trim_start_matches('/'))).unwrap();
        assert_eq!(oci::Digest::sha256_of(&bytes).hex(), sum, "{path}");
    }
    assert_eq!(
        std::fs::metadata(rootfs.join("big.bin")).unwrap().len(),
        6 << 20
    );
    // gzip and zcat read the whole stream too.
    let path = env.dir.path().join("layer.tar.gz");
    std::fs::write(&path, &blob).unwrap();
    sh(Command::new("gzip").args(["-t", s(&path)]));

    // A level gzip does not have is a flag error naming the range.
    let err = env.fails(&["build", "--compression-level", "13", s(&ctx)]);
    assert!(
        err.contains("--compression-level 13: gzip levels are 0 to 12"),
        "{err}"
    );
    let err = env.fails(&[
        "build",
        "--compression",
        "zstd",
        "--compression-level",
        "0",
        s(&ctx),
    ]);
    assert!(err.contains("zstd levels are 1 to 22"), "{err}");
}

const TWO_STAGES: &str = r#"
FROM busybox:local AS builder
RUN head -c 3000000 /dev/urandom > /junk && echo builder-only > /note
FROM busybox:local
COPY --from=builder /note /note
RUN for i in 1 2 3 4; do head -c 1048576 /dev/urandom >> /big.bin; sleep 0.2; done; sha256sum /big.bin > /sum
"#;

/// With --push, the pushed image's RUN layer goes up while it is written (one PATCH that follows the
/// blob), the push after the build does not send it again, and a layer of another stage never reaches
/// the registry.
#[test]
fn push_uploads_the_images_run_layers_while_they_are_written() {
    let env = Env::new();
    env.busybox();
    let reg = crate::common::Registry::start();
    let ctx = env.context("two-stages", &[("Dockerfile", TWO_STAGES)]);
    let tag = format!("{}/eager/app:1", reg.addr);
    let stderr = push_with_log(
        &env,
        &tag,
        &ctx,
        "registry::client=debug,export::eager=debug",
    );
    let layers = env.layers(&tag);
    let run_layer = layers.last().unwrap().clone();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("blob pushed while it was written") && l.contains(&run_layer)),
        "the RUN layer {run_layer} was not pushed while written:\n{stderr}"
    );
    // Sent once: by the PATCH that followed it; the push after the build only checked it.
    assert_eq!(
        reg.requests("PUT", &format!("digest={}", run_layer.replace(':', "%3A"))),
        1,
        "{}",
        reg.log()
    );
    assert_eq!(
        reg.requests("PATCH", "/eager/app/blobs/uploads/"),
        1,
        "{}",
        reg.log()
    );
    // The builder stage's RUN layer is not in the image and never went up.
    let (_, _) = env.ok(&[
        "build",
        "-q",
        "--target",
        "builder",
        "-t",
        "builder:1",
        s(&ctx),
    ]);
    let builder_layer = env.layers("builder:1").last().unwrap().clone();
    assert!(!layers.contains(&builder_layer));
    assert_eq!(
        crate::common::http_status(&reg.addr, &format!("/v2/eager/app/blobs/{builder_layer}")),
        Some(404)
    );
    // The pushed image is whole.
    let rootfs = crate::common::skopeo_umoci_unpack(env.dir.path(), &tag);
    let sum = std::fs::read_to_string(rootfs.join("sum")).unwrap();
    let bytes = std::fs::read(rootfs.join("big.bin")).unwrap();
    assert_eq!(bytes.len(), 4 << 20);
    assert!(
        sum.starts_with(oci::Digest::sha256_of(&bytes).hex()),
        "{sum}"
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("note")).unwrap(),
        "builder-only\n"
    );
}

/// Found by the differential (buildah's maintainer, metadata-only, … built by the lab's BuildKit): an
/// image that adds no layer to its base is dated like its base's last layer, history included, as
/// BuildKit's exporter dates images from their layers; one that adds a layer is dated now.
#[test]
fn a_metadata_only_image_is_dated_by_its_base_as_buildkit() {
    let env = Env::new();
    env.busybox();
    let inspect = |tag: &str| -> serde_json::Value {
        let (out, _) = env.ok(&["inspect", tag]);
        serde_json::from_str(&out).expect("inspect prints JSON")
    };
    let base = inspect("busybox:local");
    let base_time = base["Config"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|h| h["created"].as_str())
        .unwrap()
        .to_owned();
    let ctx = env.context(
        "meta",
        &[("Dockerfile", "FROM busybox:local\nLABEL a=b\nCMD [\"x\"]\n")],
    );
    env.ok(&["build", "-t", "meta:1", ctx.to_str().unwrap()]);
    let meta = inspect("meta:1");
    assert_eq!(meta["Config"]["created"].as_str(), Some(base_time.as_str()));
    let last = meta["Config"]["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["created"].as_str(), Some(base_time.as_str()), "{last}");

    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox:local\nLABEL a=b\nRUN echo > /f\n",
    )
    .unwrap();
    env.ok(&["build", "-t", "meta:2", ctx.to_str().unwrap()]);
    let layered = inspect("meta:2");
    assert_ne!(
        layered["Config"]["created"].as_str(),
        Some(base_time.as_str())
    );
}
