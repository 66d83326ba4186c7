//! Errors that point at the Dockerfile: frontend diagnostics and failing steps, as [`SourceError`]s the
//! binary renders (with miette) under the line they name.

/// One error located in a Dockerfile, with the others found in the same pass attached.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// The headline (`Dockerfile:3:1: …`).
    pub message: String,
    /// The Dockerfile's label (its path, or `-` for stdin).
    pub file: String,
    /// The Dockerfile's text.
    pub text: String,
    /// What is pointed at: byte offset and length in `text` (the instruction's first line only).
    pub span: (usize, usize),
    /// The label under the span (`here`, `this step failed`).
    pub label: String,
    /// A hint after the error.
    pub help: Option<String>,
    /// The other errors found in the same pass.
    pub related: Vec<SourceError>,
}

fn span_of(src: &str, span: graph::Span) -> (usize, usize) {
    let start = span.start.min(src.len());
    // Point at the instruction's first line only: a multi-line RUN would otherwise fill the screen.
    let end = span.end.clamp(start, src.len());
    let line_end = src[start..end].find('\n').map_or(end, |i| start + i);
    (start, line_end - start)
}

/// Builds one report from frontend diagnostics (the first is the headline, the rest are related).
pub fn from_frontend(file: &str, src: &str, diags: &[frontend::Diagnostic]) -> SourceError {
    let mut errs: Vec<SourceError> = diags
        .iter()
        .map(|d| SourceError {
            message: format!("{file}:{}:{}: {}", d.span.line, d.span.column, d.message),
            file: file.to_owned(),
            text: src.to_owned(),
            span: span_of(src, d.span),
            label: "here".to_owned(),
            help: d.help.clone(),
            related: Vec::new(),
        })
        .collect();
    let mut first = errs.remove(0);
    first.related = errs;
    first
}

impl SourceError {
    /// The same error with `prefix` before its message (the platform of a multi-platform build).
    #[must_use]
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}{}", self.message);
        self
    }
}

/// A failing step, pointing at its instruction.
pub fn step_failed(file: &str, src: &str, span: graph::Span, message: String) -> SourceError {
    SourceError {
        message: format!("{file}:{}: {message}", span.line),
        file: file.to_owned(),
        text: src.to_owned(),
        span: span_of(src, span),
        label: "this step failed".to_owned(),
        help: None,
        related: Vec::new(),
    }
}
