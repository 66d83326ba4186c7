//! Cache keys: what decides a node's result, hashed canonically.
//!
//! | field                     | enters the key | why                                                        |
//! |---------------------------|----------------|------------------------------------------------------------|
//! | `CACHE_KEY_VERSION`       | yes            | a format change must never reuse old records               |
//! | op (canonical JSON)       | yes            | argv, env, cwd, user, network, mounts (not cache contents) |
//! | input cache keys, in order| yes            | a changed parent changes every child                       |
//! | content key from worker   | yes            | base image manifest digest; digest of exactly the context  |
//! |                           |                | files a COPY reads (path, content, mode, uid/gid, symlink  |
//! |                           |                | target; never mtime; mode bits omitted under `--chmod`);   |
//! |                           |                | a download's sha256 (its `--checksum`, or the digest of    |
//! |                           |                | the bytes fetched this build); a git source's commit (what |
//! |                           |                | its ref resolves to now); for RUN, build-wide options      |
//! |                           |                | that differ from the default (`run-options: network=none`) |
//! | node name, span, stage    | no             | renaming a stage or moving a line must not bust the cache  |
//! | secret values, cache-mount contents | no   | they never decide what the layer is allowed to contain    |
//!
//! Change the table and bump [`CACHE_KEY_VERSION`] together.

use sha2::{Digest as _, Sha256};

/// Version of the key encoding; bump with any change to the table above.
pub const CACHE_KEY_VERSION: u32 = 2;

/// A node's cache key: hex sha256 over the canonical encoding.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct CacheKey(pub String);

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The parts a key is made of, kept so a miss can be explained.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyParts {
    /// Canonical op bytes (as UTF-8 JSON).
    pub op: String,
    /// Input cache keys, in input order.
    pub inputs: Vec<CacheKey>,
    /// Worker-provided content key.
    pub content: Option<String>,
}

impl KeyParts {
    /// Hashes the parts into a key. Each part is length-prefixed so no two encodings collide.
    pub fn key(&self) -> CacheKey {
        let mut h = Sha256::new();
        let mut field = |tag: &[u8], bytes: &[u8]| {
            h.update(tag);
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field(b"v", &CACHE_KEY_VERSION.to_le_bytes());
        field(b"op", self.op.as_bytes());
        for i in &self.inputs {
            field(b"in", i.0.as_bytes());
        }
        if let Some(c) = &self.content {
            field(b"content", c.as_bytes());
        }
        CacheKey(hex::encode(h.finalize()))
    }

    /// One line saying why `self` differs from `previous`, for a cache miss.
    pub fn explain_change(&self, previous: &KeyParts) -> String {
        if self.inputs != previous.inputs {
            return "parent step changed".to_owned();
        }
        if self.content != previous.content {
            let options =
                |c: &Option<String>| c.as_deref().is_some_and(|c| c.starts_with("run-options:"));
            if options(&self.content) || options(&previous.content) {
                return "build options changed (--network, --no-new-privileges)".to_owned();
            }
            return "files read by this step changed".to_owned();
        }
        if self.op != previous.op {
            return explain_op_change(&previous.op, &self.op);
        }
        "cache key format changed".to_owned()
    }
}

/// Names the first top-level op field that differs (`env changed`, `args changed`).
fn explain_op_change(old: &str, new: &str) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (
        serde_json::from_str::<serde_json::Value>(old),
        serde_json::from_str::<serde_json::Value>(new),
    ) else {
        return "instruction changed".to_owned();
    };
    for (k, v) in &b {
        if a.get(k) != Some(v) {
            if k == "env" {
                return describe_env_change(a.get(k), v);
            }
            return format!("{k} changed");
        }
    }
    "instruction changed".to_owned()
}

fn describe_env_change(old: Option<&serde_json::Value>, new: &serde_json::Value) -> String {
    let list = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (list(old), list(Some(new)));
    for kv in &b {
        if !a.contains(kv) {
            let name = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            return format!("variable {name} changed");
        }
    }
    for kv in &a {
        if !b.contains(kv) {
            let name = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            return format!("variable {name} removed");
        }
    }
    "environment changed".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(op: &str, inputs: &[&str], content: Option<&str>) -> KeyParts {
        KeyParts {
            op: op.into(),
            inputs: inputs.iter().map(|s| CacheKey((*s).into())).collect(),
            content: content.map(Into::into),
        }
    }

    #[test]
    fn keys_are_stable_and_sensitive() {
        let a = parts("{}", &["x"], None);
        assert_eq!(a.key(), parts("{}", &["x"], None).key());
        assert_ne!(a.key(), parts("{}", &["y"], None).key());
        assert_ne!(a.key(), parts("{}", &["x"], Some("c")).key());
        // length prefixes: moving bytes between fields changes the key
        assert_ne!(
            parts("ab", &["c"], None).key(),
            parts("a", &["bc"], None).key()
        );
    }

    #[test]
    fn explains_env_change() {
        let old = parts(
            r#"{"op":"exec","args":["x"],"env":["A=1","VERSION=1"]}"#,
            &[],
            None,
        );
        let new = parts(
            r#"{"op":"exec","args":["x"],"env":["A=1","VERSION=2"]}"#,
            &[],
            None,
        );
        assert_eq!(new.explain_change(&old), "variable VERSION changed");
        let new = parts(
            r#"{"op":"exec","args":["y"],"env":["A=1","VERSION=1"]}"#,
            &[],
            None,
        );
        assert_eq!(new.explain_change(&old), "args changed");
        let new = parts(&old.op, &["p"], None);
        assert_eq!(new.explain_change(&old), "parent step changed");
    }
}
