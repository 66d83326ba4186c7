//! How attestations travel with an image: manifests that hold them, in BuildKit's index layout or as
//! OCI 1.1 referrers.
//!
//! - [`Mode::Index`] (BuildKit's): an attestation manifest (platform `unknown/unknown`, annotations
//!   `vnd.docker.reference.type=attestation-manifest` and `vnd.docker.reference.digest=<image>`) next to
//!   the image manifest in an image index. Docker Hub, Scout and `buildx imagetools inspect` read it; tools
//!   that list platforms list `unknown/unknown` too.
//! - [`Mode::Referrers`] (OCI 1.1): an artifact manifest whose `subject` is the image manifest, found
//!   through the referrers API or, on registries without it, the referrers index under the tag
//!   `sha256-<hex of the image digest>`. The image's own tag keeps pointing at the image alone.
//!
//! Everything here is bytes in, bytes out; pushing and storing is the caller's.

use serde_json::{json, Value};

/// Media type of an in-toto statement layer (BuildKit's).
pub const IN_TOTO_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// Annotation naming a layer's predicate type.
pub const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// `artifactType` of rbuild's referrer manifests (and the BuildKit-layout reference type).
pub const ARTIFACT_TYPE: &str = "application/vnd.in-toto+json";
/// OCI 1.1's empty config blob and its media type.
pub const EMPTY_JSON: &[u8] = b"{}";
/// See [`EMPTY_JSON`].
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Where attestations go (`--attest-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// BuildKit's layout: an `unknown/unknown` entry in the image index.
    Index,
    /// OCI 1.1 referrers: the tag names the image alone.
    #[default]
    Referrers,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "index" => Ok(Self::Index),
            "referrers" => Ok(Self::Referrers),
            other => Err(format!("must be index or referrers, not {other:?}")),
        }
    }
}

/// One attestation blob (a statement, or a DSSE envelope of one).
#[derive(Debug, Clone)]
pub struct Blob {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// `application/vnd.in-toto+json`, or `application/vnd.dsse.envelope.v1+json` when signed.
    pub media_type: &'static str,
    /// The statement's predicate type.
    pub predicate_type: String,
}

/// A manifest's bytes and the descriptor naming them.
#[derive(Debug, Clone)]
pub struct Made {
    /// The manifest JSON.
    pub bytes: Vec<u8>,
    /// Its descriptor (`mediaType`, `digest`, `size`, plus `artifactType`/annotations/platform as placed).
    pub descriptor: Value,
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({
        "mediaType": media_type,
        "digest": oci::Digest::sha256_of(bytes).to_string(),
        "size": bytes.len(),
    })
}

fn layers(blobs: &[Blob]) -> Vec<Value> {
    blobs
        .iter()
        .map(|b| {
            let mut d = descriptor(b.media_type, &b.bytes);
            d["annotations"] = json!({PREDICATE_ANNOTATION: b.predicate_type});
            d
        })
        .collect()
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a JSON value always serializes")
}

/// The OCI 1.1 artifact manifest holding `blobs`, whose `subject` is the image manifest `image`
/// (a descriptor with `mediaType`, `digest`, `size`). Its config is the empty blob [`EMPTY_JSON`].
pub fn referrer_manifest(image: &Value, blobs: &[Blob]) -> Made {
    let mut subject = json!({
        "mediaType": image["mediaType"],
        "digest": image["digest"],
        "size": image["size"],
    });
    if subject["mediaType"].is_null() {
        subject["mediaType"] = json!(OCI_MANIFEST);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": descriptor(EMPTY_MEDIA_TYPE, EMPTY_JSON),
        "layers": layers(blobs),
        "subject": subject,
    });
    let bytes = to_bytes(&manifest);
    let mut d = descriptor(OCI_MANIFEST, &bytes);
    d["artifactType"] = json!(ARTIFACT_TYPE);
    Made {
        bytes,
        descriptor: d,
    }
}

/// The referrers index (tag schema `sha256-<hex>`): `existing`'s entries with `referrer` added, sorted by
/// digest so that the bytes are stable.
///
/// A new attestation set replaces the earlier ones of the same `artifactType` (a rebuild of the same image
/// does not pile up provenance of every build); other tools' referrers (signatures, …) stay.
pub fn referrers_index(existing: Option<&[u8]>, referrer: &Value) -> Vec<u8> {
    let mut manifests: Vec<Value> = existing
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    manifests.retain(|m| {
        m["digest"] != referrer["digest"] && m["artifactType"] != referrer["artifactType"]
    });
    manifests.push(referrer.clone());
    manifests.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
}

/// The referrers-tag name for an image manifest digest (`sha256:ab…` → `sha256-ab…`).
pub fn referrers_tag(image_digest: &str) -> String {
    image_digest.replacen(':', "-", 1)
}

/// BuildKit's attestation manifest for `blobs`, with its config blob (an `unknown/unknown` image config
/// whose diff_ids are the blobs' digests, as BuildKit writes it). Returns (manifest, config bytes).
pub fn buildkit_manifest(image_digest: &str, blobs: &[Blob]) -> (Made, Vec<u8>) {
    let diff_ids: Vec<String> = blobs
        .iter()
        .map(|b| oci::Digest::sha256_of(&b.bytes).to_string())
        .collect();
    let config = to_bytes(&json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": layers(blobs),
    });
    let bytes = to_bytes(&manifest);
    let mut d = descriptor(OCI_MANIFEST, &bytes);
    d["annotations"] = json!({
        "vnd.docker.reference.digest": image_digest,
        "vnd.docker.reference.type": "attestation-manifest",
    });
    d["platform"] = json!({"architecture": "unknown", "os": "unknown"});
    (
        Made {
            bytes,
            descriptor: d,
        },
        config,
    )
}

/// An image index of the image manifests (with their platforms) followed by their attestation manifests.
///
/// The one place this crate builds an image index; a multi-platform build passes every platform's image
/// and attestation descriptors.
pub fn index_with_attestations(images: &[Value], attestations: &[Value]) -> Vec<u8> {
    let manifests: Vec<Value> = images.iter().chain(attestations).cloned().collect();
    to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    }))
}

/// The attestation blobs an artifact or attestation manifest holds, with their predicate types, read
/// back from the manifest JSON: (predicate type, media type, digest).
pub fn layers_of(manifest: &[u8]) -> Vec<(String, String, String)> {
    let Ok(v) = serde_json::from_slice::<Value>(manifest) else {
        return Vec::new();
    };
    v["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    (
                        l["annotations"][PREDICATE_ANNOTATION]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        l["mediaType"].as_str().unwrap_or_default().to_owned(),
                        l["digest"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob() -> Blob {
        Blob {
            bytes: b"{\"_type\":\"x\"}".to_vec(),
            media_type: IN_TOTO_MEDIA_TYPE,
            predicate_type: "https://slsa.dev/provenance/v1".into(),
        }
    }

    fn image() -> Value {
        json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "ab".repeat(32)), "size": 10,
               "platform": {"architecture": "amd64", "os": "linux"}})
    }

    #[test]
    fn referrer_manifest_names_its_subject_and_empty_config() {
        let m = referrer_manifest(&image(), &[blob()]);
        let v: Value = serde_json::from_slice(&m.bytes).unwrap();
        assert_eq!(v["subject"]["digest"], image()["digest"]);
        assert!(v["subject"].get("platform").is_none());
        assert_eq!(v["config"]["mediaType"], EMPTY_MEDIA_TYPE);
        assert_eq!(v["config"]["size"], 2);
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(m.descriptor["artifactType"], ARTIFACT_TYPE);
        assert_eq!(layers_of(&m.bytes)[0].0, "https://slsa.dev/provenance/v1");

        let idx = referrers_index(None, &m.descriptor);
        let again = referrers_index(Some(&idx), &m.descriptor);
        assert_eq!(idx, again, "adding the same referrer twice changes nothing");
        let v: Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
        // A signature of another tool stays; a newer attestation set replaces ours.
        let foreign = json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "01".repeat(32)),
                             "size": 3, "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json"});
        let with_foreign = referrers_index(Some(&again), &foreign);
        let newer = referrer_manifest(&image(), &[blob(), blob()]);
        let replaced = referrers_index(Some(&with_foreign), &newer.descriptor);
        let v: Value = serde_json::from_slice(&replaced).unwrap();
        let digests: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests.len(), 2, "{v}");
        assert!(digests.contains(&foreign["digest"].as_str().unwrap()));
        assert!(digests.contains(&newer.descriptor["digest"].as_str().unwrap()));
        assert_eq!(referrers_tag("sha256:abcd"), "sha256-abcd");
    }

    #[test]
    fn buildkit_layout_entry() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let (m, config) = buildkit_manifest(&digest, &[blob()]);
        assert_eq!(m.descriptor["platform"]["os"], "unknown");
        assert_eq!(
            m.descriptor["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        let c: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(
            c["rootfs"]["diff_ids"][0],
            oci::Digest::sha256_of(&blob().bytes).to_string()
        );
        let idx: Value =
            serde_json::from_slice(&index_with_attestations(&[image()], &[m.descriptor])).unwrap();
        assert_eq!(idx["manifests"][0]["platform"]["architecture"], "amd64");
        assert_eq!(
            idx["manifests"][1]["annotations"]["vnd.docker.reference.digest"],
            digest
        );
    }
}
