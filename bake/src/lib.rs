//! Bake files: `compose.yaml` and `docker-bake.hcl`/`.json` read into one [`Definition`] of targets and
//! groups, and resolved into the targets to build ([`Resolved`]), as `docker buildx bake` does.
//!
//! This crate reads files and resolves names: variables (defaults, types, validations, environment
//! overrides), user-defined `function` blocks, `target.NAME.FIELD` references, `matrix`, `inherits`,
//! groups, `--set` overrides ([`Override`]), buildx's built-in HCL functions ([`funcs::NAMES`]) and
//! buildx's `--print` JSON. It builds nothing: the binary turns each resolved [`Target`] into the options
//! of one `rbuild build`. HCL is parsed by `hcl-rs` and evaluated by our own evaluator with go-cty's
//! semantics; YAML is read by `serde-saphyr`.
//!
//! ```
//! use bake::{load, SourceFile};
//! let hcl = r#"
//! variable "TAG" { default = "1" }
//! group "default" { targets = ["app"] }
//! target "app" { tags = ["app:${TAG}"] }
//! "#;
//! let file = SourceFile { name: "docker-bake.hcl".into(), dir: ".".into(), text: hcl.into() };
//! let def = load(&[file], &|v| (v == "TAG").then(|| "2".to_owned())).unwrap();
//! let resolved = def.resolve(&[], &[]).unwrap();
//! assert_eq!(resolved.targets["app"].tags, ["app:2"]);
//! ```
#![forbid(unsafe_code)]

mod compose;
mod eval;
pub mod funcs;
mod hcl_file;
pub mod schedule;
mod semver;
mod target;
mod time;
mod types;
mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use target::{Override, Role, Target};

/// An error reading or resolving bake files; messages name the file and what in it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("reading bake file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid HCL, JSON or YAML (the message has the line and column).
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong, with its place.
        message: String,
    },
    /// An expression or a field of a file is wrong.
    #[error("{file}: {what}: {message}")]
    Eval {
        /// The file.
        file: String,
        /// Which block and attribute.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A `--set` is malformed or names an unknown key.
    #[error("--set {set}: {why}")]
    Set {
        /// The `--set` as given.
        set: String,
        /// What is wrong.
        why: String,
    },
    /// A name is neither a target nor a group.
    #[error("no target or group named {name:?} (known: {known})")]
    Unknown {
        /// The name.
        name: String,
        /// The names the files define.
        known: String,
    },
    /// `inherits`, a group or a `target:` context refers back to itself.
    #[error("{kind} cycle: {chain}")]
    Cycle {
        /// `inherits`, `group` or `contexts`.
        kind: &'static str,
        /// The names around the cycle.
        chain: String,
    },
    /// A `dockerfile-inline` could not be written for the build.
    #[error("writing the inline Dockerfile of target {target:?} to {path}")]
    Write {
        /// The target.
        target: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No bake file was given and none of the default names exists.
    #[error("no bake file found: looked for {0} (or give -f FILE)")]
    NoFile(String),
}

/// A bake file's name, its directory (Compose paths are relative to it) and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in errors (the path as given).
    pub name: String,
    /// The directory the file is in.
    pub dir: PathBuf,
    /// The contents.
    pub text: String,
}

/// The files `docker buildx bake` reads when given no `-f`, in this order (later ones override).
pub const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
    "docker-bake.json",
    "docker-bake.hcl",
    "docker-bake.override.json",
    "docker-bake.override.hcl",
];

/// Reads `paths` (`-f`), or the [`DEFAULT_FILES`] that exist in `dir` when `paths` is empty.
///
/// # Errors
/// A file that cannot be read, or no file at all.
pub fn read_files(paths: &[PathBuf], dir: &Path) -> Result<Vec<SourceFile>, Error> {
    let chosen: Vec<PathBuf> = if paths.is_empty() {
        DEFAULT_FILES
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.is_file())
            .collect()
    } else {
        paths.to_vec()
    };
    if chosen.is_empty() {
        return Err(Error::NoFile(DEFAULT_FILES.join(", ")));
    }
    chosen
        .into_iter()
        .map(|path| {
            let text = fs_err::read_to_string(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let shown = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            Ok(SourceFile {
                name: shown.display().to_string(),
                dir: shown.parent().map(Path::to_path_buf).unwrap_or_default(),
                text,
            })
        })
        .collect()
}

/// What the files define: targets (matrix already expanded, `inherits` not yet applied) and groups.
#[derive(Clone, Debug, Default)]
pub struct Definition {
    /// Targets by name; a target defined twice is merged, the later definition on top.
    pub targets: BTreeMap<String, Target>,
    /// Groups: name → member targets or groups, in order.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Matrix targets: the block's name → the names it expanded to.
    pub matrix: BTreeMap<String, Vec<String>>,
}

impl Definition {
    fn add_target(&mut self, name: &str, t: &Target) {
        self.targets
            .entry(name.to_owned())
            .and_modify(|old| old.merge(t))
            .or_insert_with(|| t.clone());
    }

    fn known(&self) -> String {
        let mut names: Vec<&str> = self
            .targets
            .keys()
            .chain(self.groups.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    }
}

/// Reads every file into one [`Definition`]: Compose files first contribute their services, then the HCL
/// and JSON files are evaluated together (their variables are shared), in the order given.
/// `env` looks up environment variables (HCL variable overrides, Compose interpolation).
///
/// # Errors
/// A file that does not parse or evaluate, naming the file and the block.
pub fn load(
    files: &[SourceFile],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Definition, Error> {
    let mut def = Definition::default();
    let mut hcl = Vec::new();
    for f in files {
        let lower = f.name.to_ascii_lowercase();
        if lower.ends_with(".yml") || lower.ends_with(".yaml") {
            compose::load(&f.name, &f.text, &f.dir, env, &mut def)?;
        } else if lower.ends_with(".json") {
            hcl.push(hcl_file::parse_json(&f.name, &f.text)?);
        } else {
            hcl.push(hcl_file::parse_hcl(&f.name, &f.text)?);
        }
    }
    hcl_file::evaluate(&hcl, env, &mut def)?;
    Ok(def)
}

/// The targets to build, fully resolved (`inherits`, `--set`, defaults), and the order asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// Every target to build, including those only needed through a `target:` context.
    pub targets: BTreeMap<String, Target>,
    /// The targets asked for (groups and matrix names expanded), in order.
    pub requested: Vec<String>,
    /// The groups asked for, with their targets (for `--print`).
    pub groups: BTreeMap<String, Vec<String>>,
}

impl Definition {
    /// Resolves `names` (targets, groups or matrix names; `default` when empty) with the `--set`
    /// overrides `sets`.
    ///
    /// # Errors
    /// An unknown name, a cycle, or a bad `--set`.
    pub fn resolve(&self, names: &[String], sets: &[Override]) -> Result<Resolved, Error> {
        let names: Vec<String> = if names.is_empty() {
            vec!["default".to_owned()]
        } else {
            names.to_vec()
        };
        let mut requested = Vec::new();
        let mut groups = BTreeMap::new();
        for n in &names {
            let mut expanded = Vec::new();
            self.expand(n, &mut Vec::new(), &mut expanded)?;
            if self.groups.contains_key(n) {
                groups.insert(n.clone(), expanded.clone());
            }
            for e in expanded {
                if !requested.contains(&e) {
                    requested.push(e);
                }
            }
        }
        if groups.is_empty() {
            groups.insert("default".to_owned(), requested.clone());
        }
        let mut targets = BTreeMap::new();
        let mut todo: Vec<String> = requested.clone();
        while let Some(name) = todo.pop() {
            if targets.contains_key(&name) {
                continue;
            }
            let mut t = self.inherited(&name, &mut Vec::new())?;
            apply_sets(&name, &mut t, sets)?;
            if t.context.is_none() {
                t.context = Some(".".to_owned());
            }
            if t.dockerfile.is_none() && t.dockerfile_inline.is_none() {
                t.dockerfile = Some("Dockerfile".to_owned());
            }
            for (_, dep) in t.target_contexts() {
                if !self.targets.contains_key(dep) {
                    return Err(Error::Unknown {
                        name: format!("target:{dep} (a context of {name})"),
                        known: self.known(),
                    });
                }
                todo.push(dep.to_owned());
            }
            targets.insert(name, t);
        }
        let resolved = Resolved {
            targets,
            requested,
            groups,
        };
        resolved.build_order()?;
        Ok(resolved)
    }

    /// Expands a target, group or matrix name into target names (depth first, in order).
    fn expand(
        &self,
        name: &str,
        seen: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<(), Error> {
        if let Some(members) = self.groups.get(name) {
            if seen.iter().any(|s| s == name) {
                seen.push(name.to_owned());
                return Err(Error::Cycle {
                    kind: "group",
                    chain: seen.join(" -> "),
                });
            }
            seen.push(name.to_owned());
            for m in members {
                // A group may list itself as a target of the same name (compose services named like a group).
                if m == name && self.targets.contains_key(m) {
                    out.push(m.clone());
                    continue;
                }
                self.expand(m, seen, out)?;
            }
            seen.pop();
            return Ok(());
        }
        if let Some(names) = self.matrix.get(name) {
            out.extend(names.iter().cloned());
            return Ok(());
        }
        if self.targets.contains_key(name) {
            if !out.iter().any(|o| o == name) {
                out.push(name.to_owned());
            }
            return Ok(());
        }
        Err(Error::Unknown {
            name: name.to_owned(),
            known: self.known(),
        })
    }

    /// A target with its `inherits` applied (parents first, in order; the target's own fields on top).
    fn inherited(&self, name: &str, chain: &mut Vec<String>) -> Result<Target, Error> {
        if chain.iter().any(|c| c == name) {
            chain.push(name.to_owned());
            return Err(Error::Cycle {
                kind: "inherits",
                chain: chain.join(" -> "),
            });
        }
        let own = self.targets.get(name).ok_or_else(|| Error::Unknown {
            name: name.to_owned(),
            known: self.known(),
        })?;
        chain.push(name.to_owned());
        let mut t = Target::default();
        for parent in &own.inherits {
            let p = self.inherited(parent, chain)?;
            t.merge(&p);
        }
        chain.pop();
        t.merge(own);
        t.inherits.clear();
        Ok(t)
    }
}

/// Applies the `--set`s matching `name`, key by key in the order they were given.
fn apply_sets(name: &str, t: &mut Target, sets: &[Override]) -> Result<(), Error> {
    let matching: Vec<&Override> = sets.iter().filter(|s| s.matches(name)).collect();
    let mut keys: Vec<&str> = Vec::new();
    for s in &matching {
        if !keys.contains(&s.key.as_str()) {
            keys.push(&s.key);
        }
    }
    for k in keys {
        let of_key: Vec<&Override> = matching.iter().copied().filter(|s| s.key == k).collect();
        Override::apply(t, &of_key)?;
    }
    Ok(())
}

impl Resolved {
    /// The targets in an order where each comes after the targets its `target:` contexts name.
    ///
    /// # Errors
    /// A cycle of `target:` contexts.
    pub fn build_order(&self) -> Result<Vec<String>, Error> {
        fn visit(
            r: &Resolved,
            name: &str,
            path: &mut Vec<String>,
            out: &mut Vec<String>,
        ) -> Result<(), Error> {
            if out.iter().any(|o| o == name) {
                return Ok(());
            }
            if path.iter().any(|p| p == name) {
                path.push(name.to_owned());
                return Err(Error::Cycle {
                    kind: "contexts",
                    chain: path.join(" -> "),
                });
            }
            path.push(name.to_owned());
            for (_, dep) in r.targets[name].target_contexts() {
                visit(r, dep, path, out)?;
            }
            path.pop();
            out.push(name.to_owned());
            Ok(())
        }
        let mut out = Vec::new();
        for name in self.requested.iter().chain(self.targets.keys()) {
            visit(self, name, &mut Vec::new(), &mut out)?;
        }
        Ok(out)
    }

    /// The resolved definition as `docker buildx bake --print` prints it: `{"group": …, "target": …}`,
    /// keys sorted, two-space indent.
    pub fn to_json(&self) -> String {
        let groups: BTreeMap<&String, serde_json::Value> = self
            .groups
            .iter()
            .map(|(g, ts)| (g, serde_json::json!({ "targets": ts })))
            .collect();
        let v = serde_json::json!({ "group": groups, "target": self.targets });
        serde_json::to_string_pretty(&sorted(v)).expect("targets always serialize")
    }
}

/// `rbuild bake`'s own flags, which every target asked for gets (`--push`, `--load`) or every target gets.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `--jobs`.
    pub jobs: Option<usize>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `--push` (targets asked for only).
    pub push: bool,
    /// `--load` (targets asked for only).
    pub load: bool,
    /// `--insecure-registry`.
    pub insecure_registries: Vec<String>,
}

impl Resolved {
    /// The `rbuild build` command line of target `name` (`rbuild build FLAGS… CONTEXT`), and the options
    /// it has that rbuild does not build with yet. A `dockerfile-inline` is written into `inline_dir`.
    ///
    /// # Errors
    /// What [`Target::build_flags`] refuses, or the inline Dockerfile not written.
    pub fn build_argv(
        &self,
        name: &str,
        run: &RunOptions,
        inline_dir: &Path,
    ) -> Result<(Vec<String>, Vec<&'static str>), Error> {
        let t = &self.targets[name];
        let role = if self.requested.iter().any(|r| r == name) {
            Role::Requested
        } else {
            Role::Dependency
        };
        let dockerfile = match (&t.dockerfile_inline, &t.dockerfile) {
            (Some(text), _) => {
                let path = inline_dir.join(format!("{name}.Dockerfile"));
                fs_err::write(&path, text).map_err(|source| Error::Write {
                    target: name.to_owned(),
                    path: path.clone(),
                    source,
                })?;
                path
            }
            (None, df) => Path::new(t.context.as_deref().unwrap_or("."))
                .join(df.as_deref().unwrap_or("Dockerfile")),
        };
        let (flags, ignored) = t.build_flags(name, &dockerfile.display().to_string(), role)?;
        let mut argv: Vec<String> = vec!["rbuild".into(), "build".into()];
        if let Some(j) = run.jobs {
            argv.push(format!("--jobs={j}"));
        }
        let asked = role == Role::Requested;
        for (on, flag) in [
            (run.no_cache, "--no-cache"),
            (run.pull, "--pull"),
            (run.push && asked, "--push"),
            (run.load && asked, "--load"),
        ] {
            if on {
                argv.push(flag.to_owned());
            }
        }
        for r in &run.insecure_registries {
            argv.push(format!("--insecure-registry={r}"));
        }
        argv.extend(flags);
        Ok((argv, ignored))
    }
}

/// `v` with every object's keys in sorted order, whatever map serde_json was built with (Go's encoding/json
/// sorts map keys; buildx's output is compared against this).
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let b: BTreeMap<String, serde_json::Value> =
                m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::Value::Object(b.into_iter().collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
