//! `rbuild build --platform A,B`: one graph per target platform, solved together on the same store (a
//! stage whose keys do not depend on the target platform, such as `FROM --platform=$BUILDPLATFORM` without
//! TARGET* args, runs once), one image each, and an image index naming them all (docs/MULTIPLATFORM.md).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Result};
use oci::{Platform, Reference};

use crate::cli::BuildArgs;
use crate::cmd::build::{
    attest_image, base_of, export_image, import_caches, report_cache_import, solve, CacheExport,
    Plan, Source,
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
    let started = crate::cmd::attest::now();
    let remote = Arc::new(import_caches(plan, store, client, rt, images, progress));
    // The platforms' graphs run at the same time, sharing --jobs; a step two of them share (a
    // $BUILDPLATFORM stage) runs once: the other waits on its cache key's lock and takes the record.
    let graphs: Vec<_> = platforms
        .iter()
        .zip(targets)
        .map(|(p, l)| (&l.graph, format!("[{p}] ")))
        .collect();
    progress.attach_all(&graphs);
    let solves: Vec<_> = std::thread::scope(|s| {
        let running: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(k, lowered)| {
                let remote = &remote;
                s.spawn(move || {
                    solve(
                        args,
                        plan,
                        source,
                        lowered,
                        store,
                        images,
                        client,
                        rt,
                        remote,
                        &progress.for_graph(k),
                        targets.len(),
                    )
                })
            })
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("a solve thread panicked"))
            .collect::<Result<_>>()
    })?;
    let mut built = Vec::new();
    for ((platform, lowered), solved) in platforms.iter().zip(targets).zip(&solves) {
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
        report_cache_import(&remote, solved, progress)?;
        let attested = attest_image(
            args,
            plan,
            source,
            lowered,
            &solved.solved,
            images,
            platform,
            &image,
            store,
            started,
            progress,
        )?;
        built.push((platform.clone(), image, attested));
    }
    let entries: Vec<_> = built
        .iter()
        .map(|(p, i, _)| (p.clone(), i.manifest_desc.clone()))
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
        .all(|(_, i, _)| i.manifest.layers.iter().all(|l| store.has_blob(&l.digest)));
    for t in plan.tags.iter().filter(|_| complete) {
        store.set_tag(&t.familiar(), &index.desc)?;
        task.status(&format!("naming to {}", t.familiar()));
    }
    let names: Vec<String> = plan.tags.iter().map(Reference::familiar).collect();
    let refs: Vec<(Platform, &export::Image)> =
        built.iter().map(|(p, i, _)| (p.clone(), i)).collect();
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
        let only: Vec<&export::Image> = built.iter().map(|(_, i, _)| i).collect();
        let attested: Vec<_> = built
            .iter()
            .filter_map(|(p, i, a)| Some((i, p, a.as_ref()?)))
            .collect();
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
            let pushed = pushed.and_then(|d| {
                if attested.is_empty() {
                    return Ok(d);
                }
                let dest = plan.push_target(t);
                let bytes = &index.bytes;
                crate::cmd::attest::push_platforms(
                    client.get()?,
                    store,
                    rt,
                    &dest,
                    bytes,
                    &attested,
                )
            });
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
    let all: Vec<_> = targets
        .iter()
        .zip(&solves)
        .map(|(l, s)| (&l.graph, l.stages[l.target].head, &s.solved))
        .collect();
    for to in &plan.cache_to {
        let job = CacheExport {
            to,
            store,
            remote: &remote,
            client,
            rt,
        };
        job.run(&all, &plan.export_opts, progress)?;
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
