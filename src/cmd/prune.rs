//! `rbuild prune` and `rbuild du`: garbage collection and disk usage of the local store.
//!
//! Pruning never removes tags or what they reach, and waits for running builds (they hold
//! `Store::lease`), so it never deletes what a build in progress uses.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::cli::PruneArgs;
use crate::cmd::image::human_size;

/// Parses `10GB`, `512MB`, `1.5g`, `4096`, `2KiB` into bytes (decimal units as docker; `i` forms binary).
pub(crate) fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("size {s:?}: expected a number with an optional unit (e.g. 10GB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            bail!("size {s:?}: unknown unit {other:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
        }
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // non-negative, rounded
    Ok((n * mult).round() as u64)
}

/// Parses `90s`, `30m`, `24h`, `7d`, `1h30m` (Go-style, plus days).
pub(crate) fn parse_duration(s: &str) -> Result<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        bail!("duration {s:?} is empty");
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| anyhow!("duration {s:?}: missing unit (s, m, h, d)"))?;
        let (num, tail) = rest.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| anyhow!("duration {s:?}: expected e.g. 24h, 30m, 7d"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, after) = tail.split_at(unit_len);
        let secs = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => bail!("duration {s:?}: unknown unit {other:?} (ms, s, m, h, d)"),
        };
        total += n * secs;
        rest = after;
    }
    Ok(Duration::from_secs_f64(total))
}

pub(crate) fn prune(args: &PruneArgs, store: &cache::Store) -> Result<()> {
    let mut opts = cache::PruneOptions {
        all: args.all,
        keep_bytes: args.keep_storage.as_deref().map(parse_size).transpose()?,
        older_than: None,
    };
    for f in &args.filter {
        match f.split_once('=') {
            Some(("until", d)) => opts.older_than = Some(parse_duration(d)?),
            _ => bail!("--filter {f:?}: only until=DURATION is supported"),
        }
    }
    let before = store.usage()?;
    let report = store.prune(opts, &|_| false)?;
    if args.all {
        store.stat_cache_clear()?;
    }
    let after = store.usage()?;
    println!(
        "removed {} cache records, {} base resolutions, {} blobs, {} snapshots, {} cache mounts",
        report.records, report.bases, report.blobs, report.snapshots, report.mounts
    );
    let total = |u: &cache::Usage| u.blob_bytes + u.snapshot_bytes;
    println!(
        "reclaimed {} (store now {})",
        human_size(
            total(&before)
                .saturating_sub(total(&after))
                .max(report.bytes)
        ),
        human_size(total(&after))
    );
    Ok(())
}

pub(crate) fn du(store: &cache::Store) -> Result<()> {
    let u = store.usage()?;
    let tags = store.list_tags()?.len();
    println!("{:<16} {:>8} {:>10}", "TYPE", "COUNT", "SIZE");
    println!(
        "{:<16} {:>8} {:>10}",
        "blobs",
        u.blobs,
        human_size(u.blob_bytes)
    );
    println!(
        "{:<16} {:>8} {:>10}",
        "snapshots",
        u.snapshots,
        human_size(u.snapshot_bytes)
    );
    println!("{:<16} {:>8} {:>10}", "cache records", u.records, "");
    println!("{:<16} {:>8} {:>10}", "cache mounts", u.mounts, "");
    println!("{:<16} {:>8} {:>10}", "tags", tags, "");
    let (images, image_bytes) = store.image_usage()?;
    println!(
        "{:<16} {:>8} {:>10}",
        "images",
        images,
        human_size(image_bytes)
    );
    println!(
        "{:<16} {:>8} {:>10}",
        "build cache",
        "",
        human_size((u.blob_bytes + u.snapshot_bytes).saturating_sub(image_bytes))
    );
    println!(
        "{:<16} {:>8} {:>10}",
        "total",
        "",
        human_size(u.blob_bytes + u.snapshot_bytes)
    );
    Ok(())
}

/// `rbuild check [--repair]`: prints what is broken (stdout, one line each) and a summary (stderr); exit
/// code 1 when something is broken and was not repaired.
pub(crate) fn check(store: &cache::Store, repair: bool) -> Result<std::process::ExitCode> {
    let mode = if repair {
        cache::Repair::Yes
    } else {
        cache::Repair::No
    };
    let blobs_of = |value: &[u8]| {
        solver::decode_record(value).map(|o| {
            o.layers
                .into_iter()
                .map(|l| l.blob.digest)
                .collect::<Vec<_>>()
        })
    };
    let r = store.check(mode, &blobs_of)?;
    let verb = if repair { "removed" } else { "broken" };
    for d in &r.corrupt_blobs {
        println!("corrupt blob {d} ({verb})");
    }
    for (tag, reason) in &r.broken_tags {
        println!("broken tag {tag}: {reason} ({verb})");
    }
    for key in &r.broken_records {
        println!("broken cache record {key} ({verb})");
    }
    for s in &r.missing_snapshots {
        println!("lost snapshot sha256:{s} ({verb})");
    }
    for (dir, m) in &r.open_dirs {
        let fixed = if repair { "made private" } else { "open" };
        println!("store directory {} has mode {m:o} ({fixed})", dir.display());
    }
    eprintln!(
        "checked {} blobs, {} tags, {} cache records: {}",
        r.blobs,
        r.tags,
        r.records,
        if r.is_clean() {
            "all good".to_owned()
        } else if repair {
            "repaired".to_owned()
        } else {
            "broken (rbuild check --repair removes it)".to_owned()
        }
    );
    Ok(if r.is_clean() || repair {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("512mb").unwrap(), 512_000_000);
        assert_eq!(parse_size("2KiB").unwrap(), 2048);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").is_err());
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("3w").is_err());
    }
}
