//! Attestations into the local store and to registries, and back out of the store.
//!
//! In the local store they are always OCI referrers under the tag schema: an artifact manifest (subject =
//! the image manifest) listed by the index tagged `NAME:sha256-<hex>`, so that the image's own tag keeps
//! naming the image and `rbuild run`/`push` see no change. On push, [`attach::Mode`] decides.

use oci::{Descriptor, Digest, Reference};
use serde_json::Value;

use crate::attach::{self, Blob, Made};

/// Why storing, pushing or reading attestations failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("storing attestations of {image}")]
    Store {
        image: String,
        #[source]
        source: Box<cache::Error>,
    },
    #[error("pushing attestations to {reference}")]
    Push {
        reference: String,
        #[source]
        source: Box<registry::Error>,
    },
    #[error("attestation manifest {digest} is not valid JSON")]
    Malformed { digest: String },
    #[error("reading the attestations of {reference}")]
    Read {
        reference: String,
        #[source]
        source: Box<registry::Error>,
    },
    #[error("{reference} has no image for {platform} (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
}

/// What an image's attestations are, once placed.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The referrer manifest (subject = image).
    pub referrer: Made,
}

fn desc(v: &Value) -> Descriptor {
    serde_json::from_value(v.clone()).expect("descriptors made by attach are valid OCI descriptors")
}

/// The referrers-tag name of `image` in the store: `NAME:sha256-<hex>` for tag `NAME[:TAG]`.
pub fn referrers_tag_name(name: &Reference, image_digest: &Digest) -> String {
    let mut r = name.clone();
    r.tag = Some(attach::referrers_tag(&image_digest.to_string()));
    r.digest = None;
    r.familiar()
}

/// Stores `blobs` as a referrer of `image` and tags its referrers index for each of `names`.
pub fn save(
    store: &cache::Store,
    names: &[Reference],
    image: &Descriptor,
    blobs: &[Blob],
) -> Result<Placed, PublishError> {
    let err = |source| PublishError::Store {
        image: image.digest.to_string(),
        source: Box::new(source),
    };
    for b in blobs {
        store.put_blob(&b.bytes).map_err(err)?;
    }
    store.put_blob(attach::EMPTY_JSON).map_err(err)?;
    let image_json = serde_json::to_value(image).expect("a descriptor serializes");
    let referrer = attach::referrer_manifest(&image_json, blobs);
    store.put_blob(&referrer.bytes).map_err(err)?;
    for name in names {
        let tag = referrers_tag_name(name, &image.digest);
        let existing = store
            .resolve_tag(&tag)
            .map_err(err)?
            .and_then(|d| store.read_blob(&d.digest).ok());
        let index = attach::referrers_index(existing.as_deref(), &referrer.descriptor);
        let digest = store.put_blob(&index).map_err(err)?;
        let index_desc = desc(&serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest.to_string(),
            "size": index.len(),
        }));
        store.set_tag(&tag, &index_desc).map_err(err)?;
    }
    Ok(Placed { referrer })
}

/// An attestation read back: its predicate type, media type and bytes.
#[derive(Debug, Clone)]
pub struct Found {
    /// `https://slsa.dev/provenance/v1`, `https://spdx.dev/Document`.
    pub predicate_type: String,
    /// in-toto statement or DSSE envelope.
    pub media_type: String,
    /// The blob.
    pub bytes: Vec<u8>,
}

impl Found {
    /// The blob to push again (`rbuild push` of an image with stored attestations).
    pub fn to_blob(&self) -> Blob {
        Blob {
            bytes: self.bytes.clone(),
            media_type: if self.media_type == crate::dsse::ENVELOPE_MEDIA_TYPE {
                crate::dsse::ENVELOPE_MEDIA_TYPE
            } else {
                attach::IN_TOTO_MEDIA_TYPE
            },
            predicate_type: self.predicate_type.clone(),
        }
    }

    /// The in-toto statement, out of its envelope when signed (the signature is not checked here:
    /// [`crate::verify`] does that).
    pub fn statement(&self) -> Result<crate::Statement, crate::Error> {
        let bytes = if self.media_type == crate::dsse::ENVELOPE_MEDIA_TYPE {
            let env: crate::dsse::Envelope =
                serde_json::from_slice(&self.bytes).map_err(|e| crate::Error::Malformed {
                    what: "DSSE envelope",
                    message: e.to_string(),
                })?;
            env.payload_bytes()?
        } else {
            self.bytes.clone()
        };
        serde_json::from_slice(&bytes).map_err(|e| crate::Error::Malformed {
            what: "in-toto statement",
            message: e.to_string(),
        })
    }
}

/// The attestations the store holds for image `name` (tag) whose manifest is `image_digest`, newest
/// referrer last.
pub fn load(
    store: &cache::Store,
    name: &Reference,
    image_digest: &Digest,
) -> Result<Vec<Found>, PublishError> {
    let err = |source| PublishError::Store {
        image: image_digest.to_string(),
        source: Box::new(source),
    };
    let Some(index) = store
        .resolve_tag(&referrers_tag_name(name, image_digest))
        .map_err(err)?
    else {
        return Ok(Vec::new());
    };
    let index: Value = serde_json::from_slice(&store.read_blob(&index.digest).map_err(err)?)
        .map_err(|_| PublishError::Malformed {
            digest: index.digest.to_string(),
        })?;
    let mut out = Vec::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let Some(d) = m["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) else {
            continue;
        };
        let manifest = store.read_blob(&d).map_err(err)?;
        for (predicate_type, media_type, digest) in attach::layers_of(&manifest) {
            let Ok(digest) = digest.parse::<Digest>() else {
                continue;
            };
            out.push(Found {
                predicate_type,
                media_type,
                bytes: store.read_blob(&digest).map_err(err)?,
            });
        }
    }
    Ok(out)
}

/// Pushes the attestations of an image already pushed to `dest` (by tag). Returns the digest the tag
/// names afterwards: the image's (referrers mode) or the new index's (index mode). [`save`] must have
/// stored the blobs first.
pub async fn push(
    client: &registry::Client,
    store: &cache::Store,
    dest: &Reference,
    image: &Descriptor,
    platform: &oci::Platform,
    blobs: &[Blob],
    mode: attach::Mode,
) -> Result<Digest, PublishError> {
    let err = |source| PublishError::Push {
        reference: dest.familiar(),
        source: Box::new(source),
    };
    let by_digest = |d: &Digest| Reference {
        tag: None,
        digest: Some(d.clone()),
        ..dest.clone()
    };
    let upload = |bytes: &[u8], media_type: &str| {
        let d = desc(&serde_json::json!({
            "mediaType": media_type,
            "digest": Digest::sha256_of(bytes).to_string(),
            "size": bytes.len(),
        }));
        let path = store.blob_path(&d.digest);
        async move { client.push_blob(dest, &d, &path).await.map(|_| ()) }
    };
    for b in blobs {
        upload(&b.bytes, b.media_type).await.map_err(err)?;
    }
    let image_json = serde_json::to_value(image).expect("a descriptor serializes");
    match mode {
        attach::Mode::Referrers => {
            upload(attach::EMPTY_JSON, attach::EMPTY_MEDIA_TYPE)
                .await
                .map_err(err)?;
            let referrer = attach::referrer_manifest(&image_json, blobs);
            let digest = Digest::sha256_of(&referrer.bytes);
            let answer = client
                .put_manifest_answer(&by_digest(&digest), &oci_manifest(), &referrer.bytes)
                .await
                .map_err(err)?;
            if !needs_referrers_tag(answer.oci_subject.as_deref(), &image.digest) {
                tracing::debug!(reference = %dest, "registry indexes referrers itself (OCI-Subject)");
                return Ok(image.digest.clone());
            }
            // The referrers tag schema, for registries without the referrers API.
            let tag = Reference {
                tag: Some(attach::referrers_tag(&image.digest.to_string())),
                digest: None,
                ..dest.clone()
            };
            let existing = client.get_manifest_raw(&tag).await.ok().map(|m| m.bytes);
            let index = attach::referrers_index(existing.as_deref(), &referrer.descriptor);
            client
                .put_manifest(&tag, "application/vnd.oci.image.index.v1+json", &index)
                .await
                .map_err(err)?;
            Ok(image.digest.clone())
        }
        attach::Mode::Index => {
            let manifest = push_attestation_manifest(client, store, dest, image, blobs).await?;
            let mut image_entry = image_json.clone();
            image_entry["platform"] =
                serde_json::to_value(platform).expect("a platform serializes");
            let index = attach::index_with_attestations(&[image_entry], &[manifest]);
            client
                .put_manifest(dest, "application/vnd.oci.image.index.v1+json", &index)
                .await
                .map_err(err)
        }
    }
}

/// Pushes one blob the store holds to `dest`'s repository.
async fn upload_blob(
    client: &registry::Client,
    store: &cache::Store,
    dest: &Reference,
    bytes: &[u8],
    media_type: &str,
) -> Result<(), PublishError> {
    let d = desc(&serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::sha256_of(bytes).to_string(),
        "size": bytes.len(),
    }));
    client
        .push_blob(dest, &d, &store.blob_path(&d.digest))
        .await
        .map(|_| ())
        .map_err(|source| PublishError::Push {
            reference: dest.familiar(),
            source: Box::new(source),
        })
}

/// BuildKit's `unknown/unknown` attestation manifest of `image` (blobs already pushed), with its config,
/// pushed by digest to `dest`'s repository; returns its index entry.
async fn push_attestation_manifest(
    client: &registry::Client,
    store: &cache::Store,
    dest: &Reference,
    image: &Descriptor,
    blobs: &[Blob],
) -> Result<Value, PublishError> {
    let err = |source| PublishError::Push {
        reference: dest.familiar(),
        source: Box::new(source),
    };
    let (manifest, config) = attach::buildkit_manifest(&image.digest.to_string(), blobs);
    store
        .put_blob(&config)
        .map_err(|source| PublishError::Store {
            image: image.digest.to_string(),
            source: Box::new(source),
        })?;
    upload_blob(
        client,
        store,
        dest,
        &config,
        "application/vnd.oci.image.config.v1+json",
    )
    .await?;
    let by_digest = Reference {
        tag: None,
        digest: Some(Digest::sha256_of(&manifest.bytes)),
        ..dest.clone()
    };
    client
        .put_manifest(&by_digest, &oci_manifest(), &manifest.bytes)
        .await
        .map_err(err)?;
    Ok(manifest.descriptor)
}

/// Pushes the attestations of each platform image of a multi-platform build whose index `index` (its
/// JSON) is already pushed to `dest`. Referrers mode: each image gets its referrers, `dest` keeps
/// naming `index`. Index mode (BuildKit's layout): one `unknown/unknown` attestation manifest per image
/// after the platform entries, in a new index pushed to `dest`. Returns the digest `dest` names.
pub async fn push_platforms(
    client: &registry::Client,
    store: &cache::Store,
    dest: &Reference,
    index: &[u8],
    images: &[(&Descriptor, &oci::Platform, &[Blob])],
    mode: attach::Mode,
) -> Result<Digest, PublishError> {
    let mut attestations = Vec::new();
    for (image, platform, blobs) in images {
        match mode {
            attach::Mode::Referrers => {
                push(client, store, dest, image, platform, blobs, mode).await?;
            }
            attach::Mode::Index => {
                for b in *blobs {
                    upload_blob(client, store, dest, &b.bytes, b.media_type).await?;
                }
                attestations
                    .push(push_attestation_manifest(client, store, dest, image, blobs).await?);
            }
        }
    }
    if mode == attach::Mode::Referrers {
        return Ok(Digest::sha256_of(index));
    }
    let entries: Value = serde_json::from_slice(index).map_err(|_| PublishError::Malformed {
        digest: Digest::sha256_of(index).to_string(),
    })?;
    let entries: Vec<Value> = entries["manifests"].as_array().cloned().unwrap_or_default();
    let bytes = attach::index_with_attestations(&entries, &attestations);
    client
        .put_manifest(dest, "application/vnd.oci.image.index.v1+json", &bytes)
        .await
        .map_err(|source| PublishError::Push {
            reference: dest.familiar(),
            source: Box::new(source),
        })
}

/// Whether the `sha256-<hex>` referrers tag must be written after pushing a manifest whose subject is
/// `subject`: yes unless the registry answered `OCI-Subject: <subject digest>`, which per the OCI
/// distribution spec 1.1 means it supports the referrers API and listed the manifest itself (the spec's
/// client rule; the tag would be redundant there). A header naming another digest is not trusted.
pub fn needs_referrers_tag(oci_subject: Option<&str>, subject: &Digest) -> bool {
    match oci_subject {
        Some(s) if s.trim() == subject.to_string() => false,
        Some(s) => {
            tracing::warn!(header = s, %subject, "OCI-Subject names another digest; writing the referrers tag");
            true
        }
        None => true,
    }
}

fn oci_manifest() -> String {
    "application/vnd.oci.image.manifest.v1+json".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_tag_written_only_without_a_matching_oci_subject_header() {
        let subject = Digest::sha256_of(b"image manifest");
        // docker-registry (distribution 2.8) and other registries without the referrers API.
        assert!(needs_referrers_tag(None, &subject));
        // A registry with the referrers API echoes the subject's digest.
        assert!(!needs_referrers_tag(Some(&subject.to_string()), &subject));
        let other = Digest::sha256_of(b"something else");
        assert!(needs_referrers_tag(Some(&other.to_string()), &subject));
    }
}
