//! `rbuild bake`'s run: the targets (resolved by the `bake` crate, each turned into a [`BuildRequest`] by
//! the binary) built by the build pipeline, all at once in this process over one store.
//!
//! Concurrent solves rather than one merged graph: each target has its own context, Dockerfile, secrets
//! and outputs, and a build graph has one context. Solves running together over one store still run each
//! step with the same cache key once: the solver's per-key lock (#19) lets the first run it while the others
//! wait and take its record (shown `CACHED`). A `target:` context is built before the targets naming it,
//! and its image is what their `FROM name` resolves to. One cancel flag is shared by all solves, so the
//! first failure stops the others (`--keep-going` gives each its own).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use bake::schedule::Outcome;

use crate::build::{build_with, Extras};
use crate::progress::Progress;
use crate::request::BuildRequest;

/// How the targets of one `rbuild bake` run together.
#[derive(Debug, Clone, Copy, Default)]
pub struct BakeOptions {
    /// `--jobs`: steps that may run at once, all targets together (default 8).
    pub jobs: Option<usize>,
    /// `--keep-going`: a failure does not stop the other targets.
    pub keep_going: bool,
}

/// What became of each target, in build order: the image it built (`None`: an image index).
pub type Outcomes = Vec<(
    String,
    Outcome<Option<images::ResolvedImage>, anyhow::Error>,
)>;

/// Builds the targets of `order` (each needs first), target `name` from `requests[name]`, its progress
/// from `progress(name, numbers)` (the vertex numbers shared by all targets).
pub fn run(
    resolved: &bake::Resolved,
    order: &[String],
    requests: &HashMap<String, BuildRequest>,
    options: BakeOptions,
    store: &Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
    progress: &(dyn Fn(&str, Arc<AtomicUsize>) -> Progress + Sync),
) -> Outcomes {
    let numbers = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(solver::Cancel::default());
    // One --jobs for the whole run: the targets' steps share it.
    let slots = Arc::new(solver::Slots::new(options.jobs.unwrap_or(8)));
    let keep_going = options.keep_going;
    bake::schedule::run(
        order,
        |name| {
            let t = &resolved.targets[name];
            t.target_contexts()
                .iter()
                .map(|(_, d)| (*d).to_owned())
                .collect()
        },
        || !keep_going && shared.is_cancelled(),
        |name, built: HashMap<String, Option<images::ResolvedImage>>| {
            let req = &requests[name];
            let mut contexts = Vec::new();
            for (ctx, dep) in resolved.targets[name].target_contexts() {
                let image = built[dep].clone().ok_or_else(|| {
                    anyhow!("target {dep:?} is a context of {name:?}: it must build one platform")
                })?;
                contexts.push((ctx.to_owned(), image));
            }
            let extras = Extras {
                contexts,
                slots: Some(Arc::clone(&slots)),
                cancel: Some(if keep_going {
                    Arc::default()
                } else {
                    Arc::clone(&shared)
                }),
                remember: req.tags.is_empty().then(|| {
                    let dir = std::path::absolute(&req.context)
                        .map_or_else(|_| req.context.clone(), |d| d.display().to_string());
                    format!("bake-target {dir}#{name}")
                }),
            };
            let progress = progress(name, Arc::clone(&numbers));
            let built = build_with(req, Arc::clone(store), rt, progress, extras)
                .and_then(|(_, image)| image.map(|i| image_of(store, i)).transpose());
            if built.is_err() && !keep_going {
                shared.cancel();
            }
            built
        },
    )
}

/// The image a target built, as a `FROM` of another target resolves it.
fn image_of(store: &cache::Store, image: export::Image) -> Result<images::ResolvedImage> {
    let config = serde_json::from_slice(&store.read_blob(&image.manifest.config.digest)?)?;
    Ok(images::ResolvedImage {
        reference: None,
        manifest_desc: image.manifest_desc,
        manifest: image.manifest,
        config,
    })
}
