//! Java archives (`*.jar`, `*.war`, `*.ear`): Maven coordinates from `META-INF/maven/*/*/pom.properties`,
//! else name and version from `META-INF/MANIFEST.MF`; jars nested one level deep (Spring Boot's
//! `BOOT-INF/lib/`, a war's `WEB-INF/lib/`) too.

use std::io::{Cursor, Read};

use super::{paragraphs, purl_encode, Ecosystem, FileEntry, Package, Tree};

/// Archives bigger than this are not opened (an SBOM scan must stay cheap; such files are rare).
const MAX_ARCHIVE: usize = 512 << 20;
/// Entries bigger than this are not read (a manifest or pom.properties is a few KiB).
const MAX_ENTRY: u64 = 1 << 20;

/// Whether a candidate path is a Java archive.
pub(crate) fn is_archive(name: &str) -> bool {
    [".jar", ".war", ".ear"].iter().any(|s| name.ends_with(s))
}

/// The packages of every Java archive; each archive that holds any is hashed into `files`, owned by
/// its own artifact when exactly one package describes the archive itself (not a nested jar).
pub(crate) fn scan(
    tree: &dyn Tree,
    candidates: &[String],
    files: &mut Vec<FileEntry>,
) -> Result<Vec<Package>, crate::Error> {
    let mut out = Vec::new();
    for path in candidates.iter().filter(|p| is_archive(p)) {
        let Some(bytes) = tree.read(path)? else {
            continue;
        };
        if bytes.len() > MAX_ARCHIVE {
            tracing::debug!(path, size = bytes.len(), "archive too big to scan");
            continue;
        }
        let mut found = Vec::new();
        archive_packages(&bytes, path, 0, &mut found);
        if !found.is_empty() {
            let own: Vec<usize> = (0..found.len())
                .filter(|&i| found[i].found_in == *path)
                .collect();
            let owner = (own.len() == 1).then(|| own[0]);
            files.push(FileEntry::new(path, &bytes, &found, owner));
        }
        out.extend(found);
    }
    Ok(out)
}

fn entry(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Option<String> {
    let mut f = zip.by_name(name).ok()?;
    if f.size() > MAX_ENTRY {
        return None;
    }
    let mut s = String::new();
    f.read_to_string(&mut s).ok()?;
    Some(s)
}

/// The packages of one archive (and of the archives inside it, up to one level).
fn archive_packages(bytes: &[u8], path: &str, depth: u8, out: &mut Vec<Package>) {
    let Ok(mut zip) = zip::ZipArchive::new(Cursor::new(bytes)) else {
        tracing::debug!(path, "not a zip archive");
        return;
    };
    let names: Vec<String> = zip.file_names().map(str::to_owned).collect();
    let mut found = false;
    for pom in names
        .iter()
        .filter(|n| n.starts_with("META-INF/maven/") && n.ends_with("/pom.properties"))
    {
        let Some(text) = entry(&mut zip, pom) else {
            continue;
        };
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(k)?.trim_start().strip_prefix('='))
                .map(|v| v.trim().to_owned())
        };
        if let (Some(g), Some(a), Some(v)) = (get("groupId"), get("artifactId"), get("version")) {
            out.push(package(Some(&g), &a, &v, None, path));
            found = true;
        }
    }
    if !found {
        if let Some(mf) = entry(&mut zip, "META-INF/MANIFEST.MF") {
            if let Some(p) = manifest_package(&mf, path) {
                out.push(p);
            }
        }
    }
    if depth == 0 {
        for inner in names.iter().filter(|n| is_archive(n)) {
            let Ok(mut f) = zip.by_name(inner) else {
                continue;
            };
            if f.size() > MAX_ARCHIVE as u64 {
                continue;
            }
            let mut buf = Vec::new();
            if f.read_to_end(&mut buf).is_ok() {
                archive_packages(&buf, &format!("{path}!/{inner}"), 1, out);
            }
        }
    }
}

/// Name and version from a jar manifest's main section.
fn manifest_package(text: &str, path: &str) -> Option<Package> {
    // Manifest lines wrap at 72 bytes with a one-space continuation, as RFC 822 headers do.
    let main = paragraphs(&text.replace("\r\n", "\n")).into_iter().next()?;
    let field = |k: &str| super::field(&main, k).map(|v| v.replace('\n', "").trim().to_owned());
    let version = field("Implementation-Version").or_else(|| field("Bundle-Version"))?;
    let name = field("Implementation-Title")
        .or_else(|| {
            field("Bundle-SymbolicName").map(|s| s.split(';').next().unwrap_or(&s).to_owned())
        })
        .or_else(|| {
            let file = path.rsplit('/').next()?;
            Some(file.rsplit_once('.')?.0.to_owned())
        })?;
    let group = field("Implementation-Vendor-Id");
    let license = field("Bundle-License");
    Some(package(group.as_deref(), &name, &version, license, path))
}

fn package(
    group: Option<&str>,
    name: &str,
    version: &str,
    license: Option<String>,
    path: &str,
) -> Package {
    let purl = match group {
        Some(g) => format!(
            "pkg:maven/{}/{}@{}",
            purl_encode(g),
            purl_encode(name),
            purl_encode(version)
        ),
        // Without a group the purl has no namespace; name and version still identify it.
        None => format!("pkg:maven/{}@{}", purl_encode(name), purl_encode(version)),
    };
    let display = match group {
        Some(g) => format!("{g}:{name}"),
        None => name.to_owned(),
    };
    Package {
        ecosystem: Ecosystem::Java,
        name: display,
        version: version.to_owned(),
        arch: None,
        source: None,
        licenses: license.into_iter().collect(),
        purl,
        found_in: path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn jar(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(body).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn pom_properties_manifest_and_nested_jars() {
        let inner = jar(&[(
            "META-INF/MANIFEST.MF",
            b"Manifest-Version: 1.0\r\nImplementation-Title: tiny-lib\r\nImplementation-Version: 2.\r\n 5.1\r\n\r\nName: x\r\n",
        )]);
        let outer = jar(&[
            (
                "META-INF/maven/org.example/app/pom.properties",
                b"#Generated\nversion=1.4.0\ngroupId=org.example\nartifactId=app\n",
            ),
            ("META-INF/MANIFEST.MF", b"Manifest-Version: 1.0\r\n"),
            ("BOOT-INF/lib/tiny-lib.jar", &inner),
        ]);
        let mut out = Vec::new();
        archive_packages(&outer, "/app/app.jar", 0, &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].purl, "pkg:maven/org.example/app@1.4.0");
        assert_eq!(out[0].name, "org.example:app");
        assert_eq!(out[1].name, "tiny-lib");
        assert_eq!(out[1].version, "2.5.1", "continuation lines joined");
        assert_eq!(out[1].found_in, "/app/app.jar!/BOOT-INF/lib/tiny-lib.jar");
        let mut none = Vec::new();
        archive_packages(b"not a zip", "/x.jar", 0, &mut none);
        assert!(none.is_empty());
    }
}
