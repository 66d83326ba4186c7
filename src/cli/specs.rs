//! buildx-style specs of build flags (`-o`, `--cache-to`, `--cache-from`, `--label`, …) parsed into the
//! types the export and remotecache crates take.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use export::Output;
use oci::{Compression, Reference};
use remotecache::{CacheFrom, CacheTo, ExportOpts, Mode, DEFAULT_LOCAL_TAG};

/// Checks `--compression-level` against what the compression knows: gzip 0–12 (libdeflate; 10–12 are
/// slow and small), zstd 1–22. A level is ignored without compression, as BuildKit ignores it.
pub(crate) fn compression_level(
    compression: Compression,
    level: Option<u32>,
) -> Result<Option<u32>> {
    let range = match compression {
        Compression::Gzip => 0..=oci::MAX_GZIP_LEVEL,
        Compression::Zstd => 1..=22,
        Compression::Uncompressed => return Ok(level),
    };
    match level {
        Some(l) if !range.contains(&l) => bail!(
            "--compression-level {l}: {} levels are {} to {}",
            match compression {
                Compression::Gzip => "gzip",
                _ => "zstd",
            },
            range.start(),
            range.end()
        ),
        _ => Ok(level),
    }
}

/// `SOURCE_DATE_EPOCH` from `--build-arg`, else the environment.
pub(crate) fn source_date_epoch(build_args: &BTreeMap<String, String>) -> Result<Option<i64>> {
    let v = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|v| !v.is_empty());
    v.map(|v| {
        v.trim()
            .parse::<i64>()
            .map_err(|_| anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))
    })
    .transpose()
}

/// Parses `KEY=VALUE` flags (`--label`, `--annotation`).
pub(crate) fn key_values(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("{flag} {kv:?}: expected KEY=VALUE"))?;
            if k.is_empty() {
                bail!("{flag} {kv:?}: empty key");
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Splits an output spec on commas outside double quotes (buildx's CSV: `type=image,"name=a,b"`).
pub(crate) fn csv_fields(spec: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in spec.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("one field at least").push(c),
        }
    }
    fields
}

/// Parses `-o` specs. `-o DIR` alone means `type=local,dest=DIR` and `-o -` means `type=tar,dest=-`, as
/// with buildx.
pub(crate) fn parse_outputs(specs: &[String]) -> Result<Vec<Output>> {
    let mut out = Vec::new();
    for spec in specs {
        if !spec.contains('=') {
            out.push(if spec == "-" {
                Output::Tar { dest: "-".into() }
            } else {
                Output::Local { dest: spec.into() }
            });
            continue;
        }
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        for part in csv_fields(spec) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("--output {spec:?}: expected key=value pairs"))?;
            fields.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let ty = fields
            .remove("type")
            .ok_or_else(|| anyhow!("--output {spec:?}: missing type="))?;
        let names: Vec<String> = fields
            .remove("name")
            .map(|n| {
                n.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let flag =
            |fields: &mut BTreeMap<String, String>, key: &str, default: bool| -> Result<bool> {
                match fields.remove(key).as_deref() {
                    None => Ok(default),
                    Some("true") | Some("1") => Ok(true),
                    Some("false") | Some("0") => Ok(false),
                    Some(v) => bail!("--output {spec:?}: {key}={v} is not true or false"),
                }
            };
        let dest = |fields: &mut BTreeMap<String, String>| -> Result<PathBuf> {
            fields
                .remove("dest")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| anyhow!("--output {spec:?}: type={ty} needs dest="))
        };
        let o = match ty.as_str() {
            "image" => Output::Image {
                push: flag(&mut fields, "push", false)?,
                names,
            },
            "registry" => Output::Image { push: true, names },
            "oci" => {
                let dest = dest(&mut fields)?;
                let dir_like = dest.is_dir() || dest.as_os_str().to_string_lossy().ends_with('/');
                let tar = flag(&mut fields, "tar", !dir_like)?;
                if !tar && dest.as_os_str() == "-" {
                    bail!("--output {spec:?}: an OCI directory cannot go to stdout");
                }
                Output::Oci { dest, tar, names }
            }
            "docker" => Output::Docker {
                dest: dest(&mut fields)?,
                names,
            },
            "local" => Output::Local {
                dest: dest(&mut fields)?,
            },
            "tar" => Output::Tar {
                dest: dest(&mut fields)?,
            },
            other => bail!(
                "--output {spec:?}: unknown type={other} (image, registry, oci, docker, local, tar are known)"
            ),
        };
        // Options buildx has that change nothing here.
        for k in [
            "compression",
            "compression-level",
            "force-compression",
            "oci-mediatypes",
            "push-by-digest",
        ] {
            if fields.remove(k).is_some() {
                tracing::warn!("--output {spec:?}: {k}= is taken from the build flags (--{k})");
            }
        }
        if let Some(k) = fields.keys().next() {
            bail!("--output {spec:?}: unknown option {k}= for type={ty}");
        }
        out.push(o);
    }
    Ok(out)
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
    fn outputs_parse_as_buildx_spells_them() {
        use super::Output;
        use std::path::PathBuf;
        let o = super::parse_outputs(&[
            "type=image,\"name=a:1,b:2\",push=true".into(),
            "type=registry".into(),
            "type=oci,dest=x.tar".into(),
            "type=oci,dest=layout,tar=false".into(),
            "type=docker,dest=d.tar".into(),
            "type=local,dest=out".into(),
            "type=tar,dest=-".into(),
            "rootfs".into(),
        ])
        .unwrap();
        assert_eq!(
            o,
            vec![
                Output::Image {
                    names: vec!["a:1".into(), "b:2".into()],
                    push: true
                },
                Output::Image {
                    names: vec![],
                    push: true
                },
                Output::Oci {
                    dest: PathBuf::from("x.tar"),
                    tar: true,
                    names: vec![]
                },
                Output::Oci {
                    dest: PathBuf::from("layout"),
                    tar: false,
                    names: vec![]
                },
                Output::Docker {
                    dest: PathBuf::from("d.tar"),
                    names: vec![]
                },
                Output::Local {
                    dest: PathBuf::from("out")
                },
                Output::Tar {
                    dest: PathBuf::from("-")
                },
                Output::Local {
                    dest: PathBuf::from("rootfs")
                },
            ]
        );
        for bad in [
            "type=oci",
            "type=nope,dest=x",
            "dest=x",
            "type=local,dest=x,color=red",
            "type=image,push=maybe",
        ] {
            assert!(super::parse_outputs(&[bad.into()]).is_err(), "{bad}");
        }
    }

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
