//! Software bill of materials: package scanners over an image's file tree, and the SPDX 2.3 writer.
//!
//! Scanners (ours, no external tool): Debian/Ubuntu dpkg status with machine-readable copyright
//! licences, Alpine's apk installed database, npm (`package-lock.json`, `node_modules/*/package.json`),
//! Python (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO`), Java archives (`pom.properties`, jar
//! manifests), Go modules from the build info of Go 1.18+ ELF executables, RPM's `rpmdb.sqlite`. Not yet: cargo-auditable (see docs/ATTESTATIONS.md).

mod dpkg;
mod go;
mod java;
mod npm;
mod python;
mod rpm;
mod spdx;
mod tree;

pub use spdx::{spdx_document, DocumentInfo, PREDICATE_TYPE};
pub use tree::{LayerTree, Tree};

use std::collections::BTreeMap;

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

/// Failures of scanners are per file: a broken `package.json` is logged and skipped, not fatal.
///
/// Returns every package of every scanner, sorted and without duplicates (same ecosystem, name and
/// version).
pub fn scan(tree: &dyn Tree) -> Result<Vec<Package>, crate::Error> {
    let os = tree::os_release(tree)?;
    let mut found = Vec::new();
    found.extend(dpkg::scan(tree, &os)?);
    found.extend(dpkg::scan_apk(tree, &os)?);
    found.extend(rpm::scan(tree, &os)?);
    let candidates = tree.candidates();
    found.extend(npm::scan(tree, &candidates)?);
    found.extend(python::scan(tree, &candidates)?);
    found.extend(java::scan(tree, &candidates)?);
    found.extend(go::scan(tree, &candidates)?);
    let mut unique = BTreeMap::new();
    for p in found {
        unique
            .entry((p.ecosystem, p.name.clone(), p.version.clone()))
            .or_insert(p);
    }
    Ok(unique.into_values().collect())
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
