//! `--build-context NAME=VALUE`: named contexts that stand in for `FROM NAME`, `COPY --from=NAME` and
//! `RUN --mount=from=NAME`, as buildx spells them.
//!
//! Every kind becomes an image reference the frontend substitutes for NAME (see
//! `frontend::LowerOptions::named_images`), so the solver keys it by manifest digest like any base:
//! `docker-image://REF` is REF itself; `oci-layout://DIR[:TAG|@sha256:…]` is copied into the store
//! (blobs only, no tag) and pinned in [`images::Images`] under its own spelling for this build.
//! Directories, git URLs and tarball URLs as named contexts are not supported yet and fail clearly.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};

/// One `--build-context` value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`.
    Image(String),
    /// `oci-layout://DIR[:TAG|@DIGEST]`.
    OciLayout {
        dir: String,
        tag: Option<String>,
        digest: Option<String>,
    },
}

/// Parses `NAME=VALUE`.
pub fn parse(spec: &str) -> Result<(String, NamedContext)> {
    let (name, value) = spec
        .split_once('=')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
        .ok_or_else(|| anyhow!("--build-context {spec:?}: expected NAME=VALUE"))?;
    let name = name.to_ascii_lowercase();
    if let Some(r) = value.strip_prefix("docker-image://") {
        r.parse::<oci::Reference>()
            .map_err(|e| anyhow!("--build-context {spec}: {e}"))?;
        return Ok((name, NamedContext::Image(r.to_owned())));
    }
    if let Some(rest) = value.strip_prefix("oci-layout://") {
        let (rest, digest) = match rest.split_once('@') {
            Some((d, digest)) => (d, Some(digest.to_owned())),
            None => (rest, None),
        };
        let (dir, tag) = match rest.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') && digest.is_none() => (d, Some(t.to_owned())),
            _ => (rest, None),
        };
        return Ok((
            name,
            NamedContext::OciLayout {
                dir: dir.to_owned(),
                tag,
                digest,
            },
        ));
    }
    bail!(
        "--build-context {spec}: only docker-image://REF and oci-layout://DIR[:TAG|@DIGEST] are supported \
         (a directory, git URL or tarball URL as a named context is not yet)"
    )
}

/// Resolves the `--build-context` flags: the map for `LowerOptions::named_images`; OCI layouts are
/// imported into `store` and pinned in `images`.
pub fn resolve(
    specs: &[String],
    images: &images::Images,
    store: &cache::Store,
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (name, ctx) = parse(spec)?;
        let reference = match ctx {
            NamedContext::Image(r) => r,
            NamedContext::OciLayout { dir, tag, digest } => {
                let loaded = images::import_layout_dir(store, Path::new(&dir), tag.as_deref())
                    .with_context(|| format!("--build-context {spec}"))?;
                let picked = match &digest {
                    Some(d) => loaded
                        .iter()
                        .find(|l| l.manifest.digest.to_string() == *d)
                        .ok_or_else(|| anyhow!("--build-context {spec}: {dir} has no manifest {d}"))?,
                    None if loaded.len() == 1 => &loaded[0],
                    None => bail!(
                        "--build-context {spec}: {dir} holds {} images; name one with :TAG or @DIGEST",
                        loaded.len()
                    ),
                };
                let shown = format!("oci-layout://{dir}@{}", picked.manifest.digest);
                images.pin(&shown, picked.manifest.clone())?;
                shown
            }
        };
        out.insert(name, reference);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_context_values_parse_as_buildx_spells_them() {
        assert_eq!(
            parse("base=docker-image://127.0.0.1:5000/busybox:1").unwrap(),
            (
                "base".into(),
                NamedContext::Image("127.0.0.1:5000/busybox:1".into())
            )
        );
        assert_eq!(
            parse("b=oci-layout:///srv/layout:v1").unwrap().1,
            NamedContext::OciLayout {
                dir: "/srv/layout".into(),
                tag: Some("v1".into()),
                digest: None
            }
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            parse(&format!("b=oci-layout://rel/dir@{d}")).unwrap().1,
            NamedContext::OciLayout {
                dir: "rel/dir".into(),
                tag: None,
                digest: Some(d)
            }
        );
        assert!(parse("nope")
            .unwrap_err()
            .to_string()
            .contains("NAME=VALUE"));
        assert!(parse("src=../dir")
            .unwrap_err()
            .to_string()
            .contains("not yet"));
    }
}
