//! `--build-context NAME=VALUE`: named contexts that stand in for `FROM NAME`, `COPY --from=NAME` and
//! `RUN --mount=from=NAME`, as buildx spells them.
//!
//! Every kind becomes an image reference the frontend substitutes for NAME (see
//! `frontend::LowerOptions::named_images`), so the solver keys it by manifest digest like any base:
//! `docker-image://REF` is REF itself; `oci-layout://DIR[:TAG|@sha256:…]` is copied into the store
//! (blobs only, no tag) and pinned in [`images::Images`] under its own spelling for this build. A
//! directory, git URL or tarball URL becomes a one-layer image of its files (mtimes clamped to 0, so
//! the key follows the content, not when the files were touched), made in the store and pinned alike.
//! A directory's own `.dockerignore` leaves files out of it, as BuildKit does for local named contexts.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
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
    /// A directory, git URL or tarball URL: its files.
    Files(crate::ContextSource),
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
    let source = crate::ContextSource::parse(value, false)
        .map_err(|e| anyhow!("--build-context {spec}: {e}"))?;
    if source == crate::ContextSource::Stdin {
        bail!("--build-context {spec}: a named context cannot be read from stdin");
    }
    Ok((name, NamedContext::Files(source)))
}

/// A one-layer image of the files under `dir` in the store (mtimes clamped to 0); its manifest.
fn image_of_dir(store: &cache::Store, dir: &Path) -> Result<oci::Descriptor> {
    let lopts = oci::LayerOptions {
        compression: oci::Compression::Gzip,
        level: None,
        source_date_epoch: Some(0),
        threads: None,
    };
    let layer = images::write_layer_blob(store, |w| {
        oci::write_layer(dir, w, &lopts).with_context(|| format!("reading {}", dir.display()))
    })?;
    let mut config = oci::ImageConfig::scratch();
    config.rootfs.diff_ids = vec![layer.diff_id.clone()];
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = store.put_blob(&config_bytes)?;
    let manifest = oci::Manifest {
        schema_version: 2,
        media_type: Some(oci::media_type::OCI_MANIFEST.to_owned()),
        config: oci::Descriptor::new(
            oci::media_type::OCI_CONFIG,
            config_digest,
            config_bytes.len() as u64,
        ),
        layers: vec![layer.blob],
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&manifest)?;
    let digest = store.put_blob(&bytes)?;
    Ok(oci::Descriptor::new(
        oci::media_type::OCI_MANIFEST,
        digest,
        bytes.len() as u64,
    ))
}

/// A copy of local directory `dir` in a scratch directory of the store (under `context/`) without
/// what its `.dockerignore` excludes; `None` when it has none. Current moby/buildkit reads only
/// `.dockerignore` at the root of a local named context (dockerui's `NamedContext`, case "local"),
/// never a `<Dockerfile>.dockerignore`; git and tarball named contexts are taken whole.
fn without_ignored(store: &cache::Store, dir: &Path) -> Result<Option<tempfile::TempDir>> {
    let ignore_file = dir.join(".dockerignore");
    let text = match fs_err::read_to_string(&ignore_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let ignore = frontend::DockerIgnore::parse(&text);
    let listed = crate::Context::load(dir, &ignore)?;
    let tmp = store.tmp_dir()?;
    let out = tmp.path().join("context");
    fs_err::create_dir(&out)?;
    fs_err::set_permissions(&out, fs_err::metadata(dir)?.permissions())?;
    for (rel, entry) in listed.below("") {
        let (from, to) = (dir.join(rel), out.join(rel));
        // A `!pattern` can bring back a file below an excluded (so unlisted) directory.
        if let Some(parent) = to.parent() {
            fs_err::create_dir_all(parent)?;
        }
        match entry.kind {
            crate::context::Kind::Dir => {
                fs_err::create_dir_all(&to)?;
                fs_err::set_permissions(&to, fs_err::metadata(&from)?.permissions())?;
            }
            crate::context::Kind::File => {
                fs_err::copy(&from, &to)?;
            }
            crate::context::Kind::Symlink => {
                fs_err::os::unix::fs::symlink(fs_err::read_link(&from)?, &to)?;
            }
        }
        // Owners as on disk, so the layer is the one the unfiltered directory would give.
        let meta = fs_err::symlink_metadata(&from)?;
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))
            .with_context(|| format!("chown {}", to.display()))?;
    }
    Ok(Some(tmp))
}

/// Resolves the `--build-context` flags: the map for `LowerOptions::named_images`; OCI layouts are
/// imported into `store` and pinned in `images`.
pub fn resolve(
    specs: &[String],
    images: &images::Images,
    store: &std::sync::Arc<cache::Store>,
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
            NamedContext::Files(source) => {
                let opener = crate::Opener {
                    store,
                    rt: &images.rt,
                    stdin: None,
                };
                let (mut root, _scratch) = opener
                    .open_tree(&source)
                    .with_context(|| format!("--build-context {spec}"))?;
                let mut _filtered = None;
                if matches!(source, crate::ContextSource::Dir(_)) {
                    if let Some(tmp) = without_ignored(store, &root)
                        .with_context(|| format!("--build-context {spec}"))?
                    {
                        root = tmp.path().join("context");
                        _filtered = Some(tmp);
                    }
                }
                let manifest = image_of_dir(store, &root)
                    .with_context(|| format!("--build-context {spec}"))?;
                let shown = format!("context://{name}@{}", manifest.digest);
                images.pin(&shown, manifest)?;
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
        assert_eq!(
            parse("src=../dir").unwrap().1,
            NamedContext::Files(crate::ContextSource::Dir("../dir".into()))
        );
        assert!(parse("src=-").unwrap_err().to_string().contains("stdin"));
    }
}
