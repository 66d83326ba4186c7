use std::iter::Peekable;
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::Chars;

use crate::common::{Env, RBUILD};

/// Values for the CI variables the guide's commands use. Registries become a loopback one; `--check`
/// contacts none of them.
const VARS: &[(&str, &str)] = &[
    ("IMAGE", "127.0.0.1:5000/my-org/my-app"),
    ("TAG", "1.4.2"),
    ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
    ("CI_REGISTRY", "127.0.0.1:5000"),
    ("CI_REGISTRY_IMAGE", "127.0.0.1:5000/group/project"),
    ("CI_COMMIT_SHA", "0123456789abcdef0123456789abcdef01234567"),
    ("CI_COMMIT_SHORT_SHA", "01234567"),
    ("CI_COMMIT_REF_SLUG", "feature-x"),
    ("CI_DEFAULT_BRANCH", "main"),
];

/// Variables that name a directory of the CI job: the test's scratch dir.
const DIR_VARS: &[&str] = &["CI_PROJECT_DIR", "RUNNER_TEMP"];

/// The `rbuild build` commands in the fenced code blocks of a Markdown text, backslash continuations
/// joined. A line counts when, trimmed and without a YAML `- `, `run: ` or `script: ` in front, it starts
/// with `rbuild build`.
fn build_commands(markdown: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending: Option<String> = None;
    for line in markdown.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_block = !in_block;
            commands.extend(pending.take());
            continue;
        }
        if !in_block {
            continue;
        }
        let text = match pending.take() {
            Some(mut joined) => {
                joined.push(' ');
                joined.push_str(t);
                joined
            }
            None => {
                let mut t = t;
                for prefix in ["- ", "run:", "script:"] {
                    t = t.strip_prefix(prefix).unwrap_or(t).trim_start();
                }
                if !t.starts_with("rbuild build ") {
                    continue;
                }
                t.to_owned()
            }
        };
        match text.strip_suffix('\\') {
            Some(head) => pending = Some(head.trim_end().to_owned()),
            None => commands.push(text),
        }
    }
    commands.extend(pending);
    commands
}

/// Splits a shell command line into words as `sh` would: quotes, backslashes, `$VAR`/`${VAR}` (not
/// inside single quotes), and a `#` comment at the start of a word. Command substitution is refused.
fn shell_words(line: &str, var: &dyn Fn(&str) -> String) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\' | '$')) => {
                            word.push(chars.next().expect("peeked"));
                        }
                        '$' => expand(&mut chars, &mut word, line, var),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '$' => {
                in_word = true;
                expand(&mut chars, &mut word, line, var);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Expands the `$NAME` or `${NAME}` whose `$` was just read from `chars`, appending the value to `out`.
fn expand(
    chars: &mut Peekable<Chars<'_>>,
    out: &mut String,
    line: &str,
    var: &dyn Fn(&str) -> String,
) {
    let braced = chars.next_if_eq(&'{').is_some();
    let mut name = String::new();
    while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
        name.push(c);
    }
    assert!(
        !name.is_empty() && (!braced || chars.next() == Some('}')),
        "unsupported `$` expansion in {line:?} (command substitution, a CI expression, `${{VAR:-…}}`): \
         use $VAR or ${{VAR}}"
    );
    out.push_str(&var(&name));
}

#[test]
fn ci_guide_commands_parse() {
    let guide_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/CI.md");
    let guide = std::fs::read_to_string(&guide_path).expect("reading docs/CI.md");
    let commands = build_commands(&guide);
    assert!(
        commands.len() >= 4,
        "expected at least 4 `rbuild build` commands in docs/CI.md, found {}: {commands:#?}",
        commands.len()
    );

    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM scratch\nCOPY a /a\n"), ("a", "a\n")],
    );
    // The commands' working directory: relative cache and output paths land here, never in the repo.
    let job_dir = env.context("job", &[]);
    let job = job_dir.to_str().expect("utf-8 path").to_owned();
    let var = |name: &str| -> String {
        if DIR_VARS.contains(&name) {
            return job.clone();
        }
        VARS.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .unwrap_or_else(|| panic!("docs/CI.md uses ${name}: add a plausible value to VARS"))
    };

    for command in &commands {
        let words = shell_words(command, &var);
        assert_eq!(
            words.get(..2),
            Some(&["rbuild".to_owned(), "build".to_owned()][..]),
            "{command}"
        );
        // The test's own store replaces any documented one.
        let mut args: Vec<String> = Vec::new();
        let mut rest = words[2..].iter();
        while let Some(w) = rest.next() {
            if w == "--root" {
                rest.next();
            } else if !w.starts_with("--root=") {
                args.push(w.clone());
            }
        }
        // The documented context (the last word) becomes the tiny test context.
        let context = args.pop().unwrap_or_default();
        assert!(
            !context.is_empty() && !context.starts_with('-'),
            "a documented `rbuild build` must end with its context: {command}"
        );
        if !args.iter().any(|a| a == "--check") {
            args.insert(0, "--check".to_owned());
        }
        let out = Command::new(RBUILD)
            .arg("--root")
            .arg(env.root())
            .arg("build")
            .args(&args)
            .arg(&ctx)
            .current_dir(&job_dir)
            .env("NO_COLOR", "1")
            .env("DOCKER_CONFIG", &job_dir)
            .stdin(Stdio::null())
            .output()
            .expect("running rbuild");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "documented command does not parse ({:?}):\n{command}\nran: rbuild build {}\nstderr:\n{stderr}",
            out.status,
            args.join(" ")
        );
        assert!(
            stderr.contains("check complete"),
            "--check did not stop the build: {command}\n{stderr}"
        );
    }
}
