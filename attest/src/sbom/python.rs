//! Python distributions: `*.dist-info/METADATA` (wheels, pip) and `*.egg-info/PKG-INFO` (setuptools).

use super::{purl_encode, Ecosystem, Package, Tree};

pub(crate) fn scan(tree: &dyn Tree, candidates: &[String]) -> Result<Vec<Package>, crate::Error> {
    let mut out = Vec::new();
    for path in candidates {
        let Some((dir, file)) = path.rsplit_once('/') else {
            continue;
        };
        let ok = (file == "METADATA" && dir.ends_with(".dist-info"))
            || (file == "PKG-INFO" && dir.ends_with(".egg-info"));
        if !ok {
            continue;
        }
        let Some(bytes) = tree.read(path)? else {
            continue;
        };
        if let Some(p) = metadata_package(&String::from_utf8_lossy(&bytes), path) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The package a core-metadata file describes (headers only: the body after the first blank line is the
/// description).
fn metadata_package(text: &str, path: &str) -> Option<Package> {
    let head = text.split("\n\n").next().unwrap_or_default();
    let fields = super::paragraphs(head);
    let fields = fields.first()?;
    let name = super::field(fields, "Name")?;
    let version = super::field(fields, "Version")?;
    let mut licenses = Vec::new();
    if let Some(l) = super::field(fields, "License-Expression") {
        licenses.push(l.to_owned());
    } else if let Some(l) = super::field(fields, "License").filter(|l| {
        // Some projects paste the whole licence text here; only a short name is a licence name.
        !l.is_empty() && !l.contains('\n') && l.len() <= 64 && *l != "UNKNOWN"
    }) {
        licenses.push(l.to_owned());
    } else {
        licenses.extend(
            fields
                .iter()
                .filter(|(k, _)| k == "Classifier")
                .filter_map(|(_, v)| v.strip_prefix("License :: "))
                .filter_map(|v| v.rsplit(" :: ").next())
                .map(str::to_owned),
        );
    }
    // PEP 503 normalisation, which the pypi purl type asks for.
    let normalized: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c == '_' || c == '.' { '-' } else { c })
        .collect();
    Some(Package {
        ecosystem: Ecosystem::Python,
        name: name.to_owned(),
        version: version.to_owned(),
        arch: None,
        source: None,
        licenses,
        purl: format!(
            "pkg:pypi/{}@{}",
            purl_encode(&normalized),
            purl_encode(version)
        ),
        found_in: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_fields_and_licences() {
        let p = metadata_package(
            "Metadata-Version: 2.1\nName: Typing_Extensions\nVersion: 4.9.0\nClassifier: License :: OSI Approved :: Python Software Foundation License\n\nName: not-a-header\n",
            "/usr/lib/python3/dist-packages/typing_extensions-4.9.0.dist-info/METADATA",
        )
        .unwrap();
        assert_eq!(p.name, "Typing_Extensions");
        assert_eq!(p.purl, "pkg:pypi/typing-extensions@4.9.0");
        assert_eq!(p.licenses, ["Python Software Foundation License"]);
        let p = metadata_package("Name: a\nVersion: 1\nLicense: MIT\n", "x").unwrap();
        assert_eq!(p.licenses, ["MIT"]);
    }
}
