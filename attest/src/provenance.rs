//! SLSA Provenance v1 for an image build, as an in-toto Statement v1.
//!
//! Why v1 and not v0.2 (BuildKit's default): v1 is the version SLSA maintains (v0.2 is retired), its
//! `resolvedDependencies` and `buildDefinition`/`runDetails` split say exactly what min and max modes
//! need, and verifiers (slsa-verifier, in-toto) read both. BuildKit emits v1 with `version=v1` too.
//!
//! min: builder id, build type, external parameters (frontend, target, platform, non-secret build args,
//! secret *ids*), resolved dependencies (base images by manifest digest, `ADD` URLs with their checksum,
//! `ADD` git remotes with the commit), timestamps. max adds the steps (instruction, cache key, cache hit),
//! the Dockerfile's digest and text, and the build context's digest.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::format::{rfc3339, sha256_hex};
use crate::redact::{looks_secret, Redactor, REDACTED};
use crate::{Statement, Subject};

/// `predicateType` of SLSA Provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";

/// The build type rbuild's provenance declares; docs/ATTESTATIONS.md describes its parameters.
pub const BUILD_TYPE: &str =
    "https://github.com/rbuild/rbuild/blob/main/docs/ATTESTATIONS.md#build-type-dockerfile-v1";

/// How much the provenance says (`mode=min|max`, as buildx spells it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Parameters, dependencies and timestamps.
    #[default]
    Min,
    /// Also the steps with their cache keys, the Dockerfile and the context digest.
    Max,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "min" => Ok(Self::Min),
            "max" => Ok(Self::Max),
            other => Err(format!("mode must be min or max, not {other:?}")),
        }
    }
}

/// A base image the build resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The full reference (`docker.io/library/debian:bookworm`).
    pub reference: String,
    /// Its manifest digest (`sha256:...`) for the build's platform.
    pub digest: String,
}

/// The Dockerfile the build read.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Its path as given (relative to the context when it lies in it).
    pub path: String,
    /// Its text.
    pub text: String,
}

/// Everything the provenance of one image is made from.
pub struct Provenance<'a> {
    /// The image manifest(s) the statement is about.
    pub subject: Vec<Subject>,
    /// min or max.
    pub mode: Mode,
    /// `runDetails.builder.id` (rbuild and its version).
    pub builder_id: String,
    /// Build args (`--build-arg`), before redaction: secret-looking names lose their values here.
    pub build_args: &'a BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<&'a str>,
    /// The platform (`linux/amd64`).
    pub platform: String,
    /// Ids of `--secret`s and `--ssh` sockets (never their values).
    pub secret_ids: Vec<String>,
    /// The Dockerfile.
    pub dockerfile: &'a Dockerfile,
    /// The build graph and the node whose result is the image.
    pub graph: &'a graph::BuildGraph,
    /// The target's head node.
    pub head: graph::NodeId,
    /// The solve's cache keys and hits.
    pub solved: &'a solver::Solved,
    /// Base images by the reference the graph names them with.
    pub bases: &'a BTreeMap<String, ResolvedImage>,
    /// sha256 over the build context's files (max), when known.
    pub context_digest: Option<String>,
    /// Build start and end (seconds since the epoch).
    pub started: i64,
    /// See `started`.
    pub finished: i64,
    /// `SOURCE_DATE_EPOCH`: timestamps are clamped to it, so that two builds give the same bytes.
    pub source_date_epoch: Option<i64>,
    /// Secret values to scrub from the result (build-arg values of secret names, `--secret` contents).
    pub redactor: &'a Redactor,
}

impl Provenance<'_> {
    /// The in-toto statement, with secrets removed.
    pub fn statement(&self) -> Statement {
        let nodes = self.nodes();
        let mut redactor = self.redactor.clone();
        let mut args = BTreeMap::new();
        for (k, v) in self.build_args {
            if looks_secret(k) {
                redactor.add(v);
                args.insert(format!("build-arg:{k}"), REDACTED.to_owned());
            } else {
                args.insert(format!("build-arg:{k}"), v.clone());
            }
        }
        let mut external = json!({
            "frontend": "dockerfile.v0",
            "configSource": {
                "path": self.dockerfile.path,
                "digest": {"sha256": sha256_hex(self.dockerfile.text.as_bytes())},
            },
            "platform": self.platform,
            "args": args,
        });
        if let Some(t) = self.target {
            external["target"] = json!(t);
        }
        if !self.secret_ids.is_empty() {
            let ids: BTreeSet<&String> = self.secret_ids.iter().collect();
            external["secrets"] = json!(ids);
        }
        let mut build_definition = json!({
            "buildType": BUILD_TYPE,
            "externalParameters": external,
            "resolvedDependencies": self.dependencies(&nodes),
        });
        if self.mode == Mode::Max {
            let mut internal = json!({
                "dockerfile": self.dockerfile.text,
                "steps": self.steps(&nodes),
            });
            if let Some(d) = &self.context_digest {
                internal["context"] =
                    json!({"digest": {"sha256": d.trim_start_matches("sha256:")}});
            }
            build_definition["internalParameters"] = internal;
        }
        let clamp = |t: i64| self.source_date_epoch.map_or(t, |e| t.min(e));
        let mut predicate = json!({
            "buildDefinition": build_definition,
            "runDetails": {
                "builder": {"id": self.builder_id},
                "metadata": {
                    "startedOn": rfc3339(clamp(self.started)),
                    "finishedOn": rfc3339(clamp(self.finished)),
                },
            },
        });
        redactor.scrub(&mut predicate);
        Statement::new(self.subject.clone(), PREDICATE_TYPE, predicate)
    }

    /// The nodes the target depends on (itself included), in id order.
    fn nodes(&self) -> Vec<graph::NodeId> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![self.head];
        while let Some(id) = todo.pop() {
            if seen.insert(id.0) {
                todo.extend(self.graph.node(id).inputs.iter().copied());
            }
        }
        seen.into_iter().map(graph::NodeId).collect()
    }

    /// Base images, downloads and git checkouts, deduplicated and sorted by URI.
    fn dependencies(&self, nodes: &[graph::NodeId]) -> Vec<Value> {
        let mut deps = BTreeMap::new();
        for id in nodes {
            match &self.graph.node(*id).op {
                graph::Op::Image { reference, .. } => {
                    if let Some(r) = self.bases.get(reference) {
                        let uri = image_purl(&r.reference, &self.platform);
                        let hex = r.digest.trim_start_matches("sha256:");
                        deps.insert(uri.clone(), json!({"uri": uri, "digest": {"sha256": hex}}));
                    }
                }
                graph::Op::Http(h) => {
                    let mut d = json!({"uri": h.url});
                    if let Some(c) = &h.checksum {
                        d["digest"] = json!({"sha256": c.trim_start_matches("sha256:")});
                    }
                    deps.insert(h.url.clone(), d);
                }
                graph::Op::Git(g) => {
                    let uri = match &g.reference {
                        Some(r) => format!("{}#{r}", g.remote),
                        None => g.remote.clone(),
                    };
                    let mut d = json!({"uri": uri});
                    if let Some(c) = &g.checksum {
                        d["digest"] = json!({"gitCommit": c});
                    }
                    deps.insert(uri, d);
                }
                _ => {}
            }
        }
        deps.into_values().collect()
    }

    /// Every step with its cache key and whether the cache served it (max).
    fn steps(&self, nodes: &[graph::NodeId]) -> Vec<Value> {
        let cached: BTreeSet<usize> = self.solved.cached.iter().map(|n| n.0).collect();
        nodes
            .iter()
            .map(|id| {
                let n = self.graph.node(*id);
                let mut step = json!({
                    "id": id.0,
                    "instruction": n.name.instruction(),
                    "inputs": n.inputs.iter().map(|i| i.0).collect::<Vec<_>>(),
                    "cached": cached.contains(&id.0),
                });
                if !n.name.stage.is_empty() {
                    step["stage"] = json!(n.name.stage);
                }
                if let Some(k) = self.solved.keys.get(id) {
                    step["cacheKey"] = json!(k.0);
                }
                if let Some(span) = n.span {
                    step["line"] = json!(span.line);
                }
                step
            })
            .collect()
    }
}

/// `pkg:docker/NAME@TAG?platform=...` (the purl BuildKit uses for image materials).
fn image_purl(reference: &str, platform: &str) -> String {
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (reference, None),
    };
    let name = name.split('@').next().unwrap_or(name);
    let mut s = format!("pkg:docker/{name}");
    if let Some(t) = tag {
        s.push('@');
        s.push_str(&crate::sbom::purl_encode(t));
    }
    s.push_str("?platform=");
    s.push_str(&crate::sbom::purl_encode(platform));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn image_material_purl() {
        assert_eq!(
            image_purl("docker.io/library/debian:bookworm", "linux/amd64"),
            "pkg:docker/docker.io/library/debian@bookworm?platform=linux%2Famd64"
        );
        assert_eq!(
            image_purl("127.0.0.1:5000/node", "linux/arm64"),
            "pkg:docker/127.0.0.1:5000/node?platform=linux%2Farm64"
        );
    }

    fn graph_with_deps() -> (graph::BuildGraph, graph::NodeId) {
        let mut g = graph::BuildGraph::default();
        let name = |text: &str| graph::StepName {
            stage: String::new(),
            place: graph::Place::Other,
            text: text.to_owned(),
        };
        let base = g.add(
            graph::Op::Image {
                reference: "debian:bookworm".into(),
                platform: None,
            },
            vec![],
            None,
            name("debian:bookworm"),
        );
        let http = g.add(
            graph::Op::Http(graph::Http {
                url: "http://example.test/a.tgz".into(),
                checksum: Some(format!("sha256:{}", "cd".repeat(32))),
                filename: "a.tgz".into(),
            }),
            vec![],
            None,
            name("http://example.test/a.tgz"),
        );
        let copy = g.add(
            graph::Op::Merge,
            vec![base, http],
            None,
            name("ADD a.tgz /"),
        );
        (g, copy)
    }

    #[allow(clippy::too_many_arguments)]
    fn provenance<'a>(
        g: &'a graph::BuildGraph,
        head: graph::NodeId,
        solved: &'a solver::Solved,
        bases: &'a BTreeMap<String, ResolvedImage>,
        args: &'a BTreeMap<String, String>,
        df: &'a Dockerfile,
        redactor: &'a Redactor,
        mode: Mode,
    ) -> Provenance<'a> {
        Provenance {
            subject: vec![Subject::sha256("app", &"ab".repeat(32))],
            mode,
            builder_id: "rbuild test".into(),
            build_args: args,
            target: None,
            platform: "linux/amd64".into(),
            secret_ids: vec!["npmrc".into()],
            dockerfile: df,
            graph: g,
            head,
            solved,
            bases,
            context_digest: Some("ef".repeat(32)),
            started: 2_000_000_000,
            finished: 2_000_000_010,
            source_date_epoch: Some(1_700_000_000),
            redactor,
        }
    }

    #[test]
    fn min_and_max_contents_without_secrets() {
        let (g, head) = graph_with_deps();
        let solved = solver::Solved::default();
        let bases = BTreeMap::from([(
            "debian:bookworm".to_owned(),
            ResolvedImage {
                reference: "docker.io/library/debian:bookworm".into(),
                digest: format!("sha256:{}", "12".repeat(32)),
            },
        )]);
        let args = BTreeMap::from([
            ("NPM_TOKEN".to_owned(), "tok-very-secret".to_owned()),
            ("VERSION".to_owned(), "1.2".to_owned()),
        ]);
        let df = Dockerfile {
            path: "Dockerfile".into(),
            text: "FROM debian:bookworm\nRUN echo tok-very-secret s3cr3t-file\n".into(),
        };
        let mut redactor = Redactor::default();
        redactor.add("s3cr3t-file");
        let min =
            provenance(&g, head, &solved, &bases, &args, &df, &redactor, Mode::Min).statement();
        let text = String::from_utf8(min.to_bytes()).unwrap();
        assert!(
            !text.contains("tok-very-secret") && !text.contains("s3cr3t"),
            "{text}"
        );
        let p = &min.predicate;
        let deps = p["buildDefinition"]["resolvedDependencies"]
            .as_array()
            .unwrap();
        assert_eq!(deps.len(), 2, "{deps:?}");
        assert_eq!(deps[0]["uri"], "http://example.test/a.tgz");
        assert_eq!(deps[0]["digest"]["sha256"], "cd".repeat(32));
        assert_eq!(deps[1]["digest"]["sha256"], "12".repeat(32));
        let ext = &p["buildDefinition"]["externalParameters"];
        assert_eq!(ext["args"]["build-arg:VERSION"], "1.2");
        assert_eq!(ext["args"]["build-arg:NPM_TOKEN"], REDACTED);
        assert_eq!(ext["secrets"][0], "npmrc");
        assert!(p["buildDefinition"].get("internalParameters").is_none());
        // Clamped to SOURCE_DATE_EPOCH.
        assert_eq!(
            p["runDetails"]["metadata"]["finishedOn"],
            "2023-11-14T22:13:20Z"
        );

        let max =
            provenance(&g, head, &solved, &bases, &args, &df, &redactor, Mode::Max).statement();
        let text = String::from_utf8(max.to_bytes()).unwrap();
        assert!(
            !text.contains("tok-very-secret") && !text.contains("s3cr3t"),
            "{text}"
        );
        let internal = &max.predicate["buildDefinition"]["internalParameters"];
        assert_eq!(internal["steps"].as_array().unwrap().len(), 3);
        assert_eq!(internal["context"]["digest"]["sha256"], "ef".repeat(32));
        assert!(internal["dockerfile"]
            .as_str()
            .unwrap()
            .starts_with("FROM debian"));
    }
}
