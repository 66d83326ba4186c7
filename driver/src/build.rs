//! A build's flow: the pipeline of named steps (`pipeline`) for one platform, or for several through
//! `multiplatform`; `rbuild bake` runs it per target with its [`Extras`].

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use oci::{Platform, Reference};

use crate::pipeline::{
    attest_image, base_of, check, check_emulation, export_image, import_caches, lower, plan, push,
    read_dockerfile, report_cache_import, run_checks, solve, CacheExport,
};
use crate::progress::Progress;
use crate::request::BuildRequest;
use frontend::checks::{self, Call, Method};
use images::{Images, LazyClient};
use remotecache::CacheTo;

/// Runs one build; returns the image config digest (the image ID; the index digest for several
/// platforms), or `None` for `--check`.
pub fn build(
    req: &BuildRequest,
    store: Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
    progress: Progress,
) -> Result<Option<oci::Digest>> {
    Ok(build_with(req, store, rt, progress, Extras::default())?.0)
}

/// What `rbuild bake` adds to the build of one of its targets.
#[derive(Default)]
pub(crate) struct Extras {
    /// Names that resolve to images other targets of the run built (`target:` contexts).
    pub(crate) contexts: Vec<(String, images::ResolvedImage)>,
    /// The cancel flag shared with the other targets (one failure stops them all).
    pub(crate) cancel: Option<Arc<solver::Cancel>>,
    /// The `--jobs` limit shared with the other targets.
    pub(crate) slots: Option<Arc<solver::Slots>>,
    /// See [`Plan::remember`](crate::pipeline::Plan::remember).
    pub(crate) remember: Option<String>,
}

/// [`build`] with bake's [`Extras`]; returns the ID (as `build`) and, for one platform, the image.
pub(crate) fn build_with(
    req: &BuildRequest,
    store: Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
    progress: Progress,
    extras: Extras,
) -> Result<(Option<oci::Digest>, Option<export::Image>)> {
    let started = crate::attest::now();
    let mut plan = plan(req)?;
    plan.shared = (extras.cancel.unwrap_or_default(), extras.slots);
    plan.remember = extras.remember;
    let call = Call::parse(&req.call, req.check).map_err(|e| anyhow!(e))?;
    let source = read_dockerfile(
        req,
        call.method == Method::Check,
        &plan.build_args,
        &store,
        rt,
        &progress,
    )?;
    let platforms = Platform::targets(&req.platforms);
    let client = Arc::new(LazyClient::new(req.registry.clone()));
    let images = Arc::new(
        Images::new(
            Arc::clone(&store),
            Arc::clone(&client),
            rt.handle().clone(),
            platforms[0].clone(),
        )
        .with_pull(req.pull),
    );
    for (name, image) in extras.contexts {
        images.preset(&name, image);
    }
    if matches!(call.method, Method::Outline | Method::Targets) {
        let target = req.target.as_deref();
        progress.data(
            &checks::describe(&call, &source.parsed, &plan.build_args, target)
                .map_err(|e| anyhow!(e))?,
        );
        return Ok((None, None));
    }
    if call.method == Method::Check {
        return Ok((check(&call, &plan, &source, req, &images, &progress)?, None));
    }
    let mut targets = Vec::new();
    for p in &platforms {
        targets.push(lower(&plan, &source, req, &images, p, &progress)?);
    }
    let report = run_checks(&plan, &source, req, &images, false)?;
    if let Some(e) = report.error() {
        progress.check_warnings(&report);
        bail!(e);
    }
    check_emulation(&targets, &source)?;
    if platforms.len() > 1 {
        export::check_index_outputs(&plan.outputs)?;
        let id = crate::multiplatform::build(
            req, &plan, &source, &platforms, &targets, &store, &images, &client, rt, &progress,
        )?;
        progress.check_warnings(&report);
        return Ok((id, None));
    }
    let lowered = &targets[0];
    progress.attach(&lowered.graph);
    let stage = &lowered.stages[lowered.target];
    let remote = Arc::new(import_caches(
        &plan, &store, &client, rt, &images, &progress,
    ));
    let solved = solve(
        req, &plan, &source, lowered, &store, &images, &client, rt, &remote, &progress, 1, None,
    )?;
    let mut export_opts = plan.export_opts.clone();
    export_opts.base = base_of(lowered, stage, &images);
    if plan.cache_to.contains(&CacheTo::Inline) {
        export_opts.inline_cache =
            remotecache::inline_value(&solved.solved, &lowered.graph, stage.head);
    }
    let image = export_image(
        &plan,
        stage,
        &solved.solved,
        &export_opts,
        &store,
        &remote,
        &progress,
        true,
    )?;
    let id = image.config_digest.clone();
    let attested = attest_image(
        req,
        &plan,
        &source,
        lowered,
        &solved.solved,
        &images,
        &images.platform,
        &image,
        &store,
        started,
        &progress,
    )?;
    let names: Vec<String> = plan.tags.iter().map(Reference::familiar).collect();
    for output in plan
        .outputs
        .iter()
        .filter(|o| !matches!(o, export::Output::Image { .. }))
    {
        let task = progress.task(format!("exporting to {}", output.kind()));
        let attached: Vec<_> = attested
            .iter()
            .map(|a| a.attachment(&image.manifest_desc))
            .collect();
        let written = export::write_output(&store, &image, &names, output, &attached);
        let written = match (written, &attested, output) {
            (Ok(said), Some(a), export::Output::Local { dest }) => {
                a.write_beside(dest).map(|()| said).map_err(Into::into)
            }
            (w, ..) => w,
        };
        match written {
            Ok(said) => task.status(said.as_deref().unwrap_or("done")),
            Err(e) => {
                task.fail(&format!("{e:#}"));
                return Err(e);
            }
        }
    }
    push(
        &plan,
        &store,
        &client,
        rt,
        &remote,
        solved.eager.as_deref(),
        &image,
        attested.as_ref().map(|a| (a, &images.platform)),
        &progress,
    )?;
    for to in &plan.cache_to {
        let job = CacheExport {
            to,
            store: &store,
            remote: &remote,
            client: &client,
            rt,
        };
        job.run(
            &[(&lowered.graph, stage.head, &solved.solved)],
            &export_opts,
            &progress,
        )?;
    }
    report_cache_import(&remote, &solved, &progress)?;
    progress.finish();
    progress.check_warnings(&report);
    if let Some(path) = &req.iidfile {
        fs_err::write(path, id.to_string())?;
    }
    if let Some(path) = &req.metadata_file {
        let full: Vec<String> = plan.tags.iter().map(Reference::to_string).collect();
        export::write_metadata(path, &image, &full)?;
    }
    if req.quiet {
        progress.data(&format!("{id}\n"));
    }
    Ok((Some(id), Some(image)))
}
