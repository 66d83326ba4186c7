//! Build contexts from anywhere: git URLs (a `git daemon` on loopback), tarball URLs (a loopback HTTP
//! server), stdin, kaniko's `tar://` and `dir://`. The forms and their precedence follow buildx
//! (`docker buildx build` v0.17: `build/url.go`, `util/gitutil`), read for behaviour.

use std::path::Path;
use std::process::Command;

use crate::common::{expect_success, sh, Env, RBUILD};
use crate::frontend::GitServer;

/// `rbuild --root STORE ARGS…` with `stdin` as its stdin; returns the output.
fn rbuild_stdin(env: &Env, args: &[&str], stdin: &Path) -> std::process::Output {
    Command::new(RBUILD)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(std::fs::File::open(stdin).expect("stdin file"))
        .output()
        .expect("running rbuild")
}

/// An HTTP/1.0 server of fixed binary files on a free loopback port; 404 for the rest.
struct BlobServer {
    addr: String,
}

impl BlobServer {
    fn start(files: Vec<(String, Vec<u8>)>) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let resp = match files.iter().find(|(p, _)| p == path) {
                    Some((_, body)) => {
                        let mut r =
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        r.extend_from_slice(body);
                        r
                    }
                    None => b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
                };
                let _ = conn.write_all(&resp); // a client that went away is its own problem
            }
        });
        Self { addr }
    }
}

/// A tar archive of `dir` compressed with `flag` (`-z`, `--zstd`, or `` for none), as bytes.
fn tar_of(dir: &Path, flag: &str, out: &Path) -> Vec<u8> {
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(dir).arg("-cf").arg(out);
    if !flag.is_empty() {
        cmd.arg(flag);
    }
    sh(cmd.arg("."));
    std::fs::read(out).unwrap()
}

const CTX_DOCKERFILE: &str =
    "FROM busybox:local\nCOPY . /ctx\nRUN ls -A /ctx | sort | tr '\\n' ' ' > /listing\n";

#[test]
fn git_url_context_builds_the_commit_with_its_dockerfile_and_dockerignore() {
    let env = Env::new();
    env.busybox();
    let git = GitServer::start_with(&[
        ("Dockerfile", CTX_DOCKERFILE),
        (".dockerignore", "secret.txt\n"),
        ("secret.txt", "not sent\n"),
        ("sub/a.txt", "a v1\n"),
        ("sub/Dockerfile", "FROM busybox:local\nCOPY a.txt /a.txt\n"),
        (
            "build/Dockerfile",
            "FROM busybox:local\nCOPY sub/a.txt /a.txt\n",
        ),
    ]);
    let url = &git.url;
    let (_, cold) = env.ok(&["build", "--progress", "plain", "-t", "g:1", url]);
    assert_eq!(
        env.run_sh("g:1", "cat /listing"),
        ".dockerignore Dockerfile build sub ",
        "the checkout without .git and without what .dockerignore names: {cold}"
    );
    // Unchanged commit: the COPY keys on the same content and hits.
    let (_, warm) = env.ok(&["build", "--progress", "plain", "-t", "g:1", url]);
    assert_eq!(
        crate::common::step_status(&warm, "COPY . /ctx"),
        "CACHED",
        "{warm}"
    );

    // `#ref:subdir`: the subdirectory is the context and holds the Dockerfile.
    let sub = format!("{url}#main:sub");
    env.ok(&["build", "-t", "g:sub", &sub]);
    assert_eq!(env.run_sh("g:sub", "cat /a.txt"), "a v1\n");
    // The branch moves: the COPY of the changed file runs again.
    git.push_change("a v2\n");
    let (_, moved) = env.ok(&["build", "--progress", "plain", "-t", "g:sub", &sub]);
    assert_eq!(
        crate::common::step_status(&moved, "COPY a.txt"),
        "RAN",
        "{moved}"
    );
    assert_eq!(env.run_sh("g:sub", "cat /a.txt"), "a v2\n");

    // BUILDKIT_CONTEXT_KEEP_GIT_DIR=1 (a build arg, as buildx passes it) keeps .git.
    env.ok(&[
        "build",
        "--build-arg",
        "BUILDKIT_CONTEXT_KEEP_GIT_DIR=1",
        "-t",
        "g:git",
        url,
    ]);
    assert!(env.run_sh("g:git", "cat /listing").contains(".git "));

    // -f names a file inside the remote context.
    env.ok(&["build", "-f", "build/Dockerfile", "-t", "g:f", url]);
    assert_eq!(env.run_sh("g:f", "cat /a.txt"), "a v2\n");
    // A missing ref or Dockerfile: clear errors naming the remote.
    let e = env.fails(&["build", &format!("{url}#nope")]);
    assert!(e.contains("no branch or tag \"nope\""), "{e}");
    let e = env.fails(&["build", "-f", "Nope.Dockerfile", url]);
    assert!(
        e.contains("Dockerfile not found in build context") && e.contains("Nope.Dockerfile"),
        "{e}"
    );
}

#[test]
fn tarball_url_context_unpacks_and_a_dockerfile_url_builds_without_context() {
    let env = Env::new();
    env.busybox();
    let src = env.context(
        "tarball",
        &[
            ("Dockerfile", CTX_DOCKERFILE),
            // <Dockerfile>.dockerignore wins over .dockerignore, in a remote context too.
            ("Dockerfile.dockerignore", "skip.txt\n"),
            (".dockerignore", "kept.txt\n"),
            ("kept.txt", "kept\n"),
            ("skip.txt", "skipped\n"),
        ],
    );
    let out = env.dir.path().join("ctx.tar.gz");
    let gz = tar_of(&src, "-z", &out);
    let server = BlobServer::start(vec![
        ("/ctx.tar.gz".into(), gz),
        (
            "/Dockerfile".into(),
            b"FROM busybox:local\nRUN echo from-url > /x\n".to_vec(),
        ),
        ("/junk".into(), vec![0xff, 0xfe, 0x00, 0x01]),
    ]);
    let url = format!("http://{}/ctx.tar.gz", server.addr);
    env.ok(&["build", "-t", "t:1", &url]);
    assert_eq!(
        env.run_sh("t:1", "cat /listing"),
        ".dockerignore Dockerfile Dockerfile.dockerignore kept.txt "
    );
    env.ok(&[
        "build",
        "-t",
        "t:df",
        &format!("http://{}/Dockerfile", server.addr),
    ]);
    assert_eq!(env.run_sh("t:df", "cat /x"), "from-url\n");
    let e = env.fails(&["build", &format!("http://{}/junk", server.addr)]);
    assert!(e.contains("neither a tar archive"), "{e}");
    let e = env.fails(&["build", &format!("http://{}/missing.tar", server.addr)]);
    assert!(e.contains("404"), "{e}");
}

#[test]
fn stdin_context_is_a_tarball_or_a_dockerfile_and_dash_f_reads_stdin() {
    let env = Env::new();
    env.busybox();
    let src = env.context("stdin", &[("Dockerfile", CTX_DOCKERFILE), ("f.txt", "f\n")]);
    for (flag, name) in [
        ("", "ctx.tar"),
        ("-z", "ctx.tar.gz"),
        ("--zstd", "ctx.tar.zst"),
    ] {
        let archive = env.dir.path().join(name);
        tar_of(&src, flag, &archive);
        let args = ["build", "-t", "s:1", "-"];
        expect_success(&rbuild_stdin(&env, &args, &archive), &args);
        assert_eq!(
            env.run_sh("s:1", "cat /listing"),
            "Dockerfile f.txt ",
            "{name}"
        );
    }
    // A Dockerfile on stdin: no context (a COPY finds nothing).
    let df = env.dir.path().join("stdin.Dockerfile");
    std::fs::write(&df, "FROM busybox:local\nRUN echo no-context > /x\n").unwrap();
    let args = ["build", "-t", "s:df", "-"];
    expect_success(&rbuild_stdin(&env, &args, &df), &args);
    assert_eq!(env.run_sh("s:df", "cat /x"), "no-context\n");
    // -f -: the Dockerfile from stdin, the context from the directory.
    std::fs::write(&df, "FROM busybox:local\nCOPY f.txt /f.txt\n").unwrap();
    let dir = src.to_str().unwrap();
    let args = ["build", "-t", "s:f", "-f", "-", dir];
    expect_success(&rbuild_stdin(&env, &args, &df), &args);
    assert_eq!(env.run_sh("s:f", "cat /f.txt"), "f\n");
    let args = ["build", "-f", "-", "-"];
    let out = rbuild_stdin(&env, &args, &df);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("cannot both be read from stdin"),
        "{e}"
    );
}

#[test]
fn kaniko_tar_and_dir_context_aliases() {
    let env = Env::new();
    env.busybox();
    let src = env.context(
        "kaniko",
        &[("Dockerfile", CTX_DOCKERFILE), ("k.txt", "k\n")],
    );
    let archive = env.dir.path().join("k.tar.gz");
    tar_of(&src, "-z", &archive);
    env.ok(&[
        "build",
        "-t",
        "k:tar",
        &format!("tar://{}", archive.display()),
    ]);
    assert_eq!(env.run_sh("k:tar", "cat /listing"), "Dockerfile k.txt ");
    // kaniko's --dockerfile spelling of -f, with dir://.
    env.ok(&[
        "build",
        "--dockerfile",
        src.join("Dockerfile").to_str().unwrap(),
        "-t",
        "k:dir",
        &format!("dir://{}", src.display()),
    ]);
    assert_eq!(env.run_sh("k:dir", "cat /listing"), "Dockerfile k.txt ");
    let e = env.fails(&["build", "s3://bucket/ctx.tar.gz"]);
    assert!(e.contains("unsupported scheme s3://"), "{e}");
}

#[test]
fn build_context_images_replace_from_and_copy_from() {
    let env = Env::new();
    env.busybox();
    let alt = env.context(
        "alt",
        &[("Dockerfile", "FROM busybox:local\nRUN echo alt > /marker\n")],
    );
    env.ok(&["build", "-t", "alt:1", alt.to_str().unwrap()]);
    let layout = env.dir.path().join("layout");
    env.ok(&[
        "build",
        "-o",
        &format!("type=oci,dest={},tar=false", layout.display()),
        alt.to_str().unwrap(),
    ]);
    // `base` and `tools` are no image anywhere: only the named contexts make them resolve. The
    // stage `tools` is replaced whole by the context of its name, as current moby/buildkit's
    // dockerfile2llb does (its FROM and RUN never run).
    let ctx = env.context(
        "named",
        &[(
            "Dockerfile",
            "FROM no-such-image:404 AS tools\n\
             RUN false\n\
             FROM tools AS t\n\
             FROM base\n\
             COPY --from=tools /marker /from-tools\n\
             COPY --from=t /marker /from-stage\n\
             RUN cat /marker /from-tools /from-stage > /seen\n",
        )],
    );
    let c = ctx.to_str().unwrap();
    let oci = format!("tools=oci-layout://{}", layout.display());
    let args = [
        "build",
        "--progress",
        "plain",
        "--build-context",
        "base=docker-image://alt:1",
        "--build-context",
        &oci,
        "-t",
        "named:1",
        c,
    ];
    let (_, cold) = env.ok(&args);
    assert_eq!(
        env.run_sh("named:1", "cat /seen"),
        "alt\nalt\nalt\n",
        "{cold}"
    );
    // Keys follow the content: the same images again hit the cache.
    let (_, warm) = env.ok(&args);
    assert_eq!(
        crate::common::step_status(&warm, "RUN cat"),
        "CACHED",
        "{warm}"
    );
    let e = env.fails(&["build", c]);
    assert!(
        e.contains("base"),
        "without the named contexts, `base` is an image to pull: {e}"
    );
    let e = env.fails(&["build", "--build-context", "base=./no-such-dir", c]);
    assert!(e.contains("--build-context base=./no-such-dir"), "{e}");
}

#[test]
fn build_context_directories_git_and_tarballs_are_copied_from_and_key_by_content() {
    let env = Env::new();
    env.busybox();
    // Its `.dockerignore` applies, as current moby/buildkit's dockerui reads it for a local named
    // context: `secret.txt` and `lib/tmp/` never reach the image; `!lib/tmp/keep` comes back.
    let shared = env.context(
        "shared",
        &[
            ("lib/a.txt", "shared a\n"),
            ("secret.txt", "do not send\n"),
            ("lib/tmp/x.o", "object\n"),
            ("lib/tmp/keep", "kept\n"),
            (".dockerignore", "secret.txt\nlib/tmp\n!lib/tmp/keep\n"),
        ],
    );
    std::os::unix::fs::chown(shared.join("lib/a.txt"), Some(1234), Some(5678)).unwrap();
    let git = GitServer::start_with(&[("README", "from git\n"), ("sub/a.txt", "a v1\n")]);
    let src = env.context("tar-src", &[("t.txt", "from a tarball\n")]);
    let tgz = tar_of(&src, "-z", &env.dir.path().join("named.tar.gz"));
    let server = BlobServer::start(vec![("/named.tar.gz".into(), tgz)]);
    let ctx = env.context(
        "named-files",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             COPY --from=shared lib/a.txt /a.txt\n\
             COPY --from=repo README /readme\n\
             COPY --from=tarball t.txt /t.txt\n\
             RUN --mount=from=shared,target=/s cat /s/lib/a.txt /a.txt /readme /t.txt > /seen \
                 && cd /s && find . -type f | sort > /shared-files && stat -c %u:%g lib/a.txt > /owner\n",
        )],
    );
    let shared_flag = format!("shared={}", shared.display());
    let repo_flag = format!("repo={}#main", git.url);
    let tar_flag = format!("tarball=http://{}/named.tar.gz", server.addr);
    let args = [
        "build",
        "--progress",
        "plain",
        "--build-context",
        &shared_flag,
        "--build-context",
        &repo_flag,
        "--build-context",
        &tar_flag,
        "-t",
        "nf:1",
        ctx.to_str().unwrap(),
    ];
    env.ok(&args);
    assert_eq!(
        env.run_sh("nf:1", "cat /seen"),
        "shared a\nshared a\nfrom git\nfrom a tarball\n"
    );
    assert_eq!(
        env.run_sh("nf:1", "cat /shared-files"),
        "./.dockerignore\n./lib/a.txt\n./lib/tmp/keep\n"
    );
    // The filtered copy keeps the owners on disk.
    assert_eq!(env.run_sh("nf:1", "cat /owner"), "1234:5678\n");
    // Touching a file changes nothing: the key follows the content.
    let a = shared.join("lib/a.txt");
    std::fs::write(&a, "shared a\n").unwrap();
    let (_, warm) = env.ok(&args);
    assert_eq!(
        crate::common::step_status(&warm, "RUN --mount"),
        "CACHED",
        "{warm}"
    );
    std::fs::write(&a, "shared b\n").unwrap();
    let (_, changed) = env.ok(&args);
    assert_eq!(
        crate::common::step_status(&changed, "COPY --from=shared"),
        "RAN",
        "{changed}"
    );
    assert!(env
        .run_sh("nf:1", "cat /seen")
        .starts_with("shared b\nshared b\n"));
}
