//! Managing images: `tag`, `rmi`, `images` (filters, formats), `push SOURCE DEST`, `save` and `load`.
//! Behaviour follows the docker CLI (`docker tag|rmi|images|push|save|load`).

use crate::common::{Env, Registry};

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
