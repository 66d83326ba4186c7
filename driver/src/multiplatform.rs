//! A build for several `--platform`s: one graph per target platform, solved together on the same store (a
//! stage whose keys do not depend on the target platform, such as `FROM --platform=$BUILDPLATFORM` without
//! TARGET* req, runs once), one image each, and an image index naming them all (docs/MULTIPLATFORM.md).

use std::sync::Arc;

use anyhow::{bail, Result};
use oci::{Platform, Reference};

use crate::pipeline::{
    attest_image, base_of, export_image, import_caches, report_cache_import, solve, CacheExport,
    Plan, Source,
};
use crate::progress::Progress;
use crate::request::BuildRequest;
use images::{Images, LazyClient};
use remotecache::CacheTo;

/// Builds every platform of `targets` and writes the index to the tags, outputs and registries.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    req: &BuildRequest,
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
    let started = crate::attest::now();
    let remote = Arc::new(import_caches(plan, store, client, rt, images, progress));
    // The platforms' graphs run at the same time, sharing --jobs; a step two of them share (a
    // $BUILDPLATFORM stage) runs once: the other waits on its cache key's lock and takes the record.
    let graphs: Vec<_> = platforms
        .iter()
        .zip(targets)
        .map(|(p, l)| (&l.graph, format!("[{p}] ")))
        .collect();
    progress.attach_all(&graphs);
    // One platform failing cancels the others; under --no-cache a shared step still runs once.
    let shared = Arc::new(solver::Shared::default());
    let results: Vec<Result<_>> = std::thread::scope(|s| {
        let running: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(k, lowered)| {
                let remote = &remote;
                let shared = Arc::clone(&shared);
                s.spawn(move || {
                    solve(
                        req,
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
                        Some(shared),
                    )
                })
            })
            .collect();
        running
            .into_iter()
            .map(|t| t.join().expect("a solve thread panicked"))
            .collect()
    });
    let solves = first_failure(results, platforms)?;
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
            req,
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
    let (images_built, attested): (Vec<_>, Vec<_>) = built
        .into_iter()
        .map(|(p, i, a)| ((p.clone(), i.clone()), a.map(|a| (i, p, a))))
        .unzip();
    let attested: Vec<_> = attested.into_iter().flatten().collect();
    let built = export::Built::index(store, images_built, plan.export_opts.oci_mediatypes)?;
    let task = progress.task("exporting image index");
    let (digest, platforms) = (&built.descriptor().digest, built.platforms().join(", "));
    task.status(&format!("writing image index {digest} ({platforms})"));
    for t in plan.tags.iter().filter(|_| built.complete(store)) {
        store.set_tag(&t.familiar(), built.descriptor())?;
        task.status(&format!("naming to {}", t.familiar()));
    }
    // Every platform's RUN layers went up while written; the index push waits for all of them.
    let eager = solves
        .iter()
        .filter_map(|s| s.eager.as_deref())
        .reduce(|a, b| {
            a.absorb(b);
            a
        });
    deliver(
        plan, store, client, rt, &remote, &built, &attested, eager, progress,
    )?;
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
    report_id(req, plan, &built, progress)
}

/// The solves' results, or the error of the platform that failed (the others were cancelled by it),
/// named after that platform.
fn first_failure<T>(results: Vec<Result<T>>, platforms: &[Platform]) -> Result<Vec<T>> {
    // A solve stopped by another's failure fails with "cancelled" (as in `rbuild bake`).
    let cancelled = |e: &anyhow::Error| format!("{e:#}").ends_with("cancelled");
    let failed = results
        .iter()
        .position(|r| r.as_ref().is_err_and(|e| !cancelled(e)))
        .or_else(|| results.iter().position(Result::is_err));
    let Some(k) = failed else {
        return Ok(results
            .into_iter()
            .map(|r| r.expect("no failure"))
            .collect());
    };
    let e = results
        .into_iter()
        .nth(k)
        .and_then(Result::err)
        .expect("failed");
    let prefix = format!("[{}] ", platforms[k]);
    Err(match e.downcast::<crate::diagnostics::SourceError>() {
        Ok(d) => anyhow::Error::new(d.prefixed(&prefix)),
        Err(e) => e.context(prefix.trim_end().to_owned()),
    })
}

/// The outputs besides the local store's, then `--push`: every image by digest and the index to each
/// tag's registry; prints `NAME@DIGEST` on stdout for each.
#[allow(clippy::too_many_arguments)]
fn deliver(
    plan: &Plan,
    store: &cache::Store,
    client: &LazyClient,
    rt: &tokio::runtime::Runtime,
    remote: &remotecache::Remote,
    built: &export::Built,
    attested: &[(export::Image, Platform, attest::Attested)],
    eager: Option<&export::EagerPush>,
    progress: &Progress,
) -> Result<()> {
    let names: Vec<String> = plan.tags.iter().map(Reference::familiar).collect();
    let others = plan.outputs.iter();
    for output in others.filter(|o| !matches!(o, export::Output::Image { .. })) {
        let task = progress.task(format!("exporting to {}", output.kind()));
        let attached: Vec<_> = attested
            .iter()
            .map(|(i, _, a)| a.attachment(&i.manifest_desc))
            .collect();
        let written = built.write_output(store, &names, output, &attached);
        // As BuildKit's local exporter: each platform's attestations in its own directory.
        let written = match (written, output) {
            (Ok(said), export::Output::Local { dest }) => attested
                .iter()
                .try_for_each(|(_, p, a)| a.write_beside(&dest.join(export::platform_dir(p))))
                .map(|()| said)
                .map_err(Into::into),
            (w, _) => w,
        };
        match written {
            Ok(said) => task.status(said.as_deref().unwrap_or("done")),
            Err(e) => {
                task.fail(&format!("{e:#}"));
                return Err(e);
            }
        }
    }
    if !plan.push {
        return Ok(());
    }
    if plan.tags.is_empty() {
        bail!("--push needs a -t NAME that names the registry");
    }
    for t in &plan.tags {
        let task = progress.task(format!("pushing {}", t.familiar()));
        let t = &plan.push_target(t);
        let pushed = rt.block_on(built.push(client.get()?, store, remote, eager, t));
        // Each platform image's attestations: its referrers, or BuildKit's index layout.
        let pushed = pushed.and_then(|d| match (built, attested.is_empty()) {
            (export::Built::Index { index, .. }, false) => {
                let each: Vec<_> = attested.iter().map(|(i, p, a)| (i, p, a)).collect();
                crate::attest::push_platforms(client.get()?, store, rt, t, &index.bytes, &each)
            }
            _ => Ok(d),
        });
        match pushed {
            Ok(d) => {
                task.status(&format!("pushed {}@{d}", t.familiar()));
                progress.data(&format!("{}@{d}\n", t.name()));
            }
            Err(e) => {
                task.fail(&format!("{e:#}"));
                return Err(e);
            }
        }
    }
    Ok(())
}

/// `--iidfile`, `--metadata-file` and `--quiet`: the index digest.
fn report_id(
    req: &BuildRequest,
    plan: &Plan,
    built: &export::Built,
    progress: &Progress,
) -> Result<Option<oci::Digest>> {
    let id = built.id().clone();
    if let Some(path) = &req.iidfile {
        fs_err::write(path, id.to_string())?;
    }
    if let Some(path) = &req.metadata_file {
        let full: Vec<String> = plan.tags.iter().map(Reference::to_string).collect();
        built.write_metadata(path, &full)?;
    }
    if req.quiet {
        progress.data(&format!("{id}\n"));
    }
    Ok(Some(id))
}
