//! The in-toto Statement (v1) every attestation is wrapped in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// An in-toto Statement: what (`subject`) the predicate speaks about, and the predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// The artifacts (here: image manifests) the statement is about.
    pub subject: Vec<Subject>,
    /// What the predicate is (`https://slsa.dev/provenance/v1`, `https://spdx.dev/Document`).
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The predicate, as JSON.
    pub predicate: serde_json::Value,
}

/// One subject: a name and its digests by algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// A name for the artifact (the image reference, or `_` when it has none).
    pub name: String,
    /// Digests by algorithm name (`sha256` → hex).
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// A subject with one sha256 digest (`hex` without the `sha256:` prefix).
    pub fn sha256(name: &str, hex: &str) -> Self {
        Self {
            name: name.to_owned(),
            digest: BTreeMap::from([("sha256".to_owned(), hex.to_owned())]),
        }
    }
}

impl Statement {
    /// A statement of `predicate_type` about `subject`.
    pub fn new(subject: Vec<Subject>, predicate_type: &str, predicate: serde_json::Value) -> Self {
        Self {
            type_: STATEMENT_TYPE.to_owned(),
            subject,
            predicate_type: predicate_type.to_owned(),
            predicate,
        }
    }

    /// The statement as JSON bytes: keys sorted (serde_json's map is a BTreeMap here), no whitespace, so
    /// that the same inputs always give the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("a statement is plain JSON data");
        serde_json::to_vec(&value).expect("a JSON value always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_bytes_are_stable_and_sorted() {
        let s = Statement::new(
            vec![Subject::sha256("app", "00")],
            "https://slsa.dev/provenance/v1",
            serde_json::json!({"z": 1, "a": 2}),
        );
        let text = String::from_utf8(s.to_bytes()).unwrap();
        assert_eq!(
            text,
            r#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"a":2,"z":1},"predicateType":"https://slsa.dev/provenance/v1","subject":[{"digest":{"sha256":"00"},"name":"app"}]}"#
        );
        assert_eq!(text.as_bytes(), s.to_bytes());
    }
}
