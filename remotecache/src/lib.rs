//! The shared build cache (`--cache-to`, `--cache-from`): a solve's cache records, and optionally the
//! contents of its cache mounts, exported to a registry or a directory and imported lazily by another
//! store. The format is ours and documented in docs/CACHE.md.
//!
//! Import reads metadata only. A record's layer blobs are downloaded when a step on top of them must run
//! ([`BlobSource::snapshots`]), when the final image needs them locally, or never: a push to the registry the
//! cache lives in mounts them from the cache repository (`export::push_blobs`). A cache mount is restored when a
//! RUN that uses it runs and its local directory is empty ([`BlobSource::restore_mount`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context as _, Result};
use oci::{media_type, Compression, Descriptor, Digest, ImageConfig, LayerOptions, Reference};
use serde::{Deserialize, Serialize};
use solver::{Layer, Outcome};

use export::{push_blobs, PushStats};

mod spec;
use images::{BlobSource, Fetching, LazyClient};

/// `artifactType` of the root index of a cache.
pub const ARTIFACT_TYPE: &str = "application/vnd.rbuild.cache.v1";
/// `artifactType` of each part manifest of a cache.
pub const PART_TYPE: &str = "application/vnd.rbuild.cache.part.v1";
/// Media type of a part's config blob: the records of that part.
pub const RECORDS_TYPE: &str = "application/vnd.rbuild.cache.records.v1+json";
/// The image config field that holds an inline cache (`--cache-to type=inline`).
pub use export::INLINE_KEY;
/// Version of the records documents; bumped on any incompatible change.
const FORMAT_VERSION: u32 = 1;
/// A part lists at most this many blobs, so a manifest stays far below registries' 4 MiB limit.
const MAX_PART_BLOBS: usize = 256;
/// Where a cache lives in a directory: an OCI image layout whose `index.json` names caches by tag.
pub const DEFAULT_LOCAL_TAG: &str = "latest";

/// `mode=`: which records an export carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The steps of the final image (its stage and the stages it starts from).
    Min,
    /// Every step of every stage the build ran or found in the cache.
    Max,
}

/// One `--cache-to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheTo {
    /// `type=registry,ref=REF`.
    Registry {
        reference: Reference,
        opts: ExportOpts,
    },
    /// `type=local,dest=DIR[,tag=NAME]`.
    Local {
        dest: PathBuf,
        tag: String,
        opts: ExportOpts,
    },
    /// `type=inline`: the records of the final image's steps inside its config.
    Inline,
}

/// Options shared by the registry and local exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOpts {
    pub mode: Mode,
    /// `cache-mounts=true`: export the contents of the build's cache mounts.
    pub mounts: bool,
    /// Compression of cache-mount blobs (layer blobs travel as they were built).
    pub compression: Option<Compression>,
    /// `ignore-error=true`: a failed export is a warning, not a failed build.
    pub ignore_error: bool,
}

/// One `--cache-from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheFrom {
    /// `type=registry,ref=REF` or a bare `REF`: a cache ref or an image with an inline cache.
    Registry { reference: Reference },
    /// `type=local,src=DIR[,tag=NAME]`.
    Local { src: PathBuf, tag: String },
}

impl std::fmt::Display for CacheFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheFrom::Registry { reference } => write!(f, "{reference}"),
            CacheFrom::Local { src, tag } => write!(f, "{}:{tag}", src.display()),
        }
    }
}

// ---- the format ----

/// A part's config blob: records (cache key → layers) and cache mounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RecordsDoc {
    version: u32,
    #[serde(rename = "cacheKeyVersion")]
    cache_key_version: u32,
    #[serde(default)]
    records: Vec<RecordEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<MountEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RecordEntry {
    key: String,
    layers: Vec<Layer>,
    #[serde(rename = "addedLayer")]
    added_layer: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct MountEntry {
    id: String,
    layer: Layer,
}

/// The inline form: records point into the image's own layers (a prefix of `count` of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct InlineDoc {
    version: u32,
    #[serde(rename = "cacheKeyVersion")]
    cache_key_version: u32,
    records: Vec<InlineRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct InlineRecord {
    key: String,
    layers: usize,
    #[serde(rename = "addedLayer")]
    added_layer: bool,
}

/// An OCI manifest or index with the fields a cache uses (`artifactType` included).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Artifact {
    schema_version: u32,
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layers: Option<Vec<Descriptor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

fn check_version(version: u32, key_version: u32) -> Result<()> {
    if version != FORMAT_VERSION {
        bail!("cache format version {version}; this rbuild reads version {FORMAT_VERSION}");
    }
    if key_version != solver::CACHE_KEY_VERSION {
        bail!(
            "cache keys of version {key_version}; this rbuild computes version {} (the cache was written by another rbuild release)",
            solver::CACHE_KEY_VERSION
        );
    }
    Ok(())
}

/// A part manifest: the descriptor of its records blob and the blobs it lists.
fn parse_part(digest: &Digest, bytes: &[u8]) -> Result<(Descriptor, Vec<Descriptor>)> {
    let m: Artifact = serde_json::from_slice(bytes)
        .with_context(|| format!("cache part {digest} is not a manifest"))?;
    let records = m
        .config
        .filter(|c| c.media_type == RECORDS_TYPE)
        .ok_or_else(|| anyhow!("cache part {digest} has no records"))?;
    Ok((records, m.layers.unwrap_or_default()))
}

fn parse_records(digest: &Digest, bytes: &[u8]) -> Result<RecordsDoc> {
    serde_json::from_slice(bytes).with_context(|| format!("cache records {digest} are unreadable"))
}

/// What an export writes: blobs to upload, then part manifests, then the root index.
struct Plan {
    /// Every blob the parts reference (layers and mounts), without duplicates.
    blobs: Vec<Descriptor>,
    /// Each part: (config bytes, manifest bytes).
    parts: Vec<(Vec<u8>, Vec<u8>)>,
    index: Vec<u8>,
    records: usize,
    mounts: usize,
}

/// Splits records and mounts into parts of at most `max_blobs` distinct blobs each (a record whose own
/// layers exceed that is a part alone) and encodes the manifests and the index.
fn plan(mut records: Vec<RecordEntry>, mounts: Vec<MountEntry>, max_blobs: usize) -> Plan {
    records.sort_by(|a, b| a.key.cmp(&b.key));
    records.dedup_by(|a, b| a.key == b.key);
    let n_records = records.len();
    let n_mounts = mounts.len();
    let doc = || RecordsDoc {
        version: FORMAT_VERSION,
        cache_key_version: solver::CACHE_KEY_VERSION,
        ..RecordsDoc::default()
    };
    let mut parts: Vec<(RecordsDoc, Vec<Descriptor>)> = Vec::new();
    let mut cur = (doc(), Vec::<Descriptor>::new());
    let mut seen: HashSet<Digest> = HashSet::new();
    let flush = |cur: &mut (RecordsDoc, Vec<Descriptor>),
                 seen: &mut HashSet<Digest>,
                 parts: &mut Vec<(RecordsDoc, Vec<Descriptor>)>| {
        if !cur.0.records.is_empty() || !cur.0.mounts.is_empty() {
            parts.push(std::mem::replace(cur, (doc(), Vec::new())));
        }
        seen.clear();
    };
    for r in records {
        let new: Vec<&Descriptor> = r
            .layers
            .iter()
            .map(|l| &l.blob)
            .filter(|d| !seen.contains(&d.digest))
            .collect::<Vec<_>>();
        let mut uniq: Vec<Descriptor> = Vec::new();
        for d in new {
            if !uniq.iter().any(|u| u.digest == d.digest) {
                uniq.push(d.clone());
            }
        }
        if !cur.0.records.is_empty() && cur.1.len() + uniq.len() > max_blobs {
            flush(&mut cur, &mut seen, &mut parts);
            uniq = Vec::new();
            for l in &r.layers {
                if !uniq.iter().any(|u| u.digest == l.blob.digest) {
                    uniq.push(l.blob.clone());
                }
            }
        }
        for d in uniq {
            seen.insert(d.digest.clone());
            cur.1.push(d);
        }
        cur.0.records.push(r);
    }
    for m in mounts {
        if cur.1.len() + 1 > max_blobs {
            flush(&mut cur, &mut seen, &mut parts);
        }
        if seen.insert(m.layer.blob.digest.clone()) {
            cur.1.push(m.layer.blob.clone());
        }
        cur.0.mounts.push(m);
    }
    flush(&mut cur, &mut seen, &mut parts);
    if parts.is_empty() {
        parts.push((doc(), Vec::new()));
    }

    let mut all: Vec<Descriptor> = Vec::new();
    let mut all_seen = HashSet::new();
    let mut encoded = Vec::new();
    let mut part_descs = Vec::new();
    for (records, blobs) in parts {
        for b in &blobs {
            if all_seen.insert(b.digest.clone()) {
                all.push(b.clone());
            }
        }
        let config = serde_json::to_vec(&records).expect("records encode");
        let manifest = Artifact {
            schema_version: 2,
            media_type: media_type::OCI_MANIFEST.to_owned(),
            artifact_type: Some(PART_TYPE.to_owned()),
            config: Some(Descriptor::new(
                RECORDS_TYPE,
                Digest::sha256_of(&config),
                config.len() as u64,
            )),
            layers: Some(blobs),
            manifests: None,
            annotations: BTreeMap::new(),
        };
        let manifest = serde_json::to_vec(&manifest).expect("manifest encodes");
        let mut d = Descriptor::new(
            media_type::OCI_MANIFEST,
            Digest::sha256_of(&manifest),
            manifest.len() as u64,
        );
        d.annotations
            .insert("dev.rbuild.cache.part".to_owned(), PART_TYPE.to_owned());
        part_descs.push(d);
        encoded.push((config, manifest));
    }
    let index = Artifact {
        schema_version: 2,
        media_type: media_type::OCI_INDEX.to_owned(),
        artifact_type: Some(ARTIFACT_TYPE.to_owned()),
        config: None,
        layers: None,
        manifests: Some(part_descs),
        annotations: BTreeMap::new(),
    };
    Plan {
        blobs: all,
        parts: encoded,
        index: serde_json::to_vec(&index).expect("index encodes"),
        records: n_records,
        mounts: n_mounts,
    }
}

// ---- import ----

/// Where an imported blob can be fetched from.
#[derive(Clone, Debug)]
enum Source {
    /// The repository of this reference.
    Registry(Reference),
    /// `blobs/sha256/<hex>` under this OCI layout directory.
    Dir(PathBuf),
}

/// What one import found.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImportSummary {
    pub records: usize,
    pub blobs: usize,
    pub mounts: usize,
    pub inline: bool,
}

/// Downloads made for imported caches, for the build's summary line.
#[derive(Debug, Default, Clone, Copy)]
pub struct FetchStats {
    pub blobs: u64,
    pub bytes: u64,
}

/// The caches imported with `--cache-from`: records in memory, blobs fetched on demand.
pub struct Remote {
    client: Arc<LazyClient>,
    rt: tokio::runtime::Handle,
    records: HashMap<String, Outcome>,
    blobs: HashMap<Digest, (Descriptor, Source)>,
    mounts: HashMap<String, (Layer, Source)>,
    stats: Mutex<FetchStats>,
}

impl Remote {
    pub fn new(client: Arc<LazyClient>, rt: tokio::runtime::Handle) -> Self {
        Self {
            client,
            rt,
            records: HashMap::new(),
            blobs: HashMap::new(),
            mounts: HashMap::new(),
            stats: Mutex::new(FetchStats::default()),
        }
    }

    /// Whether nothing was imported.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.mounts.is_empty()
    }

    /// The imported outcome for a cache key.
    pub fn record(&self, key: &str) -> Option<&Outcome> {
        self.records.get(key)
    }

    /// What was downloaded so far.
    pub fn stats(&self) -> FetchStats {
        *self.stats.lock().expect("stats lock")
    }

    /// Reads the metadata of one cache (no layer is downloaded).
    pub fn import(
        &mut self,
        from: &CacheFrom,
        store: &cache::Store,
        platform: &oci::Platform,
    ) -> Result<ImportSummary> {
        match from {
            CacheFrom::Registry { reference } => {
                let rt = self.rt.clone();
                rt.block_on(self.import_registry(reference, store, platform))
            }
            CacheFrom::Local { src, tag } => self.import_local(src, tag),
        }
    }

    async fn import_registry(
        &mut self,
        reference: &Reference,
        store: &cache::Store,
        platform: &oci::Platform,
    ) -> Result<ImportSummary> {
        let client = self.client.get()?;
        let root = client.get_manifest_raw(reference).await?;
        let repo = Reference {
            tag: None,
            digest: None,
            ..reference.clone()
        };
        let artifact: Option<Artifact> = serde_json::from_slice(&root.bytes).ok();
        if let Some(index) = artifact.filter(|a| a.artifact_type.as_deref() == Some(ARTIFACT_TYPE))
        {
            let mut docs = Vec::new();
            for part in index.manifests.unwrap_or_default() {
                let pinned = Reference {
                    digest: Some(part.digest.clone()),
                    ..repo.clone()
                };
                let raw = client.get_manifest_raw(&pinned).await?;
                let (records, blobs) = parse_part(&part.digest, &raw.bytes)?;
                let bytes = client.fetch_blob_bytes(&repo, &records).await?;
                docs.push((parse_records(&records.digest, &bytes)?, blobs));
            }
            return self.add_docs(docs, &Source::Registry(repo));
        }
        // Not a cache: an image, perhaps with an inline cache in its config.
        let pulled = client.get_manifest(reference, platform).await?;
        let config_bytes = client
            .fetch_blob_bytes(reference, &pulled.manifest.config)
            .await?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .with_context(|| format!("the config of {reference} is unreadable"))?;
        let Some(value) = config.extra.get(INLINE_KEY) else {
            bail!("{reference} holds no rbuild cache: it is neither written by --cache-to type=registry nor an image built with --cache-to type=inline");
        };
        let doc: InlineDoc = serde_json::from_value(value.clone())
            .with_context(|| format!("the inline cache of {reference} is unreadable"))?;
        check_version(doc.version, doc.cache_key_version)?;
        let layers = images::image_layer_list(&config, &pulled.manifest, reference)?;
        // The image's manifest and config are kept: a later build may name it as its base.
        store.put_blob(&config_bytes)?;
        store.put_blob(&pulled.bytes)?;
        let source = Source::Registry(repo);
        let mut summary = ImportSummary {
            inline: true,
            ..ImportSummary::default()
        };
        for r in doc.records {
            let Some(prefix) = layers.get(..r.layers) else {
                bail!("{reference}: an inline record names more layers than the image has");
            };
            self.records.entry(r.key).or_insert_with(|| Outcome {
                layers: prefix.to_vec(),
                added_layer: r.added_layer,
            });
            summary.records += 1;
        }
        for l in &layers {
            self.blobs
                .entry(l.blob.digest.clone())
                .or_insert_with(|| (l.blob.clone(), source.clone()));
        }
        summary.blobs = layers.len();
        Ok(summary)
    }

    fn import_local(&mut self, src: &Path, tag: &str) -> Result<ImportSummary> {
        let index_path = src.join("index.json");
        let text = fs_err::read_to_string(&index_path)
            .with_context(|| format!("no cache at {}", src.display()))?;
        let layout: Artifact = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an OCI index", index_path.display()))?;
        let root = layout
            .manifests
            .unwrap_or_default()
            .into_iter()
            .find(|d| {
                d.annotations
                    .get(cache::REF_NAME_ANNOTATION)
                    .map(String::as_str)
                    == Some(tag)
            })
            .ok_or_else(|| anyhow!("{} has no cache tagged {tag:?}", src.display()))?;
        let read = |d: &Digest| -> Result<Vec<u8>> {
            let bytes = fs_err::read(src.join("blobs").join("sha256").join(d.hex()))?;
            if Digest::sha256_of(&bytes) != *d {
                bail!("blob {d} in {} is corrupt", src.display());
            }
            Ok(bytes)
        };
        let index: Artifact = serde_json::from_slice(&read(&root.digest)?)
            .with_context(|| format!("cache index {} is unreadable", root.digest))?;
        if index.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
            bail!("{}:{tag} is not an rbuild cache", src.display());
        }
        let mut docs = Vec::new();
        for part in index.manifests.unwrap_or_default() {
            let (records, blobs) = parse_part(&part.digest, &read(&part.digest)?)?;
            docs.push((
                parse_records(&records.digest, &read(&records.digest)?)?,
                blobs,
            ));
        }
        self.add_docs(docs, &Source::Dir(src.to_owned()))
    }

    fn add_docs(
        &mut self,
        docs: Vec<(RecordsDoc, Vec<Descriptor>)>,
        source: &Source,
    ) -> Result<ImportSummary> {
        let mut summary = ImportSummary::default();
        for (doc, _) in &docs {
            check_version(doc.version, doc.cache_key_version)?;
        }
        for (doc, blobs) in docs {
            for b in blobs {
                summary.blobs += 1;
                self.blobs
                    .entry(b.digest.clone())
                    .or_insert_with(|| (b, source.clone()));
            }
            for r in doc.records {
                summary.records += 1;
                self.records.entry(r.key).or_insert(Outcome {
                    layers: r.layers,
                    added_layer: r.added_layer,
                });
            }
            for m in doc.mounts {
                summary.mounts += 1;
                self.mounts
                    .entry(m.id)
                    .or_insert_with(|| (m.layer, source.clone()));
            }
        }
        Ok(summary)
    }
}

impl Remote {
    /// Downloads (or copies) blob `desc` into the store from where its import found it.
    async fn fetch_now(&self, store: &cache::Store, desc: &Descriptor) -> Result<()> {
        let Some((_, source)) = self.blobs.get(&desc.digest) else {
            bail!(
                "blob {} is neither in the store nor in an imported cache",
                desc.digest
            );
        };
        match source {
            Source::Registry(r) => {
                images::download_blob(self.client.get()?, store, r, desc)
                    .await
                    .with_context(|| format!("fetching {} from the cache {}", desc.digest, r))?;
            }
            Source::Dir(dir) => {
                let path = dir.join("blobs").join("sha256").join(desc.digest.hex());
                let mut f = fs_err::File::open(&path)
                    .with_context(|| format!("the cache in {} lost a blob", dir.display()))?;
                let mut w = store.blob_writer()?;
                std::io::copy(&mut f, &mut w)?;
                w.commit(Some(&desc.digest))
                    .with_context(|| format!("blob {} in {}", desc.digest, dir.display()))?;
            }
        }
        let mut s = self.stats.lock().expect("stats lock");
        s.blobs += 1;
        s.bytes += desc.size;
        tracing::debug!(digest = %desc.digest, size = desc.size, "fetched blob from an imported cache");
        Ok(())
    }
}

impl BlobSource for Remote {
    fn can_fetch(&self, d: &Digest) -> bool {
        self.blobs.contains_key(d)
    }

    fn fetch<'a>(&'a self, store: &'a cache::Store, desc: &'a Descriptor) -> Fetching<'a> {
        Box::pin(self.fetch_now(store, desc))
    }

    /// Repositories of `registry` an imported blob lives in (for cross-repository mounts).
    fn registry_repo(&self, d: &Digest, registry: &str) -> Option<String> {
        match self.blobs.get(d) {
            Some((_, Source::Registry(r))) if r.registry == registry => Some(r.repository.clone()),
            _ => None,
        }
    }

    /// Makes sure blob `desc` is in the store, fetching it from an imported cache if it is not.
    fn ensure(&self, store: &cache::Store, desc: &Descriptor) -> Result<()> {
        if store.has_blob(&desc.digest) || !self.can_fetch(&desc.digest) {
            return Ok(());
        }
        // One download per blob, even with several steps (or rbuild processes) wanting it at once.
        let _guard = store.lock(&format!("fetch-blob:{}", desc.digest))?;
        if store.has_blob(&desc.digest) {
            return Ok(());
        }
        self.rt.block_on(self.fetch_now(store, desc))
    }

    /// Fills the (empty) directory of cache mount `id` from an imported cache; returns whether it did.
    fn restore_mount(&self, store: &cache::Store, id: &str, dir: &Path) -> Result<bool> {
        let Some((layer, _)) = self.mounts.get(id) else {
            return Ok(false);
        };
        let _guard = store.lock(&format!("cache-mount-restore:{id}"))?;
        if fs_err::read_dir(dir)?.next().is_some() {
            return Ok(false);
        }
        self.ensure(store, &layer.blob)?;
        let tmp = store.tmp_dir()?;
        let unpacked = tmp.path().join("mount");
        let blob = store.open_blob(&layer.blob.digest)?;
        oci::unpack_layer(
            std::io::BufReader::new(blob),
            &layer.blob.media_type,
            &unpacked,
        )
        .with_context(|| format!("unpacking the imported cache mount {id:?}"))?;
        for entry in fs_err::read_dir(&unpacked)? {
            let entry = entry?;
            fs_err::rename(entry.path(), dir.join(entry.file_name()))?;
        }
        Ok(true)
    }
}

/// The store's records, with the imported caches behind them.
pub struct LayeredRecords {
    pub store: Arc<cache::Store>,
    pub remote: Arc<Remote>,
}

impl LayeredRecords {
    /// Whether the store's own record for `key` has all its blobs here.
    fn local_usable(&self, bytes: &[u8]) -> bool {
        solver::decode_record(bytes)
            .is_some_and(|o| o.layers.iter().all(|l| self.store.has_blob(&l.blob.digest)))
    }

    /// Copies the imported records this build used into the store once their blobs are all here, so the
    /// next build on this machine hits without `--cache-from`.
    pub fn keep_used(&self, solved: &solver::Solved) -> Result<usize> {
        let mut kept = 0;
        for id in &solved.cached {
            let key = &solved.keys[id].0;
            let Some(outcome) = self.remote.record(key) else {
                continue;
            };
            if !outcome
                .layers
                .iter()
                .all(|l| self.store.has_blob(&l.blob.digest))
            {
                continue;
            }
            if let Some(local) = self.store.cache_get(key)? {
                if self.local_usable(&local) {
                    continue;
                }
            }
            let refs: Vec<Digest> = outcome
                .layers
                .iter()
                .flat_map(|l| [l.blob.digest.clone(), l.diff_id.clone()])
                .collect();
            self.store
                .cache_put_with_refs(key, &solver::encode_record(outcome), &refs)?;
            kept += 1;
        }
        Ok(kept)
    }
}

impl solver::Records for LayeredRecords {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, solver::BoxError> {
        let local = self.store.cache_get(key)?;
        if self.remote.is_empty() {
            return Ok(local);
        }
        if local.as_deref().is_some_and(|b| self.local_usable(b)) {
            return Ok(local);
        }
        match self.remote.record(key) {
            Some(o) => Ok(Some(solver::encode_record(o))),
            None => Ok(local),
        }
    }
    fn put(&self, key: &str, value: &[u8], refs: &[Digest]) -> Result<(), solver::BoxError> {
        self.store
            .cache_put_with_refs(key, value, refs)
            .map_err(Into::into)
    }
    // See: #19. The store is shared by every rbuild process on the machine: a flock per cache key makes
    // concurrent builds run an identical miss once.
    fn try_lock(&self, key: &str) -> Result<solver::KeyLock, solver::BoxError> {
        Ok(match self.store.try_lock_cache_key(key)? {
            Some(guard) => solver::KeyLock::Held(Box::new(guard)),
            None => solver::KeyLock::Busy,
        })
    }
}

// ---- export ----

/// The nodes a `mode=min` export carries: the target stage's chain down to its base (each step's first
/// input is the rootfs it builds on).
pub fn min_nodes(graph: &graph::BuildGraph, head: graph::NodeId) -> Vec<graph::NodeId> {
    let mut out = vec![head];
    let mut id = head;
    while let Some(&first) = graph.node(id).inputs.first() {
        out.push(first);
        id = first;
    }
    out
}

/// The records of `nodes` that the solve knows an outcome for.
fn entries(solved: &solver::Solved, nodes: &[graph::NodeId]) -> Vec<RecordEntry> {
    nodes
        .iter()
        .filter_map(|id| {
            let o = solved.outcomes.get(id)?;
            Some(RecordEntry {
                key: solved.keys.get(id)?.0.clone(),
                layers: o.layers.clone(),
                added_layer: o.added_layer,
            })
        })
        .collect()
}

/// The inline cache for the image config (`--cache-to type=inline`): the target chain's records, as
/// prefixes of the image's layers.
pub fn inline_value(
    solved: &solver::Solved,
    graph: &graph::BuildGraph,
    head: graph::NodeId,
) -> Option<serde_json::Value> {
    let image = solved.outcomes.get(&head)?;
    let records = entries(solved, &min_nodes(graph, head))
        .into_iter()
        .filter(|r| {
            r.layers.len() <= image.layers.len()
                && r.layers
                    .iter()
                    .zip(&image.layers)
                    .all(|(a, b)| a.diff_id == b.diff_id)
        })
        .map(|r| InlineRecord {
            key: r.key,
            layers: r.layers.len(),
            added_layer: r.added_layer,
        })
        .collect();
    serde_json::to_value(InlineDoc {
        version: FORMAT_VERSION,
        cache_key_version: solver::CACHE_KEY_VERSION,
        records,
    })
    .ok()
}

/// The cache-mount ids the RUN steps of this build use.
fn mount_ids(graph: &graph::BuildGraph, nodes: &[graph::NodeId]) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for id in nodes {
        if let graph::Op::Exec(e) = &graph.node(*id).op {
            for m in &e.mounts {
                if let graph::Mount::Cache { id, .. } = m {
                    ids.insert(id.clone());
                }
            }
        }
    }
    ids
}

/// Writes the non-empty cache mounts among `ids` as layer blobs in the store.
fn mount_entries(
    store: &cache::Store,
    ids: &BTreeSet<String>,
    compression: Compression,
) -> Result<Vec<MountEntry>> {
    let opts = LayerOptions {
        compression,
        level: None,
        source_date_epoch: None,
        threads: Some(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)),
    };
    let mut out = Vec::new();
    for id in ids {
        let Some(dir) = store.existing_cache_mount_dir(id) else {
            continue;
        };
        if fs_err::read_dir(&dir)?.next().is_none() {
            continue;
        }
        // No RUN writes the mount while it is read (those with sharing=locked wait; see the docs).
        let _guard = store.lock_cache_mount(id)?;
        // Unchanged since it was last archived (same files with the same stat fields): the same blob,
        // without reading and compressing the whole mount again.
        let record = solver::RecordFamily::CacheMountExport
            .key(format_args!("{compression:?} {}", tree_fingerprint(&dir)?));
        if let Some(v) = store.cache_get(&record)? {
            if let Ok(layer) = serde_json::from_slice::<Layer>(&v) {
                if store.has_blob(&layer.blob.digest) {
                    tracing::info!(id = %id, "cache mount unchanged since the last export");
                    out.push(MountEntry {
                        id: id.clone(),
                        layer,
                    });
                    continue;
                }
            }
        }
        let layer = images::write_layer_blob(store, |w| {
            oci::write_layer(&dir, w, &opts)
                .with_context(|| format!("archiving cache mount {id:?}"))
        })?;
        store.cache_put_with_refs(
            &record,
            &serde_json::to_vec(&layer)?,
            std::slice::from_ref(&layer.blob.digest),
        )?;
        out.push(MountEntry {
            id: id.clone(),
            layer,
        });
    }
    Ok(out)
}

/// A digest of a directory tree as it is on disk: every entry's path, type, mode, owner, size, inode,
/// mtime and ctime (and symlink target). Equal fingerprints mean the files were not touched (as the
/// context's stat cache assumes).
fn tree_fingerprint(dir: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut buf = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let m = entry
            .metadata()
            .with_context(|| format!("stat {}", entry.path().display()))?;
        buf.extend_from_slice(entry.path().as_os_str().as_encoded_bytes());
        buf.push(0);
        for v in [
            u64::from(m.mode()),
            u64::from(m.uid()),
            u64::from(m.gid()),
            m.size(),
            m.ino(),
        ] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        for v in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        if entry.file_type().is_symlink() {
            let t = fs_err::read_link(entry.path())?;
            buf.extend_from_slice(t.as_os_str().as_encoded_bytes());
        }
    }
    Ok(blake3::hash(&buf).to_hex().to_string())
}

/// What an export did, for the progress line.
#[derive(Debug, Default)]
pub struct ExportSummary {
    pub records: usize,
    pub mounts: usize,
    pub blobs: PushStats,
}

impl CacheTo {
    /// Where the cache goes, as the progress names it (`REF`, `DIR:TAG`, `inline`).
    pub fn label(&self) -> String {
        match self {
            Self::Inline => "inline".to_owned(),
            Self::Registry { reference, .. } => reference.to_string(),
            Self::Local { dest, tag, .. } => format!("{}:{tag}", dest.display()),
        }
    }

    /// `ignore-error=true`: a failed export is a warning.
    pub fn ignores_errors(&self) -> bool {
        match self {
            Self::Inline => false,
            Self::Registry { opts, .. } | Self::Local { opts, .. } => opts.ignore_error,
        }
    }
}

impl ExportSummary {
    /// What an export to `label` did in `secs`: records, cache mounts, blobs uploaded, present, mounted.
    pub fn describe(&self, label: &str, secs: f64) -> String {
        let mounts = if self.mounts > 0 {
            format!(", {} cache mounts", self.mounts)
        } else {
            String::new()
        };
        format!(
            "exported cache to {label}: {} records{mounts}, blobs: {} uploaded ({}), {} already there, {} mounted, in {secs:.2}s",
            self.records,
            self.blobs.uploaded,
            images::human_size(self.blobs.uploaded_bytes),
            self.blobs.present,
            self.blobs.mounted,
        )
    }
}

/// Exports the cache of this solve to `to` (registry or local; inline is written with the image).
#[allow(clippy::too_many_arguments)]
pub fn export(
    to: &CacheTo,
    store: &cache::Store,
    remote: &Remote,
    client: &LazyClient,
    rt: &tokio::runtime::Handle,
    graph: &graph::BuildGraph,
    head: graph::NodeId,
    solved: &solver::Solved,
    default_compression: Compression,
) -> Result<ExportSummary> {
    export_all(
        to,
        store,
        remote,
        client,
        rt,
        &[(graph, head, solved)],
        default_compression,
    )
}

/// [`export`] of several solves in one cache (the platforms of a multi-platform build): their records,
/// each key once, and their cache mounts.
pub fn export_all(
    to: &CacheTo,
    store: &cache::Store,
    remote: &Remote,
    client: &LazyClient,
    rt: &tokio::runtime::Handle,
    solves: &[(&graph::BuildGraph, graph::NodeId, &solver::Solved)],
    default_compression: Compression,
) -> Result<ExportSummary> {
    let opts = match to {
        CacheTo::Inline => return Ok(ExportSummary::default()),
        CacheTo::Registry { opts, .. } | CacheTo::Local { opts, .. } => opts,
    };
    let mut records: Vec<RecordEntry> = Vec::new();
    let mut ids = BTreeSet::new();
    for (graph, head, solved) in solves {
        let (graph, head) = (*graph, *head);
        let nodes = match opts.mode {
            Mode::Min => min_nodes(graph, head),
            Mode::Max => {
                let mut all: Vec<_> = solved.outcomes.keys().copied().collect();
                all.sort();
                all
            }
        };
        for r in entries(solved, &nodes) {
            if !records.iter().any(|e| e.key == r.key) {
                records.push(r);
            }
        }
        if opts.mounts {
            ids.extend(mount_ids(
                graph,
                &graph.ancestors(head).into_iter().collect::<Vec<_>>(),
            ));
        }
    }
    let mounts = if opts.mounts {
        mount_entries(store, &ids, opts.compression.unwrap_or(default_compression))?
    } else {
        Vec::new()
    };
    let plan = plan(records, mounts, MAX_PART_BLOBS);
    let mut summary = ExportSummary {
        records: plan.records,
        mounts: plan.mounts,
        blobs: PushStats::default(),
    };
    match to {
        CacheTo::Registry { reference, .. } => {
            summary.blobs =
                rt.block_on(export_registry(&plan, store, remote, client, reference))?;
        }
        CacheTo::Local { dest, tag, .. } => {
            summary.blobs = export_local(&plan, store, remote, dest, tag)?;
        }
        CacheTo::Inline => {}
    }
    Ok(summary)
}

async fn export_registry(
    plan: &Plan,
    store: &cache::Store,
    remote: &Remote,
    client: &LazyClient,
    reference: &Reference,
) -> Result<PushStats> {
    let client = client.get()?;
    let mut descs = plan.blobs.clone();
    for (config, _) in &plan.parts {
        let d = store.put_blob(config)?;
        descs.push(Descriptor::new(RECORDS_TYPE, d, config.len() as u64));
    }
    let stats = push_blobs(client, store, remote, None, &descs, reference).await?;
    let repo = Reference {
        tag: None,
        digest: None,
        ..reference.clone()
    };
    for (_, manifest) in &plan.parts {
        let pinned = Reference {
            digest: Some(Digest::sha256_of(manifest)),
            ..repo.clone()
        };
        client
            .put_manifest(&pinned, media_type::OCI_MANIFEST, manifest)
            .await
            .with_context(|| format!("pushing a cache part to {}", repo.name()))?;
    }
    client
        .put_manifest(reference, media_type::OCI_INDEX, &plan.index)
        .await
        .with_context(|| format!("pushing the cache index to {reference}"))?;
    Ok(stats)
}

fn export_local(
    plan: &Plan,
    store: &cache::Store,
    remote: &Remote,
    dest: &Path,
    tag: &str,
) -> Result<PushStats> {
    let blobs_dir = dest.join("blobs").join("sha256");
    fs_err::create_dir_all(&blobs_dir)
        .with_context(|| format!("creating the cache directory {}", dest.display()))?;
    // One writer at a time per directory; readers only ever see complete blobs and index.json.
    let lock = fs_err::File::create(dest.join(".rbuild-lock"))?;
    let (lock_file, _) = lock.into_parts();
    rustix::fs::flock(&lock_file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| anyhow!("locking {}: {e}", dest.display()))?;
    let mut stats = PushStats::default();
    let put_bytes = |bytes: &[u8]| -> Result<()> {
        let d = Digest::sha256_of(bytes);
        let path = blobs_dir.join(d.hex());
        if !path.exists() {
            atomic_write(&path, bytes)?;
        }
        Ok(())
    };
    for d in &plan.blobs {
        let path = blobs_dir.join(d.digest.hex());
        if path.exists() {
            stats.present += 1;
            continue;
        }
        remote.ensure(store, d)?;
        let src = store.blob_path(&d.digest);
        let tmp = blobs_dir.join(format!(".tmp-{}", d.digest.hex()));
        // Store blobs are never modified in place, so a hard link is a safe copy when both are on one fs.
        if fs_err::hard_link(&src, &tmp).is_err() {
            fs_err::copy(&src, &tmp)?;
        }
        fs_err::rename(&tmp, &path)?;
        stats.uploaded += 1;
        stats.uploaded_bytes += d.size;
    }
    for (config, manifest) in &plan.parts {
        put_bytes(config)?;
        put_bytes(manifest)?;
    }
    put_bytes(&plan.index)?;
    let index_path = dest.join("index.json");
    let mut layout: Artifact = match fs_err::read_to_string(&index_path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not an OCI index", index_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Artifact {
            schema_version: 2,
            media_type: media_type::OCI_INDEX.to_owned(),
            artifact_type: None,
            config: None,
            layers: None,
            manifests: Some(Vec::new()),
            annotations: BTreeMap::new(),
        },
        Err(e) => return Err(e.into()),
    };
    let mut root = Descriptor::new(
        media_type::OCI_INDEX,
        Digest::sha256_of(&plan.index),
        plan.index.len() as u64,
    );
    root.annotations
        .insert(cache::REF_NAME_ANNOTATION.to_owned(), tag.to_owned());
    let manifests = layout.manifests.get_or_insert_with(Vec::new);
    manifests.retain(|d| {
        d.annotations
            .get(cache::REF_NAME_ANNOTATION)
            .map(String::as_str)
            != Some(tag)
    });
    manifests.push(root);
    atomic_write(
        &dest.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    atomic_write(&index_path, &serde_json::to_vec_pretty(&layout)?)?;
    gc_local(dest, &layout)?;
    Ok(stats)
}

/// Removes the blobs of a local cache directory that no tag reaches any more.
fn gc_local(dest: &Path, layout: &Artifact) -> Result<()> {
    let blobs_dir = dest.join("blobs").join("sha256");
    let mut keep: HashSet<String> = HashSet::new();
    for root in layout.manifests.iter().flatten() {
        keep.insert(root.digest.hex().to_owned());
        let Ok(bytes) = fs_err::read(blobs_dir.join(root.digest.hex())) else {
            continue;
        };
        let Ok(index) = serde_json::from_slice::<Artifact>(&bytes) else {
            continue;
        };
        for part in index.manifests.iter().flatten() {
            keep.insert(part.digest.hex().to_owned());
            let Ok(bytes) = fs_err::read(blobs_dir.join(part.digest.hex())) else {
                continue;
            };
            let Ok(m) = serde_json::from_slice::<Artifact>(&bytes) else {
                continue;
            };
            for d in m.config.iter().chain(m.layers.iter().flatten()) {
                keep.insert(d.digest.hex().to_owned());
            }
        }
    }
    for entry in fs_err::read_dir(&blobs_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            fs_err::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8) -> Layer {
        Layer {
            diff_id: Digest::sha256_of(&[n, 0]),
            blob: Descriptor::new(oci::media_type::OCI_LAYER_GZIP, Digest::sha256_of(&[n]), 10),
        }
    }

    fn entry(key: &str, layers: &[u8]) -> RecordEntry {
        RecordEntry {
            key: key.to_owned(),
            layers: layers.iter().map(|n| layer(*n)).collect(),
            added_layer: true,
        }
    }

    #[test]
    fn plan_splits_parts_by_blob_count_and_lists_every_blob_once() {
        // 10 records over 12 distinct blobs, at most 4 blobs a part.
        let records: Vec<RecordEntry> = (0..10u8)
            .map(|i| entry(&format!("k{i:02}"), &[0, i + 1, i + 2]))
            .collect();
        let p = plan(records.clone(), Vec::new(), 4);
        assert!(p.parts.len() > 2, "{} parts", p.parts.len());
        assert_eq!(p.blobs.len(), 12);
        assert_eq!(p.records, 10);
        let mut seen_records = 0;
        for (config, manifest) in &p.parts {
            let doc: RecordsDoc = serde_json::from_slice(config).unwrap();
            let m: Artifact = serde_json::from_slice(manifest).unwrap();
            let listed: HashSet<Digest> = m.layers.unwrap().into_iter().map(|d| d.digest).collect();
            assert!(listed.len() <= 4);
            // Each part is self-contained: its manifest lists every blob its records name.
            for r in &doc.records {
                for l in &r.layers {
                    assert!(listed.contains(&l.blob.digest));
                }
            }
            assert_eq!(m.config.unwrap().digest, Digest::sha256_of(config));
            seen_records += doc.records.len();
        }
        assert_eq!(seen_records, 10);
        let index: Artifact = serde_json::from_slice(&p.index).unwrap();
        assert_eq!(index.artifact_type.as_deref(), Some(ARTIFACT_TYPE));
        assert_eq!(index.manifests.unwrap().len(), p.parts.len());
        // Same input, same bytes: an unchanged cache re-exports as no-ops.
        assert_eq!(plan(records, Vec::new(), 4).index, p.index);
    }

    #[test]
    fn an_empty_cache_is_one_empty_part() {
        let p = plan(Vec::new(), Vec::new(), MAX_PART_BLOBS);
        assert_eq!(p.parts.len(), 1);
        assert!(p.blobs.is_empty());
    }

    #[test]
    fn versions_other_than_ours_are_refused() {
        assert!(check_version(FORMAT_VERSION, solver::CACHE_KEY_VERSION).is_ok());
        let e = check_version(FORMAT_VERSION + 1, solver::CACHE_KEY_VERSION).unwrap_err();
        assert!(e.to_string().contains("format version"));
        let e = check_version(FORMAT_VERSION, solver::CACHE_KEY_VERSION + 1).unwrap_err();
        assert!(e.to_string().contains("cache keys of version"));
    }
}
