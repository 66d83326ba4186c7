//! `rbuild build --platform A,B`: one graph per target platform, solved one after another with the same
//! store (a stage whose keys do not depend on the target platform, such as `FROM --platform=$BUILDPLATFORM`
//! without TARGET* args, runs once: the next platforms find it cached), one image each, and an image
//! index naming them all (docs/MULTIPLATFORM.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use oci::{Platform, Reference};

use crate::cli::BuildArgs;
use crate::cmd::build::{
    base_of, export_image, import_caches, report_cache_import, solve, Plan, Source,
};
use crate::progress::Progress;
use images::{Images, LazyClient};
use remotecache::CacheTo;

/// Builds every platform of `targets` and writes the index to the tags, outputs and registries.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    args: &BuildArgs,
    plan: &Plan,
    source: &Source,
    platforms: &[Platform],
    targets: &[frontend::Lowered],
    store: &Arc<cache::Store>,
    images: &Arc<Images>,
    client: &Arc<LazyClient>,
    rt: &tokio::runtime::Runtime,
    progress: &Progress,
) -> Result<Option<oci::Digest>> {
    let remote = Arc::new(import_caches(plan, store, client, rt, images, progress));
    let mut built = Vec::new();
    let mut solves = Vec::new();
    for (platform, lowered) in platforms.iter().zip(targets) {
        progress.attach_as(&lowered.graph, &format!("[{platform}] "));
        let solved = solve(
            args, plan, source, lowered, store, images, client, rt, &remote, progress, false,
        )?;
        let stage = &lowered.stages[lowered.target];
        let mut export_opts = plan.export_opts.clone();
        export_opts.base = base_of(lowered, stage, images);
        if plan.cache_to.contains(&CacheTo::Inline) {
            export_opts.inline_cache =
                remotecache::inline_value(&solved.solved, &lowered.graph, stage.head);
        }
        let image = export_image(
            plan,
            stage,
            &solved.solved,
            &export_opts,
            store,
            &remote,
            progress,
            false,
        )?;
        report_cache_import(&remote, &solved, progress)?;
        built.push((platform.clone(), image));
        solves.push(solved);
    }
    let entries: Vec<_> = built
        .iter()
        .map(|(p, i)| (p.clone(), i.manifest_desc.clone()))
        .collect();
    let index = export::build_index(&entries, plan.export_opts.oci_mediatypes, BTreeMap::new())?;
    index.store(store)?;
    let task = progress.task("exporting image index");
    task.status(&format!(
        "writing image index {} ({})",
        index.desc.digest,
        index.platforms().join(", ")
    ));
    let complete = built
        .iter()
        .all(|(_, i)| i.manifest.layers.iter().all(|l| store.has_blob(&l.digest)));
    for t in plan.tags.iter().filter(|_| complete) {
        store.set_tag(&t.familiar(), &index.desc)?;
        task.status(&format!("naming to {}", t.familiar()));
    }
    let names: Vec<String> = plan.tags.iter().map(Reference::familiar).collect();
    let refs: Vec<(Platform, &export::Image)> = built.iter().map(|(p, i)| (p.clone(), i)).collect();
    for output in plan
        .outputs
        .iter()
        .filter(|o| !matches!(o, export::Output::Image { .. }))
    {
        let task = progress.task(format!("exporting to {}", output.kind()));
        match export::write_index_output(store, &refs, &index, &names, output) {
            Ok(said) => task.status(said.as_deref().unwrap_or("done")),
            Err(e) => {
                task.fail(&format!("{e:#}"));
                return Err(e);
            }
        }
    }
    if plan.push {
        if plan.tags.is_empty() {
            bail!("--push needs a -t NAME that names the registry");
        }
        let only: Vec<&export::Image> = built.iter().map(|(_, i)| i).collect();
        for t in &plan.tags {
            let task = progress.task(format!("pushing {}", t.familiar()));
            let pushed = rt.block_on(export::push_index(
                client.get()?,
                store,
                remote.as_ref(),
                None,
                &only,
                &index,
                &plan.push_target(t),
            ));
            match pushed {
                Ok(d) => {
                    task.status(&format!("pushed {}@{d}", t.familiar()));
                    println!("{}@{d}", t.name());
                }
                Err(e) => {
                    task.fail(&format!("{e:#}"));
                    return Err(e);
                }
            }
        }
    }
    for to in plan.cache_to.iter().filter(|t| **t != CacheTo::Inline) {
        let shown = to.label();
        let task = progress.task(format!("exporting cache to {shown}"));
        let started = std::time::Instant::now();
        let all: Vec<_> = targets
            .iter()
            .zip(&solves)
            .map(|(l, s)| (&l.graph, l.stages[l.target].head, &s.solved))
            .collect();
        let exported = remotecache::export_all(
            to,
            store,
            &remote,
            client,
            rt.handle(),
            &all,
            plan.export_opts.compression,
        );
        match exported {
            Ok(s) => task.status(&s.describe(&shown, started.elapsed().as_secs_f64())),
            Err(e) if to.ignores_errors() => {
                task.fail("failed");
                progress.warning(&format!(
                    "cache export to {shown} failed (ignore-error=true): {e:#}"
                ));
            }
            Err(e) => {
                task.fail(&format!("{e:#}"));
                return Err(e.context(format!("exporting the cache to {shown}")));
            }
        }
    }
    progress.finish();
    let id = index.desc.digest.clone();
    if let Some(path) = &args.iidfile {
        fs_err::write(path, id.to_string())?;
    }
    if let Some(path) = &args.metadata_file {
        let full: Vec<String> = plan.tags.iter().map(Reference::to_string).collect();
        export::write_index_metadata(path, &index, &full)?;
    }
    if args.quiet {
        println!("{id}");
    }
    Ok(Some(id))
}
