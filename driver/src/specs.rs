//! Build flags checked before anything runs: `--compression-level`, `SOURCE_DATE_EPOCH`, `--label` and
//! `--annotation`. The buildx-style specs of `-o` and `--cache-to`/`--cache-from` are parsed by the crates
//! whose types they make ([`export::Output::parse_all`], [`remotecache::CacheTo::parse`],
//! [`remotecache::CacheFrom::parse`]), next to the options they name.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use oci::Compression;

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

#[cfg(test)]
mod tests {
    #[test]
    fn labels_and_compression_levels_are_checked() {
        let kv = super::key_values("--label", &["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(kv["b"], "x=y");
        assert!(super::key_values("--label", &["novalue".into()]).is_err());
        assert!(super::key_values("--label", &["=v".into()]).is_err());
        let gzip = oci::Compression::Gzip;
        assert_eq!(super::compression_level(gzip, Some(9)).unwrap(), Some(9));
        let e = super::compression_level(gzip, Some(13))
            .unwrap_err()
            .to_string();
        assert!(e.contains("gzip levels are 0 to"), "{e}");
        assert!(super::compression_level(oci::Compression::Zstd, Some(0)).is_err());
    }
}
