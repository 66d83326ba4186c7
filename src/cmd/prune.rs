//! `rbuild prune` and `rbuild du`: garbage collection and disk usage of the local store.
//!
//! Pruning never removes tags or what they reach, and waits for running builds (they hold
//! `Store::lease`), so it never deletes what a build in progress uses.

use anyhow::{bail, Result};

use crate::cli::PruneArgs;
use crate::cmd::image::human_size;

pub(crate) fn prune(args: &PruneArgs, store: &cache::Store) -> Result<()> {
    let mut opts = cache::PruneOptions {
        all: args.all,
        keep_bytes: args
            .keep_storage
            .as_deref()
            .map(cache::parse_size)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        older_than: None,
    };
    for f in &args.filter {
        match f.split_once('=') {
            Some(("until", d)) => {
                opts.older_than = Some(cache::parse_duration(d).map_err(anyhow::Error::msg)?);
            }
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
    let (images, image_bytes) = store.image_usage()?;
    let all = u.blob_bytes + u.snapshot_bytes;
    let size = human_size;
    let rows: [(&str, String, String); 9] = [
        ("TYPE", "COUNT".into(), "SIZE".into()),
        ("blobs", u.blobs.to_string(), size(u.blob_bytes)),
        ("snapshots", u.snapshots.to_string(), size(u.snapshot_bytes)),
        ("cache records", u.records.to_string(), String::new()),
        ("cache mounts", u.mounts.to_string(), String::new()),
        ("tags", store.list_tags()?.len().to_string(), String::new()),
        ("images", images.to_string(), size(image_bytes)),
        (
            "build cache",
            String::new(),
            size(all.saturating_sub(image_bytes)),
        ),
        ("total", String::new(), size(all)),
    ];
    for (what, count, bytes) in rows {
        println!("{what:<16} {count:>8} {bytes:>10}");
    }
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
    for line in r.problems(repair) {
        println!("{line}");
    }
    eprintln!("{}", r.summary(repair));
    Ok(if r.is_clean() || repair {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}
