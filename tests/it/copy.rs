//! COPY/ADD semantics against BuildKit (#17, #19 item 9): each test says what it follows, the lab's
//! BuildKit (dockerd 20.10, `docker build` of the same Dockerfile) or current moby/buildkit source.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::Env;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Builds `ctx` with `-o type=local` and returns the exported rootfs.
fn build_local(env: &Env, ctx: &Path) -> PathBuf {
    let out = env.dir.path().join(format!(
        "out-{}",
        ctx.file_name().unwrap().to_string_lossy()
    ));
    env.ok(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=local,dest={}", s(&out)),
        s(ctx),
    ]);
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// #17 item 3. Lab: `COPY nothere* f /w/` copies f; `COPY nothere* /z/` builds and creates nothing
/// (current source agrees: the file op's AllowEmptyWildcard). A missing plain path is an error.
#[test]
fn copy_wildcard_matching_nothing_beside_other_sources_is_skipped() {
    let env = Env::new();
    let ctx = env.context(
        "wild",
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY nothere* f /w/\nCOPY nothere* /z/\n",
            ),
            ("f", "f\n"),
        ],
    );
    let out = build_local(&env, &ctx);
    assert_eq!(std::fs::read_to_string(out.join("w/f")).unwrap(), "f\n");
    assert!(!out.join("z").exists());
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY nothere f /w/\n").unwrap();
    let err = env.fails(&["build", s(&ctx)]);
    assert!(err.contains("\"nothere\" not found"), "{err}");
}

/// #17 item 4. Lab: `FROM scratch`, `USER root`, `WORKDIR /w`, `COPY --chown=root` builds (current
/// source: file ops resolve names without a passwd file to 0). RUN as `root:root` works in current
/// BuildKit (executor/oci `parseUID`); plain `root` we also run as 0:0.
#[test]
fn user_root_without_passwd_resolves_to_0() {
    let env = Env::new();
    let ctx = env.context(
        "root",
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY busybox /busybox\nUSER root\nWORKDIR /w\n\
                 COPY --chown=root:root f /g\n\
                 RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox id -u > /w/id; /busybox id -g >> /w/id\"]\n",
            ),
            ("f", "f\n"),
        ],
    );
    std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("busybox-static");
    let out = build_local(&env, &ctx);
    assert_eq!(std::fs::read_to_string(out.join("w/id")).unwrap(), "0\n0\n");
    let md = std::fs::metadata(out.join("g")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
}

/// #17 item 7, following current BuildKit (tonistiigi/fsutil at 6d9dc2e, 2026-07; the chmod of created
/// directories since 183e7fb, BuildKit 0.21): `--chmod` applies to every copied file and directory,
/// to the destination directory a directory copy creates, and to parent directories it creates; a
/// directory that already exists keeps its mode. The lab's 0.8 left created directories 0755.
#[test]
fn copy_chmod_on_a_directory_as_current_buildkit() {
    let env = Env::new();
    let ctx = env.context(
        "chmod",
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY f /existing/keep\nCOPY --chmod=0640 d /dd\n\
                 COPY --chmod=0600 f /m/n/o\nCOPY --chmod=0750 d /existing/\n",
            ),
            ("f", "f\n"),
            ("d/x", "x\n"),
            ("d/sub/y", "y\n"),
        ],
    );
    std::os::unix::fs::symlink("x", ctx.join("d/lx")).unwrap();
    chmod(&ctx.join("d/sub"), 0o700);
    let out = build_local(&env, &ctx);
    for p in ["dd", "dd/sub", "dd/x", "dd/sub/y"] {
        assert_eq!(mode(&out.join(p)), 0o640, "{p}");
    }
    assert!(std::fs::symlink_metadata(out.join("dd/lx"))
        .unwrap()
        .file_type()
        .is_symlink());
    for p in ["m", "m/n", "m/n/o"] {
        assert_eq!(mode(&out.join(p)), 0o600, "{p}");
    }
    assert_eq!(mode(&out.join("existing")), 0o755);
    assert_eq!(mode(&out.join("existing/x")), 0o750);
}

/// A directory copy's destination: new → 0755 root whatever the source directory's mode; existing →
/// keeps its mode and owner. Lab: `COPY d /new` with d 0700 gives /new 0755; `RUN mkdir -m 700 /ex
/// && chown 5:5 /ex` then `COPY e /ex` keeps 0700 5:5.
#[test]
fn copy_of_a_directory_keeps_an_existing_destination_and_makes_a_new_one_0755() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "destdir",
        &[
            (
                "Dockerfile",
                "FROM busybox:local\nRUN mkdir -m 700 /ex && chown 5:5 /ex\n\
                 COPY d /new\nCOPY d /ex\nCOPY --chown=7:7 f /p/q/r\n",
            ),
            ("f", "f\n"),
            ("d/x", "x\n"),
        ],
    );
    chmod(&ctx.join("d"), 0o700);
    env.ok(&["build", "-t", "destdir:1", s(&ctx)]);
    let out = env.run_sh(
        "destdir:1",
        "stat -c '%n %a %u:%g' /new /new/x /ex /ex/x /p /p/q /p/q/r",
    );
    assert_eq!(
        out,
        "/new 755 0:0\n/new/x 644 0:0\n/ex 700 5:5\n/ex/x 644 0:0\n/p 755 7:7\n/p/q 755 7:7\n/p/q/r 644 7:7\n"
    );
}

/// #17 item 8. `\?` is unescaped by the shell lexer before matching (current source: dockerfile2llb
/// expands COPY paths with `ProcessWord`, which drops the escape), so `n\?pe` is the pattern `n?pe`,
/// matching `n?pe` and `nope`; a pattern is one source, so each match is copied to the file path in
/// turn and the last (`nope`) stays. Lab (0.8): the same, /app4/file.txt holds "nope".
#[test]
fn escaped_glob_copied_to_a_file_path_writes_the_file() {
    let env = Env::new();
    let ctx = env.context(
        "glob",
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY ./app/n\\?pe/file.txt /app4/file.txt\nCOPY a*.txt /one.txt\n",
            ),
            ("app/nope/file.txt", "nope\n"),
            ("app/n?pe/file.txt", "q\n"),
            ("a1.txt", "a1\n"),
        ],
    );
    let out = build_local(&env, &ctx);
    assert!(out.join("app4/file.txt").is_file());
    assert_eq!(
        std::fs::read_to_string(out.join("app4/file.txt")).unwrap(),
        "nope\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("one.txt")).unwrap(),
        "a1\n"
    );
}

/// #17 item 9. Lab: `COPY file-link.txt /` (file-link.txt -> file.txt) gives a regular file with
/// file.txt's content; a symlink inside a copied directory stays a symlink; a link to a directory
/// copies the directory's contents.
#[test]
fn named_context_symlink_is_followed_and_links_inside_directories_are_kept() {
    let env = Env::new();
    let ctx = env.context(
        "links",
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY file-link.txt /\nCOPY dir-link /dl/\nCOPY d /d/\n",
            ),
            ("file.txt", "t\n"),
            ("d/x", "x\n"),
        ],
    );
    std::os::unix::fs::symlink("file.txt", ctx.join("file-link.txt")).unwrap();
    std::os::unix::fs::symlink("d", ctx.join("dir-link")).unwrap();
    std::os::unix::fs::symlink("x", ctx.join("d/lx")).unwrap();
    let out = build_local(&env, &ctx);
    let md = std::fs::symlink_metadata(out.join("file-link.txt")).unwrap();
    assert!(md.is_file());
    assert_eq!(
        std::fs::read_to_string(out.join("file-link.txt")).unwrap(),
        "t\n"
    );
    assert_eq!(std::fs::read_to_string(out.join("dl/x")).unwrap(), "x\n");
    assert_eq!(
        std::fs::read_link(out.join("d/lx")).unwrap(),
        Path::new("x")
    );
}

/// #19 item 9. A context symlink pointing outside the context: BuildKit (lab) fails with
/// `"/etc/passwd" not found` (it resolves the link as if the context were /). We fail too, saying the
/// link leaves the context, with no store or temp path in the message.
#[test]
fn copy_of_a_context_symlink_pointing_outside_says_so_without_internal_paths() {
    let env = Env::new();
    for (name, target) in [("out-link", "/etc/passwd"), ("up-link", "../../outside")] {
        let ctx = env.context(
            &format!("escape-{name}"),
            &[("Dockerfile", &format!("FROM scratch\nCOPY {name} /o\n"))],
        );
        std::os::unix::fs::symlink(target, ctx.join(name)).unwrap();
        let err = env.fails(&["build", s(&ctx)]);
        assert!(err.contains("outside the build context"), "{err}");
        assert!(err.contains(target), "{err}");
        let root = env.root();
        assert!(!err.contains(s(&root)), "store path leaked: {err}");
        assert!(!err.contains("/layer"), "internal path leaked: {err}");
    }
}

/// #19 item 9. Several sources written out need a directory destination (Docker's documentation:
/// "the destination must be a directory, and it must end with a slash"). BuildKit (lab 0.8 and current
/// source) copies each onto the same path and keeps the last: a deliberate difference, we fail with
/// the rule instead of losing files. An existing directory or a trailing `/` is fine.
#[test]
fn copy_of_several_sources_to_a_path_that_is_not_a_directory_fails() {
    let env = Env::new();
    let ctx = env.context(
        "several",
        &[
            ("Dockerfile", "FROM scratch\nCOPY a b /x\n"),
            ("a", "a\n"),
            ("b", "b\n"),
        ],
    );
    let err = env.fails(&["build", s(&ctx)]);
    assert!(
        err.contains("must be a directory and end with a /"),
        "{err}"
    );
    assert!(err.contains("Dockerfile:2"), "{err}");
    // Sources that match nothing do not count (buildah's copy-globs/Containerfile.missing, built by
    // BuildKit: `COPY *foo *.txt /testdir` with one .txt file makes the file /testdir).
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY a /x/keep\nCOPY a b /x\nCOPY a b /y/\nCOPY *foo a* /z\n\
         COPY --chown=${NOBODY}:${NOBODY} a /owned\n",
    )
    .unwrap();
    let out = build_local(&env, &ctx);
    for p in ["x/a", "x/b", "y/a", "y/b", "z", "owned"] {
        assert!(out.join(p).is_file(), "{p}");
    }
    let md = std::fs::metadata(out.join("owned")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
}

/// A RUN or WORKDIR that changes nothing still gets a layer, as in BuildKit (lab: `RUN true` has
/// history `empty_layer: false` and a layer); WORKDIR of an existing directory leaves it as it is
/// (/tmp stays 1777); `WORKDIR /` adds no layer.
#[test]
fn steps_that_change_nothing_commit_an_empty_layer_as_buildkit() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "empty",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN true\nWORKDIR /tmp\nWORKDIR /\nRUN stat -c %a /tmp > /mode\n",
        )],
    );
    env.ok(&["build", "-t", "empty:1", s(&ctx)]);
    let base = env.layers("busybox:local").len();
    assert_eq!(env.layers("empty:1").len(), base + 3);
    assert_eq!(env.run_sh("empty:1", "cat /mode"), "1777\n");
    let (out, _) = env.ok(&["inspect", "empty:1"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    let hist = v["Config"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no Config.history in {out}"));
    let flags: Vec<(String, bool)> = hist
        .iter()
        .rev()
        .take(4)
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or_default().to_owned(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(flags.len(), 4, "{out}");
    assert!(!flags[0].1 && !flags[3].1, "{flags:?}");
    assert!(flags[1].1, "WORKDIR / adds no layer: {flags:?}");
    assert!(!flags[2].1, "WORKDIR /tmp: {flags:?}");
}
