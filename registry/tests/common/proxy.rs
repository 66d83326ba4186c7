//! A small HTTP/1.1 proxy in front of a real registry that adds Bearer-token auth (with its own token
//! endpoint) and injects faults: the real registry still does all the distribution API work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A canned answer for matching requests, used `times` times.
pub struct Fault {
    pub method: &'static str,
    pub path_contains: &'static str,
    pub status: u16,
    pub times: u32,
}

/// Relays matching responses only up to `bytes` bytes (status line and headers included), then hangs up.
pub struct Truncate {
    pub method: &'static str,
    pub path_contains: &'static str,
    pub bytes: usize,
    pub times: u32,
}

/// Relays matching responses up to `after` bytes (status line and headers included), then sends nothing
/// more while keeping the connection open, as a registry frozen with SIGSTOP does.
pub struct Freeze {
    pub method: &'static str,
    pub path_contains: &'static str,
    pub after: usize,
    pub times: u32,
}

/// Relays matching responses one byte every `interval_ms` milliseconds.
pub struct Trickle {
    pub method: &'static str,
    pub path_contains: &'static str,
    pub interval_ms: u64,
}

/// Sets header `name` to `value` in matching responses (replacing the upstream's).
pub struct Rewrite {
    pub method: &'static str,
    pub path_contains: &'static str,
    pub name: &'static str,
    pub value: String,
}

/// What the token endpoint demands.
pub enum TokenAuth {
    /// Tokens for anyone.
    Anonymous,
    /// Tokens only with these Basic credentials.
    Basic { user: String, password: String },
    /// Tokens only for an OAuth2 refresh-token POST (`grant_type=refresh_token`, `client_id=rbuild`)
    /// with this refresh token; answered as `access_token`.
    Refresh { refresh_token: String },
}

struct State {
    addr: String,
    upstream: String,
    bearer: Option<TokenAuth>,
    faults: Mutex<Vec<Fault>>,
    truncations: Mutex<Vec<Truncate>>,
    freezes: Mutex<Vec<Freeze>>,
    trickles: Mutex<Vec<Trickle>>,
    rewrites: Mutex<Vec<Rewrite>>,
    seen: Mutex<Vec<String>>,
    fault_headers: Mutex<Vec<(String, String)>>,
    /// (method, path part, matching requests still to let through, status): fails one request once.
    fail_after: Mutex<Vec<(&'static str, &'static str, u32, u16)>>,
    reject_monolithic: AtomicBool,
    ignore_mount: AtomicBool,
    /// Answer the OCI 1.1 referrers API (docker-registry 2.8 has none) from the referrers tag schema.
    referrers_api: AtomicBool,
    /// Milliseconds to wait before each KiB of a blob GET's answer (0: relay at once).
    slow_ms_per_kib: AtomicU64,
}

/// The running proxy; stops on drop.
pub struct Proxy {
    pub addr: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` (`127.0.0.1:port`); with `bearer`, every /v2/ request needs a token.
    pub async fn start(upstream: &str, bearer: Option<TokenAuth>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State {
            addr: addr.clone(),
            upstream: upstream.to_owned(),
            bearer,
            faults: Mutex::new(Vec::new()),
            truncations: Mutex::new(Vec::new()),
            freezes: Mutex::new(Vec::new()),
            trickles: Mutex::new(Vec::new()),
            rewrites: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            fault_headers: Mutex::new(Vec::new()),
            fail_after: Mutex::new(Vec::new()),
            reject_monolithic: AtomicBool::new(false),
            ignore_mount: AtomicBool::new(false),
            referrers_api: AtomicBool::new(false),
            slow_ms_per_kib: AtomicU64::new(0),
        });
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    // A test client hanging up mid-request is not the proxy's problem.
                    let _ = handle(&s, conn).await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// Serves `GET /v2/<name>/referrers/<digest>` as a registry with the referrers API does, with the
    /// index the upstream keeps under the referrers tag `sha256-<hex>` (the same document).
    pub fn serve_referrers_api(&self) {
        self.state.referrers_api.store(true, Ordering::SeqCst);
    }

    /// Adds a fault rule.
    pub fn inject(&self, fault: Fault) {
        self.state.faults.lock().unwrap().push(fault);
    }

    /// Adds a header to every injected fault answer (e.g. `Retry-After`).
    pub fn fault_header(&self, name: &str, value: &str) {
        self.state
            .fault_headers
            .lock()
            .unwrap()
            .push((name.to_owned(), value.to_owned()));
    }

    /// Lets `skip` requests matching `method` and `path_contains` through, then answers the next one with
    /// `status` (without forwarding it), once.
    pub fn fail_after(
        &self,
        method: &'static str,
        path_contains: &'static str,
        skip: u32,
        status: u16,
    ) {
        self.state
            .fail_after
            .lock()
            .unwrap()
            .push((method, path_contains, skip, status));
    }

    /// Answers 415 to every blob upload PUT with a body, as registries that only take chunks do.
    pub fn reject_monolithic_uploads(&self) {
        self.state.reject_monolithic.store(true, Ordering::SeqCst);
    }

    /// Drops `mount`/`from` from upload POSTs, so the registry opens a plain session (202) instead.
    pub fn ignore_mounts(&self) {
        self.state.ignore_mount.store(true, Ordering::SeqCst);
    }

    /// Relays the answers to blob GETs a KiB at a time, `ms` milliseconds apart (a slow link).
    pub fn slow_blob_bodies(&self, ms: u64) {
        self.state.slow_ms_per_kib.store(ms, Ordering::SeqCst);
    }

    /// Adds a truncation rule.
    pub fn truncate(&self, t: Truncate) {
        self.state.truncations.lock().unwrap().push(t);
    }

    /// Adds a freeze rule.
    pub fn freeze(&self, f: Freeze) {
        self.state.freezes.lock().unwrap().push(f);
    }

    /// Adds a trickle rule.
    pub fn trickle(&self, t: Trickle) {
        self.state.trickles.lock().unwrap().push(t);
    }

    /// Adds a header rewrite rule.
    pub fn rewrite(&self, r: Rewrite) {
        self.state.rewrites.lock().unwrap().push(r);
    }

    /// Every request seen, as `METHOD path?query [content-length=N] [transfer-encoding=…]`, in order.
    pub fn seen(&self) -> Vec<String> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many requests seen match `method` and contain `part` in their path.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.seen()
            .iter()
            .filter(|l| l.starts_with(&format!("{method} ")) && l.contains(part))
            .count()
    }

    /// A reference through the proxy.
    pub fn reference(&self, name: &str) -> oci::Reference {
        format!("{}/{name}", self.addr).parse().unwrap()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn query_param(target: &str, key: &str) -> Option<String> {
    let q = target.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

async fn respond(
    conn: &mut TcpStream,
    status: u16,
    headers: &[(&str, String)],
    body: &str,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    conn.shutdown().await
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

async fn handle(state: &State, mut conn: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut conn);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).await?;
        let h = h.trim_end().to_owned();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    drop(reader);
    let mut record = format!("{method} {target}");
    if let Some(l) = header("content-length") {
        record.push_str(&format!(" content-length={l}"));
    }
    if let Some(te) = header("transfer-encoding") {
        record.push_str(&format!(" transfer-encoding={te}"));
    }
    state.seen.lock().unwrap().push(record);

    let path = target.split('?').next().unwrap_or("").to_owned();
    let fault = {
        let mut faults = state.faults.lock().unwrap();
        faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.contains(f.path_contains))
            .map(|f| {
                f.times -= 1;
                f.status
            })
    };
    let fault = fault.or_else(|| {
        let mut rules = state.fail_after.lock().unwrap();
        let i = rules
            .iter()
            .position(|(m, p, _, _)| *m == method && path.contains(p))?;
        if rules[i].2 > 0 {
            rules[i].2 -= 1;
            return None;
        }
        Some(rules.remove(i).3)
    });
    if let Some(status) = fault {
        let extra: Vec<(String, String)> = state.fault_headers.lock().unwrap().clone();
        let extra: Vec<(&str, String)> =
            extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        return respond(
            &mut conn,
            status,
            &extra,
            "{\"errors\":[{\"code\":\"INJECTED\",\"message\":\"fault\"}]}",
        )
        .await;
    }

    if let Some(bearer) = &state.bearer {
        if path == "/token" {
            let scope = match bearer {
                TokenAuth::Anonymous => query_param(&target, "scope").unwrap_or_default(),
                TokenAuth::Basic { user, password } => {
                    let want = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
                    if header("authorization").as_deref() != Some(want.as_str()) {
                        return respond(&mut conn, 401, &[], "{\"details\":\"bad credentials\"}")
                            .await;
                    }
                    query_param(&target, "scope").unwrap_or_default()
                }
                TokenAuth::Refresh { refresh_token } => {
                    let form = format!("?{}", String::from_utf8_lossy(&body));
                    let ok = method == "POST"
                        && header("content-type").as_deref()
                            == Some("application/x-www-form-urlencoded")
                        && query_param(&form, "grant_type").as_deref() == Some("refresh_token")
                        && query_param(&form, "client_id").as_deref() == Some("rbuild")
                        && query_param(&form, "service").as_deref() == Some("proxy-test")
                        && query_param(&form, "refresh_token").as_ref() == Some(refresh_token);
                    if !ok {
                        return respond(&mut conn, 401, &[], "{\"error\":\"invalid_grant\"}").await;
                    }
                    // Several scopes come space-separated; the first is the one for the target repo.
                    let scopes = query_param(&form, "scope").unwrap_or_default();
                    let first = scopes.split(' ').next().unwrap_or("").to_owned();
                    let body = serde_json::json!({
                        "access_token": format!("tok|{first}"),
                        "expires_in": 300,
                        "scope": scopes,
                    })
                    .to_string();
                    return respond(
                        &mut conn,
                        200,
                        &[("Content-Type", "application/json".into())],
                        &body,
                    )
                    .await;
                }
            };
            let body =
                serde_json::json!({"token": format!("tok|{scope}"), "expires_in": 300}).to_string();
            return respond(
                &mut conn,
                200,
                &[("Content-Type", "application/json".into())],
                &body,
            )
            .await;
        }
        // /v2/<repo>/{manifests,blobs}/...: the token must grant this repository and action.
        let repo = path.strip_prefix("/v2/").and_then(|p| {
            ["/manifests/", "/blobs/"]
                .iter()
                .find_map(|m| p.find(m).map(|i| p[..i].to_owned()))
        });
        let action = if method == "GET" || method == "HEAD" {
            "pull"
        } else {
            "push"
        };
        let granted = match (&repo, header("authorization")) {
            (Some(repo), Some(auth)) => {
                auth.strip_prefix("Bearer tok|repository:")
                    .is_some_and(|rest| {
                        rest.rsplit_once(':').is_some_and(|(r, actions)| {
                            r == repo && actions.split(',').any(|a| a == action)
                        })
                    })
            }
            (None, Some(auth)) => auth.starts_with("Bearer tok|"),
            (_, None) => false,
        };
        if !granted {
            let mut challenge = format!(
                "Bearer realm=\"http://{}/token\",service=\"proxy-test\"",
                state.addr
            );
            if let Some(repo) = &repo {
                let actions = if action == "pull" {
                    "pull"
                } else {
                    "pull,push"
                };
                challenge.push_str(&format!(",scope=\"repository:{repo}:{actions}\""));
            }
            return respond(
                &mut conn,
                401,
                &[("WWW-Authenticate", challenge)],
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
            )
            .await;
        }
    }

    if state.reject_monolithic.load(Ordering::SeqCst)
        && method == "PUT"
        && path.contains("/blobs/uploads/")
        && len > 0
    {
        return respond(
            &mut conn,
            415,
            &[],
            "{\"errors\":[{\"code\":\"UNSUPPORTED\",\"message\":\"monolithic uploads are not supported\"}]}",
        )
        .await;
    }
    let mut target = target;
    if state.ignore_mount.load(Ordering::SeqCst) && method == "POST" && target.contains("mount=") {
        target = path.clone();
    }
    if state.referrers_api.load(Ordering::SeqCst) && method == "GET" {
        if let Some((repo, digest)) = path.split_once("/referrers/") {
            target = format!("{repo}/manifests/{}", digest.replacen(':', "-", 1));
        }
    }

    let mut up = TcpStream::connect(&state.upstream).await?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in &headers {
        if !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("authorization") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes()).await?;
    up.write_all(&body).await?;
    let cut = {
        let mut rules = state.truncations.lock().unwrap();
        rules
            .iter_mut()
            .find(|t| t.times > 0 && t.method == method && path.contains(t.path_contains))
            .map(|t| {
                t.times -= 1;
                t.bytes
            })
    };
    if let Some(cut) = cut {
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        conn.write_all(&answer[..cut.min(answer.len())]).await?;
        return conn.shutdown().await;
    }
    let freeze = {
        let mut rules = state.freezes.lock().unwrap();
        rules
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.contains(f.path_contains))
            .map(|f| {
                f.times -= 1;
                f.after
            })
    };
    if let Some(after) = freeze {
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        conn.write_all(&answer[..after.min(answer.len())]).await?;
        // Frozen: the connection stays open and silent until the client gives up.
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        return Ok(());
    }
    let trickle = {
        let rules = state.trickles.lock().unwrap();
        rules
            .iter()
            .find(|t| t.method == method && path.contains(t.path_contains))
            .map(|t| t.interval_ms)
    };
    if let Some(ms) = trickle {
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        for byte in answer.chunks(1) {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            conn.write_all(byte).await?;
        }
        return conn.shutdown().await;
    }
    let rewrite: Vec<(String, String)> = state
        .rewrites
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == method && path.contains(r.path_contains))
        .map(|r| (r.name.to_owned(), r.value.clone()))
        .collect();
    if !rewrite.is_empty() {
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete answer");
        let head = String::from_utf8_lossy(&answer[..split]).into_owned();
        let mut lines: Vec<String> = head
            .split("\r\n")
            .filter(|l| {
                !rewrite.iter().any(|(name, _)| {
                    l.to_ascii_lowercase()
                        .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                })
            })
            .map(str::to_owned)
            .collect();
        for (name, value) in &rewrite {
            lines.push(format!("{name}: {value}"));
        }
        conn.write_all(lines.join("\r\n").as_bytes()).await?;
        conn.write_all(&answer[split..]).await?;
        return conn.shutdown().await;
    }
    let slow = state.slow_ms_per_kib.load(Ordering::SeqCst);
    if slow > 0 && method == "GET" && path.contains("/blobs/") {
        let mut answer = Vec::new();
        up.read_to_end(&mut answer).await?;
        for chunk in answer.chunks(1024) {
            tokio::time::sleep(std::time::Duration::from_millis(slow)).await;
            conn.write_all(chunk).await?;
        }
        return conn.shutdown().await;
    }
    // The registry answers `Connection: close` to a `Connection: close` request, so relaying to EOF is the
    // whole response.
    tokio::io::copy(&mut up, &mut conn).await?;
    conn.shutdown().await
}
