//! One module per subcommand: each wires the crates together for its command and prints its result.

pub(crate) mod attest;
pub(crate) mod bake;
pub(crate) mod binfmt;
pub(crate) mod build;
pub(crate) mod image;
pub(crate) mod imagetools;
pub(crate) mod info;
pub(crate) mod login;
pub(crate) mod prune;
pub(crate) mod pull;
pub(crate) mod run;
