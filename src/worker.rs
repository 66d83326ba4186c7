//! The [`solver::Worker`] of the binary: pulls base images, unpacks snapshots lazily, runs RUN in the
//! runner, and performs COPY/WORKDIR as file operations that produce layers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use graph::{CopySource, Mount, Network, Node, NodeId, Op};
use oci::{Descriptor, ImageConfig, LayerOptions, Manifest, MergedView, Platform, Reference};
use solver::{ExecContext, Layer, Outcome, WorkerError};

use crate::context::Context;
use crate::copy;
use crate::secrets::Secrets;

/// A base image resolved to a manifest, with its config.
#[derive(Clone, Debug)]
pub(crate) struct ResolvedImage {
    pub(crate) reference: Option<Reference>,
    pub(crate) manifest_desc: Descriptor,
    pub(crate) manifest: Manifest,
    pub(crate) config: ImageConfig,
}

/// A registry client made on first use: a build whose bases are all in the store never pays for loading
/// the system's CA certificates.
pub(crate) struct LazyClient {
    opts: registry::ClientOptions,
    cell: std::sync::OnceLock<registry::Client>,
}

impl LazyClient {
    pub(crate) fn new(opts: registry::ClientOptions) -> Self {
        Self {
            opts,
            cell: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn get(&self) -> Result<&registry::Client> {
        if let Some(c) = self.cell.get() {
            return Ok(c);
        }
        let c = registry::Client::new(self.opts.clone())?;
        Ok(self.cell.get_or_init(|| c))
    }
}

/// Resolves image references (local tags first, then registries) and remembers the answers for one build,
/// so the lowering and the pull see the same manifest.
pub(crate) struct Images {
    pub(crate) store: Arc<cache::Store>,
    pub(crate) client: Arc<LazyClient>,
    pub(crate) rt: tokio::runtime::Handle,
    pub(crate) platform: Platform,
    resolved: Mutex<HashMap<String, ResolvedImage>>,
    /// `--pull`: ignore local tags and earlier resolutions of base images; always ask the registry.
    pull: bool,
}

impl Images {
    pub(crate) fn new(
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
            pull: false,
        }
    }

    /// With `pull`, base images always come from their registry (`--pull`).
    pub(crate) fn with_pull(mut self, pull: bool) -> Self {
        self.pull = pull;
        self
    }

    /// Resolves `name`: a tag in the local store, else the registry it names.
    pub(crate) fn resolve(&self, name: &str) -> Result<ResolvedImage> {
        if let Some(r) = self.resolved.lock().expect("images lock").get(name) {
            return Ok(r.clone());
        }
        let r = self.resolve_uncached(name)?;
        self.resolved
            .lock()
            .expect("images lock")
            .insert(name.to_owned(), r.clone());
        Ok(r)
    }

    fn resolve_uncached(&self, name: &str) -> Result<ResolvedImage> {
        let reference: Reference = name.parse().with_context(|| format!("image {name:?}"))?;
        // A local tag of another platform (built or pulled with another --platform) is not this image.
        let mut local_other = None;
        if !self.pull {
            if let Some(desc) = self.store.resolve_tag(&reference.familiar())? {
                let img = self.local(Some(reference.clone()), desc)?;
                if config_matches(&img.config, &self.platform) {
                    return Ok(img);
                }
                let theirs = config_platform(&img.config);
                tracing::info!(%reference, local = %theirs, wanted = %platform_text(&self.platform), "local image is for another platform");
                local_other = Some(theirs);
            }
        }
        let context = || match &local_other {
            Some(theirs) => format!(
                "resolving image {} for platform {} (the local image is {theirs})",
                reference.familiar(),
                platform_text(&self.platform)
            ),
            None => format!("resolving image {}", reference.familiar()),
        };
        let base_key = self.base_key(&reference);
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
            .block_on(self.client.get()?.get_manifest(&reference, &self.platform));
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

    /// An image whose manifest is in the local store.
    pub(crate) fn local(
        &self,
        reference: Option<Reference>,
        desc: Descriptor,
    ) -> Result<ResolvedImage> {
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
    fn base_key(&self, reference: &Reference) -> String {
        if self.platform == Platform::host() {
            reference.to_string()
        } else {
            format!("{reference} {}", platform_text(&self.platform))
        }
    }

    /// Resolves `name` and makes sure its layer blobs are in the store: what a FROM and `rbuild pull` do.
    /// `on_layer` hears about each layer, in order, once it is there.
    pub(crate) fn pull(
        &self,
        name: &str,
        on_layer: impl FnMut(&Layer, LayerFetch),
    ) -> Result<(ResolvedImage, Vec<Layer>)> {
        let image = self.resolve(name)?;
        let layers = self.fetch_layers_with(&image, on_layer)?;
        Ok((image, layers))
    }

    /// Makes sure every layer blob of `image` is in the store, downloading the missing ones.
    pub(crate) fn fetch_layers(&self, image: &ResolvedImage) -> Result<Vec<Layer>> {
        self.fetch_layers_with(image, |_, _| {})
    }

    /// [`Images::fetch_layers`], telling `on_layer` about each layer once it is there: those already in
    /// the store first, then each download as it completes (up to [`PARALLEL_LAYERS`] at once).
    pub(crate) fn fetch_layers_with(
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
pub(crate) async fn download_blob(
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
pub(crate) enum LayerFetch {
    /// Already in the store; not fetched.
    Present,
    /// Downloaded from the registry.
    Fetched,
}

/// `os/arch[/variant]`, as `--platform` spells it.
pub(crate) fn platform_text(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Whether two platforms name the same os and architecture (and variant, when both have one).
pub(crate) fn same_platform(a: &Platform, b: &Platform) -> bool {
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
pub(crate) fn image_layer_list(
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
pub(crate) fn write_layer_blob(
    store: &cache::Store,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<oci::LayerInfo>,
) -> Result<Layer> {
    write_layer_blob_pushing(store, None, write)
}

/// [`write_layer_blob`], uploading the blob while it is written when `push` (an eager push and the node
/// whose layer this is) says so.
pub(crate) fn write_layer_blob_pushing(
    store: &cache::Store,
    push: Option<(&crate::eager::EagerPush, NodeId)>,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<oci::LayerInfo>,
) -> Result<Layer> {
    // The layer writer hashes what it writes (its digest), so the store need not hash it again.
    let blob = store.blob_writer_hashed_by_caller()?;
    let upload = push.and_then(|(eager, node)| eager.start(node, blob.path()).map(|u| (eager, u)));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, blob);
    let written = write(&mut w).and_then(|info| {
        let mut w = w
            .into_inner()
            .map_err(|e| anyhow!("writing layer: {}", e.error()))?;
        // Every byte in the file before an upload following it is told the blob is done.
        std::io::Write::flush(&mut w).context("writing layer")?;
        Ok((info, w))
    });
    if let Some((eager, upload)) = upload {
        let done = written
            .as_ref()
            .ok()
            .map(|(info, _)| (info.digest.clone(), info.size));
        eager.finish(upload, done);
    }
    let (info, w) = written?;
    let (digest, size) = w.commit(Some(&info.digest))?;
    Ok(Layer {
        diff_id: info.diff_id,
        blob: Descriptor::new(info.media_type, digest, size),
    })
}

/// Unpacks a layer into its snapshot dir unless it already is, returning the dir.
pub(crate) fn ensure_snapshot(store: &cache::Store, layer: &Layer) -> Result<PathBuf> {
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
pub(crate) fn snapshots(store: &cache::Store, layers: &[Layer]) -> Result<Vec<PathBuf>> {
    layers.iter().map(|l| ensure_snapshot(store, l)).collect()
}

pub(crate) struct BuildWorker {
    pub(crate) images: Arc<Images>,
    pub(crate) store: Arc<cache::Store>,
    pub(crate) context: Arc<Context>,
    pub(crate) exe: PathBuf,
    pub(crate) layer_opts: LayerOptions,
    pub(crate) secrets: Arc<Secrets>,
    pub(crate) downloads: Arc<crate::fetch::Downloads>,
    /// Network of RUN steps that do not choose one (`--network`).
    pub(crate) default_network: runner::Network,
    /// `--no-new-privileges`.
    pub(crate) no_new_privs: bool,
    /// `--isolation`; not part of any cache key (the result is the same layer).
    pub(crate) isolation: runner::Isolation,
    /// Caches imported with `--cache-from`: where missing blobs and cache mounts come from.
    pub(crate) remote: Arc<crate::remote_cache::Remote>,
    /// `ADD <git URL>` sources.
    pub(crate) git: Arc<crate::git::GitSources>,
    /// With `--push`: uploads of the pushed image's RUN layers while they are written.
    pub(crate) eager: Option<Arc<crate::eager::EagerPush>>,
}

/// The runner mounts of one RUN, with what must live as long as the RUN does.
struct Mounts {
    specs: Vec<runner::MountSpec>,
    /// `KEY=value` entries added to the command's environment (secrets with `env=`, SSH_AUTH_SOCK).
    env: Vec<String>,
    /// Cache mount locks and scratch dirs, released and deleted after the RUN.
    _guards: Vec<Box<dyn std::any::Any>>,
}

fn werr(e: anyhow::Error) -> WorkerError {
    WorkerError::Other {
        message: format!("{e:#}"),
        source: None,
    }
}

impl solver::Worker for BuildWorker {
    fn content_key(&self, node: &Node) -> Result<Option<String>, WorkerError> {
        match &node.op {
            Op::Image { reference } => {
                let img = self.images.resolve(reference).map_err(werr)?;
                Ok(Some(img.manifest_desc.digest.to_string()))
            }
            Op::Copy(c) if c.source == CopySource::Context => self
                .context
                .content_key(&c.srcs, &c.exclude, c.chmod.is_some())
                .map(Some)
                .map_err(werr),
            Op::Http(h) => self.downloads.content_key(h).map(Some).map_err(werr),
            Op::Git(g) => self.git.content_key(g).map(Some).map_err(werr),
            // Build-wide RUN options enter the key only when not the default, so default keys do not move.
            Op::Exec(e) => {
                let mut opts = Vec::new();
                if e.network == Network::Default && self.default_network == runner::Network::None {
                    opts.push("network=none");
                }
                if self.no_new_privs {
                    opts.push("no-new-privileges");
                }
                Ok((!opts.is_empty()).then(|| format!("run-options: {}", opts.join(" "))))
            }
            _ => Ok(None),
        }
    }

    fn execute(
        &self,
        node: &Node,
        inputs: &[Outcome],
        ctx: &ExecContext<'_>,
    ) -> Result<Outcome, WorkerError> {
        match &node.op {
            Op::Scratch => Ok(Outcome::default()),
            Op::Image { reference } => {
                let (_, layers) = self.images.pull(reference, |_, _| {}).map_err(werr)?;
                Ok(Outcome {
                    layers,
                    added_layer: false,
                })
            }
            Op::Exec(exec) => self.exec(exec, inputs, ctx),
            Op::Merge => {
                let mut layers = inputs[0].layers.clone();
                layers.extend(inputs[1].layers.iter().cloned());
                Ok(Outcome {
                    layers,
                    added_layer: inputs[1].added_layer,
                })
            }
            Op::Git(g) => self.file_op(&Outcome::default(), |dir| {
                let scratch = self.store.tmp_dir()?;
                self.git.checkout(g, scratch.path(), dir)
            }),
            Op::Http(h) => self.file_op(&Outcome::default(), |dir| {
                self.downloads.materialize(h, dir)
            }),
            Op::Copy(c) => {
                let base = &inputs[0];
                let from = match &c.source {
                    CopySource::Input { index } => Some(&inputs[*index]),
                    _ => None,
                };
                self.file_op(base, |layer_dir| {
                    let dest_view =
                        MergedView::new(self.remote.snapshots(&self.store, &base.layers)?);
                    let src_view = match from {
                        Some(o) => Some(MergedView::new(
                            self.remote.snapshots(&self.store, &o.layers)?,
                        )),
                        None => None,
                    };
                    copy::copy(c, &self.context, src_view.as_ref(), &dest_view, layer_dir)
                })
            }
            Op::Mkdir(m) => {
                let base = &inputs[0];
                let view = MergedView::new(
                    self.remote
                        .snapshots(&self.store, &base.layers)
                        .map_err(werr)?,
                );
                if view
                    .resolve(&m.path, true)
                    .map_err(|e| werr(e.into()))?
                    .is_some_and(|r| r.is_dir)
                {
                    return Ok(Outcome {
                        layers: base.layers.clone(),
                        added_layer: false,
                    });
                }
                self.file_op(base, |layer_dir| {
                    copy::mkdir(&m.path, &m.user, &view, layer_dir)
                })
            }
        }
    }

    fn is_usable(&self, outcome: &Outcome) -> bool {
        outcome
            .layers
            .iter()
            .all(|l| self.store.has_blob(&l.blob.digest) || self.remote.can_fetch(&l.blob.digest))
    }
}

impl BuildWorker {
    /// Runs `fill` on a fresh layer dir and turns the dir into a layer on top of `base`.
    fn file_op(
        &self,
        base: &Outcome,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Outcome, WorkerError> {
        let tmp = self.store.tmp_dir().map_err(|e| werr(e.into()))?;
        let dir = tmp.path().join("layer");
        fs_err::create_dir(&dir).map_err(|e| werr(e.into()))?;
        fill(&dir).map_err(werr)?;
        self.commit_layer(base, &dir, None, None).map_err(werr)
    }

    /// Writes `dir` (overlay format) as a layer blob and keeps `dir` as its snapshot; `early` holds gzip
    /// members compressed while a RUN wrote `dir`, and `node` is that RUN (its layer may be pushed while
    /// it is written).
    fn commit_layer(
        &self,
        base: &Outcome,
        dir: &Path,
        early: Option<&oci::Precompressed>,
        node: Option<NodeId>,
    ) -> Result<Outcome> {
        if oci::is_empty_dir(dir)? {
            return Ok(Outcome {
                layers: base.layers.clone(),
                added_layer: false,
            });
        }
        let push = self.eager.as_deref().zip(node);
        let layer = write_layer_blob_pushing(&self.store, push, |w| {
            oci::write_layer_early(dir, w, &self.layer_opts, early).context("writing layer")
        })?;
        if let Some(early) = early {
            tracing::debug!(
                compressed = early.compressed(),
                used = early.used(),
                "gzip members compressed during the RUN"
            );
        }
        self.store.commit_snapshot(dir, &layer.diff_id)?;
        let mut layers = base.layers.clone();
        layers.push(layer);
        Ok(Outcome {
            layers,
            added_layer: true,
        })
    }

    /// Turns a RUN's `--mount`s into runner mounts.
    fn mounts(&self, exec: &graph::Exec, inputs: &[Outcome]) -> Result<Mounts> {
        let mut out = Mounts {
            specs: Vec::new(),
            env: Vec::new(),
            _guards: Vec::new(),
        };
        for m in &exec.mounts {
            match m {
                Mount::Cache {
                    id,
                    target,
                    readonly,
                    sharing,
                    mode,
                    uid,
                    gid,
                    from,
                    source,
                } => {
                    let dir = match sharing.as_str() {
                        "locked" => {
                            out._guards.push(Box::new(self.store.lock_cache_mount(id)?));
                            self.store.cache_mount_dir(id)?
                        }
                        // One writer at a time gets the persistent dir; the others a fresh one.
                        "private" => {
                            match self.store.try_lock(&format!("cache-mount-private:{id}"))? {
                                Some(guard) => {
                                    out._guards.push(Box::new(guard));
                                    self.store.cache_mount_dir(id)?
                                }
                                None => {
                                    let tmp = self.store.tmp_dir()?;
                                    let dir = tmp.path().join("cache");
                                    fs_err::create_dir(&dir)?;
                                    out._guards.push(Box::new(tmp));
                                    dir
                                }
                            }
                        }
                        _ => self.store.cache_mount_dir(id)?,
                    };
                    // A mount restored from an imported cache is new here: it gets its mode and owner
                    // like an empty one (its top directory is not in the exported tar).
                    let restored = self.remote.restore_mount(&self.store, id, &dir)?;
                    if restored {
                        tracing::info!(id = %id, "cache mount restored from an imported cache");
                    }
                    if let Some(index) = from {
                        seed_cache_dir(&self.store, &self.remote, &dir, inputs, *index, source)?;
                    }
                    init_cache_dir(&dir, *mode, *uid, *gid, restored)?;
                    out.specs.push(runner::MountSpec::Bind {
                        source: dir,
                        target: target.clone(),
                        readonly: *readonly,
                    });
                }
                Mount::Tmpfs { target, size } => {
                    out.specs.push(runner::MountSpec::Tmpfs {
                        target: target.clone(),
                        size: *size,
                    });
                }
                Mount::Bind {
                    input,
                    source,
                    target,
                    readwrite,
                } => {
                    let (lowers, source) = match input {
                        None => {
                            let rel = crate::context::clean_rel(source)?;
                            (vec![self.context.host_path("")], format!("/{rel}"))
                        }
                        Some(index) => {
                            let input = inputs.get(*index).ok_or_else(|| {
                                anyhow!("RUN --mount from= names input {index}, which is missing")
                            })?;
                            (
                                self.remote.snapshots(&self.store, &input.layers)?,
                                source.clone(),
                            )
                        }
                    };
                    let scratch = if *readwrite {
                        let tmp = self.store.tmp_dir()?;
                        let dir = tmp.path().to_owned();
                        out._guards.push(Box::new(tmp));
                        Some(dir)
                    } else {
                        None
                    };
                    out.specs.push(runner::MountSpec::Overlay {
                        lowers,
                        source,
                        target: target.clone(),
                        scratch,
                    });
                }
                Mount::Secret {
                    id,
                    target,
                    env,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(value) = self.secrets.value(id)? else {
                        if *required {
                            return Err(anyhow!(
                                "secret {id} is required but was not given (use --secret id={id},src=FILE or --secret id={id},env=VAR)"
                            ));
                        }
                        continue;
                    };
                    if let Some(var) = env {
                        let text = String::from_utf8(value.clone()).map_err(|_| {
                            anyhow!("secret {id} is not UTF-8, so it cannot be put in {var}")
                        })?;
                        out.env.push(format!("{var}={text}"));
                    }
                    if !target.is_empty() {
                        out.specs.push(runner::MountSpec::File {
                            content: runner::SecretBytes(value),
                            target: target.clone(),
                            mode: *mode,
                            uid: *uid,
                            gid: *gid,
                        });
                    }
                }
                Mount::Ssh {
                    id,
                    target,
                    required,
                } => {
                    let Some(socket) = self.secrets.ssh_socket(id)? else {
                        if *required {
                            return Err(anyhow!(
                                "ssh agent {id} is required but was not given (use --ssh {id} or --ssh {id}=SOCKET)"
                            ));
                        }
                        continue;
                    };
                    out.specs.push(runner::MountSpec::Bind {
                        source: socket,
                        target: target.clone(),
                        readonly: false,
                    });
                    out.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
            }
        }
        Ok(out)
    }

    fn exec(
        &self,
        exec: &graph::Exec,
        inputs: &[Outcome],
        ctx: &ExecContext<'_>,
    ) -> Result<Outcome, WorkerError> {
        let target = &self.images.platform;
        let host = Platform::host();
        if !same_platform(target, &host) {
            return Err(WorkerError::msg(format!(
                "cannot run a command for platform {}: this host is {} and emulation is not supported \
                 (build for {} or drop the RUN)",
                platform_text(target),
                platform_text(&host),
                platform_text(&host)
            )));
        }
        let base = &inputs[0];
        let mut lowers = self
            .remote
            .snapshots(&self.store, &base.layers)
            .map_err(werr)?;
        if lowers.is_empty() {
            lowers.push(self.store.empty_dir().map_err(|e| werr(e.into()))?);
        }
        let tmp = self.store.tmp_dir().map_err(|e| werr(e.into()))?;
        let upper = tmp.path().join("upper");
        let work = tmp.path().join("work");
        fs_err::create_dir(&upper).map_err(|e| werr(e.into()))?;
        fs_err::create_dir(&work).map_err(|e| werr(e.into()))?;

        let mounts = self.mounts(exec, inputs).map_err(werr)?;
        let Mounts {
            specs: mounts,
            env: extra_env,
            _guards,
        } = mounts;
        let mut env = exec.env.clone();
        env.extend(extra_env);

        let spec = runner::Spec {
            lowers,
            upper: upper.clone(),
            work,
            args: exec.args.clone(),
            env,
            cwd: exec.cwd.clone(),
            user: exec.user.clone(),
            hostname: String::new(),
            network: match exec.network {
                Network::None => runner::Network::None,
                Network::Host => runner::Network::Host,
                Network::Default => self.default_network,
            },
            mounts,
            readonly_rootfs: false,
            no_new_privs: self.no_new_privs,
            seccomp: runner::Seccomp::Default,
            tty: false,
            isolation: self.isolation,
        };
        // Compress the big files of the layer while the RUN writes them, with what CPU it leaves idle.
        // In chroot mode the upper dir is filled only after the command ends.
        let early = (self.layer_opts.compression == oci::Compression::Gzip
            && self.isolation == runner::Isolation::Namespaces)
            .then(|| oci::EarlyGzip::start(&upper, tmp.path(), self.layer_opts.level))
            .and_then(|started| {
                started
                    .map_err(|e| tracing::debug!(error = %e, "early gzip did not start"))
                    .ok()
            });
        let mut child = runner::spawn(
            &spec,
            &self.exe,
            Stdio::null(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .map_err(|e| WorkerError::other("starting the sandbox", e))?;
        let setup_error = Arc::new(Mutex::new(Vec::<String>::new()));
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            let setup_error = Arc::clone(&setup_error);
            let reporter_lines = std::sync::mpsc::channel::<String>();
            let (tx, rx) = reporter_lines;
            let handle = std::thread::spawn(move || {
                for line in BufReader::new(stream)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    if line.starts_with("rbuild-runner: ") {
                        setup_error
                            .lock()
                            .expect("setup error lock")
                            .push(line.clone());
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            (handle, rx)
        })
        .collect();
        let status = loop {
            for (_, rx) in &readers {
                while let Ok(line) = rx.try_recv() {
                    ctx.log(&line);
                }
            }
            if ctx.cancel.is_cancelled() {
                // Killing the outside process kills the sandbox (its PID 1 has PDEATHSIG).
                let _ = child.kill(); // already-exited is fine: we wait next
                let _ = child.wait();
                return Err(WorkerError::Cancelled);
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    tracing::debug!(?status, "sandbox exited");
                    break status;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(WorkerError::other("waiting for the sandbox", e)),
            }
        };
        for (handle, rx) in readers {
            let _ = handle.join(); // a reader thread only ends by EOF; its panics are impossible here
            while let Ok(line) = rx.try_recv() {
                ctx.log(&line);
            }
        }
        let code = status.code().unwrap_or(128);
        if code == runner::EXIT_SETUP_FAILED {
            let lines = setup_error.lock().expect("setup error lock").join("; ");
            if !lines.is_empty() {
                return Err(WorkerError::msg(format!("sandbox setup failed: {lines}")));
            }
        }
        if code != 0 {
            return Err(WorkerError::ExitCode { code });
        }
        let early = early.and_then(oci::EarlyGzip::finish);
        self.commit_layer(base, &upper, early.as_ref(), Some(ctx.node))
            .map_err(werr)
    }
}

/// Fills a new (empty) cache dir with `source` of input `index` (`RUN --mount=type=cache,from=…`); a cache
/// dir that already has contents keeps them, as BuildKit seeds only on creation.
fn seed_cache_dir(
    store: &cache::Store,
    remote: &crate::remote_cache::Remote,
    dir: &Path,
    inputs: &[Outcome],
    index: usize,
    source: &str,
) -> Result<()> {
    if fs_err::read_dir(dir)?.next().is_some() {
        return Ok(());
    }
    let input = inputs
        .get(index)
        .ok_or_else(|| anyhow!("RUN --mount cache from= names input {index}, which is missing"))?;
    let view = MergedView::new(remote.snapshots(store, &input.layers)?);
    let src = if source.is_empty() { "/" } else { source };
    view.copy_out(src, dir, true)
        .with_context(|| format!("seeding the cache mount from {src}"))?;
    Ok(())
}

/// Gives a cache dir its `mode`, `uid` and `gid` while it is empty (just created, as BuildKit
/// sets them only on creation) or `new` (just restored from an imported cache).
fn init_cache_dir(dir: &Path, mode: u32, uid: u32, gid: u32, new: bool) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !new && fs_err::read_dir(dir)?.next().is_some() {
        return Ok(());
    }
    let meta = fs_err::metadata(dir)?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", dir.display()))?;
    }
    if meta.mode() & 0o7777 != mode & 0o7777 {
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(())
}
