//! What `rbuild inspect` and `rbuild history` show of an image in the store, as docker shows it.

use anyhow::{Context as _, Result};
use oci::{Descriptor, Digest, ImageConfig, Manifest};

/// `rbuild inspect IMAGE`: descriptor, manifest and config as one JSON document.
pub fn inspect(
    store: &cache::Store,
    name: &str,
    config_digest: &Digest,
    descriptor: &Descriptor,
    manifest: &Manifest,
) -> Result<String> {
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(config_digest)?)?;
    let doc = serde_json::json!({
        "Name": name,
        "Id": config_digest.to_string(),
        "Descriptor": descriptor,
        "Manifest": manifest,
        "Config": config,
    });
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// `rbuild inspect` of an image index: its descriptor and JSON, then each platform's image as
/// [`inspect`] shows one (`Platform`, `Descriptor`, `Manifest`, `Config`).
pub fn inspect_index(
    store: &cache::Store,
    name: &str,
    descriptor: &Descriptor,
    index: &oci::Index,
    manifests: &[(oci::Platform, Digest, Descriptor, Manifest)],
) -> Result<String> {
    let mut images = Vec::new();
    for (platform, config_digest, desc, manifest) in manifests {
        let config: serde_json::Value = serde_json::from_slice(&store.read_blob(config_digest)?)?;
        images.push(serde_json::json!({
            "Platform": platform.to_string(),
            "Id": config_digest.to_string(),
            "Descriptor": desc,
            "Manifest": manifest,
            "Config": config,
        }));
    }
    let doc = serde_json::json!({
        "Name": name,
        "Id": descriptor.digest.to_string(),
        "Descriptor": descriptor,
        "Index": index,
        "Manifests": images,
    });
    Ok(serde_json::to_string_pretty(&doc)?)
}

/// `rbuild history IMAGE`: one line per history entry, newest first, as `docker history` prints them
/// (layer sizes on the entries that made a layer, the image ID on the newest).
pub fn history(
    store: &cache::Store,
    config_digest: &Digest,
    manifest: &Manifest,
    no_trunc: bool,
) -> Result<String> {
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(config_digest)?)
        .with_context(|| format!("parsing config {config_digest}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let mut sizes = manifest.layers.iter().map(|l| l.size);
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
                crate::human_size(size),
                h.comment.clone().unwrap_or_default(),
            ]
        })
        .collect();
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top[0] = if no_trunc {
            config_digest.to_string()
        } else {
            config_digest.short().to_owned()
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
    let mut out = format!("{}\n", line(header));
    for r in &rows {
        out.push_str(&line(
            [&r[0], &r[1], &r[2], &r[3], &r[4]].map(String::as_str),
        ));
        out.push('\n');
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    #[test]
    fn history_sizes_and_times_read_like_docker() {
        assert_eq!(super::ago(30), "Less than a minute ago");
        assert_eq!(super::ago(7_200), "2 hours ago");
        assert_eq!(super::ago(86_400), "1 day ago");
    }
}
