//! `--cache-to` and `--cache-from` specs, as buildx spells them (`type=registry,ref=REF,mode=max`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use export::csv_fields;
use oci::{Compression, Reference};

use crate::{CacheFrom, CacheTo, ExportOpts, Mode, DEFAULT_LOCAL_TAG};

impl CacheTo {
    /// Parses a `--cache-to` spec.
    pub fn parse(spec: &str) -> Result<Self> {
        parse_cache_to(spec)
    }
}

impl CacheFrom {
    /// Parses a `--cache-from` spec; a bare reference means `type=registry,ref=REF`.
    pub fn parse(spec: &str) -> Result<Self> {
        parse_cache_from(spec)
    }
}

fn spec_fields(flag: &str, spec: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for field in csv_fields(spec) {
        if field.is_empty() {
            continue;
        }
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| anyhow!("{flag} {spec:?}: {field:?} is not KEY=VALUE"))?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            bail!("{flag} {spec:?}: {k} is given twice");
        }
    }
    Ok(out)
}

fn parse_bool(flag: &str, spec: &str, key: &str, v: Option<&String>) -> Result<bool> {
    match v.map(String::as_str) {
        None => Ok(false),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => bail!("{flag} {spec:?}: {key}={other:?} must be true or false"),
    }
}

fn parse_reference(flag: &str, spec: &str, r: &str) -> Result<Reference> {
    r.parse::<Reference>()
        .map_err(|e| anyhow!("{flag} {spec:?}: ref: {e}"))
}

/// Parses a `--cache-to` spec.
pub(crate) fn parse_cache_to(spec: &str) -> Result<CacheTo> {
    const FLAG: &str = "--cache-to";
    let f = spec_fields(FLAG, spec)?;
    let ty = f
        .get("type")
        .ok_or_else(|| anyhow!("{FLAG} {spec:?}: missing type= (registry, local or inline)"))?;
    let known: &[&str] = match ty.as_str() {
        "registry" => &[
            "type",
            "ref",
            "mode",
            "compression",
            "cache-mounts",
            "ignore-error",
        ],
        "local" => &[
            "type",
            "dest",
            "tag",
            "mode",
            "compression",
            "cache-mounts",
            "ignore-error",
        ],
        "inline" => &["type", "mode"],
        other => bail!("{FLAG} {spec:?}: unknown type {other:?} (registry, local or inline)"),
    };
    if let Some(k) = f.keys().find(|k| !known.contains(&k.as_str())) {
        bail!(
            "{FLAG} {spec:?}: unknown option {k:?} for type={ty} (known: {})",
            known.join(", ")
        );
    }
    let mode = match f.get("mode").map(String::as_str) {
        None | Some("min") => Mode::Min,
        Some("max") => Mode::Max,
        Some(other) => bail!("{FLAG} {spec:?}: mode={other:?} must be min or max"),
    };
    let compression = match f.get("compression").map(String::as_str) {
        None => None,
        Some("gzip") => Some(Compression::Gzip),
        Some("zstd") => Some(Compression::Zstd),
        Some("uncompressed") => Some(Compression::Uncompressed),
        Some(other) => {
            bail!("{FLAG} {spec:?}: compression={other:?} must be gzip, zstd or uncompressed")
        }
    };
    let opts = ExportOpts {
        mode,
        mounts: parse_bool(FLAG, spec, "cache-mounts", f.get("cache-mounts"))?,
        compression,
        ignore_error: parse_bool(FLAG, spec, "ignore-error", f.get("ignore-error"))?,
    };
    match ty.as_str() {
        "registry" => {
            let r = f.get("ref").ok_or_else(|| {
                anyhow!("{FLAG} {spec:?}: type=registry needs ref=REPOSITORY:TAG")
            })?;
            let reference = parse_reference(FLAG, spec, r)?;
            if reference.digest.is_some() {
                bail!("{FLAG} {spec:?}: ref must name a tag, not a digest");
            }
            Ok(CacheTo::Registry { reference, opts })
        }
        "local" => {
            let dest = f
                .get("dest")
                .ok_or_else(|| anyhow!("{FLAG} {spec:?}: type=local needs dest=DIR"))?;
            Ok(CacheTo::Local {
                dest: PathBuf::from(dest),
                tag: local_tag(FLAG, spec, f.get("tag"))?,
                opts,
            })
        }
        _ => {
            if mode == Mode::Max {
                bail!("{FLAG} {spec:?}: type=inline supports only mode=min (use type=registry for mode=max)");
            }
            Ok(CacheTo::Inline)
        }
    }
}

fn local_tag(flag: &str, spec: &str, tag: Option<&String>) -> Result<String> {
    let tag = tag.map_or(DEFAULT_LOCAL_TAG, String::as_str);
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid {
        bail!("{flag} {spec:?}: tag={tag:?} must be letters, digits, '_', '.' or '-'");
    }
    Ok(tag.to_owned())
}

/// Parses a `--cache-from` spec; a bare reference means `type=registry,ref=REF`.
pub(crate) fn parse_cache_from(spec: &str) -> Result<CacheFrom> {
    const FLAG: &str = "--cache-from";
    if !spec.contains('=') {
        return Ok(CacheFrom::Registry {
            reference: parse_reference(FLAG, spec, spec)?,
        });
    }
    let f = spec_fields(FLAG, spec)?;
    let ty = f
        .get("type")
        .ok_or_else(|| anyhow!("{FLAG} {spec:?}: missing type= (registry or local)"))?;
    let known: &[&str] = match ty.as_str() {
        "registry" => &["type", "ref"],
        "local" => &["type", "src", "tag", "digest"],
        other => bail!("{FLAG} {spec:?}: unknown type {other:?} (registry or local)"),
    };
    if let Some(k) = f.keys().find(|k| !known.contains(&k.as_str())) {
        bail!(
            "{FLAG} {spec:?}: unknown option {k:?} for type={ty} (known: {})",
            known.join(", ")
        );
    }
    match ty.as_str() {
        "registry" => {
            let r = f
                .get("ref")
                .ok_or_else(|| anyhow!("{FLAG} {spec:?}: type=registry needs ref=REF"))?;
            Ok(CacheFrom::Registry {
                reference: parse_reference(FLAG, spec, r)?,
            })
        }
        _ => {
            let src = f
                .get("src")
                .ok_or_else(|| anyhow!("{FLAG} {spec:?}: type=local needs src=DIR"))?;
            Ok(CacheFrom::Local {
                src: PathBuf::from(src),
                tag: local_tag(FLAG, spec, f.get("tag"))?,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_buildx_spells_them() {
        let to =
            parse_cache_to("type=registry,ref=127.0.0.1:5000/app:cache,mode=max,cache-mounts=true")
                .unwrap();
        let CacheTo::Registry { reference, opts } = to else {
            panic!("not registry")
        };
        assert_eq!(reference.repository, "app");
        assert_eq!(opts.mode, Mode::Max);
        assert!(opts.mounts);
        assert_eq!(
            parse_cache_to("type=local,dest=/tmp/c").unwrap(),
            CacheTo::Local {
                dest: "/tmp/c".into(),
                tag: "latest".into(),
                opts: ExportOpts {
                    mode: Mode::Min,
                    mounts: false,
                    compression: None,
                    ignore_error: false
                }
            }
        );
        assert_eq!(parse_cache_to("type=inline").unwrap(), CacheTo::Inline);
        assert!(matches!(
            parse_cache_from("127.0.0.1:5000/app:cache").unwrap(),
            CacheFrom::Registry { .. }
        ));
        assert_eq!(
            parse_cache_from("type=local,src=/c,tag=main").unwrap(),
            CacheFrom::Local {
                src: "/c".into(),
                tag: "main".into()
            }
        );
        for (bad, says) in [
            ("type=registry", "needs ref="),
            ("type=s3,bucket=x", "unknown type \"s3\""),
            ("type=registry,ref=r/a:1,mode=all", "mode=\"all\""),
            ("type=local,dest=/x,colour=red", "unknown option \"colour\""),
            ("type=inline,mode=max", "only mode=min"),
            ("type=local,dest=/x,tag=../up", "tag=\"../up\""),
            ("ref=r/a:1", "missing type="),
            (
                "type=registry,ref=r/a:1,cache-mounts=yes",
                "cache-mounts=\"yes\"",
            ),
        ] {
            let e = parse_cache_to(bad).unwrap_err().to_string();
            assert!(e.contains("--cache-to") && e.contains(says), "{bad}: {e}");
        }
        let e = parse_cache_from("type=local").unwrap_err().to_string();
        assert!(e.contains("needs src=DIR"), "{e}");
    }
}
