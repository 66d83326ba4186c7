//! Keeping secrets out of attestations: build-arg names that look secret, and a last pass that removes
//! every known secret value from every string of a document.

/// What a removed value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Parts of a build-arg name that mark its value as secret (matched case-insensitively, anywhere in the
/// name: `NPM_TOKEN`, `DB_PASSWORD`, `AWS_SECRET_ACCESS_KEY`, `GITHUB_AUTH`).
const SECRET_WORDS: &[&str] = &[
    "TOKEN",
    "PASSWORD",
    "PASSWD",
    "SECRET",
    "CREDENTIAL",
    "AUTH",
    "PRIVATE",
    "APIKEY",
    "API_KEY",
    "ACCESS_KEY",
];

/// Whether a build arg with this name is treated as a secret (its value never enters an attestation).
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_WORDS.iter().any(|w| upper.contains(w))
}

/// Secret values to scrub from documents.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    values: Vec<String>,
}

/// The shortest value scrubbed: shorter ones (`1`, `no`) would mangle unrelated text and are no secret.
const MIN_LEN: usize = 4;

impl Redactor {
    /// Adds a secret value (and, for a multi-line one, each of its non-trivial lines).
    pub fn add(&mut self, value: &str) {
        let mut push = |v: &str| {
            let v = v.trim();
            if v.len() >= MIN_LEN && !self.values.iter().any(|x| x == v) {
                self.values.push(v.to_owned());
            }
        };
        push(value);
        for line in value.lines() {
            push(line);
        }
        // Longest first, so that a value containing another is removed whole.
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// Replaces every occurrence of every secret value in every string (and object key) of `doc`.
    pub fn scrub(&self, doc: &mut serde_json::Value) {
        if self.values.is_empty() {
            return;
        }
        match doc {
            serde_json::Value::String(s) => self.scrub_str(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.scrub(v)),
            serde_json::Value::Object(map) => {
                let taken = std::mem::take(map);
                for (mut k, mut v) in taken {
                    self.scrub_str(&mut k);
                    self.scrub(&mut v);
                    map.insert(k, v);
                }
            }
            _ => {}
        }
    }

    fn scrub_str(&self, s: &mut String) {
        for v in &self.values {
            if s.contains(v.as_str()) {
                *s = s.replace(v.as_str(), REDACTED);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_names() {
        for n in [
            "NPM_TOKEN",
            "db_password",
            "AWS_SECRET_ACCESS_KEY",
            "GH_AUTH",
            "api_key",
        ] {
            assert!(looks_secret(n), "{n}");
        }
        for n in ["BASE", "NODE_VERSION", "HTTP_PROXY", "TARGETPLATFORM"] {
            assert!(!looks_secret(n), "{n}");
        }
    }

    #[test]
    fn scrub_removes_values_from_strings_and_keys() {
        let mut r = Redactor::default();
        r.add("hunter22\nsecond-line-secret\n");
        r.add("no");
        let mut doc = serde_json::json!({
            "args": {"x": "pre hunter22 post", "hunter22": 1},
            "list": ["second-line-secret", "no change", 3]
        });
        r.scrub(&mut doc);
        let text = doc.to_string();
        assert!(
            !text.contains("hunter22") && !text.contains("second-line"),
            "{text}"
        );
        assert!(text.contains("no change"), "short values stay: {text}");
        assert_eq!(doc["args"]["x"], "pre [redacted] post");
    }
}
