//! How a build's progress is drawn: the `driver` crate's [`Progress`] numbers vertices and sends each
//! change as a [`Line`]; one renderer per mode draws them: [`plain`] (BuildKit's `#3 [2/4] RUN make`
//! lines plus the reason of every cache miss), [`tty`] (a live view redrawn in place, ending with a
//! summary line), [`json`] (one JSON object per line, nothing else on stderr) and quiet (failures only).

mod json;
mod plain;
mod tty;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use driver::progress::{Line, Progress, Render};

/// How a build reports progress (`--progress`, `-q`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// BuildKit-style lines.
    Plain,
    /// Failures only (`-q`).
    Quiet,
    /// Live view redrawn in place.
    Tty,
    /// One JSON object per line.
    Json,
}

impl Mode {
    /// `auto` is tty when stderr is a terminal (and TERM is not `dumb`), else plain.
    pub(crate) fn auto() -> Self {
        use std::io::IsTerminal;
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        if std::io::stderr().is_terminal() && !dumb {
            Mode::Tty
        } else {
            Mode::Plain
        }
    }

    fn render(self) -> Box<dyn Render> {
        match self {
            Mode::Plain => Box::new(plain::Plain),
            Mode::Quiet => Box::new(Quiet),
            Mode::Tty => Box::new(tty::Live::start()),
            Mode::Json => Box::new(json::Json),
        }
    }
}

/// A build's progress drawn in `mode`.
pub(crate) fn new(mode: Mode) -> Progress {
    Progress::new(mode.render())
}

/// Progress of one target of `rbuild bake`: names read `[api 2/3] RUN …`, numbers come from `numbers`.
pub(crate) fn for_target(mode: Mode, target: &str, numbers: Arc<AtomicUsize>) -> Progress {
    Progress::for_target(mode.render(), target, numbers)
}

/// Renders nothing but failures and warnings (`-q`).
struct Quiet;

impl Render for Quiet {
    fn show(&self, line: &Line<'_>, _: Duration) {
        match line {
            Line::Failed { n, name, message } => {
                plain::write(&format!("#{n} {name} ERROR: {message}\n"));
            }
            Line::Warning(text) => plain::write(&format!("warning: {text}\n")),
            _ => {}
        }
    }
    fn data(&self, text: &str) {
        plain::data(text);
    }
}
