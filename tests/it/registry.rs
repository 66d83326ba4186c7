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
    // A RUN for another architecture runs emulated, or fails before any step without a binfmt_misc
    // handler: tests/it/multiplatform.rs.
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
    make_certs_for(dir, name, "serverAuth");
}

/// [`make_certs`] with this extended key usage (`serverAuth`, `clientAuth`).
fn make_certs_for(dir: &Path, name: &str, usage: &str) {
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
        format!(
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
        ),
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

/// Base64 (standard alphabet with padding, or URL-safe without), for the token service below.
fn base64(bytes: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(table[(n >> (18 - 6 * i) & 63) as usize]));
        }
        if !url {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A token service as the distribution spec's token authentication describes it: Basic credentials in,
/// an RS256 JWT out (signed with `openssl` under a test certificate passed in its `x5c` header), with the
/// requested scopes as its `access` claim. The registry, in `auth: token` mode, validates every token
/// itself against that certificate.
struct TokenService {
    addr: String,
    cert: std::path::PathBuf,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
}

const ISSUER: &str = "rbuild-test-issuer";
const SERVICE: &str = "rbuild-test-registry";

impl TokenService {
    fn start(user: &'static str, password: &'static str) -> Self {
        require("/usr/bin/openssl", "openssl");
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        sh(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ISSUER}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]));
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in", cert.to_str().unwrap()])
            .output()
            .unwrap()
            .stdout;
        let x5c = base64(&der, false);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&issued);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve_token(stream, user, password, &key, &x5c, &counter);
            }
        });
        TokenService {
            addr,
            cert,
            issued,
            _dir: dir,
        }
    }
}

fn serve_token(
    mut stream: std::net::TcpStream,
    user: &str,
    password: &str,
    key: &Path,
    x5c: &str,
    issued: &std::sync::atomic::AtomicUsize,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = v.trim().to_owned();
            }
        }
    }
    let target = request.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut scopes = Vec::new();
    let mut service = String::new();
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("scope", v)) => scopes.push(percent_decode(v)),
            Some(("service", v)) => service = percent_decode(v),
            _ => {}
        }
    }
    let expected = format!(
        "Basic {}",
        base64(format!("{user}:{password}").as_bytes(), false)
    );
    let reply = |stream: &mut std::net::TcpStream, status: &str, body: &str| {
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if authorization != expected || service != SERVICE {
        return reply(
            &mut stream,
            "401 Unauthorized",
            r#"{"details":"wrong credentials"}"#,
        );
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let n = issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 600, "nbf": now - 60, "iat": now,
        "jti": format!("token-{n}"), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64(header.to_string().as_bytes(), true),
        base64(claims.to_string().as_bytes(), true)
    );
    let mut openssl = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", key.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let signature = openssl.wait_with_output()?.stdout;
    let jwt = format!("{signing_input}.{}", base64(&signature, true));
    let body =
        serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 600}).to_string();
    reply(&mut stream, "200 OK", &body)
}

#[test]
fn token_auth_validated_by_the_registry_itself() {
    let tokens = TokenService::start("ci", "t0ken-pass");
    let realm = format!("http://{}/token", tokens.addr);
    let reg = Registry::start_token(&realm, SERVICE, ISSUER, &tokens.cert);
    let env = Env::new();
    env.busybox();
    let cfg = tempfile::tempdir().unwrap();
    let ctx = env.context(
        "app",
        &[(
            "Dockerfile",
            "FROM busybox:local\nRUN echo through-jwt > /greeting\n",
        )],
    );
    let image = format!("{}/team/app:1", reg.addr);
    let push = ["build", "-t", &image, "--push", ctx.to_str().unwrap()];

    // No credentials: the token service refuses, and so the push fails naming the registry.
    let se = failed(
        &rbuild_auth(&env, cfg.path(), &push, ""),
        "push before login",
    );
    assert!(se.contains(&reg.addr), "{se}");

    // A wrong password: refused by the token service, nothing saved.
    let out = rbuild_auth(
        &env,
        cfg.path(),
        &["login", &reg.addr, "-u", "ci", "--password-stdin"],
        "nope\n",
    );
    let se = failed(&out, "login with a wrong password");
    assert!(se.contains("wrong username or password"), "{se}");

    let out = rbuild_auth(
        &env,
        cfg.path(),
        &["login", &reg.addr, "-u", "ci", "--password-stdin"],
        "t0ken-pass\n",
    );
    ok(&out, "login");
    let (so, _) = ok(
        &rbuild_auth(&env, cfg.path(), &push, ""),
        "push with a token",
    );
    let digest = pushed_digest(&so);
    let before = tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert!(before > 0, "no token was issued");
    // The registry checked the tokens: it logged authorized requests for the repository.
    assert!(
        reg.requests("PUT", "/v2/team/app/manifests/1") >= 1,
        "{}",
        reg.log()
    );

    // A fresh store pulls with its own token; the image runs.
    let fresh = Env::new();
    let (so, se) = ok(
        &rbuild_auth(&fresh, cfg.path(), &["pull", &image], ""),
        "pull",
    );
    assert_eq!(pushed_digest(&so), digest, "{se}");
    assert_eq!(fresh.run_sh(&image, "cat /greeting"), "through-jwt\n");
    assert!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst) > before);
}

#[test]
fn client_certificate_from_certs_d_reaches_a_registry_that_requires_one() {
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path(), "server");
    make_certs_for(certs.path(), "client", "clientAuth");
    let reg = Registry::start_tls_client_auth(
        &certs.path().join("server.crt"),
        &certs.path().join("server.key"),
        &certs.path().join("client-ca.crt"),
    );
    let env = Env::new();
    let ctx = env.context(
        "mtls",
        &[
            ("Dockerfile", "FROM scratch\nCOPY f /f\n"),
            ("f", "mutual tls"),
        ],
    );
    let image = format!("{}/mtls/app:1", reg.addr);
    let certs_d = certs.path().join("certs.d");
    let host = certs_d.join(&reg.addr);
    std::fs::create_dir_all(&host).unwrap();
    std::fs::copy(certs.path().join("server-ca.crt"), host.join("ca.crt")).unwrap();
    let with_certs_d = [("RBUILD_CERTS_D", certs_d.to_str().unwrap())];
    let push = ["build", "-t", &image, "--push", ctx.to_str().unwrap()];

    // The CA alone: the registry refuses the handshake.
    let se = failed(
        &rbuild_env(&env, &push, &with_certs_d),
        "push without a client certificate",
    );
    assert!(se.contains(&reg.addr), "{se}");

    // client.cert + client.key beside it, as docker reads them: push and pull go through.
    std::fs::copy(certs.path().join("client.crt"), host.join("client.cert")).unwrap();
    std::fs::copy(certs.path().join("client.key"), host.join("client.key")).unwrap();
    let (so, _) = ok(
        &rbuild_env(&env, &push, &with_certs_d),
        "push with a client certificate",
    );
    let digest = pushed_digest(&so);
    let fresh = Env::new();
    let (so, se) = ok(
        &rbuild_env(&fresh, &["pull", &image], &with_certs_d),
        "pull with a client certificate",
    );
    assert_eq!(pushed_digest(&so), digest, "{se}");
}

#[test]
fn any_registry_has_mirrors_and_skip_tls_verify_reaches_a_self_signed_registry() {
    let reg = Registry::start();
    let env = Env::new();
    let ctx = env.context(
        "any-mirror",
        &[
            ("Dockerfile", "FROM scratch\nCOPY f /f\n"),
            ("f", "mirrored"),
        ],
    );
    let (so, _) = env.ok(&[
        "build",
        "-t",
        &format!("{}/team/app:1", reg.addr),
        "--push",
        ctx.to_str().unwrap(),
    ]);
    let digest = pushed_digest(&so);
    // `REGISTRY=URL` (registries.conf's [[registry.mirror]]): the registry named in the reference is
    // down; the mirror serves the same repository.
    let down = format!("127.0.0.1:{}", free_port());
    let fresh = Env::new();
    let mapping = format!("{down}=http://{}", reg.addr);
    let (so, se) = fresh.ok(&[
        "pull",
        "--registry-mirror",
        &mapping,
        &format!("{down}/team/app:1"),
    ]);
    assert_eq!(pushed_digest(&so), digest, "{se}");

    // A registry with a certificate no trusted CA signed (a self-signed CI registry).
    let certs = tempfile::tempdir().expect("temp dir");
    make_certs(certs.path(), "selfsigned");
    let tls = Registry::start_tls(
        &certs.path().join("selfsigned.crt"),
        &certs.path().join("selfsigned.key"),
    );
    let image = format!("{}/ci/app:1", tls.addr);
    let no_certs_d = certs.path().join("none");
    let vars = [("RBUILD_CERTS_D", no_certs_d.to_str().unwrap())];
    let c = ctx.to_str().unwrap();
    // Over https (a CA is named for the host), with a CA that did not sign it: refused.
    make_certs(certs.path(), "other");
    let other_ca = format!(
        "{}={}",
        tls.addr,
        certs.path().join("other-ca.crt").display()
    );
    let out = rbuild_env(
        &env,
        &[
            "build",
            "-t",
            &image,
            "--push",
            "--registry-ca",
            &other_ca,
            c,
        ],
        &vars,
    );
    let se = failed(&out, "push to an unverifiable registry");
    assert!(se.to_lowercase().contains("certificate"), "{se}");
    // Kaniko's --skip-tls-verify-registry HOST: https without verifying the certificate.
    let out = rbuild_env(
        &env,
        &[
            "build",
            "-t",
            &image,
            "--push",
            "--registry-ca",
            &other_ca,
            "--skip-tls-verify-registry",
            &tls.addr,
            c,
        ],
        &vars,
    );
    let (so, _) = ok(&out, "push with --skip-tls-verify-registry");
    let pushed = pushed_digest(&so);
    let fresh = Env::new();
    let out = rbuild_env(
        &fresh,
        &[
            "pull",
            "--skip-tls-verify-registry",
            &tls.addr,
            "--retry",
            "5",
            &image,
        ],
        &vars,
    );
    let (so, _) = ok(&out, "pull with --skip-tls-verify-registry");
    assert_eq!(pushed_digest(&so), pushed);
}

/// The registry test suite's fault proxy (registry/tests/common/proxy.rs), in front of the real
/// registry here too: canned 5xx answers for the first requests, the rest relayed.
#[allow(dead_code, unreachable_pub)]
#[path = "../../registry/tests/common/proxy.rs"]
mod fault_proxy;

/// `--retry N` (buildx/kaniko's count of retries of a failed registry request) decides how many
/// 503s in a row a pull survives: with 2 failing manifest GETs, `--retry 1` gives up after 2
/// attempts and `--retry 2` gets the image on the third. The count is retries after the first
/// attempt, as rbuild's registry client counts its default of 3 (registry/src/retry.rs); no BuildKit
/// behaviour to follow (buildx has no such flag; the registry resolver's retries are fixed).
#[test]
fn retry_count_decides_how_many_registry_failures_a_pull_survives() {
    let reg = Registry::start();
    let env = Env::new();
    let ctx = env.context(
        "retried",
        &[
            ("Dockerfile", "FROM scratch\nCOPY f /f\n"),
            ("f", "retried"),
        ],
    );
    let image = format!("{}/retried:1", reg.addr);
    let (so, _) = env.ok(&["build", "-t", &image, "--push", ctx.to_str().unwrap()]);
    let digest = pushed_digest(&so);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let proxy = rt.block_on(fault_proxy::Proxy::start(&reg.addr, None));
    let through = format!("{}/retried:1", proxy.addr);
    let fail_twice = || {
        proxy.inject(fault_proxy::Fault {
            method: "GET",
            path_contains: "/manifests/",
            status: 503,
            times: 2,
        });
    };
    fail_twice();
    let fresh = Env::new();
    let se = fresh.fails(&["pull", "--retry", "1", &through]);
    assert!(se.contains("503"), "{se}");
    assert_eq!(proxy.count("GET", "/v2/retried/manifests/"), 2, "{se}");
    fail_twice();
    let (so, se) = fresh.ok(&["pull", "--retry", "2", &through]);
    assert_eq!(pushed_digest(&so), digest, "{se}");
    // 2 earlier + 2 failed + 1 answered (HEAD requests, if any, are not counted).
    assert_eq!(proxy.count("GET", "/v2/retried/manifests/"), 5, "{se}");
}
