//! Pushing blobs to a registry: skipped when it has them, mounted from another repository when it can,
//! fetched from a [`BlobSource`] only when they must be uploaded, verified before any manifest names them.

use anyhow::{bail, Context as _, Result};
use images::BlobSource;
use oci::{Descriptor, Reference};

use crate::eager::EagerPush;

/// What [`push_blobs`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PushStats {
    pub uploaded: usize,
    pub uploaded_bytes: u64,
    pub present: usize,
    pub mounted: usize,
}

/// Pushes `descs` to `dest`'s repository and then checks that the registry has every one of them.
///
/// A blob the store does not have (a layer of an imported cache never downloaded) is not downloaded when
/// the registry has it already or can mount it from the cache's repository; only otherwise is it fetched
/// and uploaded. Blobs the store has are mounted from a repository they were pulled from or pushed to,
/// when there is one on this registry.
pub async fn push_blobs(
    client: &registry::Client,
    store: &cache::Store,
    source: &dyn BlobSource,
    eager: Option<&EagerPush>,
    descs: &[Descriptor],
    dest: &Reference,
) -> Result<PushStats> {
    let mut unique: Vec<&Descriptor> = Vec::new();
    for d in descs {
        if !unique.iter().any(|u| u.digest == d.digest) {
            unique.push(d);
        }
    }
    let uploads = unique.iter().map(|&d| async move {
        let what = || format!("pushing blob {} to {}", d.digest, dest.familiar());
        // Uploaded while it was written (checked with the others below).
        if let Some(eager) = eager {
            if eager.uploaded(dest, &d.digest).await {
                return Ok::<_, anyhow::Error>(registry::PushOutcome::Uploaded);
            }
        }
        if !store.has_blob(&d.digest) {
            if client.has_blob(dest, &d.digest).await.with_context(what)? {
                return Ok::<_, anyhow::Error>(registry::PushOutcome::Exists);
            }
            if let Some(repo) = source.registry_repo(&d.digest, &dest.registry) {
                if client.mount_blob(dest, d, &repo).await.with_context(what)? {
                    return Ok(registry::PushOutcome::Mounted);
                }
            }
            source.fetch(store, d).await.with_context(what)?;
        }
        let from = store
            .blob_sources(&d.digest, &dest.registry)
            .unwrap_or_default()
            .into_iter()
            .find(|repo| *repo != dest.repository);
        client
            .push_blob_from(dest, d, &store.blob_path(&d.digest), from.as_deref())
            .await
            .with_context(what)
    });
    let outcomes = futures_util::future::join_all(uploads).await;
    let mut stats = PushStats::default();
    let mut to_verify = Vec::new();
    for (d, outcome) in unique.iter().zip(outcomes) {
        match outcome? {
            registry::PushOutcome::Exists => stats.present += 1,
            registry::PushOutcome::Mounted => {
                stats.mounted += 1;
                to_verify.push(*d);
            }
            registry::PushOutcome::Uploaded => {
                stats.uploaded += 1;
                stats.uploaded_bytes += d.size;
                to_verify.push(*d);
            }
        }
        store.blob_source_add(&d.digest, &dest.registry, &dest.repository)?;
    }
    // Before any manifest goes up: every blob it will name must be there (never an image with missing
    // layers). Blobs found by a HEAD just now are; the others are asked again.
    let checks = to_verify.iter().map(|d| async move {
        let present = client.has_blob(dest, &d.digest).await?;
        Ok::<_, registry::Error>((d, present))
    });
    for r in futures_util::future::join_all(checks).await {
        let (d, present) = r?;
        if !present {
            bail!(
                "{} does not have blob {} after it was pushed; not pushing a manifest that names it",
                dest.familiar(),
                d.digest
            );
        }
    }
    Ok(stats)
}
