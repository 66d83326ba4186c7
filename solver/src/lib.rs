//! The solver: computes cache keys over a [`graph::BuildGraph`], looks them up, and runs what misses in
//! parallel on a [`Worker`], reporting [`Event`]s as it goes.
//!
//! It never parses Dockerfile syntax and never touches a container or the network itself: the worker does
//! the work, [`Records`] persist results. Only the target's ancestors are considered; of those, only nodes
//! that miss the cache *and* are needed by another miss (or are the target) run. Nodes with equal cache
//! keys run once per solve. The first failure cancels the rest and is returned with its node.
//!
//! ```
//! # use solver::*; use graph::*; use std::sync::atomic::*;
//! struct Echo(AtomicUsize);
//! impl Worker for Echo {
//!     fn content_key(&self, _: &Node) -> Result<Option<String>, WorkerError> { Ok(None) }
//!     fn execute(&self, _: &Node, inputs: &[Outcome], _: &ExecContext<'_>) -> Result<Outcome, WorkerError> {
//!         self.0.fetch_add(1, Ordering::SeqCst);
//!         Ok(inputs.first().cloned().unwrap_or_default())
//!     }
//!     fn is_usable(&self, _: &Outcome) -> bool { true }
//! }
//! let mut g = BuildGraph::default();
//! let s = g.add(Op::Scratch, vec![], None, "scratch".into());
//! let r = g.add(Op::Exec(Exec::shell("true")), vec![s], None, "RUN true".into());
//! let w = Echo(AtomicUsize::new(0));
//! let records = MemoryRecords::default();
//! solve(&g, r, &w, &records, &NoReporter, &SolveOptions::default()).unwrap();
//! solve(&g, r, &w, &records, &NoReporter, &SolveOptions::default()).unwrap();
//! assert_eq!(w.0.load(Ordering::SeqCst), 2); // scratch + RUN once; the second solve is all cache hits
//! ```
#![forbid(unsafe_code)]

mod cache_key;
mod scheduler;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use cache_key::{CacheKey, KeyParts, RecordFamily, CACHE_KEY_VERSION};
use graph::NodeId;
pub use graph::{BuildGraph, Node};
use oci::{Descriptor, Digest};
pub use scheduler::{decode_record, encode_record, solve};
use serde::{Deserialize, Serialize};

/// One layer of a rootfs: its uncompressed identity and its stored blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The compressed blob.
    pub blob: Descriptor,
}

/// What a node produced: the complete layer stack of its rootfs, base first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// All layers of the resulting rootfs, base first.
    pub layers: Vec<Layer>,
    /// Whether this node added the last layer (false for metadata-only or empty changes).
    pub added_layer: bool,
}

/// An error from a worker while executing a node.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The command exited non-zero.
    #[error("exited with code {code}")]
    ExitCode {
        /// Exit code.
        code: i32,
    },
    /// The node was cancelled because another failed.
    #[error("cancelled")]
    Cancelled,
    /// A failure of the worker's own, with its causes (rendered with [`error_chain`]).
    #[error(transparent)]
    Failed(BoxError),
    /// Anything else, with its cause.
    #[error("{message}")]
    Other {
        /// What was being done.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl WorkerError {
    /// An error with a message and a cause.
    pub fn other(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Other {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
    /// An error with only a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::Other {
            message: message.into(),
            source: None,
        }
    }
}

/// Cancellation flag shared by the nodes of one solve.
#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    /// Whether the solve is being cancelled; long-running work polls this.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A limit on the nodes executing at once, shared by several solves (`rbuild bake` keeps all its targets
/// within one `--jobs`). Each solve still runs at most its own `jobs` at once.
#[derive(Debug)]
pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One taken slot of [`Slots`], given back on drop.
pub(crate) struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("slots lock") += 1;
        self.0.freed.notify_one();
    }
}

impl Slots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a slot; `None` when `cancel` is set meanwhile.
    pub(crate) fn take<'a>(&'a self, cancel: &Cancel) -> Option<Slot<'a>> {
        let mut free = self.free.lock().expect("slots lock");
        loop {
            if cancel.is_cancelled() {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Slot(self));
            }
            // Woken by a freed slot, or after a while to look at the cancel flag.
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(50))
                .expect("slots lock")
                .0;
        }
    }
}

/// What the solves of one build (one per target platform) share besides their cancel flag.
///
/// A step whose cache is ignored (`--no-cache`) and whose key another solve of this build ran, or is
/// running, is taken from that run instead of running again, as BuildKit shares a vertex between the
/// platforms of one build even without its cache. Results of earlier builds are never used through it.
#[derive(Debug, Default)]
pub struct Shared {
    /// Keys of ignored-cache steps run by this build: `None` while running, the outcome once done.
    runs: Mutex<HashMap<String, Option<Outcome>>>,
    finished: Condvar,
}

/// What a worker gets besides the node and its inputs.
pub struct ExecContext<'a> {
    /// Set when the solve is failing; stop promptly and clean up.
    pub cancel: &'a Cancel,
    /// Where to send log lines.
    pub reporter: &'a dyn Reporter,
    /// The node being executed.
    pub node: NodeId,
}

impl ExecContext<'_> {
    /// Sends one line of output for this node.
    pub fn log(&self, line: &str) {
        self.reporter.event(Event::Log {
            node: self.node,
            line: line.to_owned(),
        });
    }
}

/// Does the work of nodes. Implemented by the binary (and by fakes in tests).
pub trait Worker: Send + Sync {
    /// Content that enters the cache key besides the op and input keys: a base image's manifest digest,
    /// the digest of the context files a COPY reads. Called before any execution, possibly in parallel.
    fn content_key(&self, node: &Node) -> Result<Option<String>, WorkerError>;
    /// Executes a node whose inputs' outcomes are `inputs` (in the node's input order).
    fn execute(
        &self,
        node: &Node,
        inputs: &[Outcome],
        ctx: &ExecContext<'_>,
    ) -> Result<Outcome, WorkerError>;
    /// Whether a cached outcome can still be used (every blob it names is present).
    fn is_usable(&self, outcome: &Outcome) -> bool;
}

/// Persistent cache records (the binary stores them in the local store's SQLite).
pub trait Records: Send + Sync {
    /// Value for `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError>;
    /// Stores `value` under `key`; `refs` are the blobs and snapshots (by diff_id) the record needs, so
    /// garbage collection keeps them while the record lives.
    fn put(&self, key: &str, value: &[u8], refs: &[Digest]) -> Result<(), BoxError>;
    /// Tries to take the cross-process lock of `key` without waiting, for running a miss with that key.
    ///
    /// Records shared between processes (the local store) implement it so that concurrent builds run a
    /// miss once: the first takes the lock and runs, the others wait and then find its record. The
    /// default, for records private to one solve, is [`KeyLock::Unshared`].
    fn try_lock(&self, _key: &str) -> Result<KeyLock, BoxError> {
        Ok(KeyLock::Unshared)
    }
}

/// The answer of [`Records::try_lock`].
pub enum KeyLock {
    /// The lock is ours until this guard drops.
    Held(Box<dyn Send>),
    /// Another process holds it (it is running that miss).
    Busy,
    /// These records are not shared: nothing to lock.
    Unshared,
}

/// In-memory [`Records`], for tests and `--no-cache` style one-off solves.
#[derive(Default)]
pub struct MemoryRecords(Mutex<HashMap<String, Vec<u8>>>);

impl Records for MemoryRecords {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        Ok(self.0.lock().map_err(|e| e.to_string())?.get(key).cloned())
    }
    fn put(&self, key: &str, value: &[u8], _refs: &[Digest]) -> Result<(), BoxError> {
        self.0
            .lock()
            .map_err(|e| e.to_string())?
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}

/// Progress events, in the order they happen for each node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The node's result came from the cache.
    Cached {
        /// Node.
        node: NodeId,
    },
    /// The node will run; `reason` says why it missed the cache.
    Started {
        /// Node.
        node: NodeId,
        /// Why the cache missed, one line.
        reason: String,
    },
    /// One line of output.
    Log {
        /// Node.
        node: NodeId,
        /// The line, without its newline.
        line: String,
    },
    /// The node finished.
    Done {
        /// Node.
        node: NodeId,
        /// Wall time of execution.
        elapsed: Duration,
    },
    /// The node failed.
    Failed {
        /// Node.
        node: NodeId,
        /// The error, rendered.
        message: String,
    },
}

/// Receives progress events; must be cheap and thread-safe.
pub trait Reporter: Send + Sync {
    /// Handles one event.
    fn event(&self, event: Event);
}

/// A reporter that drops everything.
pub struct NoReporter;

impl Reporter for NoReporter {
    fn event(&self, _: Event) {}
}

/// Whether cache records are read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// Read and write the cache.
    #[default]
    Use,
    /// Run everything; still write records (`--no-cache`).
    Ignore,
    /// Ignore records for these nodes only (`--no-cache-filter`); others read the cache.
    IgnoreNodes(Vec<NodeId>),
}

/// Options of one solve.
#[derive(Clone, Debug)]
pub struct SolveOptions {
    /// How many nodes may execute at once.
    pub jobs: usize,
    /// Cache reading policy.
    pub cache: CachePolicy,
    /// Stable identities for nodes (e.g. "Dockerfile#stage#3"), used to explain misses against the last
    /// build of the same node; nodes without one are not explained beyond "no cache record".
    pub identities: HashMap<NodeId, String>,
    /// The cancellation flag of this solve. Solves that share one stop together: the first failure of
    /// any of them cancels the others (`rbuild bake` builds several targets at once this way).
    pub cancel: Arc<Cancel>,
    /// A limit shared with other solves on the nodes executing at once, if any.
    pub slots: Option<Arc<Slots>>,
    /// Set when this solve is one of several of the same build (see [`Shared`]).
    pub shared: Option<Arc<Shared>>,
}

impl Default for SolveOptions {
    fn default() -> Self {
        Self {
            jobs: 8,
            cache: CachePolicy::Use,
            identities: HashMap::new(),
            cancel: Arc::default(),
            slots: None,
            shared: None,
        }
    }
}

/// The result of a solve.
#[derive(Debug, Default)]
pub struct Solved {
    /// Outcome of every node whose outcome became known (cache hits and executed nodes).
    pub outcomes: HashMap<NodeId, Outcome>,
    /// Cache key of every considered node.
    pub keys: HashMap<NodeId, CacheKey>,
    /// Nodes that executed, in completion order.
    pub executed: Vec<NodeId>,
    /// Nodes served from the cache.
    pub cached: Vec<NodeId>,
}

/// An error of any type, boxed where each implementor of a trait has its own (keeps its causes).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The text of an error and of each of its causes, joined by `: ` (what `anyhow` prints with `{:#}`).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A node failed.
    #[error("{name}: {source}")]
    Node {
        /// The failing node.
        node: NodeId,
        /// Its display name.
        name: String,
        /// The worker's error.
        #[source]
        source: WorkerError,
    },
    /// The cache records could not be read or written.
    #[error("cache records")]
    Records(#[source] BoxError),
}
