//! Image indexes: one manifest per platform under one name (an OCI image index, or a Docker manifest list
//! with `--oci-mediatypes=false`), as a multi-platform build writes and `rbuild imagetools create` stitches.
//!
//! The API is small on purpose: [`build_index`] makes an index from `(platform, manifest descriptor)` pairs
//! (attestation manifests are more entries, with their own annotations, added by whoever makes them),
//! [`ImageIndex::store`] keeps it in the local store, [`push_index`] pushes its images and then the index.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use images::BlobSource;
use oci::{media_type, Descriptor, Digest, Index, Platform, Reference};

use crate::{EagerPush, Image};

/// An index built for some images, with its serialized bytes (what its digest is of).
#[derive(Debug, Clone)]
pub struct ImageIndex {
    pub index: Index,
    pub bytes: Vec<u8>,
    /// Its descriptor (media type, digest, size; no platform).
    pub desc: Descriptor,
}

/// Builds the index of `entries` (each manifest descriptor gets its platform), in the order given:
/// OCI (`application/vnd.oci.image.index.v1+json`) or, with `oci_mediatypes` false, a Docker manifest
/// list. Two entries for the same platform are an error (a registry client could not choose).
pub fn build_index(
    entries: &[(Platform, Descriptor)],
    oci_mediatypes: bool,
    annotations: BTreeMap<String, String>,
) -> Result<ImageIndex> {
    let mut manifests: Vec<Descriptor> = Vec::new();
    for (platform, desc) in entries {
        if manifests
            .iter()
            .any(|m| m.platform.as_ref() == Some(platform) && m.digest != desc.digest)
        {
            bail!("two different images for platform {platform} in one index");
        }
        let mut d = desc.clone();
        d.platform = Some(platform.clone());
        if !manifests.contains(&d) {
            manifests.push(d);
        }
    }
    let mt = if oci_mediatypes {
        media_type::OCI_INDEX
    } else {
        media_type::DOCKER_MANIFEST_LIST
    };
    let index = Index {
        schema_version: 2,
        media_type: Some(mt.to_owned()),
        manifests,
        annotations,
    };
    let bytes = serde_json::to_vec(&index).context("encoding the image index")?;
    let desc = Descriptor::new(mt, Digest::sha256_of(&bytes), bytes.len() as u64);
    Ok(ImageIndex { index, bytes, desc })
}

/// A manifest that travels with an image in an OCI layout without being an image itself: BuildKit's
/// attestation manifest (platform `unknown/unknown`, annotations `vnd.docker.reference.type` and
/// `vnd.docker.reference.digest` naming the image). A layout lists it in the image index after the
/// images, as BuildKit's OCI exporter does; the `attest` crate makes them.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Its entry in the image index.
    pub descriptor: Descriptor,
    /// Every blob it needs in the layout (the manifest, its config, its layers), by content.
    pub blobs: Vec<Vec<u8>>,
}

impl ImageIndex {
    /// This index with `attachments` listed after its entries: a new index, with its own digest. Only an
    /// OCI index holds them (BuildKit refuses attestations with `oci-mediatypes=false` too).
    pub fn with_attachments(&self, attachments: &[Attachment]) -> Result<Self> {
        if self.desc.media_type != media_type::OCI_INDEX {
            // BuildKit's message (exporter/containerimage/writer.go).
            bail!("cannot export attestations with \"oci-mediatypes=false\"");
        }
        let mut index = self.index.clone();
        index
            .manifests
            .extend(attachments.iter().map(|a| a.descriptor.clone()));
        let bytes = serde_json::to_vec(&index).context("encoding the image index")?;
        let desc = Descriptor::new(
            &self.desc.media_type,
            Digest::sha256_of(&bytes),
            bytes.len() as u64,
        );
        Ok(Self { index, bytes, desc })
    }

    /// Writes the index blob into the store (its manifests must be there for a tag to name it).
    pub fn store(&self, store: &cache::Store) -> Result<()> {
        store.put_blob(&self.bytes)?;
        Ok(())
    }

    /// The platforms of its entries, `os/arch[/variant]`.
    pub fn platforms(&self) -> Vec<String> {
        self.index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
            .collect()
    }
}

/// Pushes each of `images` by digest to `reference`'s repository, then the index under `reference` (its
/// tag, or by digest without one); returns the index digest.
pub async fn push_index(
    client: &registry::Client,
    store: &cache::Store,
    source: &dyn BlobSource,
    eager: Option<&EagerPush>,
    images: &[&Image],
    index: &ImageIndex,
    reference: &Reference,
) -> Result<Digest> {
    for image in images {
        let by_digest = Reference {
            tag: None,
            digest: Some(image.manifest_desc.digest.clone()),
            ..reference.clone()
        };
        crate::push(client, store, source, eager, image, &by_digest).await?;
    }
    client
        .put_manifest(reference, &index.desc.media_type, &index.bytes)
        .await
        .with_context(|| format!("pushing the image index to {}", reference.familiar()))
}

/// Pushes an index of manifests already in `reference`'s repository (no blob is read or copied): what
/// `rbuild imagetools create` does once each source's manifest is there.
pub async fn push_index_only(
    client: &registry::Client,
    index: &ImageIndex,
    reference: &Reference,
) -> Result<Digest> {
    client
        .put_manifest(reference, &index.desc.media_type, &index.bytes)
        .await
        .with_context(|| format!("pushing the image index to {}", reference.familiar()))
}

/// Writes one non-registry output of a multi-platform build: `type=oci` holds the index (named by
/// `names`, familiar form) and every image, and with `attachments` (the images' attestation manifests)
/// an index that lists them after the images, as BuildKit's OCI exporter does; `type=local` writes one
/// directory per platform (`linux_arm64/`, as buildx does). `type=docker` and `--load` fail as buildx's
/// docker exporter does (a docker archive holds no manifest list), `type=tar` too.
pub fn write_index_output(
    store: &cache::Store,
    images: &[(Platform, &Image)],
    index: &ImageIndex,
    names: &[String],
    output: &crate::Output,
    attachments: &[Attachment],
) -> Result<Option<String>> {
    use crate::Output;
    Ok(Some(match output {
        Output::Image { .. } => return Ok(None),
        Output::Oci {
            dest,
            tar,
            names: own,
        } => {
            let names = if own.is_empty() { names } else { own };
            let attached;
            let index = if attachments.is_empty() {
                index
            } else {
                attached = index.with_attachments(attachments)?;
                &attached
            };
            let write = |sink: &mut dyn crate::Sink| {
                write_index_layout(sink, store, images, index, names, attachments)
            };
            if *tar {
                crate::write_file_or_stdout(dest, |w| {
                    let mut sink = crate::TarSink::new(w);
                    write(&mut sink)?;
                    sink.finish()
                })?;
                format!(
                    "exported OCI archive of {} platforms to {}",
                    images.len(),
                    dest.display()
                )
            } else {
                write(&mut crate::DirSink { root: dest.clone() })?;
                format!(
                    "exported OCI layout of {} platforms to {}",
                    images.len(),
                    dest.display()
                )
            }
        }
        Output::Local { dest } => {
            for (platform, image) in images {
                let sub = dest.join(platform_dir(platform));
                crate::write_output(store, image, names, &Output::Local { dest: sub }, &[])?;
            }
            format!(
                "exported {} rootfs directories to {}",
                images.len(),
                dest.display()
            )
        }
        Output::Docker { .. } | Output::DockerEngine { .. } | Output::Tar { .. } => {
            check_index_outputs(std::slice::from_ref(output))?;
            return Ok(None);
        }
    }))
}

/// Fails for the outputs that hold one platform only (checked before a multi-platform build runs):
/// `type=docker` and `--load`, as buildx's docker exporter, and `type=tar`.
pub fn check_index_outputs(outputs: &[crate::Output]) -> Result<()> {
    use crate::Output;
    for o in outputs {
        match o {
            Output::Docker { .. } | Output::DockerEngine { .. } => bail!(
                "docker exporter does not currently support exporting manifest lists: build one \
                 --platform for type=docker or --load, or use -o type=oci"
            ),
            Output::Tar { .. } => bail!(
                "-o type=tar takes one platform: use -o type=local,dest=DIR (one directory per \
                 platform) or build one --platform"
            ),
            _ => {}
        }
    }
    Ok(())
}

/// The directory of one platform in a `type=local` output: `linux_arm64`, `linux_arm_v7`.
pub fn platform_dir(p: &Platform) -> String {
    p.to_string().replace('/', "_")
}

/// An OCI layout whose `index.json` names the image index (once per name) and whose blobs hold the
/// index, each image's manifest, config and layers, and the blobs of the attachments it lists.
pub(crate) fn write_index_layout(
    sink: &mut dyn crate::Sink,
    store: &cache::Store,
    images: &[(Platform, &Image)],
    index: &ImageIndex,
    names: &[String],
    attachments: &[Attachment],
) -> Result<()> {
    sink.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut manifests = Vec::new();
    for name in names
        .iter()
        .map(Some)
        .chain(names.is_empty().then_some(None))
    {
        let mut d = index.desc.clone();
        if let Some(n) = name {
            d.annotations
                .insert("org.opencontainers.image.ref.name".into(), n.clone());
        }
        manifests.push(d);
    }
    let top = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests,
        annotations: BTreeMap::new(),
    };
    sink.bytes("index.json", &serde_json::to_vec(&top)?)?;
    let blob_path = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    sink.bytes(&blob_path(&index.desc.digest), &index.bytes)?;
    crate::write_image_blobs(sink, store, images.iter().map(|(_, i)| *i))?;
    let mut seen = std::collections::HashSet::new();
    for blob in attachments.iter().flat_map(|a| &a.blobs) {
        let d = Digest::sha256_of(blob);
        if seen.insert(d.clone()) {
            sink.bytes(&blob_path(&d), blob)?;
        }
    }
    Ok(())
}

/// The platform an image config names (`what` names the image in the error).
pub(crate) fn config_platform(c: &oci::ImageConfig, what: &str) -> Result<Platform> {
    if c.architecture.is_empty() || c.os.is_empty() {
        bail!("{what}: its config names no os/architecture, so it cannot go into an index");
    }
    Ok(Platform {
        architecture: c.architecture.clone(),
        os: c.os.clone(),
        variant: c.variant.clone(),
        os_version: None,
    }
    .normalized())
}

/// Writes buildx's `--metadata-file` JSON for an index (`containerimage.digest` is the index's);
/// `names` are full image names.
pub fn write_index_metadata(
    path: &std::path::Path,
    index: &ImageIndex,
    names: &[String],
) -> Result<()> {
    crate::write_metadata_file(path, &index.desc, None, names)
}

/// An index of the local store with its images (platform, image), in index order.
pub type LocalIndex = (ImageIndex, Vec<(Platform, Image)>);

/// The image index tag (or `name@digest`) `name` names in the local store, with its images in index
/// order; `None` when it names a single image.
pub fn local_index(store: &cache::Store, name: &str) -> Result<Option<LocalIndex>> {
    let desc = store.find_image(name)?;
    if !media_type::is_index(&desc.media_type) {
        return Ok(None);
    }
    let bytes = store.read_blob(&desc.digest)?;
    let index: Index = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing image index {}", desc.digest))?;
    let mut images = Vec::new();
    for d in &index.manifests {
        let Some(platform) = d.platform.clone() else {
            continue;
        };
        let manifest: oci::Manifest = serde_json::from_slice(&store.read_blob(&d.digest)?)
            .with_context(|| format!("parsing manifest {}", d.digest))?;
        let mut manifest_desc = d.clone();
        manifest_desc.platform = None;
        images.push((
            platform,
            Image {
                config_digest: manifest.config.digest.clone(),
                manifest,
                manifest_desc,
            },
        ));
    }
    Ok(Some((ImageIndex { index, bytes, desc }, images)))
}

/// `rbuild imagetools create`: the index of the images `sources` name in a registry (a manifest, or an
/// index whose entries are all taken), pushed to `target` (a tag, or by digest). Only manifests and
/// configs are read; a source in another repository of the target's registry has its blobs mounted and
/// its manifest copied (no layer goes through this machine). The index is OCI unless every image is a
/// Docker manifest. With `dry_run` nothing is pushed.
pub async fn create_index(
    client: &registry::Client,
    sources: &[Reference],
    target: &Reference,
    dry_run: bool,
) -> Result<(ImageIndex, Option<Digest>)> {
    let mut entries: Vec<(Platform, Descriptor)> = Vec::new();
    let mut copies: Vec<(Reference, Descriptor, Vec<u8>, Vec<Descriptor>)> = Vec::new();
    for src in sources {
        if src.registry != target.registry {
            bail!(
                "{src}: sources must be on the target's registry ({}); push the image there first",
                target.registry
            );
        }
        let raw = client
            .get_manifest_raw(src)
            .await
            .with_context(|| format!("reading {src}"))?;
        let mut children = Vec::new();
        if media_type::is_index(&raw.media_type) {
            let index: Index = serde_json::from_slice(&raw.bytes)
                .with_context(|| format!("parsing the index of {src}"))?;
            for d in index.manifests {
                let Some(platform) = d.platform.clone() else {
                    continue;
                };
                let mut d = d;
                d.platform = None;
                children.push((platform, d));
            }
        } else {
            let desc = Descriptor::new(&raw.media_type, raw.digest.clone(), raw.bytes.len() as u64);
            children.push((image_platform(client, src, &raw.bytes).await?, desc));
        }
        for (platform, desc) in children {
            if src.repository != target.repository {
                let at = Reference {
                    tag: None,
                    digest: Some(desc.digest.clone()),
                    ..src.clone()
                };
                let bytes = if desc.digest == raw.digest {
                    raw.bytes.clone()
                } else {
                    client.get_manifest_raw(&at).await?.bytes
                };
                let m: oci::Manifest = serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing manifest {}", desc.digest))?;
                let mut blobs = m.layers.clone();
                blobs.push(m.config.clone());
                copies.push((src.clone(), desc.clone(), bytes, blobs));
            }
            entries.push((platform, desc));
        }
    }
    let oci = !entries
        .iter()
        .all(|(_, d)| d.media_type == media_type::DOCKER_MANIFEST);
    let index = build_index(&entries, oci, BTreeMap::new())?;
    if dry_run {
        return Ok((index, None));
    }
    for (src, desc, bytes, blobs) in copies {
        for b in &blobs {
            if !client.has_blob(target, &b.digest).await?
                && !client.mount_blob(target, b, &src.repository).await?
            {
                bail!(
                    "{src}: blob {} could not be mounted into {} (no access to the source repository?)",
                    b.digest,
                    target.repository
                );
            }
        }
        let at = Reference {
            tag: None,
            digest: Some(desc.digest.clone()),
            ..target.clone()
        };
        client
            .put_manifest(&at, &desc.media_type, &bytes)
            .await
            .with_context(|| {
                format!("copying manifest {} to {}", desc.digest, target.familiar())
            })?;
    }
    let digest = push_index_only(client, &index, target).await?;
    Ok((index, Some(digest)))
}

/// The platform of an image manifest, from its config (os, architecture, variant).
async fn image_platform(
    client: &registry::Client,
    src: &Reference,
    bytes: &[u8],
) -> Result<Platform> {
    let m: oci::Manifest =
        serde_json::from_slice(bytes).with_context(|| format!("parsing the manifest of {src}"))?;
    let config = client
        .fetch_blob_bytes(src, &m.config)
        .await
        .with_context(|| format!("reading the config of {src}"))?;
    let c: oci::ImageConfig =
        serde_json::from_slice(&config).with_context(|| format!("parsing the config of {src}"))?;
    config_platform(&c, &src.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(n: u8) -> Descriptor {
        Descriptor::new(
            media_type::OCI_MANIFEST,
            Digest::sha256_of(&[n]),
            10 + n as u64,
        )
    }

    #[test]
    fn attachments_follow_the_images_in_a_new_oci_index_only() {
        let amd: Platform = "linux/amd64".parse().unwrap();
        let i = build_index(&[(amd.clone(), desc(1))], true, BTreeMap::new()).unwrap();
        let mut att = desc(9);
        att.platform = Some("unknown/unknown".parse().unwrap());
        let a = Attachment {
            descriptor: att.clone(),
            blobs: vec![b"{}".to_vec()],
        };
        let with = i.with_attachments(std::slice::from_ref(&a)).unwrap();
        assert_eq!(
            with.index.manifests,
            vec![i.index.manifests[0].clone(), att]
        );
        assert_eq!(with.desc.digest, Digest::sha256_of(&with.bytes));
        assert_ne!(with.desc.digest, i.desc.digest);
        let docker = build_index(&[(amd, desc(1))], false, BTreeMap::new()).unwrap();
        let e = docker.with_attachments(&[a]).unwrap_err();
        assert!(e.to_string().contains("oci-mediatypes=false"), "{e}");
    }

    #[test]
    fn an_index_lists_each_platform_once_in_the_order_given() {
        let amd: Platform = "linux/amd64".parse().unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        let i = build_index(
            &[
                (amd.clone(), desc(1)),
                (arm.clone(), desc(2)),
                (arm.clone(), desc(2)),
            ],
            true,
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(i.platforms(), vec!["linux/amd64", "linux/arm64"]);
        assert_eq!(i.desc.media_type, media_type::OCI_INDEX);
        assert_eq!(i.desc.digest, Digest::sha256_of(&i.bytes));
        let docker = build_index(&[(amd.clone(), desc(1))], false, BTreeMap::new()).unwrap();
        assert_eq!(
            docker.index.media_type.as_deref(),
            Some(media_type::DOCKER_MANIFEST_LIST)
        );
        let e = build_index(
            &[(amd.clone(), desc(1)), (amd, desc(2))],
            true,
            BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("linux/amd64"), "{e}");
    }
}
