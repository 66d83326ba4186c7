//! What a scanner of single files (Go build info, cargo-auditable sections) finds in one file.

use super::Package;

/// Packages found in one file, and which of them the file is (a main module, a root crate).
pub(crate) struct Evidence {
    /// In the order the build information lists them.
    pub(crate) packages: Vec<Package>,
    /// Index into `packages` of the package the file is, when there is one.
    pub(crate) owner: Option<usize>,
    /// (dependent, dependency) indices into `packages`.
    pub(crate) dependencies: Vec<(usize, usize)>,
}
