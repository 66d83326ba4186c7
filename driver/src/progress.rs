//! Everything a build tells its user goes through [`Progress`]: the solver's events for each step, and
//! the build's own tasks (importing caches, exporting to the image, outputs, pushes, cache export) as
//! numbered vertices the way BuildKit shows its exporters, each change as a [`Line`]. Drawing the lines
//! is a [`Render`]'s job: the binary has one per `--progress` mode (plain, tty, rawjson, quiet).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graph::{BuildGraph, NodeId, Op};
use solver::Event;

/// One thing to show: a step's or a task's change, or a message of the build.
#[derive(Debug)]
pub enum Line<'a> {
    /// Vertex `n` appears (plain mode prints its name once, before its first other line).
    Begin { n: usize, name: &'a str },
    /// A step found in the cache.
    Cached { n: usize, name: &'a str },
    /// A step runs, and why its cache key missed.
    Miss {
        n: usize,
        name: &'a str,
        reason: &'a str,
    },
    /// A line the step's command wrote, `t` seconds after it started.
    Output {
        n: usize,
        name: &'a str,
        t: f64,
        line: &'a str,
    },
    /// A status line of a task (`naming to app:1`).
    Status {
        n: usize,
        name: &'a str,
        line: &'a str,
    },
    /// Vertex `n` finished.
    Done {
        n: usize,
        name: &'a str,
        elapsed: Duration,
    },
    /// Vertex `n` failed.
    Failed {
        n: usize,
        name: &'a str,
        message: &'a str,
    },
    /// A warning of the build (not of one step).
    Warning(&'a str),
    /// A message of the build (a summary).
    Info(&'a str),
    /// The build checks' summary, and each warning's one-line form.
    Checks {
        summary: &'a str,
        warnings: &'a [String],
    },
}

/// Draws [`Line`]s for one mode.
pub trait Render: Send + Sync {
    /// Shows one line. `since` is the time since the build started.
    fn show(&self, line: &Line<'_>, since: Duration);
    /// The build is over: `done` of `total` vertices finished.
    fn finish(&self, _done: usize, _total: usize, _elapsed: Duration) {}
    /// Writes data the command outputs (a pushed `NAME@DIGEST`, the ID of `-q`, `--check`'s report): on
    /// stdout, whatever the mode.
    fn data(&self, text: &str);
}

#[derive(Default)]
struct State {
    numbers: HashMap<NodeId, usize>,
    next: usize,
    node_started: HashMap<NodeId, Instant>,
    finished: usize,
}

/// Each node's name, and the nodes not shown (scratch).
type Names = (HashMap<NodeId, String>, HashSet<NodeId>);

/// The build's reporter: numbers vertices, and sends each line to the mode's renderer.
pub struct Progress {
    render: Box<dyn Render>,
    names: std::sync::RwLock<Option<Names>>,
    started: Instant,
    state: Mutex<State>,
    /// `rbuild bake`: the target this build is for (in every vertex name, as buildx shows it) and the
    /// vertex numbers shared by all targets' builds, so that each `#N` names one vertex.
    target: Option<(String, Arc<AtomicUsize>)>,
}

impl Progress {
    /// A build's progress, drawn by `render`.
    pub fn new(render: Box<dyn Render>) -> Self {
        Self {
            render,
            names: std::sync::RwLock::new(None),
            started: Instant::now(),
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
            target: None,
        }
    }

    /// Progress of one target of `rbuild bake`: names read `[api 2/3] RUN …`, numbers come from `numbers`.
    pub fn for_target(render: Box<dyn Render>, target: &str, numbers: Arc<AtomicUsize>) -> Self {
        let mut p = Self::new(render);
        p.target = Some((target.to_owned(), numbers));
        p
    }

    /// The next vertex number.
    fn number(&self, st: &mut State) -> usize {
        st.next += 1;
        match &self.target {
            Some((_, shared)) => shared.fetch_add(1, Ordering::SeqCst) + 1,
            None => st.next - 1,
        }
    }

    /// A vertex name with the bake target in it: `[build 2/4] RUN x` → `[api build 2/4] RUN x`.
    fn named(&self, name: String) -> String {
        match &self.target {
            Some((t, _)) => match name.strip_prefix('[') {
                Some(rest) => format!("[{t} {}", rest.trim_start()),
                None => format!("[{t}] {name}"),
            },
            None => name,
        }
    }

    /// Learns the names of the graph's steps (once, before solving).
    pub fn attach(&self, graph: &BuildGraph) {
        if self.names.read().expect("progress lock").is_none() {
            self.attach_as(graph, "");
        }
    }

    /// Learns the names of the graph that is solved next, shown after `prefix` (`[linux/arm64] `).
    pub fn attach_as(&self, graph: &BuildGraph, prefix: &str) {
        self.attach_all(&[(graph, prefix.to_owned())]);
    }

    /// Learns the names of graphs solved at the same time (a multi-platform build), each shown after its
    /// prefix; the events of graph `k` come through [`Progress::for_graph`]`(k)`.
    pub fn attach_all(&self, graphs: &[(&BuildGraph, String)]) {
        let mut names = HashMap::new();
        let mut hidden = HashSet::new();
        for (k, (graph, prefix)) in graphs.iter().enumerate() {
            for n in graph.nodes() {
                let id = shifted(n.id, k);
                names.insert(id, self.named(format!("{prefix}{}", n.name)));
                if matches!(n.op, Op::Scratch) {
                    hidden.insert(id);
                }
            }
        }
        *self.names.write().expect("progress lock") = Some((names, hidden));
        self.state.lock().expect("progress lock").numbers.clear();
    }

    fn show(&self, line: &Line<'_>) {
        self.render.show(line, self.started.elapsed());
    }

    /// A warning of the build.
    pub fn warning(&self, text: &str) {
        self.show(&Line::Warning(text));
    }

    /// The build checks' warnings, once at the end of the build: buildx's `N warnings found` summary
    /// (nothing in quiet mode; one `check` event per warning in JSON mode).
    pub fn check_warnings(&self, report: &frontend::checks::Report) {
        if !report.warnings.is_empty() {
            let shorts: Vec<String> = report.warnings.iter().map(|w| w.short()).collect();
            self.show(&Line::Checks {
                summary: &report.summary(),
                warnings: &shorts,
            });
        }
    }

    /// Data the command outputs (see [`Render::data`]).
    pub fn data(&self, text: &str) {
        self.render.data(text);
    }

    /// A message of the build (shown in every mode but quiet).
    pub fn info(&self, text: &str) {
        self.show(&Line::Info(text));
    }

    /// Starts a task of the build's own (`exporting to image`), shown as a vertex like a step.
    pub fn task(&self, name: impl Into<String>) -> Task<'_> {
        let name = self.named(name.into());
        let n = {
            let mut st = self.state.lock().expect("progress lock");
            self.number(&mut st)
        };
        self.show(&Line::Begin { n, name: &name });
        Task {
            progress: self,
            n,
            name,
            started: Instant::now(),
            ended: false,
        }
    }

    /// Ends the build's output (the tty summary line).
    pub fn finish(&self) {
        let st = self.state.lock().expect("progress lock");
        self.render
            .finish(st.finished, st.next - 1, self.started.elapsed());
    }
}

/// A task of the build, numbered like a step; ends as done when dropped unless it failed.
pub struct Task<'a> {
    progress: &'a Progress,
    n: usize,
    name: String,
    started: Instant,
    ended: bool,
}

impl Task<'_> {
    /// A status line of this task.
    pub fn status(&self, line: &str) {
        self.progress.show(&Line::Status {
            n: self.n,
            name: &self.name,
            line,
        });
    }

    /// Marks the task failed with `message`.
    pub fn fail(mut self, message: &str) {
        self.ended = true;
        self.progress.show(&Line::Failed {
            n: self.n,
            name: &self.name,
            message,
        });
    }
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.progress.state.lock().expect("progress lock").finished += 1;
            self.progress.show(&Line::Done {
                n: self.n,
                name: &self.name,
                elapsed: self.started.elapsed(),
            });
        }
    }
}

/// Node ids of graph `k` of [`Progress::attach_all`], apart from the other graphs'.
fn shifted(id: NodeId, k: usize) -> NodeId {
    NodeId(id.0 + (k << 32))
}

/// The reporter of graph `k` of a multi-platform build: its events under that graph's names.
pub struct GraphProgress<'a> {
    progress: &'a Progress,
    k: usize,
}

impl Progress {
    pub fn for_graph(&self, k: usize) -> GraphProgress<'_> {
        GraphProgress { progress: self, k }
    }
}

impl solver::Reporter for GraphProgress<'_> {
    fn event(&self, mut event: Event) {
        match &mut event {
            Event::Cached { node }
            | Event::Started { node, .. }
            | Event::Log { node, .. }
            | Event::Done { node, .. }
            | Event::Failed { node, .. } => *node = shifted(*node, self.k),
        }
        solver::Reporter::event(self.progress, event);
    }
}

impl solver::Reporter for Progress {
    fn event(&self, event: Event) {
        let node = match &event {
            Event::Cached { node }
            | Event::Started { node, .. }
            | Event::Log { node, .. }
            | Event::Done { node, .. }
            | Event::Failed { node, .. } => *node,
        };
        let guard = self.names.read().expect("progress lock");
        let Some((names, hidden)) = guard.as_ref() else {
            return;
        };
        if hidden.contains(&node) {
            return;
        }
        let name = names.get(&node).map_or("", String::as_str);
        let mut st = self.state.lock().expect("progress lock");
        let n = match st.numbers.get(&node) {
            Some(n) => *n,
            None => {
                let n = self.number(&mut st);
                st.numbers.insert(node, n);
                self.show(&Line::Begin { n, name });
                n
            }
        };
        // Lines of one vertex stay in order: they are shown under the lock.
        match event {
            Event::Cached { .. } => {
                st.finished += 1;
                self.show(&Line::Cached { n, name });
            }
            Event::Started { reason, .. } => {
                st.node_started.insert(node, Instant::now());
                self.show(&Line::Miss {
                    n,
                    name,
                    reason: &reason,
                });
            }
            Event::Log { line, .. } => {
                let t = st
                    .node_started
                    .get(&node)
                    .unwrap_or(&self.started)
                    .elapsed()
                    .as_secs_f64();
                self.show(&Line::Output {
                    n,
                    name,
                    t,
                    line: &line,
                });
            }
            Event::Done { elapsed, .. } => {
                st.finished += 1;
                self.show(&Line::Done { n, name, elapsed });
            }
            Event::Failed { message, .. } => self.show(&Line::Failed {
                n,
                name,
                message: &message,
            }),
        }
    }
}
