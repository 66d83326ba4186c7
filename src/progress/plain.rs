//! BuildKit's plain progress: `#3 [2/4] RUN make`, `#3 CACHED`, `#3 DONE 0.4s`, plus `#3 cache miss: …`.

use std::io::Write as _;
use std::time::Duration;

use driver::progress::{Line, Render};

/// Writes `text` to stderr; a closed stderr loses progress and the build goes on.
pub(super) fn write(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Writes data on stdout (every renderer's [`Render::data`]).
pub(super) fn data(text: &str) {
    print!("{text}");
}

/// The plain renderer.
pub(super) struct Plain;

impl Render for Plain {
    fn show(&self, line: &Line<'_>, _: Duration) {
        write(&match *line {
            Line::Begin { n, name } => format!("#{n} {name}\n"),
            Line::Cached { n, .. } => format!("#{n} CACHED\n"),
            Line::Miss { n, reason, .. } => format!("#{n} cache miss: {reason}\n"),
            Line::Output { n, t, line, .. } => format!("#{n} {t:.3} {line}\n"),
            Line::Status { n, line, .. } => format!("#{n} {line}\n"),
            Line::Done { n, elapsed, .. } => format!("#{n} DONE {:.1}s\n", elapsed.as_secs_f64()),
            Line::Failed { n, message, .. } => format!("#{n} ERROR: {message}\n"),
            Line::Warning(text) => format!("warning: {text}\n"),
            Line::Info(text) => format!("{text}\n"),
            Line::Checks { summary, .. } => summary.to_owned(),
        });
    }
    fn data(&self, text: &str) {
        data(text);
    }
}
