use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::{require, sh, Env, Registry, RBUILD};

/// `rbuild ARGS…` on `env`'s store with credentials only from `docker_config` (a temp dir), `stdin` fed.
fn rbuild_auth(env: &Env, docker_config: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(RBUILD)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .env("NO_COLOR", "1")
        .env("DOCKER_CONFIG", docker_config)
        .env("REGISTRY_AUTH_FILE", docker_config.join("no-auth.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running rbuild");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("writing stdin");
    child.wait_with_output().expect("waiting for rbuild")
}

fn ok(out: &Output, what: &str) -> (String, String) {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{what} failed\nstdout:\n{so}\nstderr:\n{se}"
    );
    (so, se)
}

fn failed(out: &Output, what: &str) -> String {
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what} unexpectedly succeeded: {se}");
    assert!(!se.contains("panicked"), "{what} panicked: {se}");
    se
}

/// The `name@sha256:…` line rbuild prints on stdout after a push or pull.
fn pushed_digest(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.split_once('@').map(|(_, d)| d.to_owned()))
        .unwrap_or_else(|| panic!("no name@digest line in {stdout:?}"))
}

#[test]
fn login_push_pull_logout_through_basic_auth() {
    let reg = Registry::start_htpasswd("alice", "s3cret");
    let env = Env::new();
    env.busybox();
    let cfg = tempfile::tempdir().expect("temp dir");
    let config_json = cfg.path().join("config.json");

    // Without credentials a push is refused, naming the registry.
    let ctx = env.context(
        "app",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo through-auth > /greeting\n",
        )],
    );
    let image = format!("{}/auth/app:1", reg.addr);
    let out = rbuild_auth(
        &env,
        cfg.path(),
        &["build", "-t", &image, "--push", ctx.to_str().unwrap()],
        "",
    );
    let se = failed(&out, "push before login");
    assert!(
        se.contains(&format!("registry {} requires authentication", reg.addr)),
        "{se}"
    );

    // A wrong password is refused clearly and nothing is written.
    let out = rbuild_auth(
        &env,
        cfg.path(),
        &["login", &reg.addr, "-u", "alice", "--password-stdin"],
        "wrong\n",
    );
    let se = failed(&out, "login with a wrong password");
    assert!(se.contains("wrong username or password"), "{se}");
    assert!(se.contains(&reg.addr), "{se}");
    assert!(
        !config_json.exists(),
        "a failed login wrote {config_json:?}"
    );

    // The right one is saved in config.json as docker writes it.
    let out = rbuild_auth(
        &env,
        cfg.path(),
        &["login", &reg.addr, "-u", "alice", "--password-stdin"],
        "s3cret\n",
    );
    let (_, se) = ok(&out, "login");
    assert!(se.contains("Login Succeeded"), "{se}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_json).expect("config.json written"))
            .expect("config.json is JSON");
    // base64("alice:s3cret")
    assert_eq!(saved["auths"][&reg.addr]["auth"], "YWxpY2U6czNjcmV0");

    // build --push goes through the auth.
    let out = rbuild_auth(
        &env,
        cfg.path(),
        &["build", "-t", &image, "--push", ctx.to_str().unwrap()],
        "",
    );
    let (so, _) = ok(&out, "build --push after login");
    let digest = pushed_digest(&so);

    // Pull into a fresh store: the digest is the pushed one, the layers are unpacked and the image runs.
    let fresh = Env::new();
    let out = rbuild_auth(&fresh, cfg.path(), &["pull", &image], "");
    let (so, se) = ok(&out, "pull into a fresh store");
    assert_eq!(pushed_digest(&so), digest, "{se}");
    assert!(se.contains("pull complete"), "{se}");
    assert!(!se.contains("already exists"), "{se}");
    let (so, _) = fresh.ok(&["run", &image, "cat", "/greeting"]);
    assert_eq!(so.trim(), "through-auth");

    // A second pull fetches no layer and says so.
    let out = rbuild_auth(&fresh, cfg.path(), &["pull", &image], "");
    let (so, se) = ok(&out, "second pull");
    assert_eq!(pushed_digest(&so), digest);
    assert!(se.contains("already exists"), "{se}");
    assert!(!se.contains("pull complete"), "{se}");
    assert!(se.contains("Image is up to date"), "{se}");

    // Logout removes the entry; the next push is refused again, naming the registry.
    let out = rbuild_auth(&env, cfg.path(), &["logout", &reg.addr], "");
    let (_, se) = ok(&out, "logout");
    assert!(se.contains(&reg.addr), "{se}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_json).expect("config.json kept"))
            .expect("config.json is JSON");
    assert!(saved["auths"].get(&reg.addr).is_none(), "{saved}");
    let out = rbuild_auth(&env, cfg.path(), &["push", &image], "");
    let se = failed(&out, "push after logout");
    assert!(
        se.contains(&format!("registry {} requires authentication", reg.addr)),
        "{se}"
    );
}

#[test]
fn logout_without_registry_removes_the_docker_hub_key() {
    // Docker Hub is unreachable here, so this checks logout (no network needed) against the key docker
    // writes for it, keeping every other entry and key.
    let env = Env::new();
    let cfg = tempfile::tempdir().expect("temp dir");
    let config_json = cfg.path().join("config.json");
    std::fs::write(
        &config_json,
        r#"{"auths":{"https://index.docker.io/v1/":{"auth":"eDp5"},"other.example:5000":{"auth":"eDp5"}},"psFormat":"keep"}"#,
    )
    .unwrap();
    let out = rbuild_auth(&env, cfg.path(), &["logout"], "");
    let (_, se) = ok(&out, "logout from Docker Hub");
    assert!(se.contains("docker.io"), "{se}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_json).unwrap()).unwrap();
    assert!(saved["auths"].get("https://index.docker.io/v1/").is_none());
    assert!(saved["auths"].get("other.example:5000").is_some());
    assert_eq!(saved["psFormat"], "keep");
}

/// Builds a one-file image for `platform` and pushes it as `repo:tag`; returns the manifest digest.
fn push_platform_image(env: &Env, repo: &str, platform: &str, tag: &str) -> String {
    let ctx = env.context(
        &format!("ctx-{tag}"),
        &[
            ("Dockerfile", "FROM scratch\nCOPY arch /arch\n"),
            ("arch", tag),
        ],
    );
    let image = format!("{repo}:{tag}");
    let (so, _) = env.ok(&[
        "build",
        "--platform",
        platform,
        "-t",
        &image,
        "--push",
        ctx.to_str().unwrap(),
    ]);
    pushed_digest(&so)
}

fn manifest_size(reg: &Registry, repo_path: &str, tag: &str) -> usize {
    sh(Command::new("curl").args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{}/v2/{repo_path}/manifests/{tag}", reg.addr),
    ]))
    .len()
}

fn inspect(env: &Env, image: &str) -> serde_json::Value {
    let (so, _) = env.ok(&["inspect", image]);
    serde_json::from_str(&so).expect("inspect prints JSON")
}

#[test]
fn pull_and_build_select_the_platform_of_a_multi_platform_index() {
    let reg = Registry::start();
    let env = Env::new();
    let repo = format!("{}/multi", reg.addr);
    let amd = push_platform_image(&env, &repo, "linux/amd64", "amd64");
    let arm = push_platform_image(&env, &repo, "linux/arm64", "arm64");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd,
             "size": manifest_size(&reg, "multi", "amd64"),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm,
             "size": manifest_size(&reg, "multi", "arm64"),
             "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    });
    sh(Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &index.to_string(),
        &format!("http://{}/v2/multi/manifests/latest", reg.addr),
    ]));

    for (platform, digest, arch) in [
        ("linux/arm64", &arm, "arm64"),
        ("linux/amd64", &amd, "amd64"),
    ] {
        let fresh = Env::new();
        let (so, se) = fresh.ok(&["pull", "--platform", platform, &repo]);
        assert_eq!(&pushed_digest(&so), digest, "{platform}: {se}");
        let v = inspect(&fresh, &repo);
        assert_eq!(v["Config"]["architecture"], arch);
        assert_eq!(v["Descriptor"]["digest"], digest.as_str());
    }

    let fresh = Env::new();
    let se = fresh.fails(&["pull", "--platform", "linux/s390x", &repo]);
    assert!(se.contains("no manifest for platform linux/s390x"), "{se}");
    assert!(
        se.contains("linux/amd64") && se.contains("linux/arm64"),
        "{se}"
    );
    let se = fresh.fails(&["pull", "--platform", "linux", &repo]);
    assert!(se.contains("OS/ARCH"), "{se}");

    // build --platform resolves FROM through the index and writes that platform into the config.
    let ctx = fresh.context(
        "from-multi",
        &[
            ("Dockerfile", &format!("FROM {repo}\nCOPY extra /extra\n")),
            ("extra", "x"),
        ],
    );
    fresh.ok(&[
        "build",
        "--platform",
        "linux/arm64",
        "-t",
        "from-multi:arm",
        ctx.to_str().unwrap(),
    ]);
    let v = inspect(&fresh, "from-multi:arm");
    assert_eq!(v["Config"]["architecture"], "arm64");
    assert_eq!(v["Config"]["os"], "linux");
    let arm_layer = &inspect(&env, &format!("{repo}:arm64"))["Manifest"]["layers"][0]["digest"];
    assert_eq!(&v["Manifest"]["layers"][0]["digest"], arm_layer);

    // A RUN for a platform the host can't execute fails clearly instead of running the wrong binary.
    let ctx = fresh.context(
        "run-arm",
        &[("Dockerfile", &format!("FROM {repo}\nRUN /bin/true\n"))],
    );
    let other = if cfg!(target_arch = "aarch64") {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    let se = fresh.fails(&["build", "--platform", other, ctx.to_str().unwrap()]);
    assert!(se.contains(&format!("platform {other}")), "{se}");
    assert!(se.contains("emulation is not supported"), "{se}");
    assert!(se.contains("RUN /bin/true"), "{se}");
}

/// `rbuild ARGS…` on `env`'s store with extra environment variables.
fn rbuild_env(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(RBUILD)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .env("NO_COLOR", "1")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running rbuild")
}

/// A CA (`<name>-ca.crt`) and a server certificate for 127.0.0.1 it signed (`<name>.crt`, `<name>.key`).
fn make_certs(dir: &Path, name: &str) {
    require("/usr/bin/openssl", "openssl");
    let p = |f: &str| dir.join(f).to_str().expect("utf-8 path").to_owned();
    let (ca_key, ca, key, csr, crt, ext) = (
        p(&format!("{name}-ca.key")),
        p(&format!("{name}-ca.crt")),
        p(&format!("{name}.key")),
        p(&format!("{name}.csr")),
        p(&format!("{name}.crt")),
        p(&format!("{name}.ext")),
    );
    sh(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=rbuild test CA {name}"),
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]));
    sh(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext file");
    sh(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &crt,
    ]));
}

#[test]
fn private_ca_from_flag_or_certs_d_reaches_a_tls_registry() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path(), "server");
    make_certs(certs.path(), "stranger");
    let reg = Registry::start_tls(
        &certs.path().join("server.crt"),
        &certs.path().join("server.key"),
    );
    let env = Env::new();
    let ctx = env.context(
        "tls",
        &[
            ("Dockerfile", "FROM scratch\nCOPY f /f\n"),
            ("f", "over tls"),
        ],
    );
    let image = format!("{}/tls/app:1", reg.addr);
    let ca = certs.path().join("server-ca.crt");
    let empty_certs_d = certs.path().join("no-certs.d");

    // A CA that did not sign the registry's certificate is refused.
    let stranger = format!(
        "{}={}",
        reg.addr,
        certs.path().join("stranger-ca.crt").display()
    );
    let out = rbuild_env(
        &env,
        &[
            "build",
            "-t",
            &image,
            "--push",
            "--registry-ca",
            &stranger,
            ctx.to_str().unwrap(),
        ],
        &[("RBUILD_CERTS_D", empty_certs_d.to_str().unwrap())],
    );
    let se = failed(&out, "push with the wrong CA");
    assert!(se.contains(&reg.addr), "{se}");
    assert!(se.to_lowercase().contains("certificate"), "{se}");

    // --registry-ca HOST=FILE: the push goes over https.
    let flag = format!("{}={}", reg.addr, ca.display());
    let out = rbuild_env(
        &env,
        &[
            "build",
            "-t",
            &image,
            "--push",
            "--registry-ca",
            &flag,
            ctx.to_str().unwrap(),
        ],
        &[("RBUILD_CERTS_D", empty_certs_d.to_str().unwrap())],
    );
    let (so, _) = ok(&out, "push with --registry-ca");
    let digest = pushed_digest(&so);

    // certs.d/HOST/ca.crt, as docker reads it.
    let certs_d = certs.path().join("certs.d");
    std::fs::create_dir_all(certs_d.join(&reg.addr)).unwrap();
    std::fs::copy(&ca, certs_d.join(&reg.addr).join("ca.crt")).unwrap();
    let fresh = Env::new();
    let out = rbuild_env(
        &fresh,
        &["pull", &image],
        &[("RBUILD_CERTS_D", certs_d.to_str().unwrap())],
    );
    let (so, se) = ok(&out, "pull with certs.d");
    assert_eq!(pushed_digest(&so), digest, "{se}");
    let out = rbuild_env(&fresh, &["inspect", &image], &[]);
    ok(&out, "inspect the pulled image");
}

#[test]
fn docker_hub_pulls_go_through_a_mirror() {
    let reg = Registry::start();
    let env = Env::new();
    let ctx = env.context(
        "mirrored",
        &[
            ("Dockerfile", "FROM scratch\nCOPY f /f\n"),
            ("f", "from the mirror"),
        ],
    );
    let (so, _) = env.ok(&[
        "build",
        "-t",
        &format!("{}/library/mirrored:1", reg.addr),
        "--push",
        ctx.to_str().unwrap(),
    ]);
    let digest = pushed_digest(&so);
    let mirror = format!("http://{}", reg.addr);

    // Docker Hub is unreachable here: success proves the mirror served the image.
    let fresh = Env::new();
    let (so, se) = fresh.ok(&["pull", "--registry-mirror", &mirror, "mirrored:1"]);
    assert_eq!(pushed_digest(&so), digest, "{se}");
    assert!(so.contains("docker.io/library/mirrored@"), "{so}");
    let (so, _) = fresh.ok(&["images"]);
    assert!(so.contains("mirrored:1"), "{so}");

    // RBUILD_REGISTRY_MIRRORS for FROM in a build, with a dead mirror first to fall back from.
    let fresh = Env::new();
    let ctx = fresh.context(
        "from-hub",
        &[
            (
                "Dockerfile",
                "FROM docker.io/library/mirrored:1\nCOPY g /g\n",
            ),
            ("g", "g"),
        ],
    );
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mirrors = format!("{dead},{mirror}");
    let out = rbuild_env(
        &fresh,
        &["build", "-t", "on-mirrored", ctx.to_str().unwrap()],
        &[("RBUILD_REGISTRY_MIRRORS", &mirrors)],
    );
    ok(
        &out,
        "build FROM a Docker Hub name through RBUILD_REGISTRY_MIRRORS",
    );
    let (so, _) = fresh.ok(&["inspect", "on-mirrored"]);
    let v: serde_json::Value = serde_json::from_str(&so).unwrap();
    assert_eq!(v["Manifest"]["layers"].as_array().map(Vec::len), Some(2));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn an_unchanged_push_uploads_nothing_and_a_shared_layer_is_mounted_across_repositories() {
    let env = Env::new();
    env.busybox();
    let reg = Registry::start();
    let first = format!("{}/team/app:1", reg.addr);
    let ctx = env.context(
        "pushtwice",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo payload > /payload\n",
        )],
    );
    // SOURCE_DATE_EPOCH: the second build below gives the very same image (same config timestamps).
    let epoch = ["--build-arg", "SOURCE_DATE_EPOCH=0"];
    env.ok(&[
        &["build", "-t", &first, "--push", ctx.to_str().unwrap()][..],
        &epoch[..],
    ]
    .concat());
    let uploads = |reg: &Registry| reg.requests("POST", "/blobs/uploads/");
    let after_first = uploads(&reg);
    assert!(after_first >= 2, "the first push uploads:\n{}", reg.log());

    // Pushing the same image again: every blob is found with HEAD, nothing is uploaded.
    env.ok(&["push", &first]);
    assert_eq!(uploads(&reg), after_first, "{}", reg.log());
    assert!(reg.requests("HEAD", "/blobs/sha256:") >= 2, "{}", reg.log());

    // The same image under another repository of the registry: blobs are mounted, not sent again.
    let second = format!("{}/other/app:1", reg.addr);
    env.ok(&[
        &["build", "-t", &second, ctx.to_str().unwrap()][..],
        &epoch[..],
    ]
    .concat());
    let puts_before = reg.requests("PUT", "/blobs/uploads/");
    env.ok(&["push", &second]);
    let log = reg.log();
    assert!(
        log.lines()
            .any(|l| l.contains("http.request.method=POST ") && l.contains("mount=sha256")),
        "cross-repository mount asked for:\n{log}"
    );
    assert_eq!(
        reg.requests("PUT", "/blobs/uploads/"),
        puts_before,
        "no blob data sent for a mounted blob:\n{log}"
    );
}
