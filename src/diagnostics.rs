//! Errors that point at the Dockerfile: frontend diagnostics and failing steps, rendered with miette.

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

/// One error located in a Dockerfile, with the others found in the same pass attached.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SourceError {
    message: String,
    src: NamedSource<String>,
    span: SourceSpan,
    label: String,
    help: Option<String>,
    related: Vec<SourceError>,
}

impl Diagnostic for SourceError {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.label.clone()),
            self.span,
        ))))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(self.related.iter().map(|e| e as &dyn Diagnostic)))
        }
    }
}

fn span_of(src: &str, span: graph::Span) -> SourceSpan {
    let start = span.start.min(src.len());
    // Point at the instruction's first line only: a multi-line RUN would otherwise fill the screen.
    let end = span.end.clamp(start, src.len());
    let line_end = src[start..end].find('\n').map_or(end, |i| start + i);
    SourceSpan::new(start.into(), line_end - start)
}

/// Builds one report from frontend diagnostics (the first is the headline, the rest are related).
pub(crate) fn from_frontend(file: &str, src: &str, diags: &[frontend::Diagnostic]) -> SourceError {
    let mut errs: Vec<SourceError> = diags
        .iter()
        .map(|d| SourceError {
            message: format!("{file}:{}:{}: {}", d.span.line, d.span.column, d.message),
            src: NamedSource::new(file, src.to_owned()),
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

/// A failing step, pointing at its instruction.
impl SourceError {
    /// The same error with `prefix` before its message (the platform of a multi-platform build).
    pub(crate) fn prefixed(mut self, prefix: &str) -> Self {
        self.message = format!("{prefix}{}", self.message);
        self
    }
}

pub(crate) fn step_failed(
    file: &str,
    src: &str,
    span: graph::Span,
    message: String,
) -> SourceError {
    SourceError {
        message: format!("{file}:{}: {message}", span.line),
        src: NamedSource::new(file, src.to_owned()),
        span: span_of(src, span),
        label: "this step failed".to_owned(),
        help: None,
        related: Vec::new(),
    }
}
