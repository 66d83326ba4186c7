//! `rbuild verify` and `rbuild inspect --sbom|--provenance`: the attestations a build stored (made by the
//! driver crate), or those of an image in a registry (`attest::remote`). The work is the attest crate's.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use oci::Reference;

use crate::cli::RemoteArgs;

/// The image named `name` in the store and its attestations.
fn load(store: &cache::Store, name: &str) -> Result<(oci::Digest, Vec<attest::publish::Found>)> {
    let image = export::local_image(store, name)?;
    let reference: Reference = name.parse().map_err(|e| anyhow!("{name}: {e}"))?;
    let digest = image.manifest_desc.digest;
    let found = attest::publish::load(store, &reference, &digest)?;
    Ok((digest, found))
}

/// The images `name` names in its registry with their attestations, when `--remote` is given or the
/// local store has no attestations of `name` (or not `name`); `None` to read the local store.
fn remote_images(
    store: &cache::Store,
    name: &str,
    remote: &RemoteArgs,
    rt: &dyn Fn() -> Result<tokio::runtime::Runtime>,
) -> Result<Option<Vec<attest::remote::RemoteImage>>> {
    // A pulled image has no attestations in the store: then its registry is asked too.
    let local = !remote.remote && store.find_image(name).is_ok();
    if local && !load(store, name)?.1.is_empty() {
        return Ok(None);
    }
    let reference: Reference = name.parse().map_err(|e| anyhow!("{name}: {e}"))?;
    let opts = remote.registry.client_options(&remote.insecure_registries);
    let client = registry::Client::new(opts)?;
    let found = rt()?.block_on(attest::remote::find(
        &client,
        &reference,
        remote.platform.as_ref(),
    ));
    let images = found.with_context(|| {
        if remote.remote {
            format!("reading {name} from its registry")
        } else if local {
            format!("{name} has no attestations in the local store; reading them from its registry")
        } else {
            format!("{name} is not in the local store; reading it from its registry")
        }
    })?;
    Ok(Some(images))
}

/// `rbuild verify --key PUB IMAGE`: every attestation of the image (of each platform image of an index
/// in a registry) signed by the key, about the image.
pub(crate) fn verify(
    store: &cache::Store,
    key: &Path,
    name: &str,
    remote: &RemoteArgs,
    rt: &dyn Fn() -> Result<tokio::runtime::Runtime>,
) -> Result<()> {
    let pem = fs_err::read_to_string(key).context("--key")?;
    let key = attest::dsse::VerifyingKey::from_pem(&pem, &key.display().to_string())?;
    let key_text = format!("{} key {}", key.algorithm(), &key.key_id()[..16]);
    if let Some(images) = remote_images(store, name, remote, rt)? {
        let checked = attest::remote::verify(&images, &key, name)
            .with_context(|| format!("verifying {name}"))?;
        for (image, ok) in checked {
            let source = image.source.map(|s| s.to_string()).unwrap_or_default();
            let place = match &image.platform {
                Some(p) => format!("{p}, {source}"),
                None => source,
            };
            for v in ok {
                println!(
                    "verified {} for {name}@sha256:{} ({place}) ({key_text})",
                    v.predicate_type, v.subject
                );
            }
        }
        return Ok(());
    }
    let (digest, found) = load(store, name)?;
    let ok = attest::verify(&found, &key, &digest).with_context(|| format!("verifying {name}"))?;
    for v in ok {
        println!(
            "verified {} for {name}@sha256:{} ({key_text})",
            v.predicate_type, v.subject
        );
    }
    Ok(())
}

/// `rbuild inspect --sbom|--provenance IMAGE`: the predicate(s) of that type, as JSON; for several
/// platform images of a registry index, one object by platform.
pub(crate) fn inspect(
    store: &cache::Store,
    name: &str,
    remote: &RemoteArgs,
    rt: &dyn Fn() -> Result<tokio::runtime::Runtime>,
    predicate_type: &str,
) -> Result<()> {
    if let Some(images) = remote_images(store, name, remote, rt)? {
        let shown = attest::remote::predicates(&images, predicate_type, name)?;
        match shown.as_slice() {
            [(_, one)] => {
                for p in one {
                    println!("{}", serde_json::to_string_pretty(p)?);
                }
            }
            several => {
                let by_platform: serde_json::Map<String, serde_json::Value> = several
                    .iter()
                    .map(|(p, v)| (p.clone(), serde_json::Value::from(v.clone())))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&by_platform)?);
            }
        }
        return Ok(());
    }
    let (digest, found) = load(store, name)?;
    let shown = attest::predicates(&found, predicate_type)?;
    if shown.is_empty() {
        return Err(anyhow!(
            "{name} ({digest}) has no {predicate_type} attestation in the local store \
             (build it with --provenance / --sbom)"
        ));
    }
    for p in shown {
        println!("{}", serde_json::to_string_pretty(&p)?);
    }
    Ok(())
}
