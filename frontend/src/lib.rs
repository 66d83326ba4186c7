//! Dockerfile frontend: text → AST ([`parse`]) → build graph and image configs ([`lower`]).
//!
//! The frontend ports BuildKit's *behaviour* (its parser, shell expansion, instruction semantics and
//! node names), checked against BuildKit's own conformance data in `tests/fixtures/buildkit/`. It never
//! touches the network, the cache or a container, and it is synchronous: base-image configs come in
//! through the [`BaseImages`] trait, which the binary implements.
//!
//! Main types: [`Dockerfile`] (the AST, with a [`Span`] on every instruction), [`Lowered`] (the
//! [`graph::BuildGraph`] plus one [`Stage`] per lowered stage), [`Diagnostic`] (errors and warnings with
//! their location), [`DockerIgnore`] (the `.dockerignore` matcher) and [`checks`] (BuildKit's build
//! checks, and the `--call outline` / `--call targets` descriptions).
//!
//! ```
//! use frontend::{lower, parse, BaseImages, LowerOptions};
//!
//! struct NoBases;
//! impl BaseImages for NoBases {
//!     fn config(&mut self, reference: &str) -> Result<oci::ImageConfig, frontend::BoxError> {
//!         Err(format!("no registry in this example ({reference})").into())
//!     }
//! }
//!
//! let df = parse("FROM scratch\nCOPY app /app\nCMD [\"/app\"]\n").unwrap();
//! let lowered = lower(&df, &LowerOptions::default(), &mut NoBases).unwrap();
//! let stage = &lowered.stages[lowered.target];
//! assert_eq!(stage.config.config.cmd.as_deref(), Some(&["/app".to_owned()][..]));
//! assert_eq!(lowered.graph.node(stage.head).name.to_string(), "[2/3] COPY app /app");
//! ```
#![forbid(unsafe_code)]

pub mod checks;
mod dockerignore;
mod instructions;
mod lower;
mod parser;
pub mod shell;

pub use dockerignore::DockerIgnore;
pub use graph::Span;
pub use lower::{lower, Base, BaseImages, BoxError, LowerOptions, Lowered, Stage};
pub use parser::{parse, Directives, Dockerfile, Heredoc, Instruction};

/// One error or warning with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// The instruction (or line) it is about.
    pub span: Span,
    /// How to fix it, when we know.
    pub help: Option<String>,
}

impl Diagnostic {
    pub(crate) fn new(message: impl Into<String>, span: Span) -> Self {
        Self {
            message: message.into(),
            span,
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.span.line, self.span.column, self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}
