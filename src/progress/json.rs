//! `--progress rawjson`: one JSON object per line, and nothing else on stderr while the build runs.

use std::time::Duration;

use serde_json::json;

use driver::progress::{Line, Render};

/// The JSON-lines renderer.
pub(super) struct Json;

impl Render for Json {
    fn show(&self, line: &Line<'_>, since: Duration) {
        let time = since.as_secs_f64();
        let v = match *line {
            Line::Begin { n, name } => {
                json!({"time": time, "step": n, "name": name, "event": "begin"})
            }
            Line::Cached { n, name } => {
                json!({"time": time, "step": n, "name": name, "event": "cached"})
            }
            Line::Miss { n, name, reason } => {
                json!({"time": time, "step": n, "name": name, "event": "started", "reason": reason})
            }
            Line::Output { n, name, line, .. } => {
                json!({"time": time, "step": n, "name": name, "event": "log", "line": line})
            }
            Line::Status { n, name, line } => {
                json!({"time": time, "step": n, "name": name, "event": "status", "line": line})
            }
            Line::Done { n, name, elapsed } => json!({
                "time": time, "step": n, "name": name, "event": "done", "elapsed": elapsed.as_secs_f64()
            }),
            Line::Failed { n, name, message } => {
                json!({"time": time, "step": n, "name": name, "event": "failed", "message": message})
            }
            Line::Warning(text) => json!({"time": time, "event": "warning", "message": text}),
            Line::Info(text) => json!({"time": time, "event": "info", "message": text}),
            Line::Checks { warnings, .. } => {
                for w in warnings {
                    let v = json!({"time": time, "event": "check", "message": w});
                    super::plain::write(&format!("{v}\n"));
                }
                return;
            }
        };
        super::plain::write(&format!("{v}\n"));
    }
    fn data(&self, text: &str) {
        super::plain::data(text);
    }
}
