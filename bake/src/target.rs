//! A target as buildx spells it (field names of `docker buildx bake --print`), and how two definitions of
//! one target merge (`inherits`, several files, `--set`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

/// One image to build: the options of one `rbuild build`, named as in buildx's bake files.
///
/// Lists left empty and options left `None` are "not set": a merge keeps the other side's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Targets whose fields this one starts from (resolved away before printing).
    #[serde(default, skip_serializing)]
    pub inherits: Vec<String>,
    /// Manifest annotations (`--annotation`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Attestations (`type=sbom`, `type=provenance`); kept for `--print`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attest: Vec<String>,
    /// Build context directory, relative to the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Named contexts; `target:NAME` is another target's image.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contexts: BTreeMap<String, String>,
    /// Dockerfile, relative to the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// The Dockerfile's text, instead of a file.
    #[serde(
        default,
        rename = "dockerfile-inline",
        skip_serializing_if = "Option::is_none"
    )]
    pub dockerfile_inline: Option<String>,
    /// Build arguments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// Image labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Image names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Caches to import (`--cache-from`).
    #[serde(default, rename = "cache-from", skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    /// Caches to export (`--cache-to`).
    #[serde(default, rename = "cache-to", skip_serializing_if = "Vec::is_empty")]
    pub cache_to: Vec<String>,
    /// Dockerfile stage to build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Secrets (`--secret`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret: Vec<String>,
    /// SSH agents (`--ssh`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<String>,
    /// Platforms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Outputs (`-o`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
    /// Always ask the registry for base images (`--pull`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<bool>,
    /// Ignore the cache (`--no-cache`).
    #[serde(default, rename = "no-cache", skip_serializing_if = "Option::is_none")]
    pub no_cache: Option<bool>,
    /// Stages that ignore the cache (`--no-cache-filter`).
    #[serde(
        default,
        rename = "no-cache-filter",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub no_cache_filter: Vec<String>,
    /// Network of RUN steps (`--network`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `/dev/shm` size of RUN steps (`--shm-size`; compose `shm_size`).
    #[serde(default, rename = "shm-size", skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<String>,
    /// Extra `/etc/hosts` entries of RUN steps, `HOST=IP` or `HOST:IP` (`--add-host`; compose `extra_hosts`).
    #[serde(default, rename = "extra-hosts", skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// What the target is for (buildx's `description`; shown by `--print`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Resource limits of RUN steps, `TYPE=SOFT[:HARD]` (`--ulimit`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<String>,
    /// Entitlements granted to RUN steps (`--allow`: `network.host`, `security.insecure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<String>,
    /// What to do instead of building (`--call`: `check`, `outline`, `targets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<String>,
    /// BuildKit's per-build resource settings (buildx's `resources`): read and printed, not built with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<serde_json::Value>,
    /// BuildKit source policies (buildx's `policy`): read and printed, not built with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<serde_json::Value>,
}

/// Appends the entries of `more` not already in `list`.
fn append_new(list: &mut Vec<String>, more: &[String]) {
    for m in more {
        if !list.contains(m) {
            list.push(m.clone());
        }
    }
}

impl Target {
    /// Lays `over` on top of `self`, as buildx merges a target with a later definition of it (or a child
    /// with its parent): set options win, maps merge key by key, caches/secrets/ssh/annotations/attest
    /// accumulate, tags/platforms/outputs are replaced.
    pub fn merge(&mut self, over: &Target) {
        fn opt<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
            if b.is_some() {
                a.clone_from(b);
            }
        }
        fn replace(a: &mut Vec<String>, b: &[String]) {
            if !b.is_empty() {
                *a = b.to_vec();
            }
        }
        append_new(&mut self.annotations, &over.annotations);
        append_new(&mut self.attest, &over.attest);
        opt(&mut self.context, &over.context);
        self.contexts.extend(over.contexts.clone());
        opt(&mut self.dockerfile, &over.dockerfile);
        opt(&mut self.dockerfile_inline, &over.dockerfile_inline);
        self.args.extend(over.args.clone());
        self.labels.extend(over.labels.clone());
        replace(&mut self.tags, &over.tags);
        append_new(&mut self.cache_from, &over.cache_from);
        append_new(&mut self.cache_to, &over.cache_to);
        opt(&mut self.target, &over.target);
        append_new(&mut self.secret, &over.secret);
        append_new(&mut self.ssh, &over.ssh);
        replace(&mut self.platforms, &over.platforms);
        replace(&mut self.output, &over.output);
        opt(&mut self.pull, &over.pull);
        opt(&mut self.no_cache, &over.no_cache);
        replace(&mut self.no_cache_filter, &over.no_cache_filter);
        opt(&mut self.network, &over.network);
        opt(&mut self.shm_size, &over.shm_size);
        append_new(&mut self.extra_hosts, &over.extra_hosts);
        opt(&mut self.description, &over.description);
        self.ulimits.extend(over.ulimits.iter().cloned());
        self.entitlements.extend(over.entitlements.iter().cloned());
        opt(&mut self.call, &over.call);
        opt(&mut self.resources, &over.resources);
        self.policy.extend(over.policy.iter().cloned());
        if !over.inherits.is_empty() {
            self.inherits.clone_from(&over.inherits);
        }
    }

    /// The targets this one needs first: the `NAME` of each `target:NAME` context, in key order.
    pub fn target_contexts(&self) -> Vec<(&str, &str)> {
        self.contexts
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.strip_prefix("target:")?)))
            .collect()
    }
}

/// One `--set TARGET.KEY=VALUE` (or `KEY+=VALUE`, which appends to a list instead of replacing it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    /// Target name or glob (`*`, `app-*`).
    pub pattern: String,
    /// Field, with its map key when there is one (`args.VERSION`).
    pub key: String,
    /// Whether `+=` was used.
    pub append: bool,
    /// The value as given.
    pub value: String,
}

impl std::str::FromStr for Override {
    type Err = Error;

    /// Parses `TARGET.KEY=VALUE` or `TARGET.KEY+=VALUE`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Set {
            set: s.to_owned(),
            why: why.to_owned(),
        };
        let (lhs, value) = s
            .split_once('=')
            .ok_or_else(|| bad("expected TARGET.KEY=VALUE"))?;
        let (lhs, append) = match lhs.strip_suffix('+') {
            Some(l) => (l, true),
            None => (lhs, false),
        };
        let (pattern, key) = lhs
            .split_once('.')
            .ok_or_else(|| bad("expected TARGET.KEY=VALUE"))?;
        if pattern.is_empty() || key.is_empty() {
            return Err(bad("expected TARGET.KEY=VALUE"));
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            key: key.to_owned(),
            append,
            value: value.to_owned(),
        })
    }
}

impl Override {
    /// Whether this override applies to target `name` (`*` and `?` glob the name, as buildx does).
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.pattern.as_bytes(), name.as_bytes())
    }

    /// Applies the overrides for one key to `t`; `values` are the values of every `--set` of that key for
    /// this target, in order (several `--set x.tags=…` give several tags, as in buildx).
    pub(crate) fn apply(t: &mut Target, sets: &[&Override]) -> Result<(), Error> {
        let Some(first) = sets.first() else {
            return Ok(());
        };
        let bad = |why: String| Error::Set {
            set: format!("{}.{}={}", first.pattern, first.key, first.value),
            why,
        };
        let values: Vec<String> = sets.iter().map(|o| o.value.clone()).collect();
        let last = values.last().cloned().unwrap_or_default();
        let list = |l: &mut Vec<String>| {
            if !sets.iter().any(|o| o.append) {
                l.clear();
            }
            for v in &values {
                // `tags=a,b` is two tags, as buildx splits list values on commas (but not outputs/caches).
                l.push(v.clone());
            }
        };
        let boolean = |v: &str| -> Result<bool, Error> {
            match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad(format!("{v:?} is not a boolean"))),
            }
        };
        let (field, sub) = match first.key.split_once('.') {
            Some((f, s)) => (f, Some(s)),
            None => (first.key.as_str(), None),
        };
        match (field, sub) {
            ("args", Some(k)) => {
                t.args.insert(k.to_owned(), last);
            }
            ("labels", Some(k)) => {
                t.labels.insert(k.to_owned(), last);
            }
            ("contexts", Some(k)) => {
                t.contexts.insert(k.to_owned(), last);
            }
            ("context", None) => t.context = Some(last),
            ("dockerfile", None) => t.dockerfile = Some(last),
            ("dockerfile-inline", None) => t.dockerfile_inline = Some(last),
            ("target", None) => t.target = Some(last),
            ("network", None) => t.network = Some(last),
            ("shm-size", None) => t.shm_size = Some(last),
            ("pull", None) => t.pull = Some(boolean(&last)?),
            ("no-cache", None) => t.no_cache = Some(boolean(&last)?),
            ("tags", None) => {
                let mut split: Vec<String> = Vec::new();
                for v in &values {
                    split.extend(v.split(',').map(str::to_owned));
                }
                if !sets.iter().any(|o| o.append) {
                    t.tags.clear();
                }
                t.tags.extend(split);
            }
            ("platform" | "platforms", None) => {
                if !sets.iter().any(|o| o.append) {
                    t.platforms.clear();
                }
                for v in &values {
                    t.platforms.extend(v.split(',').map(str::to_owned));
                }
            }
            ("output", None) => list(&mut t.output),
            ("cache-from", None) => list(&mut t.cache_from),
            ("cache-to", None) => list(&mut t.cache_to),
            ("secrets" | "secret", None) => list(&mut t.secret),
            ("ssh", None) => list(&mut t.ssh),
            ("attest", None) => list(&mut t.attest),
            ("annotations", None) => list(&mut t.annotations),
            ("no-cache-filter", None) => list(&mut t.no_cache_filter),
            ("ulimits", None) => list(&mut t.ulimits),
            ("entitlements", None) => list(&mut t.entitlements),
            ("call", None) => t.call = Some(last),
            ("description", None) => t.description = Some(last),
            _ => {
                return Err(bad(format!(
                    "unknown key {:?} (known: args.NAME, labels.NAME, contexts.NAME, context, dockerfile, \
                     dockerfile-inline, target, tags, platform, output, cache-from, cache-to, secrets, ssh, \
                     attest, annotations, pull, no-cache, no-cache-filter, network, shm-size, ulimits, entitlements, \
                     call, description)",
                    first.key
                )))
            }
        }
        Ok(())
    }
}

/// `*` and `?` glob matching on bytes (target names are ASCII in practice).
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&pat[1..], s) || (!s.is_empty() && glob_match(pat, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob_match(&pat[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_options_and_tags_and_merges_maps_and_caches() {
        let mut base = Target {
            context: Some("a".into()),
            tags: vec!["x".into()],
            args: [("A".into(), "1".into()), ("B".into(), "1".into())].into(),
            cache_from: vec!["c1".into()],
            ..Target::default()
        };
        let over = Target {
            tags: vec!["y".into()],
            args: [("B".into(), "2".into())].into(),
            cache_from: vec!["c2".into(), "c1".into()],
            ..Target::default()
        };
        base.merge(&over);
        assert_eq!(base.context.as_deref(), Some("a"));
        assert_eq!(base.tags, ["y"]);
        assert_eq!(base.args["A"], "1");
        assert_eq!(base.args["B"], "2");
        assert_eq!(base.cache_from, ["c1", "c2"]);
    }

    #[test]
    fn override_parses_keys_appends_and_globs() {
        let o: Override = "app-*.args.V+=2".parse().unwrap();
        assert_eq!(o.pattern, "app-*");
        assert_eq!(o.key, "args.V");
        assert!(o.append);
        assert!(o.matches("app-web"));
        assert!(!o.matches("api"));
        assert!("*.tags".parse::<Override>().is_err());
        assert!("tags=x".parse::<Override>().is_err());
    }

    #[test]
    fn repeated_set_of_a_list_key_gives_every_value() {
        let mut t = Target {
            tags: vec!["old".into()],
            ..Target::default()
        };
        let a: Override = "t.tags=a:1".parse().unwrap();
        let b: Override = "t.tags=b:1,c:1".parse().unwrap();
        Override::apply(&mut t, &[&a, &b]).unwrap();
        assert_eq!(t.tags, ["a:1", "b:1", "c:1"]);
        let bad: Override = "t.nope=1".parse().unwrap();
        let err = Override::apply(&mut t, &[&bad]).unwrap_err().to_string();
        assert!(err.contains("unknown key \"nope\""), "{err}");
        let nb: Override = "t.no-cache=maybe".parse().unwrap();
        assert!(Override::apply(&mut t, &[&nb]).is_err());
    }
}

/// Whether a target's results leave the build (its tags, outputs, pushes, cache exports) or only feed
/// another target through a `target:` context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Asked for: everything the target says is exported.
    Requested,
    /// Only a context of another target: built into the store, nothing exported, as buildx.
    Dependency,
}

impl Target {
    /// The `rbuild build` flags and context for this target, context last. `dockerfile` is the file to
    /// read (a `dockerfile-inline` target's text already written to a file by the caller).
    ///
    /// Returns the flags and the names of options rbuild does not build with yet (warned about).
    ///
    /// # Errors
    /// None yet; kept for options rbuild may refuse.
    pub fn build_flags(
        &self,
        _name: &str,
        dockerfile: &str,
        role: Role,
    ) -> Result<(Vec<String>, Vec<&'static str>), Error> {
        let mut f: Vec<String> = vec!["-f".into(), dockerfile.to_owned()];
        let mut pair = |flag: &str, v: String| {
            f.push(flag.to_owned());
            f.push(v);
        };
        for (k, v) in &self.args {
            pair("--build-arg", format!("{k}={v}"));
        }
        for (k, v) in &self.labels {
            pair("--label", format!("{k}={v}"));
        }
        if let Some(t) = &self.target {
            pair("--target", t.clone());
        }
        for c in &self.cache_from {
            pair("--cache-from", c.clone());
        }
        for s in &self.secret {
            pair("--secret", s.clone());
        }
        for s in &self.ssh {
            pair("--ssh", s.clone());
        }
        for s in &self.no_cache_filter {
            pair("--no-cache-filter", s.clone());
        }
        if let Some(n) = &self.network {
            pair("--network", n.clone());
        }
        if !self.platforms.is_empty() {
            pair("--platform", self.platforms.join(","));
        }
        // `target:` contexts are the images of other targets (the caller hands them over); the others
        // are `rbuild build --build-context` values (a directory, docker-image://, a git or tarball URL…).
        for (k, v) in &self.contexts {
            if !v.starts_with("target:") {
                pair("--build-context", format!("{k}={v}"));
            }
        }
        if role == Role::Requested {
            for t in &self.tags {
                pair("-t", t.clone());
            }
            for o in &self.output {
                pair("-o", o.clone());
            }
            for c in &self.cache_to {
                pair("--cache-to", c.clone());
            }
            for a in &self.annotations {
                pair("--annotation", a.clone());
            }
            // Attestations are of the exported image (buildx: `attest` is the target's `--attest`).
            for a in &self.attest {
                pair("--attest", a.clone());
            }
        }
        let mut flags = f;
        if self.pull == Some(true) {
            flags.push("--pull".into());
        }
        if self.no_cache == Some(true) {
            flags.push("--no-cache".into());
        }
        for u in &self.ulimits {
            flags.push(format!("--ulimit={u}"));
        }
        for e in &self.entitlements {
            flags.push(format!("--allow={e}"));
        }
        if let Some(c) = &self.call {
            flags.push(format!("--call={c}"));
        }
        // Options read but not passed on; the caller warns about each.
        let mut ignored = Vec::new();
        if self.resources.is_some() {
            ignored.push("resources");
        }
        if !self.policy.is_empty() {
            ignored.push("policy");
        }
        if let Some(size) = &self.shm_size {
            flags.push(format!("--shm-size={size}"));
        }
        for h in &self.extra_hosts {
            flags.push(format!("--add-host={h}"));
        }
        flags.push(self.context.clone().unwrap_or_else(|| ".".into()));
        Ok((flags, ignored))
    }
}

#[cfg(test)]
mod flag_tests {
    use super::*;

    #[test]
    fn build_flags_spell_every_option_and_dependencies_export_nothing() {
        let t = Target {
            context: Some("api".into()),
            args: [("A".into(), "1".into())].into(),
            tags: vec!["api:1".into()],
            output: vec!["type=oci,dest=a.tar".into()],
            cache_to: vec!["type=inline".into()],
            contexts: [("base".into(), "target:base".into())].into(),
            platforms: vec!["linux/amd64".into()],
            no_cache: Some(true),
            attest: vec!["type=sbom".into()],
            shm_size: Some("128m".into()),
            extra_hosts: vec!["db=10.0.0.2".into()],
            ..Target::default()
        };
        let (f, ignored) = t
            .build_flags("api", "api/Dockerfile", Role::Requested)
            .unwrap();
        assert_eq!(
            f,
            [
                "-f",
                "api/Dockerfile",
                "--build-arg",
                "A=1",
                "--platform",
                "linux/amd64",
                "-t",
                "api:1",
                "-o",
                "type=oci,dest=a.tar",
                "--cache-to",
                "type=inline",
                "--attest",
                "type=sbom",
                "--no-cache",
                "--shm-size=128m",
                "--add-host=db=10.0.0.2",
                "api"
            ]
        );
        assert!(ignored.is_empty(), "{ignored:?}");
        let (dep, _) = t
            .build_flags("api", "api/Dockerfile", Role::Dependency)
            .unwrap();
        assert!(!dep
            .iter()
            .any(|x| x == "-t" || x == "-o" || x == "--cache-to"));
        let mut two = t.clone();
        two.platforms.push("linux/arm64".into());
        let (f, _) = two.build_flags("api", "f", Role::Requested).unwrap();
        assert!(f
            .windows(2)
            .any(|w| w == ["--platform", "linux/amd64,linux/arm64"]));
        let mut named = t;
        named.contexts.insert("src".into(), "../src".into());
        let (f, _) = named.build_flags("api", "f", Role::Requested).unwrap();
        let at = f.iter().position(|x| x == "--build-context").unwrap();
        assert_eq!(f[at + 1], "src=../src");
        assert!(!f.iter().any(|x| x.contains("target:")));
    }
}
