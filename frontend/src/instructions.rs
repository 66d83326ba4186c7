//! Typed instructions: flags and argument counts checked, as BuildKit's `instructions.Parse` does.
//!
//! Values are not expanded here; lowering expands them in the environment of their stage.

use std::collections::BTreeMap;

use crate::parser::{Heredoc, Instruction};
use crate::Diagnostic;

/// Shell form (one string, wrapped in SHELL) or exec form (JSON argv).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandLine {
    pub(crate) args: Vec<String>,
    pub(crate) shell_form: bool,
}

/// COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyCmd {
    /// Sources as written (heredoc sources are `<<NAME` words).
    pub(crate) srcs: Vec<String>,
    pub(crate) dest: String,
    pub(crate) from: Option<String>,
    pub(crate) chown: Option<String>,
    pub(crate) chmod: Option<String>,
    pub(crate) exclude: Vec<String>,
    pub(crate) parents: bool,
    pub(crate) checksum: Option<String>,
    /// `ADD --unpack[=bool]`; unset means local archives are unpacked and downloads are not.
    pub(crate) unpack: Option<bool>,
    /// `ADD --keep-git-dir`: keep `.git` in a git source.
    pub(crate) keep_git_dir: bool,
    /// `--link`: the files form a layer of their own, independent of the layers below.
    pub(crate) link: bool,
    pub(crate) heredocs: Vec<Heredoc>,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunCmd {
    pub(crate) cmd: CommandLine,
    pub(crate) mounts: Vec<String>,
    pub(crate) network: Option<String>,
    pub(crate) security: Option<String>,
    /// `--device` values, unexpanded.
    pub(crate) devices: Vec<String>,
    pub(crate) heredocs: Vec<Heredoc>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCmd {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`.
    pub(crate) test: Vec<String>,
    pub(crate) interval: i64,
    pub(crate) timeout: i64,
    pub(crate) start_period: i64,
    pub(crate) start_interval: i64,
    pub(crate) retries: i64,
}

/// One checked instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    From {
        image: String,
        name: Option<String>,
        platform: Option<String>,
    },
    Run(RunCmd),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    Copy(CopyCmd),
    Add(CopyCmd),
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    User(String),
    Workdir(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(HealthCmd),
    Maintainer(String),
    Onbuild(String),
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    String,
    Strings,
}

/// Parsed builder flags.
#[derive(Default)]
struct Flags {
    bools: BTreeMap<String, bool>,
    strings: BTreeMap<String, String>,
    lists: BTreeMap<String, Vec<String>>,
}

impl Flags {
    fn bool(&self, name: &str) -> bool {
        self.bools.get(name).copied().unwrap_or(false)
    }
    fn opt_bool(&self, name: &str) -> Option<bool> {
        self.bools.get(name).copied()
    }
    fn string(&self, name: &str) -> Option<String> {
        self.strings.get(name).cloned()
    }
    fn list(&self, name: &str) -> Vec<String> {
        self.lists.get(name).cloned().unwrap_or_default()
    }
}

fn parse_flags(raw: &[String], spec: &[(&str, Kind)]) -> Result<Flags, String> {
    let mut flags = Flags::default();
    for f in raw {
        let body = f.strip_prefix("--").unwrap_or(f);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let Some((_, kind)) = spec.iter().find(|(n, _)| *n == name) else {
            return Err(format!("unknown flag: {name}"));
        };
        match kind {
            Kind::Bool => {
                let v = match value.map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(_) => {
                        return Err(format!(
                            "expecting boolean value for flag {name}, not: {}",
                            value.unwrap_or_default()
                        ))
                    }
                };
                flags.bools.insert(name.to_owned(), v);
            }
            Kind::String => {
                let Some(v) = value else {
                    return Err(format!("missing a value on flag: {name}"));
                };
                if flags
                    .strings
                    .insert(name.to_owned(), v.to_owned())
                    .is_some()
                {
                    return Err(format!("duplicate flag specified: {name}"));
                }
            }
            Kind::Strings => {
                let Some(v) = value else {
                    return Err(format!("missing a value on flag: {name}"));
                };
                flags
                    .lists
                    .entry(name.to_owned())
                    .or_default()
                    .push(v.to_owned());
            }
        }
    }
    Ok(flags)
}

fn command_line(ins: &Instruction) -> CommandLine {
    CommandLine {
        args: ins.args.clone(),
        shell_form: !ins.json,
    }
}

fn key_values(ins: &Instruction, name: &str) -> Result<Vec<(String, String)>, String> {
    if ins.args.is_empty() {
        return Err(format!("{name} requires at least one argument"));
    }
    let mut out = Vec::new();
    for triple in ins.args.chunks(3) {
        if triple[0].is_empty() {
            return Err(format!("{name} names can not be blank"));
        }
        out.push((
            triple[0].clone(),
            triple.get(1).cloned().unwrap_or_default(),
        ));
    }
    Ok(out)
}

fn exactly_one(ins: &Instruction, name: &str) -> Result<String, String> {
    match ins.args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!("{name} requires exactly one argument")),
    }
}

fn no_flags(ins: &Instruction) -> Result<(), String> {
    parse_flags(&ins.flags, &[]).map(|_| ())
}

static STAGE_NAME: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"^[a-z][a-z0-9\-_.]*$").expect("valid regex"));

/// Checks one instruction and gives it a type.
pub(crate) fn typed(ins: &Instruction) -> Result<Command, Diagnostic> {
    typed_inner(ins).map_err(|message| Diagnostic::new(message, ins.span))
}

fn typed_inner(ins: &Instruction) -> Result<Command, String> {
    use Kind::{Bool, String as Str, Strings};
    let cmd = ins.command();
    Ok(match cmd.as_str() {
        "from" => {
            let f = parse_flags(&ins.flags, &[("platform", Str)])?;
            let name = match ins.args.as_slice() {
                [_] => None,
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let name = name.to_ascii_lowercase();
                    if !STAGE_NAME.is_match(&name) {
                        return Err(format!(
                            "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
                        ));
                    }
                    Some(name)
                }
                [_, _, _] => {
                    return Err(
                        "when using FROM with three arguments, the second argument must be \"AS\""
                            .into(),
                    )
                }
                _ => return Err("FROM requires either one or three arguments".into()),
            };
            Command::From {
                image: ins.args[0].clone(),
                name,
                platform: f.string("platform"),
            }
        }
        "run" => {
            let f = parse_flags(
                &ins.flags,
                &[
                    ("mount", Strings),
                    ("network", Str),
                    ("security", Str),
                    ("device", Strings),
                ],
            )?;
            if ins.args.is_empty() && ins.rest.is_empty() {
                return Err("RUN requires at least one argument".into());
            }
            Command::Run(RunCmd {
                cmd: command_line(ins),
                mounts: f.list("mount"),
                network: f.string("network"),
                security: f.string("security"),
                devices: f.list("device"),
                heredocs: ins.heredocs.clone(),
            })
        }
        "cmd" => {
            no_flags(ins)?;
            Command::Cmd(command_line(ins))
        }
        "entrypoint" => {
            no_flags(ins)?;
            Command::Entrypoint(command_line(ins))
        }
        "shell" => {
            no_flags(ins)?;
            if !ins.json {
                return Err("SHELL requires the arguments to be in JSON form".into());
            }
            if ins.args.is_empty() {
                return Err("SHELL requires at least one argument".into());
            }
            Command::Shell(ins.args.clone())
        }
        "copy" | "add" => {
            let is_add = cmd == "add";
            let f = if is_add {
                parse_flags(
                    &ins.flags,
                    &[
                        ("chown", Str),
                        ("chmod", Str),
                        ("checksum", Str),
                        ("keep-git-dir", Bool),
                        ("link", Bool),
                        ("exclude", Strings),
                        ("unpack", Bool),
                    ],
                )?
            } else {
                parse_flags(
                    &ins.flags,
                    &[
                        ("from", Str),
                        ("chown", Str),
                        ("chmod", Str),
                        ("link", Bool),
                        ("parents", Bool),
                        ("exclude", Strings),
                    ],
                )?
            };
            let name = cmd.to_ascii_uppercase();
            match ins.args.len() {
                0 => return Err(format!("{name} requires at least two arguments")),
                1 => {
                    return Err(format!(
                        "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
                    ))
                }
                _ => {}
            }
            let (dest, srcs) = ins.args.split_last().expect("at least two arguments");
            let c = CopyCmd {
                srcs: srcs.to_vec(),
                dest: dest.clone(),
                from: f.string("from"),
                chown: f.string("chown"),
                chmod: f.string("chmod"),
                exclude: f.list("exclude"),
                parents: f.bool("parents"),
                checksum: f.string("checksum"),
                unpack: f.opt_bool("unpack"),
                keep_git_dir: f.bool("keep-git-dir"),
                link: f.bool("link"),
                heredocs: ins.heredocs.clone(),
            };
            if is_add {
                Command::Add(c)
            } else {
                Command::Copy(c)
            }
        }
        "env" => {
            no_flags(ins)?;
            Command::Env(key_values(ins, "ENV")?)
        }
        "label" => {
            no_flags(ins)?;
            Command::Label(key_values(ins, "LABEL")?)
        }
        "arg" => {
            no_flags(ins)?;
            if ins.args.is_empty() {
                return Err("ARG requires at least one argument".into());
            }
            let mut out = Vec::new();
            for a in &ins.args {
                match a.split_once('=') {
                    Some(("", _)) => return Err("ARG names can not be blank".into()),
                    Some((k, v)) => out.push((k.to_owned(), Some(v.to_owned()))),
                    None => out.push((a.clone(), None)),
                }
            }
            Command::Arg(out)
        }
        "user" => {
            no_flags(ins)?;
            Command::User(exactly_one(ins, "USER")?)
        }
        "workdir" => {
            no_flags(ins)?;
            Command::Workdir(exactly_one(ins, "WORKDIR")?)
        }
        "stopsignal" => {
            no_flags(ins)?;
            Command::StopSignal(exactly_one(ins, "STOPSIGNAL")?)
        }
        "maintainer" => {
            no_flags(ins)?;
            Command::Maintainer(exactly_one(ins, "MAINTAINER")?)
        }
        "expose" => {
            no_flags(ins)?;
            if ins.args.is_empty() {
                return Err("EXPOSE requires at least one argument".into());
            }
            Command::Expose(ins.args.clone())
        }
        "volume" => {
            no_flags(ins)?;
            if ins.args.is_empty() {
                return Err("VOLUME requires at least one argument".into());
            }
            Command::Volume(ins.args.clone())
        }
        "healthcheck" => Command::Healthcheck(healthcheck(ins)?),
        "onbuild" => {
            no_flags(ins)?;
            let Some(sub) = &ins.sub else {
                return Err("ONBUILD requires at least one argument".into());
            };
            match sub.command().as_str() {
                "onbuild" => {
                    return Err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
                }
                "from" | "maintainer" => {
                    return Err(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        sub.keyword.to_ascii_uppercase()
                    ))
                }
                _ => {}
            }
            // The trigger is stored as written, keyword included (`RUN echo hi`).
            let trimmed = ins.original.trim_start();
            let expr = trimmed[ins.keyword.len().min(trimmed.len())..].trim();
            Command::Onbuild(expr.to_owned())
        }
        other => return Err(format!("unknown instruction: {other}")),
    })
}

fn healthcheck(ins: &Instruction) -> Result<HealthCmd, String> {
    use Kind::String as Str;
    let Some(typ) = ins.args.first() else {
        return Err("HEALTHCHECK requires an argument".into());
    };
    match typ.to_ascii_uppercase().as_str() {
        "NONE" => {
            if ins.args.len() > 1 {
                return Err("HEALTHCHECK NONE takes no arguments".into());
            }
            if !ins.flags.is_empty() {
                return Err("options cannot be specified for HEALTHCHECK NONE".into());
            }
            Ok(HealthCmd {
                test: vec!["NONE".into()],
                interval: 0,
                timeout: 0,
                start_period: 0,
                start_interval: 0,
                retries: 0,
            })
        }
        "CMD" => {
            let f = parse_flags(
                &ins.flags,
                &[
                    ("interval", Str),
                    ("timeout", Str),
                    ("start-period", Str),
                    ("start-interval", Str),
                    ("retries", Str),
                ],
            )?;
            let rest = &ins.args[1..];
            if rest.is_empty() || (rest.len() == 1 && rest[0].is_empty() && !ins.json) {
                return Err("missing command after HEALTHCHECK CMD".into());
            }
            let test = if ins.json {
                std::iter::once("CMD".to_owned())
                    .chain(rest.iter().cloned())
                    .collect()
            } else {
                vec!["CMD-SHELL".to_owned(), rest.join(" ")]
            };
            let dur = |name: &str| -> Result<i64, String> {
                match f.string(name) {
                    None => Ok(0),
                    Some(v) => {
                        let d = parse_duration(&v)
                            .ok_or_else(|| format!("invalid duration {v:?} for --{name}"))?;
                        if d != 0 && d < 1_000_000 {
                            return Err(format!("interval {name:?} cannot be less than 1ms"));
                        }
                        Ok(d)
                    }
                }
            };
            let retries = match f.string("retries") {
                None => 0,
                Some(v) => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| format!("invalid value {v:?} for --retries"))?;
                    if n < 0 {
                        return Err("--retries cannot be negative".into());
                    }
                    n
                }
            };
            Ok(HealthCmd {
                test,
                interval: dur("interval")?,
                timeout: dur("timeout")?,
                start_period: dur("start-period")?,
                start_interval: dur("start-interval")?,
                retries,
            })
        }
        other => Err(format!("unknown type {other:?} in HEALTHCHECK (try CMD)")),
    }
}

/// Parses a Go duration (`1m30s`, `500ms`, `0`) to nanoseconds.
pub(crate) fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some(total.round() as i64)
}

/// Formats nanoseconds as Go's `time.Duration.String` does (`1m30s`, `500ms`, `0s`).
pub(crate) fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let mut s = if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1u64)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        format!("{}{unit}", frac(u, div))
    } else {
        let h = u / 3_600_000_000_000;
        let m = (u / 60_000_000_000) % 60;
        let sec_ns = u % 60_000_000_000;
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", frac(sec_ns, 1_000_000_000)));
        out
    };
    if neg {
        s.insert(0, '-');
    }
    s
}

fn frac(v: u64, div: u64) -> String {
    let whole = v / div;
    let rem = v % div;
    if rem == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{rem:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("abc"), None);
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(5_000_000_000), "5s");
        assert_eq!(format_duration(1_500_000), "1.5ms");
        assert_eq!(format_duration(3_600_000_000_000), "1h0m0s");
    }

    fn ins(src: &str) -> Instruction {
        crate::parse(src).unwrap().instructions.pop().unwrap()
    }

    #[test]
    fn flag_errors() {
        assert_eq!(
            typed(&ins("COPY --user=me a b")).unwrap_err().message,
            "unknown flag: user"
        );
        assert_eq!(
            typed(&ins("COPY --from a b")).unwrap_err().message,
            "missing a value on flag: from"
        );
        assert_eq!(
            typed(&ins("COPY --link=maybe a b")).unwrap_err().message,
            "expecting boolean value for flag link, not: maybe"
        );
        assert!(
            matches!(typed(&ins("COPY --link --exclude=*.o --exclude=x a b")), Ok(Command::Copy(c)) if c.exclude.len() == 2)
        );
        assert!(typed(&ins("CMD --doit [\"a\"]")).is_err());
        assert!(typed(&ins("HEALTHCHECK CONNECT TCP 7000")).is_err());
        assert!(typed(&ins("FROM a AS 1x")).is_err());
        assert!(typed(&ins("ONBUILD ONBUILD RUN x")).is_err());
    }
}
