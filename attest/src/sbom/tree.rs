//! The image file tree the scanners read: stacked snapshot directories seen through `oci::MergedView`.

use super::names::{is_metadata_name, MAX_EXECUTABLE};
use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

/// Directories never walked for candidates: kernel file systems, and the large data trees of a
/// distribution where no npm or Python package metadata lives (documentation, locales, headers, package
/// manager state). Paths relative to the root, without a leading `/`.
const SKIP: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "boot",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/i18n",
    "usr/share/zoneinfo",
    "usr/share/icons",
    "usr/share/fonts",
    "usr/share/terminfo",
    "usr/share/mime",
    "usr/share/common-licenses",
    "usr/share/perl",
    "usr/share/perl5",
    "usr/lib/locale",
    "usr/include",
    "usr/src",
    "var/lib/dpkg",
    "var/lib/apt",
    "var/cache",
    "var/log",
];

/// A file of the tree opened for reading and seeking (section lookups read a few ranges, not the file).
pub trait ReadSeek: io::Read + io::Seek {}

impl<T: io::Read + io::Seek> ReadSeek for T {}

/// A read-only image file tree.
pub trait Tree: Sync {
    /// The contents of a regular file (symlinks followed inside the tree), `None` when the path is
    /// missing, whited out or not a regular file.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, crate::Error>;
    /// A regular file opened for reading, like [`Tree::read`] otherwise (the default reads it whole).
    fn open(&self, path: &str) -> Result<Option<Box<dyn ReadSeek + '_>>, crate::Error> {
        Ok(self
            .read(path)?
            .map(|b| Box::new(io::Cursor::new(b)) as Box<dyn ReadSeek>))
    }
    /// Absolute paths of the files named like [`super::names::CANDIDATE_NAMES`], of Java archives and of executables
    /// (any exec bit, at most [`MAX_EXECUTABLE`] bytes) that exist in the tree, sorted. A tree may leave
    /// out the executables that are not ELF files with Go build info or a cargo-auditable section.
    fn candidates(&self) -> Vec<String>;
}

/// An image tree made of snapshot directories (base first), as the store keeps them.
pub struct LayerTree<'c> {
    view: oci::MergedView,
    layers: Vec<PathBuf>,
    listings: Option<&'c cache::Store>,
}

impl LayerTree<'static> {
    /// A tree of these snapshot directories, base first; a single plain directory works too.
    pub fn new(layers: Vec<PathBuf>) -> Self {
        Self {
            view: oci::MergedView::new(layers.clone()),
            layers,
            listings: None,
        }
    }
}

impl<'c> LayerTree<'c> {
    /// Remembers each layer's candidate files in `store` (keyed by the snapshot directory, which
    /// the store never changes), so the next scan of an image on the same base walks only its own
    /// new layers.
    pub fn with_listings<'d>(self, store: Option<&'d cache::Store>) -> LayerTree<'d> {
        LayerTree {
            view: self.view,
            layers: self.layers,
            listings: store,
        }
    }

    /// One layer's candidate files, from the listing cache when it has them.
    fn layer_candidates(&self, layer: &std::path::Path) -> Vec<String> {
        let Some(store) = self.listings else {
            return candidate_files(layer);
        };
        let key = format!("sbom-candidates-v2:{}", layer.display());
        if let Ok(Some(v)) = store.cache_get(&key) {
            if let Ok(text) = String::from_utf8(v) {
                return text.lines().map(str::to_owned).collect();
            }
        }
        let found = candidate_files(layer);
        if let Err(e) = store.cache_put(&key, found.join("\n").as_bytes()) {
            tracing::debug!(error = %e, "SBOM candidate listing not remembered");
        }
        found
    }
}

impl LayerTree<'_> {
    /// The host path of `path` when it is a regular file of the image (symlinks followed inside the
    /// merged root only, so a link never reads a host file); `None` when it is absent or not a file.
    fn regular_file(&self, path: &str) -> Result<Option<PathBuf>, crate::Error> {
        let err = |source| crate::Error::Read {
            path: path.to_owned(),
            source,
        };
        let Some(r) = self.view.resolve(path, true).map_err(err)? else {
            return Ok(None);
        };
        if r.is_dir {
            return Ok(None);
        }
        match fs_err::symlink_metadata(&r.host_path) {
            Ok(m) if m.is_file() => Ok(Some(r.host_path)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e)),
        }
    }
}

impl Tree for LayerTree<'_> {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, crate::Error> {
        let Some(host) = self.regular_file(path)? else {
            return Ok(None);
        };
        match fs_err::read(&host) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(crate::Error::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn open(&self, path: &str) -> Result<Option<Box<dyn ReadSeek + '_>>, crate::Error> {
        let Some(host) = self.regular_file(path)? else {
            return Ok(None);
        };
        match fs_err::File::open(&host) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(crate::Error::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn candidates(&self) -> Vec<String> {
        // Each layer directory is walked natively (readdir with file types, like `find`); only the few
        // candidate paths then go through the merged view, which drops whited-out ones.
        // Layers are walked in parallel: a node image spreads its files over several.
        use rayon::prelude::*;
        let found: Vec<Vec<String>> = self
            .layers
            .par_iter()
            .map(|l| self.layer_candidates(l))
            .collect();
        let paths: BTreeSet<String> = found.into_iter().flatten().collect();
        paths
            .into_iter()
            .filter(|p| matches!(self.view.resolve(p, false), Ok(Some(r)) if !r.is_dir))
            .collect()
    }
}

/// Paths (absolute inside the image) of regular files with a candidate name under one layer directory.
fn candidate_files(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut executables = Vec::new();
    // `rel` is the path inside the image without the leading `/`.
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            if ft.is_dir() {
                if !SKIP.contains(&path.as_str()) {
                    stack.push((e.path(), path));
                }
            } else if ft.is_file() && (is_metadata_name(name) || super::java::is_archive(name)) {
                out.push(format!("/{path}"));
            } else if ft.is_file() && is_small_executable(&e) {
                executables.push((e.path(), path));
            }
        }
    }
    // Of the executables, only those that carry Go build info or a cargo-auditable section are
    // candidates: decided here, once per layer (the listing is remembered), not at every scan.
    use rayon::prelude::*;
    out.par_extend(
        executables
            .into_par_iter()
            .filter(|(host, _)| super::executables::has_build_info(host))
            .map(|(_, path)| format!("/{path}")),
    );
    out
}

/// Whether a directory entry (a regular file) has an exec bit and is at most [`MAX_EXECUTABLE`] bytes.
fn is_small_executable(e: &fs_err::DirEntry) -> bool {
    use std::os::unix::fs::PermissionsExt;
    e.metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o111 != 0 && m.len() <= MAX_EXECUTABLE)
}

/// `ID` and `VERSION_ID` of `/etc/os-release` (or `/usr/lib/os-release`), for package URLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OsRelease {
    pub(crate) id: Option<String>,
    pub(crate) version_id: Option<String>,
}

pub(crate) fn os_release(tree: &dyn Tree) -> Result<OsRelease, crate::Error> {
    let text = match tree.read("/etc/os-release")? {
        Some(t) => t,
        None => tree.read("/usr/lib/os-release")?.unwrap_or_default(),
    };
    let text = String::from_utf8_lossy(&text);
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
        match k.trim() {
            "ID" => os.id = Some(v),
            "VERSION_ID" => os.version_id = Some(v),
            _ => {}
        }
    }
    Ok(os)
}

/// An in-memory tree of whole files (path, bytes), every file a candidate: for the scanners' tests.
#[cfg(test)]
pub(crate) struct Files(pub(crate) Vec<(&'static str, Vec<u8>)>);

#[cfg(test)]
impl Tree for Files {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, crate::Error> {
        Ok(self
            .0
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, b)| b.clone()))
    }
    fn candidates(&self) -> Vec<String> {
        self.0.iter().map(|(p, _)| (*p).to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_respect_whiteouts_and_reads_stay_inside() {
        let base = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let b = base.path();
        fs_err::create_dir_all(b.join("app/node_modules/a")).unwrap();
        fs_err::create_dir_all(b.join("app/node_modules/gone")).unwrap();
        fs_err::create_dir_all(b.join("proc")).unwrap();
        fs_err::write(b.join("app/node_modules/a/package.json"), "{}").unwrap();
        fs_err::write(b.join("app/node_modules/gone/package.json"), "{}").unwrap();
        fs_err::write(b.join("proc/package.json"), "{}").unwrap();
        // Executables with Go build info (or a cargo-auditable section) are candidates; other
        // executables (a script) and other files are not.
        use std::os::unix::fs::PermissionsExt;
        fs_err::create_dir_all(b.join("app/bin")).unwrap();
        let go = super::super::executables::test_elf(".text", b"", true);
        for (name, bytes) in [
            ("tool", go.as_slice()),
            ("script", b"#!/bin/sh\n".as_slice()),
        ] {
            fs_err::write(b.join("app/bin").join(name), bytes).unwrap();
            fs_err::set_permissions(
                b.join("app/bin").join(name),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        fs_err::write(b.join("app/bin/data"), "x").unwrap();
        fs_err::create_dir_all(b.join("usr/share/doc/x")).unwrap();
        fs_err::write(b.join("usr/share/doc/x/package.json"), "{}").unwrap();
        fs_err::create_dir_all(b.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", b.join("etc/os-release")).unwrap();
        // The upper layer deletes `gone` with an overlay whiteout (a 0/0 character device).
        let u = upper.path();
        fs_err::create_dir_all(u.join("app/node_modules")).unwrap();
        rustix_mknod_whiteout(&u.join("app/node_modules/gone"));
        let tree = LayerTree::new(vec![b.to_path_buf(), u.to_path_buf()]);
        assert_eq!(
            tree.candidates(),
            vec!["/app/bin/tool", "/app/node_modules/a/package.json"]
        );
        let mut opened = Vec::new();
        io::Read::read_to_end(
            &mut tree.open("/app/bin/tool").unwrap().unwrap(),
            &mut opened,
        )
        .unwrap();
        assert_eq!(opened, go);
        assert!(tree
            .open("/app/node_modules/gone/package.json")
            .unwrap()
            .is_none());
        // `/etc/os-release -> /etc/hostname` resolves inside the image, where it does not exist.
        assert_eq!(tree.read("/etc/os-release").unwrap(), None);
    }

    fn rustix_mknod_whiteout(path: &std::path::Path) {
        let status = std::process::Command::new("mknod")
            .arg(path)
            .args(["c", "0", "0"])
            .status()
            .unwrap();
        assert!(status.success(), "mknod needs root (CI runs as root)");
    }
}
