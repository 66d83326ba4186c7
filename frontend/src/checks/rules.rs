//! The rules themselves, run over a parsed Dockerfile in BuildKit's order: parse-time rules on every
//! instruction, stage-name and casing rules, FROM rules on every stage, then the dispatch-time rules
//! (variables, ENV/LABEL/ARG, CMD/ENTRYPOINT, WORKDIR, EXPOSE, COPY) on the stages that are built —
//! every stage for `--check` without `--target`, as BuildKit's lint request does.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;

use super::{
    CheckConfig, Report, Rule, Warning, CONSISTENT_INSTRUCTION_CASING, COPY_IGNORED_FILE,
    DUPLICATE_STAGE_NAME, EXPOSE_INVALID_FORMAT, EXPOSE_PROTO_CASING, FROM_AS_CASING,
    FROM_PLATFORM_FLAG_CONST_DISALLOWED, INVALID_BASE_IMAGE_PLATFORM, INVALID_DEFAULT_ARG_IN_FROM,
    INVALID_DEFINITION_DESCRIPTION, JSON_ARGS_RECOMMENDED, LEGACY_KEY_VALUE_FORMAT,
    MAINTAINER_DEPRECATED, MULTIPLE_INSTRUCTIONS_DISALLOWED, NO_EMPTY_CONTINUATION,
    REDUNDANT_TARGET_PLATFORM, RESERVED_STAGE_NAME, SECRETS_USED_IN_ARG_OR_ENV, STAGE_NAME_CASING,
    UNDEFINED_ARG_IN_FROM, UNDEFINED_VAR, WORKDIR_RELATIVE_PATH,
};
use crate::instructions::{self, Command};
use crate::lower::DEFAULT_PATH;
use crate::parser::{Dockerfile, Instruction};
use crate::shell::{Env, Lex};
use crate::{BaseImages, Diagnostic, DockerIgnore, Span};

/// The build arg that replaces the `# check=` directive (BuildKit's `BUILDKIT_DOCKERFILE_CHECK`).
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// Build args BuildKit never puts in a RUN environment (and never reports as undefined).
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// What the checks need besides the Dockerfile.
#[derive(Debug, Clone)]
pub struct CheckOptions<'a> {
    /// `--build-arg`s (`BUILDKIT_DOCKERFILE_CHECK` among them replaces the directive).
    pub build_args: BTreeMap<String, String>,
    /// `--target`; the last stage when `None`.
    pub target: Option<String>,
    /// Run the dispatch-time rules on every stage, not only those the target needs (`--check`
    /// without `--target`).
    pub all_stages: bool,
    /// The target platform.
    pub platform: oci::Platform,
    /// The context's `.dockerignore`, for `CopyIgnoredFile`.
    pub dockerignore: Option<&'a DockerIgnore>,
}

impl Default for CheckOptions<'_> {
    fn default() -> Self {
        Self {
            build_args: BTreeMap::new(),
            target: None,
            all_stages: false,
            platform: oci::Platform::host(),
            dockerignore: None,
        }
    }
}

/// An [`Env`] that records which names a word looked up, found or not.
struct Recording<'a> {
    env: &'a [(String, String)],
    matched: RefCell<BTreeSet<String>>,
    unmatched: RefCell<BTreeSet<String>>,
}

impl<'a> Recording<'a> {
    fn new(env: &'a [(String, String)]) -> Self {
        Self {
            env,
            matched: RefCell::default(),
            unmatched: RefCell::default(),
        }
    }
}

impl Env for Recording<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let v = Env::get(self.env, key);
        if v.is_some() {
            self.matched.borrow_mut().insert(key.to_owned());
        } else {
            self.unmatched.borrow_mut().insert(key.to_owned());
        }
        v
    }
}

/// Expands `word` in `env`: the result (if it expands) and the names it used, set and unset.
fn expand(
    lex: Lex,
    word: &str,
    env: &[(String, String)],
) -> (Option<String>, BTreeSet<String>, BTreeSet<String>) {
    let rec = Recording::new(env);
    let out = lex.process_word(word, &rec).ok();
    (out, rec.matched.into_inner(), rec.unmatched.into_inner())
}

/// An ordered environment: later entries win, `set` replaces in place.
fn env_set(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    }
}

/// BuildKit's `suggest.Search`: the option at Levenshtein distance < 3 (the closest, first on ties),
/// none on an exact match.
fn suggest<'o>(val: &str, options: impl IntoIterator<Item = &'o str>) -> Option<String> {
    let mut best: Option<&str> = None;
    let mut min = 3;
    for o in options {
        if o == val {
            return None;
        }
        let d = crate::parser::levenshtein(val, o);
        if d < min {
            best = Some(o);
            min = d;
        }
    }
    best.map(str::to_owned)
}

static SECRET_DENY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
    )
    .expect("valid regex")
});
static SECRET_ALLOW: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)(?:_|^)(?:public|file|version)(?:_|$)").expect("valid regex")
});

/// Collects warnings with the configuration in force.
struct Lint {
    base: CheckConfig,
    warnings: Vec<Warning>,
}

impl Lint {
    fn fire(
        &mut self,
        config: &CheckConfig,
        rule: &'static Rule,
        message: String,
        at: (usize, usize),
    ) {
        if config.enabled(rule) {
            self.warnings.push(Warning {
                rule,
                message,
                line: at.0,
                end_line: at.1,
            });
        }
    }
}

fn loc(ins: &Instruction) -> (usize, usize) {
    (ins.span.line, ins.end_line.max(ins.span.line))
}

/// A stage as written, with its checked instructions.
struct StageDef<'a> {
    from: &'a Instruction,
    base_name: String,
    name: Option<String>,
    platform: Option<String>,
    cmds: Vec<(&'a Instruction, Command)>,
}

/// What a dispatched stage leaves for stages built on it.
#[derive(Clone, Default)]
struct StageEnv {
    env: Vec<(String, String)>,
    build_args: Vec<String>,
    workdir_set: bool,
    shell_set: bool,
}

/// Runs the build checks on `df`.
///
/// # Errors
/// An invalid `# check=` directive or `BUILDKIT_DOCKERFILE_CHECK` value (BuildKit fails the build).
pub fn run(
    df: &Dockerfile,
    opts: &CheckOptions<'_>,
    bases: &mut dyn BaseImages,
) -> Result<Report, Diagnostic> {
    let base = match opts.build_args.get(CHECK_BUILD_ARG) {
        Some(v) => CheckConfig::parse(v).map_err(|e| {
            Diagnostic::new(
                format!("failed to parse {CHECK_BUILD_ARG}: {e}"),
                Span::default(),
            )
        })?,
        None => CheckConfig::parse(df.directives.check.as_deref().unwrap_or("")).map_err(|e| {
            Diagnostic::new(
                format!("failed to parse check options: {e}"),
                Span::default(),
            )
        })?,
    };
    let mut lint = Lint {
        base: base.clone(),
        warnings: Vec::new(),
    };
    let lex = Lex::new(df.directives.escape);

    // Parser warnings: empty continuation lines, at the instruction's last line.
    for w in &df.warnings {
        let ins = df
            .instructions
            .iter()
            .find(|i| i.span.start == w.span.start);
        let line = ins.map_or(w.span.line, |i| i.end_line.max(i.span.line));
        lint.fire(
            &base,
            &NO_EMPTY_CONTINUATION,
            "Empty continuation line".into(),
            (line, line),
        );
    }

    // Parse-time rules, and the stages.
    let mut metas: Vec<&Instruction> = Vec::new();
    let mut defs: Vec<StageDef<'_>> = Vec::new();
    for ins in &df.instructions {
        let cfg = base.for_comments(&ins.comments);
        let cmd = ins.command();
        if cmd == "maintainer" {
            lint.fire(
                &cfg,
                &MAINTAINER_DEPRECATED,
                "Maintainer instruction is deprecated in favor of using label".into(),
                loc(ins),
            );
        }
        if cmd == "from" && ins.args.len() == 3 {
            let name = &ins.args[2];
            if *name != name.to_lowercase() {
                lint.fire(
                    &cfg,
                    &STAGE_NAME_CASING,
                    format!("Stage name '{name}' should be lowercase"),
                    loc(ins),
                );
            }
            let kw = &ins.keyword;
            let as_kw = &ins.args[1];
            let mismatch = if *kw == kw.to_lowercase() {
                *as_kw != as_kw.to_lowercase()
            } else if *kw == kw.to_uppercase() {
                *as_kw != as_kw.to_uppercase()
            } else {
                false
            };
            if mismatch {
                lint.fire(
                    &cfg,
                    &FROM_AS_CASING,
                    format!("'{as_kw}' and '{kw}' keywords' casing do not match"),
                    loc(ins),
                );
            }
        }
        let Ok(typed) = instructions::typed(ins) else {
            continue; // lowering reports it
        };
        match typed {
            Command::From {
                image,
                name,
                platform,
            } => {
                if let Some(n) = &name {
                    definition_description(&mut lint, &cfg, "FROM", std::slice::from_ref(n), ins);
                }
                defs.push(StageDef {
                    from: ins,
                    base_name: image,
                    name,
                    platform,
                    cmds: Vec::new(),
                });
            }
            cmd => {
                if let Command::Arg(args) = &cmd {
                    let keys: Vec<String> = args.iter().map(|(k, _)| k.clone()).collect();
                    definition_description(&mut lint, &cfg, "ARG", &keys, ins);
                }
                match defs.last_mut() {
                    Some(d) => d.cmds.push((ins, cmd)),
                    None if matches!(cmd, Command::Arg(_)) => metas.push(ins),
                    None => {}
                }
            }
        }
    }
    if defs.is_empty() {
        return Ok(finish(lint));
    }

    // Stage names and instruction casing.
    let mut seen = BTreeSet::new();
    for d in &defs {
        if let Some(n) = &d.name {
            if n == "context" || n == "scratch" {
                lint.fire(
                    &base,
                    &RESERVED_STAGE_NAME,
                    format!("Stage name should not use the same name as reserved stage {n:?}"),
                    loc(d.from),
                );
            }
            if !seen.insert(n.clone()) {
                lint.fire(
                    &base,
                    &DUPLICATE_STAGE_NAME,
                    format!("Duplicate stage name {n:?}, stage names should be unique"),
                    loc(d.from),
                );
            }
        }
    }
    instruction_casing(&mut lint, &defs);

    // FROM: default ARG values, undeclared ARGs, --platform.
    let target_name = opts
        .target
        .clone()
        .or_else(|| defs.last().and_then(|d| d.name.clone()))
        .unwrap_or_else(|| "default".into());
    let platform_args = predefined_args(&opts.platform, &target_name);
    let meta_defaults = meta_args(lex, &platform_args, &metas, &BTreeMap::new()).0;
    for d in &defs {
        let (name, _, _) = expand(lex, &d.base_name, &meta_defaults);
        let Some(name) = name else { break };
        if name.parse::<oci::Reference>().is_err() || name.is_empty() {
            lint.fire(
                &base,
                &INVALID_DEFAULT_ARG_IN_FROM,
                format!(
                    "Default value for ARG {} results in empty or invalid base image name",
                    d.base_name
                ),
                loc(d.from),
            );
        }
    }
    let (globals, declared) = meta_args(lex, &platform_args, &metas, &opts.build_args);
    let mut arg_keys: BTreeSet<String> = declared.into_iter().collect();
    arg_keys.extend(globals.iter().map(|(k, _)| k.clone()));
    let mut bases_of: Vec<String> = Vec::new();
    let mut platforms_of: Vec<Option<String>> = Vec::new();
    for d in &defs {
        let cfg = base.for_comments(&d.from.comments);
        let (name, _, unmatched) = expand(lex, &d.base_name, &globals);
        undefined_from_args(&mut lint, &cfg, &arg_keys, &unmatched, d.from);
        bases_of.push(name.unwrap_or_default());
        platforms_of.push(None);
        if let Some(p) = &d.platform {
            let (result, matched, unmatched) = expand(lex, p, &globals);
            undefined_from_args(&mut lint, &cfg, &arg_keys, &unmatched, d.from);
            let result = result.unwrap_or_default();
            *platforms_of.last_mut().expect("pushed above") = Some(result.clone());
            if matched.len() == 1
                && unmatched.is_empty()
                && matched.contains("TARGETPLATFORM")
                && Env::get(globals.as_slice(), "TARGETPLATFORM") == Some(result.as_str())
            {
                lint.fire(
                    &cfg,
                    &REDUNDANT_TARGET_PLATFORM,
                    format!(
                        "Setting platform to predefined {p} in FROM is redundant as this is the default behavior"
                    ),
                    loc(d.from),
                );
            }
            if matched.is_empty() && unmatched.is_empty() {
                if let Some((os, arch)) = parse_platform(&result) {
                    let stage = d.name.as_deref().unwrap_or("");
                    if !stage.contains(&os) && !stage.contains(&arch) {
                        lint.fire(
                            &cfg,
                            &FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                            format!(
                                "FROM --platform flag should not use constant value {result:?}"
                            ),
                            loc(d.from),
                        );
                    }
                }
            }
        }
    }

    // Dispatch-time rules on the stages that are built.
    let target = match &opts.target {
        Some(t) => defs
            .iter()
            .position(|d| d.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(t))),
        None => Some(defs.len() - 1),
    };
    let Some(target) = target else {
        return Ok(finish(lint));
    };
    let stage_index = |name: &str, before: usize| -> Option<usize> {
        defs[..before]
            .iter()
            .position(|d| {
                d.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(name))
            })
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
    };
    let wanted: BTreeSet<usize> = if opts.all_stages {
        (0..defs.len()).collect()
    } else {
        let mut wanted = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !wanted.insert(i) {
                continue;
            }
            let base_stage = defs[..i].iter().position(|d| {
                d.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&bases_of[i]))
            });
            todo.extend(base_stage);
            for (_, cmd) in &defs[i].cmds {
                for from in stage_refs(cmd) {
                    todo.extend(stage_index(&from, i));
                }
            }
        }
        wanted
    };
    let mut done: Vec<Option<StageEnv>> = vec![None; defs.len()];
    for i in 0..defs.len() {
        if !wanted.contains(&i) {
            continue;
        }
        let d = &defs[i];
        let base_stage = defs[..i].iter().position(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&bases_of[i]))
        });
        let mut st = match base_stage.and_then(|j| done[j].clone()) {
            Some(parent) => parent,
            None => image_env(
                &mut lint,
                &base,
                d,
                &bases_of[i],
                platforms_of[i].as_deref(),
                &opts.platform,
                bases,
            ),
        };
        let ctx = Dispatch {
            lex,
            globals: &globals,
            build_args: &opts.build_args,
            dockerignore: opts.dockerignore,
        };
        ctx.stage(&mut lint, &mut st, d);
        done[i] = Some(st);
    }
    Ok(finish(lint))
}

fn finish(lint: Lint) -> Report {
    let mut warnings = lint.warnings;
    warnings.sort_by_key(|w| w.line);
    Report {
        warnings,
        error_on_warnings: lint.base.error,
    }
}

/// Stage references of COPY --from and RUN --mount from=.
fn stage_refs(cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Copy(c) => c.from.clone().into_iter().collect(),
        Command::Run(r) => r
            .mounts
            .iter()
            .filter_map(|m| {
                m.split(',')
                    .find_map(|kv| kv.strip_prefix("from=").map(str::to_owned))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The environment a stage starts with when it is built on an image (or scratch), and
/// `InvalidBaseImagePlatform` when the image is for another platform.
fn image_env(
    lint: &mut Lint,
    base: &CheckConfig,
    d: &StageDef<'_>,
    image: &str,
    stage_platform: Option<&str>,
    platform: &oci::Platform,
    bases: &mut dyn BaseImages,
) -> StageEnv {
    let mut st = StageEnv::default();
    if !image.eq_ignore_ascii_case("scratch") && !image.is_empty() {
        if let Ok(config) = bases.config(image) {
            for kv in config.config.env.iter().flatten() {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                env_set(&mut st.env, k, v);
            }
            st.shell_set = config.config.shell.as_ref().is_some_and(|s| !s.is_empty());
            let (os, arch, variant) = match stage_platform.and_then(parse_platform) {
                Some((os, arch)) => (os, arch, None),
                None => (
                    platform.os.clone(),
                    platform.architecture.clone(),
                    platform.variant.clone(),
                ),
            };
            if !config.os.is_empty() && (config.os != os || config.architecture != arch) {
                let show = |os: &str, arch: &str, variant: Option<&str>| match variant {
                    Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
                    _ => format!("{os}/{arch}"),
                };
                lint.fire(
                    base,
                    &INVALID_BASE_IMAGE_PLATFORM,
                    format!(
                        "Base image {image} was pulled with platform {:?}, expected {:?} for current build",
                        show(&config.os, &config.architecture, config.variant.as_deref()),
                        show(&os, &arch, variant.as_deref()),
                    ),
                    loc(d.from),
                );
            }
        }
    }
    if Env::get(st.env.as_slice(), "PATH").is_none() {
        env_set(&mut st.env, "PATH", DEFAULT_PATH);
    }
    st
}

/// `os/arch[/variant]` (or `os`, `arch`) → (os, arch), with containerd's normalisation of the common
/// architecture names; `None` when it is not a platform.
fn parse_platform(s: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = s.split('/').collect();
    let norm = |a: &str| match a.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" | "amd64" => "amd64".to_owned(),
        "aarch64" | "arm64" => "arm64".to_owned(),
        "i386" | "386" => "386".to_owned(),
        o => o.to_owned(),
    };
    let ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    match parts.as_slice() {
        [one] if ok(one) => {
            let one = one.to_ascii_lowercase();
            if ["linux", "windows", "darwin", "freebsd"].contains(&one.as_str()) {
                Some((one, oci::Platform::host().architecture))
            } else {
                Some(("linux".into(), norm(&one)))
            }
        }
        [os, arch] | [os, arch, _] if ok(os) && ok(arch) => {
            Some((os.to_ascii_lowercase(), norm(arch)))
        }
        _ => None,
    }
}

/// BuildKit's predefined platform args (and `TARGETSTAGE`).
fn predefined_args(p: &oci::Platform, target: &str) -> Vec<(String, String)> {
    let plat = match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    };
    let variant = p.variant.clone().unwrap_or_default();
    let os_version = p.os_version.clone().unwrap_or_default();
    let mut out = Vec::new();
    for prefix in ["BUILD", "TARGET"] {
        out.push((format!("{prefix}PLATFORM"), plat.clone()));
        out.push((format!("{prefix}OS"), p.os.clone()));
        out.push((format!("{prefix}OSVERSION"), os_version.clone()));
        out.push((format!("{prefix}ARCH"), p.architecture.clone()));
        out.push((format!("{prefix}VARIANT"), variant.clone()));
    }
    out.push(("TARGETSTAGE".into(), target.to_owned()));
    out
}

/// The global args (predefined plus ARGs before the first FROM, with `build_args` applied) and the
/// names the meta ARGs declare.
fn meta_args(
    lex: Lex,
    predefined: &[(String, String)],
    metas: &[&Instruction],
    build_args: &BTreeMap<String, String>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut env: Vec<(String, String)> = predefined
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                build_args.get(k).cloned().unwrap_or_else(|| v.clone()),
            )
        })
        .collect();
    let mut declared = Vec::new();
    for ins in metas {
        let Ok(Command::Arg(args)) = instructions::typed(ins) else {
            continue;
        };
        for (k, default) in args {
            let value = match (build_args.get(&k), default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => lex.process_word(&d, &env).ok(),
                (None, None) => None,
            };
            if let Some(v) = value {
                env_set(&mut env, &k, &v);
            }
            declared.push(k);
        }
    }
    (env, declared)
}

fn undefined_from_args(
    lint: &mut Lint,
    cfg: &CheckConfig,
    keys: &BTreeSet<String>,
    unmatched: &BTreeSet<String>,
    from: &Instruction,
) {
    for arg in unmatched {
        if keys.contains(arg) {
            continue;
        }
        let mut m = format!("FROM argument '{arg}' is not declared");
        if let Some(s) = suggest(arg, keys.iter().map(String::as_str)) {
            m.push_str(&format!(" (did you mean {s}?)"));
        }
        lint.fire(cfg, &UNDEFINED_ARG_IN_FROM, m, loc(from));
    }
}

/// `InvalidDefinitionDescription` (experimental): the comment right above a named FROM or an ARG
/// should start with the name it describes.
fn definition_description(
    lint: &mut Lint,
    cfg: &CheckConfig,
    instruction: &str,
    keys: &[String],
    ins: &Instruction,
) {
    let (Some(last), Some(first)) = (ins.comments.last(), keys.first()) else {
        return;
    };
    let word = last.split(' ').next().unwrap_or("");
    if keys.iter().any(|k| k == word) {
        return;
    }
    let example = if keys.len() > 1 { "<arg_key>" } else { first };
    lint.fire(
        cfg,
        &INVALID_DEFINITION_DESCRIPTION,
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
        loc(ins),
    );
}

fn instruction_casing(lint: &mut Lint, defs: &[StageDef<'_>]) {
    let all = || {
        defs.iter()
            .flat_map(|d| std::iter::once(d.from).chain(d.cmds.iter().map(|(i, _)| *i)))
    };
    let (mut lower, mut upper) = (0, 0);
    for ins in all() {
        let k = &ins.keyword;
        if *k == k.to_lowercase() {
            lower += 1;
        } else if *k == k.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    let base = lint.base.clone();
    for ins in all() {
        let k = &ins.keyword;
        let casing = if majority_lower && *k != k.to_lowercase() {
            "lowercase"
        } else if !majority_lower && *k != k.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        lint.fire(
            &base,
            &CONSISTENT_INSTRUCTION_CASING,
            format!("Command '{k}' should match the case of the command majority ({casing})"),
            loc(ins),
        );
    }
}

/// What dispatching a stage needs.
struct Dispatch<'a> {
    lex: Lex,
    globals: &'a [(String, String)],
    build_args: &'a BTreeMap<String, String>,
    dockerignore: Option<&'a DockerIgnore>,
}

impl Dispatch<'_> {
    fn stage(&self, lint: &mut Lint, st: &mut StageEnv, d: &StageDef<'_>) {
        let mut cmd_at: Option<(usize, usize)> = None;
        let mut entrypoint_at: Option<(usize, usize)> = None;
        let mut health_at: Option<(usize, usize)> = None;
        for (ins, cmd) in &d.cmds {
            let cfg = lint.base.for_comments(&ins.comments);
            let at = loc(ins);
            // Words of the instruction, expanded in the stage's environment (not ARG: done below).
            let mut words: Vec<&str> = Vec::new();
            let mut raw: Vec<&str> = Vec::new();
            match cmd {
                Command::Env(_) | Command::Label(_) => {
                    words.extend(
                        ins.args
                            .chunks(3)
                            .flat_map(|t| t.iter().take(2))
                            .map(String::as_str),
                    );
                }
                Command::Copy(c) | Command::Add(c) => {
                    words.extend(c.chown.as_deref());
                    words.extend(c.chmod.as_deref());
                    if matches!(cmd, Command::Add(_)) {
                        words.extend(c.checksum.as_deref());
                    }
                    words.extend(
                        c.srcs
                            .iter()
                            .filter(|s| !s.starts_with("<<"))
                            .map(String::as_str),
                    );
                    words.push(&c.dest);
                    raw.extend(
                        c.heredocs
                            .iter()
                            .filter(|h| h.expand)
                            .map(|h| h.content.as_str()),
                    );
                }
                Command::Workdir(p) | Command::User(p) | Command::StopSignal(p) => words.push(p),
                Command::Volume(v) => words.extend(v.iter().map(String::as_str)),
                Command::Run(r) => words.extend(r.mounts.iter().map(String::as_str)),
                _ => {}
            }
            let mut expanded = Vec::new();
            for w in &words {
                let (out, _, unmatched) = expand(self.lex, w, &st.env);
                self.undefined(lint, &cfg, st, &unmatched, at);
                expanded.push(out);
            }
            let raw_lex = Lex {
                skip_process_quotes: true,
                ..Lex::new('\\')
            };
            for w in &raw {
                let (_, _, unmatched) = expand(raw_lex, w, &st.env);
                self.undefined(lint, &cfg, st, &unmatched, at);
            }
            match cmd {
                Command::Env(_) | Command::Label(_) => {
                    let is_env = matches!(cmd, Command::Env(_));
                    if ins
                        .args
                        .chunks(3)
                        .any(|t| t.get(2).is_some_and(String::is_empty))
                    {
                        lint.fire(
                            &cfg,
                            &LEGACY_KEY_VALUE_FORMAT,
                            format!(
                                "\"{0} key=value\" should be used instead of legacy \"{0} key value\" format",
                                ins.keyword
                            ),
                            at,
                        );
                    }
                    if is_env {
                        for pair in expanded.chunks(2) {
                            let k = pair[0].clone().unwrap_or_default();
                            let v = pair.get(1).cloned().flatten().unwrap_or_default();
                            secret_key(lint, &cfg, "ENV", &k, at);
                            env_set(&mut st.env, &k, &v);
                        }
                    }
                }
                Command::Arg(args) => {
                    for (k, default) in args {
                        secret_key(lint, &cfg, "ARG", k, at);
                        let value = if let Some(v) = self.build_args.get(k) {
                            Some(v.clone())
                        } else if let Some(def) = default {
                            let (out, _, unmatched) = expand(self.lex, def, &st.env);
                            self.undefined(lint, &cfg, st, &unmatched, at);
                            out
                        } else {
                            Env::get(self.globals, k).map(str::to_owned)
                        };
                        if let Some(v) = value {
                            if !NON_ENV_ARGS.contains(&k.as_str()) {
                                env_set(&mut st.env, k, &v);
                            }
                        }
                        st.build_args.push(k.clone());
                    }
                }
                Command::Cmd(c) | Command::Entrypoint(c) => {
                    let slot = if matches!(cmd, Command::Cmd(_)) {
                        &mut cmd_at
                    } else {
                        &mut entrypoint_at
                    };
                    used_once(lint, &cfg, slot, ins);
                    if c.shell_form && !st.shell_set {
                        lint.fire(
                            &cfg,
                            &JSON_ARGS_RECOMMENDED,
                            format!(
                                "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                                ins.keyword
                            ),
                            at,
                        );
                    }
                }
                Command::Healthcheck(_) => used_once(lint, &cfg, &mut health_at, ins),
                Command::Shell(s) => st.shell_set = !s.is_empty(),
                Command::Workdir(_) => {
                    let path = expanded[0].clone().unwrap_or_default();
                    if !st.workdir_set && !path.starts_with('/') {
                        lint.fire(
                            &cfg,
                            &WORKDIR_RELATIVE_PATH,
                            format!(
                                "Relative workdir {path:?} can have unexpected results if the base image changes"
                            ),
                            at,
                        );
                    }
                    st.workdir_set = true;
                }
                Command::Expose(ports) => {
                    for p in ports {
                        let Ok(ps) = self.lex.process_words(p, &st.env) else {
                            continue;
                        };
                        for raw in ps {
                            expose(lint, &cfg, &raw, at);
                        }
                    }
                }
                Command::Copy(c) | Command::Add(c) if c.from.is_none() => {
                    if let Some(ignore) = self.dockerignore {
                        let verb = if matches!(cmd, Command::Add(_)) {
                            "Add"
                        } else {
                            "Copy"
                        };
                        for src in c.srcs.iter().filter(|s| !s.starts_with("<<")) {
                            if let Ok(src) = self.lex.process_word(src, &st.env) {
                                copy_ignored(lint, &cfg, ignore, verb, &src, at);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// `UndefinedVar` for the names a word used that are neither set nor declared with ARG.
    fn undefined(
        &self,
        lint: &mut Lint,
        cfg: &CheckConfig,
        st: &StageEnv,
        unmatched: &BTreeSet<String>,
        at: (usize, usize),
    ) {
        for var in unmatched {
            if st.build_args.contains(var) || NON_ENV_ARGS.contains(&var.as_str()) {
                continue;
            }
            let mut m = format!("Usage of undefined variable '${var}'");
            if let Some(s) = suggest(var, st.env.iter().map(|(k, _)| k.as_str())) {
                m.push_str(&format!(" (did you mean ${s}?)"));
            }
            lint.fire(cfg, &UNDEFINED_VAR, m, at);
        }
    }
}

/// `CopyIgnoredFile` for one context source; not checked when `.dockerignore` has `!` exceptions
/// (BuildKit: too hard to decide statically).
fn copy_ignored(
    lint: &mut Lint,
    cfg: &CheckConfig,
    ignore: &DockerIgnore,
    verb: &str,
    src: &str,
    at: (usize, usize),
) {
    let patterns = ignore.patterns();
    if patterns.iter().any(|p| p.starts_with('!')) {
        return;
    }
    if src.starts_with("http://") || src.starts_with("https://") || src.starts_with("git@") {
        return;
    }
    let clean = crate::dockerignore::clean(src);
    if (clean == "." || clean == "/")
        && !patterns
            .iter()
            .any(|p| matches!(p.as_str(), "*" | "**" | "**/*"))
    {
        return;
    }
    if ignore.is_excluded(&clean) {
        lint.fire(
            cfg,
            &COPY_IGNORED_FILE,
            format!("Attempting to {verb} file {clean:?} that is excluded by .dockerignore"),
            at,
        );
    }
}

fn used_once(
    lint: &mut Lint,
    cfg: &CheckConfig,
    slot: &mut Option<(usize, usize)>,
    ins: &Instruction,
) {
    if let Some(prev) = *slot {
        // The earlier one is reported: it is the one that is ignored.
        lint.fire(
            cfg,
            &MULTIPLE_INSTRUCTIONS_DISALLOWED,
            format!(
                "Multiple {} instructions should not be used in the same stage because only the last one will be used",
                ins.keyword
            ),
            prev,
        );
    }
    *slot = Some(loc(ins));
}

fn secret_key(
    lint: &mut Lint,
    cfg: &CheckConfig,
    instruction: &str,
    key: &str,
    at: (usize, usize),
) {
    if SECRET_DENY.is_match(key) && !SECRET_ALLOW.is_match(key) {
        lint.fire(
            cfg,
            &SECRETS_USED_IN_ARG_OR_ENV,
            format!(
                "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
            ),
            at,
        );
    }
}

/// `ExposeProtoCasing` and `ExposeInvalidFormat` for one `[ip:][hostPort:]port[/proto]`.
fn expose(lint: &mut Lint, cfg: &CheckConfig, raw: &str, at: (usize, usize)) {
    let parts: Vec<&str> = raw.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => {
            let n = parts.len();
            (
                raw.rsplitn(3, ':').nth(2).unwrap_or(""),
                parts[n - 2],
                parts[n - 1],
            )
        }
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty()
        || !matches!(
            proto.to_ascii_lowercase().as_str(),
            "" | "tcp" | "udp" | "sctp"
        )
    {
        return; // an invalid port: lowering fails on it
    }
    if proto != proto.to_lowercase() {
        lint.fire(
            cfg,
            &EXPOSE_PROTO_CASING,
            format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
            at,
        );
    }
    if !ip.is_empty() || !host.is_empty() {
        lint.fire(
            cfg,
            &EXPOSE_INVALID_FORMAT,
            format!(
                "EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"
            ),
            at,
        );
    }
}
