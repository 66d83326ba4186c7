//! Solver behaviour on hand-built graphs with a recording fake worker (no Dockerfiles, no containers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use graph::{BuildGraph, Exec, Node, NodeId, Op};
use oci::{Descriptor, Digest};
use solver::{
    solve, CachePolicy, Event, ExecContext, Layer, MemoryRecords, Outcome, Reporter, SolveError,
    SolveOptions, Worker, WorkerError,
};

/// Records calls; `sleep N` sleeps N×100 ms; `fail` fails; every exec adds one layer named after its script.
#[derive(Default)]
struct FakeWorker {
    calls: Mutex<Vec<String>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    content: Mutex<HashMap<String, String>>,
    cancelled: AtomicUsize,
}

fn script(node: &Node) -> String {
    match &node.op {
        Op::Exec(e) => e.args.last().cloned().unwrap_or_default(),
        _ => node.name.to_string(),
    }
}

impl Worker for FakeWorker {
    fn content_key(&self, node: &Node) -> Result<Option<String>, WorkerError> {
        Ok(self
            .content
            .lock()
            .unwrap()
            .get(&node.name.to_string())
            .cloned())
    }

    fn execute(
        &self,
        node: &Node,
        inputs: &[Outcome],
        ctx: &ExecContext<'_>,
    ) -> Result<Outcome, WorkerError> {
        let s = script(node);
        self.calls.lock().unwrap().push(s.clone());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let result = (|| {
            if let Some(n) = s.strip_prefix("sleep ") {
                let until =
                    Instant::now() + Duration::from_millis(100 * n.trim().parse::<u64>().unwrap());
                while Instant::now() < until {
                    if ctx.cancel.is_cancelled() {
                        self.cancelled.fetch_add(1, Ordering::SeqCst);
                        return Err(WorkerError::Cancelled);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            if s == "fail" {
                return Err(WorkerError::ExitCode { code: 2 });
            }
            ctx.log(&format!("ran {s}"));
            let mut layers: Vec<Layer> =
                inputs.first().map(|o| o.layers.clone()).unwrap_or_default();
            let d = Digest::sha256_of(s.as_bytes());
            layers.push(Layer {
                diff_id: d.clone(),
                blob: Descriptor::new("x", d, 1),
            });
            Ok(Outcome {
                layers,
                added_layer: true,
            })
        })();
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn is_usable(&self, _: &Outcome) -> bool {
        true
    }
}

#[derive(Default)]
struct Events(Mutex<Vec<Event>>);
impl Reporter for Events {
    fn event(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }
}

fn run(g: &mut BuildGraph, parent: NodeId, s: &str) -> NodeId {
    g.add(
        Op::Exec(Exec::shell(s)),
        vec![parent],
        None,
        format!("RUN {s}").into(),
    )
}

fn opts() -> SolveOptions {
    SolveOptions::default()
}

#[test]
fn independent_branches_overlap_and_second_solve_hits() {
    let mut g = BuildGraph::default();
    let base = g.add(Op::Scratch, vec![], None, "scratch".into());
    let a = run(&mut g, base, "sleep 3");
    let b = run(&mut g, base, "sleep 3 ");
    let c = run(&mut g, base, "sleep 3  ");
    let fin = g.add(
        Op::Exec(Exec::shell("join")),
        vec![a, b, c],
        None,
        "join".into(),
    );
    let w = FakeWorker::default();
    let rec = MemoryRecords::default();
    let solved = solve(&g, fin, &w, &rec, &solver::NoReporter, &opts()).unwrap();
    assert_eq!(solved.executed.len(), 5);
    assert_eq!(
        w.max_running.load(Ordering::SeqCst),
        3,
        "three sleeps run at once"
    );
    assert_eq!(solved.outcomes[&fin].layers.len(), 3, "scratch + a + join");

    let ev = Events::default();
    let again = solve(&g, fin, &w, &rec, &ev, &opts()).unwrap();
    assert!(again.executed.is_empty());
    assert_eq!(again.cached.len(), 5);
    assert_eq!(w.calls.lock().unwrap().len(), 5, "nothing re-executed");
    assert!(ev
        .0
        .lock()
        .unwrap()
        .iter()
        .all(|e| matches!(e, Event::Cached { .. })));
}

#[test]
fn equal_keys_run_once() {
    let mut g = BuildGraph::default();
    let base = g.add(Op::Scratch, vec![], None, "scratch".into());
    let x1 = run(&mut g, base, "same");
    let x2 = run(&mut g, base, "same");
    let fin = g.add(
        Op::Exec(Exec::shell("join")),
        vec![x1, x2],
        None,
        "join".into(),
    );
    let w = FakeWorker::default();
    let solved = solve(
        &g,
        fin,
        &w,
        &MemoryRecords::default(),
        &solver::NoReporter,
        &opts(),
    )
    .unwrap();
    let calls = w.calls.lock().unwrap().clone();
    assert_eq!(
        calls.iter().filter(|c| *c == "same").count(),
        1,
        "{calls:?}"
    );
    assert_eq!(solved.outcomes[&x1], solved.outcomes[&x2]);
}

#[test]
fn only_target_ancestors_run() {
    let mut g = BuildGraph::default();
    let base = g.add(Op::Scratch, vec![], None, "scratch".into());
    let _slow = run(&mut g, base, "sleep 60");
    let fast = run(&mut g, base, "fast");
    let w = FakeWorker::default();
    solve(
        &g,
        fast,
        &w,
        &MemoryRecords::default(),
        &solver::NoReporter,
        &opts(),
    )
    .unwrap();
    assert_eq!(
        *w.calls.lock().unwrap(),
        vec!["scratch".to_owned(), "fast".to_owned()]
    );
}

#[test]
fn failure_cancels_siblings_and_names_the_node() {
    let mut g = BuildGraph::default();
    let base = g.add(Op::Scratch, vec![], None, "scratch".into());
    let slow = run(&mut g, base, "sleep 50");
    let bad = run(&mut g, base, "fail");
    let fin = g.add(
        Op::Exec(Exec::shell("join")),
        vec![slow, bad],
        None,
        "join".into(),
    );
    let w = FakeWorker::default();
    let t = Instant::now();
    let err = solve(
        &g,
        fin,
        &w,
        &MemoryRecords::default(),
        &solver::NoReporter,
        &opts(),
    )
    .unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "cancellation is prompt: {:?}",
        t.elapsed()
    );
    match err {
        SolveError::Node {
            node,
            source: WorkerError::ExitCode { code: 2 },
            ..
        } => assert_eq!(node, bad),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(w.cancelled.load(Ordering::SeqCst), 1);
    assert!(!w.calls.lock().unwrap().contains(&"join".to_owned()));
}

#[test]
fn jobs_bound_parallelism() {
    let mut g = BuildGraph::default();
    let base = g.add(Op::Scratch, vec![], None, "scratch".into());
    let leaves: Vec<_> = (0..4)
        .map(|i| run(&mut g, base, &format!("sleep 1{}", " ".repeat(i))))
        .collect();
    let fin = g.add(Op::Exec(Exec::shell("join")), leaves, None, "join".into());
    let w = FakeWorker::default();
    let o = SolveOptions { jobs: 2, ..opts() };
    solve(
        &g,
        fin,
        &w,
        &MemoryRecords::default(),
        &solver::NoReporter,
        &o,
    )
    .unwrap();
    assert_eq!(w.max_running.load(Ordering::SeqCst), 2);
}

#[test]
fn misses_are_explained_and_content_changes_bust_only_dependents() {
    let mut g = BuildGraph::default();
    let base = g.add(Op::Scratch, vec![], None, "scratch".into());
    let deps = run(&mut g, base, "install deps");
    let copy = g.add(
        Op::Exec(Exec::shell("copy src")),
        vec![deps],
        None,
        "COPY src".into(),
    );
    let build = run(&mut g, copy, "build");
    let w = FakeWorker::default();
    w.content
        .lock()
        .unwrap()
        .insert("COPY src".into(), "digest-1".into());
    let rec = MemoryRecords::default();
    let mut o = opts();
    for (i, id) in [base, deps, copy, build].into_iter().enumerate() {
        o.identities.insert(id, format!("stage0#{i}"));
    }
    solve(&g, build, &w, &rec, &solver::NoReporter, &o).unwrap();
    w.content
        .lock()
        .unwrap()
        .insert("COPY src".into(), "digest-2".into());
    let ev = Events::default();
    let solved = solve(&g, build, &w, &rec, &ev, &o).unwrap();
    assert_eq!(solved.executed, vec![copy, build]);
    let started: Vec<(NodeId, String)> =
        ev.0.lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Started { node, reason } => Some((*node, reason.clone())),
                _ => None,
            })
            .collect();
    assert_eq!(
        started,
        vec![
            (copy, "files read by this step changed".into()),
            (build, "parent step missed".into())
        ]
    );

    let ev = Events::default();
    let o2 = SolveOptions {
        cache: CachePolicy::Ignore,
        ..o
    };
    solve(&g, build, &w, &rec, &ev, &o2).unwrap();
    assert!(ev
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Started { reason, .. } if reason == "--no-cache")));
}

#[test]
fn worker_panic_fails_the_node_instead_of_hanging() {
    struct Panics;
    impl Worker for Panics {
        fn content_key(&self, _: &Node) -> Result<Option<String>, WorkerError> {
            Ok(None)
        }
        fn execute(
            &self,
            _: &Node,
            _: &[Outcome],
            _: &ExecContext<'_>,
        ) -> Result<Outcome, WorkerError> {
            panic!("boom")
        }
        fn is_usable(&self, _: &Outcome) -> bool {
            true
        }
    }
    let mut g = BuildGraph::default();
    let base = g.add(Op::Scratch, vec![], None, "scratch".into());
    let err = solve(
        &g,
        base,
        &Panics,
        &MemoryRecords::default(),
        &solver::NoReporter,
        &opts(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
}

/// Records shared by several solves (as the store is by several processes), with per-key locks.
#[derive(Default)]
struct SharedRecords {
    records: MemoryRecords,
    locked: std::sync::Arc<Mutex<std::collections::HashSet<String>>>,
}

struct KeyGuard(
    std::sync::Arc<Mutex<std::collections::HashSet<String>>>,
    String,
);

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.0.lock().unwrap().remove(&self.1);
    }
}

impl solver::Records for SharedRecords {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, solver::BoxError> {
        self.records.get(key)
    }
    fn put(&self, key: &str, value: &[u8], refs: &[Digest]) -> Result<(), solver::BoxError> {
        self.records.put(key, value, refs)
    }
    fn try_lock(&self, key: &str) -> Result<solver::KeyLock, solver::BoxError> {
        if self.locked.lock().unwrap().insert(key.to_owned()) {
            Ok(solver::KeyLock::Held(Box::new(KeyGuard(
                self.locked.clone(),
                key.to_owned(),
            ))))
        } else {
            Ok(solver::KeyLock::Busy)
        }
    }
}

// See: #19. Concurrent builds sharing a store ran every shared step once each. With a per-key lock, 4
// solves of the same deps-then-src graph started at once run each step once: one solve runs it, the
// others wait and report it cached; a different last step still runs in its own solve.
#[test]
fn r19_concurrent_solves_sharing_records_run_each_miss_once() {
    let rec = SharedRecords::default();
    let w = FakeWorker::default();
    let evs: Vec<Events> = (0..4).map(|_| Events::default()).collect();
    let solved: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = evs
            .iter()
            .enumerate()
            .map(|(i, ev)| {
                let (rec, w) = (&rec, &w);
                s.spawn(move || {
                    let mut g = BuildGraph::default();
                    let base = g.add(Op::Scratch, vec![], None, "scratch".into());
                    let deps = run(&mut g, base, "sleep 3");
                    let src = run(&mut g, deps, "sleep 1");
                    let own = run(&mut g, src, &format!("own {i}"));
                    solve(&g, own, w, rec, ev, &opts()).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let calls = w.calls.lock().unwrap().clone();
    for shared in ["scratch", "sleep 3", "sleep 1"] {
        assert_eq!(
            calls.iter().filter(|c| *c == shared).count(),
            1,
            "{shared} ran more than once: {calls:?}"
        );
    }
    for i in 0..4 {
        assert!(calls.contains(&format!("own {i}")), "{calls:?}");
    }
    // Every solve knows every outcome; the shared ones are executed in one solve, cached in the rest.
    let executed: usize = solved.iter().map(|s| s.executed.len()).sum();
    let cached: usize = solved.iter().map(|s| s.cached.len()).sum();
    assert_eq!(executed, 3 + 4, "{solved:?}");
    assert_eq!(cached, 3 * 3);
    for (s, ev) in solved.iter().zip(&evs) {
        assert_eq!(s.outcomes.len(), 4);
        let ev = ev.0.lock().unwrap();
        assert!(
            ev.iter().all(|e| !matches!(e, Event::Failed { .. })),
            "{ev:?}"
        );
    }
}

#[test]
fn a_failure_in_one_solve_cancels_another_sharing_the_flag() {
    // Two graphs (two bake targets) solved at once with one cancel flag: the failure of one stops the
    // other's running step and keeps its later steps from starting.
    let mut ga = BuildGraph::default();
    let base = ga.add(Op::Scratch, vec![], None, "scratch".into());
    let slow = run(&mut ga, base, "sleep 50");
    let after = run(&mut ga, slow, "after");
    let mut gb = BuildGraph::default();
    let base_b = gb.add(Op::Scratch, vec![], None, "scratch b".into());
    let bad = run(&mut gb, base_b, "sleep 2");
    let bad = run(&mut gb, bad, "fail");
    let shared = SolveOptions::default();
    let w = FakeWorker::default();
    let t = Instant::now();
    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            solve(
                &ga,
                after,
                &w,
                &MemoryRecords::default(),
                &solver::NoReporter,
                &shared,
            )
        });
        let b = s.spawn(|| {
            solve(
                &gb,
                bad,
                &w,
                &MemoryRecords::default(),
                &solver::NoReporter,
                &shared,
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "prompt: {:?}",
        t.elapsed()
    );
    assert!(matches!(
        rb,
        Err(SolveError::Node {
            source: WorkerError::ExitCode { code: 2 },
            ..
        })
    ));
    assert!(matches!(
        ra,
        Err(SolveError::Node {
            source: WorkerError::Cancelled,
            ..
        })
    ));
    assert!(!w.calls.lock().unwrap().contains(&"after".to_owned()));
    // A solve with a flag of its own is not affected.
    let own = SolveOptions::default();
    assert!(solve(
        &ga,
        after,
        &FakeWorker::default(),
        &MemoryRecords::default(),
        &solver::NoReporter,
        &own
    )
    .is_ok());
}

#[test]
fn solves_sharing_slots_stay_within_them_together() {
    // Two graphs of three independent sleeps each, each solve allowed 3 at once, sharing 2 slots.
    let graph = |tag: &str| {
        let mut g = BuildGraph::default();
        let base = g.add(Op::Scratch, vec![], None, format!("scratch {tag}").into());
        let a = run(&mut g, base, "sleep 2 ");
        let b = run(&mut g, base, "sleep 2  ");
        let c = run(&mut g, base, "sleep 2   ");
        let fin = g.add(
            Op::Exec(Exec::shell(&format!("join {tag}"))),
            vec![a, b, c],
            None,
            "join".into(),
        );
        (g, fin)
    };
    let (g1, t1) = graph("one");
    let (g2, t2) = graph("two");
    let opts = SolveOptions {
        jobs: 3,
        slots: Some(std::sync::Arc::new(solver::Slots::new(2))),
        ..SolveOptions::default()
    };
    let w = FakeWorker::default();
    std::thread::scope(|s| {
        let one = s.spawn(|| {
            solve(
                &g1,
                t1,
                &w,
                &MemoryRecords::default(),
                &solver::NoReporter,
                &opts,
            )
        });
        let two = s.spawn(|| {
            solve(
                &g2,
                t2,
                &w,
                &MemoryRecords::default(),
                &solver::NoReporter,
                &opts,
            )
        });
        one.join().unwrap().unwrap();
        two.join().unwrap().unwrap();
    });
    assert_eq!(
        w.max_running.load(Ordering::SeqCst),
        2,
        "never more than the shared 2 at once"
    );
}

/// Two graphs of one build (two platforms) that share a first step, solved at the same time.
fn two_platforms(shared_step: &str, a: &str, b: &str) -> (BuildGraph, NodeId, BuildGraph, NodeId) {
    let graph = |last: &str| {
        let mut g = BuildGraph::default();
        let base = g.add(Op::Scratch, vec![], None, "scratch".into());
        let s = run(&mut g, base, shared_step);
        let t = run(&mut g, s, last);
        (g, t)
    };
    let (ga, ta) = graph(a);
    let (gb, tb) = graph(b);
    (ga, ta, gb, tb)
}

fn solve_together(
    graphs: &[(&BuildGraph, NodeId)],
    w: &FakeWorker,
    rec: &MemoryRecords,
    o: &SolveOptions,
) -> Vec<Result<solver::Solved, SolveError>> {
    std::thread::scope(|s| {
        let running: Vec<_> = graphs
            .iter()
            .map(|&(g, t)| s.spawn(move || solve(g, t, w, rec, &solver::NoReporter, o)))
            .collect();
        running.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn no_cache_runs_a_step_the_platforms_of_one_build_share_once_and_again_in_the_next_build() {
    let (ga, ta, gb, tb) = two_platforms("sleep 2", "echo a", "echo b");
    let w = FakeWorker::default();
    let rec = MemoryRecords::default();
    let build = || SolveOptions {
        cache: CachePolicy::Ignore,
        shared: Some(std::sync::Arc::default()),
        ..opts()
    };
    let shared_runs = |w: &FakeWorker| {
        w.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == "sleep 2")
            .count()
    };
    let first = build();
    for r in solve_together(&[(&ga, ta), (&gb, tb)], &w, &rec, &first) {
        r.unwrap();
    }
    assert_eq!(shared_runs(&w), 1, "{:?}", w.calls.lock().unwrap());
    // The next build (its own shared state) ignores what the first ran, as --no-cache asks.
    let second = build();
    for r in solve_together(&[(&ga, ta), (&gb, tb)], &w, &rec, &second) {
        r.unwrap();
    }
    assert_eq!(shared_runs(&w), 2, "{:?}", w.calls.lock().unwrap());
    // Both platforms' own steps ran each time.
    let calls = w.calls.lock().unwrap();
    assert_eq!(calls.iter().filter(|c| *c == "echo a").count(), 2);
    assert_eq!(calls.iter().filter(|c| *c == "echo b").count(), 2);
}
