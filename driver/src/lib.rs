//! The build pipeline: a [`BuildRequest`] (the flags of `rbuild build`, as plain values) becomes a
//! build — Dockerfile read from its context, lowered per platform, caches imported, solved, image
//! assembled and attested, written to its outputs, pushed, cache exported — each step telling the user
//! what it does through [`Progress`]; [`bake::run`] builds several targets at once.
//!
//! It wires the other crates together and decides nothing they own. It does not parse command lines (the
//! binary turns clap's flags into a [`BuildRequest`]) or draw anything: a [`progress::Render`] draws the
//! progress [`progress::Line`]s and writes the command's data (pushed digests, `-q`'s ID) on stdout, and
//! errors located in the Dockerfile are [`SourceError`]s the binary renders. Errors are `anyhow`, as in
//! `exec` and `export` whose errors it passes on with their context; a build that should end with a
//! given exit status and nothing more to print fails with [`Status`].
//!
//! ```no_run
//! # fn f(store: std::sync::Arc<cache::Store>, rt: &tokio::runtime::Runtime,
//! #      render: Box<dyn driver::progress::Render>) -> anyhow::Result<()> {
//! let req = driver::BuildRequest {
//!     context: ".".into(),
//!     tags: vec!["app:1".into()],
//!     ..Default::default()
//! };
//! let id = driver::build(&req, store, rt, driver::Progress::new(render))?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod attest;
pub mod bake;
mod build;
pub mod diagnostics;
mod multiplatform;
mod pipeline;
pub mod progress;
mod request;
mod specs;

pub use build::build;
pub use diagnostics::SourceError;
pub use pipeline::Status;
pub use progress::Progress;
pub use request::{AttestFlags, BuildRequest, Network};
