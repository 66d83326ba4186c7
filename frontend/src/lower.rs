//! AST → [`graph::BuildGraph`] plus one image config per stage, with BuildKit's instruction semantics.
//!
//! Only the target stage and the stages it needs (through `FROM <stage>`, `COPY --from` and
//! `RUN --mount from=`) are lowered, recursively and on demand, so base-image configs are requested
//! only for them. Every instruction of every stage is still type-checked first.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use graph::{BuildGraph, CopySource, Exec, Mkdir, Mount, Network, NodeId, Op, StepName};
use oci::{Empty, Healthcheck, History, ImageConfig};

use crate::instructions::{self, Command, CommandLine, CopyCmd, HealthCmd, RunCmd};
use crate::parser::{go_quote, parse_heredoc, Dockerfile, Heredoc, Instruction};
use crate::shell::{Env, Lex};
use crate::{Diagnostic, Span};

/// Docker's default PATH for Linux containers.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";
/// Build args that need no ARG declaration and are never reported as unused.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Options of one build.
#[derive(Debug, Clone)]
pub struct LowerOptions {
    /// `--build-arg KEY=value`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: stage name, case-insensitive; the last stage when `None`.
    pub target: Option<String>,
    /// Target platform: `TARGET*` args, scratch stages and stages without `FROM --platform`.
    pub platform: oci::Platform,
    /// Named contexts that are images (`--build-context NAME=docker-image://REF`): `FROM NAME`,
    /// `COPY --from=NAME` and `RUN --mount=from=NAME` use the image reference instead; a stage
    /// `FROM x AS NAME` is replaced by it whole (its FROM and instructions are not built).
    pub named_images: BTreeMap<String, String>,
    /// Build platform (the host): `BUILD*` args; image nodes for it carry no platform.
    pub build_platform: oci::Platform,
}

impl Default for LowerOptions {
    fn default() -> Self {
        Self {
            build_args: BTreeMap::new(),
            target: None,
            platform: oci::Platform::host(),
            named_images: BTreeMap::new(),
            build_platform: oci::Platform::host(),
        }
    }
}

/// Supplies base-image configs; implemented by the binary (it pulls manifests and configs).
///
/// Called only for stages the target needs, with the reference after ARG expansion (never for
/// `scratch` or stage names).
pub trait BaseImages {
    /// The config of image `reference`, or the error saying why it is not available.
    fn config(&mut self, reference: &str) -> Result<ImageConfig, BoxError>;

    /// The config of image `reference` for `platform` (a stage's platform: the target's, or what its
    /// `FROM --platform` says). By default the platform is ignored.
    fn config_for(
        &mut self,
        reference: &str,
        platform: &oci::Platform,
    ) -> Result<ImageConfig, BoxError> {
        let _ = platform;
        self.config(reference)
    }
}

/// An error of any type, as [`BaseImages`] implementors return it (its causes kept).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An image reference, after ARG expansion.
    Image(String),
    /// An earlier stage, by its index in the Dockerfile (same numbering as [`Stage::index`]).
    Stage(usize),
}

/// One lowered stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// Position of the stage in the Dockerfile, 0-based.
    pub index: usize,
    /// What the stage starts from.
    pub base: Base,
    /// Final config: base config plus this stage's instructions, history included (one entry per
    /// instruction, `created_by` as BuildKit writes it, comment `buildkit.dockerfile.v0`).
    pub config: ImageConfig,
    /// Node whose output is the stage's rootfs.
    pub head: NodeId,
    /// `(index into config.history, node that makes that layer)` for RUN/COPY/ADD/WORKDIR.
    pub layer_history: Vec<(usize, NodeId)>,
    /// The FROM instruction.
    pub span: Span,
    /// The platform the stage is built for: its `FROM --platform`, its base stage's, else the target's.
    pub platform: oci::Platform,
}

/// The result of [`lower`].
#[derive(Debug, Clone)]
pub struct Lowered {
    /// Nodes of every lowered stage.
    pub graph: BuildGraph,
    /// Lowered stages only, in Dockerfile order (stages the target does not need are left out).
    pub stages: Vec<Stage>,
    /// Index into `stages` of the target stage.
    pub target: usize,
    /// Warnings (unused build args, ignored `--platform`); the build checks are [`crate::checks`]'s.
    pub warnings: Vec<Diagnostic>,
}

impl Lowered {
    /// The stage named `name` (case-insensitive) or numbered `name`, if the target needs it.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()) || s.index.to_string() == name)
    }

    /// The platforms RUN steps execute for, each with the FROM of the first stage that runs one there
    /// (what emulation a build needs, checked before anything runs).
    pub fn run_platforms(&self) -> Vec<(oci::Platform, Span)> {
        let mut out: Vec<(oci::Platform, Span)> = Vec::new();
        for s in &self.stages {
            let runs = s
                .layer_history
                .iter()
                .any(|(_, n)| matches!(self.graph.node(*n).op, Op::Exec(_)));
            if runs && !out.iter().any(|(p, _)| *p == s.platform) {
                out.push((s.platform.clone(), s.span));
            }
        }
        out
    }

    /// The image `stage` starts from, through the stages it is built on; `None` for scratch.
    pub fn base_image<'a>(&'a self, stage: &'a Stage) -> Option<&'a str> {
        let mut s = stage;
        for _ in 0..=self.stages.len() {
            match &s.base {
                Base::Scratch => return None,
                Base::Image(name) => return Some(name),
                Base::Stage(i) => s = self.stages.iter().find(|t| t.index == *i)?,
            }
        }
        None
    }
}

/// A stage as written: its FROM and its other instructions.
struct StageDef<'a> {
    from: &'a Instruction,
    image: String,
    name: Option<String>,
    platform: Option<String>,
    cmds: Vec<(&'a Instruction, Command)>,
}

/// Lowers the stages the target needs into a build graph.
pub fn lower(
    df: &Dockerfile,
    opts: &LowerOptions,
    bases: &mut dyn BaseImages,
) -> Result<Lowered, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    if let Err(d) = df.directives.check_syntax() {
        return Err(vec![d]);
    }
    let mut globals: Vec<(&Instruction, Command)> = Vec::new();
    let mut defs: Vec<StageDef<'_>> = Vec::new();
    for ins in &df.instructions {
        let cmd = match instructions::typed(ins) {
            Ok(c) => c,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        match cmd {
            Command::From {
                image,
                name,
                platform,
            } => {
                // A duplicate stage name is only the DuplicateStageName check's warning, as in
                // BuildKit: references resolve to one of the stages (see `stage_ref`).
                defs.push(StageDef {
                    from: ins,
                    image,
                    name,
                    platform,
                    cmds: Vec::new(),
                });
            }
            cmd => match defs.last_mut() {
                Some(d) => d.cmds.push((ins, cmd)),
                None if matches!(cmd, Command::Arg(_)) => globals.push((ins, cmd)),
                None => errors.push(
                    Diagnostic::new("no build stage in current context", ins.span)
                        .with_help("only ARG may come before the first FROM"),
                ),
            },
        }
    }
    if defs.is_empty() && errors.is_empty() {
        let span = df.instructions.first().map(|i| i.span).unwrap_or_default();
        errors.push(
            Diagnostic::new("dockerfile contains no stages to build", span)
                .with_help("add a FROM instruction"),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let target = match &opts.target {
        None => defs.len() - 1,
        // BuildKit's `findStateByName`: with duplicate names, the last stage is the target.
        Some(t) => match defs
            .iter()
            .rposition(|d| d.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t)))
        {
            Some(i) => i,
            None => {
                let names: Vec<&str> = defs.iter().filter_map(|d| d.name.as_deref()).collect();
                let d = Diagnostic::new(
                    format!("target stage {t:?} could not be found"),
                    Span::default(),
                );
                return Err(vec![if names.is_empty() {
                    d.with_help("the Dockerfile has no named stages")
                } else {
                    d.with_help(format!("stages are: {}", names.join(", ")))
                }]);
            }
        },
    };

    let mut lw = Lowerer {
        opts,
        bases,
        escape: df.directives.escape,
        graph: BuildGraph::default(),
        stages: vec![None; defs.len()],
        stage_args: vec![Vec::new(); defs.len()],
        busy: vec![false; defs.len()],
        errors: Vec::new(),
        // The parser's warnings (empty continuation lines) are the NoEmptyContinuation check's.
        warnings: Vec::new(),
        global_args: Vec::new(),
        consumed: BTreeSet::new(),
        image_nodes: HashMap::new(),
        multi_stage: defs.len() > 1,
        stage_platforms: vec![None; defs.len()],
    };
    lw.global_args = lw.predefined_args();
    for (ins, cmd) in &globals {
        if let Command::Arg(args) = cmd {
            for (k, default) in args {
                let env = lw.global_env();
                let v = lw.arg_value(k, default.as_deref(), &env, None, ins.span);
                lw.global_args.retain(|(gk, _)| gk != k);
                lw.global_args.push((k.clone(), v));
            }
        }
    }
    let ok = lw.ensure(&defs, target).is_ok();
    if !ok || !lw.errors.is_empty() {
        return Err(lw.errors);
    }
    let unused: Vec<&str> = opts
        .build_args
        .keys()
        .map(String::as_str)
        .filter(|k| {
            !lw.consumed.contains(*k)
                && !PROXY_ARGS.contains(k)
                && *k != crate::checks::CHECK_BUILD_ARG
        })
        .collect();
    if !unused.is_empty() {
        lw.warnings.push(
            Diagnostic::new(
                format!("build arguments were not consumed: {}", unused.join(", ")),
                Span::default(),
            )
            .with_help("declare them with ARG in a stage that is built"),
        );
    }
    let mut stages = Vec::new();
    let mut target_pos = 0;
    for (i, s) in lw.stages.into_iter().enumerate() {
        if let Some(s) = s {
            if i == target {
                target_pos = stages.len();
            }
            stages.push(s);
        }
    }
    Ok(Lowered {
        graph: lw.graph,
        stages,
        target: target_pos,
        warnings: lw.warnings,
    })
}

struct Lowerer<'o> {
    opts: &'o LowerOptions,
    bases: &'o mut dyn BaseImages,
    escape: char,
    graph: BuildGraph,
    stages: Vec<Option<Stage>>,
    /// ARGs in scope at the end of each lowered stage: a stage built `FROM` it starts with them,
    /// as BuildKit's dispatch state inherits its base stage's build args and LLB env.
    stage_args: Vec<Vec<(String, Option<String>)>>,
    busy: Vec<bool>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Global ARGs (before the first FROM) and predefined platform args, with values when set.
    global_args: Vec<(String, Option<String>)>,
    consumed: BTreeSet<String>,
    image_nodes: HashMap<(String, Option<String>), NodeId>,
    multi_stage: bool,
    /// The platform of each stage lowered (or being lowered), by Dockerfile index.
    stage_platforms: Vec<Option<oci::Platform>>,
}

/// Mutable state while lowering one stage.
struct State {
    config: ImageConfig,
    head: NodeId,
    /// ARGs declared in the stage, with values when set.
    args: Vec<(String, Option<String>)>,
    shell: Vec<String>,
    workdir: String,
    user: String,
    cmd_set: bool,
    /// Keys whose last assignment was an ENV (after or without an ARG value): BuildKit's RUN history
    /// shows the value of its LLB env, where the last of ARG and ENV wins.
    env_last: BTreeSet<String>,
    layer_history: Vec<(usize, NodeId)>,
    /// The stage label of node names (empty in a single-stage build).
    prefix: String,
    total: usize,
    step: usize,
}

impl State {
    /// Variables for expansion: the image ENV and the ARGs with values, the later assignment of a
    /// name winning, as in BuildKit's LLB env (`ENV B=1` then `ARG B=arg` gives `arg`; lab: dockerd
    /// 20.10, `RUN echo $B` prints `arg`; current dockerfile2llb `dispatchArg` is `AddEnv` too).
    fn expand_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        for kv in self.config.config.env.iter().flatten() {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            env.push((k.to_owned(), v.to_owned()));
        }
        for (k, v) in &self.args {
            if let Some(v) = v {
                if !self.env_last.contains(k) {
                    env.retain(|(ek, _)| ek != k);
                    env.push((k.clone(), v.clone()));
                }
            }
        }
        env
    }

    /// Environment of a RUN: image ENV, with ARGs that have values added, or replacing an ENV value
    /// they were assigned after (the same LLB env as [`State::expand_env`]).
    fn run_env(&self) -> Vec<String> {
        let mut env: Vec<String> = self.config.config.env.clone().unwrap_or_default();
        for (k, v) in &self.args {
            let Some(v) = v else { continue };
            let pos = env
                .iter()
                .position(|kv| kv.split_once('=').map_or(kv.as_str(), |(ek, _)| ek) == k);
            match pos {
                None => env.push(format!("{k}={v}")),
                Some(i) if !self.env_last.contains(k) => env[i] = format!("{k}={v}"),
                Some(_) => {}
            }
        }
        env
    }

    fn next_name(&mut self, text: &str) -> StepName {
        self.step += 1;
        StepName::step(&self.prefix, self.step, self.total, text)
    }

    fn history(&mut self, created_by: String, empty_layer: bool) -> usize {
        self.config.history.push(History {
            created: None,
            created_by: Some(created_by),
            author: None,
            comment: Some(HISTORY_COMMENT.to_owned()),
            empty_layer,
        });
        self.config.history.len() - 1
    }
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| go_quote(s))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Go's `path.Clean` for absolute paths.
fn clean_abs(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(part),
        }
    }
    format!("/{}", out.join("/"))
}

fn join_path(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        clean_abs(rel)
    } else {
        clean_abs(&format!("{base}/{rel}"))
    }
}

/// Node name text as BuildKit prints it: the line with the keyword uppercased, variables expanded
/// (and quotes removed) when the line expands cleanly.
fn display_expanded(ins: &Instruction, lex: Lex, env: &dyn Env) -> String {
    let text = display(ins);
    lex.process_word(&text, env).unwrap_or(text)
}

/// Node name text of a RUN as BuildKit prints it: the line as written (quotes and JSON kept), with
/// variables that are set expanded and unset ones left as written (BuildKit's `RawQuotes` and
/// `SkipUnsetEnv`).
fn display_run(ins: &Instruction, lex: Lex, env: &dyn Env) -> String {
    let text = display(ins);
    let lex = Lex {
        raw_quotes: true,
        skip_unset_env: true,
        ..lex
    };
    lex.process_word(&text, env).unwrap_or(text)
}

/// Display text of an instruction: the joined line with the keyword uppercased.
fn display(ins: &Instruction) -> String {
    let line = ins.original.trim();
    let kw_len = ins.keyword.len().min(line.len());
    format!("{}{}", line[..kw_len].to_ascii_uppercase(), &line[kw_len..])
}

impl Lowerer<'_> {
    fn predefined_args(&self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for (prefix, p) in [
            ("TARGET", &self.opts.platform),
            ("BUILD", &self.opts.build_platform),
        ] {
            let variant = p.variant.clone().unwrap_or_default();
            let plat = p.to_string();
            out.push((format!("{prefix}PLATFORM"), Some(plat.clone())));
            out.push((format!("{prefix}OS"), Some(p.os.clone())));
            out.push((format!("{prefix}ARCH"), Some(p.architecture.clone())));
            out.push((format!("{prefix}VARIANT"), Some(variant.clone())));
        }
        out
    }

    fn global_env(&self) -> Vec<(String, String)> {
        self.global_args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect()
    }

    fn lex(&self) -> Lex {
        Lex::new(self.escape)
    }

    fn expand(&mut self, word: &str, env: &dyn Env, span: Span) -> Result<String, ()> {
        self.lex().process_word(word, env).map_err(|e| {
            self.errors.push(Diagnostic::new(e.to_string(), span));
        })
    }

    /// The value of an ARG: `--build-arg` first, then its default (expanded), then (in a stage) the
    /// global ARG of the same name.
    fn arg_value(
        &mut self,
        key: &str,
        default: Option<&str>,
        env: &dyn Env,
        inherited: Option<Option<String>>,
        span: Span,
    ) -> Option<String> {
        if let Some(v) = self.opts.build_args.get(key) {
            self.consumed.insert(key.to_owned());
            return Some(v.clone());
        }
        match default {
            Some(d) => self.expand(d, env, span).ok(),
            None => inherited.flatten(),
        }
    }

    /// Lowers stage `i` (and, first, the stages it depends on) unless already done.
    fn ensure(&mut self, defs: &[StageDef<'_>], i: usize) -> Result<(), ()> {
        if self.stages[i].is_some() {
            return Ok(());
        }
        if self.busy[i] {
            self.errors.push(Diagnostic::new(
                "circular dependency between stages",
                defs[i].from.span,
            ));
            return Err(());
        }
        self.busy[i] = true;
        let r = self.lower_stage(defs, i);
        self.busy[i] = false;
        let stage = r?;
        self.stages[i] = Some(stage);
        Ok(())
    }

    /// Resolves a `FROM` value to a stage index before `current`, by name or number. With
    /// duplicate names the nearest stage above wins, as in BuildKit's `dispatchStates.addState`
    /// (a stage's base is looked up when it is added, among the stages added so far).
    fn stage_ref(defs: &[StageDef<'_>], current: usize, name: &str) -> Option<usize> {
        if let Some(i) = defs[..current].iter().rposition(|d| {
            d.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        }) {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < current)
    }

    /// The node for `--from=<x>`: a stage's head (lowering it) or an image node.
    fn node_for_from(
        &mut self,
        defs: &[StageDef<'_>],
        current: usize,
        from: &str,
        span: Span,
    ) -> Result<NodeId, ()> {
        // BuildKit resolves `--from` names once every stage is known: with duplicate names the
        // last stage of the file wins. rbuild refuses references to stages below, so when that
        // last one comes after this instruction it is the error below, not an earlier namesake.
        let by_name = defs
            .iter()
            .rposition(|d| d.name.as_deref() == Some(&from.to_ascii_lowercase()));
        let found = match by_name {
            Some(j) => Some(j).filter(|j| *j < current),
            None => from.parse::<usize>().ok().filter(|j| *j < current),
        };
        if let Some(i) = found {
            self.ensure(defs, i)?;
            return Ok(self.stages[i].as_ref().expect("ensured above").head);
        }
        if from.parse::<usize>().is_ok() || by_name.is_some() {
            self.errors.push(
                Diagnostic::new(
                    format!("stage {from:?} is not defined before this instruction"),
                    span,
                )
                .with_help("a stage can only use stages defined above it"),
            );
            return Err(());
        }
        let image = self
            .opts
            .named_images
            .get(from)
            .map_or(from, String::as_str)
            .to_owned();
        let platform = self.stage_platforms[current]
            .clone()
            .unwrap_or_else(|| self.opts.platform.clone());
        Ok(self.image_node(&image, &platform, span))
    }

    /// The platform an image node names: none for the build platform, so that its key is the same
    /// whatever the target platform is.
    fn node_platform(&self, platform: &oci::Platform) -> Option<String> {
        let platform = platform.clone().normalized();
        (platform != self.opts.build_platform.clone().normalized()).then(|| platform.to_string())
    }

    fn image_node(&mut self, reference: &str, platform: &oci::Platform, span: Span) -> NodeId {
        let key = (reference.to_owned(), self.node_platform(platform));
        if let Some(id) = self.image_nodes.get(&key) {
            return *id;
        }
        let id = self.graph.add(
            Op::Image {
                reference: reference.to_owned(),
                platform: key.1.clone(),
            },
            vec![],
            Some(span),
            format!("FROM {reference}").into(),
        );
        self.image_nodes.insert(key, id);
        id
    }

    /// The platform `FROM --platform=<p>` names, after ARG expansion (`$BUILDPLATFORM`, `$TARGETPLATFORM`).
    fn expand_platform(&mut self, p: &str, env: &dyn Env, span: Span) -> Result<oci::Platform, ()> {
        let text = self.expand(p, env, span)?;
        text.parse::<oci::Platform>().map_err(|e| {
            self.errors
                .push(Diagnostic::new(format!("FROM --platform: {e}"), span));
        })
    }

    fn lower_stage(&mut self, defs: &[StageDef<'_>], i: usize) -> Result<Stage, ()> {
        let def = &defs[i];
        let span = def.from.span;
        let genv = self.global_env();
        // A named context named like this stage replaces the whole stage (BuildKit's
        // dockerfile2llb looks `st.Name` up among the named contexts first and, when found, never
        // dispatches the stage's own FROM and instructions).
        let replaced = def
            .name
            .as_ref()
            .and_then(|n| self.opts.named_images.get(n))
            .cloned();
        let mut image = match &replaced {
            Some(named) => named.clone(),
            None => self.expand(&def.image, &genv, span)?,
        };
        if replaced.is_none() && Self::stage_ref(defs, i, &image).is_none() {
            if let Some(named) = self.opts.named_images.get(&image) {
                image.clone_from(named);
            }
        }
        if image.is_empty() {
            self.errors.push(Diagnostic::new(
                format!("base name ({}) should not be blank", def.image),
                span,
            ));
            return Err(());
        }
        let explicit = match &def.platform {
            Some(p) => Some(self.expand_platform(p, &genv, span)?),
            None => None,
        };
        self.stage_platforms[i] = Some(
            explicit
                .clone()
                .unwrap_or_else(|| self.opts.platform.clone()),
        );
        let prefix = if self.multi_stage {
            def.name.clone().unwrap_or_else(|| format!("stage-{i}"))
        } else {
            String::new()
        };
        let cmds: &[(&Instruction, Command)] = if replaced.is_some() { &[] } else { &def.cmds };
        let total = cmds.len() + 1;
        let from_name = StepName::step(&prefix, 1, total, format!("FROM {image}"));
        let mut args = Vec::new();
        let (base, mut config, head) = if let Some(j) = Self::stage_ref(defs, i, &image)
            .filter(|_| replaced.is_none() && image.parse::<usize>().is_err())
        {
            self.ensure(defs, j)?;
            let s = self.stages[j].as_ref().expect("ensured above");
            args.clone_from(&self.stage_args[j]);
            // As BuildKit's dispatch: a stage built on another has its platform, unless it names one.
            if explicit.is_none() {
                self.stage_platforms[i] = Some(s.platform.clone());
            }
            (Base::Stage(j), s.config.clone(), s.head)
        } else if image.eq_ignore_ascii_case("scratch") {
            let platform = self.stage_platform(i);
            let mut c = ImageConfig::scratch();
            c.architecture = platform.architecture.clone();
            c.os = platform.os.clone();
            c.variant = platform.variant.clone();
            // BuildKit's `emptyImage` (dockerfile2llb/image.go) starts a scratch stage with
            // WorkingDir "/" (and the default PATH, set below). See: #17
            c.config.working_dir = Some("/".into());
            let head = self.graph.add(Op::Scratch, vec![], Some(span), from_name);
            (Base::Scratch, c, head)
        } else {
            let platform = self.stage_platform(i);
            let config = match self.bases.config_for(&image, &platform) {
                Ok(c) => c,
                Err(e) => {
                    let mut m = e.to_string();
                    let mut cause = e.source();
                    while let Some(c) = cause {
                        m = format!("{m}: {c}");
                        cause = c.source();
                    }
                    self.errors.push(Diagnostic::new(
                        format!("failed to resolve base image {image}: {m}"),
                        span,
                    ));
                    return Err(());
                }
            };
            let head = self.graph.add(
                Op::Image {
                    reference: image.clone(),
                    platform: self.node_platform(&platform),
                },
                vec![],
                Some(span),
                from_name,
            );
            (Base::Image(image.clone()), config, head)
        };
        if config.config.env_get("PATH").is_none() {
            config.config.env_set("PATH", DEFAULT_PATH);
        }
        // A replaced stage is never dispatched in BuildKit, its image's ONBUILD triggers included.
        let triggers = if matches!(base, Base::Image(_)) && replaced.is_none() {
            config.config.on_build.take()
        } else {
            None
        };
        let shell = config
            .config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        let workdir = config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let user = config.config.user.clone().unwrap_or_default();
        let mut st = State {
            config,
            head,
            args,
            shell,
            workdir,
            user,
            cmd_set: false,
            env_last: BTreeSet::new(),
            layer_history: Vec::new(),
            prefix,
            total,
            step: 1,
        };
        // ONBUILD triggers of the base image run first, as if written right after FROM.
        let mut failed = false;
        for trigger in triggers.unwrap_or_default() {
            if self.run_trigger(defs, i, &mut st, &trigger, span).is_err() {
                failed = true;
            }
        }
        for (ins, cmd) in cmds {
            if self.apply(defs, i, &mut st, ins, cmd).is_err() {
                failed = true;
            }
        }
        if failed {
            return Err(());
        }
        self.stage_args[i] = std::mem::take(&mut st.args);
        Ok(Stage {
            name: def.name.clone(),
            index: i,
            base,
            config: st.config,
            head: st.head,
            layer_history: st.layer_history,
            span,
            platform: self.stage_platform(i),
        })
    }

    /// The platform of stage `i`, set when its lowering started.
    fn stage_platform(&self, i: usize) -> oci::Platform {
        self.stage_platforms[i]
            .clone()
            .unwrap_or_else(|| self.opts.platform.clone())
    }

    fn run_trigger(
        &mut self,
        defs: &[StageDef<'_>],
        i: usize,
        st: &mut State,
        trigger: &str,
        span: Span,
    ) -> Result<(), ()> {
        let parsed = crate::parser::parse(trigger).map_err(|errs| {
            for e in errs {
                self.errors.push(Diagnostic::new(
                    format!(
                        "invalid ONBUILD trigger {trigger:?} in base image: {}",
                        e.message
                    ),
                    span,
                ));
            }
        })?;
        for ins in &parsed.instructions {
            let mut ins = ins.clone();
            ins.span = span;
            let cmd = instructions::typed(&ins).map_err(|e| self.errors.push(e))?;
            if matches!(cmd, Command::From { .. } | Command::Onbuild(_)) {
                self.errors.push(Diagnostic::new(
                    format!("{} isn't allowed as an ONBUILD trigger", ins.keyword),
                    span,
                ));
                return Err(());
            }
            // Each trigger takes a step number of its own.
            st.total += 1;
            self.apply(defs, i, st, &ins, &cmd)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_lines)]
    fn apply(
        &mut self,
        defs: &[StageDef<'_>],
        i: usize,
        st: &mut State,
        ins: &Instruction,
        cmd: &Command,
    ) -> Result<(), ()> {
        let span = ins.span;
        let env = st.expand_env();
        match cmd {
            Command::From { .. } => unreachable!("FROM starts a stage"),
            Command::Run(run) => self.run(defs, i, st, ins, run)?,
            Command::Copy(c) | Command::Add(c) => {
                self.copy(defs, i, st, ins, c, matches!(cmd, Command::Add(_)))?
            }
            Command::Workdir(p) => {
                let p = self.expand(p, &env, span)?;
                let path = join_path(&st.workdir, &p);
                let name = st.next_name(&display_expanded(ins, self.lex(), &env));
                st.head = self.graph.add(
                    Op::Mkdir(Mkdir {
                        path: path.clone(),
                        user: st.user.clone(),
                    }),
                    vec![st.head],
                    Some(span),
                    name,
                );
                st.workdir.clone_from(&path);
                st.config.config.working_dir = Some(path.clone());
                let h = st.history(format!("WORKDIR {path}"), false);
                st.layer_history.push((h, st.head));
                return Ok(());
            }
            Command::Env(pairs) => {
                let mut parts = Vec::new();
                let mut expanded = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(k, &env, span)?;
                    let v = self.expand(v, &env, span)?;
                    parts.push(format!("{k}={v}"));
                    expanded.push((k, v));
                }
                for (k, v) in expanded {
                    st.config.config.env_set(&k, &v);
                    st.env_last.insert(k);
                }
                st.history(format!("ENV {}", parts.join(" ")), true);
            }
            Command::Arg(args) => {
                let mut parts = Vec::new();
                for (k, default) in args {
                    let k = self.expand(k, &env, span)?;
                    let env_now = st.expand_env();
                    let inherited = self
                        .global_args
                        .iter()
                        .find(|(gk, _)| *gk == k)
                        .map(|(_, v)| v.clone());
                    let v = self.arg_value(&k, default.as_deref(), &env_now, inherited, span);
                    parts.push(match &v {
                        Some(v) => format!("{k}={v}"),
                        None => k.clone(),
                    });
                    // A bare `ARG K` with no value anywhere keeps the value K already has in this
                    // stage (declared earlier, or inherited from the parent stage): BuildKit only
                    // adds an ARG to the LLB env when it has a value, and never removes one.
                    let v = v.or_else(|| {
                        st.args
                            .iter()
                            .find(|(ak, _)| *ak == k)
                            .and_then(|(_, v)| v.clone())
                    });
                    if v.is_some() {
                        st.env_last.remove(&k);
                    }
                    // A declared again keeps its place (BuildKit's runCommandString lists each
                    // build arg once, where it first appeared).
                    match st.args.iter_mut().find(|(ak, _)| *ak == k) {
                        Some(slot) => slot.1 = v,
                        None => st.args.push((k, v)),
                    }
                }
                st.history(format!("ARG {}", parts.join(" ")), true);
            }
            Command::Label(pairs) => {
                let mut parts = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(k, &env, span)?;
                    let v = self.expand(v, &env, span)?;
                    parts.push(format!("{k}={v}"));
                    st.config
                        .config
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, v);
                }
                st.history(format!("LABEL {}", parts.join(" ")), true);
            }
            Command::User(u) => {
                let u = self.expand(u, &env, span)?;
                st.user.clone_from(&u);
                st.config.config.user = Some(u.clone());
                st.history(format!("USER {u}"), true);
            }
            Command::Cmd(c) => {
                let args = self.command_args(st, c);
                st.config.config.cmd = Some(args.clone());
                // BuildKit's dispatchCmd sets ArgsEscaped on every CMD, either form (found by
                // the differential: tests/differential/scratch-config).
                st.config.config.args_escaped = Some(true);
                st.cmd_set = true;
                st.history(format!("CMD {}", go_quote_list(&args)), true);
            }
            Command::Entrypoint(c) => {
                let args = self.command_args(st, c);
                st.config.config.entrypoint = Some(args.clone());
                if !st.cmd_set {
                    // An ENTRYPOINT drops the CMD inherited from the base (BuildKit and Docker agree).
                    st.config.config.cmd = None;
                }
                st.history(format!("ENTRYPOINT {}", go_quote_list(&args)), true);
            }
            Command::Shell(args) => {
                st.shell.clone_from(args);
                st.config.config.shell = Some(args.clone());
                // Go's `%v` of the slice, not `%q` (dispatchShell); found by the differential
                // (buildah's shell/Dockerfile.build-shell-custom).
                st.history(format!("SHELL [{}]", args.join(" ")), true);
            }
            Command::Expose(ports) => {
                let mut added = BTreeSet::new();
                for p in ports {
                    let words = self.lex().process_words(p, &env).map_err(|e| {
                        self.errors.push(Diagnostic::new(e.to_string(), span));
                    })?;
                    for w in words {
                        for port in parse_port(&w)
                            .map_err(|m| self.errors.push(Diagnostic::new(m, span)))?
                        {
                            added.insert(port);
                        }
                    }
                }
                let set = st
                    .config
                    .config
                    .exposed_ports
                    .get_or_insert_with(BTreeMap::new);
                for p in &added {
                    set.insert(p.clone(), Empty {});
                }
                let shown: Vec<String> = added.iter().map(|p| format!("{p}:{{}}")).collect();
                st.history(format!("EXPOSE map[{}]", shown.join(" ")), true);
            }
            Command::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    let v = self.expand(v, &env, span)?;
                    if v.trim().is_empty() {
                        self.errors.push(Diagnostic::new(
                            "VOLUME specified can not be an empty string",
                            span,
                        ));
                        return Err(());
                    }
                    st.config
                        .config
                        .volumes
                        .get_or_insert_with(BTreeMap::new)
                        .insert(v.clone(), Empty {});
                    out.push(v);
                }
                st.history(format!("VOLUME [{}]", out.join(" ")), true);
            }
            Command::StopSignal(s) => {
                let s = self.expand(s, &env, span)?;
                if !valid_signal(&s) {
                    self.errors.push(
                        Diagnostic::new(format!("invalid signal: {s}"), span)
                            .with_help("use a signal name like SIGTERM or a number"),
                    );
                    return Err(());
                }
                st.config.config.stop_signal = Some(s.clone());
                st.history(format!("STOPSIGNAL {s}"), true);
            }
            Command::Healthcheck(h) => {
                let hc = health_config(h);
                st.history(format!("HEALTHCHECK {}", health_history(h)), true);
                st.config.config.healthcheck = Some(hc);
            }
            Command::Maintainer(m) => {
                st.config.author = Some(m.clone());
                st.history(format!("MAINTAINER {m}"), true);
            }
            Command::Onbuild(expr) => {
                st.config
                    .config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(expr.clone());
                st.history(format!("ONBUILD {expr}"), true);
            }
        }
        // Metadata-only instructions still take a step number, as in BuildKit's progress output.
        if !matches!(cmd, Command::Run(_) | Command::Copy(_) | Command::Add(_)) {
            st.step += 1;
        }
        Ok(())
    }

    fn command_args(&self, st: &State, c: &CommandLine) -> Vec<String> {
        if c.shell_form {
            let mut args = st.shell.clone();
            args.push(c.args.join(" "));
            args
        } else {
            c.args.clone()
        }
    }

    fn run(
        &mut self,
        defs: &[StageDef<'_>],
        i: usize,
        st: &mut State,
        ins: &Instruction,
        run: &RunCmd,
    ) -> Result<(), ()> {
        let span = ins.span;
        let env = st.expand_env();
        let mut name_text = display_run(ins, self.lex(), &env);
        let args = if run.cmd.shell_form {
            let script = run.cmd.args.join(" ");
            let script = if run.heredocs.is_empty() {
                script
            } else if parse_heredoc(&script).ok().flatten().is_some() {
                // The whole command is one heredoc: run its body with the shell (BuildKit runs a `#!`
                // body as a file; rbuild runs every body through SHELL).
                let body = run.heredocs[0].body();
                name_text = format!(
                    "{name_text} ({})",
                    summarize_heredoc(&run.heredocs[0].content)
                );
                body
            } else {
                // Pass heredoc syntax through to the shell.
                let mut full = script;
                for h in &run.heredocs {
                    full.push('\n');
                    full.push_str(&h.content);
                    full.push_str(&h.name);
                }
                full
            };
            let mut a = st.shell.clone();
            a.push(script);
            a
        } else {
            run.cmd.args.clone()
        };
        let network = match run.network.as_deref() {
            None => Network::Default,
            Some(n) => match self.expand(n, &env, span)?.as_str() {
                "default" => Network::Default,
                "none" => Network::None,
                "host" => Network::Host,
                other => {
                    self.errors.push(
                        Diagnostic::new(format!("unsupported network mode {other:?}"), span)
                            .with_help("use default, none or host"),
                    );
                    return Err(());
                }
            },
        };
        let mut devices = Vec::new();
        for d in &run.devices {
            match parse_device(&self.expand(d, &env, span)?) {
                Ok(d) => devices.push(d),
                Err(msg) => {
                    self.errors.push(Diagnostic::new(msg, span));
                    return Err(());
                }
            }
        }
        let mut security = graph::Security::Sandbox;
        if let Some(s) = &run.security {
            match self.expand(s, &env, span)?.as_str() {
                "sandbox" => {}
                // Allowed or not by the build's entitlements (`--allow security.insecure`), which the
                // worker checks: as in BuildKit, the Dockerfile alone does not decide.
                "insecure" => security = graph::Security::Insecure,
                other => {
                    self.errors.push(Diagnostic::new(
                        format!("unsupported security mode {other:?}"),
                        span,
                    ));
                    return Err(());
                }
            }
        }
        let mut inputs = vec![st.head];
        let mut mounts = Vec::new();
        let mut ssh_count = 0;
        for m in &run.mounts {
            let m = self.expand(m, &env, span)?;
            let spec = parse_mount(&m, &st.workdir, &mut ssh_count).map_err(|msg| {
                self.errors.push(Diagnostic::new(msg, span));
            })?;
            let mount = match spec {
                MountSpec::Bind {
                    from: Some(from),
                    source,
                    target,
                    readwrite,
                } => {
                    let node = self.node_for_from(defs, i, &from, span)?;
                    let idx = inputs.iter().position(|n| *n == node).unwrap_or_else(|| {
                        inputs.push(node);
                        inputs.len() - 1
                    });
                    Mount::Bind {
                        input: Some(idx),
                        source,
                        target,
                        readwrite,
                    }
                }
                MountSpec::Bind {
                    from: None,
                    source,
                    target,
                    readwrite,
                } => Mount::Bind {
                    input: None,
                    source,
                    target,
                    readwrite,
                },
                MountSpec::CacheFrom { from, mut mount } => {
                    let node = self.node_for_from(defs, i, &from, span)?;
                    let idx = inputs.iter().position(|n| *n == node).unwrap_or_else(|| {
                        inputs.push(node);
                        inputs.len() - 1
                    });
                    if let Mount::Cache { from, .. } = &mut mount {
                        *from = Some(idx);
                    }
                    mount
                }
                MountSpec::Other(m) => m,
            };
            mounts.push(mount);
        }
        let exec = Exec {
            args: args.clone(),
            env: st.run_env(),
            cwd: st.workdir.clone(),
            user: st.user.clone(),
            network,
            mounts,
            security,
            devices,
        };
        let name = st.next_name(&name_text);
        st.head = self.graph.add(Op::Exec(exec), inputs, Some(span), name);
        let created_by = format!("RUN {} # buildkit", run_command_string(&args, st));
        let h = st.history(created_by, false);
        st.layer_history.push((h, st.head));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        defs: &[StageDef<'_>],
        i: usize,
        st: &mut State,
        ins: &Instruction,
        c: &CopyCmd,
        is_add: bool,
    ) -> Result<(), ()> {
        let span = ins.span;
        let env = st.expand_env();
        let kw = if is_add { "ADD" } else { "COPY" };
        let mut srcs = Vec::new();
        let mut inline: Vec<Heredoc> = Vec::new();
        let mut heredocs = c.heredocs.iter();
        for s in &c.srcs {
            if !c.heredocs.is_empty() {
                if let Ok(Some(_)) = parse_heredoc(s) {
                    if let Some(h) = heredocs.next() {
                        inline.push(h.clone());
                        continue;
                    }
                }
            }
            srcs.push(self.expand(s, &env, span)?);
        }
        let dest_raw = self.expand(&c.dest, &env, span)?;
        let mut dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            let mut d = join_path(&st.workdir, &dest_raw);
            if dest_raw.ends_with('/') && !d.ends_with('/') {
                d.push('/');
            }
            d
        };
        if (dest_raw == "." || dest_raw.is_empty()) && !dest.ends_with('/') {
            dest.push('/');
        }
        // A flag that expands to nothing (`--chmod=${mode}` with `mode` unset) is no flag, as in
        // BuildKit's dispatchCopy (`if cfg.chmod != ""`); found by the differential (BuildKit's
        // testCopyChmod).
        let chown = match &c.chown {
            Some(v) => Some(self.expand(v, &env, span)?).filter(|v| !v.is_empty()),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(v) => {
                let v = self.expand(v, &env, span)?;
                if v.is_empty() {
                    None
                } else {
                    match u32::from_str_radix(&v, 8) {
                        Ok(m) if m <= 0o7777 => Some(m),
                        _ => {
                            self.errors.push(
                                Diagnostic::new(format!("invalid chmod parameter {v:?}"), span)
                                    .with_help("use octal mode bits such as 755 or 0644"),
                            );
                            return Err(());
                        }
                    }
                }
            }
            None => None,
        };
        let mut exclude = Vec::new();
        for e in &c.exclude {
            exclude.push(self.expand(e, &env, span)?);
        }
        let checksum = match &c.checksum {
            Some(v) => Some(self.expand(v, &env, span)?),
            None => None,
        };
        let url = if is_add {
            self.add_url(&srcs, c, checksum.as_deref(), span)?
        } else {
            None
        };
        let mut inputs = vec![st.head];
        let mut files = Vec::new();
        for h in &inline {
            let body = h.body();
            let content = if h.expand {
                let lex = Lex {
                    skip_process_quotes: true,
                    ..self.lex()
                };
                lex.process_word(&body, &env)
                    .map_err(|e| self.errors.push(Diagnostic::new(e.to_string(), span)))?
            } else {
                body
            };
            files.push(graph::InlineFile {
                name: h.name.clone(),
                content,
            });
        }
        let mut extra_inline = Vec::new();
        let written_srcs = srcs.clone();
        let from_url = url.is_some();
        let source = if files.len() == 1 && srcs.is_empty() && c.from.is_none() {
            // One heredoc alone: the original single-file form (its cache keys stay as they were).
            let f = files.remove(0);
            srcs.push(f.name.clone());
            CopySource::Inline {
                name: f.name,
                content: f.content,
            }
        } else if let Some(from) = &c.from {
            let from = self.expand(from, &env, span)?;
            let node = self.node_for_from(defs, i, &from, span)?;
            inputs.push(node);
            CopySource::Input { index: 1 }
        } else if let Some(UrlSource::Http(url, filename)) = url {
            // The download is its own node (cached by content); the ADD copies its one file.
            srcs = vec![filename.clone()];
            let name = StepName::source(&st.prefix, "download", url.clone());
            let node = self.graph.add(
                Op::Http(graph::Http {
                    url,
                    checksum,
                    filename,
                }),
                vec![],
                Some(span),
                name,
            );
            inputs.push(node);
            CopySource::Input { index: 1 }
        } else if let Some(UrlSource::Git(git)) = url {
            // The checkout is its own node (cached by commit); the ADD copies its whole tree.
            srcs = vec!["/".to_owned()];
            let name = StepName::source(&st.prefix, "git", written_srcs[0].clone());
            let node = self.graph.add(Op::Git(git), vec![], Some(span), name);
            inputs.push(node);
            CopySource::Input { index: 1 }
        } else {
            CopySource::Context
        };
        extra_inline.append(&mut files);
        let mut created_by = kw.to_owned();
        if c.parents {
            created_by.push_str(" --parents");
        }
        if let Some(o) = &chown {
            created_by.push_str(&format!(" --chown={o}"));
        }
        if let Some(m) = &c.chmod {
            created_by.push_str(&format!(" --chmod={m}"));
        }
        if !matches!(source, CopySource::Inline { .. }) {
            for s in &written_srcs {
                created_by.push_str(&format!(" {s}"));
            }
        }
        for h in &inline {
            created_by.push_str(&format!(" <<{}", h.name));
        }
        created_by.push_str(&format!(" {dest_raw} # buildkit"));
        let op = graph::Copy {
            source,
            srcs,
            dest,
            chown,
            chmod,
            exclude,
            // Local archives unpack unless `--unpack=false`; downloads only with `--unpack=true`, as
            // BuildKit.
            unpack: is_add
                && if from_url {
                    c.unpack == Some(true)
                } else {
                    c.unpack.unwrap_or(true)
                },
            parents: c.parents,
            inline: extra_inline,
        };
        let name = st.next_name(&display_expanded(ins, self.lex(), &env));
        // `--link`: the copy runs on an empty rootfs, so its layer (and its cache key) does not depend on
        // what is below; a merge stacks it on the stage. A --chown by name needs the stage's /etc/passwd,
        // so it copies as without --link (same files, the layer just is not independent).
        let numeric_owner = op.chown.as_deref().is_none_or(|o| {
            o.split(':')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        });
        if c.link && numeric_owner {
            let below = inputs[0];
            // Helper nodes have no place in the stage (Place::Other): only the copy is the step (miss
            // explanations and progress key on that).
            inputs[0] = self.graph.add(
                Op::Scratch,
                vec![],
                None,
                format!("empty base of {name}").into(),
            );
            let layer = self
                .graph
                .add(Op::Copy(op), inputs, Some(span), name.clone());
            st.head = self.graph.add(
                Op::Merge,
                vec![below, layer],
                Some(span),
                format!("link {name}").into(),
            );
        } else {
            st.head = self.graph.add(Op::Copy(op), inputs, Some(span), name);
        }
        let h = st.history(created_by, false);
        st.layer_history.push((h, st.head));
        Ok(())
    }
}

impl Lowerer<'_> {
    /// `ADD URL`: the URL and the file name its download gets, when the sources are a URL. Git URLs,
    /// several URLs, URLs mixed with files, and `--checksum` without a URL are errors.
    fn add_url(
        &mut self,
        srcs: &[String],
        c: &CopyCmd,
        checksum: Option<&str>,
        span: Span,
    ) -> Result<Option<UrlSource>, ()> {
        let is_url = |s: &str| s.contains("://") || s.starts_with("git@");
        let urls: Vec<&String> = srcs.iter().filter(|s| is_url(s)).collect();
        let fail = |this: &mut Self, msg: String, help: &str| {
            this.errors
                .push(Diagnostic::new(msg, span).with_help(help.to_owned()));
            Err(())
        };
        if urls.is_empty() {
            if checksum.is_some() {
                return fail(
                    self,
                    "ADD --checksum needs an http(s) URL source".to_owned(),
                    "checksums are verified for downloads only",
                );
            }
            return Ok(None);
        }
        let u = urls[0].clone();
        let lower = u.to_ascii_lowercase();
        let git = lower.starts_with("git@")
            || lower.starts_with("git://")
            || lower
                .split(['#', '?'])
                .next()
                .is_some_and(|p| p.ends_with(".git"));
        if git {
            if srcs.len() > 1 || c.from.is_some() || !c.heredocs.is_empty() {
                return fail(
                    self,
                    format!("ADD of a git repository takes it as its only source: {u}"),
                    "write one ADD per repository",
                );
            }
            if c.unpack == Some(true) {
                return fail(
                    self,
                    format!("ADD --unpack does not apply to a git repository: {u}"),
                    "drop --unpack",
                );
            }
            let (remote, fragment) = match u.split_once('#') {
                Some((r, f)) => (r.to_owned(), Some(f)),
                None => (u.clone(), None),
            };
            let (reference, subdir) = match fragment {
                None => (None, None),
                Some(f) => {
                    let (r, d) = match f.split_once(':') {
                        Some((r, d)) => (r, Some(d)),
                        None => (f, None),
                    };
                    let clean = |v: &str| (!v.is_empty()).then(|| v.to_owned());
                    (clean(r), d.and_then(clean))
                }
            };
            if let Some(d) = &subdir {
                if d.split('/').any(|p| p == "..") {
                    return fail(
                        self,
                        format!("the git subdirectory {d:?} leaves the repository"),
                        "name a directory inside the repository (#ref:dir/sub)",
                    );
                }
            }
            if let Some(sum) = checksum {
                if !(sum.len() == 40 || sum.len() == 64)
                    || !sum.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return fail(
                        self,
                        format!("invalid ADD --checksum {sum:?} for a git repository"),
                        "give the full commit hash the reference must resolve to",
                    );
                }
            }
            return Ok(Some(UrlSource::Git(graph::Git {
                remote,
                reference,
                subdir,
                keep_git_dir: c.keep_git_dir,
                checksum: checksum.map(str::to_owned),
            })));
        }
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return fail(
                self,
                format!("ADD supports http:// and https:// URLs, not {u}"),
                "download it in a RUN step instead",
            );
        }
        if srcs.len() > 1 || c.from.is_some() || !c.heredocs.is_empty() {
            return fail(
                self,
                format!("ADD of a URL takes it as its only source: {u}"),
                "write one ADD per URL",
            );
        }
        if let Some(sum) = checksum {
            let ok = sum
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                return fail(
                    self,
                    format!("invalid ADD --checksum {sum:?}"),
                    "give sha256:<64 hex digits>",
                );
            }
        }
        // BuildKit names the file after the last segment of the URL's path.
        let path = u
            .split_once("://")
            .map_or("", |(_, rest)| rest)
            .split(['?', '#'])
            .next()
            .unwrap_or("");
        let base = path
            .split_once('/')
            .map_or("", |(_, p)| p)
            .rsplit('/')
            .next()
            .unwrap_or("");
        let filename = if base.is_empty() || base == "." || base == ".." {
            "__unnamed__".to_owned()
        } else {
            base.to_owned()
        };
        Ok(Some(UrlSource::Http(u, filename)))
    }
}

/// What an `ADD` of a URL reads.
enum UrlSource {
    /// A download: the URL and the file name it gets.
    Http(String, String),
    /// A git checkout.
    Git(graph::Git),
}

/// BuildKit's `runCommandString`: `|N K=v … args` when build args are in scope. Every ARG in scope
/// is listed, a valueless one as `K=`; the value is that of the LLB env, where the last of ARG and ENV
/// wins (lab: `ARG FOO`, `ARG BAR=1`, `ENV BAR=2`, `RUN …` gives `RUN |2 FOO= BAR=2 …`; current
/// dockerfile2llb is the same code).
fn run_command_string(args: &[String], st: &State) -> String {
    let listed: Vec<String> = st
        .args
        .iter()
        .map(|(k, v)| {
            let env = st.config.config.env_get(k);
            let value = match (st.env_last.contains(k), env, v) {
                (true, Some(e), _) => e.to_owned(),
                (_, _, Some(v)) => v.clone(),
                (_, Some(e), None) => e.to_owned(),
                (_, None, None) => String::new(),
            };
            format!("{k}={value}")
        })
        .collect();
    let mut parts = Vec::new();
    if !listed.is_empty() {
        parts.push(format!("|{}", listed.len()));
        parts.extend(listed);
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim();
    let mut lines = doc.split('\n');
    let first = lines.next().unwrap_or("").trim_end_matches('\r').to_owned();
    if lines.next().is_some() {
        format!("{first}...")
    } else {
        first
    }
}

fn health_config(h: &HealthCmd) -> Healthcheck {
    Healthcheck {
        test: h.test.clone(),
        interval: h.interval,
        timeout: h.timeout,
        start_period: h.start_period,
        start_interval: h.start_interval,
        retries: h.retries,
    }
}

/// BuildKit writes the health config with Go's `%+v` of the struct (dockerfile frontend 1.24.0 and
/// later, moby/buildkit d67dafe; earlier versions used `%q` of a pointer: `&{["CMD" "x"] "1s" …}`).
fn health_history(h: &HealthCmd) -> String {
    use crate::instructions::format_duration as d;
    format!(
        "{{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        h.test.join(" "),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        d(h.start_interval),
        h.retries
    )
}

fn valid_signal(s: &str) -> bool {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rt) = name
        .strip_prefix("RTMIN")
        .or_else(|| name.strip_prefix("RTMAX"))
    {
        return rt.is_empty()
            || rt
                .strip_prefix(['+', '-'])
                .is_some_and(|n| n.parse::<u32>().is_ok());
    }
    NAMES.contains(&name)
}

/// Parses one EXPOSE word: `80`, `80/udp`, `8000-8010/tcp`.
fn parse_port(w: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match w.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (w, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    // `ip:hostPort:containerPort` forms are for `docker run -p`; only the container port matters.
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let parse = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {s}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!(
            "invalid range specified for container port: {ports}"
        ));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

enum MountSpec {
    Bind {
        from: Option<String>,
        source: String,
        target: String,
        readwrite: bool,
    },
    /// A cache mount seeded from a stage, image or context (`from=`), resolved to an input when lowered.
    CacheFrom {
        from: String,
        mount: Mount,
    },
    Other(Mount),
}

/// Splits a `--mount` value on commas, honouring double quotes (CSV, as BuildKit reads it).
fn csv_fields(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_bool(key: &str, v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(format!("invalid value for {key}: {other}")),
    }
}

fn parse_size(v: &str) -> Result<u64, String> {
    let lower = v.to_ascii_lowercase();
    let lower = lower.trim_end_matches(['b', 'i']);
    let (num, mult) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("invalid size: {v}"))
}

#[allow(clippy::too_many_lines)]
fn parse_mount(value: &str, workdir: &str, ssh_count: &mut usize) -> Result<MountSpec, String> {
    let mut typ = "bind".to_owned();
    let mut kv: Vec<(String, Option<String>)> = Vec::new();
    for field in csv_fields(value) {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim().to_owned())),
            None => (field.to_ascii_lowercase(), None),
        };
        if k == "type" {
            typ = v.unwrap_or_default().to_ascii_lowercase();
        } else {
            kv.push((k, v));
        }
    }
    let mut target = None;
    let mut source = None;
    let mut from = None;
    let mut readonly: Option<bool> = None;
    let mut id = None;
    let mut sharing = graph::Sharing::Shared;
    let mut mode = None;
    let mut uid = 0u32;
    let mut gid = 0u32;
    let mut size = 0u64;
    let mut env = None;
    let mut required = false;
    for (k, v) in kv {
        let need = |v: &Option<String>| {
            v.clone()
                .ok_or_else(|| format!("mount option {k} needs a value"))
        };
        match k.as_str() {
            "target" | "dst" | "destination" => target = Some(need(&v)?),
            "source" | "src" => source = Some(need(&v)?),
            // `from=` with nothing is the context, as in BuildKit (found by the differential:
            // buildah's buildkit-mount-from/Dockerfilebindfromwithemptyfrom).
            "from" => from = Some(need(&v)?).filter(|f| !f.is_empty()),
            "readonly" | "ro" => readonly = Some(parse_bool(&k, v.as_deref())?),
            "readwrite" | "rw" => readonly = Some(!parse_bool(&k, v.as_deref())?),
            "id" => id = Some(need(&v)?),
            "sharing" => sharing = need(&v)?.parse()?,
            "mode" => {
                let m = need(&v)?;
                mode = Some(u32::from_str_radix(&m, 8).map_err(|_| format!("invalid mode {m:?}"))?);
            }
            "uid" => uid = need(&v)?.parse().map_err(|_| "invalid uid".to_owned())?,
            "gid" => gid = need(&v)?.parse().map_err(|_| "invalid gid".to_owned())?,
            "size" => size = parse_size(&need(&v)?)?,
            "env" => env = Some(need(&v)?),
            "required" => required = parse_bool(&k, v.as_deref())?,
            _ => return Err(format!("unexpected key '{k}' in '{value}'")),
        }
    }
    let abs = |t: String| {
        if t.starts_with('/') {
            t
        } else {
            join_path(workdir, &t)
        }
    };
    match typ.as_str() {
        "bind" => {
            let target = target.ok_or("mount target is required")?;
            Ok(MountSpec::Bind {
                from,
                source: source.unwrap_or_else(|| "/".into()),
                target: abs(target),
                readwrite: readonly == Some(false),
            })
        }
        "cache" => {
            let target = abs(target.ok_or("mount target is required")?);
            let mount = Mount::Cache {
                id: id.unwrap_or_else(|| target.clone()),
                target,
                readonly: readonly.unwrap_or(false),
                sharing,
                mode: mode.unwrap_or(0o755),
                uid,
                gid,
                from: None,
                // BuildKit mounts this subpath (of the cache, seeded from `from` when given); a `..`
                // would reach past it. See: #19.
                source: match source {
                    Some(s) if s.split('/').any(|c| c == "..") => {
                        return Err(format!(
                            "cache mount source {s:?} has a `..` component: it must stay inside the cache"
                        ))
                    }
                    Some(s) => s,
                    None => String::new(),
                },
            };
            Ok(match from {
                Some(from) => MountSpec::CacheFrom { from, mount },
                None => MountSpec::Other(mount),
            })
        }
        "tmpfs" => Ok(MountSpec::Other(Mount::Tmpfs {
            target: abs(target.ok_or("mount target is required")?),
            size,
        })),
        "secret" => {
            let id = match (id, &target) {
                (Some(id), _) => id,
                (None, Some(t)) => t.rsplit('/').next().unwrap_or(t).to_owned(),
                (None, None) => {
                    return Err("one of id or target must be set for a secret mount".into())
                }
            };
            let target = match (target, &env) {
                (Some(t), _) => abs(t),
                (None, Some(_)) => String::new(),
                (None, None) => format!("/run/secrets/{id}"),
            };
            Ok(MountSpec::Other(Mount::Secret {
                id,
                target,
                env,
                required,
                mode: mode.unwrap_or(0o400),
                uid,
                gid,
            }))
        }
        "ssh" => {
            let target = target.map_or_else(|| format!("/run/buildkit/ssh_agent.{ssh_count}"), abs);
            *ssh_count += 1;
            Ok(MountSpec::Other(Mount::Ssh {
                id: id.unwrap_or_else(|| "default".into()),
                target,
                required,
            }))
        }
        other => Err(format!("unsupported mount type {other:?}")),
    }
}

/// Parses `RUN --device=NAME[,required[=BOOL]]` (also `name=NAME`), as BuildKit's Dockerfile
/// frontend does; whether the device exists and is allowed is the worker's to check.
fn parse_device(v: &str) -> Result<graph::Device, String> {
    let mut name = None;
    let mut required = false;
    for field in v.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match key.to_ascii_lowercase().as_str() {
            "required" => {
                required = match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true" | "1" | "t") => true,
                    Some("false" | "0" | "f") => false,
                    Some(other) => {
                        return Err(format!(
                            "invalid --device {v:?}: required={other:?} is not a boolean"
                        ))
                    }
                }
            }
            "name" if value.is_some() => name = value.map(str::to_owned),
            _ if name.is_none() && !field.is_empty() => name = Some(field.to_owned()),
            _ => {
                return Err(format!(
                    "invalid --device {v:?}: unexpected field {field:?}"
                ))
            }
        }
    }
    let name = name.ok_or_else(|| format!("invalid --device {v:?}: no device name"))?;
    Ok(graph::Device { name, required })
}

#[cfg(test)]
mod device_tests {
    use super::parse_device;

    #[test]
    fn device_flag_parses_as_buildkit() {
        let d = parse_device("vendor.com/dev=foo").unwrap();
        assert_eq!((d.name.as_str(), d.required), ("vendor.com/dev=foo", false));
        let d = parse_device("vendor.com/dev=foo,required").unwrap();
        assert!(d.required);
        let d = parse_device("name=vendor.com/dev,required=false").unwrap();
        assert_eq!((d.name.as_str(), d.required), ("vendor.com/dev", false));
        assert!(parse_device("a=b,required=maybe")
            .unwrap_err()
            .contains("not a boolean"));
        assert!(parse_device("required")
            .unwrap_err()
            .contains("no device name"));
        assert!(parse_device("a=b,c=d")
            .unwrap_err()
            .contains("unexpected field"));
    }
}
