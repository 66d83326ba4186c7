//! `rbuild load`: images from a docker archive (`docker save` of docker 20.10 with `<id>/layer.tar` and
//! symlinked duplicates, or of docker 25+ / `rbuild save` with an OCI layout inside; gzip, zstd or plain
//! layers), an OCI archive, or an OCI layout directory, into the local store.
//!
//! Every file of an archive is streamed into the store as a blob (hashed while written), so nothing is
//! unpacked to a temp dir and stdin works. A blob whose path names a digest (`blobs/sha256/HEX`,
//! `HEX.json`) must hash to it; a docker layer must decompress to the diff_id its config lists. Tags are
//! set only once every image of the input checked out, so a truncated or corrupt archive fails with
//! nothing tagged (its blobs are garbage for `rbuild prune`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use oci::{media_type, Descriptor, Digest, ImageConfig, Index, Manifest, Platform, Reference};

/// The annotation containerd (and docker 25+) put the full image name under.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// An image loaded into the store.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The tags set for it (familiar form); empty when the input named it nothing.
    pub names: Vec<String>,
    /// Its manifest in the store.
    pub manifest: Descriptor,
    /// Its image ID (config digest).
    pub config: Digest,
}

/// Loads every image of a docker or OCI archive read from `input`.
pub fn load_archive(store: &cache::Store, input: impl Read) -> Result<Vec<Loaded>> {
    let _lease = store.lease()?;
    let files = read_archive(store, input)?;
    let images = if let Some(index) = files.small.get("index.json") {
        let docker_tags = match files.small.get("manifest.json") {
            Some(m) => docker_manifest(m)?
                .into_iter()
                .map(|e| (e.config, e.repo_tags))
                .collect(),
            None => Vec::new(),
        };
        oci_images(
            store,
            index,
            None,
            &mut |path| files.blob(path),
            &docker_tags,
        )?
    } else if let Some(m) = files.small.get("manifest.json") {
        docker_images(store, &files, m)?
    } else {
        bail!(
            "not a docker or OCI archive: it has neither manifest.json nor index.json (truncated?)"
        );
    };
    tag_all(store, images)
}

/// Loads the images of the OCI layout directory `dir` (only those whose `ref.name` is `tag`, if given).
pub fn load_layout_dir(store: &cache::Store, dir: &Path, tag: Option<&str>) -> Result<Vec<Loaded>> {
    let _lease = store.lease()?;
    tag_all(store, layout_images(store, dir, tag)?)
}

/// Copies the images of the OCI layout directory `dir` (only those whose `ref.name` is `tag`, if given)
/// into the store without naming them (a `--build-context NAME=oci-layout://DIR`).
pub fn import_layout_dir(
    store: &cache::Store,
    dir: &Path,
    tag: Option<&str>,
) -> Result<Vec<Loaded>> {
    let _lease = store.lease()?;
    let mut images = layout_images(store, dir, tag)?;
    for l in &mut images {
        l.names.clear();
    }
    tag_all(store, images)
}

/// The images of an OCI layout directory, their blobs copied into the store.
fn layout_images(store: &cache::Store, dir: &Path, tag: Option<&str>) -> Result<Vec<Loaded>> {
    let index = fs_err::read(dir.join("index.json"))
        .with_context(|| format!("{} is not an OCI layout", dir.display()))?;
    let mut copy = |path: &str| -> Result<Digest> {
        let expected = digest_in_path(path)
            .ok_or_else(|| anyhow!("{}: {path} is not a blob path", dir.display()))?;
        if !store.has_blob(&expected) {
            let mut f = fs_err::File::open(dir.join(path))?;
            let mut w = store.blob_writer()?;
            std::io::copy(&mut f, &mut w).with_context(|| format!("copying {path}"))?;
            w.commit(Some(&expected))
                .with_context(|| format!("{}: blob {path} is corrupt", dir.display()))?;
        }
        Ok(expected)
    };
    let images = oci_images(store, &index, tag, &mut copy, &[])?;
    if images.is_empty() {
        bail!(
            "{}: no image{} in index.json",
            dir.display(),
            tag.map(|t| format!(" named {t}")).unwrap_or_default()
        );
    }
    Ok(images)
}

/// `oci:DIR[:TAG]`: the directory and the tag, when `s` names an OCI layout.
pub fn parse_oci_dir(s: &str) -> Option<(PathBuf, Option<String>)> {
    let rest = s.strip_prefix("oci:")?;
    if Path::new(rest).is_dir() {
        return Some((rest.into(), None));
    }
    match rest.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => Some((dir.into(), Some(tag.to_owned()))),
        _ => Some((rest.into(), None)),
    }
}

/// What an archive held: every file as a blob by its path, the small metadata files in memory.
struct ArchiveFiles {
    blobs: HashMap<String, (Digest, u64)>,
    links: HashMap<String, String>,
    small: HashMap<String, Vec<u8>>,
}

impl ArchiveFiles {
    /// The blob at `path` (following symlinks), checked against the digest its path names.
    fn blob(&self, path: &str) -> Result<Digest> {
        let mut path = normalize(path);
        for _ in 0..16 {
            if let Some(target) = self.links.get(&path) {
                path = target.clone();
                continue;
            }
            let (digest, _) = self
                .blobs
                .get(&path)
                .ok_or_else(|| anyhow!("the archive has no file {path} (truncated?)"))?;
            return Ok(digest.clone());
        }
        bail!("the archive's symlinks at {path} loop")
    }
}

const SMALL: &[&str] = &["manifest.json", "index.json", "oci-layout", "repositories"];

fn read_archive(store: &cache::Store, input: impl Read) -> Result<ArchiveFiles> {
    let mut files = ArchiveFiles {
        blobs: HashMap::new(),
        links: HashMap::new(),
        small: HashMap::new(),
    };
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, input));
    let bad = || "reading the archive (truncated or not a tar?)";
    for entry in archive.entries().context(bad())? {
        let mut entry = entry.context(bad())?;
        let path = normalize(&entry.path().context(bad())?.to_string_lossy());
        let size = entry.header().size().context(bad())?;
        match entry.header().entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .context(bad())?
                    .ok_or_else(|| anyhow!("archive link {path} has no target"))?;
                let target = target.to_string_lossy();
                // Symlinks are relative to their directory; hard links to the archive root.
                let resolved = if entry.header().entry_type() == tar::EntryType::Symlink {
                    let parent = Path::new(&path).parent().unwrap_or(Path::new(""));
                    normalize(&parent.join(&*target).to_string_lossy())
                } else {
                    normalize(&target)
                };
                files.links.insert(path, resolved);
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            _ => continue,
        }
        if SMALL.contains(&path.as_str()) {
            let mut buf = Vec::new();
            entry
                .by_ref()
                .take(64 << 20)
                .read_to_end(&mut buf)
                .context(bad())?;
            if buf.len() as u64 != size {
                bail!(
                    "the archive ends inside {path} ({} of {size} bytes): truncated",
                    buf.len()
                );
            }
            files.small.insert(path, buf);
            continue;
        }
        let mut w = store.blob_writer()?;
        let copied = std::io::copy(&mut entry, &mut w).context(bad())?;
        if copied != size {
            bail!("the archive ends inside {path} ({copied} of {size} bytes): truncated");
        }
        let (digest, _) = w.commit(None)?;
        if let Some(expected) = digest_in_path(&path) {
            if expected != digest {
                bail!("archive file {path} has digest {digest}: the archive is corrupt");
            }
        }
        files.blobs.insert(path, (digest, size));
    }
    Ok(files)
}

/// One entry of docker's `manifest.json`.
struct DockerEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn docker_manifest(bytes: &[u8]) -> Result<Vec<DockerEntry>> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).context("the archive's manifest.json is not JSON")?;
    let entries = v
        .as_array()
        .ok_or_else(|| anyhow!("the archive's manifest.json is not a list"))?;
    entries
        .iter()
        .map(|e| {
            let strings = |k: &str| -> Vec<String> {
                e[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            Ok(DockerEntry {
                config: e["Config"]
                    .as_str()
                    .ok_or_else(|| anyhow!("manifest.json: an entry has no Config"))?
                    .to_owned(),
                repo_tags: strings("RepoTags"),
                layers: strings("Layers"),
            })
        })
        .collect()
}

/// Images of a docker archive without an OCI layout (docker before 25): the manifest is made here,
/// each layer's media type from its first bytes, each layer checked against its config's diff_id.
fn docker_images(
    store: &cache::Store,
    files: &ArchiveFiles,
    manifest_json: &[u8],
) -> Result<Vec<Loaded>> {
    let mut out = Vec::new();
    for entry in docker_manifest(manifest_json)? {
        let config_digest = files.blob(&entry.config)?;
        let config_bytes = store.read_blob(&config_digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("archive file {} is not an image config", entry.config))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            bail!(
                "manifest.json lists {} layers for {} but its config has {} diff_ids",
                entry.layers.len(),
                entry.config,
                config.rootfs.diff_ids.len()
            );
        }
        let mut layers = Vec::new();
        for (path, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let digest = files.blob(path)?;
            let (mt, actual) = layer_diff_id(store, &digest)
                .with_context(|| format!("reading layer {path} of the archive"))?;
            if actual != *diff_id {
                bail!("layer {path} of the archive has diff_id {actual}, its config says {diff_id}: the archive is corrupt");
            }
            let size = store.blob_path(&digest).metadata()?.len();
            layers.push(Descriptor::new(mt, digest, size));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            config: Descriptor::new(
                media_type::OCI_CONFIG,
                config_digest.clone(),
                config_bytes.len() as u64,
            ),
            layers,
            annotations: BTreeMap::new(),
        };
        let bytes = serde_json::to_vec(&manifest)?;
        let digest = store.put_blob(&bytes)?;
        out.push(Loaded {
            names: names(&entry.repo_tags),
            manifest: Descriptor::new(media_type::OCI_MANIFEST, digest, bytes.len() as u64),
            config: config_digest,
        });
    }
    Ok(out)
}

/// The layer media type (by the blob's first bytes) and its diff_id (the digest of the tar inside).
fn layer_diff_id(store: &cache::Store, digest: &Digest) -> Result<(&'static str, Digest)> {
    let mut f = BufReader::with_capacity(1 << 20, store.open_blob(digest)?);
    let head = std::io::BufRead::fill_buf(&mut f)?
        .get(..4)
        .unwrap_or_default()
        .to_vec();
    let (mt, mut reader): (_, Box<dyn Read>) = if head.starts_with(&[0x1f, 0x8b]) {
        (
            media_type::OCI_LAYER_GZIP,
            Box::new(flate2::bufread::MultiGzDecoder::new(f)),
        )
    } else if head == [0x28, 0xb5, 0x2f, 0xfd] {
        (
            media_type::OCI_LAYER_ZSTD,
            Box::new(zstd::stream::read::Decoder::with_buffer(f)?),
        )
    } else {
        return Ok((media_type::OCI_LAYER_TAR, digest.clone()));
    };
    let mut h = oci::HashingWriter::new(std::io::sink());
    std::io::copy(&mut reader, &mut h)?;
    h.flush()?;
    Ok((mt, h.finish().1))
}

/// Images of an OCI layout's `index.json`; `blob` brings a `blobs/sha256/HEX` path into the store.
/// `docker_tags` are manifest.json's RepoTags by config path, for archives that have both.
fn oci_images(
    store: &cache::Store,
    index_json: &[u8],
    only: Option<&str>,
    blob: &mut dyn FnMut(&str) -> Result<Digest>,
    docker_tags: &[(String, Vec<String>)],
) -> Result<Vec<Loaded>> {
    let index: Index =
        serde_json::from_slice(index_json).context("index.json is not an OCI index")?;
    let path = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let mut out: Vec<Loaded> = Vec::new();
    for desc in &index.manifests {
        let ref_name = desc
            .annotations
            .get(cache::REF_NAME_ANNOTATION)
            .map(String::as_str);
        if only.is_some() && ref_name != only {
            continue;
        }
        let mut desc = desc.clone();
        blob(&path(&desc.digest))?;
        if media_type::is_index(&desc.media_type) {
            let child: Index = serde_json::from_slice(&store.read_blob(&desc.digest)?)?;
            let host = Platform::host();
            // BuildKit's attestation manifests (`unknown/unknown`) are no images: an index of one
            // image and its attestations (`-o type=oci` with --sbom) still has one image to take.
            let images: Vec<&Descriptor> = child
                .manifests
                .iter()
                .filter(|d| {
                    d.annotations
                        .get("vnd.docker.reference.type")
                        .map(String::as_str)
                        != Some("attestation-manifest")
                })
                .collect();
            let picked = child
                .select(&host)
                .or_else(|| (images.len() == 1).then(|| images[0]))
                .ok_or_else(|| {
                    anyhow!(
                        "index {} has no image for {}",
                        desc.digest,
                        crate::platform_text(&host)
                    )
                })?;
            let annotations = std::mem::take(&mut desc.annotations);
            desc = picked.clone();
            desc.annotations = annotations;
            blob(&path(&desc.digest))?;
        }
        let manifest: Manifest = serde_json::from_slice(&store.read_blob(&desc.digest)?)
            .with_context(|| format!("manifest {} is not an image manifest", desc.digest))?;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            blob(&path(&d.digest))?;
        }
        let mut given: Vec<String> = match desc.annotations.get(CONTAINERD_NAME) {
            Some(full) => vec![full.clone()],
            None => ref_name.map(str::to_owned).into_iter().collect(),
        };
        let config_path = path(&manifest.config.digest);
        for (config, tags) in docker_tags {
            if normalize(config) == config_path {
                given.extend(tags.iter().cloned());
            }
        }
        let manifest_desc = Descriptor::new(&desc.media_type, desc.digest.clone(), desc.size);
        match out
            .iter_mut()
            .find(|l| l.manifest.digest == manifest_desc.digest)
        {
            Some(l) => {
                for n in names(&given) {
                    if !l.names.contains(&n) {
                        l.names.push(n);
                    }
                }
            }
            None => out.push(Loaded {
                names: names(&given),
                manifest: manifest_desc,
                config: manifest.config.digest.clone(),
            }),
        }
    }
    Ok(out)
}

/// Tag names in familiar form, deduplicated; names that are not references are skipped with a warning.
fn names(given: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in given {
        match n.parse::<Reference>() {
            Ok(r) if r.digest.is_none() => {
                let f = r.familiar();
                if !out.contains(&f) {
                    out.push(f);
                }
            }
            _ => tracing::warn!(name = %n, "not a tag; the image is loaded without it"),
        }
    }
    out
}

/// Sets the tags of every loaded image, once all of them are complete in the store.
fn tag_all(store: &cache::Store, images: Vec<Loaded>) -> Result<Vec<Loaded>> {
    for l in &images {
        // Checks the manifest's config and layers are present, without tagging yet.
        let m = store.manifest_of(&l.manifest)?;
        for d in std::iter::once(&m.config).chain(&m.layers) {
            if !store.has_blob(&d.digest) {
                bail!(
                    "the input lacks blob {} of image {}",
                    d.digest,
                    l.manifest.digest
                );
            }
        }
    }
    for l in &images {
        for n in &l.names {
            store.set_tag(n, &l.manifest)?;
        }
    }
    Ok(images)
}

/// `./a/../b` → `b`: archive paths compared as written by any tool.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts.join("/")
}

/// The digest a path names: `blobs/sha256/HEX`, or docker's config file `HEX.json`.
fn digest_in_path(path: &str) -> Option<Digest> {
    let name = normalize(path);
    let hex = name
        .strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json").filter(|h| !h.contains('/')))?;
    format!("sha256:{hex}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_of_one_foreign_image_and_its_attestation_manifest_loads_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let store = cache::Store::open(&tmp.path().join("store")).unwrap();
        let dir = tmp.path().join("layout");
        fs_err::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let put = |bytes: &[u8]| {
            let d = Digest::sha256_of(bytes);
            fs_err::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
            d
        };
        // An image for a platform that is never the host's, so only the fallback can pick it.
        let config =
            br#"{"architecture":"s390x","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cd = put(config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
            "config": {"mediaType": media_type::OCI_CONFIG, "digest": cd.to_string(), "size": config.len()},
            "layers": [],
        }))
        .unwrap();
        let md = put(&manifest);
        let acd = put(b"{}");
        let att = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
            "config": {"mediaType": media_type::OCI_CONFIG, "digest": acd.to_string(), "size": 2},
            "layers": [],
        }))
        .unwrap();
        let ad = put(&att);
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": media_type::OCI_INDEX,
            "manifests": [
                {"mediaType": media_type::OCI_MANIFEST, "digest": md.to_string(), "size": manifest.len(),
                 "platform": {"architecture": "s390x", "os": "linux"}},
                {"mediaType": media_type::OCI_MANIFEST, "digest": ad.to_string(), "size": att.len(),
                 "platform": {"architecture": "unknown", "os": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                 "vnd.docker.reference.digest": md.to_string()}},
            ],
        }))
        .unwrap();
        let id = put(&index);
        fs_err::write(
            dir.join("index.json"),
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{"mediaType": media_type::OCI_INDEX, "digest": id.to_string(),
                               "size": index.len(),
                               "annotations": {"org.opencontainers.image.ref.name": "app:1"}}],
            }))
            .unwrap(),
        )
        .unwrap();
        let loaded = load_layout_dir(&store, &dir, None).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].manifest.digest, md);
        assert_eq!(loaded[0].names, ["app:1"]);
    }

    #[test]
    fn archive_paths_name_digests_and_oci_dirs_their_tags() {
        let hex = "a".repeat(64);
        assert!(digest_in_path(&format!("./blobs/sha256/{hex}")).is_some());
        assert!(digest_in_path(&format!("{hex}.json")).is_some());
        assert!(digest_in_path("manifest.json").is_none());
        assert!(digest_in_path(&format!("{hex}/layer.tar")).is_none());
        assert_eq!(normalize("./x/../y/layer.tar"), "y/layer.tar");
        assert_eq!(
            parse_oci_dir("oci:/nonexistent/dir:app"),
            Some(("/nonexistent/dir".into(), Some("app".to_owned())))
        );
        assert_eq!(parse_oci_dir("file.tar"), None);
    }
}
