//! Registry authentication: credentials from Docker's config.json, `WWW-Authenticate` challenges, and a
//! cache of the resulting `Authorization` headers.
//!
//! The flow is the distribution spec's: send anonymously; on 401 read the challenge; for `Bearer` fetch a
//! token from the realm (with Basic credentials if we have some, anonymously otherwise) and retry; for
//! `Basic` retry with the credentials. Tokens are cached per (registry, scope) until they expire.
//! Credential helpers (`credHelpers`, `credsStore`) and `identitytoken` are not supported yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::Error;

/// A user name and password for one registry.
#[derive(Clone)]
pub(crate) struct BasicCredentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Credentials read from a Docker config.json, keyed by normalised registry host.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    /// The config file looked at, for messages; `None` when there was no place to look.
    pub(crate) source: Option<PathBuf>,
    /// Whether `source` exists.
    found: bool,
    by_host: HashMap<String, BasicCredentials>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The config.json Docker would read: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub(crate) fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker").join("config.json"))
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `http://host:5000/x` → `host:5000`.
fn normalise_host(key: &str) -> String {
    let s = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let s = s.split('/').next().unwrap_or(s);
    match s {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => oci::DOCKER_HUB.to_owned(),
        other => other.to_owned(),
    }
}

impl Credentials {
    /// Reads `path`; a missing file means no credentials, a malformed one is an error (as in Docker).
    pub(crate) fn load(path: Option<&Path>) -> Result<Self, Error> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = match fs_err::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    source: Some(path.to_owned()),
                    ..Self::default()
                });
            }
            Err(e) => {
                return Err(Error::DockerConfig {
                    path: path.to_owned(),
                    source: Box::new(e),
                })
            }
        };
        let bad = |source: Box<dyn std::error::Error + Send + Sync>| Error::DockerConfig {
            path: path.to_owned(),
            source,
        };
        let config: DockerConfig = serde_json::from_str(&text).map_err(|e| bad(Box::new(e)))?;
        let mut by_host = HashMap::new();
        for (key, entry) in config.auths {
            let creds = match (
                entry.auth.as_deref().filter(|a| !a.is_empty()),
                entry.username,
                entry.password,
            ) {
                (Some(auth), _, _) => {
                    let decoded = base64_decode(auth.trim())
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| {
                            bad(format!("auths.{key}.auth is not base64 of user:password").into())
                        })?;
                    let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                        bad(format!("auths.{key}.auth has no ':' between user and password").into())
                    })?;
                    BasicCredentials {
                        username: user.to_owned(),
                        password: pass.to_owned(),
                    }
                }
                (None, Some(username), Some(password)) => BasicCredentials { username, password },
                _ => continue,
            };
            by_host.insert(normalise_host(&key), creds);
        }
        Ok(Self {
            source: Some(path.to_owned()),
            found: true,
            by_host,
        })
    }

    /// Credentials for a registry as written in a reference (`docker.io`, `127.0.0.1:5000`).
    pub(crate) fn for_registry(&self, registry: &str) -> Option<&BasicCredentials> {
        self.by_host.get(&normalise_host(registry))
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

impl Challenge {
    /// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`; `None` for other schemes.
    pub(crate) fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// Parses `k="v", k2=v2` auth-params; quoted values may hold commas (`scope="repository:a:pull,push"`).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
}

/// Decodes standard base64 (padding optional); `None` if malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

struct CachedToken {
    header: String,
    expires: Instant,
}

/// Everything a request needs to authenticate: credentials and the header cache.
#[derive(Debug)]
pub(crate) struct Auth {
    creds: Credentials,
    /// Bearer headers by (registry, scope).
    tokens: Mutex<HashMap<(String, String), CachedToken>>,
    /// Registries that answered with a Basic challenge (header applies to every scope).
    basic: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Tokens without `expires_in` live 60 s (distribution spec); renew a little before the end.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

impl Auth {
    pub(crate) fn new(creds: Credentials) -> Self {
        Self {
            creds,
            tokens: Mutex::new(HashMap::new()),
            basic: Mutex::new(HashMap::new()),
        }
    }

    /// The cached `Authorization` value for a request to `registry` needing `scope`, if any.
    pub(crate) fn header(&self, registry: &str, scope: &str) -> Option<String> {
        {
            let tokens = self
                .tokens
                .lock()
                .expect("token cache lock is never poisoned: no panics inside");
            if let Some(t) = tokens.get(&(registry.to_owned(), scope.to_owned())) {
                if t.expires > Instant::now() {
                    return Some(t.header.clone());
                }
            }
        }
        self.basic
            .lock()
            .expect("basic cache lock is never poisoned: no panics inside")
            .get(registry)
            .cloned()
    }

    /// Answers a 401's challenge: fetches a token or picks Basic credentials, and caches the header.
    pub(crate) async fn authenticate(
        &self,
        http: &reqwest::Client,
        registry: &str,
        scope: &str,
        challenge: Option<&str>,
    ) -> Result<(), Error> {
        let unauthorized = |reason: String| Error::Unauthorized {
            registry: registry.to_owned(),
            reason,
        };
        let creds = self.creds.for_registry(registry);
        match challenge.and_then(Challenge::parse) {
            Some(Challenge::Basic) => {
                let Some(c) = creds else {
                    return Err(unauthorized(self.no_credentials(registry)));
                };
                let header = basic_header(c);
                self.basic
                    .lock()
                    .expect("basic cache lock is never poisoned: no panics inside")
                    .insert(registry.to_owned(), header);
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope: challenge_scope,
            }) => {
                // Ask for the scope we need; the challenge's own scope is what the registry wanted for this
                // request and is normally the same.
                let want_scope = if scope.is_empty() {
                    challenge_scope.unwrap_or_default()
                } else {
                    scope.to_owned()
                };
                let mut url = reqwest::Url::parse(&realm).map_err(|e| Error::Protocol {
                    registry: registry.to_owned(),
                    detail: format!("token realm {realm:?} is not a URL: {e}"),
                })?;
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(s) = &service {
                        query.append_pair("service", s);
                    }
                    if !want_scope.is_empty() {
                        query.append_pair("scope", &want_scope);
                    }
                }
                let mut req = http.get(url);
                if let Some(c) = creds {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                tracing::debug!(
                    registry,
                    realm,
                    scope = want_scope,
                    with_credentials = creds.is_some(),
                    "fetching token"
                );
                let resp = req.send().await.map_err(|source| Error::Unreachable {
                    registry: realm.clone(),
                    source,
                })?;
                let status = resp.status();
                if status == reqwest::StatusCode::UNAUTHORIZED
                    || status == reqwest::StatusCode::FORBIDDEN
                {
                    return Err(unauthorized(match creds {
                        Some(c) => format!(
                            "token service {realm} rejected the credentials of user {:?}",
                            c.username
                        ),
                        None => format!(
                            "token service {realm} refused anonymous access; {}",
                            self.no_credentials(registry)
                        ),
                    }));
                }
                if !status.is_success() {
                    return Err(crate::client::status_error("GET", resp).await);
                }
                let body = resp.bytes().await.map_err(|source| Error::Transfer {
                    registry: realm.clone(),
                    source,
                })?;
                let token: TokenResponse =
                    serde_json::from_slice(&body).map_err(|e| Error::Protocol {
                        registry: registry.to_owned(),
                        detail: format!("token service {realm} sent invalid JSON: {e}"),
                    })?;
                let Some(tok) = token.token.or(token.access_token).filter(|t| !t.is_empty()) else {
                    return Err(Error::Protocol {
                        registry: registry.to_owned(),
                        detail: format!("token service {realm} sent no token"),
                    });
                };
                let lifetime = token
                    .expires_in
                    .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
                let expires = Instant::now()
                    + lifetime
                        .saturating_sub(EXPIRY_MARGIN)
                        .max(Duration::from_secs(1));
                self.tokens
                    .lock()
                    .expect("token cache lock is never poisoned: no panics inside")
                    .insert(
                        (registry.to_owned(), scope.to_owned()),
                        CachedToken {
                            header: format!("Bearer {tok}"),
                            expires,
                        },
                    );
                Ok(())
            }
            None => Err(unauthorized(format!(
                "unsupported or missing WWW-Authenticate challenge {:?}",
                challenge.unwrap_or("")
            ))),
        }
    }

    /// Whether config.json holds credentials for `registry`.
    pub(crate) fn has_credentials(&self, registry: &str) -> bool {
        self.creds.for_registry(registry).is_some()
    }

    /// Why we had nothing to answer a challenge with, for [`Error::Unauthorized`].
    pub(crate) fn no_credentials(&self, registry: &str) -> String {
        match (&self.creds.source, self.creds.found) {
            (Some(p), true) => format!("no credentials for {registry} in {}", p.display()),
            (Some(p), false) => {
                format!("no credentials for {registry}: {} does not exist (run `docker login {registry}`)", p.display())
            }
            (None, _) => {
                format!("no credentials for {registry}: no docker config.json (set DOCKER_CONFIG)")
            }
        }
    }
}

fn basic_header(c: &BasicCredentials) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{}:{}", c.username, c.password).as_bytes())
    )
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut buf = [0u8; 3];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_with_comma_in_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/a:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/a:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(
            Challenge::parse(r#"bearer service="x""#),
            None,
            "realm is required"
        );
    }

    #[test]
    fn base64_round_trip() {
        for s in ["", "a", "ab", "abc", "user:pa ss:w0rd!", "\u{e9}t\u{e9}"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes(),
                "{s}"
            );
        }
        assert_eq!(base64_encode(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert!(base64_decode("a").is_none());
        assert!(base64_decode("ab!c").is_none());
    }

    #[test]
    fn reads_docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs_err::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="},"127.0.0.1:5000":{"auth":"dXNlcjpwYXNz"},"plain.example":{"username":"u","password":"p"}},"credsStore":"desktop"}"#,
        )
        .unwrap();
        let c = Credentials::load(Some(&path)).unwrap();
        assert_eq!(c.for_registry("docker.io").unwrap().username, "hub");
        assert_eq!(c.for_registry("docker.io").unwrap().password, "secret");
        assert_eq!(c.for_registry("127.0.0.1:5000").unwrap().password, "pass");
        assert_eq!(c.for_registry("plain.example").unwrap().username, "u");
        assert!(c.for_registry("other:5000").is_none());

        assert!(Credentials::load(Some(&dir.path().join("missing.json")))
            .unwrap()
            .for_registry("docker.io")
            .is_none());
        fs_err::write(&path, "{not json").unwrap();
        let err = Credentials::load(Some(&path)).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
