//! Software bill of materials: package scanners over an image's file tree, and the SPDX 2.3 writer.
//!
//! Scanners (ours, no external tool): Debian/Ubuntu dpkg status with machine-readable copyright
//! licences, Alpine's apk installed database, npm (`package-lock.json`, `node_modules/*/package.json`),
//! Python (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`), Java archives (`pom.properties`, jar
//! manifests), Go modules from the build info of Go 1.18+ ELF executables, Rust crates from the
//! `.dep-v0` section cargo-auditable writes, RPM's `rpmdb.sqlite`. Package URLs for all, CPEs where
//! they are well defined ([`cpe`]), SHA-1/SHA-256 of the files scanners read whole anyway (executables
//! with build info, Java archives). Writers: SPDX 2.3 and CycloneDX 1.5 JSON.

mod cpe;
mod cyclonedx;
mod dpkg;
mod evidence;
mod executables;
mod go;
mod java;
mod names;
mod npm;
mod python;
mod rpm;
mod rust;
mod spdx;
mod tree;

pub use cyclonedx::{cyclonedx_document, PREDICATE_TYPE as CYCLONEDX_PREDICATE_TYPE};
pub use spdx::{spdx_document, DocumentInfo, PREDICATE_TYPE};
pub use tree::{LayerTree, ReadSeek, Tree};

use std::collections::{BTreeMap, BTreeSet};

/// The SBOM document format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// SPDX 2.3 JSON (what BuildKit attaches).
    #[default]
    Spdx,
    /// CycloneDX 1.5 JSON.
    CycloneDx,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spdx" | "spdx-json" => Ok(Self::Spdx),
            "cyclonedx" | "cyclonedx-json" => Ok(Self::CycloneDx),
            _ => Err(format!("format={s:?} is not spdx or cyclonedx")),
        }
    }
}

impl Format {
    /// The in-toto predicate type of a statement in this format.
    pub fn predicate_type(self) -> &'static str {
        match self {
            Self::Spdx => PREDICATE_TYPE,
            Self::CycloneDx => CYCLONEDX_PREDICATE_TYPE,
        }
    }

    /// The format of a statement with this predicate type, if it is an SBOM.
    pub fn of_predicate_type(t: &str) -> Option<Self> {
        [Self::Spdx, Self::CycloneDx]
            .into_iter()
            .find(|f| f.predicate_type() == t)
    }

    /// The document for a scan.
    pub fn document(self, info: &DocumentInfo<'_>, inv: &Inventory) -> serde_json::Value {
        match self {
            Self::Spdx => spdx_document(info, inv),
            Self::CycloneDx => cyclonedx_document(info, inv),
        }
    }

    /// The file name suffix beside a local output (`sbom.spdx.json`, `sbom.cdx.json`), without `.json`.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Spdx => "spdx",
            Self::CycloneDx => "cdx",
        }
    }
}

/// Which package manager a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ecosystem {
    /// Debian/Ubuntu dpkg.
    Deb,
    /// Alpine apk.
    Apk,
    /// npm.
    Npm,
    /// Python (pip and friends).
    Python,
    /// Java archives (Maven coordinates).
    Java,
    /// Go modules compiled into an executable.
    Go,
    /// RPM (`rpmdb.sqlite`).
    Rpm,
    /// Rust crates compiled into an executable (cargo-auditable).
    Cargo,
}

impl Ecosystem {
    /// Short lowercase name (`deb`, `apk`, `npm`, `python`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Deb => "deb",
            Self::Apk => "apk",
            Self::Npm => "npm",
            Self::Python => "python",
            Self::Java => "java",
            Self::Go => "go",
            Self::Rpm => "rpm",
            Self::Cargo => "cargo",
        }
    }
}

/// One package found in the image.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// Where it comes from.
    pub ecosystem: Ecosystem,
    /// Its name (`libc6`, `@types/node`, `requests`).
    pub name: String,
    /// Its version, as the package manager writes it.
    pub version: String,
    /// CPU architecture, when the package manager records one.
    pub arch: Option<String>,
    /// Source package (dpkg `Source:`, apk origin), when it differs from the name.
    pub source: Option<String>,
    /// Declared licences as the package states them (`GPL-2+`, `MIT`), deduplicated and sorted.
    pub licenses: Vec<String>,
    /// Package URL.
    pub purl: String,
    /// The file the package was read from (`/var/lib/dpkg/status`, `/app/package-lock.json`).
    pub found_in: String,
}

/// A file of the image that packages were found in, hashed because the scanner read it whole anyway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileEntry {
    /// Absolute path inside the image.
    pub path: String,
    /// SHA-1 (hex): SPDX 2.3 requires it for every file.
    pub sha1: String,
    /// SHA-256 (hex).
    pub sha256: String,
    /// The purl of the package this file is (a Go main module, a Rust root crate, a jar's own
    /// artifact), when there is exactly one.
    pub owner: Option<String>,
    /// The purls of the other packages found in it (dependencies compiled in, nested jars).
    pub evidence: Vec<String>,
}

impl FileEntry {
    /// Hashes `bytes` and records which of `packages` the file is (`owner`, an index) or holds.
    pub(crate) fn new(
        path: &str,
        bytes: &[u8],
        packages: &[Package],
        owner: Option<usize>,
    ) -> Self {
        let sha1 = spdx::sha1_hex(bytes);
        let mut evidence: Vec<String> = packages
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != owner)
            .map(|(_, p)| p.purl.clone())
            .collect();
        evidence.sort();
        evidence.dedup();
        Self {
            path: path.to_owned(),
            sha1,
            sha256: crate::format::sha256_hex(bytes),
            owner: owner.map(|i| packages[i].purl.clone()),
            evidence,
        }
    }
}

/// Everything a scan found: packages, the dependencies between them, and hashed files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Sorted, without duplicates (same ecosystem, name and version).
    pub packages: Vec<Package>,
    /// (dependent, dependency) package URLs, where the package manager records them (cargo-auditable).
    pub dependencies: BTreeSet<(String, String)>,
    /// Sorted by path.
    pub files: Vec<FileEntry>,
}

/// Failures of scanners are per file: a broken `package.json` is logged and skipped, not fatal.
///
/// Returns every package of every scanner, sorted and without duplicates (same ecosystem, name and
/// version), with the files that were hashed.
pub fn scan(tree: &dyn Tree) -> Result<Inventory, crate::Error> {
    let t = std::time::Instant::now();
    let lap = |what: &str| tracing::debug!(elapsed = ?t.elapsed(), "SBOM scan: {what} done");
    let os = tree::os_release(tree)?;
    let mut inv = Inventory::default();
    let mut found = Vec::new();
    found.extend(dpkg::scan(tree, &os)?);
    found.extend(dpkg::scan_apk(tree, &os)?);
    found.extend(rpm::scan(tree, &os)?);
    lap("package databases");
    let candidates = tree.candidates();
    lap("file list");
    found.extend(npm::scan(tree, &candidates, &mut inv.dependencies)?);
    lap("npm");
    found.extend(python::scan(tree, &candidates)?);
    found.extend(java::scan(tree, &candidates, &mut inv.files)?);
    lap("python, java");
    found.extend(executables::scan(tree, &candidates, &mut inv)?);
    lap("executables");
    let mut unique = BTreeMap::new();
    for p in found {
        unique
            .entry((p.ecosystem, p.name.clone(), p.version.clone()))
            .or_insert(p);
    }
    inv.packages = unique.into_values().collect();
    inv.files.sort();
    Ok(inv)
}

/// Percent-encodes a purl component: everything except unreserved characters (`A-Za-z0-9.-_~`).
pub fn purl_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits RFC 822-style paragraphs (dpkg status, METADATA headers) into fields; continuation lines
/// (starting with a space or tab) join the previous field with a newline.
pub(crate) fn paragraphs(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The first value of a field in a paragraph.
pub(crate) fn field<'a>(para: &'a [(String, String)], name: &str) -> Option<&'a str> {
    para.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_encoding() {
        assert_eq!(purl_encode("1:2.36-9+deb12u4"), "1%3A2.36-9%2Bdeb12u4");
        assert_eq!(purl_encode("@types"), "%40types");
    }

    #[test]
    fn paragraph_parsing_with_continuations() {
        let p = paragraphs("Package: a\nDescription: x\n more\n\nPackage: b\n");
        assert_eq!(p.len(), 2);
        assert_eq!(field(&p[0], "description"), Some("x\nmore"));
        assert_eq!(field(&p[1], "Package"), Some("b"));
    }
}

/// Both writers' output checked by the formats' own validators (SPDX's pyspdxtools, CycloneDX's
/// strict JSON-schema validator from cyclonedx-python-lib), on a scan that has what the Debian
/// integration test's image lacks: Go modules with CPEs that need quoting (`x\/net`).
#[cfg(test)]
mod validators {
    use std::process::Command;

    use super::*;

    const PYTOOLS: &str = "/opt/rbuild-pytools/bin";

    fn inventory() -> Inventory {
        let go = |name: &str, version: &str| Package {
            ecosystem: Ecosystem::Go,
            name: name.into(),
            version: version.into(),
            arch: None,
            source: None,
            licenses: Vec::new(),
            purl: format!("pkg:golang/{name}@{}", purl_encode(version)),
            found_in: "/usr/local/bin/app".into(),
        };
        let mut packages = vec![
            go("example.com/app", "v1.0.0"),
            go("golang.org/x/net", "v0.17.0+incompatible"),
            go("stdlib", "go1.21.5"),
        ];
        packages[0].licenses = vec!["GPL-2+ or Artistic".into()];
        packages[1].licenses = vec!["BSD-3-clause".into()];
        packages[2].licenses = vec!["Custom licence".into()];
        let file = FileEntry::new("/usr/local/bin/app", b"\x7fELF...", &packages, Some(0));
        Inventory {
            dependencies: [(packages[0].purl.clone(), packages[1].purl.clone())].into(),
            files: vec![file],
            packages,
        }
    }

    fn run(tool: &str, args: &[&str], file: &std::path::Path) {
        let out = Command::new(format!("{PYTOOLS}/{tool}"))
            .args(args)
            .arg(file)
            .output()
            .unwrap_or_else(|e| {
                panic!("{PYTOOLS}/{tool}: {e} (scripts/install-deps.sh installs the checkers)")
            });
        assert!(
            out.status.success(),
            "{tool} refused {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn spdx_and_cyclonedx_documents_with_cpes_files_and_dependencies_pass_their_validators() {
        let inv = inventory();
        let info = DocumentInfo {
            image_name: "app:1",
            image_digest: &format!("sha256:{}", "ef".repeat(32)),
            created: 0,
            tool: "rbuild-0.1.0",
        };
        let dir = tempfile::tempdir().unwrap();
        let spdx = spdx_document(&info, &inv);
        let cpes: Vec<&str> = spdx["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["externalRefs"].as_array())
            .flatten()
            .filter(|r| r["referenceType"] == "cpe23Type")
            .map(|r| r["referenceLocator"].as_str().unwrap())
            .collect();
        assert_eq!(
            cpes,
            [
                r"cpe:2.3:a:golang:x\/net:v0.17.0\+incompatible:*:*:*:*:*:*:*",
                "cpe:2.3:a:golang:go:1.21.5:-:*:*:*:*:*:*",
            ]
        );
        let spdx_file = dir.path().join("sbom.spdx.json");
        fs_err::write(&spdx_file, serde_json::to_vec(&spdx).unwrap()).unwrap();
        run("pyspdxtools", &["-i"], &spdx_file);

        let cdx = cyclonedx_document(&info, &inv);
        let cdx_file = dir.path().join("sbom.cdx.json");
        fs_err::write(&cdx_file, serde_json::to_vec(&cdx).unwrap()).unwrap();
        run(
            "python",
            &[
                "-c",
                "import sys\n\
                 from cyclonedx.schema import SchemaVersion\n\
                 from cyclonedx.validation.json import JsonStrictValidator\n\
                 err = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
                 sys.exit(str(err)[:3000] if err else 0)\n",
            ],
            &cdx_file,
        );
    }
}
