//! The two plug points of layer handling: where missing blobs come from, and who follows a blob while it
//! is written.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use anyhow::Result;
use graph::NodeId;
use oci::{Descriptor, Digest};
use solver::Layer;

/// A future returned by [`BlobSource::fetch`].
pub type Fetching<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Blobs that are not in the store yet but can be brought into it on demand (an imported build cache).
pub trait BlobSource: Send + Sync {
    /// Whether blob `digest` can be fetched from this source.
    fn can_fetch(&self, digest: &Digest) -> bool;

    /// Makes sure blob `desc` is in the store, fetching it when it is not and this source has it.
    /// Blocks; call it from a thread that may block, not from async code (use [`BlobSource::fetch`]).
    fn ensure(&self, store: &cache::Store, desc: &Descriptor) -> Result<()>;

    /// Downloads (or copies) blob `desc` into the store; an error when this source does not have it.
    fn fetch<'a>(&'a self, store: &'a cache::Store, desc: &'a Descriptor) -> Fetching<'a>;

    /// The repository of `registry` that holds blob `digest` for this source, for cross-repository
    /// mounts on push.
    fn registry_repo(&self, digest: &Digest, registry: &str) -> Option<String>;

    /// Fills the empty directory of cache mount `id` from this source; returns whether it did.
    fn restore_mount(&self, store: &cache::Store, id: &str, dir: &Path) -> Result<bool> {
        let _ = (store, id, dir); // no cache mounts by default
        Ok(false)
    }

    /// Snapshot dirs of a layer stack, base first, fetching the blobs of layers not unpacked yet.
    fn snapshots(&self, store: &cache::Store, layers: &[Layer]) -> Result<Vec<PathBuf>> {
        for l in layers {
            if store.snapshot_path(&l.diff_id).is_none() {
                self.ensure(store, &l.blob)?;
            }
        }
        crate::snapshots(store, layers)
    }
}

/// The [`BlobSource`] with nothing to give: every blob must be in the store already.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBlobSource;

impl BlobSource for NoBlobSource {
    fn can_fetch(&self, _: &Digest) -> bool {
        false
    }

    fn ensure(&self, _: &cache::Store, _: &Descriptor) -> Result<()> {
        Ok(())
    }

    fn fetch<'a>(&'a self, _: &'a cache::Store, desc: &'a Descriptor) -> Fetching<'a> {
        let digest = desc.digest.clone();
        Box::pin(async move { Err(anyhow::anyhow!("blob {digest} is not in the store")) })
    }

    fn registry_repo(&self, _: &Digest, _: &str) -> Option<String> {
        None
    }
}

/// What a [`BlobTap`] is told when the blob it follows is complete: its digest and size, or `None` when
/// writing it failed.
pub type TapDone<'a> = Box<dyn FnOnce(Option<(Digest, u64)>) + Send + 'a>;

/// Something that follows a layer blob while it is written (an upload that streams the growing file).
pub trait BlobTap: Send + Sync {
    /// Starts following the blob being written at `path` as the layer of `node`; returns what to call
    /// once the blob is complete, or `None` when this tap does not want that layer.
    fn follow(&self, node: NodeId, path: &Path) -> Option<TapDone<'_>>;
}
