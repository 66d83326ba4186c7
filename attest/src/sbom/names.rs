//! The file names and sizes the scanners look at, shared by the tree's listing and the scanners.

/// File names whose paths [`super::Tree::candidates`] lists (the files the npm and Python scanners read; Java
/// archives are listed by their suffix, executables by their mode and size).
pub(crate) const CANDIDATE_NAMES: &[&str] =
    &["package.json", "package-lock.json", "METADATA", "PKG-INFO"];

/// Whether `name` is one of the package metadata file names the scanners read.
pub(crate) fn is_metadata_name(name: &str) -> bool {
    CANDIDATE_NAMES.contains(&name)
}

/// Executables bigger than this are not listed as candidates (the Go scanner reads them whole).
pub(crate) const MAX_EXECUTABLE: u64 = 256 << 20;
