use crate::common::{assert_not_in_store, Env};

#[test]
fn cache_mount_persists_with_owner_and_mode_and_stays_out_of_the_layer() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "cache",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN --mount=type=cache,id=c1,target=/c,uid=1000,gid=1001,mode=0710 \
             stat -c '%u %g %a' /c > /stat && echo x >> /c/log && wc -l < /c/log > /count\n",
        )],
    );
    env.build_plain("cache:1", &ctx, &[]);
    env.build_plain("cache:2", &ctx, &["--no-cache"]);
    assert_eq!(
        env.run_sh("cache:1", "cat /count /stat"),
        "1\n1000 1001 710\n"
    );
    assert_eq!(
        env.run_sh("cache:2", "cat /count; test -e /c || echo no-c"),
        "2\nno-c\n"
    );
}

#[test]
fn cache_mount_from_a_stage_is_seeded_once_then_kept() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "cache-from",
        &[(
            "Dockerfile",
            "FROM busybox:local AS seed
             RUN mkdir -p /seed/sub && echo seeded > /seed/sub/a.txt
             FROM busybox:local
             RUN --mount=type=cache,id=seeded,target=/c,from=seed,source=/seed              cat /c/sub/a.txt > /out && echo run >> /c/runs && wc -l < /c/runs >> /out
",
        )],
    );
    env.build_plain("seeded:1", &ctx, &[]);
    assert_eq!(env.run_sh("seeded:1", "cat /out"), "seeded\n1\n");
    // The cache dir is not empty any more: not seeded again, its contents persist.
    env.build_plain("seeded:2", &ctx, &["--no-cache"]);
    assert_eq!(env.run_sh("seeded:2", "cat /out"), "seeded\n2\n");
    // A source that is not in the stage fails the RUN with a clear error.
    let bad = env.context(
        "cache-from-bad",
        &[(
            "Dockerfile",
            "FROM busybox:local AS seed
             FROM busybox:local
             RUN --mount=type=cache,id=seeded-bad,target=/c,from=seed,source=/nope true
",
        )],
    );
    let err = env.fails(&["build", "--progress", "plain", bad.to_str().unwrap()]);
    assert!(err.contains("seeding the cache mount from /nope"), "{err}");
}

#[test]
fn bind_mounts_from_stage_image_and_context_with_discarded_writes() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "bind",
        &[
            ("dir/a", "ctx-a\n"),
            (
                "Dockerfile",
                "FROM busybox:local AS data\n\
                 RUN mkdir -p /out/sub && echo from-stage > /out/sub/f\n\
                 FROM busybox:local\n\
                 RUN --mount=type=bind,from=data,source=/out,target=/in cat /in/sub/f > /got && (touch /in/x 2>/dev/null || echo ro >> /got)\n\
                 RUN --mount=type=bind,from=data,source=/out/sub,target=/in,rw echo changed > /in/f && cat /in/f >> /got\n\
                 RUN --mount=type=bind,from=data,source=out/sub/f,target=/one cat /one >> /got\n\
                 RUN --mount=type=bind,from=busybox:local,target=/img test -x /img/bin/busybox && echo img >> /got\n\
                 RUN --mount=type=bind,source=dir,target=/ctx,rw cat /ctx/a >> /got && echo w > /ctx/a && echo w > /ctx/new\n\
                 RUN --mount=type=bind,source=dir/a,target=/a cat /a >> /got\n",
            ),
        ],
    );
    env.build_plain("bind:1", &ctx, &[]);
    assert_eq!(
        env.run_sh(
            "bind:1",
            "cat /got; ls /in /one /img /ctx /a 2>/dev/null | wc -l"
        ),
        "from-stage\nro\nchanged\nfrom-stage\nimg\nctx-a\nctx-a\n0\n"
    );
    assert_eq!(
        std::fs::read_to_string(ctx.join("dir/a")).unwrap(),
        "ctx-a\n"
    );
    assert!(!ctx.join("dir/new").exists());
}

#[test]
fn context_bind_cannot_follow_a_symlink_out_of_the_context() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "bindleak",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN --mount=type=bind,source=leak,target=/l cat /l/passwd\n",
        )],
    );
    std::os::unix::fs::symlink("/etc", ctx.join("leak")).unwrap();
    let err = env.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(
        !err.contains("root:x:0:0"),
        "host /etc/passwd leaked: {err}"
    );
    assert!(
        err.contains("mount source /leak"),
        "the mount is refused, not the build failing for another reason: {err}"
    );
}

const SECRET: &str = "Sup3rS3cretValue-4711";

#[test]
fn secrets_are_mounted_and_never_stored_or_logged() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "secret",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN --mount=type=secret,id=tok wc -c < /run/secrets/tok > /out && stat -c '%a %u' /run/secrets/tok >> /out\n\
             RUN --mount=type=secret,id=tok,env=TOKEN,target=/s,mode=0440,uid=7 \
             sh -c 'test \"$TOKEN\" = \"$(cat /s)\" && echo match >> /out; stat -c \"%a %u\" /s >> /out'\n\
             RUN --mount=type=secret,id=tok,env=ONLY_ENV test -n \"$ONLY_ENV\" && test ! -e /run/secrets/tok && echo env-only >> /out\n\
             RUN --mount=type=secret,id=absent echo optional-skipped >> /out\n",
        )],
    );
    let file = env.dir.path().join("tok.txt");
    std::fs::write(&file, SECRET).unwrap();
    let src = format!("id=tok,src={}", file.display());
    let (so, se) = env.build_plain("sec:1", &ctx, &["--secret", &src]);
    let expected = format!(
        "{}\n400 0\nmatch\n440 7\nenv-only\noptional-skipped\n",
        SECRET.len()
    );
    assert_eq!(
        env.run_sh("sec:1", "cat /out; test -e /run/secrets || echo clean"),
        expected + "clean\n"
    );

    // From an environment variable, without the cache: the same result.
    let out = std::process::Command::new(crate::common::RBUILD)
        .args([
            "--root",
            env.root().to_str().unwrap(),
            "build",
            "--no-cache",
            "--progress",
            "plain",
        ])
        .args([
            "-t",
            "sec:2",
            "--secret",
            "id=tok,env=RB_TEST_TOK",
            ctx.to_str().unwrap(),
        ])
        .env("RB_TEST_TOK", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A required secret that is missing fails the build, naming the flag to use.
    let req = env.context(
        "secret-req",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN --mount=type=secret,id=nope,required=true true\n",
        )],
    );
    let err = env.fails(&["build", "--progress", "plain", req.to_str().unwrap()]);
    assert!(
        err.contains("secret nope is required") && err.contains("--secret"),
        "{err}"
    );

    // Nowhere in the store (blobs decompressed, records, snapshots) nor in any output.
    for text in [
        &so,
        &se,
        &String::from_utf8_lossy(&out.stdout).into_owned(),
        &String::from_utf8_lossy(&out.stderr).into_owned(),
        &err,
    ] {
        assert!(!text.contains(SECRET), "secret in build output: {text}");
    }
    assert_not_in_store(&env.root(), SECRET);
}

#[test]
fn ssh_agent_socket_is_forwarded() {
    let env = Env::new();
    env.busybox();
    let sock = env.dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let ctx = env.context(
        "ssh",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /out\n\
             RUN --mount=type=ssh,id=other,target=/agent test -S /agent && echo other >> /out\n",
        )],
    );
    let default = format!("default={}", sock.display());
    let other = format!("other={}", sock.display());
    env.build_plain("ssh:1", &ctx, &["--ssh", &default, "--ssh", &other]);
    assert_eq!(
        env.run_sh("ssh:1", "cat /out"),
        "/run/buildkit/ssh_agent.0\nother\n"
    );
    let req = env.context(
        "ssh-req",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN --mount=type=ssh,required=true true\n",
        )],
    );
    let err = env.fails(&["build", "--progress", "plain", req.to_str().unwrap()]);
    assert!(err.contains("--ssh default"), "{err}");
}

// See: #19. With `secret.env` in .dockerignore, `RUN --mount=type=bind,target=/m cat /m/secret.env` printed
// it while `COPY secret.env` failed. BuildKit leaves ignored files out of the context, so out of a bind of
// it too; `!` exceptions stay visible.
#[test]
fn r19_dockerignore_applies_to_context_bind_mounts() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "bindignore",
        &[
            ("secret.env", "TOKEN=leaked\n"),
            ("app/main.sh", "echo main\n"),
            ("app/secret.env", "TOKEN=nested\n"),
            ("docs/keep.md", "kept\n"),
            ("docs/drop.md", "dropped\n"),
            (".dockerignore", "secret.env\n**/secret.env\ndocs\n!docs/keep.md\n"),
            (
                "Dockerfile",
                "FROM busybox:local\n\
                 RUN --mount=type=bind,target=/m (cd /m && find . | sort | grep -v '^.$') > /all\n\
                 RUN --mount=type=bind,source=app,target=/a ls /a > /app\n\
                 RUN --mount=type=bind,target=/m,rw rm -f /m/docs/keep.md && ls /m/docs | wc -l > /rw\n",
            ),
        ],
    );
    env.build_plain("bindignore:1", &ctx, &[]);
    assert_eq!(
        env.run_sh("bindignore:1", "cat /all; echo --; cat /app; cat /rw"),
        "./.dockerignore\n./Dockerfile\n./app\n./app/main.sh\n./docs\n./docs/keep.md\n--\nmain.sh\n0\n"
    );
    // Nothing in the context was touched.
    assert!(ctx.join("docs/keep.md").exists() && ctx.join("secret.env").exists());

    // A bind of an ignored path fails as a missing one does, naming it.
    let ctx = env.context(
        "bindignore2",
        &[
            ("secret.env", "TOKEN=leaked\n"),
            (".dockerignore", "secret.env\n"),
            (
                "Dockerfile",
                "FROM busybox:local\nRUN --mount=type=bind,source=secret.env,target=/s cat /s\n",
            ),
        ],
    );
    let err = env.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(!err.contains("TOKEN=leaked"), "{err}");
    assert!(
        err.contains("secret.env is excluded by .dockerignore"),
        "{err}"
    );
}

// See: #19. `RUN --mount=type=cache,source=` was ignored without `from`. BuildKit mounts that subpath of
// the cache (dockerfile2llb: llb.SourcePath on the cache mount); with `from` the cache is seeded from that
// subpath of `from`. `..` is refused, and a symlink left in the cache by an earlier step is not followed.
#[test]
fn r19_cache_mount_source_is_a_subpath_and_dotdot_is_refused() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "cachesrc",
        &[(
            "Dockerfile",
            "FROM busybox:local AS seed\n\
             RUN mkdir -p /data/sub && echo seeded > /data/sub/s\n\
             FROM busybox:local\n\
             RUN --mount=type=cache,id=c,target=/c echo top > /c/top && mkdir -p /c/sub && echo inner > /c/sub/f\n\
             RUN --mount=type=cache,id=c,target=/s,source=sub cat /s/f > /got && ls /s >> /got\n\
             RUN --mount=type=cache,id=c,target=/n,source=new/dir touch /n/made && ls /n >> /got\n\
             RUN --mount=type=cache,id=c,target=/c ls /c/new/dir >> /got\n\
             RUN --mount=type=cache,id=seeded,from=seed,source=/data/sub,target=/m cat /m/s >> /got\n",
        )],
    );
    env.build_plain("cachesrc:1", &ctx, &[]);
    assert_eq!(
        env.run_sh("cachesrc:1", "cat /got"),
        "inner\nf\nmade\nmade\nseeded\n"
    );

    let ctx = env.context(
        "cachedotdot",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN --mount=type=cache,id=c,target=/x,source=../../etc cat /x/passwd\n",
        )],
    );
    let err = env.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(err.contains("`..` component"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(!err.contains("root:x:0:0"), "{err}");

    let ctx = env.context(
        "cachesymlink",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN --mount=type=cache,id=c,target=/c ln -s /etc /c/evil\n\
             RUN --mount=type=cache,id=c,target=/e,source=evil cat /e/passwd\n",
        )],
    );
    let err = env.fails(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
    assert!(
        err.contains("evil in the cache is not a directory"),
        "{err}"
    );
    assert!(!err.contains("root:x:0:0"), "{err}");
}
