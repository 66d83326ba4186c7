//! CycloneDX 1.5 JSON: the same scan as the SPDX document — packages with their purls, licences and
//! CPEs, the hashed files, the dependencies — for `--sbom=format=cyclonedx`.
//!
//! Written with serde_json like the SPDX writer: the `cyclonedx-bom` crate models the document but
//! brings its own validation stack for the handful of fields written here; CI validates the output
//! with CycloneDX's own `cyclonedx-python-lib` strict JSON-schema validator instead.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::spdx::{is_listed_id, sha1_hex, Refs};
use super::{cpe, DocumentInfo, Inventory};
use crate::format::rfc3339;

/// `predicateType` of a CycloneDX SBOM attestation (in-toto's predicate for CycloneDX).
pub const PREDICATE_TYPE: &str = "https://cyclonedx.org/bom";

/// RFC 4122's URL namespace, for the name-based (version 5) serial number.
const URL_NAMESPACE: [u8; 16] = [
    0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
];

/// `urn:uuid:` + the version 5 UUID of `name`: the same image gives the same serial number.
fn serial_number(name: &str) -> String {
    let mut input = URL_NAMESPACE.to_vec();
    input.extend_from_slice(name.as_bytes());
    let hex = sha1_hex(&input);
    let mut b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("sha1_hex is hex"))
        .collect();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The `licenses` of a component: an SPDX list id, a named licence, or an expression.
fn licenses(refs: &mut Refs, declared: &[String]) -> Option<Value> {
    let expr = refs.declared(declared);
    if expr == "NOASSERTION" {
        return None;
    }
    if is_listed_id(&expr) {
        return Some(json!([{"license": {"id": expr}}]));
    }
    if declared.len() == 1 && !expr.contains(' ') {
        // One licence outside the SPDX list: its name as the package states it.
        return Some(json!([{"license": {"name": declared[0]}}]));
    }
    Some(json!([{"expression": expr}]))
}

/// The CycloneDX 1.5 JSON document for a scan (sorted input gives byte-identical output).
pub fn cyclonedx_document(info: &DocumentInfo<'_>, inv: &Inventory) -> Value {
    let hex = info.image_digest.trim_start_matches("sha256:");
    let mut refs = Refs::default();
    let mut used = BTreeSet::new();
    let mut components = Vec::new();
    for p in &inv.packages {
        if !used.insert(p.purl.clone()) {
            continue;
        }
        let mut c = json!({
            "type": "library",
            "bom-ref": p.purl,
            "name": p.name,
            "version": p.version,
            "purl": p.purl,
            "evidence": {"occurrences": [{"location": p.found_in}]},
        });
        if let Some(l) = licenses(&mut refs, &p.licenses) {
            c["licenses"] = l;
        }
        if let Some(cpe) = cpe::of(p) {
            c["cpe"] = json!(cpe);
        }
        let owned: Vec<&super::FileEntry> = inv
            .files
            .iter()
            .filter(|f| f.owner.as_deref() == Some(&p.purl))
            .collect();
        if let [f] = owned.as_slice() {
            c["hashes"] = hashes(f);
        }
        let mut properties = Vec::new();
        if let Some(a) = &p.arch {
            properties.push(json!({"name": "rbuild:package:arch", "value": a}));
        }
        if let Some(s) = &p.source {
            properties.push(json!({"name": "rbuild:package:source", "value": s}));
        }
        if !properties.is_empty() {
            c["properties"] = json!(properties);
        }
        components.push(c);
    }
    for f in &inv.files {
        components.push(json!({
            "type": "file",
            "bom-ref": format!("file:{}", f.path),
            "name": f.path,
            "hashes": hashes(f),
        }));
    }
    let mut dependencies: Vec<Value> = Vec::new();
    let mut from_to: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (from, to) in &inv.dependencies {
        if used.contains(from) && used.contains(to) {
            from_to.entry(from).or_default().push(to);
        }
    }
    for (from, to) in from_to {
        dependencies.push(json!({"ref": from, "dependsOn": to}));
    }
    let mut doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial_number(&format!("rbuild:{}@{}", info.image_name, info.image_digest)),
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(info.created),
            "tools": {"components": [{
                "type": "application",
                "name": info.tool.split_once('-').map_or(info.tool, |(n, _)| n),
                "version": info.tool.split_once('-').map_or("", |(_, v)| v),
            }]},
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": info.image_name,
                "version": info.image_digest,
                "hashes": [{"alg": "SHA-256", "content": hex}],
            },
        },
        "components": components,
    });
    if !dependencies.is_empty() {
        doc["dependencies"] = json!(dependencies);
    }
    doc
}

fn hashes(f: &super::FileEntry) -> Value {
    json!([
        {"alg": "SHA-1", "content": f.sha1},
        {"alg": "SHA-256", "content": f.sha256},
    ])
}

#[cfg(test)]
mod tests {
    use super::super::{Ecosystem, FileEntry, Package};
    use super::*;

    #[test]
    fn cyclonedx_document_shape() {
        let pkg = |name: &str, licenses: &[&str]| Package {
            ecosystem: Ecosystem::Go,
            name: name.into(),
            version: "v1.0.0".into(),
            arch: None,
            source: None,
            licenses: licenses.iter().map(|l| (*l).to_owned()).collect(),
            purl: format!("pkg:golang/{name}@v1.0.0"),
            found_in: "/app".into(),
        };
        let packages = vec![
            pkg("example.com/app", &["MIT"]),
            pkg("github.com/a/b", &["GPL-2+ or Artistic"]),
            pkg("github.com/c/d", &["Custom Licence"]),
        ];
        let file = FileEntry::new("/app", b"binary", &packages, Some(0));
        let inv = Inventory {
            dependencies: [(packages[0].purl.clone(), packages[1].purl.clone())].into(),
            files: vec![file],
            packages,
        };
        let info = DocumentInfo {
            image_name: "app:1",
            image_digest: &format!("sha256:{}", "cd".repeat(32)),
            created: 1_700_000_000,
            tool: "rbuild-0.1.0",
        };
        let doc = cyclonedx_document(&info, &inv);
        assert_eq!(doc["specVersion"], "1.5");
        assert_eq!(doc["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(
            doc["metadata"]["tools"]["components"][0]["version"],
            "0.1.0"
        );
        let serial = doc["serialNumber"].as_str().unwrap();
        assert_eq!(serial.len(), "urn:uuid:".len() + 36);
        assert_eq!(&serial[23..24], "5", "{serial}");
        assert_eq!(doc, cyclonedx_document(&info, &inv), "deterministic");
        let c = doc["components"].as_array().unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c[0]["licenses"], json!([{"license": {"id": "MIT"}}]));
        assert_eq!(c[0]["hashes"][0]["alg"], "SHA-1");
        assert_eq!(
            c[1]["licenses"],
            json!([{"expression": "(GPL-2.0-or-later OR Artistic-1.0-Perl)"}])
        );
        assert_eq!(c[1]["cpe"], "cpe:2.3:a:a:b:v1.0.0:*:*:*:*:*:*:*");
        assert_eq!(
            c[2]["licenses"],
            json!([{"license": {"name": "Custom Licence"}}])
        );
        assert_eq!(c[3]["type"], "file");
        assert_eq!(
            doc["dependencies"],
            json!([{"ref": "pkg:golang/example.com/app@v1.0.0", "dependsOn": ["pkg:golang/github.com/a/b@v1.0.0"]}])
        );
    }

    #[test]
    fn serial_numbers_are_rfc4122_version_5() {
        // Python: str(uuid.uuid5(uuid.NAMESPACE_URL, "https://example.com/")).
        assert_eq!(
            serial_number("https://example.com/"),
            "urn:uuid:dd2c1780-811a-5296-81c5-178a0ef488bc"
        );
    }
}
