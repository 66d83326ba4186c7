//! Test helpers: a real CNCF distribution registry on a free loopback port, and small image builders.
#![allow(dead_code, unreachable_pub)]

pub mod proxy;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use oci::{media_type, Descriptor, Digest, Manifest, Platform, Reference};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// A running `docker-registry serve`, killed on drop.
pub struct TestRegistry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// An anonymous registry.
    pub fn start() -> Self {
        Self::start_inner(None)
    }

    /// A registry with htpasswd (Basic) auth for one user.
    pub fn start_with_htpasswd(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user, password)))
    }

    fn start_inner(auth: Option<(&str, &str)>) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install it: apt-get install docker-registry"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: rbuild-test-secret\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd is missing: install it: apt-get install apache2-utils");
            assert!(
                out.status.success(),
                "htpasswd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let file = dir.path().join("htpasswd");
            fs_err::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs_err::write(&config_path, config).unwrap();
        let log = fs_err::File::create(dir.path().join("registry.log"))
            .unwrap()
            .into_parts()
            .0;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("failed to start docker-registry");
        let mut reg = Self { child, addr, dir };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited with {status}: {}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                use std::io::Write;
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let req = format!(
                    "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.addr
                );
                if s.write_all(req.as_bytes()).is_ok() {
                    let mut answer = String::new();
                    let _ = s.read_to_string(&mut answer); // a partial answer still shows the status line
                    if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 401") {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer GET /v2/: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The registry's own log, for failure messages.
    pub fn log(&self) -> String {
        fs_err::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A reference into this registry, e.g. `reference("app:1")`.
    pub fn reference(&self, name: &str) -> Reference {
        format!("{}/{name}", self.addr).parse().unwrap()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        // Killing a child we started; if it already died there is nothing to do.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Pseudo-random bytes, different on every call (xorshift seeded from time and a counter).
pub fn random_bytes(len: usize) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut x = COUNTER
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
        );
    x |= 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `bytes` to a file in `dir` and returns its path and descriptor.
pub fn blob_file(dir: &Path, media_type: &str, bytes: &[u8]) -> (PathBuf, Descriptor) {
    let digest = Digest::sha256_of(bytes);
    let path = dir.join(digest.hex());
    fs_err::write(&path, bytes).unwrap();
    (
        path,
        Descriptor::new(media_type, digest, bytes.len() as u64),
    )
}

/// An image pushed by [`push_image`].
pub struct PushedImage {
    pub config: Vec<u8>,
    pub config_desc: Descriptor,
    pub layer: Vec<u8>,
    pub layer_desc: Descriptor,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: Digest,
}

/// Pushes a config (for `platform`), one random layer and an OCI manifest under `r`.
pub async fn push_image(
    client: &registry::Client,
    r: &Reference,
    platform: &Platform,
    layer_size: usize,
) -> PushedImage {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {},
    }))
    .unwrap();
    let layer = random_bytes(layer_size);
    let (config_path, config_desc) = blob_file(dir.path(), media_type::OCI_CONFIG, &config);
    let (layer_path, layer_desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &layer);
    client
        .push_blob(r, &config_desc, &config_path)
        .await
        .unwrap();
    client.push_blob(r, &layer_desc, &layer_path).await.unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: config_desc.clone(),
        layers: vec![layer_desc.clone()],
        annotations: Default::default(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = client
        .put_manifest(r, media_type::OCI_MANIFEST, &manifest_bytes)
        .await
        .unwrap();
    PushedImage {
        config,
        config_desc,
        layer,
        layer_desc,
        manifest_bytes,
        manifest_digest,
    }
}

/// A client with credentials for `registry` from a temporary Docker config (the temp dir is returned to
/// keep it alive).
pub fn client_with_credentials(
    registry: &str,
    user: &str,
    password: &str,
) -> (registry::Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let auth = proxy::base64(format!("{user}:{password}").as_bytes());
    fs_err::write(
        &path,
        serde_json::json!({"auths": {registry: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let client = registry::Client::new(registry::ClientOptions {
        docker_config: Some(path),
        containers_auth: Some(PathBuf::from("/nonexistent/rbuild-test/auth.json")),
        ..Default::default()
    })
    .unwrap();
    (client, dir)
}

/// A client that reads no credentials from the environment.
pub fn anonymous_client() -> registry::Client {
    registry::Client::new(registry::ClientOptions {
        docker_config: Some(PathBuf::from("/nonexistent/rbuild-test/config.json")),
        containers_auth: Some(PathBuf::from("/nonexistent/rbuild-test/auth.json")),
        ..Default::default()
    })
    .unwrap()
}
