//! Registry authentication: credentials from Docker's config.json, `WWW-Authenticate` challenges, and a
//! cache of the resulting `Authorization` headers.
//!
//! The flow is the distribution spec's: send anonymously; on 401 read the challenge; for `Bearer` fetch a
//! token from the realm (with Basic credentials if we have some, anonymously otherwise) and retry; for
//! `Basic` retry with the credentials. Tokens are cached per (registry, scope) until they expire.
//! With an identity token (OAuth2 refresh token) the token is fetched with a `grant_type=refresh_token`
//! POST instead. Where credentials come from is [`crate::credentials`]'s business.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::credentials::{base64_encode, BasicCredentials, Credentials, Secret};
use crate::Error;

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
    ///
    /// `scope` may hold several space-separated scopes (a cross-repository mount needs two); each is sent
    /// as its own `scope` parameter.
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
        let secret = self.creds.get(registry).await?;
        match challenge.and_then(Challenge::parse) {
            Some(Challenge::Basic) => {
                let c =
                    match secret {
                        Some(Secret::Basic(c)) => c,
                        Some(Secret::IdentityToken(_)) => return Err(unauthorized(
                            "it wants Basic auth but only an identity token is configured, which \
                             works with token auth only"
                                .to_owned(),
                        )),
                        None => return Err(unauthorized(self.no_credentials(registry))),
                    };
                let header = basic_header(&c);
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
                let token = self
                    .fetch_token(
                        http,
                        registry,
                        &realm,
                        service.as_deref(),
                        &want_scope,
                        secret.as_ref(),
                    )
                    .await?;
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

    /// Gets a token from `realm`: an OAuth2 refresh-token POST for an identity token, else a GET (with
    /// Basic credentials when we have them). Connection errors, 5xx, 408 and 429 are retried.
    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        secret: Option<&Secret>,
    ) -> Result<TokenResponse, Error> {
        let unauthorized = |reason: String| Error::Unauthorized {
            registry: registry.to_owned(),
            reason,
        };
        let mut url = reqwest::Url::parse(realm).map_err(|e| Error::Protocol {
            registry: registry.to_owned(),
            detail: format!("token realm {realm:?} is not a URL: {e}"),
        })?;
        let scopes = scope.split(' ').filter(|s| !s.is_empty());
        let form = match secret {
            Some(Secret::IdentityToken(refresh)) => {
                // The form body is encoded like a query string; borrow Url's encoder for it.
                let mut enc = reqwest::Url::parse("http://form.invalid/")
                    .expect("a constant URL always parses");
                {
                    let mut q = enc.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token")
                        .append_pair("refresh_token", refresh)
                        .append_pair("client_id", "rbuild");
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    let joined = scopes.collect::<Vec<_>>().join(" ");
                    if !joined.is_empty() {
                        q.append_pair("scope", &joined);
                    }
                }
                Some(enc.query().unwrap_or_default().to_owned())
            }
            _ => {
                let mut query = url.query_pairs_mut();
                if let Some(s) = service {
                    query.append_pair("service", s);
                }
                for s in scopes {
                    query.append_pair("scope", s);
                }
                drop(query);
                None
            }
        };
        tracing::debug!(
            registry,
            realm,
            scope,
            credentials = ?secret.map(|s| match s {
                Secret::Basic(_) => "basic",
                Secret::IdentityToken(_) => "identity token",
            }),
            "fetching token"
        );
        let mut attempt = 0;
        let resp = loop {
            let req = match (&form, secret) {
                (Some(body), _) => http
                    .post(url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body.clone()),
                (None, Some(Secret::Basic(c))) => http
                    .get(url.clone())
                    .basic_auth(&c.username, Some(&c.password)),
                (None, _) => http.get(url.clone()),
            };
            let may_retry = attempt < crate::retry::MAX_RETRIES;
            match req.send().await {
                Ok(resp) if crate::retry::retryable_status(resp.status()) && may_retry => {
                    let wait = crate::retry::retry_delay(&resp, attempt);
                    tracing::debug!(realm, status = %resp.status(), attempt, "token service failing, retrying");
                    tokio::time::sleep(wait).await;
                }
                Ok(resp) => break resp,
                Err(e) if may_retry => {
                    tracing::debug!(realm, error = %e, attempt, "token request failed, retrying");
                    tokio::time::sleep(crate::retry::backoff(attempt)).await;
                }
                Err(source) => {
                    return Err(Error::Unreachable {
                        registry: realm.to_owned(),
                        source,
                    })
                }
            }
            attempt += 1;
        };
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(unauthorized(match secret {
                Some(Secret::Basic(c)) => format!(
                    "token service {realm} rejected the credentials of user {:?}",
                    c.username
                ),
                Some(Secret::IdentityToken(_)) => {
                    format!("token service {realm} rejected the identity token (log in again)")
                }
                None => format!(
                    "token service {realm} refused anonymous access; {}",
                    self.no_credentials(registry)
                ),
            }));
        }
        if !status.is_success() {
            return Err(crate::retry::status_error(
                if form.is_some() { "POST" } else { "GET" },
                resp,
            )
            .await);
        }
        let body = resp.bytes().await.map_err(|source| Error::Transfer {
            registry: realm.to_owned(),
            source,
        })?;
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            registry: registry.to_owned(),
            detail: format!("token service {realm} sent invalid JSON: {e}"),
        })
    }

    /// Whether any credential source has something for `registry`.
    pub(crate) async fn has_credentials(&self, registry: &str) -> bool {
        matches!(self.creds.get(registry).await, Ok(Some(_)))
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
}
