//! Image references (`registry/repository:tag@digest`), normalised as Docker does.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// Registry host that Docker Hub names resolve to for display (`docker.io`).
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference.
///
/// `alpine` is `docker.io/library/alpine:latest`; a first path component with a `.` or `:` or equal to
/// `localhost` is a registry host.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, e.g. `127.0.0.1:5000` or `docker.io`.
    pub registry: String,
    /// Repository path, e.g. `library/alpine`.
    pub repository: String,
    /// Tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// Pinned manifest digest.
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceParseError {
    input: String,
    reason: &'static str,
}

impl Reference {
    /// The registry host to contact (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on loopback, where plain HTTP is used without a flag (as Docker does).
    pub fn is_loopback(&self) -> bool {
        let host = host_of(&self.registry);
        host == "localhost" || host.starts_with("127.") || host == "::1" || host == "[::1]"
    }

    /// The tag or digest to ask the registry for (`manifests/<this>`).
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form users typed for Docker Hub images (`alpine:latest`), the full form otherwise.
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    /// The same reference with a different tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }
}

fn host_of(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    registry.rsplit_once(':').map_or(registry, |(h, _)| h)
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

impl FromStr for Reference {
    type Err = ReferenceParseError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ReferenceParseError {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(err("empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| err("bad digest"))?)),
            None => (input, None),
        };
        // A tag is after the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if t.is_empty()
                    || t.len() > 128
                    || !t
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
                {
                    return Err(err("bad tag"));
                }
                (&rest[..last_slash + i], Some(t.to_owned()))
            }
            None => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !repository.split('/').all(valid_component) {
            return Err(err(
                "repository must be lowercase letters, digits and . _ - separated by /",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_owned())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(p("alpine").to_string(), "docker.io/library/alpine:latest");
        assert_eq!(p("alpine").familiar(), "alpine:latest");
        assert_eq!(p("user/app:1").to_string(), "docker.io/user/app:1");
        assert_eq!(
            p("127.0.0.1:5000/library/busybox:1.35").registry,
            "127.0.0.1:5000"
        );
        assert_eq!(p("localhost/app").registry, "localhost");
        assert_eq!(p("app").api_host(), "registry-1.docker.io");
        assert!(p("127.0.0.1:5000/x").is_loopback());
        assert!(p("localhost:5000/x").is_loopback());
        assert!(!p("ghcr.io/x").is_loopback());
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = p(&format!("127.0.0.1:5000/a/b@{d}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_selector(), d);
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "UPPER", "a:", "a@sha256:1", "a//b", "-a"] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
    }
}
