//! An image's attestations read back from a registry, wherever they were attached: the OCI 1.1
//! referrers API (`GET /v2/<name>/referrers/<digest>`), else the referrers tag schema (`sha256-<hex>`,
//! for registries without the API), else BuildKit's index layout (attestation manifests in the image
//! index, pointing at the image by annotation). For an index, each platform image has its own; the
//! attestation entries are never taken for images.
//!
//! `rbuild verify` and `rbuild inspect --sbom|--provenance` of an image that is not in the local store
//! (or with `--remote`) read it here; [`crate::verify`] then checks what was found.

use oci::{media_type, Descriptor, Digest, Index, Manifest, Platform, Reference};

use crate::attach;
use crate::publish::{Found, PublishError};

/// The annotations BuildKit names an attestation manifest's image with (buildx reads both).
const REFERENCE_DIGEST: [&str; 2] = ["vnd.docker.reference.digest", "com.docker.reference.digest"];
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// Where an image's attestations were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The registry's referrers API.
    ReferrersApi,
    /// The `sha256-<hex>` referrers tag.
    ReferrersTag,
    /// An attestation manifest in the image index (BuildKit's layout).
    Index,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ReferrersApi => "referrers API",
            Self::ReferrersTag => "referrers tag",
            Self::Index => "image index",
        })
    }
}

/// One image of a registry reference, with the attestations found for it.
#[derive(Debug, Clone)]
pub struct RemoteImage {
    /// Its platform, when the reference names an index.
    pub platform: Option<Platform>,
    /// The image manifest's digest (what the statements must name as subject).
    pub digest: Digest,
    /// The attestations; empty when none was found.
    pub found: Vec<Found>,
    /// Where they were found; `None` when nowhere.
    pub source: Option<Source>,
}

impl RemoteImage {
    /// `os/arch[/variant]`, or `-` for a reference that names one image manifest.
    pub fn platform_text(&self) -> String {
        self.platform
            .as_ref()
            .map_or_else(|| "-".to_owned(), Platform::to_string)
    }
}

/// Whether an index entry is an attestation manifest (BuildKit's layout), not an image.
pub fn is_attestation_entry(d: &Descriptor) -> bool {
    d.annotations.get(REFERENCE_TYPE).map(String::as_str) == Some("attestation-manifest")
        || d.platform
            .as_ref()
            .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// The images `image` names in its registry (one manifest, or each platform image of an index, or
/// the one `platform` selects) with their attestations.
pub async fn find(
    client: &registry::Client,
    image: &Reference,
    platform: Option<&Platform>,
) -> Result<Vec<RemoteImage>, PublishError> {
    let err = |source| read_error(image, source);
    let top = client.get_manifest_raw(image).await.map_err(err)?;
    if !media_type::is_index(&top.media_type) {
        let (source, found) = referrers(client, image, &top.digest)
            .await?
            .map_or((None, Vec::new()), |(s, f)| (Some(s), f));
        return Ok(vec![RemoteImage {
            platform: None,
            digest: top.digest,
            found,
            source,
        }]);
    }
    let index: Index = serde_json::from_slice(&top.bytes).map_err(|_| PublishError::Malformed {
        digest: top.digest.to_string(),
    })?;
    let (attestations, images): (Vec<Descriptor>, Vec<Descriptor>) = index
        .manifests
        .iter()
        .cloned()
        .partition(is_attestation_entry);
    let images = match platform {
        None => images,
        Some(p) => {
            let only = Index {
                manifests: images.clone(),
                ..index.clone()
            };
            let picked = only
                .select(p)
                .cloned()
                .ok_or_else(|| PublishError::NoPlatform {
                    reference: image.familiar(),
                    platform: p.to_string(),
                    available: images
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            vec![picked]
        }
    };
    let mut out = Vec::new();
    for d in images {
        let mut found = referrers(client, image, &d.digest).await?;
        if found.is_none() {
            found = in_index(client, image, &attestations, &d.digest).await?;
        }
        let (source, found) = found.map_or((None, Vec::new()), |(s, f)| (Some(s), f));
        out.push(RemoteImage {
            platform: d.platform.clone(),
            digest: d.digest.clone(),
            found,
            source,
        });
    }
    Ok(out)
}

fn read_error(image: &Reference, source: registry::Error) -> PublishError {
    PublishError::Read {
        reference: image.familiar(),
        source: Box::new(source),
    }
}

fn at(image: &Reference, digest: &Digest) -> Reference {
    Reference {
        tag: None,
        digest: Some(digest.clone()),
        ..image.clone()
    }
}

/// The in-toto attestations among the referrers of `digest`: by the referrers API, else by the
/// referrers tag. `None` when neither lists any.
async fn referrers(
    client: &registry::Client,
    image: &Reference,
    digest: &Digest,
) -> Result<Option<(Source, Vec<Found>)>, PublishError> {
    let err = |source| read_error(image, source);
    let repo = Reference {
        tag: None,
        digest: None,
        ..image.clone()
    };
    let (source, listed) = match client
        .get_referrers(&repo, digest, Some(attach::ARTIFACT_TYPE))
        .await
        .map_err(err)?
    {
        Some(bytes) => (Source::ReferrersApi, bytes),
        None => {
            let tag = Reference {
                tag: Some(attach::referrers_tag(&digest.to_string())),
                digest: None,
                ..image.clone()
            };
            match client.get_manifest_raw(&tag).await {
                Ok(m) => (Source::ReferrersTag, m.bytes),
                Err(registry::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(err(e)),
            }
        }
    };
    // Read as JSON: `artifactType` is a field the descriptor type does not keep.
    let listed: serde_json::Value =
        serde_json::from_slice(&listed).map_err(|_| PublishError::Malformed {
            digest: format!("referrers of {digest}"),
        })?;
    let mut found = Vec::new();
    // A registry may ignore the artifactType filter, and the tag lists every tool's referrers.
    let ours = listed["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["artifactType"] == attach::ARTIFACT_TYPE)
        .filter_map(|d| d["digest"].as_str()?.parse::<Digest>().ok());
    for referrer in ours {
        let m = client
            .get_manifest_raw(&at(image, &referrer))
            .await
            .map_err(err)?;
        let v: serde_json::Value =
            serde_json::from_slice(&m.bytes).map_err(|_| PublishError::Malformed {
                digest: referrer.to_string(),
            })?;
        // A referrers tag anyone can write may list a manifest about another image: skip it.
        if v["subject"]["digest"].as_str() != Some(digest.to_string().as_str()) {
            tracing::warn!(%referrer, image = %digest, "listed referrer names another subject; skipped");
            continue;
        }
        found.extend(layers(client, image, &m.bytes, &referrer).await?);
    }
    Ok((!found.is_empty()).then_some((source, found)))
}

/// BuildKit's layout: the attestation manifests of `attestations` whose reference annotation names
/// `digest`.
async fn in_index(
    client: &registry::Client,
    image: &Reference,
    attestations: &[Descriptor],
    digest: &Digest,
) -> Result<Option<(Source, Vec<Found>)>, PublishError> {
    let wanted = digest.to_string();
    let mut found = Vec::new();
    for d in attestations.iter().filter(|d| {
        REFERENCE_DIGEST
            .iter()
            .any(|k| d.annotations.get(*k) == Some(&wanted))
    }) {
        let m = client
            .get_manifest_raw(&at(image, &d.digest))
            .await
            .map_err(|source| read_error(image, source))?;
        found.extend(layers(client, image, &m.bytes, &d.digest).await?);
    }
    Ok((!found.is_empty()).then_some((Source::Index, found)))
}

/// The attestation layers (those with an `in-toto.io/predicate-type` annotation) of manifest `bytes`,
/// fetched and checked against their descriptors.
async fn layers(
    client: &registry::Client,
    image: &Reference,
    bytes: &[u8],
    digest: &Digest,
) -> Result<Vec<Found>, PublishError> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|_| PublishError::Malformed {
        digest: digest.to_string(),
    })?;
    let mut out = Vec::new();
    for l in &m.layers {
        let Some(predicate_type) = l.annotations.get(attach::PREDICATE_ANNOTATION) else {
            continue;
        };
        let bytes = client
            .fetch_blob_bytes(&at(image, &l.digest), l)
            .await
            .map_err(|source| read_error(image, source))?;
        out.push(Found {
            predicate_type: predicate_type.clone(),
            media_type: l.media_type.clone(),
            bytes,
        });
    }
    Ok(out)
}

/// Checks the attestations of every image with `key` ([`crate::verify`]: signed by it, in-toto, about
/// that image). An image with none fails, naming where they were looked for; `shown` names the image.
pub fn verify<'a>(
    images: &'a [RemoteImage],
    key: &crate::dsse::VerifyingKey,
    shown: &str,
) -> Result<Vec<(&'a RemoteImage, Vec<crate::Verified>)>, crate::Error> {
    images
        .iter()
        .map(|i| {
            if i.found.is_empty() {
                return Err(crate::Error::Verify(none_found(i, shown)));
            }
            crate::verify(&i.found, key, &i.digest)
                .map(|v| (i, v))
                .map_err(|e| match e {
                    crate::Error::Verify(m) => {
                        crate::Error::Verify(format!("{shown} ({}): {m}", i.platform_text()))
                    }
                    other => other,
                })
        })
        .collect()
}

/// The message for an image without attestations in the registry.
pub fn none_found(i: &RemoteImage, shown: &str) -> String {
    format!(
        "{shown}@{} ({}) has no attestations in the registry: none through the referrers API, none \
         under the tag {}, none in its image index",
        i.digest,
        i.platform_text(),
        attach::referrers_tag(&i.digest.to_string()),
    )
}

/// The predicates of type `predicate_type` of each image, by platform text (`-` for a single image
/// manifest), in index order; an image without any fails with a message naming the image.
pub fn predicates(
    images: &[RemoteImage],
    predicate_type: &str,
    shown: &str,
) -> Result<Vec<(String, Vec<serde_json::Value>)>, crate::Error> {
    images
        .iter()
        .map(|i| {
            if i.found.is_empty() {
                return Err(crate::Error::Flag(none_found(i, shown)));
            }
            let p = crate::predicates(&i.found, predicate_type)?;
            if p.is_empty() {
                return Err(crate::Error::Flag(format!(
                    "{shown}@{} ({}) has attestations but no {predicate_type} one",
                    i.digest,
                    i.platform_text()
                )));
            }
            Ok((i.platform_text(), p))
        })
        .collect()
}

/// What `imagetools inspect --format` prints, for the templates rbuild knows (buildx's Go templates
/// over its inspect result; only these two read attestations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `{{json .SBOM}}`.
    Sbom,
    /// `{{json .Provenance}}`.
    Provenance,
}

impl std::str::FromStr for Template {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let inner = s
            .trim()
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
            .map(|t| t.split_whitespace().collect::<Vec<_>>());
        match inner.as_deref() {
            Some(["json", ".SBOM"]) => Ok(Self::Sbom),
            Some(["json", ".Provenance"]) => Ok(Self::Provenance),
            _ => Err(format!(
                "--format {s:?}: rbuild knows '{{{{json .SBOM}}}}' and '{{{{json .Provenance}}}}' \
                 (use --raw for the manifest)"
            )),
        }
    }
}

/// buildx's `imagetools inspect --format` value for `template`: per image `{"SPDX": …,
/// "AdditionalSPDXs": […]}` or `{"SLSA": …}` (`{}` when it has none, as buildx prints), as is for one
/// image, by platform for several (docker/buildx util/imagetools/loader.go).
pub fn buildx_value(
    images: &[RemoteImage],
    template: Template,
) -> Result<serde_json::Value, crate::Error> {
    use serde_json::{json, Map, Value};
    let stub = |i: &RemoteImage| -> Result<Value, crate::Error> {
        Ok(match template {
            Template::Sbom => {
                // SPDX only, as buildx's loader: a CycloneDX SBOM is no `.SPDX` value.
                let docs = i
                    .found
                    .iter()
                    .filter(|f| f.predicate_type == crate::sbom::PREDICATE_TYPE)
                    .map(|f| f.statement().map(|s| s.predicate))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut m = Map::new();
                if let Some((first, rest)) = docs.split_first() {
                    m.insert("SPDX".into(), first.clone());
                    if !rest.is_empty() {
                        m.insert("AdditionalSPDXs".into(), Value::from(rest.to_vec()));
                    }
                }
                Value::Object(m)
            }
            Template::Provenance => {
                let slsa = i
                    .found
                    .iter()
                    .find(|f| f.predicate_type.starts_with("https://slsa.dev/provenance/"))
                    .map(|f| f.statement().map(|s| s.predicate))
                    .transpose()?;
                slsa.map_or_else(|| json!({}), |p| json!({"SLSA": p}))
            }
        })
    };
    match images {
        [one] => stub(one),
        several => several
            .iter()
            .map(|i| Ok((i.platform_text(), stub(i)?)))
            .collect::<Result<Map<String, Value>, crate::Error>>()
            .map(Value::Object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(platform: Option<&str>, annotations: &[(&str, &str)]) -> Descriptor {
        let mut d = Descriptor::new(media_type::OCI_MANIFEST, Digest::sha256_of(b"m"), 1);
        d.platform = platform.map(|p| p.parse().unwrap());
        d.annotations = annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        d
    }

    #[test]
    fn attestation_entries_are_told_apart_from_platform_images() {
        assert!(!is_attestation_entry(&desc(Some("linux/amd64"), &[])));
        assert!(is_attestation_entry(&desc(
            Some("unknown/unknown"),
            &[(REFERENCE_TYPE, "attestation-manifest")]
        )));
        // Either sign is enough: some tools drop the platform, others the annotation.
        assert!(is_attestation_entry(&desc(
            None,
            &[(REFERENCE_TYPE, "attestation-manifest")]
        )));
        assert!(is_attestation_entry(&desc(Some("unknown/unknown"), &[])));
    }

    #[test]
    fn an_image_without_attestations_names_every_place_looked() {
        let i = RemoteImage {
            platform: Some("linux/arm64".parse().unwrap()),
            digest: Digest::sha256_of(b"image"),
            found: Vec::new(),
            source: None,
        };
        let m = none_found(&i, "reg/app:1");
        assert!(m.contains("(linux/arm64)"), "{m}");
        assert!(m.contains("referrers API"), "{m}");
        assert!(m.contains(&format!("sha256-{}", i.digest.hex())), "{m}");
        assert!(predicates(std::slice::from_ref(&i), "x", "reg/app:1").is_err());
        // buildx prints an empty object for an image without them.
        let v = buildx_value(std::slice::from_ref(&i), Template::Sbom).unwrap();
        assert_eq!(v, serde_json::json!({}));
    }

    #[test]
    fn imagetools_templates_as_buildx_users_write_them() {
        assert_eq!("{{json .SBOM}}".parse(), Ok(Template::Sbom));
        assert_eq!("{{ json .Provenance }}".parse(), Ok(Template::Provenance));
        let e = "{{json .Image}}".parse::<Template>().unwrap_err();
        assert!(e.contains("{{json .SBOM}}"), "{e}");
    }
}
