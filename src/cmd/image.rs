//! `rbuild inspect` and `rbuild history`: what the local store knows of an image, as docker prints it.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use oci::ImageConfig;

use export::local_image;

use crate::cli::{ImagesArgs, PushArgs};

/// `rbuild images`: the images of the local store, filtered and formatted as asked.
pub(crate) fn images(args: &ImagesArgs, store: &cache::Store) -> Result<()> {
    let how = images::ListFormat {
        format: args.format.clone(),
        digests: args.digests,
        quiet: args.quiet,
    };
    print!(
        "{}",
        images::render(&images::list(store, &args.filter)?, &how)?
    );
    Ok(())
}

/// `rbuild tag SOURCE TARGET...`.
pub(crate) fn tag(store: &cache::Store, source: &str, targets: &[String]) -> Result<()> {
    for t in targets {
        store.tag_image(source, t)?;
    }
    Ok(())
}

/// `rbuild rmi IMAGE...`: prints `Untagged: NAME` per removed tag, as docker.
pub(crate) fn rmi(store: &cache::Store, names: &[String]) -> Result<()> {
    for n in names {
        for removed in store.untag(n)? {
            println!("Untagged: {removed}");
        }
    }
    Ok(())
}

/// `rbuild save IMAGE... [-o FILE] [--format docker|oci]`: stdout only when it is not a terminal.
pub(crate) fn save(
    store: &cache::Store,
    names: &[String],
    out: Option<&Path>,
    format: &str,
) -> Result<()> {
    let dest = match out {
        Some(p) => p,
        None if std::io::stdout().is_terminal() => {
            bail!("refusing to write an archive to a terminal: give -o FILE or redirect stdout")
        }
        None => Path::new("-"),
    };
    export::save(store, names, dest, format == "docker")
}

/// `rbuild load [-i FILE|oci:DIR[:TAG]]`: prints `Loaded image: NAME` (or the ID of an untagged one).
pub(crate) fn load(store: &cache::Store, input: Option<&str>) -> Result<()> {
    let loaded = match input {
        Some(i) if i != "-" => match images::parse_oci_dir(i) {
            Some((dir, tag)) => images::load_layout_dir(store, &dir, tag.as_deref())?,
            None => images::load_archive(store, fs_err::File::open(i)?)?,
        },
        _ if std::io::stdin().is_terminal() => {
            bail!("no archive to load: give -i FILE or pipe one to stdin")
        }
        _ => images::load_archive(store, std::io::stdin().lock())?,
    };
    for l in &loaded {
        if l.names.is_empty() {
            println!("Loaded image ID: {}", l.config);
        }
        for n in &l.names {
            println!("Loaded image: {n}");
        }
    }
    Ok(())
}

/// `rbuild push IMAGE [DESTINATION]`: pushes an image of the local store to the registry its name (or
/// DESTINATION) says.
pub(crate) fn push(
    args: &PushArgs,
    store: &cache::Store,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let pairs: Vec<(String, String)> = if args.all_tags {
        if args.destination.is_some() {
            bail!("--all-tags pushes each tag under its own name: no DESTINATION");
        }
        let tags = store.repository_tags(&args.image)?;
        if tags.is_empty() {
            bail!("no tags of repository {} in the local store", args.image);
        }
        tags.into_iter().map(|t| (t.clone(), t)).collect()
    } else {
        let dest = args.destination.as_deref().unwrap_or(&args.image);
        vec![(args.image.clone(), dest.to_owned())]
    };
    let client = Arc::new(images::LazyClient::new(
        args.registry.client_options(&args.insecure_registries),
    ));
    for (source, dest) in pairs {
        let reference: oci::Reference = dest.parse().with_context(|| format!("image {dest:?}"))?;
        let image = local_image(store, &source)?;
        // A tagged image has all its blobs here; no imported cache is involved.
        let digest = rt.block_on(export::push(
            client.get()?,
            store,
            &images::NoBlobSource,
            None,
            &image,
            &reference,
        ))?;
        if let Some(file) = &args.digestfile {
            fs_err::write(file, digest.to_string())?;
        }
        println!("{}@{digest}", reference.name());
    }
    Ok(())
}

/// `rbuild inspect IMAGE`: descriptor, manifest and config as one JSON document on stdout.
pub(crate) fn inspect(store: &cache::Store, name: &str) -> Result<()> {
    let image = local_image(store, name)?;
    let config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&image.config_digest)?)?;
    let doc = serde_json::json!({
        "Name": name,
        "Id": image.config_digest.to_string(),
        "Descriptor": image.manifest_desc,
        "Manifest": image.manifest,
        "Config": config,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// `rbuild history IMAGE`: one line per history entry, newest first, like `docker history`.
pub(crate) fn history(store: &cache::Store, name: &str, no_trunc: bool) -> Result<()> {
    let image = local_image(store, name)?;
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&image.config_digest)?)
        .with_context(|| format!("parsing config {}", image.config_digest))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let mut sizes = image.manifest.layers.iter().map(|l| l.size);
    let mut rows: Vec<[String; 5]> = config
        .history
        .iter()
        .map(|h| {
            let size = if h.empty_layer {
                0
            } else {
                sizes.next().unwrap_or(0)
            };
            let created = h
                .created
                .as_deref()
                .and_then(oci::time::parse_rfc3339)
                .map_or_else(|| "<unknown>".to_owned(), |t| ago(now - t));
            let mut by = h.created_by.clone().unwrap_or_default().replace('\n', " ");
            if !no_trunc && by.chars().count() > 45 {
                by = by.chars().take(44).collect::<String>() + "…";
            }
            [
                "<missing>".to_owned(),
                created,
                by,
                human_size(size),
                h.comment.clone().unwrap_or_default(),
            ]
        })
        .collect();
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top[0] = if no_trunc {
            image.config_digest.to_string()
        } else {
            image.config_digest.short().to_owned()
        };
    }
    let header = ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"];
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(w - c.chars().count() + 3));
            }
        }
        s.trim_end().to_owned()
    };
    println!("{}", line(header));
    for r in &rows {
        println!(
            "{}",
            line([&r[0], &r[1], &r[2], &r[3], &r[4]].map(String::as_str))
        );
    }
    Ok(())
}

/// `docker history`'s relative times.
fn ago(secs: i64) -> String {
    let s = secs.max(0);
    let (n, unit) = match s {
        0..=59 => return "Less than a minute ago".to_owned(),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=604_799 => (s / 86_400, "day"),
        604_800..=2_591_999 => (s / 604_800, "week"),
        2_592_000..=31_535_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

pub(crate) use images::human_size;

#[cfg(test)]
mod tests {
    #[test]
    fn history_sizes_and_times_read_like_docker() {
        assert_eq!(super::ago(30), "Less than a minute ago");
        assert_eq!(super::ago(7_200), "2 hours ago");
        assert_eq!(super::ago(86_400), "1 day ago");
    }
}
