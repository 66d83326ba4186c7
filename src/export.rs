//! Exporters: the image config and manifest of a solved stage, local tags, an OCI archive, and push.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context as _, Result};
use oci::{media_type, Descriptor, Digest, ImageConfig, Manifest, Reference};
use solver::{Layer, Solved};

/// An image assembled in the local store.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) config_digest: Digest,
    pub(crate) manifest: Manifest,
    pub(crate) manifest_desc: Descriptor,
}

/// Time of the build as RFC 3339 UTC; `SOURCE_DATE_EPOCH` wins when set (reproducible builds).
pub(crate) fn build_time() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            let d = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            i64::try_from(d.as_secs()).unwrap_or(0)
        });
    rfc3339(secs)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub(crate) fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// OCI media type for a layer blob, converting Docker's names for the same bytes.
fn oci_layer_type(mt: &str) -> &str {
    match mt {
        media_type::DOCKER_LAYER_GZIP => media_type::OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" => media_type::OCI_LAYER_TAR,
        other => other,
    }
}

/// Writes the config and manifest of `stage` (solved) into the store.
pub(crate) fn assemble(
    store: &cache::Store,
    stage: &frontend::Stage,
    solved: &Solved,
) -> Result<Image> {
    let head = solved
        .outcomes
        .get(&stage.head)
        .ok_or_else(|| anyhow!("internal error: the target stage has no result"))?;
    let layers: &[Layer] = &head.layers;
    let mut config: ImageConfig = stage.config.clone();
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    let now = build_time();
    for (index, node) in &stage.layer_history {
        if let Some(h) = config.history.get_mut(*index) {
            // A node whose outcome is unknown was below a cache hit; its record said it added a layer
            // when it was built, so keep the frontend's default.
            if let Some(o) = solved.outcomes.get(node) {
                h.empty_layer = !o.added_layer;
            }
        }
    }
    let base_entries = config.history.len()
        - stage
            .config
            .history
            .iter()
            .filter(|h| h.created.is_none())
            .count();
    for h in config.history.iter_mut().skip(base_entries) {
        if h.created.is_none() {
            h.created = Some(now.clone());
        }
    }
    config.created = Some(now);
    let non_empty = config.history.iter().filter(|h| !h.empty_layer).count();
    if non_empty != layers.len() {
        tracing::debug!(
            non_empty,
            layers = layers.len(),
            "history does not match layers; history is informational"
        );
    }
    let config_bytes = serde_json::to_vec(&config).context("encoding image config")?;
    let config_digest = store.put_blob(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: oci_layer_type(&l.blob.media_type).to_owned(),
                ..l.blob.clone()
            })
            .collect(),
        annotations: BTreeMap::new(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).context("encoding manifest")?;
    let manifest_digest = store.put_blob(&manifest_bytes)?;
    let manifest_desc = Descriptor::new(
        media_type::OCI_MANIFEST,
        manifest_digest,
        manifest_bytes.len() as u64,
    );
    Ok(Image {
        config_digest,
        manifest,
        manifest_desc,
    })
}

/// Size of an image: config plus compressed layers.
pub(crate) fn image_size(m: &Manifest) -> u64 {
    m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>()
}

/// Writes an OCI image layout as a tar archive to `dest` (`-o type=oci,dest=FILE`).
pub(crate) fn write_oci_archive(
    store: &cache::Store,
    image: &Image,
    names: &[String],
    dest: &Path,
) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating {}", dest.display()))?;
    {
        let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp.as_file()));
        let mut add_bytes = |path: &str, bytes: &[u8]| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, path, bytes)
                .with_context(|| format!("writing {path} to the archive"))?;
            Ok(())
        };
        add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut manifests = Vec::new();
        for name in names
            .iter()
            .map(Some)
            .chain(names.is_empty().then_some(None))
        {
            let mut d = image.manifest_desc.clone();
            if let Some(n) = name {
                d.annotations
                    .insert("org.opencontainers.image.ref.name".into(), n.clone());
            }
            manifests.push(d);
        }
        let index = oci::Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests,
            annotations: BTreeMap::new(),
        };
        add_bytes("index.json", &serde_json::to_vec(&index)?)?;
        let mut blobs = vec![
            image.manifest_desc.digest.clone(),
            image.manifest.config.digest.clone(),
        ];
        blobs.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
        let mut seen = std::collections::HashSet::new();
        for d in blobs {
            if !seen.insert(d.clone()) {
                continue;
            }
            let path = store.blob_path(&d);
            let mut f = fs_err::File::open(&path)?;
            let mut h = tar::Header::new_ustar();
            h.set_size(f.metadata()?.len());
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut f)
                .with_context(|| format!("writing blob {d} to the archive"))?;
        }
        tar.into_inner()?.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// Pushes `image` (all of its blobs in the store) to `reference`; blobs the registry has are skipped.
pub(crate) async fn push(
    client: &registry::Client,
    store: &cache::Store,
    image: &Image,
    reference: &Reference,
) -> Result<Digest> {
    let mut descs = image.manifest.layers.clone();
    descs.push(image.manifest.config.clone());
    let uploads = descs.iter().map(|d| {
        let path = store.blob_path(&d.digest);
        async move {
            client
                .push_blob(reference, d, &path)
                .await
                .with_context(|| format!("pushing blob {} to {}", d.digest, reference.familiar()))
        }
    });
    for r in futures_util::future::join_all(uploads).await {
        r?;
    }
    let bytes = store.read_blob(&image.manifest_desc.digest)?;
    client
        .put_manifest(reference, &image.manifest_desc.media_type, &bytes)
        .await
        .with_context(|| format!("pushing manifest to {}", reference.familiar()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
