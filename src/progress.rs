//! Renders solver events: BuildKit-style plain lines (`#3 [2/4] RUN make`, `#3 CACHED`, `#3 DONE 0.4s`),
//! plus the reason of every cache miss, which no peer prints.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use graph::{BuildGraph, NodeId, Op};
use solver::Event;

/// How much to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verbosity {
    /// Every event.
    Plain,
    /// Nothing but errors (`-q`).
    Quiet,
}

pub(crate) struct PlainReporter {
    names: HashMap<NodeId, String>,
    hidden: Vec<NodeId>,
    verbosity: Verbosity,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    numbers: HashMap<NodeId, usize>,
    next: usize,
    node_started: HashMap<NodeId, Instant>,
}

impl PlainReporter {
    pub(crate) fn new(graph: &BuildGraph, verbosity: Verbosity) -> Self {
        let names = graph
            .nodes()
            .iter()
            .map(|n| (n.id, n.name.clone()))
            .collect();
        let hidden = graph
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::Scratch))
            .map(|n| n.id)
            .collect();
        Self {
            names,
            hidden,
            verbosity,
            started: Instant::now(),
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
        }
    }

    fn number(&self, st: &mut State, node: NodeId, out: &mut impl Write) -> usize {
        if let Some(n) = st.numbers.get(&node) {
            return *n;
        }
        let n = st.next;
        st.next += 1;
        st.numbers.insert(node, n);
        let _ = writeln!(
            out,
            "#{n} {}",
            self.names.get(&node).map_or("", String::as_str)
        ); // stderr gone: nothing to do
        n
    }
}

impl solver::Reporter for PlainReporter {
    fn event(&self, event: Event) {
        let node = match &event {
            Event::Cached { node }
            | Event::Started { node, .. }
            | Event::Log { node, .. }
            | Event::Done { node, .. }
            | Event::Failed { node, .. } => *node,
        };
        if self.hidden.contains(&node) {
            return;
        }
        if self.verbosity == Verbosity::Quiet && !matches!(event, Event::Failed { .. }) {
            return;
        }
        let mut st = self.state.lock().expect("progress lock");
        let stderr = std::io::stderr();
        let mut out = stderr.lock();
        let n = self.number(&mut st, node, &mut out);
        // Writes to stderr can only fail when it is closed; progress is then lost, the build goes on.
        let _ = match event {
            Event::Cached { .. } => writeln!(out, "#{n} CACHED"),
            Event::Started { reason, .. } => {
                st.node_started.insert(node, Instant::now());
                writeln!(out, "#{n} cache miss: {reason}")
            }
            Event::Log { line, .. } => {
                let t = st
                    .node_started
                    .get(&node)
                    .unwrap_or(&self.started)
                    .elapsed()
                    .as_secs_f64();
                writeln!(out, "#{n} {t:.3} {line}")
            }
            Event::Done { elapsed, .. } => writeln!(out, "#{n} DONE {:.1}s", elapsed.as_secs_f64()),
            Event::Failed { message, .. } => writeln!(out, "#{n} ERROR: {message}"),
        };
    }
}
