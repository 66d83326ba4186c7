//! Export: a solved stage becomes an image (config and manifest in the store, layers converted to the
//! asked compression), then goes to its outputs (`-o` as buildx spells them: image, registry, oci, docker,
//! local, tar), the metadata file, and registries (push, including the upload of RUN layers while they are
//! written, [`EagerPush`]).
//!
//! It does not parse flags (the binary turns them into [`ExportOptions`] and [`Output`]s) or run steps.
//!
//! ```no_run
//! # fn f(store: &cache::Store, stage: &frontend::Stage, solved: &solver::Solved) -> anyhow::Result<()> {
//! let image = export::assemble(store, stage, solved, &export::ExportOptions::default(), None, &|_| Ok(()))?;
//! let out = export::Output::Local { dest: "rootfs".into() };
//! export::write_output(store, &image, &["app:1".to_owned()], &out, &[])?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use images::BlobSource;
use oci::{
    media_type, Compression, Descriptor, Digest, ImageConfig, LayerOptions, Manifest, Reference,
};
use solver::{Layer, Solved};

mod built;
mod eager;
mod engine;
mod index;
mod push;

pub use built::Built;
pub use eager::EagerPush;
pub use engine::load_into_engine;
pub use index::{
    build_index, check_index_outputs, create_index, local_index, platform_dir, push_index,
    push_index_only, write_index_metadata, write_index_output, Attachment, ImageIndex, LocalIndex,
};
pub use push::{push_blobs, PushStats};

/// The image config field that holds an inline build cache (`--cache-to type=inline`); the
/// `remotecache` crate writes and reads what is under it.
pub const INLINE_KEY: &str = "rbuild.cache.v1";

/// Docker's media type for an uncompressed layer.
const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// How the image is assembled: compression, media types, metadata, timestamps.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Compression of the layers this build writes (and of all layers with `force_compression`).
    pub compression: Compression,
    /// Compression level; `None` is the compressor's default.
    pub level: Option<u32>,
    /// Recompress layers (base layers, cache hits) whose compression differs from `compression`.
    pub force_compression: bool,
    /// OCI media types (default) or Docker schema2 ones.
    pub oci_mediatypes: bool,
    /// Image labels (`--label`), added to the config's `Labels`.
    pub labels: BTreeMap<String, String>,
    /// Manifest annotations (`--annotation`).
    pub annotations: BTreeMap<String, String>,
    /// `SOURCE_DATE_EPOCH`: timestamps in the config, history and layers are clamped to it.
    pub source_date_epoch: Option<i64>,
    /// Rewrite every layer (base layers too) with mtimes clamped to `source_date_epoch`.
    pub rewrite_timestamp: bool,
    /// The base image (name, manifest digest) for the `org.opencontainers.image.base.*` annotations.
    pub base: Option<(String, Digest)>,
    /// `--cache-to type=inline`: the cache records written into the config (see the `remotecache` crate).
    pub inline_cache: Option<serde_json::Value>,
    /// `--squash` / `--squash-all`: the build's layers (or all) as one.
    pub squash: Squash,
}

/// Which layers of the image become one (buildah's `--squash` and `--squash-all`, kaniko's
/// `--single-snapshot`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Squash {
    /// Every layer as built.
    #[default]
    No,
    /// The base image's layers, then one layer with everything this build added.
    New,
    /// One layer with the whole filesystem.
    All,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            level: None,
            force_compression: false,
            oci_mediatypes: true,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            source_date_epoch: None,
            rewrite_timestamp: false,
            base: None,
            inline_cache: None,
            squash: Squash::No,
        }
    }
}

impl ExportOptions {
    /// The layer writer's options: compression on every core with a deterministic scheme (same bytes for
    /// any core count), mtimes clamped to `SOURCE_DATE_EPOCH`.
    pub fn layer_options(&self) -> LayerOptions {
        LayerOptions {
            compression: self.compression,
            level: self.level,
            source_date_epoch: self.source_date_epoch,
            threads: Some(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            ),
        }
    }
}

/// An image assembled in the local store.
#[derive(Debug, Clone)]
pub struct Image {
    pub config_digest: Digest,
    pub manifest: Manifest,
    pub manifest_desc: Descriptor,
}

/// OCI media type for a layer blob, converting Docker's names for the same bytes.
fn oci_layer_type(mt: &str) -> &str {
    match mt {
        media_type::DOCKER_LAYER_GZIP => media_type::OCI_LAYER_GZIP,
        DOCKER_LAYER_TAR => media_type::OCI_LAYER_TAR,
        other => other,
    }
}

/// Docker schema2 media type for a layer blob (zstd keeps the OCI name, as BuildKit does).
fn docker_layer_type(mt: &str) -> &str {
    match mt {
        media_type::OCI_LAYER_GZIP => media_type::DOCKER_LAYER_GZIP,
        media_type::OCI_LAYER_TAR => DOCKER_LAYER_TAR,
        other => other,
    }
}

/// The number of layers of the base image (0 for scratch or when its manifest is not at hand).
fn base_layer_count(store: &cache::Store, opts: &ExportOptions) -> usize {
    opts.base
        .as_ref()
        .and_then(|(_, d)| store.read_blob(d).ok())
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .map_or(0, |m| m.layers.len())
}

/// `layers[keep..]` as one layer (merged in a scratch dir of the store, written with `opts`), when they
/// are more than one.
fn squash_layers(
    store: &cache::Store,
    mut layers: Vec<Layer>,
    keep: usize,
    opts: &ExportOptions,
    fetch: &dyn Fn(&Layer) -> Result<()>,
) -> Result<Vec<Layer>> {
    if layers.len() <= keep + 1 {
        return Ok(layers);
    }
    let base = layers[..keep]
        .iter()
        .map(|l| {
            fetch(l)?;
            images::ensure_snapshot(store, l)
        })
        .collect::<Result<Vec<_>>>()?;
    let view = oci::MergedView::new(base);
    let below = |p: &str| view.resolve(p, false).is_ok_and(|r| r.is_some());
    let tmp = store.tmp_dir()?;
    let merged = tmp.path().join("fs");
    fs_err::create_dir(&merged)?;
    for l in &layers[keep..] {
        fetch(l)?;
        let dir = images::ensure_snapshot(store, l)?;
        oci::merge_layer_dir(&dir, &merged, &below)
            .with_context(|| format!("squashing layer {}", l.blob.digest))?;
    }
    let lopts = opts.layer_options();
    let squashed = images::write_layer_blob(store, |w| {
        oci::write_layer(&merged, w, &lopts).context("writing the squashed layer")
    })?;
    layers.truncate(keep);
    layers.push(squashed);
    Ok(layers)
}

/// Makes the layers match `opts`: recompresses those of another compression (the base image's only with
/// `--force-compression`; layers of this build can come from cache records written with another
/// `--compression`) and rewrites all of them with clamped mtimes (`--rewrite-timestamp`). Results are remembered in the store's
/// cache records, so the next build does not redo the work.
fn convert_layers(
    store: &cache::Store,
    layers: &[Layer],
    opts: &ExportOptions,
    fetch: &dyn Fn(&Layer) -> Result<()>,
) -> Result<Vec<Layer>> {
    let rewrite = opts.rewrite_timestamp && opts.source_date_epoch.is_some();
    let keep = if opts.force_compression || rewrite {
        0
    } else {
        base_layer_count(store, opts)
    };
    let lopts = opts.layer_options();
    let mut out = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let same = Compression::of_media_type(&l.blob.media_type) == Some(opts.compression);
        if i < keep || (!rewrite && same) {
            out.push(l.clone());
            continue;
        }
        let key = solver::RecordFamily::ExportConvert.key(format_args!(
            "{} {:?} {:?} {:?}",
            l.blob.digest,
            opts.compression,
            opts.level,
            rewrite.then_some(opts.source_date_epoch)
        ));
        if let Some(v) = store.cache_get(&key)? {
            if let Ok(done) = serde_json::from_slice::<Layer>(&v) {
                if store.has_blob(&done.blob.digest) {
                    out.push(done);
                    continue;
                }
            }
        }
        fetch(l)?;
        let done = images::write_layer_blob(store, |w| {
            if rewrite {
                let dir = images::ensure_snapshot(store, l)?;
                oci::write_layer(&dir, w, &lopts)
                    .with_context(|| format!("rewriting layer {}", l.blob.digest))
            } else {
                let blob = store.open_blob(&l.blob.digest)?;
                oci::recompress_layer(std::io::BufReader::new(blob), &l.blob.media_type, w, &lopts)
                    .with_context(|| format!("recompressing layer {}", l.blob.digest))
            }
        })?;
        store.cache_put_with_refs(
            &key,
            &serde_json::to_vec(&done)?,
            std::slice::from_ref(&done.blob.digest),
        )?;
        out.push(done);
    }
    Ok(out)
}

/// Writes the config and manifest of `stage` (solved) into the store.
///
/// `previous` is the image the build's tag points at now: when the new image would differ from it only in
/// its timestamps (a rebuild where nothing changed), `previous` is returned and nothing is written, so a
/// no-op rebuild keeps its image ID, as BuildKit's fully cached rebuilds do.
///
/// `fetch` brings a layer's blob into the store when it must be read (recompression); layers of an
/// imported cache may not be here yet.
pub fn assemble(
    store: &cache::Store,
    stage: &frontend::Stage,
    solved: &Solved,
    opts: &ExportOptions,
    previous: Option<Image>,
    fetch: &dyn Fn(&Layer) -> Result<()>,
) -> Result<Image> {
    let head = solved
        .outcomes
        .get(&stage.head)
        .ok_or_else(|| anyhow!("internal error: the target stage has no result"))?;
    let layers = convert_layers(store, &head.layers, opts, fetch)?;
    let keep = match opts.squash {
        Squash::No => layers.len(),
        Squash::New => base_layer_count(store, opts).min(layers.len()),
        Squash::All => 0,
    };
    let layers = squash_layers(store, layers, keep, opts, fetch)?;
    let mut config: ImageConfig = stage.config.clone();
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    match &opts.inline_cache {
        Some(v) => {
            config.extra.insert(INLINE_KEY.to_owned(), v.clone());
        }
        // A base image's inline cache says nothing about this image.
        None => {
            config.extra.remove(INLINE_KEY);
        }
    }
    if !opts.labels.is_empty() {
        let labels = config.config.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(opts.labels.clone());
    }
    let now = oci::time::build_time(opts.source_date_epoch);
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
    if opts.squash != Squash::No {
        // One layer for what was squashed: the last history entry that added one keeps it.
        let from = if opts.squash == Squash::All {
            0
        } else {
            base_entries
        };
        let last = config.history.iter().rposition(|h| !h.empty_layer);
        for (i, h) in config.history.iter_mut().enumerate().skip(from) {
            h.empty_layer = Some(i) != last;
        }
    }
    // A build that adds no layer (metadata only: LABEL, ENV, CMD…) is dated by the last base layer, as
    // BuildKit's exporter dates history from layer creation times and the image from its last history
    // entry (exporter/containerimage/writer.go normalizeLayersAndHistory; lab: dockerd 20.10 gives such
    // an image its base's `created`). Found by the differential (buildah's maintainer, metadata-only…).
    let adds_layers = config
        .history
        .iter()
        .skip(base_entries)
        .any(|h| !h.empty_layer);
    let now = match config.history[..base_entries]
        .iter()
        .rev()
        .find_map(|h| h.created.clone())
    {
        Some(base_time) if !adds_layers && opts.source_date_epoch.is_none() => base_time,
        _ => now,
    };
    for h in config.history.iter_mut().skip(base_entries) {
        if h.created.is_none() {
            h.created = Some(now.clone());
        }
    }
    if opts.rewrite_timestamp && opts.source_date_epoch.is_some() {
        // Base history too: the rewritten image must not depend on when its base was built.
        for h in &mut config.history {
            if h.created.is_some() {
                h.created = Some(now.clone());
            }
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
    let (manifest_type, config_type) = if opts.oci_mediatypes {
        (media_type::OCI_MANIFEST, media_type::OCI_CONFIG)
    } else {
        (media_type::DOCKER_MANIFEST, media_type::DOCKER_CONFIG)
    };
    let mut annotations = BTreeMap::new();
    if let Some((name, digest)) = &opts.base {
        annotations.insert(
            "org.opencontainers.image.base.name".to_owned(),
            name.clone(),
        );
        annotations.insert(
            "org.opencontainers.image.base.digest".to_owned(),
            digest.to_string(),
        );
    }
    annotations.extend(opts.annotations.clone());
    let layer_descs: Vec<Descriptor> = layers
        .iter()
        .map(|l| Descriptor {
            media_type: if opts.oci_mediatypes {
                oci_layer_type(&l.blob.media_type).to_owned()
            } else {
                docker_layer_type(&l.blob.media_type).to_owned()
            },
            ..l.blob.clone()
        })
        .collect();
    if let Some(prev) = previous {
        if prev.manifest.layers == layer_descs
            && prev.manifest.annotations == annotations
            && prev.manifest.media_type.as_deref() == Some(manifest_type)
            && prev.manifest.config.media_type == config_type
            && store
                .read_blob(&prev.config_digest)
                .ok()
                .and_then(|b| serde_json::from_slice::<ImageConfig>(&b).ok())
                .is_some_and(|old| same_but_for_time(&old, &config))
        {
            tracing::debug!(image = %prev.config_digest, "nothing changed but the time: keeping the image");
            return Ok(prev);
        }
    }
    let config_bytes = serde_json::to_vec(&config).context("encoding image config")?;
    let config_digest = store.put_blob(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(manifest_type.to_owned()),
        config: Descriptor::new(
            config_type,
            config_digest.clone(),
            config_bytes.len() as u64,
        ),
        layers: layer_descs,
        annotations,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).context("encoding manifest")?;
    let manifest_digest = store.put_blob(&manifest_bytes)?;
    let manifest_desc =
        Descriptor::new(manifest_type, manifest_digest, manifest_bytes.len() as u64);
    Ok(Image {
        config_digest,
        manifest,
        manifest_desc,
    })
}

/// Whether two image configs are equal but for `created` times (the config's and its history's).
fn same_but_for_time(a: &ImageConfig, b: &ImageConfig) -> bool {
    let timeless = |c: &ImageConfig| {
        let mut c = c.clone();
        c.created = None;
        for h in &mut c.history {
            h.created = None;
        }
        serde_json::to_value(c).ok()
    };
    let (a, b) = (timeless(a), timeless(b));
    a.is_some() && a == b
}

/// Size of an image: config plus compressed layers.
pub fn image_size(m: &Manifest) -> u64 {
    m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>()
}

/// Where an image goes after the build (`-o`, as buildx spells it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `type=image` (the local store; the default) or `type=registry` (`push: true`).
    Image {
        /// `name=`: more names for the image (comma-separated in a quoted field).
        names: Vec<String>,
        /// `push=true`, or `type=registry`.
        push: bool,
        /// `push-by-digest=true`: pushed without a tag (`name@sha256:…`), for `rbuild imagetools create`.
        by_digest: bool,
    },
    /// `type=oci,dest=FILE|DIR`: an OCI image layout, as a tar or (`tar=false`, an existing directory or a
    /// dest ending in `/`) as a directory.
    Oci {
        /// Where; `-` is stdout (tar only).
        dest: PathBuf,
        /// A tar archive rather than a directory.
        tar: bool,
        /// `name=`: names in the index instead of the tags.
        names: Vec<String>,
    },
    /// `type=docker,dest=FILE`: a `docker load` archive (`manifest.json` plus an OCI layout).
    Docker {
        /// Where; `-` is stdout.
        dest: PathBuf,
        /// `name=`: `RepoTags` instead of the tags.
        names: Vec<String>,
    },
    /// `--load`, or `type=docker` without `dest`: into the Docker engine at `DOCKER_HOST`.
    DockerEngine {
        /// `name=`: `RepoTags` instead of the tags.
        names: Vec<String>,
    },
    /// `type=local,dest=DIR`: the final rootfs as files.
    Local {
        /// The directory (created if missing; contents merge into an existing one).
        dest: PathBuf,
    },
    /// `type=tar,dest=FILE`: the final rootfs as one tar.
    Tar {
        /// Where; `-` is stdout.
        dest: PathBuf,
    },
}

impl Output {
    /// Whether this output pushes to a registry.
    pub fn pushes(&self) -> bool {
        matches!(self, Self::Image { push: true, .. })
    }
    /// Whether this output pushes by digest only (`push-by-digest=true`).
    pub fn by_digest(&self) -> bool {
        matches!(
            self,
            Self::Image {
                by_digest: true,
                ..
            }
        )
    }
    /// The `name=` names of an image output (they become tags like `-t`).
    pub fn image_names(&self) -> &[String] {
        match self {
            Self::Image { names, .. } => names,
            _ => &[],
        }
    }
}

impl Output {
    /// Parses `-o` specs. `-o DIR` alone means `type=local,dest=DIR` and `-o -` means `type=tar,dest=-`, as
    /// with buildx.
    pub fn parse_all(specs: &[String]) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for spec in specs {
            if !spec.contains('=') {
                out.push(if spec == "-" {
                    Self::Tar { dest: "-".into() }
                } else {
                    Self::Local { dest: spec.into() }
                });
                continue;
            }
            let mut fields: BTreeMap<String, String> = BTreeMap::new();
            for part in csv_fields(spec) {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--output {spec:?}: expected key=value pairs"))?;
                fields.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            let ty = fields
                .remove("type")
                .ok_or_else(|| anyhow!("--output {spec:?}: missing type="))?;
            let names: Vec<String> = fields
                .remove("name")
                .map(|n| {
                    n.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let flag =
                |fields: &mut BTreeMap<String, String>, key: &str, default: bool| -> Result<bool> {
                    match fields.remove(key).as_deref() {
                        None => Ok(default),
                        Some("true") | Some("1") => Ok(true),
                        Some("false") | Some("0") => Ok(false),
                        Some(v) => bail!("--output {spec:?}: {key}={v} is not true or false"),
                    }
                };
            let dest = |fields: &mut BTreeMap<String, String>| -> Result<PathBuf> {
                fields
                    .remove("dest")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow!("--output {spec:?}: type={ty} needs dest="))
            };
            let o = match ty.as_str() {
                "image" => Self::Image {
                    push: flag(&mut fields, "push", false)?,
                    by_digest: flag(&mut fields, "push-by-digest", false)?,
                    names,
                },
                "registry" => Self::Image {
                    push: true,
                    by_digest: flag(&mut fields, "push-by-digest", false)?,
                    names,
                },
                "oci" => {
                    let dest = dest(&mut fields)?;
                    let dir_like = dest.is_dir() || dest.as_os_str().to_string_lossy().ends_with('/');
                    let tar = flag(&mut fields, "tar", !dir_like)?;
                    if !tar && dest.as_os_str() == "-" {
                        bail!("--output {spec:?}: an OCI directory cannot go to stdout");
                    }
                    Self::Oci { dest, tar, names }
                }
                "docker" if !fields.contains_key("dest") => Self::DockerEngine { names },
                "docker" => Self::Docker {
                    dest: dest(&mut fields)?,
                    names,
                },
                "local" => Self::Local {
                    dest: dest(&mut fields)?,
                },
                "tar" => Self::Tar {
                    dest: dest(&mut fields)?,
                },
                other => bail!(
                    "--output {spec:?}: unknown type={other} (image, registry, oci, docker, local, tar are known)"
                ),
            };
            // Options buildx has that change nothing here.
            for k in [
                "compression",
                "compression-level",
                "force-compression",
                "oci-mediatypes",
            ] {
                if fields.remove(k).is_some() {
                    tracing::warn!("--output {spec:?}: {k}= is taken from the build flags (--{k})");
                }
            }
            if let Some(k) = fields.keys().next() {
                bail!("--output {spec:?}: unknown option {k}= for type={ty}");
            }
            // A file goes into an existing directory, as buildx opens it (see: #19): no directory the
            // user did not name is made. A directory output (local, oci tar=false) is made, as BuildKit
            // does.
            match &o {
                Output::Oci {
                    dest, tar: true, ..
                }
                | Output::Docker { dest, .. }
                | Output::Tar { dest } => {
                    require_parent_dir(&format!("--output {spec:?}"), dest)?;
                }
                _ => {}
            }
            out.push(o);
        }
        Ok(out)
    }
}

/// Fails unless the directory `path` goes into exists (`-`, stdout, needs none); `what` names the flag.
pub fn require_parent_dir(what: &str, path: &Path) -> Result<()> {
    if path.as_os_str() == "-" {
        return Ok(());
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!(
            "{what}: directory {} does not exist (create it first; rbuild makes no directory you did not name)",
            parent.display()
        );
    }
    Ok(())
}

/// Splits an output spec on commas outside double quotes (buildx's CSV: `type=image,"name=a,b"`).
pub fn csv_fields(spec: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("one field at least").push(c),
        }
    }
    fields
}

/// Writes one non-registry output of `image` (`names` are its tags, familiar form) and says what it
/// wrote (`exported OCI archive to app.tar`); `None` for an image output, which the tags and the push
/// take care of.
///
/// With `attachments` (the image's attestation manifests), `type=oci` and `type=docker` name an image
/// index holding the image and them, as BuildKit's exporters do; without, the layout names the image
/// manifest itself.
pub fn write_output(
    store: &cache::Store,
    image: &Image,
    names: &[String],
    output: &Output,
    attachments: &[Attachment],
) -> Result<Option<String>> {
    let layout = |sink: &mut dyn Sink, names: &[String], docker: bool| {
        if attachments.is_empty() {
            write_layout(sink, store, &[(image, names)], docker)
        } else {
            write_attached_layout(sink, store, image, names, attachments, docker)
        }
    };
    Ok(Some(match output {
        Output::Image { .. } => return Ok(None),
        Output::Oci {
            dest,
            tar,
            names: own,
        } => {
            let names = if own.is_empty() { names } else { own };
            if *tar {
                write_file_or_stdout(dest, |w| {
                    let mut sink = TarSink::new(w);
                    layout(&mut sink, names, false)?;
                    sink.finish()
                })?;
                format!("exported OCI archive to {}", dest.display())
            } else {
                layout(&mut DirSink { root: dest.clone() }, names, false)?;
                format!("exported OCI layout to {}", dest.display())
            }
        }
        Output::Docker { dest, names: own } => {
            let names = if own.is_empty() { names } else { own };
            write_file_or_stdout(dest, |w| {
                let mut sink = TarSink::new(w);
                layout(&mut sink, names, true)?;
                sink.finish()
            })?;
            format!("exported docker archive to {}", dest.display())
        }
        Output::DockerEngine { names: own } => {
            let names = if own.is_empty() { names } else { own };
            load_into_engine(store, image, names)?
        }
        Output::Local { dest } => {
            let view =
                oci::MergedView::new(images::snapshots(store, &image_layers(store, image)?)?);
            fs_err::create_dir_all(dest)?;
            view.copy_out("/", dest, true)
                .with_context(|| format!("copying the rootfs to {}", dest.display()))?;
            format!("exported rootfs to {}", dest.display())
        }
        Output::Tar { dest } => {
            let view =
                oci::MergedView::new(images::snapshots(store, &image_layers(store, image)?)?);
            let tmp = store.tmp_dir()?;
            let root = tmp.path().join("rootfs");
            view.copy_out("/", &root, true)
                .context("copying the rootfs out of the snapshots")?;
            let opts = LayerOptions {
                compression: Compression::Uncompressed,
                ..LayerOptions::default()
            };
            write_file_or_stdout(dest, |w| {
                oci::write_layer(&root, w, &opts).context("writing the rootfs tar")?;
                Ok(())
            })?;
            format!("exported rootfs tar to {}", dest.display())
        }
    }))
}

impl Output {
    /// What this output is, as the progress names it (`oci image format`, `local directory`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Image { .. } => "image",
            Self::Oci { .. } => "oci image format",
            Self::Docker { .. } => "docker image format",
            Self::DockerEngine { .. } => "docker engine",
            Self::Local { .. } => "local directory",
            Self::Tar { .. } => "tar",
        }
    }
}

/// The layers of an image in the store (diff_ids from its config).
pub fn image_layers(store: &cache::Store, image: &Image) -> Result<Vec<Layer>> {
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&image.config_digest)?)
        .with_context(|| format!("parsing config {}", image.config_digest))?;
    images::image_layer_list(&config, &image.manifest, &image.manifest_desc.digest)
}

/// Runs `write` on `dest` (atomically: a temp file renamed into place) or on stdout for `-`.
fn write_file_or_stdout(
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    if dest.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut lock = std::io::BufWriter::new(stdout.lock());
        write(&mut lock)?;
        lock.flush()?;
        return Ok(());
    }
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // The directory must exist (the CLI checks it before building): no directory the user did not
    // name is made. See: #19.
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating {}", dest.display()))?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        write(&mut w)?;
        w.flush()
            .with_context(|| format!("writing {}", dest.display()))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(dest)
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

/// Where the files of an image layout go.
trait Sink {
    fn bytes(&mut self, path: &str, data: &[u8]) -> Result<()>;
    fn file(&mut self, path: &str, src: &Path) -> Result<()>;
}

/// A tar archive (entries owned by root, mode 0644, mtime 0: the same image gives the same bytes).
struct TarSink<'a> {
    tar: tar::Builder<&'a mut dyn Write>,
}

impl<'a> TarSink<'a> {
    fn new(w: &'a mut dyn Write) -> Self {
        Self {
            tar: tar::Builder::new(w),
        }
    }
    fn finish(self) -> Result<()> {
        self.tar.into_inner()?.flush()?;
        Ok(())
    }
    fn header(size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    }
}

impl Sink for TarSink<'_> {
    fn bytes(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let mut h = Self::header(data.len() as u64);
        self.tar
            .append_data(&mut h, path, data)
            .with_context(|| format!("writing {path} to the archive"))
    }
    fn file(&mut self, path: &str, src: &Path) -> Result<()> {
        let mut f = fs_err::File::open(src)?;
        let mut h = Self::header(f.metadata()?.len());
        self.tar
            .append_data(&mut h, path, &mut f)
            .with_context(|| format!("writing {path} to the archive"))
    }
}

/// A directory (an OCI layout dir); blobs already there are kept.
struct DirSink {
    root: PathBuf,
}

impl Sink for DirSink {
    fn bytes(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let p = self.root.join(path);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let tmp = tempfile::NamedTempFile::new_in(p.parent().unwrap_or(&self.root))?;
        fs_err::write(tmp.path(), data)?;
        tmp.persist(&p)
            .with_context(|| format!("writing {}", p.display()))?;
        Ok(())
    }
    fn file(&mut self, path: &str, src: &Path) -> Result<()> {
        let p = self.root.join(path);
        if p.exists() {
            return Ok(());
        }
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent)?;
        }
        let tmp = tempfile::NamedTempFile::new_in(p.parent().unwrap_or(&self.root))?;
        fs_err::copy(src, tmp.path())?;
        tmp.persist(&p)
            .with_context(|| format!("writing {}", p.display()))?;
        Ok(())
    }
}

/// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) of `images` (each with its
/// names) and, for `docker`, the `manifest.json` that `docker load` reads (pointing at the same blobs, as
/// BuildKit's docker exporter does).
fn write_layout(
    sink: &mut dyn Sink,
    store: &cache::Store,
    images: &[(&Image, &[String])],
    docker: bool,
) -> Result<()> {
    sink.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut manifests = Vec::new();
    for (image, names) in images {
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
    }
    let index = oci::Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.into()),
        manifests,
        annotations: BTreeMap::new(),
    };
    sink.bytes("index.json", &serde_json::to_vec(&index)?)?;
    if docker {
        sink.bytes("manifest.json", &docker_manifest_json(images)?)?;
    }
    write_image_blobs(sink, store, images.iter().map(|(i, _)| *i))
}

/// The `manifest.json` that `docker load` reads: each image's config, tags (`:latest` added to a bare
/// name) and layers, as paths of the layout's blobs.
fn docker_manifest_json(images: &[(&Image, &[String])]) -> Result<Vec<u8>> {
    let blob_path = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let entries: Vec<serde_json::Value> = images
        .iter()
        .map(|(image, names)| {
            let repo_tags: Vec<String> = names
                .iter()
                .map(|n| {
                    n.parse::<Reference>()
                        .map(|r| {
                            let f = r.familiar();
                            if r.tag.is_none() && r.digest.is_none() {
                                format!("{f}:latest")
                            } else {
                                f
                            }
                        })
                        .unwrap_or_else(|_| n.clone())
                })
                .collect();
            serde_json::json!({
                "Config": blob_path(&image.manifest.config.digest),
                "RepoTags": repo_tags,
                "Layers": image.manifest.layers.iter().map(|l| blob_path(&l.digest)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(serde_json::to_vec(&entries)?)
}

/// The layout of one image with its attachments: `index.json` names an image index of the image (with
/// its platform, from its config) and the attachments, as BuildKit's OCI exporter writes an image with
/// attestations. For `docker`, `manifest.json` still names the image, so `docker load` of a classic
/// store reads it (BuildKit's docker exporter writes none in this case; Docker's containerd store reads
/// `index.json`).
fn write_attached_layout(
    sink: &mut dyn Sink,
    store: &cache::Store,
    image: &Image,
    names: &[String],
    attachments: &[Attachment],
    docker: bool,
) -> Result<()> {
    if image.manifest_desc.media_type != media_type::OCI_MANIFEST {
        // BuildKit's message (exporter/containerimage/writer.go).
        bail!("cannot export attestations with \"oci-mediatypes=false\"");
    }
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&image.config_digest)?)
        .with_context(|| format!("parsing config {}", image.config_digest))?;
    let platform = index::config_platform(&config, &image.manifest_desc.digest.to_string())?;
    let entry = [(platform.clone(), image.manifest_desc.clone())];
    let index = build_index(&entry, true, BTreeMap::new())?.with_attachments(attachments)?;
    index::write_index_layout(
        sink,
        store,
        &[(platform, image)],
        &index,
        names,
        attachments,
    )?;
    if docker {
        sink.bytes("manifest.json", &docker_manifest_json(&[(image, names)])?)?;
    }
    Ok(())
}

/// Writes each image's manifest, config and layers under `blobs/sha256/` of a layout, each blob once.
pub(crate) fn write_image_blobs<'a>(
    sink: &mut dyn Sink,
    store: &cache::Store,
    images: impl IntoIterator<Item = &'a Image>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for image in images {
        let mut blobs = vec![
            image.manifest_desc.digest.clone(),
            image.manifest.config.digest.clone(),
        ];
        blobs.extend(image.manifest.layers.iter().map(|l| l.digest.clone()));
        for d in blobs {
            if seen.insert(d.clone()) {
                let path = format!("blobs/sha256/{}", d.hex());
                sink.file(&path, &store.blob_path(&d))
                    .with_context(|| format!("writing blob {d}"))?;
            }
        }
    }
    Ok(())
}

/// `rbuild save`: the images `refs` name (tags, `name@sha256:…`, IDs) in one archive at `dest` (`-` is
/// stdout): a docker archive (`docker load` reads it; it holds an OCI layout too) or an OCI archive.
/// Names that are tags go into the archive (`RepoTags`, `ref.name`); several names of one image share
/// its entry.
pub fn save(store: &cache::Store, refs: &[String], dest: &Path, docker: bool) -> Result<()> {
    let mut images: Vec<(Image, Vec<String>)> = Vec::new();
    for r in refs {
        let image = local_image(store, r)?;
        let tag = r
            .parse::<Reference>()
            .ok()
            .filter(|p| {
                p.digest.is_none() && store.resolve_tag(&p.familiar()).ok().flatten().is_some()
            })
            .map(|p| p.familiar());
        match images
            .iter_mut()
            .find(|(i, _)| i.manifest_desc.digest == image.manifest_desc.digest)
        {
            Some((_, names)) => names.extend(tag.filter(|t| !names.contains(t))),
            None => images.push((image, tag.into_iter().collect())),
        }
    }
    let list: Vec<(&Image, &[String])> = images.iter().map(|(i, n)| (i, n.as_slice())).collect();
    write_file_or_stdout(dest, |w| {
        let mut sink = TarSink::new(w);
        write_layout(&mut sink, store, &list, docker)?;
        sink.finish()
    })
}

/// Writes buildx's `--metadata-file` JSON for `image`; `names` are full image names.
pub fn write_metadata(path: &Path, image: &Image, names: &[String]) -> Result<()> {
    write_metadata_file(
        path,
        &image.manifest_desc,
        Some(&image.config_digest),
        names,
    )
}

/// buildx's `--metadata-file` JSON: what `desc` names (a manifest, or an index without a config).
pub(crate) fn write_metadata_file(
    path: &Path,
    desc: &oci::Descriptor,
    config: Option<&Digest>,
    names: &[String],
) -> Result<()> {
    let mut m = serde_json::Map::new();
    if let Some(config) = config {
        m.insert(
            "containerimage.config.digest".into(),
            config.to_string().into(),
        );
    }
    m.insert(
        "containerimage.descriptor".into(),
        serde_json::to_value(desc)?,
    );
    m.insert(
        "containerimage.digest".into(),
        desc.digest.to_string().into(),
    );
    if !names.is_empty() {
        m.insert("image.name".into(), names.join(",").into());
    }
    let mut bytes = serde_json::to_vec_pretty(&serde_json::Value::Object(m))?;
    bytes.push(b'\n');
    fs_err::write(path, bytes)?;
    Ok(())
}

/// An image of the local store by tag, `name@sha256:…` or image ID (see `cache::Store::find_image`); for
/// an image index, its image for the host's platform.
pub fn local_image(store: &cache::Store, name: &str) -> Result<Image> {
    let mut desc = store.find_image(name)?;
    if media_type::is_index(&desc.media_type) {
        let index: oci::Index = serde_json::from_slice(&store.read_blob(&desc.digest)?)
            .with_context(|| format!("parsing image index {}", desc.digest))?;
        let host = oci::Platform::host();
        let mut found = index
            .select(&host)
            .cloned()
            .ok_or_else(|| anyhow!("image {name} has no image for this host's platform {host}"))?;
        found.platform = None;
        desc = found;
    }
    let manifest: Manifest = serde_json::from_slice(&store.read_blob(&desc.digest)?)
        .with_context(|| format!("parsing manifest {}", desc.digest))?;
    Ok(Image {
        config_digest: manifest.config.digest.clone(),
        manifest,
        manifest_desc: desc,
    })
}

/// Pushes `image` to `reference`: blobs the registry has are skipped, blobs of an imported cache that
/// are not in the store are mounted from the cache's repository when it is on the same registry, and
/// every blob is verified present before the manifest goes up.
pub async fn push(
    client: &registry::Client,
    store: &cache::Store,
    source: &dyn BlobSource,
    eager: Option<&EagerPush>,
    image: &Image,
    reference: &Reference,
) -> Result<Digest> {
    let mut descs = image.manifest.layers.clone();
    descs.push(image.manifest.config.clone());
    push_blobs(client, store, source, eager, &descs, reference).await?;
    let bytes = store.read_blob(&image.manifest_desc.digest)?;
    client
        .put_manifest(reference, &image.manifest_desc.media_type, &bytes)
        .await
        .with_context(|| format!("pushing manifest to {}", reference.familiar()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_as_buildx_spells_them() {
        use std::path::PathBuf;
        let o = Output::parse_all(&[
            "type=image,\"name=a:1,b:2\",push=true".into(),
            "type=registry".into(),
            "type=oci,dest=x.tar".into(),
            "type=oci,dest=layout,tar=false".into(),
            "type=docker,dest=d.tar".into(),
            "type=local,dest=out".into(),
            "type=tar,dest=-".into(),
            "rootfs".into(),
        ])
        .unwrap();
        assert_eq!(
            o,
            vec![
                Output::Image {
                    names: vec!["a:1".into(), "b:2".into()],
                    push: true,
                    by_digest: false,
                },
                Output::Image {
                    names: vec![],
                    push: true,
                    by_digest: false,
                },
                Output::Oci {
                    dest: PathBuf::from("x.tar"),
                    tar: true,
                    names: vec![]
                },
                Output::Oci {
                    dest: PathBuf::from("layout"),
                    tar: false,
                    names: vec![]
                },
                Output::Docker {
                    dest: PathBuf::from("d.tar"),
                    names: vec![]
                },
                Output::Local {
                    dest: PathBuf::from("out")
                },
                Output::Tar {
                    dest: PathBuf::from("-")
                },
                Output::Local {
                    dest: PathBuf::from("rootfs")
                },
            ]
        );
        for bad in [
            "type=oci",
            "type=nope,dest=x",
            "dest=x",
            "type=local,dest=x,color=red",
            "type=image,push=maybe",
        ] {
            assert!(Output::parse_all(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
