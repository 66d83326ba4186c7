//! SPDX 2.3 JSON: one document per image, the image as the described package, every found package
//! contained in it.
//!
//! Written with serde_json rather than an SPDX crate: `spdx-rs` has had no release since 2022 and models
//! SPDX 2.2; the subset written here is small and validated in CI by SPDX's own `pyspdxtools`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{cpe, Ecosystem, Inventory};
use crate::format::{rfc3339, sha256_hex};

/// `predicateType` of an SPDX SBOM attestation (what BuildKit and cosign use).
pub const PREDICATE_TYPE: &str = "https://spdx.dev/Document";

/// What the document says about itself.
pub struct DocumentInfo<'a> {
    /// The image's name (its first tag, or `image`).
    pub image_name: &'a str,
    /// The image's manifest digest (`sha256:...`), which makes the namespace unique.
    pub image_digest: &'a str,
    /// Creation time, seconds since the epoch (SOURCE_DATE_EPOCH when set).
    pub created: i64,
    /// `Tool: rbuild-VERSION`.
    pub tool: &'a str,
}

/// Debian copyright short names and common spellings, mapped to SPDX licence ids.
const LICENSE_IDS: &[(&str, &str)] = &[
    ("GPL-1", "GPL-1.0-only"),
    ("GPL-1+", "GPL-1.0-or-later"),
    ("GPL-2", "GPL-2.0-only"),
    ("GPL-2+", "GPL-2.0-or-later"),
    ("GPL-3", "GPL-3.0-only"),
    ("GPL-3+", "GPL-3.0-or-later"),
    ("LGPL-2", "LGPL-2.0-only"),
    ("LGPL-2+", "LGPL-2.0-or-later"),
    ("LGPL-2.1", "LGPL-2.1-only"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("LGPL-3", "LGPL-3.0-only"),
    ("LGPL-3+", "LGPL-3.0-or-later"),
    ("AGPL-3", "AGPL-3.0-only"),
    ("AGPL-3+", "AGPL-3.0-or-later"),
    ("GFDL-1.2+", "GFDL-1.2-or-later"),
    ("GFDL-1.3+", "GFDL-1.3-or-later"),
    ("Apache-2.0", "Apache-2.0"),
    ("Apache-2", "Apache-2.0"),
    ("Artistic", "Artistic-1.0-Perl"),
    ("Artistic-2.0", "Artistic-2.0"),
    ("BSD-2-clause", "BSD-2-Clause"),
    ("BSD-3-clause", "BSD-3-Clause"),
    ("BSD-4-clause", "BSD-4-Clause"),
    ("Expat", "MIT"),
    ("MIT", "MIT"),
    ("ISC", "ISC"),
    ("Zlib", "Zlib"),
    ("zlib", "Zlib"),
    ("MPL-1.1", "MPL-1.1"),
    ("MPL-2.0", "MPL-2.0"),
    ("CC0-1.0", "CC0-1.0"),
    ("CC0", "CC0-1.0"),
    ("0BSD", "0BSD"),
    ("BSL-1.0", "BSL-1.0"),
    ("Unlicense", "Unlicense"),
    ("PSF-2.0", "PSF-2.0"),
    ("Python-2.0", "Python-2.0"),
    ("OpenSSL", "OpenSSL"),
    ("curl", "curl"),
    ("X11", "X11"),
    ("BlueOak-1.0.0", "BlueOak-1.0.0"),
];

/// Collects the `LicenseRef-` ids a document uses, with the names they stand for.
#[derive(Default)]
pub(crate) struct Refs(pub(crate) BTreeMap<String, String>);

impl Refs {
    /// One licence name → an SPDX id, or a `LicenseRef-` kept for `hasExtractedLicensingInfos`.
    fn id(&mut self, name: &str) -> String {
        let name = name.trim().trim_matches(|c| c == '(' || c == ')');
        if let Some((_, id)) = LICENSE_IDS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return (*id).to_owned();
        }
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let id = format!("LicenseRef-{}", clean.trim_matches('-'));
        self.0.insert(id.clone(), name.to_owned());
        id
    }

    /// A declared licence (`GPL-2+ or Artistic`, `MIT OR Apache-2.0`, `(MIT AND BSD-3-Clause)`) as an SPDX
    /// expression; a `with` exception stays inside one `LicenseRef`.
    fn expression(&mut self, declared: &str) -> String {
        let words: Vec<&str> = declared.split_whitespace().collect();
        if words.iter().any(|w| w.eq_ignore_ascii_case("with")) {
            return self.id(declared);
        }
        let mut out = Vec::new();
        let mut term = Vec::new();
        let flush = |term: &mut Vec<&str>, out: &mut Vec<String>, refs: &mut Self| {
            if !term.is_empty() {
                out.push(refs.id(&term.join(" ")));
                term.clear();
            }
        };
        for w in words {
            let op = w.trim_matches(|c| c == '(' || c == ')' || c == ',');
            if op.eq_ignore_ascii_case("or") || op.eq_ignore_ascii_case("and") {
                flush(&mut term, &mut out, self);
                out.push(op.to_ascii_uppercase());
            } else {
                term.push(w);
            }
        }
        flush(&mut term, &mut out, self);
        // A dangling operator (`MIT or`) is no expression: keep what stands as one reference.
        if out.first().is_some_and(|t| t == "OR" || t == "AND")
            || out.last().is_some_and(|t| t == "OR" || t == "AND")
            || out.is_empty()
        {
            return self.id(declared);
        }
        let expr = out.join(" ");
        if out.len() > 1 {
            format!("({expr})")
        } else {
            expr
        }
    }

    /// Several declared licences of one package, all of which apply (`AND`).
    pub(crate) fn declared(&mut self, licenses: &[String]) -> String {
        let parts: BTreeSet<String> = licenses.iter().map(|l| self.expression(l)).collect();
        if parts.is_empty() {
            "NOASSERTION".to_owned()
        } else {
            parts.into_iter().collect::<Vec<_>>().join(" AND ")
        }
    }
}

/// SHA-1 (hex) of bytes.
pub(crate) fn sha1_hex(bytes: &[u8]) -> String {
    use sha1::Digest as _;
    sha1::Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An SPDX id from free text (`[A-Za-z0-9.-]` only).
fn spdx_id(prefix: &str, text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{prefix}-{clean}")
}

/// Whether a licence expression is a single id of the SPDX licence list (not a `LicenseRef-`, not
/// compound).
pub(crate) fn is_listed_id(expr: &str) -> bool {
    LICENSE_IDS.iter().any(|(_, id)| *id == expr)
}

/// The SPDX 2.3 JSON document for a scan (sorted input gives byte-identical output).
pub fn spdx_document(info: &DocumentInfo<'_>, inv: &Inventory) -> Value {
    let packages = &inv.packages;
    let mut refs = Refs::default();
    let hex = info.image_digest.trim_start_matches("sha256:");
    let mut spdx_packages = vec![json!({
        "name": info.image_name,
        "SPDXID": "SPDXRef-Image",
        "versionInfo": info.image_digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex}],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    let mut used_ids = BTreeSet::new();
    // purl → SPDX id, for the relationships of files and dependencies.
    let mut by_purl: BTreeMap<&str, String> = BTreeMap::new();
    for p in packages {
        // Name and version make the id readable; a short purl digest keeps two same-named packages apart.
        let mut id = spdx_id(
            p.ecosystem.name(),
            &format!(
                "{}-{}-{}",
                p.name,
                p.version,
                &sha256_hex(p.purl.as_bytes())[..8]
            ),
        );
        while !used_ids.insert(id.clone()) {
            id.push('x');
        }
        let mut pkg = json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": if matches!(p.ecosystem, Ecosystem::Deb | Ecosystem::Apk | Ecosystem::Rpm) { "OPERATING-SYSTEM" } else { "LIBRARY" },
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": refs.declared(&p.licenses),
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("found in {}", p.found_in),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
        });
        if let Some(s) = &p.source {
            pkg["sourceInfo"] = json!(format!("found in {}; source package {s}", p.found_in));
        }
        if let Some(c) = cpe::of(p) {
            pkg["externalRefs"]
                .as_array_mut()
                .expect("externalRefs is an array")
                .push(json!({
                    "referenceCategory": "SECURITY",
                    "referenceType": "cpe23Type",
                    "referenceLocator": c,
                }));
        }
        // A package that is a file of the image (a Go main module, a Rust root crate, a jar) contains
        // it, which SPDX allows only with filesAnalyzed (the verification code covers those files).
        let owned: Vec<&super::FileEntry> = inv
            .files
            .iter()
            .filter(|f| f.owner.as_deref() == Some(&p.purl))
            .collect();
        if !owned.is_empty() && !by_purl.contains_key(p.purl.as_str()) {
            let mut sha1s: Vec<&str> = owned.iter().map(|f| f.sha1.as_str()).collect();
            sha1s.sort_unstable();
            pkg["filesAnalyzed"] = json!(true);
            pkg["packageVerificationCode"] =
                json!({"packageVerificationCodeValue": sha1_hex(sha1s.concat().as_bytes())});
        }
        by_purl.entry(&p.purl).or_insert_with(|| id.clone());
        spdx_packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let mut files = Vec::new();
    for f in &inv.files {
        let id = spdx_id("File", &format!("{}-{}", f.path, &f.sha256[..8]));
        files.push(json!({
            "fileName": format!(".{}", f.path),
            "SPDXID": id,
            "checksums": [
                {"algorithm": "SHA1", "checksumValue": f.sha1},
                {"algorithm": "SHA256", "checksumValue": f.sha256},
            ],
            "licenseConcluded": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        if let Some(owner) = f.owner.as_deref().and_then(|o| by_purl.get(o)) {
            relationships.push(json!({
                "spdxElementId": owner,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            }));
        }
        for e in f.evidence.iter().filter_map(|e| by_purl.get(e.as_str())) {
            // Syft's spelling of "this file is where the package was found".
            relationships.push(json!({
                "spdxElementId": e,
                "relationshipType": "OTHER",
                "relatedSpdxElement": id,
                "comment": "evident-by: indicates the package's existence is evident by the given file",
            }));
        }
    }
    for (from, to) in &inv.dependencies {
        if let (Some(from), Some(to)) = (by_purl.get(from.as_str()), by_purl.get(to.as_str())) {
            relationships.push(json!({
                "spdxElementId": from,
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": to,
            }));
        }
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": info.image_name,
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/rbuild/{}-{hex}",
            spdx_id("image", info.image_name).trim_start_matches("SPDXRef-image-")
        ),
        "creationInfo": {
            "created": rfc3339(info.created),
            "creators": [format!("Tool: {}", info.tool)],
        },
        "packages": spdx_packages,
        "relationships": relationships,
    });
    if !files.is_empty() {
        doc["files"] = json!(files);
    }
    if !refs.0.is_empty() {
        doc["hasExtractedLicensingInfos"] = refs
            .0
            .iter()
            .map(|(id, name)| {
                json!({
                    "licenseId": id,
                    "name": name,
                    "extractedText": format!("The package declares the licence {name:?}; see its copyright file."),
                })
            })
            .collect();
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::super::Package;
    use super::*;

    #[test]
    fn licence_expressions() {
        let mut r = Refs::default();
        assert_eq!(r.expression("GPL-2+"), "GPL-2.0-or-later");
        assert_eq!(
            r.expression("GPL-1+ or Artistic"),
            "(GPL-1.0-or-later OR Artistic-1.0-Perl)"
        );
        assert_eq!(r.expression("MIT OR Apache-2.0"), "(MIT OR Apache-2.0)");
        assert_eq!(
            r.expression("GPL-2+ with OpenSSL exception"),
            "LicenseRef-GPL-2--with-OpenSSL-exception"
        );
        assert_eq!(r.expression("public-domain"), "LicenseRef-public-domain");
        assert_eq!(
            r.declared(&["GPL-2+".into(), "BSD-3-clause".into()]),
            "BSD-3-Clause AND GPL-2.0-or-later"
        );
        assert_eq!(r.declared(&[]), "NOASSERTION");
        assert_eq!(r.0.len(), 2);
    }

    #[test]
    fn document_shape() {
        let p = Package {
            ecosystem: Ecosystem::Npm,
            name: "@types/node".into(),
            version: "20.1.0".into(),
            arch: None,
            source: None,
            licenses: vec!["public domain".into()],
            purl: "pkg:npm/%40types/node@20.1.0".into(),
            found_in: "/app/package-lock.json".into(),
        };
        let info = DocumentInfo {
            image_name: "my-app:latest",
            image_digest: &format!("sha256:{}", "ab".repeat(32)),
            created: 0,
            tool: "rbuild-0.1.0",
        };
        let inv = Inventory {
            packages: vec![p.clone(), p],
            ..Inventory::default()
        };
        let doc = spdx_document(&info, &inv);
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        let ids: BTreeSet<&str> = doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["SPDXID"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 3, "ids stay unique: {ids:?}");
        assert!(ids.iter().all(|i| i[8..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')));
        assert_eq!(doc["relationships"].as_array().unwrap().len(), 3);
        assert_eq!(
            doc["hasExtractedLicensingInfos"][0]["licenseId"],
            "LicenseRef-public-domain"
        );
        assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:00Z");
    }
}
