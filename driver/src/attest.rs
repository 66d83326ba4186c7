//! Attestations of a build (`--provenance`, `--sbom`, `--attest`, `--sign-key`) wired to the build's
//! parts, and pushed beside its image (or, by `rbuild push`, beside a stored image). The work is the
//! attest crate's.

use std::collections::BTreeMap;

use anyhow::Result;
use oci::Reference;

use crate::request::{AttestFlags, BuildRequest};

/// Reads the flags; `None` when no attestation is asked for.
pub(crate) fn wanted(a: &AttestFlags) -> Result<Option<attest::Wanted>> {
    Ok(attest::Wanted::from_flags(
        a.provenance.as_deref(),
        a.sbom.as_deref(),
        &a.attest,
        a.sign_key.as_deref(),
        &a.attest_mode,
    )?)
}

/// What [`make`] reads of the build.
pub(crate) struct Build<'a> {
    pub(crate) req: &'a BuildRequest,
    pub(crate) build_args: &'a BTreeMap<String, String>,
    pub(crate) dockerfile: &'a attest::provenance::Dockerfile,
    pub(crate) lowered: &'a frontend::Lowered,
    pub(crate) solved: &'a solver::Solved,
    pub(crate) images: &'a images::Images,
    pub(crate) platform: &'a oci::Platform,
    pub(crate) image: &'a export::Image,
    pub(crate) tags: &'a [Reference],
    pub(crate) started: i64,
    pub(crate) source_date_epoch: Option<i64>,
    /// The context's file-tree digest (max provenance).
    pub(crate) context_digest: Option<oci::Digest>,
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Makes the image's attestations and stores them as its referrers.
pub(crate) fn make(
    w: &attest::Wanted,
    b: &Build<'_>,
    store: &cache::Store,
) -> Result<attest::Attested> {
    let name = b
        .tags
        .first()
        .map_or_else(|| "image".to_owned(), Reference::to_string);
    let secrets = exec::Secrets::parse(&b.req.secrets, &b.req.ssh)?;
    let mut redactor = attest::redact::Redactor::default();
    for id in secrets.ids() {
        if let Ok(Some(v)) = secrets.value(&id) {
            redactor.add(&String::from_utf8_lossy(&v));
        }
    }
    let bases = attest::bases(&b.lowered.graph, |reference| {
        let r = b.images.resolve_for(reference, b.platform)?;
        Ok::<_, anyhow::Error>(attest::provenance::ResolvedImage {
            reference: r
                .reference
                .as_ref()
                .map_or_else(|| reference.to_owned(), Reference::to_string),
            digest: r.manifest_desc.digest.to_string(),
        })
    })?;
    let mut scans = Vec::new();
    if let Some(scan_stages) = w.request.sbom {
        let layers = export::image_layers(store, b.image)?;
        scans.push(attest::Scan {
            file: "sbom".into(),
            name: name.clone(),
            layers: images::snapshots(store, &layers)?,
        });
        for (i, s) in b.lowered.stages.iter().enumerate() {
            match b.solved.outcomes.get(&s.head) {
                Some(o) if scan_stages && i != b.lowered.target => {
                    let label = s.name.clone().unwrap_or_else(|| i.to_string());
                    scans.push(attest::Scan {
                        file: format!("sbom-{label}"),
                        name: format!("{name} (stage {label})"),
                        layers: images::snapshots(store, &o.layers)?,
                    });
                }
                _ => {}
            }
        }
    }
    let digest = &b.image.manifest_desc.digest;
    // A rebuild of the same image reuses its stored SBOM; `--no-cache` scans again.
    let previous = match b.tags.first() {
        Some(t) if !b.req.no_cache => attest::publish::load(store, t, digest)?,
        _ => Vec::new(),
    };
    let p = b.platform;
    let inputs = attest::Inputs {
        name,
        image_digest: digest,
        provenance: attest::provenance::Provenance {
            subject: Vec::new(),
            mode: attest::provenance::Mode::Min,
            builder_id: format!("rbuild {}", env!("CARGO_PKG_VERSION")),
            build_args: b.build_args,
            target: b.req.target.as_deref(),
            platform: match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            },
            secret_ids: secrets.ids(),
            dockerfile: b.dockerfile,
            graph: &b.lowered.graph,
            head: b.lowered.stages[b.lowered.target].head,
            solved: b.solved,
            bases: &bases,
            context_digest: b.context_digest.as_ref().map(|d| d.hex().to_owned()),
            started: b.started,
            finished: now(),
            source_date_epoch: b.source_date_epoch,
            redactor: &redactor,
        },
        scans,
        previous,
        listings: Some(store),
    };
    let made = attest::make(w, inputs)?;
    attest::publish::save(store, b.tags, &b.image.manifest_desc, &made.blobs)?;
    Ok(made)
}

/// Pushes them next to the image already pushed to `dest`; returns the digest `dest` names now.
pub(crate) fn push(
    a: &attest::Attested,
    client: &registry::Client,
    store: &cache::Store,
    rt: &tokio::runtime::Runtime,
    dest: &Reference,
    image: &export::Image,
    platform: &oci::Platform,
) -> Result<oci::Digest> {
    let desc = &image.manifest_desc;
    let pushed = attest::publish::push(client, store, dest, desc, platform, &a.blobs, a.mode);
    Ok(rt.block_on(pushed)?)
}

/// A multi-platform build's attestations, next to its index already pushed to `dest` (each `(image,
/// platform, attestations)`); returns the digest `dest` names now.
pub(crate) fn push_platforms(
    client: &registry::Client,
    store: &cache::Store,
    rt: &tokio::runtime::Runtime,
    dest: &Reference,
    index: &[u8],
    attested: &[(&export::Image, &oci::Platform, &attest::Attested)],
) -> Result<oci::Digest> {
    let Some((.., first)) = attested.first() else {
        return Ok(oci::Digest::sha256_of(index));
    };
    let each: Vec<_> = attested
        .iter()
        .map(|(i, p, a)| (&i.manifest_desc, *p, a.blobs.as_slice()))
        .collect();
    let pushed = attest::publish::push_platforms(client, store, dest, index, &each, first.mode);
    Ok(rt.block_on(pushed)?)
}

/// `rbuild push`: the attestations the store holds for the image go along, as OCI referrers of `dest`.
pub fn push_stored(
    store: &cache::Store,
    client: &registry::Client,
    rt: &tokio::runtime::Runtime,
    source: &str,
    dest: &Reference,
    image: &export::Image,
) -> Result<usize> {
    // An image named by ID or digest has no tag, hence no referrers index in the store.
    let Ok(source) = source.parse::<Reference>() else {
        return Ok(0);
    };
    let desc = &image.manifest_desc;
    let found = attest::publish::load(store, &source, &desc.digest)?;
    if found.is_empty() {
        return Ok(0);
    }
    let blobs: Vec<_> = found.iter().map(attest::publish::Found::to_blob).collect();
    let platform = oci::Platform::host(); // only the index layout names a platform
    let mode = attest::attach::Mode::Referrers;
    rt.block_on(attest::publish::push(
        client, store, dest, desc, &platform, &blobs, mode,
    ))?;
    Ok(blobs.len())
}
