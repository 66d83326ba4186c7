//! What a build produced, one image or an index of one image per platform, and the steps after the
//! solve that treat both alike: outputs, push, metadata file.

use anyhow::Result;
use images::BlobSource;
use oci::{Digest, Platform, Reference};

use crate::{EagerPush, Image, ImageIndex};

/// The result of a build.
#[derive(Debug, Clone)]
pub enum Built {
    /// A build for one platform.
    Image(Image),
    /// A build for several: one image per platform, in `--platform` order, and their index.
    Index {
        /// The index naming every image with its platform.
        index: ImageIndex,
        /// The images.
        images: Vec<(Platform, Image)>,
    },
}

impl Built {
    /// The index of `images`, written into the store (OCI, or a Docker manifest list without
    /// `oci_mediatypes`).
    pub fn index(
        store: &cache::Store,
        images: Vec<(Platform, Image)>,
        oci_mediatypes: bool,
    ) -> Result<Self> {
        let entries: Vec<_> = images
            .iter()
            .map(|(p, i)| (p.clone(), i.manifest_desc.clone()))
            .collect();
        let index = crate::build_index(&entries, oci_mediatypes, Default::default())?;
        index.store(store)?;
        Ok(Self::Index { index, images })
    }

    /// The image or image index `name` names in the local store (tag, `name@digest` or image ID).
    pub fn local(store: &cache::Store, name: &str) -> Result<Self> {
        Ok(match crate::local_index(store, name)? {
            Some((index, images)) => Self::Index { index, images },
            None => Self::Image(crate::local_image(store, name)?),
        })
    }

    /// What `--iidfile` and `--quiet` print: the image config digest, or the index digest.
    pub fn id(&self) -> &Digest {
        match self {
            Self::Image(i) => &i.config_digest,
            Self::Index { index, .. } => &index.desc.digest,
        }
    }

    /// What a tag names: the manifest, or the index.
    pub fn descriptor(&self) -> &oci::Descriptor {
        match self {
            Self::Image(i) => &i.manifest_desc,
            Self::Index { index, .. } => &index.desc,
        }
    }

    /// The images, with their platforms when there are several.
    pub fn images(&self) -> Vec<&Image> {
        match self {
            Self::Image(i) => vec![i],
            Self::Index { images, .. } => images.iter().map(|(_, i)| i).collect(),
        }
    }

    /// The platforms of an index's entries (`os/arch[/variant]`); none for one image.
    pub fn platforms(&self) -> Vec<String> {
        match self {
            Self::Image(_) => Vec::new(),
            Self::Index { index, .. } => index.platforms(),
        }
    }

    /// Whether the store holds every layer (a tag never names blobs the store lacks).
    pub fn complete(&self, store: &cache::Store) -> bool {
        self.images()
            .iter()
            .all(|i| i.manifest.layers.iter().all(|l| store.has_blob(&l.digest)))
    }

    /// Writes one non-registry output (see [`crate::write_output`], [`crate::write_index_output`]);
    /// `attachments` are the images' attestation manifests, for the layouts that carry them.
    pub fn write_output(
        &self,
        store: &cache::Store,
        names: &[String],
        output: &crate::Output,
        attachments: &[crate::Attachment],
    ) -> Result<Option<String>> {
        match self {
            Self::Image(i) => crate::write_output(store, i, names, output, attachments),
            Self::Index { index, images } => {
                let refs: Vec<(Platform, &Image)> =
                    images.iter().map(|(p, i)| (p.clone(), i)).collect();
                crate::write_index_output(store, &refs, index, names, output, attachments)
            }
        }
    }

    /// Pushes the image, or every image by digest and then the index, to `reference`; returns the
    /// digest `reference` now names.
    pub async fn push(
        &self,
        client: &registry::Client,
        store: &cache::Store,
        source: &dyn BlobSource,
        eager: Option<&EagerPush>,
        reference: &Reference,
    ) -> Result<Digest> {
        match self {
            Self::Image(i) => crate::push(client, store, source, eager, i, reference).await,
            Self::Index { index, .. } => {
                let images = self.images();
                crate::push_index(client, store, source, eager, &images, index, reference).await
            }
        }
    }

    /// Writes buildx's `--metadata-file` JSON; `names` are full image names.
    pub fn write_metadata(&self, path: &std::path::Path, names: &[String]) -> Result<()> {
        match self {
            Self::Image(i) => crate::write_metadata(path, i, names),
            Self::Index { index, .. } => crate::write_index_metadata(path, index, names),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci::{media_type, Descriptor, Manifest};

    /// An image whose one layer is `layer` (stored in `store` or not).
    fn image(store: &cache::Store, layer: &[u8], stored: bool) -> Image {
        let d = Digest::sha256_of(layer);
        if stored {
            store.put_blob(layer).unwrap();
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            config: Descriptor::new(media_type::OCI_CONFIG, d.clone(), 1),
            layers: vec![Descriptor::new(media_type::OCI_LAYER_GZIP, d.clone(), 1)],
            annotations: Default::default(),
        };
        let bytes = serde_json::to_vec(&manifest).unwrap();
        Image {
            config_digest: d,
            manifest_desc: Descriptor::new(
                media_type::OCI_MANIFEST,
                Digest::sha256_of(&bytes),
                bytes.len() as u64,
            ),
            manifest,
        }
    }

    #[test]
    fn a_build_is_named_by_its_config_or_its_stored_index_and_is_complete_with_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let store = cache::Store::open(dir.path()).unwrap();
        let one = Built::Image(image(&store, b"a", true));
        assert_eq!(one.id(), &Digest::sha256_of(b"a"));
        assert!(one.platforms().is_empty());
        assert!(one.complete(&store));

        let amd: Platform = "linux/amd64".parse().unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        let images = vec![
            (amd, image(&store, b"a", true)),
            (arm, image(&store, b"b", false)),
        ];
        let both = Built::index(&store, images, true).unwrap();
        assert_eq!(both.id(), &both.descriptor().digest);
        assert_eq!(both.descriptor().media_type, media_type::OCI_INDEX);
        assert!(store.has_blob(both.id()), "the index is in the store");
        assert_eq!(both.platforms(), ["linux/amd64", "linux/arm64"]);
        assert_eq!(both.images().len(), 2);
        assert!(!both.complete(&store), "the arm64 layer is not stored");

        // A tag of the index reads back as the same index (once the store holds everything it names).
        store.put_blob(b"b").unwrap();
        for i in both.images() {
            store
                .put_blob(&serde_json::to_vec(&i.manifest).unwrap())
                .unwrap();
        }
        store.set_tag("multi:1", both.descriptor()).unwrap();
        let back = Built::local(&store, "multi:1").unwrap();
        assert_eq!(back.id(), both.id());
        assert_eq!(back.platforms(), both.platforms());
    }
}
