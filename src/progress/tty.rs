//! `--progress tty`: a live view redrawn in place, colored unless `NO_COLOR` is set, ending with a summary
//! line (`[+] Building 3.2s (7/7) FINISHED`).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use driver::progress::{Line, Render};

/// `text` in the SGR style `code`, or plain text without colors.
fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

impl Live {
    /// Starts the ticker that redraws the running steps ten times a second.
    pub(super) fn start() -> Self {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let shared = Arc::new((
            Mutex::new(LiveState {
                color,
                ..LiveState::default()
            }),
            Condvar::new(),
        ));
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
        Self {
            shared,
            ticker: Mutex::new(ticker),
            color,
        }
    }

    /// Stops the ticker and clears the live area (once).
    fn stop(&self) {
        let (lock, cv) = &*self.shared;
        {
            let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
            if st.done {
                return;
            }
            st.done = true;
            st.running.clear();
            st.redraw(&mut std::io::stderr().lock(), "");
        }
        cv.notify_all();
        if let Some(t) = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join(); // the ticker only draws; a panic there leaves nothing to clean up
        }
    }
}

impl Render for Live {
    fn show(&self, line: &Line<'_>, _: Duration) {
        let c = self.color;
        let (lock, _) = &*self.shared;
        let mut st = lock.lock().unwrap_or_else(|e| e.into_inner());
        let permanent = match *line {
            Line::Begin { .. } => return,
            Line::Cached { n, name } => format!("#{n} {name} {}\n", paint(c, "36", "CACHED")),
            Line::Miss { n, name, reason } => {
                st.running
                    .insert(n, (name.to_owned(), Instant::now(), VecDeque::new()));
                format!(
                    "#{n} {name}\n#{n} {}\n",
                    paint(c, "33", &format!("cache miss: {reason}"))
                )
            }
            Line::Output { n, line, .. } => {
                if let Some((_, _, tail)) = st.running.get_mut(&n) {
                    if tail.len() == LIVE_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.to_owned());
                }
                String::new()
            }
            Line::Status { n, name, line } => format!("#{n} {name}: {line}\n"),
            Line::Done { n, name, elapsed } => {
                st.running.remove(&n);
                format!(
                    "#{n} {name} {}\n",
                    paint(c, "32", &format!("DONE {:.1}s", elapsed.as_secs_f64()))
                )
            }
            Line::Failed { n, name, message } => {
                let tail = st
                    .running
                    .remove(&n)
                    .map(|(_, _, t)| {
                        t.into_iter()
                            .map(|l| format!("#{n} {l}\n"))
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                format!(
                    "{tail}#{n} {name} {}\n",
                    paint(c, "31", &format!("ERROR: {message}"))
                )
            }
            Line::Warning(text) => format!("{}\n", paint(c, "33", &format!("warning: {text}"))),
            Line::Info(text) => format!("{text}\n"),
            Line::Checks { summary, .. } => paint(c, "33", summary),
        };
        st.redraw(&mut std::io::stderr().lock(), &permanent);
    }

    fn finish(&self, done: usize, total: usize, elapsed: Duration) {
        self.stop();
        let summary = format!(
            "[+] Building {:.1}s ({done}/{total}) FINISHED",
            elapsed.as_secs_f64()
        );
        super::plain::write(&format!("{}\n", paint(self.color, "34", &summary)));
    }

    fn data(&self, text: &str) {
        super::plain::data(text);
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many output lines of each running step the live view shows.
const LIVE_LINES: usize = 3;

/// The live renderer: running steps with timers and their last output lines, redrawn in place by a
/// ticker thread; finished lines scroll above them.
pub(super) struct Live {
    shared: Arc<(Mutex<LiveState>, Condvar)>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Colors, unless `NO_COLOR` is set (https://no-color.org).
    color: bool,
}

#[derive(Default)]
struct LiveState {
    /// Colors on: the style escapes are written (cursor movement is, always).
    color: bool,
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
                "{} {timer}\n",
                paint(
                    self.color,
                    "1",
                    &truncate(&head, width.saturating_sub(timer.len() + 1))
                )
            ));
            lines += 1;
            for l in tail {
                buf.push_str(&format!(
                    "{}\n",
                    paint(
                        self.color,
                        "2",
                        &format!("  {}", truncate(l, width.saturating_sub(2)))
                    )
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
        assert!(!st.color);
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
        assert!(
            !text.contains("\x1b[1m"),
            "no color without color: {text:?}"
        );
        assert!(text.contains("cc a.c"), "{text:?}");
        assert_eq!(st.drawn, 2);
        let mut out = Vec::new();
        st.running.clear();
        st.redraw(&mut out, "");
        assert_eq!(String::from_utf8(out).unwrap(), "\x1b[2F\x1b[J");
        assert_eq!(st.drawn, 0);
    }
}
