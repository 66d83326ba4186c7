//! buildx's build flags that shape every RUN step, each seen from inside a RUN: `--add-host`,
//! `--shm-size`, `--ulimit`, `--secret id=X` from the environment. Behaviour follows
//! `docker buildx build` (buildx v0.17 `build/build.go`; BuildKit's `ExtraHosts`, `ShmSize`, `Ulimit`).

use crate::common::Env;

#[test]
fn add_host_shm_size_and_ulimit_apply_to_every_run() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "run-flags",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             RUN grep db.internal /etc/hosts > /hosts && grep v6.internal /etc/hosts >> /hosts\n\
             RUN df -k /dev/shm | tail -1 | awk '{print $2}' > /shm\n\
             RUN echo $(ulimit -Sn) $(ulimit -Hn) > /nofile\n",
        )],
    );
    env.build_plain(
        "flags:1",
        &ctx,
        &[
            "--add-host",
            "db.internal:10.1.2.3",
            "--add-host",
            "v6.internal=::1",
            "--shm-size",
            "128m",
            "--ulimit",
            "nofile=512:1024",
        ],
    );
    assert_eq!(
        env.run_sh("flags:1", "cat /hosts"),
        "10.1.2.3\tdb.internal\n::1\tv6.internal\n"
    );
    assert_eq!(env.run_sh("flags:1", "cat /shm"), "131072\n");
    assert_eq!(env.run_sh("flags:1", "cat /nofile"), "512 1024\n");
}

#[test]
fn ulimit_above_the_hard_limit_fails_clearly() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "ulimit-raise",
        &[("Dockerfile", "FROM busybox:local\nRUN ulimit -Hn\n")],
    );
    // Above the kernel's maximum of open files: no process may raise its hard limit there.
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let limit = format!("nofile={0}:{0}", nr_open + 1);
    let e = env.fails(&["build", "--ulimit", &limit, ctx.to_str().unwrap()]);
    assert!(
        e.contains("ulimit nofile: cannot raise the hard limit"),
        "{e}"
    );
    let e = env.fails(&["build", "--ulimit", "nofiles=1", ctx.to_str().unwrap()]);
    assert!(e.contains("invalid ulimit type \"nofiles\""), "{e}");
    let e = env.fails(&["build", "--add-host", "db", ctx.to_str().unwrap()]);
    assert!(e.contains("expected HOST:IP"), "{e}");
}

#[test]
fn secret_by_id_alone_reads_the_environment_variable_of_that_name() {
    let env = Env::new();
    env.busybox();
    let ctx = env.context(
        "secret-env",
        &[(
            "Dockerfile",
            "FROM busybox:local\n\
             # The value is compared base64-encoded: the Dockerfile's text is in the history.\n\
             RUN --mount=type=secret,id=API_TOKEN,env=TOKEN test \"$TOKEN\" = \"$(echo czNjcjN0LWJ5LWVudg== | base64 -d)\" && echo ok > /ok\n\
             RUN --mount=type=secret,id=other cat /run/secrets/other > /dev/null && echo ok2 >> /ok\n",
        )],
    );
    let out = std::process::Command::new(crate::common::RBUILD)
        .arg("--root")
        .arg(env.root())
        .args([
            "build",
            "-t",
            "sec:1",
            "--secret",
            "id=API_TOKEN",
            "--secret",
            "id=other,env=OTHER_VAR",
        ])
        .arg(&ctx)
        .env("API_TOKEN", "s3cr3t-by-env")
        .env("OTHER_VAR", "other-value")
        .output()
        .unwrap();
    crate::common::expect_success(&out, &["build", "--secret", "id=API_TOKEN"]);
    assert_eq!(env.run_sh("sec:1", "cat /ok"), "ok\nok2\n");
    crate::common::assert_not_in_store(&env.root(), "s3cr3t-by-env");
}
