//! Renders solver events: BuildKit-style plain lines (`#3 [2/4] RUN make`, `#3 CACHED`, `#3 DONE 0.4s`),
//! plus the reason of every cache miss, which no peer prints; a live terminal view (`--progress tty`) with
//! timers and the last output lines of running steps; and one JSON object per event (`--progress rawjson`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use graph::{BuildGraph, NodeId, Op};
use solver::Event;

/// How much to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verbosity {
    /// Every event.
    Plain,
    /// Nothing but errors (`-q`).
    Quiet,
    /// Live view redrawn in place: running steps with timers and their last output lines.
    Tty,
    /// One JSON object per event line.
    Json,
}

impl Verbosity {
    /// `auto` is tty when stderr is a terminal (and TERM is not `dumb`), else plain.
    pub(crate) fn auto() -> Self {
        use std::io::IsTerminal;
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if std::io::stderr().is_terminal() && !dumb {
            Verbosity::Tty
        } else {
            Verbosity::Plain
        }
    }
}

pub(crate) struct PlainReporter {
    names: HashMap<NodeId, String>,
    hidden: Vec<NodeId>,
    verbosity: Verbosity,
    started: Instant,
    state: Mutex<State>,
    /// The live view's state and redraw thread (tty mode only).
    live: Option<Live>,
}

/// How many output lines of each running step the live view shows.
const LIVE_LINES: usize = 3;

struct Live {
    shared: Arc<(Mutex<LiveState>, Condvar)>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct LiveState {
    /// Running steps by number: name, start, last lines.
    running: BTreeMap<usize, (String, Instant, VecDeque<String>)>,
    /// Lines of the live area currently on screen (erased before the next draw).
    drawn: usize,
    done: bool,
}

impl LiveState {
    /// Erases the live area, writes `permanent`, then draws the running steps again.
    fn redraw(&mut self, out: &mut impl Write, permanent: &str) {
        let width = terminal_width();
        let mut buf = String::new();
        if self.drawn > 0 {
            buf.push_str(&format!("\x1b[{}F\x1b[J", self.drawn));
        }
        buf.push_str(permanent);
        let mut lines = 0;
        for (n, (name, start, tail)) in &self.running {
            let head = format!("#{n} {name}");
            let timer = format!("{:.1}s", start.elapsed().as_secs_f64());
            buf.push_str(&format!(
                "\x1b[1m{}\x1b[0m {timer}\n",
                truncate(&head, width.saturating_sub(timer.len() + 1))
            ));
            lines += 1;
            for l in tail {
                buf.push_str(&format!(
                    "\x1b[2m  {}\x1b[0m\n",
                    truncate(l, width.saturating_sub(2))
                ));
                lines += 1;
            }
        }
        self.drawn = lines;
        let _ = out.write_all(buf.as_bytes()); // stderr gone: nothing to do
        let _ = out.flush();
    }
}

fn terminal_width() -> usize {
    // COLUMNS when the shell exports it; asking the tty needs an ioctl (unsafe, or a rustix feature).
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w: &usize| *w >= 20)
        .unwrap_or(100)
}

/// Cuts `s` to `width` characters (no escape sequences or newlines inside).
fn truncate(s: &str, width: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= width {
        clean
    } else {
        let mut t: String = clean.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn json_line(fields: &serde_json::Value) -> String {
    let mut s = fields.to_string();
    s.push('\n');
    s
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
        let live = (verbosity == Verbosity::Tty).then(|| {
            let shared = Arc::new((Mutex::new(LiveState::default()), Condvar::new()));
            let ticker = {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name("progress".into())
                    .spawn(move || {
                        let (lock, cv) = &*shared;
                        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                        while !st.done {
                            if !st.running.is_empty() {
                                st.redraw(&mut std::io::stderr().lock(), "");
                            }
                            st = cv
                                .wait_timeout(st, Duration::from_millis(100))
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                    })
                    .ok()
            };
            Live { shared, ticker }
        });
        Self {
            names,
            hidden,
            verbosity,
            started: Instant::now(),
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
            live,
        }
    }

    fn name(&self, node: NodeId) -> &str {
        self.names.get(&node).map_or("", String::as_str)
    }

    /// Live view: the running set changes and finished lines scroll above it.
    fn live_event(&self, live: &Live, n: usize, node: NodeId, event: Event) {
        let (lock, _) = &*live.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        let name = self.name(node).to_owned();
        let permanent = match event {
            Event::Cached { .. } => format!("#{n} {name} \x1b[36mCACHED\x1b[0m\n"),
            Event::Started { reason, .. } => {
                st.running
                    .insert(n, (name.clone(), Instant::now(), VecDeque::new()));
                format!("#{n} {name}\n#{n} \x1b[33mcache miss: {reason}\x1b[0m\n")
            }
            Event::Log { line, .. } => {
                if let Some((_, _, tail)) = st.running.get_mut(&n) {
                    if tail.len() == LIVE_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
                String::new()
            }
            Event::Done { elapsed, .. } => {
                st.running.remove(&n);
                format!(
                    "#{n} {name} \x1b[32mDONE {:.1}s\x1b[0m\n",
                    elapsed.as_secs_f64()
                )
            }
            Event::Failed { message, .. } => {
                let tail = st
                    .running
                    .remove(&n)
                    .map(|(_, _, t)| {
                        t.into_iter()
                            .map(|l| format!("#{n} {l}\n"))
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                format!("{tail}#{n} {name} \x1b[31mERROR: {message}\x1b[0m\n")
            }
        };
        st.redraw(&mut std::io::stderr().lock(), &permanent);
    }

    fn json_event(&self, n: usize, node: NodeId, event: Event) {
        let t = self.started.elapsed().as_secs_f64();
        let name = self.name(node);
        let v = match event {
            Event::Cached { .. } => {
                serde_json::json!({"time": t, "step": n, "name": name, "event": "cached"})
            }
            Event::Started { reason, .. } => {
                serde_json::json!({"time": t, "step": n, "name": name, "event": "started", "reason": reason})
            }
            Event::Log { line, .. } => {
                serde_json::json!({"time": t, "step": n, "name": name, "event": "log", "line": line})
            }
            Event::Done { elapsed, .. } => serde_json::json!({
                "time": t, "step": n, "name": name, "event": "done", "elapsed": elapsed.as_secs_f64()
            }),
            Event::Failed { message, .. } => {
                serde_json::json!({"time": t, "step": n, "name": name, "event": "failed", "message": message})
            }
        };
        let _ = std::io::stderr().lock().write_all(json_line(&v).as_bytes()); // stderr gone: nothing to do
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
        if self.verbosity != Verbosity::Plain {
            let n = {
                let mut st = self.state.lock().expect("progress lock");
                if let Some(n) = st.numbers.get(&node) {
                    *n
                } else {
                    let n = st.next;
                    st.next += 1;
                    st.numbers.insert(node, n);
                    n
                }
            };
            match (&self.live, self.verbosity) {
                (Some(live), _) => self.live_event(live, n, node, event),
                (None, Verbosity::Json) => self.json_event(n, node, event),
                // Quiet: only failures get here; print them as plain lines.
                _ => {
                    if let Event::Failed { message, .. } = event {
                        let _ = writeln!(
                            std::io::stderr(),
                            "#{n} {} ERROR: {message}",
                            self.name(node)
                        );
                    }
                }
            }
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

impl Drop for PlainReporter {
    fn drop(&mut self) {
        if let Some(live) = &mut self.live {
            let (lock, cv) = &*live.shared;
            {
                let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
                st.done = true;
                st.running.clear();
                st.redraw(&mut std::io::stderr().lock(), "");
            }
            cv.notify_all();
            if let Some(t) = live.ticker.take() {
                let _ = t.join(); // the ticker only draws; a panic there leaves nothing to clean up
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_short_lines_and_cuts_long_ones() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdefghij", 5), "abcd…");
        assert_eq!(truncate("a\tb", 10), "a b");
    }

    #[test]
    fn live_state_erases_what_it_drew() {
        let mut st = LiveState::default();
        st.running.insert(
            3,
            (
                "[2/3] RUN make".into(),
                Instant::now(),
                VecDeque::from(vec!["cc a.c".to_owned()]),
            ),
        );
        let mut out = Vec::new();
        st.redraw(&mut out, "#1 CACHED\n");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("#1 CACHED\n"), "{text:?}");
        assert!(text.contains("#3 [2/3] RUN make"), "{text:?}");
        assert!(text.contains("cc a.c"), "{text:?}");
        assert_eq!(st.drawn, 2);
        let mut out = Vec::new();
        st.running.clear();
        st.redraw(&mut out, "");
        assert_eq!(String::from_utf8(out).unwrap(), "\x1b[2F\x1b[J");
        assert_eq!(st.drawn, 0);
    }
}
