//! Dockerfile features end to end: ADD archives, COPY --parents, heredocs, node names, `# syntax=`,
//! `--check`.

use std::process::Command;

use crate::common::{sh, Env};

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn add_unpacks_local_tar_archives_but_copy_and_plain_files_stay_as_they_are() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "add",
        &[
            (
                "Dockerfile",
                "FROM busybox:local\n\
                 ADD app.tar.gz /opt/\n\
                 ADD plain.tar /plain\n\
                 ADD --chown=7:8 app.tar.gz /owned/\n\
                 COPY app.tar.gz /copied/\n\
                 ADD notes.gz /raw/\n\
                 ADD --unpack=false app.tar.gz /kept/\n",
            ),
            ("src/app/hello.txt", "hello from the archive\n"),
            ("src/app/bin/tool", "#!/bin/sh\necho tool\n"),
            ("src/plain/x.txt", "plain tar\n"),
        ],
    );
    let src = ctx.join("src");
    sh(Command::new("chmod")
        .arg("755")
        .arg(src.join("app/bin/tool")));
    sh(Command::new("tar")
        .arg("-czf")
        .arg(ctx.join("app.tar.gz"))
        .arg("-C")
        .arg(&src)
        .arg("app"));
    sh(Command::new("tar")
        .arg("-cf")
        .arg(ctx.join("plain.tar"))
        .arg("-C")
        .arg(src.join("plain"))
        .arg("x.txt"));
    // gzip data that is not a tar archive is copied as a file.
    sh(Command::new("sh").arg("-c").arg(format!(
        "echo not a tarball | gzip > {}",
        path(&ctx.join("notes.gz"))
    )));
    let mut has_xz = false;
    if std::path::Path::new("/usr/bin/xz").exists() {
        sh(Command::new("tar")
            .arg("-cJf")
            .arg(ctx.join("app.tar.xz"))
            .arg("-C")
            .arg(&src)
            .arg("app"));
        let df = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
        std::fs::write(ctx.join("Dockerfile"), df + "ADD app.tar.xz /xz/\n").unwrap();
        has_xz = true;
    }
    env.ok(&["build", "-t", "add:1", path(&ctx)]);
    let out = env.run_sh("add:1",
        "cat /opt/app/hello.txt /plain/x.txt; /opt/app/bin/tool; \
         stat -c '%u:%g' /owned/app/hello.txt; ls /copied; ls /raw; gunzip -c /raw/notes.gz; ls /kept",
    );
    assert_eq!(
        out,
        "hello from the archive\nplain tar\ntool\n7:8\napp.tar.gz\nnotes.gz\nnot a tarball\napp.tar.gz\n"
    );
    if has_xz {
        assert_eq!(
            env.run_sh("add:1", "cat /xz/app/hello.txt"),
            "hello from the archive\n"
        );
    }
}

#[test]
fn copy_parents_keeps_source_paths_below_the_pivot() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "parents",
        &[
            (
                "Dockerfile",
                "FROM busybox:local\n\
                 COPY --parents a/*/*.txt /dst/\n\
                 COPY --parents src/./app/x.js /p/\n\
                 COPY --parents --exclude=docs/*.md docs /d/\n",
            ),
            ("a/b/one.txt", "1"),
            ("a/c/two.txt", "2"),
            ("a/c/skip.log", "no"),
            ("src/app/x.js", "x"),
            ("docs/keep.txt", "k"),
            ("docs/drop.md", "d"),
        ],
    );
    env.ok(&["build", "-t", "parents:1", path(&ctx)]);
    let out = env.run_sh(
        "parents:1",
        "cd / && find dst p d -type f | sort && cat dst/a/b/one.txt dst/a/c/two.txt",
    );
    assert_eq!(
        out,
        "d/docs/keep.txt\ndst/a/b/one.txt\ndst/a/c/two.txt\np/app/x.js\n12"
    );
}

#[test]
fn heredocs_and_node_names_as_written() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "heredoc",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             ARG NAME=world\n\
             RUN <<EOF\n\
             echo one > /one.txt\n\
             echo two >> /one.txt\n\
             EOF\n\
             COPY <<EOF /etc/greeting\n\
             hello $NAME\n\
             EOF\n\
             COPY <<A <<B /multi/\n\
             first\n\
             A\n\
             second\n\
             B\n\
             RUN tr 'a-z' 'A-Z' < /etc/greeting > /shout\n\
             RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/x\"]\n",
        )],
    );
    let (_, stderr) = env.ok(&["build", "--progress", "plain", "-t", "hd:1", path(&ctx)]);
    for name in [
        "RUN tr 'a-z' 'A-Z' < /etc/greeting > /shout",
        r#"RUN ["/bin/busybox", "mkdir", "-p", "/x"]"#,
        "RUN <<EOF (echo one > /one.txt...)",
    ] {
        assert!(
            stderr.contains(name),
            "no step named {name:?} in:\n{stderr}"
        );
    }
    let out = env.run_sh(
        "hd:1",
        "cat /one.txt /etc/greeting /shout /multi/A /multi/B; test -d /x && echo x",
    );
    assert_eq!(
        out,
        "one\ntwo\nhello world\nHELLO WORLD\nfirst\nsecond\nx\n"
    );
}

#[test]
fn syntax_directive_for_dockerfile_1x_builds_and_other_frontends_are_refused() {
    let env = Env::new();
    env.busybox();
    let ok = env.context(
        "syntax-ok",
        &[(
            "Dockerfile",
            "# syntax=docker/dockerfile:1.6\nFROM busybox:local\nRUN echo ok > /ok\n",
        )],
    );
    env.ok(&["build", "-t", "syntax:1", path(&ok)]);
    assert_eq!(env.run_sh("syntax:1", "cat /ok"), "ok\n");

    let bad = env.context(
        "syntax-bad",
        &[(
            "Dockerfile",
            "# syntax=someone/else\nFROM busybox:local\nRUN echo never > /x\n",
        )],
    );
    let err = env.fails(&["build", "-t", "syntax:2", path(&bad)]);
    assert!(
        err.contains("external frontends are not supported: # syntax=someone/else"),
        "{err}"
    );
    assert!(
        err.contains("Dockerfile:1"),
        "error points at the directive: {err}"
    );
    let err = env.fails(&["build", "--check", path(&bad)]);
    assert!(
        err.contains("external frontends are not supported"),
        "{err}"
    );
}

#[test]
fn check_validates_without_running_anything() {
    let env = Env::new();
    env.busybox();
    let valid = env.context(
        "check-ok",
        &[(
            "Dockerfile",
            "FROM busybox:local AS build\nRUN false\nFROM build\nCOPY --from=build /etc/passwd /p\n",
        )],
    );
    // `RUN false` would fail the build: --check must not run it.
    let (_, stderr) = env.ok(&["build", "--check", "-t", "checked:1", path(&valid)]);
    assert!(stderr.contains("check complete, no errors"), "{stderr}");
    let (images, _) = env.ok(&["images"]);
    assert!(
        !images.contains("checked"),
        "--check tagged an image: {images}"
    );

    let invalid = env.context(
        "check-bad",
        &[(
            "Other.Dockerfile",
            "FROM busybox:local\nRUNN echo hi\nCOPY --bogus=1 a b\n",
        )],
    );
    let file = invalid.join("Other.Dockerfile");
    let err = env.fails(&["build", "--check", "-f", path(&file), path(&invalid)]);
    assert!(err.contains("RUNN"), "{err}");
    assert!(
        err.contains("RUN"),
        "suggests the nearest instruction: {err}"
    );
    assert!(
        err.contains("Other.Dockerfile:2"),
        "names file and line: {err}"
    );
}

/// A tiny HTTP/1.0 file server on a free loopback port: `path -> body` (shared, so a test can change a
/// file), `Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT`, 404 for the rest; counts GETs.
struct FileServer {
    addr: String,
    files: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    gets: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FileServer {
    fn start(files: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let files = std::sync::Arc::new(std::sync::Mutex::new(
            files
                .iter()
                .map(|(p, b)| ((*p).to_owned(), (*b).to_owned()))
                .collect::<std::collections::HashMap<_, _>>(),
        ));
        let gets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (f, g) = (files.clone(), gets.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                // Skip the headers.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                g.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                let body = f.lock().unwrap().get(&path).cloned();
                let resp = match body {
                    Some(b) => format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n{b}",
                        b.len()
                    ),
                    None => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
                };
                let _ = conn.write_all(resp.as_bytes());
            }
        });
        Self { addr, files, gets }
    }

    fn gets(&self) -> usize {
        self.gets.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn add_from_a_url_downloads_checks_the_checksum_and_caches_by_content() {
    let env = Env::new();
    env.busybox();
    let server = FileServer::start(&[("/dl/hello.txt", "hello over http\n")]);
    let url = format!("http://{}/dl/hello.txt", server.addr);
    let sum = "sha256:1ba7c5b4a5cde68e9f4a0a0e5a1b2cd4a5d1f7f9d1e4c39f3f7e0e7a8a9e1c0b";
    // The real checksum of the body, from sha256sum.
    let real = sh(Command::new("sh").args([
        "-c",
        "printf 'hello over http\\n' | sha256sum | cut -d' ' -f1",
    ]));
    let real = format!("sha256:{}", real.trim());
    assert_ne!(real, sum);
    let ctx = env.context(
        "add-url",
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox:local\n\
                 ADD {url} /srv/\n\
                 ADD --checksum={real} --chmod=644 {url} /srv/renamed.txt\n\
                 RUN stat -c '%n %a %Y' /srv/hello.txt /srv/renamed.txt > /srv/stat\n"
            ),
        )],
    );
    let c = path(&ctx);
    let (_, cold) = env.ok(&["build", "-t", "dl:1", "--progress", "plain", c]);
    assert!(cold.contains(&format!("download] {url}")), "{cold}");
    let out = env.run_sh("dl:1", "cat /srv/hello.txt /srv/stat");
    assert_eq!(
        out, "hello over http\n/srv/hello.txt 600 784111777\n/srv/renamed.txt 644 784111777\n",
        "mode 0600 and Last-Modified as mtime, as BuildKit; --chmod applies"
    );
    let (hist, _) = env.ok(&["history", "--no-trunc", "dl:1"]);
    assert!(hist.contains(&format!("ADD {url} /srv/")), "{hist}");

    // A rebuild downloads the unpinned URL once (its content is its key) and the pinned one not at all.
    let before = server.gets();
    let (_, warm) = env.ok(&["build", "-t", "dl:1", "--progress", "plain", c]);
    assert_eq!(server.gets() - before, 1, "{warm}");
    assert!(!warm.contains("cache miss"), "{warm}");

    // New content on the server: the unpinned ADD and what follows re-run; the pinned one stays
    // cached (its checksum is its key).
    server
        .files
        .lock()
        .unwrap()
        .insert("/dl/hello.txt".into(), "changed\n".into());
    let (_, changed) = env.ok(&["build", "-t", "dl:2", "--progress", "plain", c]);
    assert!(changed.contains("cache miss"), "{changed}");
    assert_eq!(env.run_sh("dl:2", "cat /srv/hello.txt"), "changed\n");

    // A wrong checksum, a 404 and a git URL fail naming the URL and the Dockerfile line; no tag.
    for (dockerfile, want) in [
        (
            format!("FROM busybox:local\nADD --checksum={sum} {url} /x\n"),
            "checksum mismatch".to_owned(),
        ),
        (
            format!(
                "FROM busybox:local\nADD http://{}/nope.tar /x\n",
                server.addr
            ),
            "404 Not Found".to_owned(),
        ),
        (
            "FROM busybox:local\nADD file:///etc/repo.git#main /src\n".to_owned(),
            "is not allowed".to_owned(),
        ),
        (
            format!("FROM busybox:local\nADD --checksum={sum} local.txt /x\n"),
            "--checksum needs an http(s) URL".to_owned(),
        ),
    ] {
        let bad = env.context(
            "add-url-bad",
            &[("Dockerfile", &dockerfile), ("local.txt", "x")],
        );
        let err = env.fails(&["build", "-t", "bad:1", "--progress", "plain", path(&bad)]);
        assert!(err.contains(&want), "{want}: {err}");
        assert!(err.contains("Dockerfile:2"), "names the line: {err}");
    }
    let (images, _) = env.ok(&["images"]);
    assert!(!images.contains("bad"), "{images}");
}

/// `git daemon` serving a repository made here (branch `main`, annotated tag `v1`), on a free port.
pub(crate) struct GitServer {
    child: std::process::Child,
    pub(crate) url: String,
    work: std::path::PathBuf,
    bare: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    sh(Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args))
}

impl GitServer {
    fn start() -> Self {
        Self::start_with(&[("README", "readme v1\n"), ("sub/a.txt", "a v1\n")])
    }

    /// A server whose repository holds `files` (`sub/a.txt` is what [`GitServer::push_change`] edits).
    pub(crate) fn start_with(files: &[(&str, &str)]) -> Self {
        crate::common::require("/usr/lib/git-core/git-daemon", "git");
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let srv = dir.path().join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        for (path, content) in files {
            let p = work.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        git_in(&work, &["init", "-q", "-b", "main"]);
        git_in(&work, &["add", "."]);
        git_in(&work, &["commit", "-q", "-m", "one"]);
        git_in(&work, &["tag", "-a", "v1", "-m", "v1"]);
        let bare = srv.join("repo.git");
        git_in(
            dir.path(),
            &["clone", "-q", "--bare", "work", bare.to_str().unwrap()],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", srv.display()))
            .arg(&srv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting git daemon");
        let addr = format!("127.0.0.1:{port}");
        let up = (0..100).any(|_| {
            std::net::TcpStream::connect(&addr).is_ok() || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                false
            }
        });
        let mut child = child;
        if !up {
            let _ = child.kill(); // already gone is fine: the test fails either way
            panic!("git daemon did not listen on {addr} within 5 s");
        }
        GitServer {
            child,
            url: format!("git://{addr}/repo.git"),
            work,
            bare,
            _dir: dir,
        }
    }

    /// Commits a change to `sub/a.txt` on main and pushes it to the served repository.
    pub(crate) fn push_change(&self, content: &str) {
        std::fs::write(self.work.join("sub/a.txt"), content).unwrap();
        git_in(&self.work, &["commit", "-q", "-am", "change"]);
        git_in(
            &self.work,
            &["push", "-q", self.bare.to_str().unwrap(), "main"],
        );
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill(); // already dead is fine
        let _ = self.child.wait();
    }
}

#[test]
fn add_from_git_checks_out_a_commit_and_caches_by_commit() {
    let env = Env::new();
    env.busybox();
    let git = GitServer::start();
    let url = &git.url;
    let ctx = env.context(
        "add-git",
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox:local\n\
                 ADD {url}#v1 /src\n\
                 ADD {url}#main:sub /sub\n\
                 ADD --keep-git-dir=true {url} /full\n\
                 RUN ls -A /src > /out && cat /sub/a.txt >> /out && test -d /full/.git && echo kept >> /out\n"
            ),
        )],
    );
    let c = path(&ctx);
    let (_, cold) = env.ok(&["build", "-t", "git:1", "--progress", "plain", c]);
    assert_eq!(
        env.run_sh("git:1", "cat /out"),
        "README\nsub\na v1\nkept\n",
        "the tag's tree without .git, the subdir alone, .git kept on request: {cold}"
    );
    // A rebuild asks the remote what the refs are now and hits.
    let (_, warm) = env.ok(&["build", "-t", "git:1", "--progress", "plain", c]);
    assert!(!warm.contains("cache miss"), "{warm}");

    // main moves: its checkout and what follows re-run; the tag's stays cached.
    git.push_change("a v2\n");
    let (_, moved) = env.ok(&["build", "-t", "git:2", "--progress", "plain", c]);
    let status = |needle: &str| crate::common::step_status(&moved, needle);
    assert_eq!(status("#v1"), "CACHED", "{moved}");
    assert_eq!(status("#main:sub"), "RAN", "{moved}");
    assert_eq!(env.run_sh("git:2", "cat /sub/a.txt"), "a v2\n");

    // A --checksum that is not the commit, a missing ref, a subdir that is not there: clear errors.
    for (add, want) in [
        (
            format!("ADD --checksum={} {url}#v1 /x", "0".repeat(40)),
            "not the --checksum",
        ),
        (format!("ADD {url}#no-such-branch /x"), "no branch or tag"),
        (format!("ADD {url}#main:nowhere /x"), "has no directory"),
        (format!("ADD {url}#main:../up /x"), "leaves the repository"),
    ] {
        let bad = env.context(
            "add-git-bad",
            &[("Dockerfile", &format!("FROM busybox:local\n{add}\n"))],
        );
        let err = env.fails(&["build", "-t", "bad:1", "--progress", "plain", path(&bad)]);
        assert!(err.contains(want), "{want}: {err}");
        assert!(err.contains("Dockerfile:2"), "names the line: {err}");
    }
}

#[test]
fn copy_link_layer_survives_a_change_below_it() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "link",
        &[
            (
                "Dockerfile",
                "FROM busybox:local\n\
                 ARG V=1\n\
                 RUN echo base-$V > /base-version\n\
                 COPY --link app.txt /app/\n\
                 COPY --link --chown=1000:1000 app.txt /owned/\n\
                 RUN cat /base-version /app/app.txt > /out && stat -c %u /owned/app.txt >> /out\n",
            ),
            ("app.txt", "app\n"),
        ],
    );
    env.build_plain("link:1", &ctx, &["--build-arg", "V=1"]);
    assert_eq!(env.run_sh("link:1", "cat /out"), "base-1\napp\n1000\n");
    // The layer below changes: the linked copies stay cached (plain COPY would re-run), what follows
    // them re-runs, and their layers are the same blobs.
    let (_, se) = env.build_plain("link:2", &ctx, &["--build-arg", "V=2"]);
    let status = |needle: &str| crate::common::step_status(&se, needle);
    assert_eq!(status("RUN echo base-"), "RAN", "{se}");
    assert_eq!(status("COPY --link app.txt"), "CACHED", "{se}");
    assert_eq!(status("COPY --link --chown"), "CACHED", "{se}");
    assert_eq!(status("RUN cat"), "RAN", "{se}");
    assert_eq!(env.run_sh("link:2", "cat /out"), "base-2\napp\n1000\n");
    let (one, two) = (env.layers("link:1"), env.layers("link:2"));
    assert_eq!(one.len(), two.len());
    let n = one.len();
    assert_ne!(one[n - 4], two[n - 4], "the RUN below changed");
    assert_eq!(
        one[n - 3..n - 1],
        two[n - 3..n - 1],
        "the linked layers did not"
    );
}

#[test]
fn add_unpack_true_unpacks_a_downloaded_archive_and_the_default_keeps_it() {
    let env = Env::new();
    env.busybox();
    // A plain tar of text files is valid UTF-8, which the test server serves.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pkg")).unwrap();
    std::fs::write(dir.path().join("pkg/hello.txt"), "unpacked from a URL\n").unwrap();
    sh(Command::new("tar").current_dir(dir.path()).args([
        "--format=ustar",
        "-cf",
        "pkg.tar",
        "pkg",
    ]));
    let tar = std::fs::read_to_string(dir.path().join("pkg.tar")).unwrap();
    let server = FileServer::start(&[("/dl/pkg.tar", &tar)]);
    let url = format!("http://{}/dl/pkg.tar", server.addr);
    let ctx = env.context(
        "add-unpack-url",
        &[(
            "Dockerfile",
            &format!(
                "FROM busybox:local\n\
                 ADD --unpack=true {url} /opt/\n\
                 ADD {url} /raw/\n"
            ),
        )],
    );
    env.ok(&["build", "-t", "unpack:1", path(&ctx)]);
    assert_eq!(
        env.run_sh("unpack:1", "cat /opt/pkg/hello.txt; ls /raw"),
        "unpacked from a URL\npkg.tar\n"
    );
}
