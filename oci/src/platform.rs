//! Platform spelling and matching: `os/arch[/variant]` as `--platform` writes it, normalised and matched
//! the way containerd's `platforms` package does (the rules registries' clients and BuildKit share).

use std::fmt;
use std::str::FromStr;

use crate::manifest::{Descriptor, Index, Platform};

/// A `--platform` value that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64")]
pub struct PlatformParseError(pub String);

impl FromStr for Platform {
    type Err = PlatformParseError;

    /// Parses `os/arch[/variant]`, normalised as containerd does (`x86_64` → `amd64`, `aarch64` → `arm64`,
    /// `arm64/v8` → `arm64`, `arm` → `arm/v7`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PlatformParseError(s.to_owned());
        let parts: Vec<&str> = s.trim().split('/').collect();
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] if !variant.is_empty() => (*os, *arch, Some((*variant).to_owned())),
            _ => return Err(bad()),
        };
        if os.is_empty() || arch.is_empty() {
            return Err(bad());
        }
        Ok(Platform {
            architecture: arch.to_owned(),
            os: os.to_owned(),
            variant,
            os_version: None,
        }
        .normalized())
    }
}

impl fmt::Display for Platform {
    /// `os/arch[/variant]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The target platforms of a build: `--platform` values in the order given, each once, or the
    /// host's when none is given.
    pub fn targets(given: &[Platform]) -> Vec<Platform> {
        let mut out: Vec<Platform> = Vec::new();
        for p in given {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        if out.is_empty() {
            out.push(Platform::host());
        }
        out
    }

    /// containerd's `Normalize`: lowercase, architecture aliases, and the variants implied by default
    /// (`arm64` is `v8`, written without it; `arm` is `v7`; `amd64/v1` is `amd64`).
    pub fn normalized(mut self) -> Self {
        self.os = self.os.to_ascii_lowercase();
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.take().map(|v| v.to_ascii_lowercase());
        let (arch, variant) = match arch.as_str() {
            "x86_64" | "x86-64" | "amd64" => {
                ("amd64", variant.filter(|v| v != "v1" && !v.is_empty()))
            }
            "i386" | "i686" | "386" => ("386", None),
            "aarch64" | "arm64" => ("arm64", variant.filter(|v| v != "v8" && !v.is_empty())),
            "armhf" => ("arm", Some("v7".to_owned())),
            "armel" => ("arm", Some("v6".to_owned())),
            "arm" => (
                "arm",
                Some(match variant.as_deref() {
                    None | Some("") | Some("7") => "v7".to_owned(),
                    Some("5") | Some("6") | Some("8") => {
                        format!("v{}", variant.unwrap_or_default())
                    }
                    Some(v) => v.to_owned(),
                }),
            ),
            _ => (arch.as_str(), variant),
        };
        self.architecture = arch.to_owned();
        self.variant = variant;
        self
    }

    /// Whether an image for `other` runs on this platform, by containerd's rules: same os and architecture;
    /// for `arm`, an older variant runs on a newer one (v7 runs v7, v6 and v5 images); an unspecified
    /// variant on either side matches.
    pub fn accepts(&self, other: &Platform) -> bool {
        self.rank(other).is_some()
    }

    /// How well `other` fits this platform: 0 is an exact match, higher is a fallback; `None` does not run.
    fn rank(&self, other: &Platform) -> Option<usize> {
        let want = self.clone().normalized();
        let have = other.clone().normalized();
        if want.os != have.os || want.architecture != have.architecture {
            return None;
        }
        match (&want.variant, &have.variant) {
            (a, b) if a == b => Some(0),
            (None, _) => Some(1),
            (Some(_), None) => Some(8),
            (Some(w), Some(h)) if want.architecture == "arm" => {
                let n = |v: &str| v.strip_prefix('v').and_then(|d| d.parse::<usize>().ok());
                match (n(w), n(h)) {
                    (Some(w), Some(h)) if h <= w => Some(1 + w - h),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

impl Index {
    /// The manifest for `platform` by containerd's matching: exact variant first, then the closest older
    /// `arm` variant, then one without a variant. Ties go to the first listed.
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .filter_map(|d| Some((platform.rank(d.platform.as_ref()?)?, d)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, d)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{media_type, Digest};

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    #[test]
    fn build_targets_keep_the_given_order_once_each_or_are_the_host() {
        let p = |s: &str| s.parse::<Platform>().unwrap();
        let given = [p("linux/arm64"), p("linux/amd64"), p("linux/arm64")];
        assert_eq!(
            Platform::targets(&given),
            [p("linux/arm64"), p("linux/amd64")]
        );
        assert_eq!(Platform::targets(&[]), [Platform::host()]);
    }

    #[test]
    fn platforms_parse_and_normalise_as_containerd_does() {
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("Linux/ARM/v6").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/amd64/v1").to_string(), "linux/amd64");
        assert_eq!(p("linux/amd64/v3").to_string(), "linux/amd64/v3");
        for bad in ["linux", "/arm64", "linux/", "a/b/c/d", "linux/arm/"] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn arm_variants_fall_back_to_older_ones_only() {
        assert!(p("linux/arm/v7").accepts(&p("linux/arm/v6")));
        assert!(p("linux/arm/v7").accepts(&p("linux/arm/v5")));
        assert!(!p("linux/arm/v6").accepts(&p("linux/arm/v7")));
        assert!(p("linux/arm64").accepts(&p("linux/arm64/v8")));
        assert!(!p("linux/arm64").accepts(&p("linux/arm/v7")));
        assert!(!p("linux/amd64").accepts(&p("linux/arm64")));
    }

    #[test]
    fn index_select_prefers_the_exact_then_the_closest_arm_variant() {
        let d = Digest::sha256_of(b"x");
        let mk = |s: &str, size: u64| Descriptor {
            platform: Some(Platform {
                architecture: s.split('/').nth(1).unwrap().into(),
                os: "linux".into(),
                variant: s.split('/').nth(2).map(Into::into),
                os_version: None,
            }),
            ..Descriptor::new(media_type::OCI_MANIFEST, d.clone(), size)
        };
        let index = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                mk("linux/arm/v5", 1),
                mk("linux/arm/v6", 2),
                mk("linux/arm/v7", 3),
                mk("linux/arm64/v8", 4),
                mk("linux/amd64", 5),
            ],
            annotations: Default::default(),
        };
        let pick = |s: &str| index.select(&p(s)).map(|d| d.size);
        assert_eq!(pick("linux/arm/v7"), Some(3));
        assert_eq!(pick("linux/arm/v6"), Some(2));
        assert_eq!(pick("linux/arm64"), Some(4));
        assert_eq!(pick("linux/amd64"), Some(5));
        assert_eq!(pick("linux/s390x"), None);
        let older = Index {
            manifests: vec![mk("linux/arm/v5", 1), mk("linux/arm/v6", 2)],
            ..index.clone()
        };
        assert_eq!(older.select(&p("linux/arm/v7")).map(|d| d.size), Some(2));
        assert_eq!(older.select(&p("linux/arm/v5")).map(|d| d.size), Some(1));
    }
}
