//! Managing images: `tag`, `rmi`, `images` (filters, formats), `push SOURCE DEST`, `save` and `load`.
//! Behaviour follows the docker CLI (`docker tag|rmi|images|push|save|load`).

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{require, sh, Env, Registry};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `rbuild load` with `input` on stdin; returns (success, stdout, stderr).
fn load_stdin(env: &Env, input: &[u8]) -> (bool, String, String) {
    let mut child = Command::new(crate::common::RBUILD)
        .arg("--root")
        .arg(env.root())
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild load");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        // rbuild may stop reading early on a bad archive.
        let _ = std::io::Write::write_all(&mut stdin, &data);
    });
    let out = child.wait_with_output().expect("rbuild load");
    writer.join().unwrap();
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!se.contains("panicked"), "{se}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        se,
    )
}

/// Every (path, data offset in the archive, size) of a tar file.
fn tar_entries(bytes: &[u8]) -> Vec<(String, u64, u64)> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.raw_file_position(),
                e.size(),
            )
        })
        .collect()
}

/// The store has no tags at all.
fn no_tags(env: &Env) {
    assert_eq!(env.ok(&["images", "-q"]).0, "", "something was tagged");
}

/// `app:1`: busybox plus a layer of its own whose file says `hello from app`.
fn app(env: &Env) {
    env.busybox();
    let ctx = env.context(
        "app",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo 'hello from app' > /hello && head -c 300000 /dev/urandom > /noise\nCMD [\"cat\", \"/hello\"]\n",
        )],
    );
    env.build_plain("app:1", &ctx, &[]);
}

/// `rbuild images --format json`, one object per line, parsed.
fn images_json(env: &Env, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["images", "--format", "json"];
    args.extend_from_slice(extra);
    let (out, _) = env.ok(&args);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The row of `repo:tag` in `images --format json`.
fn row(env: &Env, repo: &str, tag: &str) -> Option<serde_json::Value> {
    images_json(env, &[])
        .into_iter()
        .find(|r| r["Repository"] == repo && r["Tag"] == tag)
}

/// The number of blobs `rbuild du` reports.
fn du_blobs(env: &Env) -> u64 {
    let (du, _) = env.ok(&["du"]);
    du.lines()
        .find(|l| l.starts_with("blobs"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no blobs line in {du}"))
}

#[test]
fn tag_names_an_image_by_tag_digest_or_id_and_images_lists_filters_and_formats() {
    let env = Env::new();
    app(&env);
    let app1 = row(&env, "app", "1").expect("app:1 listed");
    let digest = app1["Digest"].as_str().expect("Digest").to_owned();
    let id = app1["ID"].as_str().expect("ID").to_owned();
    assert!(digest.starts_with("sha256:") && id.len() == 12, "{app1}");

    env.ok(&["tag", "app:1", "app:2", "127.0.0.1:5000/team/app:x"]);
    env.ok(&["tag", &format!("app@{digest}"), "bydigest:1"]);
    env.ok(&["tag", &id, "byid"]);
    for (repo, tag) in [
        ("app", "2"),
        ("127.0.0.1:5000/team/app", "x"),
        ("bydigest", "1"),
        ("byid", "latest"),
    ] {
        let r = row(&env, repo, tag).unwrap_or_else(|| panic!("{repo}:{tag} not listed"));
        assert_eq!(r["Digest"], digest.as_str(), "{repo}:{tag}");
    }
    // The new name runs the same image.
    assert_eq!(env.ok(&["run", "bydigest:1"]).0, "hello from app\n");

    // -q: each image ID once (busybox and app).
    let (q, _) = env.ok(&["images", "-q"]);
    let ids: Vec<&str> = q.lines().collect();
    assert_eq!(ids.len(), 2, "{q}");
    assert!(ids.contains(&id.as_str()), "{q}");

    // --filter reference= globs on repository or name:tag, `*` not crossing `/`.
    let (f, _) = env.ok(&[
        "images",
        "--filter",
        "reference=app",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    assert_eq!(f, "app:1\napp:2\n");
    let (f, _) = env.ok(&[
        "images",
        "--filter",
        "reference=*/*/app:*",
        "--format",
        "{{.Repository}} {{.Tag}} {{.Digest}}",
    ]);
    assert_eq!(f, format!("127.0.0.1:5000/team/app x {digest}\n"));

    // --digests adds the column; the default table is unchanged otherwise.
    let (t, _) = env.ok(&["images", "--digests"]);
    assert!(t.lines().next().unwrap().contains("DIGEST"), "{t}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("app:1 ") && l.contains(&digest) && l.contains(&id)),
        "{t}"
    );
    let (t, _) = env.ok(&["images"]);
    assert!(!t.contains("DIGEST") && t.contains("app:2"), "{t}");

    // Bad input: clear errors, nothing changed.
    let e = env.fails(&["tag", "nosuch:1", "x:1"]);
    assert!(e.contains("no image nosuch:1 in the local store"), "{e}");
    let e = env.fails(&["tag", "app:1", &format!("x@{digest}")]);
    assert!(e.contains("a tag cannot contain a digest"), "{e}");
    let e = env.fails(&["images", "--format", "{{.Created}}"]);
    assert!(e.contains("unknown field \".Created\""), "{e}");
    let e = env.fails(&["images", "--filter", "label=a"]);
    assert!(e.contains("--filter \"label=a\""), "{e}");
    assert!(row(&env, "x", "1").is_none());
}

#[test]
fn rmi_removes_only_the_tag_and_prune_then_frees_the_blobs() {
    let env = Env::new();
    app(&env);
    env.ok(&["tag", "app:1", "app:2"]);
    let digest = row(&env, "app", "1").unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let layers = env.layers("app:1");
    let own_layer = layers
        .last()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_owned();
    let blob = env.root().join("blobs/sha256").join(&own_layer);

    // One of two tags removed: the other still names (and runs) the image.
    let (out, _) = env.ok(&["rmi", "app:2"]);
    assert_eq!(out, "Untagged: app:2\n");
    assert_eq!(env.ok(&["run", "app:1"]).0, "hello from app\n");
    let e = env.fails(&["rmi", "app:2"]);
    assert!(e.contains("no image app:2 in the local store"), "{e}");

    // While tagged, even prune --all keeps the image's blobs.
    env.ok(&["prune", "--all"]);
    assert!(blob.exists(), "prune removed a tagged image's layer");
    let before = du_blobs(&env);
    let images_row = |env: &Env| -> String {
        let (du, _) = env.ok(&["du"]);
        du.lines()
            .find(|l| l.starts_with("images "))
            .unwrap_or_else(|| panic!("{du}"))
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    assert_eq!(images_row(&env), "2", "busybox:local and app:1");

    // `rm` is rmi; the image is now dangling, listed as <none> until pruned.
    let (out, _) = env.ok(&["rm", "app:1"]);
    assert_eq!(out, "Untagged: app:1\n");
    assert!(row(&env, "app", "1").is_none());
    let dangling = images_json(&env, &["--filter", "dangling=true"]);
    assert!(
        dangling
            .iter()
            .any(|r| r["Digest"] == digest.as_str() && r["Repository"] == "<none>"),
        "{dangling:?}"
    );
    assert!(blob.exists(), "rmi must leave the blobs to prune");

    env.ok(&["prune", "--all"]);
    let after = du_blobs(&env);
    assert!(!blob.exists(), "prune kept the layer of an untagged image");
    assert!(
        after + 3 <= before,
        "manifest, config and layer freed: {before} -> {after}"
    );
    assert!(images_json(&env, &["--filter", "dangling=true"]).is_empty());
    assert_eq!(images_row(&env), "1");
    // busybox:local is still whole.
    assert_eq!(env.run_sh("busybox:local", "echo ok"), "ok\n");
}

#[test]
fn tag_push_under_another_name_and_pull_in_a_fresh_store() {
    let reg = Registry::start();
    let env = Env::new();
    app(&env);
    let digest = row(&env, "app", "1").unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let team = format!("{}/team/app:1", reg.addr);
    env.ok(&["tag", "app:1", &team]);
    let file = env.dir.path().join("digest.txt");
    let (out, _) = env.ok(&["push", &team, "--digestfile", file.to_str().unwrap()]);
    assert_eq!(out, format!("{}/team/app@{digest}\n", reg.addr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), digest);

    // SOURCE DESTINATION: a local name pushed under another one, its blobs mounted from team/app
    // (they are on that registry already) rather than uploaded again.
    let other = format!("{}/other/app:2", reg.addr);
    let mounts_before = reg.requests("POST", "mount=");
    let (out, _) = env.ok(&["push", "app:1", &other]);
    assert_eq!(out, format!("{}/other/app@{digest}\n", reg.addr));
    assert!(
        reg.requests("POST", "mount=") >= mounts_before + 2,
        "no cross-repository mounts: {}",
        reg.log()
    );
    // --all-tags: every tag of one repository, each under its own name.
    env.ok(&["tag", "app:1", &format!("{}/team/app:latest", reg.addr)]);
    let (out, _) = env.ok(&["push", "--all-tags", &format!("{}/team/app", reg.addr)]);
    assert_eq!(
        out,
        format!("{0}/team/app@{digest}\n{0}/team/app@{digest}\n", reg.addr)
    );
    assert_eq!(
        reg.requests("PUT", "/v2/team/app/manifests/latest"),
        1,
        "{}",
        reg.log()
    );
    let e = env.fails(&["push", "--all-tags", &team]);
    assert!(e.contains("--all-tags takes a repository"), "{e}");
    let e = env.fails(&["push", "nosuch:1", &other]);
    assert!(e.contains("no image nosuch:1 in the local store"), "{e}");

    // A fresh store pulls both names and runs the image.
    let fresh = Env::new();
    for name in [&team, &other] {
        let (out, _) = fresh.ok(&["pull", name]);
        assert!(out.ends_with(&format!("@{digest}\n")), "{out}");
    }
    assert_eq!(fresh.ok(&["run", &other]).0, "hello from app\n");
}

#[test]
fn save_writes_docker_and_oci_archives_that_skopeo_and_umoci_read() {
    require("/usr/bin/skopeo", "skopeo");
    require("/usr/bin/umoci", "umoci");
    let env = Env::new();
    app(&env);
    env.ok(&["tag", "app:1", "127.0.0.1:5000/app:2"]);
    let digest = row(&env, "app", "1").unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let tar = env.dir.path().join("images.tar");
    // Several images and names in one docker archive.
    env.ok(&[
        "save",
        "app:1",
        "127.0.0.1:5000/app:2",
        "busybox:local",
        "-o",
        s(&tar),
    ]);
    let m: serde_json::Value = {
        let bytes = std::fs::read(&tar).unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut e = a
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
            .expect("manifest.json in the archive");
        let mut buf = String::new();
        e.read_to_string(&mut buf).unwrap();
        serde_json::from_str(&buf).unwrap()
    };
    assert_eq!(m.as_array().unwrap().len(), 2, "{m}");
    assert_eq!(
        m[0]["RepoTags"],
        serde_json::json!(["app:1", "127.0.0.1:5000/app:2"]),
        "{m}"
    );
    let inspect = |transport: String| -> serde_json::Value {
        serde_json::from_str(&sh(Command::new("skopeo").args(["inspect", &transport]))).unwrap()
    };
    // skopeo names a docker archive's layers by diff_id.
    let diff_ids = |image: &str| -> serde_json::Value {
        let (out, _) = env.ok(&["inspect", image]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["Config"]["rootfs"]["diff_ids"]
            .clone()
    };
    let i = inspect(format!("docker-archive:{}:app:1", s(&tar)));
    assert_eq!(i["Layers"], diff_ids("app:1"), "{i}");
    let i = inspect(format!("docker-archive:{}:busybox:local", s(&tar)));
    assert_eq!(i["Layers"], diff_ids("busybox:local"), "{i}");

    // skopeo copies the docker archive to an OCI layout that umoci unpacks: the app's file is there.
    let oci = env.dir.path().join("oci");
    sh(Command::new("skopeo").args([
        "copy",
        &format!("docker-archive:{}:app:1", s(&tar)),
        &format!("oci:{}:app", s(&oci)),
    ]));
    let bundle = env.dir.path().join("bundle");
    sh(Command::new("umoci").args(["unpack", "--image", &format!("{}:app", s(&oci)), s(&bundle)]));
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/hello")).unwrap(),
        "hello from app\n"
    );

    // --format oci, to stdout (not a terminal here): an OCI archive whose manifest is the store's.
    let out = env.rbuild(&["save", "--format", "oci", "app:1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let oci_tar = env.dir.path().join("app.oci.tar");
    std::fs::write(&oci_tar, &out.stdout).unwrap();
    let raw = sh(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci-archive:{}:app:1", s(&oci_tar)),
    ]));
    assert_eq!(oci::Digest::sha256_of(raw.as_bytes()).to_string(), digest);
    assert!(tar_entries(&out.stdout)
        .iter()
        .all(|(p, _, _)| p != "manifest.json"));

    let e = env.fails(&["save", "nosuch:1", "-o", s(&tar)]);
    assert!(e.contains("no image nosuch:1 in the local store"), "{e}");
}

#[test]
fn save_then_load_into_a_fresh_store_restores_tags_and_rmi_prune_frees_it() {
    let env = Env::new();
    app(&env);
    env.ok(&["tag", "app:1", "app:other"]);
    let digest = row(&env, "app", "1").unwrap()["Digest"].clone();
    let tar = env.dir.path().join("app.tar");
    // Two images, three names, one archive.
    env.ok(&["save", "app:1", "app:other", "busybox:local", "-o", s(&tar)]);

    // From a file.
    let fresh = Env::new();
    let (out, _) = fresh.ok(&["load", "-i", s(&tar)]);
    assert_eq!(
        out,
        "Loaded image: app:1\nLoaded image: app:other\nLoaded image: busybox:local\n"
    );
    assert_eq!(fresh.run_sh("busybox:local", "echo ok"), "ok\n");
    assert_eq!(row(&fresh, "app", "1").unwrap()["Digest"], digest);
    assert_eq!(row(&fresh, "app", "other").unwrap()["Digest"], digest);
    assert_eq!(fresh.ok(&["run", "app:other"]).0, "hello from app\n");

    // From stdin, an OCI archive.
    let (ok, oci, se) = {
        let out = env.rbuild(&["save", "--format", "oci", "app:1"]);
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(ok, "{se}");
    let fresh2 = Env::new();
    let (ok, out, se) = load_stdin(&fresh2, &oci);
    assert!(ok, "{se}");
    assert_eq!(out, "Loaded image: app:1\n");
    assert_eq!(fresh2.ok(&["run", "app:1"]).0, "hello from app\n");

    // A loaded image has no build cache: untagged, a plain prune frees its blobs.
    let before = du_blobs(&fresh);
    fresh.ok(&["rmi", "app:1", "app:other", "busybox:local"]);
    fresh.ok(&["prune"]);
    let after = du_blobs(&fresh);
    assert_eq!(after, 0, "prune left {after} of {before} blobs");
}

#[test]
fn an_oci_layout_written_by_skopeo_loads_and_runs() {
    require("/usr/bin/skopeo", "skopeo");
    let env = Env::new();
    app(&env);
    // The store is an OCI layout: skopeo copies the image out of it into a layout of its own.
    let dir = env.dir.path().join("layout");
    sh(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:app:1", s(&env.root())),
        &format!("oci:{}:copied", s(&dir)),
    ]));
    let fresh = Env::new();
    let (out, _) = fresh.ok(&["load", "-i", &format!("oci:{}:copied", s(&dir))]);
    assert_eq!(out, "Loaded image: copied:latest\n");
    assert_eq!(fresh.ok(&["run", "copied"]).0, "hello from app\n");
    let e = fresh.fails(&["load", "-i", &format!("oci:{}:nosuch", s(&dir))]);
    assert!(e.contains("no image named nosuch"), "{e}");
}

#[test]
fn a_docker_20_10_archive_with_plain_symlinked_and_gzip_layers_loads() {
    let env = Env::new();
    app(&env);
    let (inspect, _) = env.ok(&["inspect", "app:1"]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let config_hex = inspect["Id"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let blob = |d: &str| {
        env.root()
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let layers: Vec<String> = env.layers("app:1");
    // docker 20.10's layout: `<id>/layer.tar` (plain tar), `<config hex>.json`, a manifest.json at the
    // end; a layer used twice is a symlink. Here the base layer stays gzip, the app's is plain and
    // reached through a symlink.
    let build = |corrupt: bool| -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, data).unwrap();
        };
        let (app_layer, base) = layers.split_last().unwrap();
        for (i, l) in base.iter().enumerate() {
            add(
                &format!("base{i}/layer.tar"),
                &std::fs::read(blob(l)).unwrap(),
            );
        }
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(blob(app_layer)).unwrap())
            .read_to_end(&mut plain)
            .unwrap();
        if corrupt {
            let n = plain.len();
            plain[n / 3] ^= 0xff;
        }
        add("real/layer.tar", &plain);
        add(
            &format!("{config_hex}.json"),
            &std::fs::read(blob(inspect["Id"].as_str().unwrap())).unwrap(),
        );
        let manifest = serde_json::json!([{
            "Config": format!("{config_hex}.json"),
            "RepoTags": ["legacy:1"],
            "Layers": (0..base.len())
                .map(|i| format!("base{i}/layer.tar"))
                .chain(["app/layer.tar".to_owned()])
                .collect::<Vec<_>>(),
        }]);
        add("manifest.json", manifest.to_string().as_bytes());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "app/layer.tar", "../real/layer.tar")
            .unwrap();
        b.into_inner().unwrap()
    };
    let fresh = Env::new();
    let (ok, out, se) = load_stdin(&fresh, &build(false));
    assert!(ok, "{se}");
    assert_eq!(out, "Loaded image: legacy:1\n");
    assert_eq!(fresh.ok(&["run", "legacy:1"]).0, "hello from app\n");
    let (inspect2, _) = fresh.ok(&["inspect", "legacy:1"]);
    let inspect2: serde_json::Value = serde_json::from_str(&inspect2).unwrap();
    assert_eq!(inspect2["Id"], inspect["Id"], "same config, same image ID");
    let types: Vec<&str> = inspect2["Manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    let (last, base_types) = types.split_last().unwrap();
    assert_eq!(*last, "application/vnd.oci.image.layer.v1.tar");
    assert!(
        base_types
            .iter()
            .all(|t| *t == "application/vnd.oci.image.layer.v1.tar+gzip"),
        "{types:?}"
    );

    // A layer that does not hash to its config's diff_id: refused, nothing tagged.
    let other = Env::new();
    let (ok, _, se) = load_stdin(&other, &build(true));
    assert!(!ok);
    assert!(
        se.contains("layer app/layer.tar of the archive has diff_id"),
        "{se}"
    );
    no_tags(&other);
}

#[test]
fn a_truncated_or_corrupt_archive_fails_and_tags_nothing() {
    let env = Env::new();
    app(&env);
    let tar = env.dir.path().join("app.tar");
    env.ok(&["save", "app:1", "-o", s(&tar)]);
    let bytes = std::fs::read(&tar).unwrap();
    let entries = tar_entries(&bytes);
    let (layer, offset, size) = entries
        .iter()
        .filter(|(p, _, _)| p.starts_with("blobs/"))
        .max_by_key(|(_, _, size)| *size)
        .cloned()
        .unwrap();

    // Cut inside the biggest blob.
    let fresh = Env::new();
    let cut = usize::try_from(offset + size / 2).unwrap();
    let (ok, _, se) = load_stdin(&fresh, &bytes[..cut]);
    assert!(!ok);
    assert!(
        se.contains(&format!("the archive ends inside {layer}")) && se.contains("truncated"),
        "{se}"
    );
    no_tags(&fresh);
    // Cut at an entry boundary, before the blob: the manifest names a file the archive lacks.
    let file = env.dir.path().join("cut.tar");
    std::fs::write(&file, &bytes[..usize::try_from(offset - 512).unwrap()]).unwrap();
    let e = fresh.fails(&["load", "-i", s(&file)]);
    assert!(
        e.contains(&format!("the archive has no file {layer}")),
        "{e}"
    );
    no_tags(&fresh);

    // One byte changed inside a blob: its digest no longer matches its name.
    let mut bad = bytes.clone();
    bad[usize::try_from(offset + size / 2).unwrap()] ^= 0x01;
    std::fs::write(&file, &bad).unwrap();
    let e = fresh.fails(&["load", "-i", s(&file)]);
    assert!(
        e.contains(&format!("archive file {layer} has digest")) && e.contains("corrupt"),
        "{e}"
    );
    no_tags(&fresh);

    // Not an archive at all.
    std::fs::write(&file, b"hello").unwrap();
    let e = fresh.fails(&["load", "-i", s(&file)]);
    assert!(
        e.contains("reading the archive") || e.contains("neither manifest.json"),
        "{e}"
    );
    no_tags(&fresh);
}

/// A private dockerd 20.10 (Debian's docker.io, as the lab's): its own data root and socket, no bridge,
/// no iptables.
struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Self {
        require("/usr/sbin/dockerd", "docker.io");
        require("/usr/bin/docker", "docker.io");
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let ns = format!("rbuild-test-{}", std::process::id());
        let child = Command::new("/usr/sbin/dockerd")
            .args(["--data-root", &p("data"), "--exec-root", &p("exec")])
            .args([
                "--pidfile",
                &p("docker.pid"),
                "-H",
                &format!("unix://{}", p("docker.sock")),
            ])
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
            ])
            // A system containerd (docker.io's service, when it runs) may be shared: our own namespaces.
            .args(["--containerd-namespace", &ns])
            .args(["--containerd-plugins-namespace", &format!("{ns}-plugins")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let d = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up: {}",
                std::fs::read_to_string(d.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .args(args)
            .env("DOCKER_HOST", self.host())
            .env("DOCKER_BUILDKIT", "1")
            .output()
            .expect("running docker")
    }

    /// `docker ARGS…`, asserting success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containerd and unmounts its layers.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn load_into_dockerd_and_archives_both_ways_between_rbuild_and_docker() {
    let d = Dockerd::start();
    let env = Env::new();
    app(&env);

    // --load: the built image goes straight to the engine, which says what it loaded.
    let ctx = env.context(
        "direct",
        &[(
            "Dockerfile",
            "FROM busybox:local\nCMD [\"echo\", \"loaded by --load\"]\n",
        )],
    );
    let build = |host: &str, extra: &[&str]| {
        Command::new(crate::common::RBUILD)
            .arg("--root")
            .arg(env.root())
            .args(["build", "--progress", "plain", "-t", "direct:1"])
            .args(extra)
            .arg(&ctx)
            .env("DOCKER_HOST", host)
            .output()
            .expect("rbuild build")
    };
    let out = build(&d.host(), &["--load"]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{se}");
    assert!(se.contains("Loaded image: direct:1"), "{se}");
    let run = ["run", "--rm", "--network", "none"];
    assert_eq!(
        d.ok(&[&run[..], &["direct:1"]].concat()),
        "loaded by --load\n"
    );
    // `-o type=docker` without dest is the same; `name=` renames.
    let out = build(&d.host(), &["-o", "type=docker,name=renamed:2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        d.ok(&[&run[..], &["renamed:2"]].concat()),
        "loaded by --load\n"
    );
    // No engine: a clear error.
    let out = build("unix:///nonexistent/docker.sock", &["--load"]);
    let se = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        se.contains("no Docker engine answers at /nonexistent/docker.sock"),
        "{se}"
    );

    // A docker archive with attestations (index.json names an image index, as BuildKit's docker exporter
    // writes it; see tests/it/attest.rs) still loads into dockerd 20.10's classic store: manifest.json.
    d.ok(&["rmi", "direct:1"]);
    let attested = env.dir.path().join("attested.tar");
    let dest = format!("type=docker,dest={}", s(&attested));
    let out = build(&d.host(), &["--sbom", "--provenance", "-o", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d
        .ok(&["load", "-i", s(&attested)])
        .contains("Loaded image: direct:1"));
    assert_eq!(
        d.ok(&[&run[..], &["direct:1"]].concat()),
        "loaded by --load\n"
    );

    // rbuild save -> docker load -> docker run.
    let tar = env.dir.path().join("app.tar");
    env.ok(&["save", "app:1", "-o", s(&tar)]);
    assert!(d
        .ok(&["load", "-i", s(&tar)])
        .contains("Loaded image: app:1"));
    assert_eq!(d.ok(&[&run[..], &["app:1"]].concat()), "hello from app\n");

    // An image BuildKit (in dockerd 20.10) built on it -> docker save -> rbuild load -> rbuild run.
    let bk = env.context(
        "bk",
        &[
            (
                "Dockerfile",
                "FROM app:1\nCOPY extra /extra\nCMD [\"cat\", \"/extra\"]\n",
            ),
            ("extra", "built by buildkit\n"),
        ],
    );
    d.ok(&["build", "-t", "bk:1", s(&bk)]);
    let saved = env.dir.path().join("bk.tar");
    d.ok(&["save", "-o", s(&saved), "bk:1"]);
    let fresh = Env::new();
    let (out, _) = fresh.ok(&["load", "-i", s(&saved)]);
    assert_eq!(out, "Loaded image: bk:1\n");
    assert_eq!(fresh.ok(&["run", "bk:1"]).0, "built by buildkit\n");
    assert_eq!(fresh.run_sh("bk:1", "cat /hello"), "hello from app\n");
}

/// Spawns `rbuild ARGS…` with piped output and waits until a line of `stream` contains `marker`.
fn spawn_until(env: &Env, args: &[&str], marker: &str, stderr: bool) -> Child {
    use std::io::BufRead as _;
    let mut child = Command::new(crate::common::RBUILD)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rbuild");
    let pipe: Box<dyn std::io::Read + Send> = if stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = marker.to_owned();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if line.contains(&wanted) {
                let _ = tx.send(Ok(()));
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        let _ = tx.send(Err(seen));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(())) => child,
        other => panic!("rbuild {args:?} never printed {marker}: {other:?}"),
    }
}

#[test]
fn rmi_refuses_a_tag_a_running_build_or_run_uses() {
    let env = Env::new();
    app(&env);
    // `rbuild run` of app:1, still running.
    let mut run = spawn_until(
        &env,
        &["run", "app:1", "sh", "-c", "echo started; sleep 3"],
        "started",
        false,
    );
    let e = env.fails(&["rmi", "app:1"]);
    assert!(
        e.contains("image app:1 is in use by a running build or `rbuild run`"),
        "{e}"
    );
    assert!(run.wait().unwrap().success());
    assert!(
        row(&env, "app", "1").is_some(),
        "the refused rmi removed the tag"
    );

    // A build whose FROM is busybox:local, in its RUN step.
    let ctx = env.context(
        "slow",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo building-now && sleep 3\n",
        )],
    );
    let mut build = spawn_until(
        &env,
        &["build", "--progress", "plain", "-t", "slow:1", s(&ctx)],
        "building-now",
        true,
    );
    let e = env.fails(&["rmi", "busybox:local"]);
    assert!(e.contains("image busybox:local is in use"), "{e}");
    assert!(build.wait().unwrap().success());
    // Once they are done, the tags go.
    let (out, _) = env.ok(&["rmi", "app:1", "busybox:local"]);
    assert_eq!(out, "Untagged: app:1\nUntagged: busybox:local\n");
}

/// An archive is never written to, or read from, a terminal (`script` gives rbuild a real pty).
#[test]
fn save_and_load_refuse_a_terminal() {
    require("/usr/bin/script", "bsdutils");
    let env = Env::new();
    env.busybox();
    let on_tty = |args: &str| -> (bool, String) {
        let cmd = format!("{} --root {} {args}", crate::common::RBUILD, s(&env.root()));
        let out = Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .output()
            .expect("running script (util-linux)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, screen) = on_tty("save busybox:local");
    assert!(!ok);
    assert!(
        screen.contains("refusing to write an archive to a terminal: give -o FILE"),
        "{screen}"
    );
    let (ok, screen) = on_tty("load");
    assert!(!ok);
    assert!(
        screen.contains("no archive to load: give -i FILE or pipe one to stdin"),
        "{screen}"
    );
    no_tags_but(&env, "busybox:local");
}

/// The only tag of the store is `name`.
fn no_tags_but(env: &Env, name: &str) {
    let (out, _) = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(out, format!("{name}\n"));
}
