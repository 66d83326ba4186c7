//! Dockerfile text → [`Dockerfile`] AST, following BuildKit's line parser.
//!
//! The parser works line by line like BuildKit's: parser directives at the top, comments, line
//! continuations (blank and comment lines inside a continuation are skipped), builder flags, JSON versus
//! shell forms (invalid JSON falls back to the shell form), and heredocs for RUN/COPY/ADD. It checks
//! syntax and instruction names only; flags and argument counts are checked when lowering
//! ([`crate::instructions`]), as BuildKit does, so that [`Dockerfile::dump`] matches BuildKit's AST dump
//! even for Dockerfiles that would not build.

use std::sync::LazyLock;

use regex::Regex;

use crate::shell::{Lex, NoEnv};
use crate::{Diagnostic, Span};

/// Instruction keywords, lowercase.
pub(crate) const KEYWORDS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// A parsed Dockerfile: parser directives and instructions, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// Parser directives from the top of the file.
    pub directives: Directives,
    /// Every instruction, in file order.
    pub instructions: Vec<Instruction>,
    /// Parser warnings (empty continuation lines).
    pub warnings: Vec<Diagnostic>,
}

/// Parser directives (`# escape=`, `# syntax=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// Escape character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# syntax=` frontend image, recorded but not used (rbuild always uses its own frontend).
    pub syntax: Option<String>,
    /// `# check=` settings of the build checks ([`crate::checks::CheckConfig`]).
    pub check: Option<String>,
    /// Where the `# syntax=` line is, when there is one.
    pub syntax_span: Option<Span>,
}

impl Default for Directives {
    fn default() -> Self {
        Self {
            escape: '\\',
            syntax: None,
            check: None,
            syntax_span: None,
        }
    }
}

impl Directives {
    /// Checks `# syntax=`: `docker/dockerfile` with any 1.x tag (or none, or `-labs`), with or without
    /// `docker.io/` and a digest, is served by rbuild's built-in frontend, offline; any other frontend
    /// image is an error, since rbuild runs no external frontends.
    ///
    /// # Errors
    /// A diagnostic at the `# syntax=` line when it names another frontend.
    pub fn check_syntax(&self) -> Result<(), Diagnostic> {
        let Some(syntax) = self.syntax.as_deref() else {
            return Ok(());
        };
        if builtin_syntax(syntax) {
            return Ok(());
        }
        Err(Diagnostic::new(
            format!("external frontends are not supported: # syntax={syntax}"),
            self.syntax_span.unwrap_or_default(),
        )
        .with_help(
            "rbuild builds with its built-in Dockerfile frontend; use `# syntax=docker/dockerfile:1` or remove the line",
        ))
    }
}

/// Whether a `# syntax=` image is BuildKit's Dockerfile frontend at a 1.x version.
fn builtin_syntax(image: &str) -> bool {
    let image = image.trim();
    let image = image.split_once('@').map_or(image, |(name, _digest)| name);
    let (name, tag) = match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (image, None),
    };
    let name = ["docker.io/", "index.docker.io/", "registry-1.docker.io/"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    if name != "docker/dockerfile" && name != "docker/dockerfile-upstream" {
        return false;
    }
    let Some(tag) = tag else {
        return true;
    };
    let version = tag.strip_suffix("-labs").unwrap_or(tag);
    if version == "latest" || version == "labs" {
        return true;
    }
    let mut parts = version.split('.');
    parts.next() == Some("1")
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && version.split('.').count() <= 3
}

/// A heredoc attached to an instruction (`<<EOF` … `EOF`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// Delimiter word with quotes removed; for COPY/ADD it is also the file name.
    pub name: String,
    /// File descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub fd: u32,
    /// False when the delimiter was quoted: the body is not expanded.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines.
    pub chomp: bool,
    /// Body, each line with its line ending, without the terminator line.
    pub content: String,
}

impl Heredoc {
    /// The body with leading tabs removed when the heredoc is `<<-`.
    pub fn body(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        static TABS: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"(?m)^\t+").expect("valid regex"));
        TABS.replace_all(&self.content, "").into_owned()
    }
}

/// One instruction as BuildKit's parser sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    /// The keyword as written (`RUN`, `run`).
    pub keyword: String,
    /// Builder flags as written with quotes removed (`--from=build`, `--link`), in order.
    pub flags: Vec<String>,
    /// Arguments as BuildKit's parser splits them; for ENV/LABEL triples of key, value, separator.
    pub args: Vec<String>,
    /// The arguments were a JSON array (exec form).
    pub json: bool,
    /// ONBUILD's trigger instruction.
    pub sub: Option<Box<Instruction>>,
    /// Heredocs whose bodies follow the instruction line, in order.
    pub heredocs: Vec<Heredoc>,
    /// The instruction line with continuations joined (without heredoc bodies).
    pub original: String,
    /// Text after the keyword and flags, trimmed.
    pub rest: String,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
    /// Where the instruction is, heredoc bodies included.
    pub span: Span,
    /// 1-based last line (heredoc terminator included).
    pub end_line: usize,
}

impl Instruction {
    /// The keyword in lowercase.
    pub fn command(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }

    fn dump(&self) -> String {
        let mut s = self.keyword.to_lowercase();
        if !self.flags.is_empty() {
            let flags: Vec<String> = self.flags.iter().map(|f| go_quote(f)).collect();
            s.push_str(&format!(" [{}]", flags.join(" ")));
        }
        if let Some(sub) = &self.sub {
            s.push_str(&format!(" ({})", sub.dump()));
        }
        for a in &self.args {
            s.push(' ');
            s.push_str(&go_quote(a));
        }
        s.trim().to_owned()
    }
}

impl Dockerfile {
    /// The AST as BuildKit's `Node.Dump` prints it: one `(keyword ["flags"] "arg" …)` per line.
    pub fn dump(&self) -> String {
        self.instructions
            .iter()
            .map(|i| format!("({})", i.dump()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Quotes a string as Go's `strconv.Quote` does (the dump format uses it).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c == ' ' || !(c.is_control() || c.is_whitespace() || c == '\u{feff}') => {
                out.push(c)
            }
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

static RE_WHITESPACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[\t\x0b\x0c\r ]+").expect("valid regex"));
static RE_DIRECTIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$").expect("valid regex")
});
static RE_HEREDOC: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d*)<<(-?)([^<]*)$").expect("valid regex"));

/// Splits on BuildKit's whitespace set (`[\t\v\f\r ]+`).
pub(crate) fn split_whitespace_n(s: &str, n: usize) -> Vec<&str> {
    RE_WHITESPACE.splitn(s, n).collect()
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

struct DirectiveState {
    done: bool,
    seen: Vec<String>,
    escape: char,
}

impl DirectiveState {
    /// Returns (is a directive, error).
    fn parse_line(&mut self, line: &str, directives: &mut Directives) -> (bool, Option<String>) {
        if self.done {
            return (false, None);
        }
        let Some(caps) = RE_DIRECTIVE.captures(line) else {
            self.done = true;
            return (false, None);
        };
        let key = caps[1].to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            self.done = true;
            return (false, None);
        }
        if self.seen.contains(&key) {
            return (
                false,
                Some(format!("only one {key} parser directive can be used")),
            );
        }
        self.seen.push(key.clone());
        let value = caps[2].to_owned();
        match key.as_str() {
            "escape" => {
                if value != "`" && value != "\\" {
                    return (
                        false,
                        Some(format!(
                            "invalid escape token '{value}' does not match ` or \\"
                        )),
                    );
                }
                self.escape = value.chars().next().expect("escape value is one char");
                directives.escape = self.escape;
            }
            "syntax" => directives.syntax = Some(value),
            _ => directives.check = Some(value),
        }
        (true, None)
    }

    /// BuildKit's continuation regex: the escape at the end of the line (trailing blanks allowed), not
    /// itself escaped, or alone on its line. Returns the line without it and whether the line ends.
    fn trim_continuation<'a>(&self, line: &'a str) -> (&'a str, bool) {
        let t = line.trim_end_matches([' ', '\t']);
        if let Some(before) = t.strip_suffix(self.escape) {
            if before.is_empty() && line.starts_with(self.escape) {
                return ("", false);
            }
            if let Some(prev) = before.chars().next_back() {
                if prev != self.escape {
                    return (before, false);
                }
            }
        }
        (line, true)
    }
}

/// A line of the source: byte offset of its start and its text including the line ending.
struct Line<'a> {
    offset: usize,
    text: &'a str,
}

fn split_lines(src: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for text in src.split_inclusive('\n') {
        out.push(Line { offset, text });
        offset += text.len();
    }
    out
}

fn column_of(line: &str, byte: usize) -> usize {
    line[..byte].chars().count() + 1
}

/// Parses a Dockerfile, collecting every error it finds.
pub fn parse(src: &str) -> Result<Dockerfile, Vec<Diagnostic>> {
    let (df, errors) = parse_collect(src);
    if errors.is_empty() {
        Ok(df)
    } else {
        Err(errors)
    }
}

/// The instructions before the first error of a Dockerfile that does not parse (BuildKit still runs
/// its parse-time checks on them).
pub(crate) fn parse_prefix(src: &str) -> Dockerfile {
    let (mut df, errors) = parse_collect(src);
    if let Some(first) = errors.iter().map(|e| e.span.line).min() {
        df.instructions.retain(|i| i.end_line < first);
        df.warnings.retain(|w| w.span.line < first);
    }
    df
}

/// The AST (of what parsed) and every error.
fn parse_collect(src: &str) -> (Dockerfile, Vec<Diagnostic>) {
    let mut lines = split_lines(src);
    if let Some(first) = lines.first_mut() {
        if let Some(rest) = first.text.strip_prefix('\u{feff}') {
            first.text = rest;
            first.offset += '\u{feff}'.len_utf8();
        }
    }
    let mut directives = Directives::default();
    let mut dstate = DirectiveState {
        done: false,
        seen: Vec::new(),
        escape: '\\',
    };
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut instructions = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        if is_comment(line.text) {
            let c = line.text.trim_start()[1..].trim().to_owned();
            if c.is_empty() {
                comments.clear();
            } else {
                comments.push(c);
            }
        }
        let stripped = trim_newline(line.text).trim_start();
        let lead = trim_newline(line.text).len() - stripped.len();
        let (is_directive, err) = dstate.parse_line(stripped, &mut directives);
        if is_directive {
            comments.pop();
        }
        if let Some(message) = err {
            errors.push(Diagnostic::new(message, line_span(line, i + 1)));
        }
        if is_directive && directives.syntax.is_some() && directives.syntax_span.is_none() {
            directives.syntax_span = Some(line_span(line, i + 1));
        }
        let first = i;
        i += 1;
        let text = if is_comment(stripped) { "" } else { stripped };
        let (text, mut eol) = dstate.trim_continuation(text);
        if eol && text.is_empty() {
            continue;
        }
        let mut buf = text.to_owned();
        let mut has_empty_continuation = false;
        while !eol && i < lines.len() {
            let raw = lines[i].text;
            i += 1;
            if is_comment(raw) {
                continue;
            }
            let t = trim_newline(raw);
            if t.trim_start().is_empty() {
                has_empty_continuation = true;
                continue;
            }
            let (t, e) = dstate.trim_continuation(t);
            eol = e;
            buf.push_str(t);
        }
        let start = lines[first].offset + lead;
        let last = &lines[i - 1];
        let mut span = Span {
            start,
            end: last.offset + trim_newline(last.text).len(),
            line: first + 1,
            column: column_of(lines[first].text, lead),
        };
        if has_empty_continuation {
            warnings.push(Diagnostic {
                message: format!("empty continuation line found in: {buf}"),
                span,
                help: Some(
                    "empty continuation lines will become errors in a future release".into(),
                ),
            });
        }
        let mut ins = match node_from_line(&buf, dstate.escape) {
            Ok(ins) => ins,
            Err(message) => {
                errors.push(Diagnostic::new(message, span));
                // Still consume heredoc bodies so their lines are not parsed as instructions.
                skip_heredocs(&buf, &lines, &mut i);
                comments.clear();
                continue;
            }
        };
        if !KEYWORDS.contains(&ins.command().as_str()) {
            let mut d = Diagnostic::new(format!("unknown instruction: {}", ins.keyword), span);
            d.help = suggest(&ins.keyword).map(|s| format!("did you mean {s}?"));
            errors.push(d);
        }
        if can_contain_heredoc(&ins) && buf.contains("<<") {
            match heredocs_from_line(&buf) {
                Ok(docs) => {
                    for mut doc in docs {
                        let mut terminated = false;
                        while i < lines.len() {
                            let raw = lines[i].text;
                            i += 1;
                            let mut term = trim_newline(raw);
                            if doc.chomp {
                                term = term.trim_start_matches('\t');
                            }
                            if term == doc.name {
                                terminated = true;
                                break;
                            }
                            doc.content.push_str(raw);
                        }
                        let last = &lines[i - 1];
                        span.end = last.offset + trim_newline(last.text).len();
                        if !terminated {
                            errors.push(Diagnostic {
                                message: "unterminated heredoc".into(),
                                span,
                                help: Some(format!(
                                    "end the heredoc with a line containing only {}",
                                    doc.name
                                )),
                            });
                        }
                        ins.heredocs.push(doc);
                    }
                }
                Err(message) => errors.push(Diagnostic::new(message, span)),
            }
        }
        ins.span = span;
        ins.end_line = i;
        ins.comments = std::mem::take(&mut comments);
        instructions.push(ins);
    }
    if instructions.is_empty() && errors.is_empty() {
        let end = src.len();
        errors.push(Diagnostic {
            message: "file with no instructions".into(),
            span: Span {
                start: end,
                end,
                line: lines.len().max(1),
                column: 1,
            },
            help: Some("a Dockerfile needs at least a FROM instruction".into()),
        });
    }
    (
        Dockerfile {
            directives,
            instructions,
            warnings,
        },
        errors,
    )
}

fn line_span(line: &Line<'_>, number: usize) -> Span {
    Span {
        start: line.offset,
        end: line.offset + trim_newline(line.text).len(),
        line: number,
        column: 1,
    }
}

fn skip_heredocs(buf: &str, lines: &[Line<'_>], i: &mut usize) {
    let Ok(docs) = heredocs_from_line(buf) else {
        return;
    };
    let first = buf
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if !matches!(first.as_str(), "run" | "copy" | "add" | "onbuild") {
        return;
    }
    for doc in docs {
        while *i < lines.len() {
            let mut t = trim_newline(lines[*i].text);
            *i += 1;
            if doc.chomp {
                t = t.trim_start_matches('\t');
            }
            if t == doc.name {
                break;
            }
        }
    }
}

fn can_contain_heredoc(ins: &Instruction) -> bool {
    let node = match (&ins.sub, ins.command().as_str()) {
        (Some(sub), "onbuild") => sub,
        _ => ins,
    };
    matches!(node.command().as_str(), "add" | "copy" | "run") && !node.json
}

/// Parses one heredoc word (`<<EOF`, `<<-"EOF"`, `3<<EOF`); `None` when it is not one.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let Some(caps) = RE_HEREDOC.captures(word) else {
        return Ok(None);
    };
    let fd = caps[1].parse::<u32>().unwrap_or(0);
    let chomp = &caps[2] == "-";
    let rest = &caps[3];
    if rest.is_empty() {
        return Ok(None);
    }
    let lex = Lex {
        skip_unset_env: true,
        ..Lex::new('\\')
    };
    let words = lex.process_words(rest, &NoEnv).map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Lex {
        raw_quotes: true,
        ..lex
    }
    .process_words(rest, &NoEnv)
    .map_err(|e| e.to_string())?;
    if raw.len() != words.len() {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.matches(['\'', '"']).count();
    let name = words.into_iter().next().expect("one word");
    // Quotes that vanish when processed mean the delimiter was quoted: no expansion of the body.
    let expand = quotes(&name) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name,
        fd,
        expand,
        chomp,
        content: String::new(),
    }))
}

fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let lex = Lex {
        raw_quotes: true,
        raw_escapes: true,
        skip_unset_env: true,
        ..Lex::new('\\')
    };
    let words = lex.process_words(line, &NoEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for w in words {
        if let Some(doc) = parse_heredoc(&w)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Nearest keyword to a misspelt one (edit distance ≤ 2), in uppercase.
fn suggest(word: &str) -> Option<String> {
    let w = word.to_ascii_lowercase();
    KEYWORDS
        .iter()
        .map(|k| (levenshtein(&w, k), k))
        .filter(|(d, k)| *d <= 2 && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_ascii_uppercase())
}

/// Edit distance (insertions, deletions, substitutions), for "did you mean" suggestions.
pub(crate) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Splits the command, flags and arguments of one joined instruction line.
fn node_from_line(line: &str, escape: char) -> Result<Instruction, String> {
    let parts = split_whitespace_n(line.trim(), 2);
    let keyword = parts[0].to_owned();
    let (rest, flags) = match parts.get(1) {
        Some(r) => extract_builder_flags(r),
        None => (String::new(), Vec::new()),
    };
    let rest = rest.trim().to_owned();
    let cmd = keyword.to_ascii_lowercase();
    let mut ins = Instruction {
        keyword,
        flags,
        args: Vec::new(),
        json: false,
        sub: None,
        heredocs: Vec::new(),
        original: line.to_owned(),
        rest: rest.clone(),
        comments: Vec::new(),
        span: Span::default(),
        end_line: 0,
    };
    match cmd.as_str() {
        "add" | "copy" | "volume" => match parse_json(&rest)? {
            Some(args) => {
                ins.args = args;
                ins.json = true;
            }
            None => ins.args = split_fields(&rest),
        },
        "cmd" | "entrypoint" | "run" | "shell" if !rest.is_empty() => match parse_json(&rest)? {
            Some(args) => {
                ins.args = args;
                ins.json = true;
            }
            None => ins.args = vec![rest.clone()],
        },
        "arg" => ins.args = parse_words(&rest, escape),
        "env" => ins.args = parse_name_val(&rest, "ENV", escape)?,
        "label" => ins.args = parse_name_val(&rest, "LABEL", escape)?,
        "expose" | "from" => ins.args = split_fields(&rest),
        "maintainer" | "stopsignal" | "user" | "workdir" if !rest.is_empty() => {
            ins.args = vec![rest.clone()];
        }
        "healthcheck" => {
            let mut it = rest.splitn(2, char::is_whitespace);
            let typ = it.next().unwrap_or("");
            if !typ.is_empty() {
                ins.args.push(typ.to_owned());
                let cmd = it.next().unwrap_or("").trim_start();
                if !cmd.is_empty() {
                    match parse_json(cmd)? {
                        Some(args) => {
                            ins.args.extend(args);
                            ins.json = true;
                        }
                        None => ins.args.push(cmd.to_owned()),
                    }
                }
            }
        }
        "onbuild" if !rest.is_empty() => {
            ins.sub = Some(Box::new(node_from_line(&rest, escape)?));
        }
        _ => {}
    }
    Ok(ins)
}

fn split_fields(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    RE_WHITESPACE.split(rest).map(str::to_owned).collect()
}

/// `Ok(None)` when `rest` is not a JSON array (shell form); an error for arrays of non-strings.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else {
        return Ok(None);
    };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(
                "when using JSON array syntax, arrays must be comprised of strings only".to_owned(),
            ),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// BuildKit's `extractBuilderFlags`: leading `--flag` words (quotes removed), then the rest.
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let ch = if at_end { '\0' } else { chars[pos].1 };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            if ch != '-' || chars.get(pos + 1).map(|c| c.1) != Some('-') {
                return (line[chars[pos].0..].to_owned(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[chars[pos].0..].to_owned(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\\' {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                c = chars[pos].1;
            }
            word.push(c);
            pos += 1;
            continue;
        }
        // In a quote.
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        let mut c = ch;
        if ch == '\\' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            c = chars[pos].1;
        }
        word.push(c);
        pos += 1;
    }
    (String::new(), words)
}

/// BuildKit's `parseWords`: whitespace-separated words, quotes and escapes kept.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut buf = String::new();
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let mut ch = if at_end { '\0' } else { chars[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            // End of input in a word or in an unterminated quote: the word is kept as is.
            if blank_ok || !buf.is_empty() {
                words.push(buf);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !buf.is_empty() {
                    words.push(std::mem::take(&mut buf));
                }
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                buf.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            buf.push(ch);
            pos += 1;
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            buf.push(ch);
            ch = chars[pos];
        }
        buf.push(ch);
        pos += 1;
    }
    words
}

/// ENV/LABEL: `key value` (legacy) or `k=v k2=v2`; returns triples key, value, separator.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        let parts = split_whitespace_n(rest, 2);
        if parts.len() < 2 {
            return Err(format!("{key} must have two arguments"));
        }
        return Ok(vec![
            parts[0].to_owned(),
            parts[1].to_owned(),
            String::new(),
        ]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        out.extend([k.to_owned(), v.to_owned(), "=".to_owned()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_continuations_and_heredocs() {
        let src = "FROM a\n  RUN x \\\n  y\nCOPY <<EOF /f\nhi\nEOF\n";
        let df = parse(src).unwrap();
        let run = &df.instructions[1];
        assert_eq!(run.span.line, 2);
        assert_eq!(run.span.column, 3);
        assert_eq!(&src[run.span.start..run.span.end], "RUN x \\\n  y");
        let copy = &df.instructions[2];
        assert_eq!(
            &src[copy.span.start..copy.span.end],
            "COPY <<EOF /f\nhi\nEOF"
        );
        assert_eq!(copy.heredocs[0].content, "hi\n");
    }

    #[test]
    fn unknown_instruction_suggests() {
        let errs = parse("FROM a\nRUNN make\n").unwrap_err();
        assert_eq!(errs[0].message, "unknown instruction: RUNN");
        assert_eq!(errs[0].help.as_deref(), Some("did you mean RUN?"));
        assert_eq!(errs[0].span.line, 2);
    }

    #[test]
    fn collects_several_errors() {
        let errs = parse("FROM a\nFOO x\nENV X\nBAR y\n").unwrap_err();
        assert_eq!(errs.len(), 3);
    }

    #[test]
    fn bom_crlf_and_lowercase() {
        let df = parse("\u{feff}from a\r\nrun echo \\\r\n hi\r\n").unwrap();
        assert_eq!(df.dump(), "(from \"a\")\n(run \"echo  hi\")");
    }

    #[test]
    fn heredoc_forms() {
        let src = "FROM a\nRUN <<-EOF bash && cat <<'X'\n\techo $HOME\n\tEOF\nFROM x\nX\nCOPY <<\"A\" <<B /d/\n$a\nA\n$b\nB\n";
        let df = parse(src).unwrap();
        assert_eq!(df.instructions.len(), 3);
        let run = &df.instructions[1];
        assert_eq!(run.heredocs.len(), 2);
        assert!(run.heredocs[0].chomp && run.heredocs[0].expand);
        assert_eq!(run.heredocs[0].body(), "echo $HOME\n");
        assert!(!run.heredocs[1].expand);
        assert_eq!(run.heredocs[1].content, "FROM x\n");
        let copy = &df.instructions[2];
        assert_eq!(copy.heredocs[0].name, "A");
        assert!(!copy.heredocs[0].expand);
        assert!(copy.heredocs[1].expand);
    }

    #[test]
    fn directives() {
        let df = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM a\nRUN x `\n y\n").unwrap();
        assert_eq!(df.directives.escape, '`');
        assert_eq!(df.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(df.instructions[1].args, vec!["x  y"]);
        assert!(parse("# escape=x\nFROM a\n").is_err());
    }

    #[test]
    fn syntax_directive_builtin_or_refused() {
        for ok in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.6",
            "docker/dockerfile:1.7.1",
            "docker/dockerfile:1-labs",
            "docker/dockerfile:1.4-labs",
            "docker.io/docker/dockerfile:1",
            "docker.io/docker/dockerfile:1.6@sha256:ac85f380a63b13dfcefa89046420e1781752bab202122f8f50032edf31be0021",
            "docker/dockerfile",
            "docker/dockerfile:latest",
        ] {
            let df = parse(&format!("# syntax={ok}\nFROM a\n")).unwrap();
            assert_eq!(df.directives.check_syntax(), Ok(()), "{ok}");
        }
        for bad in [
            "someone/else",
            "docker/dockerfile:0.9",
            "docker/dockerfile:2",
            "docker/dockerfile:1.x",
            "example.com/docker/dockerfile:1",
            "tonistiigi/dockerfile:runmount",
        ] {
            let df = parse(&format!("#syntax = {bad}\nFROM a\n")).unwrap();
            let e = df.directives.check_syntax().unwrap_err();
            assert!(
                e.message
                    .starts_with("external frontends are not supported"),
                "{bad}: {e}"
            );
            assert_eq!(e.span.line, 1);
        }
    }
}
