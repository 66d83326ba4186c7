//! The shared cache (`--cache-to`, `--cache-from`): two fresh stores stand in for two build-farm machines
//! or two CI runs; the registry is the real CNCF registry, whose log counts what each one downloads.

use std::path::{Path, PathBuf};

use crate::common::{sh, steps, Env, Registry};

/// Machine A: a busybox base pushed to the registry as `REG/busybox:1`, so that both machines build from
/// the same base as CI runners do.
fn machine_a(reg: &Registry) -> Env {
    let a = Env::new();
    a.busybox();
    let ctx = a.context("base", &[("Dockerfile", "FROM busybox:local\n")]);
    let tag = format!("{}/busybox:1", reg.addr);
    a.ok(&["build", "-q", "-t", &tag, "--push", ctx.to_str().unwrap()]);
    a
}

/// A deps-then-src build: a `deps` stage installs from a lock file, the final stage copies its result and
/// builds the sources.
fn deps_then_src(env: &Env, reg: &Registry, src: &str) -> PathBuf {
    let dockerfile = format!(
        "FROM {reg}/busybox:1 AS deps\n\
         COPY deps.lock /deps.lock\n\
         RUN echo installing && mkdir -p /opt/deps && cp /deps.lock /opt/deps/installed\n\
         FROM {reg}/busybox:1\n\
         COPY --from=deps /opt/deps /opt/deps\n\
         COPY src.txt /app/src.txt\n\
         RUN echo compiling && cat /opt/deps/installed /app/src.txt > /app/built\n\
         CMD [\"cat\", \"/app/built\"]\n",
        reg = reg.addr
    );
    env.context(
        "app",
        &[
            ("Dockerfile", &dockerfile),
            ("deps.lock", "left-pad 1.3.0\n"),
            ("src.txt", src),
        ],
    )
}

fn ran(stderr: &str) -> Vec<String> {
    let mut v: Vec<String> = steps(stderr)
        .into_iter()
        .filter(|(_, s)| *s == "RAN")
        .map(|(n, _)| n)
        .collect();
    v.sort();
    v
}

/// `N` from the build's `cache import: N blobs downloaded` line.
fn downloaded(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("cache import: "))
        .unwrap_or_else(|| panic!("no cache import summary in:\n{stderr}"));
    line["cache import: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable summary {line:?}"))
}

#[test]
fn registry_cache_mode_max_makes_a_fresh_store_run_nothing_and_fetch_only_the_image() {
    let reg = Registry::start();
    let a = machine_a(&reg);
    let cache_ref = format!("{}/cache/app:main", reg.addr);
    let ctx_a = deps_then_src(&a, &reg, "v1\n");
    let to = format!("type=registry,ref={cache_ref},mode=max");
    let (_, se) = a.build_plain("app:1", &ctx_a, &["--cache-to", &to]);
    assert_eq!(ran(&se).len(), 6, "A runs every step:\n{se}");
    assert!(se.contains("exported cache to"), "{se}");

    // B: an empty store, the same sources.
    let b = Env::new();
    let ctx_b = deps_then_src(&b, &reg, "v1\n");
    let cache_gets_before = reg.requests("GET", "/v2/cache/app/blobs/");
    let from = format!("type=registry,ref={cache_ref}");
    let (_, se) = b.build_plain("app:1", &ctx_b, &["--cache-from", &from]);
    assert!(ran(&se).is_empty(), "B ran steps: {:?}\n{se}", ran(&se));
    assert!(!said(&se, "installing") && !said(&se, "compiling"), "{se}");
    assert!(se.contains("importing cache from"), "{se}");
    // Only the final image's layers were downloaded: busybox's + COPY --from + COPY + RUN, not the deps
    // stage's two layers. One more GET fetched the records.
    let layers = b.layers("app:1").len();
    assert_eq!(
        layers,
        a.layers(&format!("{}/busybox:1", reg.addr)).len() + 3
    );
    assert_eq!(downloaded(&se), layers, "{se}");
    assert_eq!(
        reg.requests("GET", "/v2/cache/app/blobs/") - cache_gets_before,
        layers + 1,
        "{}",
        reg.log()
    );
    assert_eq!(b.ok(&["run", "app:1"]).0, "left-pad 1.3.0\nv1\n");

    // A one-file edit on B runs only what follows it (the records it used are kept locally now).
    std::fs::write(ctx_b.join("src.txt"), "v2\n").unwrap();
    let (_, se) = b.build_plain("app:2", &ctx_b, &["--cache-from", &from]);
    assert_eq!(
        ran(&se),
        vec![
            "[stage-1 3/5] COPY src.txt /app/src.txt".to_owned(),
            "[stage-1 4/5] RUN echo compiling && cat /opt/deps/installed /app/src.txt > /app/built"
                .to_owned()
        ],
        "{se}"
    );
    assert_eq!(b.ok(&["run", "app:2"]).0, "left-pad 1.3.0\nv2\n");
    // And without --cache-from too: B's store kept the records it used.
    let (_, se) = b.build_plain("app:1", &deps_then_src(&b, &reg, "v1\n"), &[]);
    assert!(ran(&se).is_empty(), "{se}");
}

#[test]
fn a_push_to_the_cache_registry_downloads_no_layer_and_the_image_is_complete() {
    require_consumers();
    let reg = Registry::start();
    let a = machine_a(&reg);
    let cache_ref = format!("{}/cache/app:main", reg.addr);
    let to = format!("type=registry,ref={cache_ref},mode=max");
    a.build_plain(
        "app:1",
        &deps_then_src(&a, &reg, "v1\n"),
        &["--cache-to", &to],
    );

    let b = Env::new();
    let image = format!("{}/team/app:2", reg.addr);
    let from = format!("type=registry,ref={cache_ref}");
    let (_, se) = b.build_plain(
        &image,
        &deps_then_src(&b, &reg, "v1\n"),
        &["--cache-from", &from, "--push"],
    );
    assert!(ran(&se).is_empty(), "{se}");
    assert_eq!(downloaded(&se), 0, "{se}");
    assert!(se.contains("not naming"), "{se}");
    // Mounted from the cache repository, never uploaded from B.
    assert_eq!(
        reg.requests("PATCH", "/v2/team/app/blobs/uploads/")
            + reg.requests("PUT", "/v2/team/app/blobs/uploads/"),
        1, // the config, which B wrote
        "{}",
        reg.log()
    );
    // What the registry holds is a whole image that other tools can unpack and run.
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    sh(std::process::Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:app", layout.display()),
    ]));
    sh(std::process::Command::new("umoci").args([
        "raw",
        "unpack",
        "--rootless",
        "--image",
        &format!("{}:app", layout.display()),
        dir.path().join("rootfs").to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rootfs/app/built")).unwrap(),
        "left-pad 1.3.0\nv1\n"
    );
}

/// Whether a step printed `word` as an output line (not merely in its command text).
fn said(stderr: &str, word: &str) -> bool {
    stderr.lines().any(|l| l.ends_with(&format!(" {word}")))
}

fn require_consumers() {
    crate::common::require("/usr/bin/skopeo", "skopeo");
    crate::common::require("/usr/bin/umoci", "umoci");
}

#[test]
fn local_cache_directory_travels_like_the_registry_one() {
    let reg = Registry::start();
    let a = machine_a(&reg);
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let to = format!("type=local,dest={},mode=max", cache_dir.display());
    let ctx_a = deps_then_src(&a, &reg, "v1\n");
    a.build_plain("app:1", &ctx_a, &["--cache-to", &to]);
    assert!(cache_dir.join("index.json").is_file());

    let b = Env::new();
    let from = format!("type=local,src={}", cache_dir.display());
    let ctx_b = deps_then_src(&b, &reg, "v1\n");
    let (_, se) = b.build_plain("app:1", &ctx_b, &["--cache-from", &from]);
    assert!(ran(&se).is_empty(), "{se}");
    assert_eq!(downloaded(&se), b.layers("app:1").len(), "{se}");
    assert_eq!(b.ok(&["run", "app:1"]).0, "left-pad 1.3.0\nv1\n");

    // Re-exporting an unchanged build writes no blob, and an edit adds only its new layers.
    let (_, se) = a.build_plain("app:1", &ctx_a, &["--cache-to", &to]);
    assert!(se.contains("blobs: 0 uploaded"), "{se}");
    std::fs::write(ctx_a.join("src.txt"), "v2\n").unwrap();
    let (_, se) = a.build_plain("app:2", &ctx_a, &["--cache-to", &to]);
    assert!(
        se.contains("blobs: 2 uploaded"),
        "COPY src.txt and RUN: {se}"
    );
    std::fs::write(ctx_b.join("src.txt"), "v2\n").unwrap();
    let (_, se) = b.build_plain("app:2", &ctx_b, &["--cache-from", &from]);
    assert!(ran(&se).is_empty(), "{se}");
}

#[test]
fn cache_mounts_travel_with_cache_mounts_true() {
    let reg = Registry::start();
    let a = machine_a(&reg);
    let dockerfile = format!(
        "FROM {}/busybox:1\n\
         RUN --mount=type=cache,target=/root/.npm,uid=1000 sh -c 'echo OWNER-$(stat -c %u /root/.npm); if [ -f /root/.npm/pkg.tgz ]; then echo CACHE-WARM; else echo CACHE-COLD; echo tarball > /root/.npm/pkg.tgz; fi'\n",
        reg.addr
    );
    let ctx_a = a.context("npm", &[("Dockerfile", &dockerfile)]);
    let cache_ref = format!("{}/cache/npm:main", reg.addr);
    let to = format!("type=registry,ref={cache_ref},mode=max,cache-mounts=true");
    let (_, se) = a.build_plain("npm:1", &ctx_a, &["--cache-to", &to]);
    assert!(said(&se, "CACHE-COLD"), "{se}");
    assert!(se.contains("1 cache mounts"), "{se}");
    // Exported again with the mount untouched: its archive is reused, not read and compressed again.
    let (_, se) = a.ok(&[
        "-v",
        "build",
        "--progress",
        "plain",
        "-t",
        "npm:1",
        "--cache-to",
        &to,
        ctx_a.to_str().unwrap(),
    ]);
    assert!(
        se.contains("cache mount unchanged since the last export"),
        "{se}"
    );

    // B's records would make the RUN a cache hit; --no-cache makes it run, on a restored mount.
    let b = Env::new();
    let ctx_b = b.context("npm", &[("Dockerfile", &dockerfile)]);
    let from = format!("type=registry,ref={cache_ref}");
    let (_, se) = b.build_plain("npm:1", &ctx_b, &["--cache-from", &from, "--no-cache"]);
    assert!(said(&se, "CACHE-WARM") && !said(&se, "CACHE-COLD"), "{se}");
    // The restored directory has the mount's owner, as a new one would.
    assert!(said(&se, "OWNER-1000"), "{se}");

    // Without the option no mount travels.
    let plain = format!("type=registry,ref={}/cache/npm:plain,mode=max", reg.addr);
    a.build_plain("npm:1", &ctx_a, &["--cache-to", &plain]);
    let c = Env::new();
    let ctx_c = c.context("npm", &[("Dockerfile", &dockerfile)]);
    let from = format!("type=registry,ref={}/cache/npm:plain", reg.addr);
    let (_, se) = c.build_plain("npm:1", &ctx_c, &["--cache-from", &from, "--no-cache"]);
    assert!(said(&se, "CACHE-COLD"), "{se}");
}

#[test]
fn inline_cache_in_the_pushed_image_serves_the_next_build() {
    let reg = Registry::start();
    let a = machine_a(&reg);
    let image = format!("{}/app:inline", reg.addr);
    let (_, se) = a.build_plain(
        &image,
        &deps_then_src(&a, &reg, "v1\n"),
        &["--cache-to", "type=inline", "--push"],
    );
    assert!(se.contains("cache written inline"), "{se}");

    let b = Env::new();
    let (_, se) = b.build_plain(
        "app:1",
        &deps_then_src(&b, &reg, "v1\n"),
        &["--cache-from", &image],
    );
    assert!(se.contains("(inline)"), "{se}");
    assert!(ran(&se).is_empty(), "{se}");
    assert_eq!(b.ok(&["run", "app:1"]).0, "left-pad 1.3.0\nv1\n");
}

#[test]
fn a_broken_cache_is_a_warning_and_the_build_goes_on() {
    let reg = Registry::start();
    let a = machine_a(&reg);
    let ctx = deps_then_src(&a, &reg, "v1\n");
    let missing_dir = a.root().parent().unwrap().join("no-such-cache");
    // A missing ref, an image without an inline cache, a directory that is not a cache.
    for from in [
        format!("type=registry,ref={}/cache/none:x", reg.addr),
        format!("{}/busybox:1", reg.addr),
        format!("type=local,src={}", missing_dir.display()),
    ] {
        let (_, se) = a.build_plain("app:1", &ctx, &["--no-cache", "--cache-from", &from]);
        assert!(
            se.contains("warning: cache import from") && se.contains("building without it"),
            "{from}: {se}"
        );
        assert_eq!(ran(&se).len(), 6, "{se}");
    }
    // A registry that wants credentials we do not have.
    let locked = Registry::start_htpasswd("ci", "secret");
    let from = format!("type=registry,ref={}/cache/app:main", locked.addr);
    let (_, se) = a.build_plain("app:1", &ctx, &["--no-cache", "--cache-from", &from]);
    assert!(
        se.contains("warning: cache import from") && se.contains("building without it"),
        "{se}"
    );
    // A corrupt records blob in a local cache: refused by its digest, the build still succeeds.
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("c");
    let to = format!("type=local,dest={}", cache_dir.display());
    a.build_plain("app:1", &ctx, &["--cache-to", &to]);
    corrupt_records(&cache_dir);
    let b = Env::new();
    let from = format!("type=local,src={}", cache_dir.display());
    let (_, se) = b.build_plain(
        "app:1",
        &deps_then_src(&b, &reg, "v1\n"),
        &["--cache-from", &from],
    );
    assert!(se.contains("is corrupt"), "{se}");
    assert_eq!(b.ok(&["run", "app:1"]).0, "left-pad 1.3.0\nv1\n");

    // An export that cannot be written fails the build, unless ignore-error=true.
    let bad = "type=registry,ref=127.0.0.1:9/cache:x";
    let se = a.fails(&[
        "build",
        "-t",
        "app:1",
        "--cache-to",
        bad,
        ctx.to_str().unwrap(),
    ]);
    assert!(
        se.contains("exporting the cache to 127.0.0.1:9/cache:x"),
        "{se}"
    );
    let ignored = format!("{bad},ignore-error=true");
    let (_, se) = a.ok(&[
        "build",
        "-t",
        "app:1",
        "--cache-to",
        &ignored,
        ctx.to_str().unwrap(),
    ]);
    assert!(se.contains("warning: cache export"), "{se}");
    // Bad specs are flag errors before anything runs.
    let se = a.fails(&[
        "build",
        "--cache-to",
        "type=registry,mode=max",
        ctx.to_str().unwrap(),
    ]);
    assert!(
        se.contains("--cache-to") && se.contains("needs ref="),
        "{se}"
    );
}

/// Overwrites the records blob of every part of the local cache at `dir` with other bytes.
fn corrupt_records(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        if text.contains("\"cacheKeyVersion\"") {
            std::fs::write(&p, text.replace("\"records\"", "\"recordz\"")).unwrap();
            n += 1;
        }
    }
    assert!(n > 0, "no records blob in {}", blobs.display());
}
