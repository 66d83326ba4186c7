//! Debian/Ubuntu packages (`/var/lib/dpkg/status`, distroless `status.d/`) with the licences of
//! machine-readable copyright files, and Alpine packages (`/lib/apk/db/installed`).

use std::collections::BTreeSet;

use super::tree::OsRelease;
use super::{field, paragraphs, purl_encode, Ecosystem, Package, Tree};

const DPKG_STATUS: &str = "/var/lib/dpkg/status";
const APK_INSTALLED: &str = "/lib/apk/db/installed";

/// Installed dpkg packages.
pub(crate) fn scan(tree: &dyn Tree, os: &OsRelease) -> Result<Vec<Package>, crate::Error> {
    let Some(status) = tree.read(DPKG_STATUS)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&status);
    let distro = os.id.clone().unwrap_or_else(|| "debian".to_owned());
    let mut out = Vec::new();
    for para in paragraphs(&text) {
        let (Some(name), Some(version)) = (field(&para, "Package"), field(&para, "Version")) else {
            continue;
        };
        // `install ok installed`; half-installed, config-files and not-installed entries are no content.
        if !field(&para, "Status").is_some_and(|s| s.ends_with(" installed")) {
            continue;
        }
        let arch = field(&para, "Architecture").map(str::to_owned);
        let source = field(&para, "Source")
            .map(|s| s.split_whitespace().next().unwrap_or(s).to_owned())
            .filter(|s| s != name);
        let licenses = match tree.read(&format!("/usr/share/doc/{name}/copyright"))? {
            Some(c) => copyright_licenses(&String::from_utf8_lossy(&c)),
            None => Vec::new(),
        };
        let mut purl = format!(
            "pkg:deb/{}/{}@{}",
            purl_encode(&distro),
            purl_encode(name),
            purl_encode(version)
        );
        let mut qualifiers = Vec::new();
        if let Some(a) = &arch {
            qualifiers.push(format!("arch={}", purl_encode(a)));
        }
        if let Some(v) = &os.version_id {
            qualifiers.push(format!("distro={}", purl_encode(&format!("{distro}-{v}"))));
        }
        if let Some(s) = &source {
            qualifiers.push(format!("upstream={}", purl_encode(s)));
        }
        if !qualifiers.is_empty() {
            purl.push('?');
            purl.push_str(&qualifiers.join("&"));
        }
        out.push(Package {
            ecosystem: Ecosystem::Deb,
            name: name.to_owned(),
            version: version.to_owned(),
            arch,
            source,
            licenses,
            purl,
            found_in: DPKG_STATUS.to_owned(),
        });
    }
    Ok(out)
}

/// The `License:` short names of the `Files:` paragraphs of a machine-readable Debian copyright file
/// (DEP-5); nothing for free-form files, whose licences cannot be read reliably.
pub(crate) fn copyright_licenses(text: &str) -> Vec<String> {
    let first = text.lines().next().unwrap_or_default();
    if !(first.starts_with("Format:") && first.contains("copyright-format")) {
        return Vec::new();
    }
    let mut out = BTreeSet::new();
    for para in paragraphs(text) {
        if field(&para, "Files").is_none() {
            continue;
        }
        if let Some(l) = field(&para, "License") {
            let short = l.lines().next().unwrap_or_default().trim();
            if !short.is_empty() {
                out.insert(short.to_owned());
            }
        }
    }
    out.into_iter().collect()
}

/// Installed apk packages.
pub(crate) fn scan_apk(tree: &dyn Tree, os: &OsRelease) -> Result<Vec<Package>, crate::Error> {
    let Some(db) = tree.read(APK_INSTALLED)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&db);
    let distro = os.id.clone().unwrap_or_else(|| "alpine".to_owned());
    let mut out = Vec::new();
    // One package per paragraph, one `X:value` line per field (no continuation lines).
    for block in text.split("\n\n") {
        let get = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
                .map(str::to_owned)
        };
        let (Some(name), Some(version)) = (get("P"), get("V")) else {
            continue;
        };
        let arch = get("A");
        let source = get("o").filter(|o| *o != name);
        let mut purl = format!(
            "pkg:apk/{}/{}@{}",
            purl_encode(&distro),
            purl_encode(&name),
            purl_encode(&version)
        );
        let mut q = Vec::new();
        if let Some(a) = &arch {
            q.push(format!("arch={}", purl_encode(a)));
        }
        if let Some(v) = &os.version_id {
            q.push(format!("distro={}", purl_encode(&format!("{distro}-{v}"))));
        }
        if !q.is_empty() {
            purl.push('?');
            purl.push_str(&q.join("&"));
        }
        out.push(Package {
            ecosystem: Ecosystem::Apk,
            name,
            version,
            arch,
            source,
            licenses: get("L").into_iter().collect(),
            purl,
            found_in: APK_INSTALLED.to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::LayerTree;
    use super::*;

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library
 Shared libraries.

Package: removed
Status: deinstall ok config-files
Version: 1.0

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
";

    const COPYRIGHT: &str = "\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: glibc

Files: *
Copyright: 1991-2023 Free Software Foundation, Inc.
License: LGPL-2.1+

Files: debian/*
License: GPL-2+

License: LGPL-2.1+
 The full text.
";

    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, LayerTree<'static>) {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = dir.path().join(p.trim_start_matches('/'));
            fs_err::create_dir_all(path.parent().unwrap()).unwrap();
            fs_err::write(path, c).unwrap();
        }
        let t = LayerTree::new(vec![dir.path().to_path_buf()]);
        (dir, t)
    }

    #[test]
    fn dpkg_installed_packages_with_licences_and_purls() {
        let (_d, t) = tree(&[
            (DPKG_STATUS, STATUS),
            ("/usr/share/doc/libc6/copyright", COPYRIGHT),
            ("/usr/share/doc/bash/copyright", "free-form text, GPL\n"),
            ("/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"),
        ]);
        let os = super::super::tree::os_release(&t).unwrap();
        let p = scan(&t, &os).unwrap();
        assert_eq!(p.len(), 2, "config-files entry skipped: {p:?}");
        assert_eq!(p[0].name, "libc6");
        assert_eq!(p[0].source.as_deref(), Some("glibc"));
        assert_eq!(p[0].licenses, ["GPL-2+", "LGPL-2.1+"]);
        assert_eq!(
            p[0].purl,
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc"
        );
        assert!(p[1].licenses.is_empty(), "free-form copyright: no guess");
    }

    #[test]
    fn apk_installed_database() {
        let (_d, t) = tree(&[(
            APK_INSTALLED,
            "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\n\n",
        )]);
        let os = OsRelease {
            id: Some("alpine".into()),
            version_id: Some("3.19.0".into()),
        };
        let p = scan_apk(&t, &os).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].purl,
            "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64&distro=alpine-3.19.0"
        );
        assert_eq!(p[1].licenses, ["GPL-2.0-only"]);
    }
}
