//! BuildKit's own parser and shell-expansion test data (tests/fixtures/buildkit, Apache-2.0).

use std::path::{Path, PathBuf};

use frontend::shell::Lex;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/buildkit")
}

fn case_dirs(sub: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs_err::read_dir(fixtures().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn parser_testfiles_dump_like_buildkit() {
    let dirs = case_dirs("parser/testfiles");
    assert_eq!(dirs.len(), 33);
    let mut failures = Vec::new();
    for dir in &dirs {
        let src = fs_err::read_to_string(dir.join("Dockerfile")).unwrap();
        let expected = fs_err::read_to_string(dir.join("result")).unwrap();
        match frontend::parse(&src) {
            Ok(df) => {
                let got = df.dump() + "\n";
                if got != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- got\n{got}",
                        dir.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: parse failed: {e:?}", dir.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}

#[test]
fn parser_negative_testfiles_fail() {
    let dirs = case_dirs("parser/testfiles-negative");
    assert_eq!(dirs.len(), 4);
    for dir in dirs {
        let src = fs_err::read_to_string(dir.join("Dockerfile")).unwrap();
        let errs = frontend::parse(&src).expect_err(&dir.display().to_string());
        assert!(!errs.is_empty());
    }
}

#[test]
fn parser_line_information() {
    // BuildKit's TestLineInformation: three instructions on lines 5, 11-12 and 17-31.
    let src = fs_err::read_to_string(fixtures().join("parser/testfile-line/Dockerfile")).unwrap();
    let df = frontend::parse(&src).unwrap();
    let lines: Vec<(usize, usize)> = df
        .instructions
        .iter()
        .map(|i| (i.span.line, i.end_line))
        .collect();
    assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
    // Empty continuation lines inside the RUN produce one warning.
    assert_eq!(df.warnings.len(), 1);
}

fn env_table() -> Vec<(String, String)> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

#[test]
fn shell_env_var_table() {
    let text = fs_err::read_to_string(fixtures().join("shell/envVarTest")).unwrap();
    let env = env_table();
    let lex = Lex::new('\\');
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(cols.len(), 3, "line {}", n + 1);
        let (platform, source, expected) = (cols[0].trim(), cols[1].trim(), cols[2].trim());
        if platform == "W" {
            continue;
        }
        checked += 1;
        let got = lex.process_word(source, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(g), e) => g == e && e != "error",
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "line {}: {source:?} → {got:?}, expected {expected:?}",
                n + 1
            ));
        }
    }
    assert!(checked > 200, "only {checked} rows");
    assert!(
        failures.is_empty(),
        "{} of {checked} rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn shell_words_table() {
    let text = fs_err::read_to_string(fixtures().join("shell/wordsTest")).unwrap();
    let lex = Lex::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(kv) = line.strip_prefix("ENV ") {
            let (k, v) = kv.trim_start_matches(' ').split_once('=').unwrap();
            env.push((k.to_owned(), v.to_owned()));
            continue;
        }
        let cols: Vec<&str> = line.split('|').collect();
        assert_eq!(cols.len(), 2, "line {}", n + 1);
        let source = cols[0].trim();
        let expected: Vec<&str> = cols[1].trim_start_matches(' ').split(',').collect();
        let got = lex
            .process_words(source, &env)
            .unwrap_or_else(|_| vec!["error".to_owned()]);
        checked += 1;
        if got != expected {
            failures.push(format!(
                "line {}: {source:?} → {got:?}, expected {expected:?}",
                n + 1
            ));
        }
    }
    assert_eq!(checked, 24);
    assert!(
        failures.is_empty(),
        "{} of {checked} rows differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
