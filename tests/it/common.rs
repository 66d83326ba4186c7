use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const RBUILD: &str = env!("CARGO_BIN_EXE_rbuild");

/// Fails (never skips) when a tool the tests need is missing, naming the package to install.
pub(crate) fn require(bin: &str, package: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: install it with `apt-get install {package}` (or run scripts/test.sh)"
    );
}

/// A temporary store plus a scratch dir for contexts.
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
}

impl Env {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `rbuild --root <store> ARGS…` (plain progress), with its output.
    pub(crate) fn rbuild(&self, args: &[&str]) -> Output {
        Command::new(RBUILD)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("running rbuild")
    }

    /// Like [`Env::rbuild`], asserting success; returns (stdout, stderr).
    pub(crate) fn ok(&self, args: &[&str]) -> (String, String) {
        expect_success(&self.rbuild(args), args)
    }

    /// Like [`Env::rbuild`], asserting failure; returns stderr.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let out = self.rbuild(args);
        let se = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "rbuild {args:?} unexpectedly succeeded\nstderr:\n{se}"
        );
        assert_ne!(
            out.status.code(),
            None,
            "rbuild was killed by a signal: {se}"
        );
        assert!(!se.contains("panicked"), "rbuild panicked: {se}");
        se
    }

    /// `rbuild build --progress plain -t TAG [EXTRA…] CTX`, asserting success; returns (stdout, stderr).
    pub(crate) fn build_plain(&self, tag: &str, ctx: &Path, extra: &[&str]) -> (String, String) {
        let mut args = vec!["build", "--progress", "plain", "-t", tag];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().expect("utf-8 path"));
        self.ok(&args)
    }

    /// `rbuild run IMAGE sh -c SCRIPT`, asserting success; returns stdout.
    pub(crate) fn run_sh(&self, image: &str, script: &str) -> String {
        self.ok(&["run", image, "sh", "-c", script]).0
    }

    /// A build context with these files.
    pub(crate) fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.dir.path().join(name);
        for (path, content) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().expect("file has a parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write context file");
        }
        std::fs::create_dir_all(&dir).expect("mkdir context");
        dir
    }

    /// Builds the busybox base image (`busybox:local`) from Debian's busybox-static with rbuild itself.
    pub(crate) fn busybox(&self) {
        require("/bin/busybox", "busybox-static");
        let ctx = self.dir.path().join("busybox");
        std::fs::create_dir_all(&ctx).expect("mkdir");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/busybox");
        for f in ["Dockerfile", "passwd", "group", "nsswitch.conf"] {
            std::fs::copy(src.join(f), ctx.join(f)).expect("copy busybox example");
        }
        std::fs::copy("/bin/busybox", ctx.join("busybox")).expect("copy /bin/busybox");
        self.ok(&[
            "build",
            "-t",
            "busybox:local",
            ctx.to_str().expect("utf-8 path"),
        ]);
    }
}

/// The CNCF distribution registry from Debian, on a free loopback port, storage in a temp dir.
pub(crate) struct Registry {
    child: Child,
    pub(crate) addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub(crate) fn start() -> Self {
        Self::start_with(None)
    }

    /// A registry with htpasswd (HTTP Basic) auth accepting only `user`/`password`.
    pub(crate) fn start_htpasswd(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    /// A registry serving https with this certificate and key (PEM files).
    pub(crate) fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::start_opts(
            None,
            Some(format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            )),
        )
    }

    /// [`Registry::start_tls`] that also demands a client certificate signed by `client_ca`.
    pub(crate) fn start_tls_client_auth(cert: &Path, key: &Path, client_ca: &Path) -> Self {
        Self::start_opts(
            None,
            Some(format!(
                "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
                cert.display(),
                key.display(),
                client_ca.display()
            )),
        )
    }

    fn start_with(basic: Option<(&str, &str)>) -> Self {
        Self::start_opts(basic, None)
    }

    /// A registry in `auth: token` mode: it sends clients to `realm` and validates the JWTs they bring
    /// itself, trusting tokens of `issuer` for `service` signed under the certificates in `bundle`.
    pub(crate) fn start_token(realm: &str, service: &str, issuer: &str, bundle: &Path) -> Self {
        let auth = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
            bundle.display()
        );
        Self::start_auth(|_| auth, None)
    }

    fn start_opts(basic: Option<(&str, &str)>, tls: Option<String>) -> Self {
        let auth = |dir: &Path| match basic {
            None => String::new(),
            Some((user, password)) => {
                require("/usr/bin/htpasswd", "apache2-utils");
                let file = dir.join("htpasswd");
                // bcrypt (-B): the only hash docker-registry accepts.
                let line = sh(Command::new("/usr/bin/htpasswd").args(["-Bbn", user, password]));
                std::fs::write(&file, line).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                    file.display()
                )
            }
        };
        Self::start_auth(auth, tls)
    }

    /// Starts the registry with the `auth:` section `auth` writes (given the registry's own directory).
    fn start_auth(auth: impl FnOnce(&Path) -> String, tls: Option<String>) -> Self {
        require("/usr/bin/docker-registry", "docker-registry");
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = auth(dir.path());
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{}{auth}",
                dir.path().join("data").display(),
                tls.as_deref().unwrap_or("")
            ),
        )
        .expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let reg = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        // Plain http to a TLS listener gets a 400 answer: enough to know it is up.
        let up = match (!auth.is_empty(), tls.is_some()) {
            (_, true) => 400,
            (true, false) => 401,
            (false, false) => 200,
        };
        while http_status(&reg.addr, "/v2/") != Some(up) {
            assert!(
                Instant::now() < deadline,
                "registry on {} did not come up",
                reg.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }
}

impl Registry {
    /// The registry's log so far: one `response completed` line per request, with its method and URI.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many requests so far had this method and a URI containing `uri_part`.
    pub(crate) fn requests(&self, method: &str, uri_part: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("response completed"))
            .filter(|l| l.contains(&format!("http.request.method={method} ")))
            .filter(|l| l.contains(uri_part))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill(); // already dead is fine
        let _ = self.child.wait();
    }
}

/// Status code of a plain HTTP GET, or None when nothing answers.
pub(crate) fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs a command, asserting success; returns stdout.
pub(crate) fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Per step of a `--progress plain` log: name → "CACHED" or "RAN".
pub(crate) fn steps(stderr: &str) -> std::collections::HashMap<String, &'static str> {
    let mut names: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut status = std::collections::HashMap::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((num, what)) = rest.split_once(' ') else {
            continue;
        };
        if what == "CACHED" {
            if let Some(n) = names.get(num) {
                status.insert(n.clone(), "CACHED");
            }
        } else if what.starts_with("cache miss") {
            if let Some(n) = names.get(num) {
                status.insert(n.clone(), "RAN");
            }
        } else if what.starts_with('[') && !names.contains_key(num) {
            names.insert(num.to_owned(), what.to_owned());
        }
    }
    status
}

/// The status ("CACHED" or "RAN") of the step of a `--progress plain` log whose name contains `needle`.
pub(crate) fn step_status(stderr: &str, needle: &str) -> &'static str {
    steps(stderr)
        .into_iter()
        .find(|(name, _)| name.contains(needle))
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no step {needle} in {stderr}"))
}

impl Env {
    /// The layer digests of a local image, from `rbuild inspect`.
    pub(crate) fn layers(&self, image: &str) -> Vec<String> {
        let (out, _) = self.ok(&["inspect", image]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
        v["Manifest"]["layers"]
            .as_array()
            .unwrap_or_else(|| panic!("no Manifest.layers in {out}"))
            .iter()
            .map(|l| {
                l["digest"]
                    .as_str()
                    .expect("a layer has a digest")
                    .to_owned()
            })
            .collect()
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            files_under(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that `secret` is in no file of the store at `root` (blobs, records, snapshots), gzip
/// layers decompressed.
pub(crate) fn assert_not_in_store(root: &Path, secret: &str) {
    let mut files = Vec::new();
    files_under(root, &mut files);
    assert!(files.len() > 10, "store looks empty: {files:?}");
    for f in files {
        let bytes = std::fs::read(&f).expect("read store file");
        assert!(
            !contains(&bytes, secret.as_bytes()),
            "secret found in {}",
            f.display()
        );
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::MultiGzDecoder::new(&bytes[..]),
                &mut plain,
            )
            .expect("decompress layer");
            assert!(
                !contains(&plain, secret.as_bytes()),
                "secret found in layer {}",
                f.display()
            );
        }
    }
}

/// `skopeo copy` of a pushed image into an OCI dir under `dir`, then `umoci unpack`; returns the
/// unpacked rootfs.
pub(crate) fn skopeo_umoci_unpack(dir: &Path, image: &str) -> PathBuf {
    require("/usr/bin/skopeo", "skopeo");
    require("/usr/bin/umoci", "umoci");
    let oci = dir.join("oci");
    sh(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}:app", oci.display()),
    ]));
    let bundle = dir.join("bundle");
    sh(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:app", oci.display()),
        bundle.to_str().expect("utf-8 path"),
    ]));
    bundle.join("rootfs")
}

/// Asserts that an rbuild run (`args`) succeeded, showing both streams if not; returns (stdout, stderr).
pub(crate) fn expect_success(out: &Output, args: &[&str]) -> (String, String) {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "rbuild {args:?} failed ({:?})\nstdout:\n{so}\nstderr:\n{se}",
        out.status
    );
    (so, se)
}
