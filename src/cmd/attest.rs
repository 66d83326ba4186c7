//! `rbuild verify` and `rbuild inspect --sbom|--provenance`: the attestations a build stored (made by the
//! driver crate). The work is the attest crate's.

use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use oci::Reference;

/// The image named `name` in the store and its attestations.
fn load(store: &cache::Store, name: &str) -> Result<(oci::Digest, Vec<attest::publish::Found>)> {
    let image = export::local_image(store, name)?;
    let reference: Reference = name.parse().map_err(|e| anyhow!("{name}: {e}"))?;
    let digest = image.manifest_desc.digest;
    let found = attest::publish::load(store, &reference, &digest)?;
    Ok((digest, found))
}

/// `rbuild verify --key PUB IMAGE`: every attestation of the image signed by the key, about the image.
pub(crate) fn verify(store: &cache::Store, key: &Path, name: &str) -> Result<()> {
    let pem = fs_err::read_to_string(key).context("--key")?;
    let key = attest::dsse::VerifyingKey::from_pem(&pem, &key.display().to_string())?;
    let (digest, found) = load(store, name)?;
    let ok = attest::verify(&found, &key, &digest).with_context(|| format!("verifying {name}"))?;
    for v in ok {
        println!(
            "verified {} for {name}@sha256:{} ({} key {})",
            v.predicate_type,
            v.subject,
            key.algorithm(),
            &key.key_id()[..16]
        );
    }
    Ok(())
}

/// `rbuild inspect --sbom|--provenance IMAGE`: the predicate(s) of that type, as JSON.
pub(crate) fn inspect(store: &cache::Store, name: &str, predicate_type: &str) -> Result<()> {
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
