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
//!
//! Besides step records, the store's cache table holds a few other families of records; every one is
//! listed in [`RecordFamily`] with the version its keys carry, so that no crate invents a key format of
//! its own.

use sha2::{Digest as _, Sha256};

/// Version of the key encoding; bump with any change to the table above.
pub const CACHE_KEY_VERSION: u32 = 2;

/// A family of records in the store's cache table, by the form of its keys.
///
/// | family | key | value | version |
/// |---|---|---|---|
/// | `Step` | a [`CacheKey`] (hex) | the step's outcome (layers) | [`CACHE_KEY_VERSION`] |
/// | `Explain` | `explain:` + a step's stable identity | the [`KeyParts`] of its last key | [`CACHE_KEY_VERSION`] |
/// | `ContextTree` | `context-tree-v1 ` + blake3 of the stat fingerprints of a COPY's selection | that selection's content key | 1 |
/// | `ExportConvert` | `export-convert-v1 ` + layer digest, compression, level, epoch | the converted layer | 1 |
/// | `CacheMountExport` | `cache-mount-export-v1 ` + compression, stat fingerprint of the mount's tree | the exported mount's layer | 1 |
///
/// Bump a family's version (its prefix) whenever what its key covers or its value means changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFamily {
    /// Step records, keyed by cache key.
    Step,
    /// The key parts of a step's last build, to explain its next miss.
    Explain,
    /// A COPY selection's content key, by the stat fingerprint of the files it reads.
    ContextTree,
    /// A layer converted to another compression or with clamped timestamps.
    ExportConvert,
    /// The layer of an exported cache mount, by the tree it was made from.
    CacheMountExport,
}

impl RecordFamily {
    /// The prefix of this family's keys (empty for step records, which are bare cache keys).
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Step => "",
            Self::Explain => "explain:",
            Self::ContextTree => "context-tree-v1 ",
            Self::ExportConvert => "export-convert-v1 ",
            Self::CacheMountExport => "cache-mount-export-v1 ",
        }
    }

    /// The key of a record of this family: the prefix, then `rest`.
    pub fn key(self, rest: impl std::fmt::Display) -> String {
        format!("{}{rest}", self.prefix())
    }
}

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
    #[test]
    fn record_families_have_distinct_versioned_prefixes() {
        use super::RecordFamily::*;
        let all = [Step, Explain, ContextTree, ExportConvert, CacheMountExport];
        for a in all {
            for b in all {
                if a != b && !a.prefix().is_empty() && !b.prefix().is_empty() {
                    assert!(!a.prefix().starts_with(b.prefix()), "{a:?} / {b:?}");
                }
            }
        }
        // A step record's key is a bare hex cache key: no other family's key can look like one.
        for f in [ContextTree, ExportConvert, CacheMountExport] {
            assert!(f.prefix().contains("-v"), "{f:?} carries no version");
            assert!(!f.key("x").chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(Explain.key("Dockerfile#2"), "explain:Dockerfile#2");
    }

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
