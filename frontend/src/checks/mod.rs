//! BuildKit's build checks (`docker build --check`): the rules of the Dockerfile reference's "Build
//! checks" page, their `# check=` configuration, and their output as buildx prints it.
//!
//! The rules, their names, descriptions, URLs and message texts follow current moby/buildkit
//! (`frontend/dockerfile/linter/ruleset.go`, run from `dockerfile2llb/convert.go`, `validations.go` and
//! `instructions/parse.go`); the output follows buildx (`commands/build.go` `printWarnings`, BuildKit's
//! `subrequests/lint` and `errdefs.Source.Print`). [`run`] checks a parsed [`crate::Dockerfile`]; it needs the
//! base images' configs for the rules that look at them (undefined variables set by a base image's ENV,
//! the base image's platform), through the same [`crate::BaseImages`] trait as lowering.

mod call;
mod outline;
mod rules;

use std::collections::BTreeSet;
use std::fmt::Write as _;

pub use call::{describe, Call, Method};
pub use outline::{outline, render_targets, targets, Outline, OutlineArg, OutlineSecret, Target};
pub use rules::{run, CheckOptions, CHECK_BUILD_ARG};

/// One build-check rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    /// `StageNameCasing`.
    pub name: &'static str,
    /// What the rule wants, as BuildKit describes it.
    pub description: &'static str,
    /// `https://docs.docker.com/go/dockerfile/rule/<kebab-name>/` (none for `InvalidBaseImagePlatform`).
    pub url: Option<&'static str>,
    /// Runs only when enabled with `# check=experimental=NAME` (or `experimental=all`).
    pub experimental: bool,
}

macro_rules! rule {
    ($id:ident, $name:literal, $desc:literal, $url:expr, $exp:literal) => {
        #[doc = concat!("`", $name, "`: ", $desc)]
        pub const $id: Rule = Rule {
            name: $name,
            description: $desc,
            url: $url,
            experimental: $exp,
        };
    };
}

const fn url(kebab: &'static str) -> Option<&'static str> {
    Some(kebab)
}

rule!(
    STAGE_NAME_CASING,
    "StageNameCasing",
    "Stage names should be lowercase",
    url("https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"),
    false
);
rule!(
    FROM_AS_CASING,
    "FromAsCasing",
    "The 'as' keyword should match the case of the 'from' keyword",
    url("https://docs.docker.com/go/dockerfile/rule/from-as-casing/"),
    false
);
rule!(
    NO_EMPTY_CONTINUATION,
    "NoEmptyContinuation",
    "Empty continuation lines will become errors in a future release",
    url("https://docs.docker.com/go/dockerfile/rule/no-empty-continuation/"),
    false
);
rule!(
    CONSISTENT_INSTRUCTION_CASING,
    "ConsistentInstructionCasing",
    "All commands within the Dockerfile should use the same casing (either upper or lower)",
    url("https://docs.docker.com/go/dockerfile/rule/consistent-instruction-casing/"),
    false
);
rule!(
    DUPLICATE_STAGE_NAME,
    "DuplicateStageName",
    "Stage names should be unique",
    url("https://docs.docker.com/go/dockerfile/rule/duplicate-stage-name/"),
    false
);
rule!(
    RESERVED_STAGE_NAME,
    "ReservedStageName",
    "Reserved words should not be used as stage names",
    url("https://docs.docker.com/go/dockerfile/rule/reserved-stage-name/"),
    false
);
rule!(JSON_ARGS_RECOMMENDED, "JSONArgsRecommended",
    "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    url("https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"), false);
rule!(
    MAINTAINER_DEPRECATED,
    "MaintainerDeprecated",
    "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    url("https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/"),
    false
);
rule!(
    UNDEFINED_ARG_IN_FROM,
    "UndefinedArgInFrom",
    "FROM command must use declared ARGs",
    url("https://docs.docker.com/go/dockerfile/rule/undefined-arg-in-from/"),
    false
);
rule!(WORKDIR_RELATIVE_PATH, "WorkdirRelativePath",
    "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    url("https://docs.docker.com/go/dockerfile/rule/workdir-relative-path/"), false);
rule!(
    UNDEFINED_VAR,
    "UndefinedVar",
    "Variables should be defined before their use",
    url("https://docs.docker.com/go/dockerfile/rule/undefined-var/"),
    false
);
rule!(
    MULTIPLE_INSTRUCTIONS_DISALLOWED,
    "MultipleInstructionsDisallowed",
    "Multiple instructions of the same type should not be used in the same stage",
    url("https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/"),
    false
);
rule!(
    LEGACY_KEY_VALUE_FORMAT,
    "LegacyKeyValueFormat",
    "Legacy key/value format with whitespace separator should not be used",
    url("https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/"),
    false
);
rule!(
    INVALID_BASE_IMAGE_PLATFORM,
    "InvalidBaseImagePlatform",
    "Base image platform does not match expected target platform",
    None,
    false
);
rule!(REDUNDANT_TARGET_PLATFORM, "RedundantTargetPlatform",
    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    url("https://docs.docker.com/go/dockerfile/rule/redundant-target-platform/"), false);
rule!(
    SECRETS_USED_IN_ARG_OR_ENV,
    "SecretsUsedInArgOrEnv",
    "Sensitive data should not be used in the ARG or ENV commands",
    url("https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/"),
    false
);
rule!(
    INVALID_DEFAULT_ARG_IN_FROM,
    "InvalidDefaultArgInFrom",
    "Default value for global ARG results in an empty or invalid base image name",
    url("https://docs.docker.com/go/dockerfile/rule/invalid-default-arg-in-from/"),
    false
);
rule!(
    FROM_PLATFORM_FLAG_CONST_DISALLOWED,
    "FromPlatformFlagConstDisallowed",
    "FROM --platform flag should not use a constant value",
    url("https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/"),
    false
);
rule!(
    COPY_IGNORED_FILE,
    "CopyIgnoredFile",
    "Attempting to Copy file that is excluded by .dockerignore",
    url("https://docs.docker.com/go/dockerfile/rule/copy-ignored-file/"),
    false
);
rule!(INVALID_DEFINITION_DESCRIPTION, "InvalidDefinitionDescription",
    "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
    url("https://docs.docker.com/go/dockerfile/rule/invalid-definition-description/"), true);
rule!(
    EXPOSE_PROTO_CASING,
    "ExposeProtoCasing",
    "Protocol in EXPOSE instruction should be lowercase",
    url("https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/"),
    false
);
rule!(EXPOSE_INVALID_FORMAT, "ExposeInvalidFormat",
    "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
    url("https://docs.docker.com/go/dockerfile/rule/expose-invalid-format/"), false);

/// Every rule, in BuildKit's order.
pub const RULES: &[&Rule] = &[
    &STAGE_NAME_CASING,
    &FROM_AS_CASING,
    &NO_EMPTY_CONTINUATION,
    &CONSISTENT_INSTRUCTION_CASING,
    &DUPLICATE_STAGE_NAME,
    &RESERVED_STAGE_NAME,
    &JSON_ARGS_RECOMMENDED,
    &MAINTAINER_DEPRECATED,
    &UNDEFINED_ARG_IN_FROM,
    &WORKDIR_RELATIVE_PATH,
    &UNDEFINED_VAR,
    &MULTIPLE_INSTRUCTIONS_DISALLOWED,
    &LEGACY_KEY_VALUE_FORMAT,
    &INVALID_BASE_IMAGE_PLATFORM,
    &REDUNDANT_TARGET_PLATFORM,
    &SECRETS_USED_IN_ARG_OR_ENV,
    &INVALID_DEFAULT_ARG_IN_FROM,
    &FROM_PLATFORM_FLAG_CONST_DISALLOWED,
    &COPY_IGNORED_FILE,
    &INVALID_DEFINITION_DESCRIPTION,
    &EXPOSE_PROTO_CASING,
    &EXPOSE_INVALID_FORMAT,
];

/// Which rules run and whether a warning fails the build: `# check=skip=A,B;error=true`,
/// `experimental=…`, or the `BUILDKIT_DOCKERFILE_CHECK` build arg (which replaces the directive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// `skip=A,B`.
    pub skip: BTreeSet<String>,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// `experimental=A,B`.
    pub experimental: BTreeSet<String>,
    /// `error=true`: a warning fails the build.
    pub error: bool,
}

impl CheckConfig {
    /// Parses a `check` value (`skip=A,B;error=true`), as BuildKit's `ParseLintOptions`.
    ///
    /// # Errors
    /// An unknown option, an option without `=`, or an `error=` value that is not a boolean.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let mut c = Self::default();
        if value.is_empty() {
            return Ok(c);
        }
        for part in value.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {part:?}"));
            };
            let v = v.trim();
            let list = || v.split(',').map(|r| r.trim().to_owned()).collect();
            match k.trim() {
                "skip" if v == "all" => c.skip_all = true,
                "skip" => c.skip = list(),
                "experimental" if v == "all" => c.experimental_all = true,
                "experimental" => c.experimental = list(),
                "error" => {
                    c.error = parse_go_bool(v)
                        .ok_or_else(|| format!("failed to parse check option {part:?}"))?;
                }
                other => return Err(format!("invalid check option {other:?}")),
            }
        }
        Ok(c)
    }

    /// This configuration with `other`'s settings added (a `# check=` comment above an instruction).
    fn merged(&self, other: &Self) -> Self {
        let mut c = self.clone();
        c.experimental_all |= other.experimental_all;
        c.experimental.extend(other.experimental.iter().cloned());
        c.skip_all |= other.skip_all;
        c.skip.extend(other.skip.iter().cloned());
        c
    }

    /// The configuration for one instruction: a `check=` directive among the comments above it is
    /// merged in (BuildKit's `WithMergedConfigFromComments`; an invalid one is ignored).
    pub(crate) fn for_comments(&self, comments: &[String]) -> Self {
        for c in comments {
            let Some(value) = comment_check_value(c) else {
                continue;
            };
            let value = value.split(' ').next().unwrap_or("");
            return match Self::parse(value) {
                Ok(other) => self.merged(&other),
                Err(_) => self.clone(),
            };
        }
        self.clone()
    }

    /// Whether `rule` runs.
    pub fn enabled(&self, rule: &Rule) -> bool {
        if rule.experimental {
            self.experimental_all || self.experimental.contains(rule.name)
        } else {
            !self.skip_all && !self.skip.contains(rule.name)
        }
    }
}

/// `check=VALUE` in a comment's text (without the `#`), as a directive line.
fn comment_check_value(comment: &str) -> Option<&str> {
    let t = comment.trim_matches([' ', '\t']);
    let (k, v) = t.split_once('=')?;
    let k = k.trim_matches([' ', '\t']);
    (k.eq_ignore_ascii_case("check")).then(|| v.trim_matches([' ', '\t']))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The rules BuildKit runs while parsing instructions: the ones that still fire on the lines before a
/// parse error.
const PARSE_TIME: &[&Rule] = &[
    &NO_EMPTY_CONTINUATION,
    &MAINTAINER_DEPRECATED,
    &STAGE_NAME_CASING,
    &FROM_AS_CASING,
    &INVALID_DEFINITION_DESCRIPTION,
];

/// `--check` of a Dockerfile that does not parse: the parse-time rules that fired on the instructions
/// before the first error, rendered as [`Report::render`] does (empty when none did). BuildKit prints
/// these warnings, then the error.
pub fn before_parse_error(src: &str, filename: &str, opts: &CheckOptions<'_>) -> String {
    let df = crate::parser::parse_prefix(src);
    let Ok(mut report) = rules::run(&df, opts, &mut NoBases) else {
        return String::new();
    };
    report.warnings.retain(|w| PARSE_TIME.contains(&w.rule));
    report.error_on_warnings = false;
    if report.warnings.is_empty() {
        return String::new();
    }
    report.render(filename, src)
}

/// No base images: [`before_parse_error`] runs no rule that needs one.
struct NoBases;

impl crate::BaseImages for NoBases {
    fn config(&mut self, reference: &str) -> Result<oci::ImageConfig, crate::BoxError> {
        Err(format!("not resolved: {reference}").into())
    }
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The rule.
    pub rule: &'static Rule,
    /// BuildKit's message (`Stage name 'Build' should be lowercase`).
    pub message: String,
    /// 1-based first line of the instruction it is about.
    pub line: usize,
    /// 1-based last line.
    pub end_line: usize,
}

impl Warning {
    /// buildx's one-line form: `FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)`.
    pub fn short(&self) -> String {
        if self.line > 0 {
            format!("{}: {} (line {})", self.rule.name, self.message, self.line)
        } else {
            format!("{}: {}", self.rule.name, self.message)
        }
    }
}

/// The checks of one Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Warnings sorted by line (stable: same line keeps the order they fired in).
    pub warnings: Vec<Warning>,
    /// `error=true` was set: warnings fail the build.
    pub error_on_warnings: bool,
}

impl Report {
    /// BuildKit's error when `error=true` and a rule fired:
    /// `lint violation found for rules: A, B` (rules in the order they first fired).
    pub fn error(&self) -> Option<String> {
        if !self.error_on_warnings || self.warnings.is_empty() {
            return None;
        }
        let mut names: Vec<&str> = Vec::new();
        for w in &self.warnings {
            if !names.contains(&w.rule.name) {
                names.push(w.rule.name);
            }
        }
        Some(format!(
            "lint violation found for rules: {}",
            names.join(", ")
        ))
    }

    /// `--check` output, as buildx prints it on stdout: the count, then each warning with its rule,
    /// URL, message and the Dockerfile lines around it (the instruction's lines marked `>>>`).
    pub fn render(&self, filename: &str, src: &str) -> String {
        let mut out = String::new();
        match self.warnings.len() {
            0 => {}
            1 => out.push_str("Check complete, 1 warning has been found!\n"),
            n => {
                let _ = writeln!(out, "Check complete, {n} warnings have been found!");
            }
        }
        for w in &self.warnings {
            let _ = write!(out, "\nWARNING: {}", w.rule.name);
            if let Some(url) = w.rule.url {
                let _ = write!(out, " - {url}");
            }
            let _ = writeln!(out, "\n{}", w.message);
            out.push_str(&source_excerpt(filename, src, w.line, w.end_line));
        }
        if let Some(e) = self.error() {
            if !self.warnings.is_empty() {
                out.push('\n');
            }
            let _ = writeln!(out, "{e}");
        } else if self.warnings.is_empty() {
            out.push_str("Check complete, no warnings found.\n");
        }
        out
    }

    /// `--check` output: [`Report::render`], or [`Report::to_json`] pretty-printed with `json`.
    pub fn output(&self, json: bool, filename: &str, src: &str) -> String {
        if json {
            format!("{:#}\n", self.to_json(filename, src))
        } else {
            self.render(filename, src)
        }
    }

    /// buildx's summary at the end of a build:
    /// ` 2 warnings found (use docker --debug to expand):` then ` - RULE: message (line N)` lines.
    /// Empty when nothing fired.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        match self.warnings.len() {
            0 => return out,
            1 => out.push_str("\n 1 warning found:\n"),
            n => {
                let _ = write!(out, "\n {n} warnings found:\n");
            }
        }
        for w in &self.warnings {
            let _ = writeln!(out, " - {}", w.short());
        }
        out
    }

    /// `--call check --format json`: BuildKit's lint result (`warnings` with `ruleName`, `description`,
    /// `url`, `detail`, `location`), with `buildError` when `error=true` made the check fail.
    pub fn to_json(&self, filename: &str, src: &str) -> serde_json::Value {
        let warnings: Vec<serde_json::Value> = self
            .warnings
            .iter()
            .map(|w| {
                let mut v = serde_json::json!({
                    "ruleName": w.rule.name,
                    "description": w.rule.description,
                    "detail": w.message,
                    "location": location_json(w.line, w.end_line),
                });
                if let Some(url) = w.rule.url {
                    v["url"] = url.into();
                }
                v
            })
            .collect();
        let mut v = serde_json::json!({
            "warnings": warnings,
            "sources": [{"filename": filename, "language": "Dockerfile", "data": src}],
        });
        if let Some(e) = self.error() {
            v["buildError"] = serde_json::json!({"message": e, "location": {"sourceIndex": 0}});
        }
        v
    }
}

fn location_json(line: usize, end_line: usize) -> serde_json::Value {
    serde_json::json!({
        "sourceIndex": 0,
        "ranges": [{"start": {"line": line}, "end": {"line": end_line}}],
    })
}

/// BuildKit's `errdefs.Source.Print`: the file name and first line, then the lines of the range with
/// up to two (four for a one-line range) lines of context, the range's lines marked `>>>`.
pub fn source_excerpt(filename: &str, src: &str, line: usize, end_line: usize) -> String {
    let lines: Vec<&str> = src.split('\n').collect();
    let end_line = end_line.max(line);
    if line < 1 || line > lines.len() {
        return String::new();
    }
    let (mut start, mut end) = (line, end_line.min(lines.len()));
    let pad = if end == start { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{filename}:{line}\n--------------------\n");
    for i in start..=end {
        let mark = if (line..=end_line).contains(&i) {
            ">>>"
        } else {
            "   "
        };
        let _ = writeln!(out, " {i:>3} | {mark} {}", lines[i - 1]);
    }
    out.push_str("--------------------\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parse_like_buildkit() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert!(c.error && !c.skip_all);
        assert!(c.skip.contains("StageNameCasing"));
        assert!(!c.enabled(&STAGE_NAME_CASING));
        assert!(c.enabled(&FROM_AS_CASING));
        assert!(!c.enabled(&INVALID_DEFINITION_DESCRIPTION));
        let all = CheckConfig::parse(" skip = all ").unwrap();
        assert!(!all.enabled(&FROM_AS_CASING));
        let exp = CheckConfig::parse("experimental=all").unwrap();
        assert!(exp.enabled(&INVALID_DEFINITION_DESCRIPTION));
        assert_eq!(
            CheckConfig::parse("error=maybe").unwrap_err(),
            "failed to parse check option \"error=maybe\""
        );
        assert_eq!(
            CheckConfig::parse("foo=bar").unwrap_err(),
            "invalid check option \"foo\""
        );
        assert_eq!(
            CheckConfig::parse("skip").unwrap_err(),
            "invalid check option \"skip\""
        );
    }

    #[test]
    fn comment_directive_merges() {
        let base = CheckConfig::parse("skip=A").unwrap();
        let c = base.for_comments(&["check=skip=B more text".into()]);
        assert!(c.skip.contains("A") && c.skip.contains("B"));
        let c = base.for_comments(&["just a comment".into()]);
        assert_eq!(c, base);
    }

    #[test]
    fn every_rule_has_a_docs_url_but_the_platform_one() {
        for r in RULES {
            match r.url {
                Some(u) => assert!(u.starts_with("https://docs.docker.com/go/dockerfile/rule/")),
                None => assert_eq!(r.name, "InvalidBaseImagePlatform"),
            }
        }
        assert_eq!(RULES.len(), 22);
    }

    #[test]
    fn excerpt_pads_like_buildkit() {
        let src = "a\nb\nc\nd\ne\nf\ng\n";
        insta::assert_snapshot!(source_excerpt("Dockerfile", src, 4, 4), @r"
        Dockerfile:4
        --------------------
           2 |     b
           3 |     c
           4 | >>> d
           5 |     e
           6 |     f
        --------------------
        ");
        insta::assert_snapshot!(source_excerpt("Dockerfile", src, 1, 2), @r"
        Dockerfile:1
        --------------------
           1 | >>> a
           2 | >>> b
           3 |     c
        --------------------
        ");
    }
}
