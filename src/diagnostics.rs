//! Errors that point at the Dockerfile (the `driver` crate's [`driver::SourceError`]), rendered with miette.

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

/// A [`driver::SourceError`] as miette draws it: the Dockerfile's lines with the span underlined.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Located {
    message: String,
    src: NamedSource<String>,
    span: SourceSpan,
    label: String,
    help: Option<String>,
    related: Vec<Located>,
}

impl From<driver::SourceError> for Located {
    fn from(e: driver::SourceError) -> Self {
        Located {
            message: e.message,
            src: NamedSource::new(e.file, e.text),
            span: SourceSpan::new(e.span.0.into(), e.span.1),
            label: e.label,
            help: e.help,
            related: e.related.into_iter().map(Located::from).collect(),
        }
    }
}

impl Diagnostic for Located {
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

/// The error drawn under its Dockerfile line, as the user reads it.
pub(crate) fn draw(e: driver::SourceError) -> String {
    format!("{:?}", miette::Report::new(Located::from(e)))
}
