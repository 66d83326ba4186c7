//! `--call outline` and `--call targets`: what a target takes (build args, secrets, ssh) and which
//! stages there are, with the descriptions from the comments above them (`# name description`), as
//! BuildKit's `frontend.outline` / `frontend.targets` subrequests compute them and buildx prints them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::instructions::{self, Command};
use crate::parser::{Dockerfile, Instruction};
use crate::shell::{Env, Lex};

/// A build arg of the outline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlineArg {
    /// The ARG's name.
    pub name: String,
    /// From the comment above it (`# NAME description`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Its value: the `--build-arg`, else its default.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Line of the ARG.
    #[serde(skip)]
    pub line: usize,
}

/// A secret (or ssh agent) a RUN of the target mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlineSecret {
    /// Its id.
    pub name: String,
    /// `required=true`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Line of the RUN.
    #[serde(skip)]
    pub line: usize,
}

/// What a target takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outline {
    /// The target stage's name (empty for an unnamed last stage).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The stage's description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Build args the target uses, by line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<OutlineArg>,
    /// Secrets its RUNs mount.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<OutlineSecret>,
    /// SSH agents its RUNs mount.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<OutlineSecret>,
}

/// A stage, as `--call targets` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Stage name (lowercase), empty when unnamed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The last stage.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// From the comment above its FROM.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The FROM image or stage, as written.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub base: String,
    /// `--platform`, as written.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
}

/// BuildKit's `getDocComment`: the first comment line that starts with `NAME `, without it.
fn doc_comment(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name} ")))
        .unwrap_or_default()
        .to_owned()
}

struct Stage<'a> {
    from: &'a Instruction,
    base: String,
    name: String,
    platform: String,
    cmds: Vec<(&'a Instruction, Command)>,
}

fn stages(df: &Dockerfile) -> (Vec<&Instruction>, Vec<Stage<'_>>) {
    let mut metas = Vec::new();
    let mut out: Vec<Stage<'_>> = Vec::new();
    for ins in &df.instructions {
        let Ok(cmd) = instructions::typed(ins) else {
            continue;
        };
        match cmd {
            Command::From {
                image,
                name,
                platform,
            } => out.push(Stage {
                from: ins,
                base: image,
                name: name.unwrap_or_default(),
                platform: platform.unwrap_or_default(),
                cmds: Vec::new(),
            }),
            cmd => match out.last_mut() {
                Some(s) => s.cmds.push((ins, cmd)),
                None if matches!(cmd, Command::Arg(_)) => metas.push(ins),
                None => {}
            },
        }
    }
    (metas, out)
}

/// The stages of `df` (`--call targets`).
pub fn targets(df: &Dockerfile) -> Vec<Target> {
    let (_, stages) = stages(df);
    let n = stages.len();
    stages
        .into_iter()
        .enumerate()
        .map(|(i, s)| Target {
            description: doc_comment(&s.from.comments, &s.name),
            name: s.name,
            default: i + 1 == n,
            base: s.base,
            platform: s.platform,
        })
        .collect()
}

/// Where an ARG's value and description come from.
#[derive(Clone)]
struct ArgInfo {
    value: Option<String>,
    description: String,
    line: usize,
    deps: BTreeSet<String>,
}

/// What `target` (the last stage when `None`) takes (`--call outline`); `None` when there is no such
/// stage.
pub fn outline(
    df: &Dockerfile,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> Option<Outline> {
    let lex = Lex::new(df.directives.escape);
    let (metas, stages) = stages(df);
    let t = match target {
        Some(t) => stages.iter().position(|s| s.name.eq_ignore_ascii_case(t))?,
        None => stages.len().checked_sub(1)?,
    };
    // Global ARGs: their values (build args win) and definitions.
    let mut globals: Vec<(String, String)> = Vec::new();
    let mut global_info: BTreeMap<String, ArgInfo> = BTreeMap::new();
    for ins in &metas {
        let Ok(Command::Arg(args)) = instructions::typed(ins) else {
            continue;
        };
        for (k, default) in args {
            let mut deps = BTreeSet::new();
            let value = match (build_args.get(&k), default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => {
                    let rec = Recorder::new(&globals);
                    let v = lex.process_word(&d, &rec).ok();
                    deps = rec.used.into_inner();
                    deps.remove(&k);
                    v
                }
                (None, None) => None,
            };
            if let Some(v) = &value {
                globals.retain(|(g, _)| *g != k);
                globals.push((k.clone(), v.clone()));
            }
            global_info.insert(
                k.clone(),
                ArgInfo {
                    value,
                    description: doc_comment(&ins.comments, &k),
                    line: ins.span.line,
                    deps,
                },
            );
        }
    }
    // The stages the target needs, target first.
    let index = |name: &str, before: usize| {
        stages[..before]
            .iter()
            .position(|s| !s.name.is_empty() && s.name.eq_ignore_ascii_case(name))
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
    };
    let mut order = Vec::new();
    let mut todo = vec![t];
    while let Some(i) = todo.pop() {
        if order.contains(&i) {
            continue;
        }
        order.push(i);
        let s = &stages[i];
        let base = lex.process_word(&s.base, &globals).unwrap_or_default();
        let mut next: Vec<usize> = index(&base, i).into_iter().collect();
        for (_, cmd) in &s.cmds {
            let froms: Vec<String> = match cmd {
                Command::Copy(c) => c.from.clone().into_iter().collect(),
                Command::Run(r) => r
                    .mounts
                    .iter()
                    .filter_map(|m| mount_opt(m, "from"))
                    .collect(),
                _ => Vec::new(),
            };
            next.extend(froms.iter().filter_map(|f| index(f, i)));
        }
        todo.extend(next.into_iter().rev());
    }
    let mut out = Outline {
        name: stages[t].name.clone(),
        description: doc_comment(&stages[t].from.comments, &stages[t].name),
        ..Outline::default()
    };
    let mut seen_args = BTreeSet::new();
    let mut seen_secrets = BTreeSet::new();
    let mut seen_ssh = BTreeSet::new();
    for &i in &order {
        let s = &stages[i];
        // Global ARGs used by FROM (and what their defaults used), then the stage's ARGs.
        let mut used: Vec<(String, ArgInfo)> = Vec::new();
        let rec = Recorder::new(&globals);
        let _ = lex.process_word(&s.base, &rec);
        let _ = lex.process_word(&s.platform, &rec);
        let mut from_used: Vec<String> = rec.used.into_inner().into_iter().collect();
        let mut k = 0;
        while k < from_used.len() {
            if let Some(info) = global_info.get(&from_used[k]) {
                for d in &info.deps {
                    if !from_used.contains(d) {
                        from_used.push(d.clone());
                    }
                }
                used.push((from_used[k].clone(), info.clone()));
            }
            k += 1;
        }
        let mut env: Vec<(String, String)> = Vec::new();
        for (ins, cmd) in &s.cmds {
            match cmd {
                Command::Arg(args) => {
                    for (k, default) in args {
                        let info = match (build_args.get(k), default) {
                            (Some(v), _) => ArgInfo {
                                value: Some(v.clone()),
                                description: doc_comment(&ins.comments, k),
                                line: ins.span.line,
                                deps: BTreeSet::new(),
                            },
                            (None, Some(d)) => ArgInfo {
                                value: lex.process_word(d, &env).ok(),
                                description: doc_comment(&ins.comments, k),
                                line: ins.span.line,
                                deps: BTreeSet::new(),
                            },
                            (None, None) => match global_info.get(k) {
                                Some(g) => g.clone(),
                                None => ArgInfo {
                                    value: None,
                                    description: doc_comment(&ins.comments, k),
                                    line: ins.span.line,
                                    deps: BTreeSet::new(),
                                },
                            },
                        };
                        if let Some(v) = &info.value {
                            env.retain(|(e, _)| e != k);
                            env.push((k.clone(), v.clone()));
                        }
                        used.push((k.clone(), info));
                    }
                }
                Command::Run(r) => {
                    for m in &r.mounts {
                        let kind = mount_opt(m, "type").unwrap_or_default();
                        let required =
                            mount_opt(m, "required").is_some_and(|v| v == "true" || v.is_empty());
                        let (list, seen, default_id) = match kind.as_str() {
                            "secret" => (&mut out.secrets, &mut seen_secrets, None),
                            "ssh" => (&mut out.ssh, &mut seen_ssh, Some("default".to_owned())),
                            _ => continue,
                        };
                        let id = mount_opt(m, "id").or(default_id).or_else(|| {
                            mount_opt(m, "target")
                                .or_else(|| mount_opt(m, "dst"))
                                .and_then(|t| t.rsplit('/').next().map(str::to_owned))
                        });
                        let Some(id) = id else { continue };
                        if seen.insert(id.clone()) {
                            list.push(OutlineSecret {
                                name: id,
                                required,
                                line: ins.span.line,
                            });
                        }
                    }
                }
                Command::Env(kvs) => {
                    for (k, v) in kvs {
                        let v = lex.process_word(v, &env).unwrap_or_default();
                        env.retain(|(e, _)| e != k);
                        env.push((k.clone(), v));
                    }
                }
                _ => {}
            }
        }
        for (k, info) in used {
            if seen_args.insert(k.clone()) {
                out.args.push(OutlineArg {
                    name: k,
                    description: info.description,
                    value: info.value.unwrap_or_default(),
                    line: info.line,
                });
            }
        }
    }
    out.args.sort_by_key(|a| a.line);
    out.secrets.sort_by_key(|s| s.line);
    out.ssh.sort_by_key(|s| s.line);
    Some(out)
}

/// The value of `key=` in a `--mount` spec (`key` alone gives an empty value).
fn mount_opt(spec: &str, key: &str) -> Option<String> {
    spec.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// An [`Env`] that records the names that were found.
struct Recorder<'a> {
    env: &'a [(String, String)],
    used: std::cell::RefCell<BTreeSet<String>>,
}

impl<'a> Recorder<'a> {
    fn new(env: &'a [(String, String)]) -> Self {
        Self {
            env,
            used: std::cell::RefCell::default(),
        }
    }
}

impl Env for Recorder<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let v = Env::get(self.env, key);
        if v.is_some() {
            self.used.borrow_mut().insert(key.to_owned());
        }
        v
    }
}

/// Go's `text/tabwriter` with minwidth 0, tabwidth 0, padding `pad`, padchar ' ': every cell that a tab
/// ends is padded to its column's width plus `pad`; the last cell of a line is written as is.
fn tabwrite(rows: &[Vec<String>], pad: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                out.push_str(&" ".repeat(width[i] + pad - c.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

impl Outline {
    /// As buildx prints it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.name.is_empty() || !self.description.is_empty() {
            let name = if self.name.is_empty() {
                "(default)".to_owned()
            } else {
                self.name.clone()
            };
            let mut rows = vec![vec!["TARGET:".to_owned(), name]];
            if !self.description.is_empty() {
                rows.push(vec!["DESCRIPTION:".into(), self.description.clone()]);
            }
            out.push_str(&tabwrite(&rows, 1));
            out.push('\n');
        }
        if !self.args.is_empty() {
            let mut rows = vec![vec![
                "BUILD ARG".into(),
                "VALUE".into(),
                "DESCRIPTION".into(),
            ]];
            rows.extend(
                self.args
                    .iter()
                    .map(|a| vec![a.name.clone(), a.value.clone(), a.description.clone()]),
            );
            out.push_str(&tabwrite(&rows, 3));
            out.push('\n');
        }
        for (title, list) in [("SECRET", &self.secrets), ("SSH", &self.ssh)] {
            if list.is_empty() {
                continue;
            }
            let mut rows = vec![vec![title.to_owned(), "REQUIRED".into()]];
            rows.extend(list.iter().map(|s| {
                vec![
                    s.name.clone(),
                    if s.required {
                        "true".into()
                    } else {
                        String::new()
                    },
                ]
            }));
            out.push_str(&tabwrite(&rows, 3));
            out.push('\n');
        }
        out
    }
}

/// `--call targets` as buildx prints it.
pub fn render_targets(targets: &[Target]) -> String {
    let mut rows = vec![vec!["TARGET".to_owned(), "DESCRIPTION".to_owned()]];
    for t in targets {
        let name = match (t.name.is_empty(), t.default) {
            (true, true) => "(default)".to_owned(),
            (false, true) => format!("{} (default)", t.name),
            _ => t.name.clone(),
        };
        rows.push(vec![name, t.description.clone()]);
    }
    tabwrite(&rows, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    const DF: &str = r#"# VERSION the release to build
ARG VERSION=1.2
ARG UNUSED=x

# base the shared base
FROM busybox:${VERSION} AS base
# GOPROXY where modules come from
ARG GOPROXY=https://proxy.golang.org

# build compiles the app
FROM base AS build
ARG GOPROXY
ARG TOKEN_NAME
RUN --mount=type=secret,id=npmrc,required=true --mount=type=ssh echo

FROM scratch AS other
ARG OTHER=1
"#;

    #[test]
    fn outline_of_a_target_follows_its_stages() {
        let df = parse(DF).unwrap();
        let o = outline(&df, &BTreeMap::new(), Some("build")).unwrap();
        insta::assert_snapshot!("outline_build", o.render());
        let with = BTreeMap::from([("VERSION".to_owned(), "2".to_owned())]);
        let o = outline(&df, &with, Some("base")).unwrap();
        assert_eq!(
            o.args
                .iter()
                .map(|a| (a.name.as_str(), a.value.as_str()))
                .collect::<Vec<_>>(),
            vec![("VERSION", "2"), ("GOPROXY", "https://proxy.golang.org")]
        );
        assert!(outline(&df, &BTreeMap::new(), Some("nope")).is_none());
    }

    #[test]
    fn targets_with_descriptions() {
        let df = parse(DF).unwrap();
        insta::assert_snapshot!("targets", render_targets(&targets(&df)));
        let json = serde_json::to_string(&targets(&df)).unwrap();
        assert!(
            json.contains(r#"{"name":"other","default":true,"base":"scratch"}"#),
            "{json}"
        );
    }
}
