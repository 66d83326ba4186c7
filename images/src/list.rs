//! `rbuild images`: the images of the local store as rows, filtered (`reference=`, `dangling=`) and
//! printed as a table, JSON lines or a Go-template-like format (`{{.Repository}}:{{.Tag}}`), as
//! `docker images` does for its common fields.

use std::collections::HashSet;

use anyhow::{bail, Result};
use oci::{media_type, Digest, Manifest};

/// One image of the store under one name (an untagged image has `<none>` for both parts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    /// `app`, `reg.example:5000/team/app`.
    pub repository: String,
    /// `1`, `latest`.
    pub tag: String,
    /// The manifest digest.
    pub digest: Digest,
    /// The image ID: the config digest.
    pub id: Digest,
    /// Config plus compressed layers, in bytes (of every platform, for an index).
    pub size: u64,
    /// For an image index (a multi-platform image): its platforms, `os/arch[/variant]`; else empty.
    pub platforms: Vec<String>,
}

/// The fields a `--format` template may use.
const FIELDS: &[&str] = &["Repository", "Tag", "Digest", "ID", "Size", "Platforms"];

impl ImageRow {
    fn field(&self, name: &str) -> Option<String> {
        Some(match name {
            "Repository" => self.repository.clone(),
            "Tag" => self.tag.clone(),
            "Digest" => self.digest.to_string(),
            "ID" => self.id.short().to_owned(),
            "Size" => human_size(self.size),
            "Platforms" => self.platforms.join(","),
            _ => return None,
        })
    }
}

/// The images of `store` that pass `filters` (`reference=PATTERN`, several are or-ed; `dangling=true`
/// lists only the untagged image manifests the store still holds, `false` only tagged ones).
pub fn list(store: &cache::Store, filters: &[String]) -> Result<Vec<ImageRow>> {
    let mut patterns = Vec::new();
    let mut dangling = None;
    for f in filters {
        match f.split_once('=') {
            Some(("reference", p)) => patterns.push(p.to_owned()),
            Some(("dangling", "true" | "1")) => dangling = Some(true),
            Some(("dangling", "false" | "0")) => dangling = Some(false),
            _ => {
                bail!("--filter {f:?}: expected reference=PATTERN, dangling=true or dangling=false")
            }
        }
    }
    let tags = store.list_tags()?;
    let mut rows = Vec::new();
    if dangling != Some(true) {
        for (name, desc) in &tags {
            let (repository, tag) = split_name(name);
            // The referrers index of an image's attestations (OCI tag schema `sha256-<hex>`) is no image.
            if tag.starts_with("sha256-") && desc.media_type == media_type::OCI_INDEX {
                continue;
            }
            if media_type::is_index(&desc.media_type) {
                // As docker's containerd store: an index's ID is its digest.
                let index: oci::Index = serde_json::from_slice(&store.read_blob(&desc.digest)?)?;
                let mut size = 0;
                for d in &index.manifests {
                    if let Ok(m) = store.manifest_of(d) {
                        size += image_size(&m);
                    }
                }
                rows.push(ImageRow {
                    repository: repository.to_owned(),
                    tag: tag.to_owned(),
                    digest: desc.digest.clone(),
                    id: desc.digest.clone(),
                    size,
                    platforms: index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(crate::platform_text))
                        .collect(),
                });
                continue;
            }
            let m = store.manifest_of(desc)?;
            rows.push(ImageRow {
                repository: repository.to_owned(),
                tag: tag.to_owned(),
                digest: desc.digest.clone(),
                id: m.config.digest.clone(),
                size: image_size(&m),
                platforms: Vec::new(),
            });
        }
    }
    if dangling == Some(true) {
        let tagged: HashSet<&Digest> = tags.iter().map(|(_, d)| &d.digest).collect();
        rows.extend(untagged_images(store, &tagged)?);
    }
    if !patterns.is_empty() {
        rows.retain(|r| {
            let full = format!("{}:{}", r.repository, r.tag);
            patterns
                .iter()
                .any(|p| glob(p, &full) || glob(p, &r.repository))
        });
    }
    Ok(rows)
}

/// Image manifests in the blob directory that no tag points at (what a build left behind when its tag
/// moved, or `rbuild rmi` untagged): small JSON blobs whose config is an image config.
fn untagged_images(store: &cache::Store, tagged: &HashSet<&Digest>) -> Result<Vec<ImageRow>> {
    let dir = store.root().join("blobs/sha256");
    let mut rows = Vec::new();
    for entry in fs_err::read_dir(&dir)? {
        let entry = entry?;
        let Ok(digest) =
            format!("sha256:{}", entry.file_name().to_string_lossy()).parse::<Digest>()
        else {
            continue;
        };
        if tagged.contains(&digest) || entry.metadata()?.len() > 1 << 20 {
            continue;
        }
        let bytes = fs_err::read(entry.path())?;
        if bytes.first() != Some(&b'{') {
            continue;
        }
        let Ok(m) = serde_json::from_slice::<Manifest>(&bytes) else {
            continue;
        };
        if ![media_type::OCI_CONFIG, media_type::DOCKER_CONFIG]
            .contains(&m.config.media_type.as_str())
        {
            continue;
        }
        rows.push(ImageRow {
            repository: "<none>".into(),
            tag: "<none>".into(),
            size: image_size(&m),
            id: m.config.digest,
            digest,
            platforms: Vec::new(),
        });
    }
    rows.sort_by(|a, b| a.digest.hex().cmp(b.digest.hex()));
    Ok(rows)
}

/// `reg:5000/app:1` → (`reg:5000/app`, `1`); a name without a tag gets `<none>`.
fn split_name(name: &str) -> (&str, &str) {
    let name = name.split('@').next().unwrap_or(name);
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "<none>"),
    }
}

/// Shell-style match (`*`, `?`), where neither matches `/`, as docker's reference filter (Go's
/// `path.Match`).
fn glob(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    fn m(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != '/')
                .any(|i| m(&p[1..], &s[i..])),
            Some('?') => s.first().is_some_and(|&c| c != '/') && m(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && m(&p[1..], &s[1..]),
        }
    }
    m(&p, &s)
}

/// How `rbuild images` prints its rows.
#[derive(Debug, Clone, Default)]
pub struct ListFormat {
    /// `table` (the default), `json` (one object per line), or a template such as
    /// `{{.Repository}}:{{.Tag}}` (a leading `table ` adds a header line).
    pub format: Option<String>,
    /// The table shows the manifest digest.
    pub digests: bool,
    /// Only the image IDs, each once.
    pub quiet: bool,
}

/// The text `rbuild images` prints for `rows`.
pub fn render(rows: &[ImageRow], how: &ListFormat) -> Result<String> {
    let mut out = String::new();
    if how.quiet {
        let mut seen = HashSet::new();
        for r in rows.iter().filter(|r| seen.insert(&r.id)) {
            out.push_str(r.id.short());
            out.push('\n');
        }
        return Ok(out);
    }
    match how.format.as_deref().unwrap_or("table") {
        "table" => {
            let digest = |d: &str| {
                if how.digests {
                    format!("{d:<72} ")
                } else {
                    String::new()
                }
            };
            // A PLATFORMS column only when an image index is listed: tables of single images stay as
            // docker prints them.
            let indexes = rows.iter().any(|r| !r.platforms.is_empty());
            let platforms = |r: Option<&ImageRow>| match (indexes, r) {
                (false, _) => String::new(),
                (true, None) => " PLATFORMS".to_owned(),
                (true, Some(r)) => format!(" {}", r.platforms.join(",")),
            };
            out.push_str(&format!(
                "{:<40} {}{:<14} {:>10}{}\n",
                "NAME",
                digest("DIGEST"),
                "IMAGE ID",
                "SIZE",
                platforms(None)
            ));
            for r in rows {
                let name = if r.tag == "<none>" && r.repository != "<none>" {
                    r.repository.clone()
                } else {
                    format!("{}:{}", r.repository, r.tag)
                };
                out.push_str(&format!(
                    "{name:<40} {}{:<14} {:>10}{}\n",
                    digest(&r.digest.to_string()),
                    r.id.short(),
                    human_size(r.size),
                    platforms(Some(r))
                ));
            }
        }
        "json" => {
            for r in rows {
                let obj: serde_json::Map<String, serde_json::Value> = FIELDS
                    .iter()
                    .map(|f| ((*f).to_owned(), r.field(f).unwrap_or_default().into()))
                    .collect();
                out.push_str(&serde_json::Value::Object(obj).to_string());
                out.push('\n');
            }
        }
        template => {
            let (header, template) = match template.strip_prefix("table ") {
                Some(t) => (true, t),
                None => (false, template),
            };
            let template = template.replace("\\t", "\t").replace("\\n", "\n");
            if header {
                out.push_str(&fill(&template, &|f| Some(f.to_uppercase()))?);
                out.push('\n');
            }
            for r in rows {
                out.push_str(&fill(&template, &|f| r.field(f))?);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Replaces each `{{.Field}}` (spaces inside the braces allowed) of `template` by `value(Field)`.
fn fill(template: &str, value: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find("}}") else {
            bail!("--format {template:?}: `{{{{` without `}}}}`");
        };
        let inner = rest[start + 2..start + len].trim();
        let field = inner.strip_prefix('.').filter(|f| FIELDS.contains(f));
        let Some(v) = field.and_then(value) else {
            bail!(
                "--format {template:?}: unknown field {inner:?} (known: {})",
                FIELDS
                    .iter()
                    .map(|f| format!(".{f}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        out.push_str(&v);
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Size of an image: config plus compressed layers.
pub fn image_size(m: &Manifest) -> u64 {
    m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>()
}

/// `1.5MB`, as docker prints sizes (powers of 1000).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    #[allow(clippy::cast_precision_loss)] // display only
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        let n = format!("{v:.3}");
        format!(
            "{}{}",
            n.trim_end_matches('0').trim_end_matches('.'),
            UNITS[u]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ImageRow {
        ImageRow {
            repository: "127.0.0.1:5000/app".into(),
            tag: "1".into(),
            digest: Digest::sha256_of(b"m"),
            id: Digest::sha256_of(b"c"),
            size: 1_500_000,
            platforms: Vec::new(),
        }
    }

    #[test]
    fn templates_fill_docker_fields_and_name_unknown_ones() {
        let how = |f: &str| ListFormat {
            format: Some(f.to_owned()),
            ..ListFormat::default()
        };
        let out = render(&[row()], &how("{{.Repository}}:{{ .Tag }} {{.Size}}")).unwrap();
        assert_eq!(out, "127.0.0.1:5000/app:1 1.5MB\n");
        let out = render(&[row()], &how("table {{.ID}}\\t{{.Tag}}")).unwrap();
        assert_eq!(out, format!("ID\tTAG\n{}\t1\n", row().id.short()));
        let e = render(&[row()], &how("{{.Created}}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field \".Created\"") && e.contains(".Repository"),
            "{e}"
        );
        let e = render(&[row()], &how("{{.Tag")).unwrap_err().to_string();
        assert!(e.contains("without"), "{e}");
    }

    #[test]
    fn names_split_at_the_tag_not_the_port() {
        assert_eq!(
            split_name("127.0.0.1:5000/app:1"),
            ("127.0.0.1:5000/app", "1")
        );
        assert_eq!(split_name("reg:5000/app"), ("reg:5000/app", "<none>"));
        assert_eq!(split_name("app:latest"), ("app", "latest"));
    }

    #[test]
    fn reference_patterns_match_like_path_match() {
        assert!(glob("app*", "app:1"));
        assert!(glob("*/app:*", "reg/app:2"));
        assert!(!glob("*", "reg/app"));
        assert!(glob("a?p", "app"));
        assert!(!glob("app", "app:1"));
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(4_096), "4.096kB");
    }
}
