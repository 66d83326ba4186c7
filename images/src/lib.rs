//! Images: references resolved to images (the local store first, then the registry, with an offline
//! fallback), their layers brought into the store as blobs and unpacked into snapshots, and layer blobs
//! written into the store.
//!
//! It does not run anything, assemble images or push them (the `exec` and `export` crates do). Main
//! types: [`Images`] (one build's resolutions), [`ResolvedImage`], [`LazyClient`], and two traits that
//! let other crates plug in: [`BlobSource`] (blobs that are not in the store yet but can be fetched, e.g.
//! from an imported build cache) and [`BlobTap`] (something that follows a layer blob while it is written,
//! e.g. an upload).
//!
//! ```no_run
//! # fn f(store: std::sync::Arc<cache::Store>, rt: tokio::runtime::Handle) -> anyhow::Result<()> {
//! let client = std::sync::Arc::new(images::LazyClient::new(registry::ClientOptions::default()));
//! let images = images::Images::new(store.clone(), client, rt, oci::Platform::host());
//! let (image, layers) = images.pull("busybox", |_, _| {})?;
//! let dirs = images::snapshots(&store, &layers)?; // overlay lower dirs, base first
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context as _, Result};
use graph::NodeId;
use oci::{Descriptor, ImageConfig, Manifest, Platform, Reference};
use solver::Layer;

mod list;
mod load;
pub mod show;
mod source;

pub use list::{human_size, image_size, list, render, ImageRow, ListFormat};
pub use load::{import_layout_dir, load_archive, load_layout_dir, parse_oci_dir, Loaded};
pub use source::{BlobSource, BlobTap, Fetching, NoBlobSource, TapDone};

/// A base image resolved to a manifest, with its config.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    pub reference: Option<Reference>,
    pub manifest_desc: Descriptor,
    pub manifest: Manifest,
    pub config: ImageConfig,
}

/// A registry client made on first use: a build whose bases are all in the store never pays for loading
/// the system's CA certificates.
pub struct LazyClient {
    opts: registry::ClientOptions,
    cell: std::sync::OnceLock<registry::Client>,
}

impl LazyClient {
    pub fn new(opts: registry::ClientOptions) -> Self {
        Self {
            opts,
            cell: std::sync::OnceLock::new(),
        }
    }

    pub fn get(&self) -> Result<&registry::Client> {
        if let Some(c) = self.cell.get() {
            return Ok(c);
        }
        let c = registry::Client::new(self.opts.clone())?;
        Ok(self.cell.get_or_init(|| c))
    }
}

/// Resolves image references (local tags first, then registries) and remembers the answers for one build,
/// so the lowering and the pull see the same manifest.
pub struct Images {
    pub store: Arc<cache::Store>,
    pub client: Arc<LazyClient>,
    pub rt: tokio::runtime::Handle,
    pub platform: Platform,
    resolved: Mutex<HashMap<String, ResolvedImage>>,
    /// Locks on the local tags used, held as long as this resolver lives (`rbuild rmi` waits them out).
    in_use: Mutex<Vec<cache::LockGuard>>,
    /// `--pull`: ignore local tags and earlier resolutions of base images; always ask the registry.
    pull: bool,
}

impl Images {
    pub fn new(
        store: Arc<cache::Store>,
        client: Arc<LazyClient>,
        rt: tokio::runtime::Handle,
        platform: Platform,
    ) -> Self {
        Self {
            store,
            client,
            rt,
            platform,
            resolved: Mutex::new(HashMap::new()),
            in_use: Mutex::new(Vec::new()),
            pull: false,
        }
    }

    /// With `pull`, base images always come from their registry (`--pull`).
    pub fn with_pull(mut self, pull: bool) -> Self {
        self.pull = pull;
        self
    }

    /// Makes `name` resolve to `image` for the life of this resolver: what `rbuild bake` does for a
    /// `target:` context, whose image another target of the same run has just built into the store.
    pub fn preset(&self, name: &str, image: ResolvedImage) {
        self.resolved
            .lock()
            .expect("images lock")
            .insert(name.to_owned(), image);
    }

    /// Resolves `name`: a tag in the local store, else the registry it names.
    pub fn resolve(&self, name: &str) -> Result<ResolvedImage> {
        self.resolve_for(name, &self.platform.clone())
    }

    /// Resolves `name` for `platform` (a stage's `FROM --platform`, one target of a multi-platform build).
    pub fn resolve_for(&self, name: &str, platform: &Platform) -> Result<ResolvedImage> {
        let key = format!("{name} {platform}");
        // A pinned name (a named context) is the same image for every platform.
        let known = self.resolved.lock().expect("images lock");
        if let Some(r) = known.get(&key).or_else(|| known.get(name)) {
            return Ok(r.clone());
        }
        drop(known);
        let r = self.resolve_uncached(name, platform)?;
        self.resolved
            .lock()
            .expect("images lock")
            .insert(key, r.clone());
        Ok(r)
    }

    /// Makes `name` resolve to the manifest `desc` of the store for this build (a named context:
    /// `--build-context NAME=oci-layout://…`), without a tag or a registry.
    pub fn pin(&self, name: &str, desc: Descriptor) -> Result<()> {
        let r = self.local(None, desc)?;
        self.resolved
            .lock()
            .expect("images lock")
            .insert(name.to_owned(), r);
        Ok(())
    }

    fn resolve_uncached(&self, name: &str, platform: &Platform) -> Result<ResolvedImage> {
        let reference: Reference = name.parse().with_context(|| format!("image {name:?}"))?;
        // A local tag of another platform (built or pulled with another --platform) is not this image.
        let mut local_other = None;
        if !self.pull {
            let guard = self.store.use_image(&reference.familiar())?;
            if let Some(desc) = self.store.resolve_tag(&reference.familiar())? {
                self.in_use.lock().expect("images lock").push(guard);
                let (desc, theirs) = match self.select_local(&desc, platform)? {
                    Ok(desc) => (desc, None),
                    Err(listed) => (desc, Some(listed)),
                };
                let img = match theirs {
                    None => Some(self.local(Some(reference.clone()), desc.clone())?),
                    Some(_) => None,
                };
                if let Some(img) = img.filter(|i| config_matches(&i.config, platform)) {
                    return Ok(img);
                }
                let theirs = match theirs {
                    Some(listed) => listed,
                    None => config_platform(&self.local(Some(reference.clone()), desc)?.config),
                };
                tracing::info!(%reference, local = %theirs, wanted = %platform_text(platform), "local image is for another platform");
                local_other = Some(theirs);
            }
        }
        let context = || match &local_other {
            Some(theirs) => format!(
                "resolving image {} for platform {} (the local image is {theirs})",
                reference.familiar(),
                platform_text(platform)
            ),
            None => format!("resolving image {}", reference.familiar()),
        };
        let base_key = self.base_key(&reference, platform);
        // As dockerd's BuildKit and `docker build` do: an image this store already pulled is used as it is;
        // `--pull` asks the registry again. This keeps a no-op rebuild off the network.
        if !self.pull && local_other.is_none() {
            if let Some(desc) = self.store.base_get(&base_key)? {
                if let Ok(img) = self.local(Some(reference.clone()), desc) {
                    tracing::debug!(%reference, "using the manifest this store pulled before");
                    return Ok(img);
                }
            }
        }
        let pulled = self
            .rt
            .block_on(self.client.get()?.get_manifest(&reference, platform));
        let pulled = match pulled {
            Ok(p) => p,
            Err(e @ registry::Error::Unreachable { .. }) if !self.pull => {
                // Offline rebuild: reuse what this store resolved last time, if it is all still here.
                if let Some(desc) = self.store.base_get(&base_key)? {
                    tracing::warn!(%reference, "registry unreachable; using the last resolved manifest");
                    return self.local(Some(reference), desc);
                }
                return Err(anyhow!(e).context(context()));
            }
            Err(e) => return Err(anyhow!(e).context(context())),
        };
        let config_bytes = if self.store.has_blob(&pulled.manifest.config.digest) {
            self.store.read_blob(&pulled.manifest.config.digest)?
        } else {
            let bytes = self
                .rt
                .block_on(
                    self.client
                        .get()?
                        .fetch_blob_bytes(&reference, &pulled.manifest.config),
                )
                .with_context(|| format!("fetching config of {}", reference.familiar()))?;
            self.store.put_blob(&bytes)?;
            bytes
        };
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("parsing config of {}", reference.familiar()))?;
        self.store.put_blob(&pulled.bytes)?;
        let manifest_desc = Descriptor::new(
            &pulled.media_type,
            pulled.digest.clone(),
            pulled.bytes.len() as u64,
        );
        self.store.base_put(&base_key, &manifest_desc)?;
        Ok(ResolvedImage {
            reference: Some(reference),
            manifest_desc,
            manifest: pulled.manifest,
            config,
        })
    }

    /// The manifest of a local tag for `platform`: the tag's own descriptor, or, for an index, the entry
    /// containerd's matching picks (`Err` lists the index's platforms when none fits).
    pub fn select_local(
        &self,
        desc: &Descriptor,
        platform: &Platform,
    ) -> Result<std::result::Result<Descriptor, String>> {
        if !oci::media_type::is_index(&desc.media_type) {
            return Ok(Ok(desc.clone()));
        }
        let index: oci::Index = serde_json::from_slice(&self.store.read_blob(&desc.digest)?)
            .with_context(|| format!("parsing index {}", desc.digest))?;
        Ok(match index.select(platform) {
            Some(d) => Ok(d.clone()),
            None => Err(index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(platform_text))
                .collect::<Vec<_>>()
                .join(", ")),
        })
    }

    /// An image whose manifest is in the local store.
    pub fn local(&self, reference: Option<Reference>, desc: Descriptor) -> Result<ResolvedImage> {
        let manifest: Manifest = serde_json::from_slice(&self.store.read_blob(&desc.digest)?)
            .with_context(|| format!("parsing manifest {}", desc.digest))?;
        let config: ImageConfig =
            serde_json::from_slice(&self.store.read_blob(&manifest.config.digest)?)
                .with_context(|| format!("parsing config {}", manifest.config.digest))?;
        Ok(ResolvedImage {
            reference,
            manifest_desc: desc,
            manifest,
            config,
        })
    }

    /// The store's record name for the last resolution of `reference` (offline rebuilds): the reference,
    /// plus the platform when it is not the host's.
    fn base_key(&self, reference: &Reference, platform: &Platform) -> String {
        if *platform == Platform::host() {
            reference.to_string()
        } else {
            format!("{reference} {}", platform_text(platform))
        }
    }

    /// Resolves `name` and makes sure its layer blobs are in the store: what a FROM and `rbuild pull` do.
    /// `on_layer` hears about each layer, in order, once it is there.
    pub fn pull(
        &self,
        name: &str,
        on_layer: impl FnMut(&Layer, LayerFetch),
    ) -> Result<(ResolvedImage, Vec<Layer>)> {
        let image = self.resolve(name)?;
        let layers = self.fetch_layers_with(&image, on_layer)?;
        Ok((image, layers))
    }

    /// [`Images::pull`] for `platform`.
    pub fn pull_for(
        &self,
        name: &str,
        platform: &Platform,
        on_layer: impl FnMut(&Layer, LayerFetch),
    ) -> Result<(ResolvedImage, Vec<Layer>)> {
        let image = self.resolve_for(name, platform)?;
        let layers = self.fetch_layers_with(&image, on_layer)?;
        Ok((image, layers))
    }

    /// Makes sure every layer blob of `image` is in the store, downloading the missing ones.
    pub fn fetch_layers(&self, image: &ResolvedImage) -> Result<Vec<Layer>> {
        self.fetch_layers_with(image, |_, _| {})
    }

    /// [`Images::fetch_layers`], telling `on_layer` about each layer once it is there: those already in
    /// the store first, then each download as it completes (up to [`PARALLEL_LAYERS`] at once).
    pub fn fetch_layers_with(
        &self,
        image: &ResolvedImage,
        mut on_layer: impl FnMut(&Layer, LayerFetch),
    ) -> Result<Vec<Layer>> {
        use futures_util::StreamExt as _;
        let layers = image_layer_list(&image.config, &image.manifest, &image.manifest_desc.digest)?;
        let mut missing = Vec::new();
        for l in &layers {
            if self.store.has_blob(&l.blob.digest) {
                on_layer(l, LayerFetch::Present);
            } else if !missing
                .iter()
                .any(|m: &&Layer| m.blob.digest == l.blob.digest)
            {
                missing.push(l);
            }
        }
        if missing.is_empty() {
            return Ok(layers);
        }
        let reference = image.reference.as_ref().ok_or_else(|| {
            anyhow!(
                "layer {} of a local image is missing from the store",
                missing[0].blob.digest
            )
        })?;
        let client = self.client.get()?;
        let store = &self.store;
        self.rt.block_on(async {
            let mut downloads = futures_util::stream::iter(missing)
                .map(|l| async move {
                    download_blob(client, store, reference, &l.blob)
                        .await
                        .with_context(|| {
                            format!(
                                "pulling layer {} of {}",
                                l.blob.digest,
                                reference.familiar()
                            )
                        })?;
                    Ok::<_, anyhow::Error>(l)
                })
                .buffer_unordered(PARALLEL_LAYERS);
            while let Some(done) = downloads.next().await {
                on_layer(done?, LayerFetch::Fetched);
            }
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(layers)
    }
}

/// Downloads blob `desc` of `reference`'s repository into the store (verified), and remembers where it came
/// from: a later push to another repository of that registry can mount it instead of uploading it.
pub async fn download_blob(
    client: &registry::Client,
    store: &cache::Store,
    reference: &Reference,
    desc: &Descriptor,
) -> Result<()> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, store.blob_writer()?);
    client.fetch_blob(reference, desc, &mut w).await?;
    let w = w
        .into_inner()
        .map_err(|e| anyhow!("writing blob {}: {}", desc.digest, e.error()))?;
    w.commit(Some(&desc.digest))?;
    store.blob_source_add(&desc.digest, &reference.registry, &reference.repository)?;
    Ok(())
}

/// How many layers of one image are downloaded at once.
const PARALLEL_LAYERS: usize = 4;

/// Whether a layer blob had to be downloaded by [`Images::fetch_layers_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerFetch {
    /// Already in the store; not fetched.
    Present,
    /// Downloaded from the registry.
    Fetched,
}

/// `os/arch[/variant]`, as `--platform` spells it.
pub fn platform_text(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Whether two platforms name the same os and architecture (and variant, when both have one).
pub fn same_platform(a: &Platform, b: &Platform) -> bool {
    a.os == b.os
        && a.architecture == b.architecture
        && (a.variant.is_none() || b.variant.is_none() || a.variant == b.variant)
}

fn config_platform(config: &ImageConfig) -> String {
    platform_text(&Platform {
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        variant: config.variant.clone(),
        os_version: None,
    })
}

/// Whether an image config is for `platform`; a config that names no architecture matches anything.
fn config_matches(config: &ImageConfig, platform: &Platform) -> bool {
    config.architecture.is_empty()
        || same_platform(
            &Platform {
                architecture: config.architecture.clone(),
                os: config.os.clone(),
                variant: config.variant.clone(),
                os_version: None,
            },
            platform,
        )
}

/// The layers of an image: its config's diff_ids paired with its manifest's blobs (`what` names the image in
/// the error when their counts differ).
pub fn image_layer_list(
    config: &ImageConfig,
    manifest: &Manifest,
    what: &dyn std::fmt::Display,
) -> Result<Vec<Layer>> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(anyhow!(
            "image {what} has {} layers but its config lists {} diff_ids",
            manifest.layers.len(),
            diff_ids.len()
        ));
    }
    Ok(diff_ids
        .iter()
        .zip(&manifest.layers)
        .map(|(d, b)| Layer {
            diff_id: d.clone(),
            blob: b.clone(),
        })
        .collect())
}

/// Writes a layer blob into the store with `write` (which returns what it wrote) and commits it under the
/// digest it reports.
pub fn write_layer_blob(
    store: &cache::Store,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<oci::LayerInfo>,
) -> Result<Layer> {
    write_layer_blob_pushing(store, None, write)
}

/// [`write_layer_blob`], with `tap` (and the node whose layer this is) following the blob while it is
/// written (an upload to a registry while the layer is still being compressed).
pub fn write_layer_blob_pushing(
    store: &cache::Store,
    tap: Option<(&dyn BlobTap, NodeId)>,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<oci::LayerInfo>,
) -> Result<Layer> {
    // The layer writer hashes what it writes (its digest), so the store need not hash it again.
    let blob = store.blob_writer_hashed_by_caller()?;
    let done_with = tap.and_then(|(tap, node)| tap.follow(node, blob.path()));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, blob);
    let written = write(&mut w).and_then(|info| {
        let mut w = w
            .into_inner()
            .map_err(|e| anyhow!("writing layer: {}", e.error()))?;
        // Every byte in the file before a follower is told the blob is done.
        std::io::Write::flush(&mut w).context("writing layer")?;
        Ok((info, w))
    });
    if let Some(done_with) = done_with {
        done_with(
            written
                .as_ref()
                .ok()
                .map(|(info, _)| (info.digest.clone(), info.size)),
        );
    }
    let (info, w) = written?;
    let (digest, size) = w.commit(Some(&info.digest))?;
    Ok(Layer {
        diff_id: info.diff_id,
        blob: Descriptor::new(info.media_type, digest, size),
    })
}

/// Unpacks a layer into its snapshot dir unless it already is, returning the dir.
pub fn ensure_snapshot(store: &cache::Store, layer: &Layer) -> Result<PathBuf> {
    if let Some(p) = store.snapshot_path(&layer.diff_id) {
        return Ok(p);
    }
    let tmp = store.tmp_dir()?;
    let dir = tmp.path().join("fs");
    fs_err::create_dir(&dir)?;
    let blob = store.open_blob(&layer.blob.digest)?;
    let diff_id = oci::unpack_layer(std::io::BufReader::new(blob), &layer.blob.media_type, &dir)
        .with_context(|| format!("unpacking layer {}", layer.blob.digest))?;
    if diff_id != layer.diff_id {
        return Err(anyhow!(
            "layer {} unpacks to diff_id {diff_id}, expected {}",
            layer.blob.digest,
            layer.diff_id
        ));
    }
    Ok(store.commit_snapshot(&dir, &layer.diff_id)?)
}

/// Snapshot dirs of a layer stack, base first.
///
/// Empty snapshots (layers of steps that changed nothing, as BuildKit commits them) are left out: they
/// add nothing to the merged tree, and overlayfs refuses the same lower dir twice (ELOOP), which two
/// empty layers in one stack would be.
pub fn snapshots(store: &cache::Store, layers: &[Layer]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(layers.len());
    for l in layers {
        let dir = ensure_snapshot(store, l)?;
        if !oci::is_empty_dir(&dir)? {
            out.push(dir);
        }
    }
    Ok(out)
}
