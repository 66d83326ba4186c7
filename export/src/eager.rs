//! Pushing a layer while it is written: with `--push`, the layers of RUN steps that end up in the
//! pushed image are uploaded to the first tag's repository as their blob grows, so the push after the
//! build finds them there. Only those steps: a layer of another stage is never sent.
//!
//! The upload follows the blob's temp file ([`registry::Client::push_growing_blob`]); whatever goes
//! wrong with it, the push after the build uploads the finished blob the usual way, and every blob is
//! checked with a HEAD before the manifest goes up ([`crate::push_blobs`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use graph::{BuildGraph, NodeId, Op};
use oci::{Digest, Reference};
use registry::Growth;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Uploads of layers being written, by the blob digest they turned out to have.
pub struct EagerPush {
    client: registry::Client,
    reference: Reference,
    handle: tokio::runtime::Handle,
    /// RUN nodes whose layer is in the pushed image.
    nodes: HashSet<NodeId>,
    uploads: Mutex<HashMap<Digest, JoinHandle<Result<Digest, registry::Error>>>>,
}

/// One upload under way, fed by the layer writer.
pub struct Upload {
    written: watch::Sender<Growth>,
    task: JoinHandle<Result<Digest, registry::Error>>,
}

impl EagerPush {
    /// Uploads to `reference`'s repository the layers of the RUN steps on `head`'s chain (the rootfs of
    /// the image: input 0, down to its base).
    pub fn new(
        client: registry::Client,
        reference: Reference,
        handle: tokio::runtime::Handle,
        graph: &BuildGraph,
        head: NodeId,
    ) -> Self {
        let mut nodes = HashSet::new();
        let mut at = Some(head);
        while let Some(id) = at {
            let node = graph.node(id);
            match node.op {
                Op::Exec(_) => {
                    nodes.insert(id);
                }
                Op::Copy(_) | Op::Mkdir(_) | Op::Merge => {}
                // A base: its layers are pushed (or mounted) from the store.
                _ => break,
            }
            at = node.inputs.first().copied();
        }
        Self {
            client,
            reference,
            handle,
            nodes,
            uploads: Mutex::default(),
        }
    }

    /// Starts uploading the blob being written at `path`, if `node`'s layer is one to push.
    pub fn start(&self, node: NodeId, path: &std::path::Path) -> Option<Upload> {
        if !self.nodes.contains(&node) {
            return None;
        }
        // Opened now: the finished blob is renamed into the store, maybe before the upload starts.
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot follow the blob being written");
                return None;
            }
        };
        let (written, rx) = watch::channel(Growth::Writing);
        let (client, reference) = (self.client.clone(), self.reference.clone());
        let task = self
            .handle
            .spawn(async move { client.push_growing_blob(&reference, file, rx).await });
        Some(Upload { written, task })
    }

    /// Ends `upload`: the blob was written as `digest` (`None`: it failed).
    pub fn finish(&self, upload: Upload, digest: Option<(Digest, u64)>) {
        match digest {
            Some((digest, size)) => {
                // A receiver gone means the task ended already; its result says how.
                let _ = upload.written.send(Growth::Done {
                    digest: digest.clone(),
                    size,
                });
                self.uploads
                    .lock()
                    .expect("uploads lock")
                    .insert(digest, upload.task);
            }
            None => {
                let _ = upload.written.send(Growth::Failed);
            }
        }
    }

    /// Takes over `other`'s uploads (another platform's image of the same multi-platform push), so
    /// the push of the index finds every platform's layers through `self`.
    pub fn absorb(&self, other: &EagerPush) {
        if other.reference.registry != self.reference.registry
            || other.reference.repository != self.reference.repository
        {
            return;
        }
        let theirs = std::mem::take(&mut *other.uploads.lock().expect("uploads lock"));
        let mut ours = self.uploads.lock().expect("uploads lock");
        for (digest, task) in theirs {
            // The same layer written for two platforms: one upload is enough to wait for.
            ours.entry(digest).or_insert(task);
        }
    }

    /// Whether `digest` was uploaded to `reference`'s repository while it was written (waits for the
    /// upload to end).
    pub async fn uploaded(&self, reference: &Reference, digest: &Digest) -> bool {
        if reference.registry != self.reference.registry
            || reference.repository != self.reference.repository
        {
            return false;
        }
        let task = self.uploads.lock().expect("uploads lock").remove(digest);
        let Some(task) = task else { return false };
        match task.await {
            Ok(Ok(got)) if got == *digest => true,
            Ok(Ok(got)) => {
                tracing::warn!(%digest, %got, "the upload while writing named another digest");
                false
            }
            Ok(Err(e)) => {
                tracing::debug!(%digest, error = %e, "upload while writing failed; pushing the blob now");
                false
            }
            Err(e) => {
                tracing::debug!(%digest, error = %e, "upload while writing did not finish");
                false
            }
        }
    }
}

impl images::BlobTap for EagerPush {
    fn follow(&self, node: NodeId, path: &std::path::Path) -> Option<images::TapDone<'_>> {
        let upload = self.start(node, path)?;
        Some(Box::new(move |done| self.finish(upload, done)))
    }
}
