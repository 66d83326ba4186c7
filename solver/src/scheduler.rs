//! Scheduling: keys, cache lookups, the set of nodes that must run, and a bounded parallel executor.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use graph::{BuildGraph, Node, NodeId};
use serde::{Deserialize, Serialize};

use crate::{
    CacheKey, CachePolicy, Cancel, Event, ExecContext, KeyLock, KeyParts, Outcome, Records,
    Reporter, Shared, SolveError, SolveOptions, Solved, Worker, WorkerError,
};

/// What a cache record holds.
#[derive(Serialize, Deserialize)]
struct Record {
    outcome: Outcome,
}

/// The bytes a node's cache record holds for `outcome`: what [`Records::put`] receives under a node's key.
/// With [`decode_record`], lets a cache travel between stores (export and import).
pub fn encode_record(outcome: &Outcome) -> Vec<u8> {
    serde_json::to_vec(&Record {
        outcome: outcome.clone(),
    })
    .expect("an outcome always encodes")
}

/// The outcome in a node's cache record, if the bytes are one.
pub fn decode_record(bytes: &[u8]) -> Option<Outcome> {
    serde_json::from_slice::<Record>(bytes)
        .ok()
        .map(|r| r.outcome)
}

fn explain_key(identity: &str) -> String {
    crate::RecordFamily::Explain.key(identity)
}

/// Solves `target`: every ancestor gets a cache key; misses needed for the target run on `worker`.
///
/// # Errors
/// The first node failure (others are cancelled and awaited first), or a records failure.
pub fn solve(
    graph: &BuildGraph,
    target: NodeId,
    worker: &dyn Worker,
    records: &dyn Records,
    reporter: &dyn Reporter,
    opts: &SolveOptions,
) -> Result<Solved, SolveError> {
    let nodes: BTreeSet<NodeId> = graph.ancestors(target);
    let content = content_keys(graph, &nodes, worker, opts.jobs)?;

    // Keys, inputs first (BTreeSet order is topological because inputs precede their node).
    let mut parts: HashMap<NodeId, KeyParts> = HashMap::new();
    let mut keys: HashMap<NodeId, CacheKey> = HashMap::new();
    for &id in &nodes {
        let node = graph.node(id);
        let p = KeyParts {
            op: String::from_utf8(node.op.canonical_bytes()).expect("serde_json writes UTF-8"),
            inputs: node.inputs.iter().map(|i| keys[i].clone()).collect(),
            content: content[&id].clone(),
        };
        keys.insert(id, p.key());
        parts.insert(id, p);
    }

    // Lookups.
    let mut solved = Solved {
        keys: keys.clone(),
        ..Solved::default()
    };
    let mut hits: HashMap<NodeId, Outcome> = HashMap::new();
    for &id in &nodes {
        let ignored = match &opts.cache {
            CachePolicy::Use => false,
            CachePolicy::Ignore => true,
            CachePolicy::IgnoreNodes(list) => list.contains(&id),
        };
        if ignored {
            continue;
        }
        if let Some(bytes) = records.get(&keys[&id].0).map_err(SolveError::Records)? {
            match serde_json::from_slice::<Record>(&bytes) {
                Ok(rec) if worker.is_usable(&rec.outcome) => {
                    hits.insert(id, rec.outcome);
                }
                Ok(_) => {
                    tracing::info!(node = id.0, "cache record names missing blobs; rebuilding")
                }
                Err(e) => {
                    tracing::warn!(node = id.0, error = %e, "unreadable cache record; rebuilding")
                }
            }
        }
    }

    // Which misses must run: walk down from the target through misses only.
    let mut run: BTreeSet<NodeId> = BTreeSet::new();
    let mut stack = vec![target];
    while let Some(id) = stack.pop() {
        if hits.contains_key(&id) || !run.insert(id) {
            continue;
        }
        stack.extend(graph.node(id).inputs.iter().copied());
    }
    for (&id, outcome) in &hits {
        // Report every hit among the ancestors so plain progress shows each cached step.
        reporter.event(Event::Cached { node: id });
        solved.cached.push(id);
        solved.outcomes.insert(id, outcome.clone());
    }
    solved.cached.sort();

    let reasons: HashMap<NodeId, String> = run
        .iter()
        .map(|&id| (id, miss_reason(id, graph, &parts, &run, records, opts)))
        .collect();

    let executor = Executor {
        graph,
        worker,
        records,
        reporter,
        keys: &keys,
        parts: &parts,
        reasons: &reasons,
        opts,
        cancel: &opts.cancel,
    };
    executor.run(&run, &mut solved)?;
    Ok(solved)
}

fn miss_reason(
    id: NodeId,
    graph: &BuildGraph,
    parts: &HashMap<NodeId, KeyParts>,
    run: &BTreeSet<NodeId>,
    records: &dyn Records,
    opts: &SolveOptions,
) -> String {
    match &opts.cache {
        CachePolicy::Ignore => return "--no-cache".to_owned(),
        CachePolicy::IgnoreNodes(list) if list.contains(&id) => {
            return "--no-cache-filter".to_owned()
        }
        _ => {}
    }
    // Compare with what this node was keyed by last time; only then can we name what changed.
    if let Some(identity) = opts.identities.get(&id) {
        if let Ok(Some(bytes)) = records.get(&explain_key(identity)) {
            if let Ok(prev) = serde_json::from_slice::<KeyParts>(&bytes) {
                return if prev == parts[&id] {
                    "cache record missing or incomplete".to_owned()
                } else if graph.node(id).inputs.iter().any(|i| run.contains(i))
                    && prev.inputs != parts[&id].inputs
                {
                    "parent step missed".to_owned()
                } else {
                    parts[&id].explain_change(&prev)
                };
            }
        }
    }
    "no cache record".to_owned()
}

/// Asks the worker for content keys, on up to `jobs` threads.
fn content_keys(
    graph: &BuildGraph,
    nodes: &BTreeSet<NodeId>,
    worker: &dyn Worker,
    jobs: usize,
) -> Result<HashMap<NodeId, Option<String>>, SolveError> {
    let queue = Mutex::new(nodes.iter().copied().collect::<VecDeque<_>>());
    let results = Mutex::new(HashMap::new());
    let failure = Mutex::new(None);
    std::thread::scope(|s| {
        // Content keys are CPU and page-cache work: more threads than cores only costs their creation.
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        for _ in 0..jobs.min(cores).clamp(1, nodes.len().max(1)) {
            s.spawn(|| loop {
                let Some(id) = queue.lock().expect("queue lock").pop_front() else {
                    return;
                };
                match worker.content_key(graph.node(id)) {
                    Ok(k) => {
                        results.lock().expect("results lock").insert(id, k);
                    }
                    Err(e) => {
                        failure.lock().expect("failure lock").get_or_insert((id, e));
                        queue.lock().expect("queue lock").clear();
                    }
                }
            });
        }
    });
    if let Some((node, source)) = failure.into_inner().expect("failure lock") {
        return Err(SolveError::Node {
            node,
            name: graph.node(node).name.to_string(),
            source,
        });
    }
    Ok(results.into_inner().expect("results lock"))
}

/// How a node's outcome came to be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// The worker ran it.
    Executed,
    /// Another process ran it while this one waited for the key's lock.
    CachedLate,
}

struct Executor<'a> {
    graph: &'a BuildGraph,
    worker: &'a dyn Worker,
    records: &'a dyn Records,
    reporter: &'a dyn Reporter,
    keys: &'a HashMap<NodeId, CacheKey>,
    parts: &'a HashMap<NodeId, KeyParts>,
    reasons: &'a HashMap<NodeId, String>,
    opts: &'a SolveOptions,
    cancel: &'a Cancel,
}

#[derive(Default)]
struct State {
    /// Nodes still waiting, with how many of their run-set inputs are unfinished.
    waiting: HashMap<NodeId, usize>,
    ready: VecDeque<NodeId>,
    running: usize,
    /// Nodes whose key equals an earlier node's: they take the leader's outcome.
    followers: HashMap<NodeId, Vec<NodeId>>,
    failure: Option<(NodeId, WorkerError)>,
    remaining: usize,
}

impl Executor<'_> {
    fn run(&self, run: &BTreeSet<NodeId>, solved: &mut Solved) -> Result<(), SolveError> {
        if run.is_empty() {
            return Ok(());
        }
        let mut state = State {
            remaining: run.len(),
            ..State::default()
        };
        let mut leaders: HashMap<&CacheKey, NodeId> = HashMap::new();
        let mut dependents: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for &id in run {
            if let Some(&leader) = leaders.get(&self.keys[&id]) {
                state.followers.entry(leader).or_default().push(id);
                continue;
            }
            leaders.insert(&self.keys[&id], id);
            let deps: HashSet<NodeId> = self
                .graph
                .node(id)
                .inputs
                .iter()
                .copied()
                .filter(|i| run.contains(i))
                .collect();
            for d in &deps {
                dependents.entry(*d).or_default().push(id);
            }
            if deps.is_empty() {
                state.ready.push_back(id);
            } else {
                state.waiting.insert(id, deps.len());
            }
        }
        // A follower's dependents wait on the follower, which completes with its leader.
        let state = Mutex::new(state);
        let wake = Condvar::new();
        let outcomes = Mutex::new(std::mem::take(&mut solved.outcomes));
        let executed = Mutex::new(Vec::new());
        let late_hits = Mutex::new(Vec::new());

        std::thread::scope(|s| {
            for _ in 0..self.opts.jobs.clamp(1, run.len()) {
                s.spawn(|| {
                    self.work_loop(&state, &wake, &outcomes, &executed, &late_hits, &dependents)
                });
            }
        });

        solved.outcomes = outcomes.into_inner().expect("outcomes lock");
        solved.executed = executed.into_inner().expect("executed lock");
        solved
            .cached
            .extend(late_hits.into_inner().expect("late hits lock"));
        solved.cached.sort();
        let state = state.into_inner().expect("state lock");
        if let Some((node, source)) = state.failure {
            return Err(SolveError::Node {
                node,
                name: self.graph.node(node).name.to_string(),
                source,
            });
        }
        Ok(())
    }

    fn work_loop(
        &self,
        state: &Mutex<State>,
        wake: &Condvar,
        outcomes: &Mutex<HashMap<NodeId, Outcome>>,
        executed: &Mutex<Vec<NodeId>>,
        late_hits: &Mutex<Vec<NodeId>>,
        dependents: &HashMap<NodeId, Vec<NodeId>>,
    ) {
        loop {
            let id = {
                let mut st = state.lock().expect("state lock");
                loop {
                    if st.failure.is_some() && st.running == 0 {
                        wake.notify_all();
                        return;
                    }
                    if st.remaining == 0 {
                        wake.notify_all();
                        return;
                    }
                    if st.failure.is_none() && self.cancel.is_cancelled() {
                        // Another solve sharing the flag failed: stop here as if a node had, before
                        // starting anything more.
                        if let Some(&id) = st.ready.front() {
                            st.failure = Some((id, WorkerError::Cancelled));
                            continue;
                        }
                    }
                    if st.failure.is_none() {
                        if let Some(id) = st.ready.pop_front() {
                            st.running += 1;
                            break id;
                        }
                    }
                    st = wake.wait(st).expect("state lock");
                }
            };
            let node = self.graph.node(id);
            let inputs: Vec<Outcome> = {
                let o = outcomes.lock().expect("outcomes lock");
                node.inputs
                    .iter()
                    .map(|i| {
                        o.get(i)
                            .cloned()
                            .expect("inputs finish before their node starts")
                    })
                    .collect()
            };
            // See: #19. Another process may be running this very miss (same key, same store): wait
            // for it and take its record instead of running the step again.
            let (key_lock, late) = match self.lock_key(id) {
                Ok(locked) => locked,
                Err(e) => (None, Some(Err(e))),
            };
            let mut started = Instant::now();
            let result = match late {
                Some(found) => found.map(|outcome| (outcome, Ran::CachedLate)),
                None => {
                    // Within the limit shared with other solves, if there is one.
                    let slot = self.opts.slots.as_ref().map(|s| s.take(self.cancel));
                    if matches!(slot, Some(None)) {
                        Err(WorkerError::Cancelled)
                    } else {
                        started = Instant::now();
                        self.reporter.event(Event::Started {
                            node: id,
                            reason: self.reasons[&id].clone(),
                        });
                        self.execute(id, node, &inputs).map(|outcome| {
                            if let Some(shared) = key_lock.as_ref().and(self.shared_run(id)) {
                                shared
                                    .runs
                                    .lock()
                                    .expect("shared runs lock")
                                    .insert(self.keys[&id].0.clone(), Some(outcome.clone()));
                            }
                            (outcome, Ran::Executed)
                        })
                    }
                }
            };
            drop(key_lock);

            let mut st = state.lock().expect("state lock");
            st.running -= 1;
            match result {
                Ok((outcome, ran)) => {
                    if ran == Ran::Executed {
                        self.reporter.event(Event::Done {
                            node: id,
                            elapsed: started.elapsed(),
                        });
                        executed.lock().expect("executed lock").push(id);
                    } else {
                        self.reporter.event(Event::Cached { node: id });
                        late_hits.lock().expect("late hits lock").push(id);
                    }
                    let mut finished = vec![id];
                    finished.extend(st.followers.remove(&id).unwrap_or_default());
                    let mut o = outcomes.lock().expect("outcomes lock");
                    for f in finished {
                        o.insert(f, outcome.clone());
                        st.remaining -= 1;
                        for d in dependents.get(&f).into_iter().flatten() {
                            let left = st.waiting.get_mut(d).expect("dependents are waiting");
                            *left -= 1;
                            if *left == 0 {
                                st.waiting.remove(d);
                                st.ready.push_back(*d);
                            }
                        }
                    }
                }
                Err(e) => {
                    if !matches!(e, WorkerError::Cancelled) || st.failure.is_none() {
                        self.reporter.event(Event::Failed {
                            node: id,
                            message: crate::error_chain(&e),
                        });
                    }
                    if st.failure.is_none()
                        || matches!(st.failure, Some((_, WorkerError::Cancelled)))
                    {
                        st.failure = Some((id, e));
                    }
                    self.cancel.cancel();
                }
            }
            wake.notify_all();
        }
    }

    /// Runs node `id` on the worker and records its outcome.
    fn execute(&self, id: NodeId, node: &Node, inputs: &[Outcome]) -> Result<Outcome, WorkerError> {
        let ctx = ExecContext {
            cancel: self.cancel,
            reporter: self.reporter,
            node: id,
        };
        // A panicking worker must fail its node, not leave the solve waiting forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.worker.execute(node, inputs, &ctx)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(WorkerError::msg(format!(
                "internal error (worker panicked): {what}"
            )))
        });
        result.and_then(|outcome| {
            self.store(id, &outcome).map_err(|e| WorkerError::Other {
                message: "saving cache record".to_owned(),
                source: Some(e),
            })?;
            Ok(outcome)
        })
    }

    /// Takes the cross-process lock of `id`'s cache key (see [`Records::try_lock`]), waiting while
    /// another process holds it, then looks the record up again: `(guard, Some(outcome))` when the
    /// other process stored a usable record meanwhile, `(guard, None)` when this node must run.
    ///
    /// Nodes whose cache is ignored (`--no-cache`, `--no-cache-filter`) neither lock nor look up the
    /// records; when the solve is one of a build's several, they take the build's in-process lock of
    /// the key instead (see [`Shared`]).
    #[allow(clippy::type_complexity)]
    fn lock_key(
        &self,
        id: NodeId,
    ) -> Result<(Option<Box<dyn Send>>, Option<Result<Outcome, WorkerError>>), WorkerError> {
        if self.ignored(id) {
            let Some(shared) = self.shared_run(id) else {
                return Ok((None, None));
            };
            let key = &self.keys[&id].0;
            let mut runs = shared.runs.lock().expect("shared runs lock");
            loop {
                match runs.get(key) {
                    None => {
                        runs.insert(key.clone(), None);
                        let guard = SharedRun {
                            shared: Arc::clone(shared),
                            key: key.clone(),
                        };
                        return Ok((Some(Box::new(guard)), None));
                    }
                    Some(Some(outcome)) => return Ok((None, Some(Ok(outcome.clone())))),
                    Some(None) if self.cancel.is_cancelled() => return Err(WorkerError::Cancelled),
                    Some(None) => {
                        runs = shared
                            .finished
                            .wait_timeout(runs, Duration::from_millis(100))
                            .expect("shared runs lock")
                            .0;
                    }
                }
            }
        }
        let key = &self.keys[&id].0;
        let records_err = |e: crate::BoxError| WorkerError::Other {
            message: "reading cache records".to_owned(),
            source: Some(e),
        };
        let mut pause = Duration::from_millis(5);
        let mut waited = false;
        let guard = loop {
            match self.records.try_lock(key).map_err(records_err)? {
                KeyLock::Held(guard) => break guard,
                KeyLock::Unshared => return Ok((None, None)),
                KeyLock::Busy => {
                    if !waited {
                        tracing::info!(
                            node = id.0,
                            "another rbuild is running this step; waiting for its result"
                        );
                        waited = true;
                    }
                    if self.cancel.is_cancelled() {
                        return Err(WorkerError::Cancelled);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
            }
        };
        if let Some(bytes) = self.records.get(key).map_err(records_err)? {
            if let Ok(rec) = serde_json::from_slice::<Record>(&bytes) {
                if self.worker.is_usable(&rec.outcome) {
                    tracing::debug!(node = id.0, waited, "found the record of another process");
                    return Ok((Some(guard), Some(Ok(rec.outcome))));
                }
            }
        }
        Ok((Some(guard), None))
    }

    fn ignored(&self, id: NodeId) -> bool {
        match &self.opts.cache {
            CachePolicy::Use => false,
            CachePolicy::Ignore => true,
            CachePolicy::IgnoreNodes(list) => list.contains(&id),
        }
    }

    /// The build's shared state when `id` is run under it: an ignored-cache node of one of several solves.
    fn shared_run(&self, id: NodeId) -> Option<&Arc<Shared>> {
        self.opts.shared.as_ref().filter(|_| self.ignored(id))
    }

    fn store(&self, id: NodeId, outcome: &Outcome) -> Result<(), crate::BoxError> {
        let rec = encode_record(outcome);
        let refs: Vec<oci::Digest> = outcome
            .layers
            .iter()
            .flat_map(|l| [l.blob.digest.clone(), l.diff_id.clone()])
            .collect();
        self.records.put(&self.keys[&id].0, &rec, &refs)?;
        if let Some(identity) = self.opts.identities.get(&id) {
            let parts = serde_json::to_vec(&self.parts[&id])?;
            self.records.put(&explain_key(identity), &parts, &[])?;
        }
        Ok(())
    }
}

/// The build's in-process lock of an ignored-cache key while one solve runs it: dropping it wakes the
/// solves waiting for that key, and forgets the key if the run left no outcome (it failed).
struct SharedRun {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for SharedRun {
    fn drop(&mut self) {
        let mut runs = self.shared.runs.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(runs.get(&self.key), Some(None)) {
            runs.remove(&self.key);
        }
        self.shared.finished.notify_all();
    }
}
