//! `.dockerignore` matching with Docker's semantics (moby `patternmatcher`).
//!
//! Rules: one pattern a line, `#` lines are comments, surrounding whitespace is trimmed, patterns are
//! cleaned like paths and a leading `/` is dropped; `*` and `?` do not cross `/`, `**` crosses any
//! number of directories; a pattern that matches a parent directory matches everything below it; `!`
//! re-includes; the last matching pattern wins.

use regex::Regex;

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    re: Regex,
    /// One regex per path component, `None` when the pattern has `**` (it can match at any depth).
    components: Option<Vec<Regex>>,
}

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

/// Cleans a path like Go's `path.Clean` (also the build checks' `filepath.Clean` of a context path).
pub(crate) fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            _ => out.push(part),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

fn glob_regex(pattern: &str, whole: bool) -> Option<Regex> {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        match ch {
            '*' if whole && chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    re.push_str(".*");
                } else {
                    re.push_str("(.*/)?");
                }
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '^' | '$' => {
                re.push('\\');
                re.push(ch);
            }
            '\\' => {
                if let Some(&n) = chars.get(i) {
                    i += 1;
                    let mut buf = [0u8; 4];
                    re.push_str(&regex::escape(n.encode_utf8(&mut buf)));
                } else {
                    re.push_str("\\\\");
                }
            }
            '[' => {
                // Character class, `[!…]` or `[^…]` negated.
                re.push('[');
                if matches!(chars.get(i), Some('!' | '^')) {
                    re.push('^');
                    i += 1;
                }
            }
            c => {
                let mut buf = [0u8; 4];
                re.push_str(&regex::escape(c.encode_utf8(&mut buf)));
            }
        }
    }
    re.push('$');
    Regex::new(&re).ok()
}

impl DockerIgnore {
    /// Parses `.dockerignore` text; invalid patterns are skipped.
    pub fn parse(text: &str) -> Self {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim_start_matches('\u{feff}');
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
                if p.is_empty() {
                    continue;
                }
            }
            let mut text = clean(p);
            if text.len() > 1 && text.starts_with('/') {
                text = text[1..].to_owned();
            } else if text == "/" {
                text = ".".to_owned();
            }
            let Some(re) = glob_regex(&text, true) else {
                continue;
            };
            let components = if text.contains("**") {
                None
            } else {
                text.split('/')
                    .map(|c| glob_regex(c, false))
                    .collect::<Option<Vec<_>>>()
            };
            patterns.push(Pattern {
                text,
                exclusion,
                re,
                components,
            });
        }
        Self { patterns }
    }

    /// The patterns as cleaned, `!` kept (for cache keys and debugging).
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exclusion {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    /// Whether a path relative to the context root is excluded.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let path = clean(rel_path.trim_start_matches('/'));
        // The path's parent directories, as prefixes of the cleaned path (`a`, `a/b` for `a/b/c`).
        let parents: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion cannot change an excluded path, nor an exclusion a kept one.
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.re.is_match(&path);
            if !hit {
                hit = parents.iter().any(|d| p.re.is_match(d));
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// False only when `dir_rel` is excluded and no `!` pattern could re-include anything below it, so a
    /// walker may skip the whole directory.
    pub fn may_include_under(&self, dir_rel: &str) -> bool {
        if !self.is_excluded(dir_rel) {
            return true;
        }
        let dir = clean(dir_rel.trim_start_matches('/'));
        let parts: Vec<&str> = dir.split('/').collect();
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| match &p.components {
                None => true,
                Some(comps) => {
                    comps.iter().zip(&parts).all(|(re, part)| re.is_match(part))
                        && comps.len() > parts.len()
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_semantics() {
        let di = DockerIgnore::parse(
            "# comment\n/target\n**/*.log\n!keep.log\n*.md\n!README.md\nnode_modules\n",
        );
        assert!(di.is_excluded("target"));
        assert!(di.is_excluded("target/debug/x"));
        assert!(di.is_excluded("a/b/c.log"));
        assert!(di.is_excluded("x.log"));
        assert!(!di.is_excluded("keep.log"));
        assert!(di.is_excluded("CHANGES.md"));
        assert!(!di.is_excluded("README.md"));
        assert!(!di.is_excluded("docs/CHANGES.md"), "* does not cross /");
        assert!(di.is_excluded("node_modules/x/y.js"));
        assert!(!di.is_excluded("src/main.rs"));
        assert!(!di.is_excluded("# comment"));
    }

    #[test]
    fn last_match_wins_and_skipping() {
        let di = DockerIgnore::parse("dist\n!dist/keep\nbuild\n");
        assert!(di.is_excluded("dist/other"));
        assert!(!di.is_excluded("dist/keep"));
        assert!(!di.is_excluded("dist/keep/inner"));
        assert!(di.may_include_under("dist"));
        assert!(!di.may_include_under("build"));
        assert!(di.may_include_under("src"));
        let di = DockerIgnore::parse("*\n!*.go\n");
        assert!(di.is_excluded("README"));
        assert!(!di.is_excluded("main.go"));
        let di = DockerIgnore::parse("a\n!**/x\n");
        assert!(di.may_include_under("a"));
        assert!(!di.is_excluded("a/b/x"));
    }

    #[test]
    fn cleaning() {
        let di = DockerIgnore::parse("  ./foo/../bar/  \n!\n");
        assert_eq!(di.patterns(), vec!["bar"]);
        assert!(di.is_excluded("bar/baz"));
        assert!(di.is_excluded("./bar"));
    }
}
