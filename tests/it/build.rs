use std::path::Path;
use std::process::Command;

use crate::common::{require, sh, skopeo_umoci_unpack, Env, Registry};

const TWO_STAGE: &str = r#"
FROM busybox:local AS build
WORKDIR /src
COPY greeting.txt ./
RUN tr 'a-z' 'A-Z' < greeting.txt > shout.txt

FROM busybox:local
ENV APP_HOME=/app MODE=test
WORKDIR $APP_HOME
COPY --from=build /src/shout.txt ./
COPY hello.sh ./
RUN chmod 755 hello.sh && chown -R app:app /app
USER app
CMD ["/app/hello.sh"]
"#;

const HELLO_SH: &str =
    "#!/bin/sh\necho \"$(cat $APP_HOME/shout.txt) as $(id -un) in $(pwd) mode=$MODE\"\n";

fn two_stage(env: &Env) -> std::path::PathBuf {
    env.context(
        "app",
        &[
            ("Dockerfile", TWO_STAGE),
            ("greeting.txt", "hello world\n"),
            ("hello.sh", HELLO_SH),
            ("ignored.log", "x"),
        ],
    )
}

#[test]
fn two_stage_build_runs_pushes_and_is_read_by_skopeo_and_umoci() {
    require("/usr/bin/skopeo", "skopeo");
    require("/usr/bin/umoci", "umoci");
    let env = Env::new();
    env.busybox();
    let ctx = two_stage(&env);
    std::fs::write(ctx.join(".dockerignore"), "*.log\n").unwrap();
    let reg = Registry::start();
    let tag = format!("{}/demo/app:1", reg.addr);
    let (stdout, stderr) = env.ok(&[
        "build",
        "-t",
        &tag,
        "--push",
        "--progress",
        "plain",
        ctx.to_str().unwrap(),
    ]);
    assert!(stderr.contains("RUN tr"), "{stderr}");
    assert!(
        stdout.contains(&format!("{}/demo/app@sha256:", reg.addr)),
        "push prints the digest: {stdout}"
    );

    // rbuild run prints what the image should print, as the image's USER in its WORKDIR.
    let (out, _) = env.ok(&["run", &tag]);
    assert_eq!(out.trim(), "HELLO WORLD as app in /app mode=test");

    // skopeo reads the pushed config.
    let inspect = sh(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{tag}"),
    ]));
    let cfg: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(cfg["config"]["User"], "app");
    assert_eq!(cfg["config"]["WorkingDir"], "/app");
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["/app/hello.sh"]));
    let env_list: Vec<String> = serde_json::from_value(cfg["config"]["Env"].clone()).unwrap();
    assert!(
        env_list.contains(&"APP_HOME=/app".to_owned())
            && env_list.iter().any(|e| e.starts_with("PATH=")),
        "{env_list:?}"
    );
    let layers = cfg["rootfs"]["diff_ids"].as_array().unwrap().len();
    let non_empty = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .count();
    assert_eq!(
        layers, non_empty,
        "history marks exactly the layer-making steps: {inspect}"
    );

    // skopeo copy to an OCI dir, then umoci unpack yields the expected files with their owners.
    let rootfs = skopeo_umoci_unpack(env.dir.path(), &tag);
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/shout.txt")).unwrap(),
        "HELLO WORLD\n"
    );
    assert!(rootfs
        .join("bin/sh")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        !rootfs.join("app/ignored.log").exists(),
        ".dockerignore'd file reached the image"
    );
    assert!(
        !rootfs.join("src").exists(),
        "the build stage's files must not reach the final image"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(rootfs.join("app/hello.sh"))
            .unwrap()
            .uid(),
        1000
    );

    // The local store is an OCI layout that skopeo reads too.
    let raw = sh(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &format!("oci:{}:{tag}", env.root().display()),
    ]));
    assert!(
        raw.contains("application/vnd.oci.image.manifest.v1+json"),
        "{raw}"
    );
}

#[test]
fn rebuilding_the_same_context_runs_nothing() {
    let env = Env::new();
    env.busybox();
    let ctx = two_stage(&env);
    let c = ctx.to_str().unwrap();
    env.ok(&["build", "-t", "app:1", "--progress", "plain", c]);
    let (_, second) = env.ok(&["build", "-t", "app:1", "--progress", "plain", c]);
    assert!(
        !second.contains("cache miss"),
        "second build missed the cache:\n{second}"
    );
    assert!(
        second.contains("RUN tr") && second.contains("CACHED"),
        "{second}"
    );
    assert_eq!(
        second.matches("CACHED").count(),
        second.lines().filter(|l| l.contains("] ")).count(),
        "{second}"
    );

    // Touching a file (mtime only) is still a full hit; editing one re-runs only what depends on it.
    let f = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    filetime::set_file_mtime(ctx.join("hello.sh"), f).unwrap();
    let (_, touched) = env.ok(&["build", "-t", "app:1", "--progress", "plain", c]);
    assert!(
        !touched.contains("cache miss"),
        "mtime must not enter cache keys:\n{touched}"
    );
    std::fs::write(ctx.join("hello.sh"), "#!/bin/sh\necho edited\n").unwrap();
    let (_, edited) = env.ok(&["build", "-t", "app:1", "--progress", "plain", c]);
    assert!(
        edited.contains("cache miss: files read by this step changed"),
        "{edited}"
    );
    // The build stage's RUN does not read hello.sh: it stays cached.
    let tr_step = edited
        .lines()
        .find(|l| l.contains("RUN tr 'a-z' 'A-Z'"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the RUN tr step is listed");
    assert!(edited.contains(&format!("{tr_step} CACHED")), "{edited}");
    let misses = edited.matches("cache miss").count();
    assert_eq!(
        misses, 2,
        "only COPY hello.sh and the RUN after it re-run:\n{edited}"
    );
    let (out, _) = env.ok(&["run", "app:1"]);
    assert_eq!(out.trim(), "edited");
}

#[test]
fn oci_archive_output_is_read_by_skopeo() {
    require("/usr/bin/skopeo", "skopeo");
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "small",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo built > /built.txt\nLABEL org.example=yes\n",
        )],
    );
    let dest = env.dir.path().join("out.tar");
    env.ok(&[
        "build",
        "-t",
        "small:1",
        "-o",
        &format!("type=oci,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]);
    let cfg = sh(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci-archive:{}:small:1", dest.display()),
    ]));
    let cfg: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(cfg["config"]["Labels"]["org.example"], "yes");
    assert!(
        Path::new(&dest).metadata().unwrap().len() > 500_000,
        "the archive holds the busybox layer"
    );
}

#[test]
fn from_an_image_in_a_registry_pulls_it_into_a_fresh_store() {
    let reg = Registry::start();
    let base = format!("{}/library/busybox:1", reg.addr);
    let a = Env::new();
    a.busybox();
    let bb = a.dir.path().join("busybox");
    a.ok(&["build", "-t", &base, "--push", bb.to_str().unwrap()]);

    let b = Env::new();
    let ctx = b.context(
        "pulls",
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN echo pulled > /p.txt\nCMD [\"cat\", \"/p.txt\"]\n"),
        )],
    );
    b.ok(&["build", "-t", "pulled:1", ctx.to_str().unwrap()]);
    let (out, _) = b.ok(&["run", "pulled:1"]);
    assert_eq!(out.trim(), "pulled");
}

/// Two steps that make byte-identical layers (the same `COPY` twice with a RUN between) put one
/// snapshot twice in the stack of the next RUN, which overlay refuses (ELOOP) unless the lower
/// copy is dropped. BuildKit prints the original content (checked by hand in the lab's BuildKit,
/// dockerd 20.10, as written in #17). See: #17.
#[test]
fn r17_same_layer_twice_in_one_stack_reads_the_higher_copy() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "same-layer-twice",
        &[
            ("f", "original\n"),
            (
                "Dockerfile",
                "FROM busybox:local\nCOPY f /f\nRUN echo changed > /f\nCOPY f /f\nRUN cat /f > /out\n",
            ),
        ],
    );
    env.build_plain("twice:1", &ctx, &[]);
    assert_eq!(env.run_sh("twice:1", "cat /out"), "original\n");
}
