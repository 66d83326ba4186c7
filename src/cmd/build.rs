//! `rbuild build`: the pipeline of named steps (`pipeline`) for one platform, or for several through
//! `multiplatform`; `rbuild bake` runs it per target with its [`Extras`].

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use oci::{Platform, Reference};

use crate::cli::BuildArgs;
use crate::cmd::pipeline::{
    attest_image, base_of, check, check_emulation, export_image, import_caches, lower, mode, plan,
    push, read_dockerfile, report_cache_import, run_checks, solve, CacheExport,
};
use crate::progress::Progress;
use frontend::checks::{self, Call, Method};
use images::{Images, LazyClient};
use remotecache::CacheTo;

pub(crate) use crate::cmd::pipeline::Status;

/// Runs one build; returns the image config digest (the image ID; the index digest for several
/// platforms), or `None` for `--check`.
pub(crate) fn build(
    args: &BuildArgs,
    store: Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
) -> Result<Option<oci::Digest>> {
    Ok(build_with(args, store, rt, Extras::default())?.0)
}

/// What `rbuild bake` adds to the build of one of its targets.
#[derive(Default)]
pub(crate) struct Extras {
    /// The target's progress (its name in every line); `None`: one made from the flags.
    pub(crate) progress: Option<Progress>,
    /// Names that resolve to images other targets of the run built (`target:` contexts).
    pub(crate) contexts: Vec<(String, images::ResolvedImage)>,
    /// The cancel flag shared with the other targets (one failure stops them all).
    pub(crate) cancel: Option<Arc<solver::Cancel>>,
    /// The `--jobs` limit shared with the other targets.
    pub(crate) slots: Option<Arc<solver::Slots>>,
    /// See [`Plan::remember`](crate::cmd::pipeline::Plan::remember).
    pub(crate) remember: Option<String>,
}

/// [`build`] with bake's [`Extras`]; returns the ID (as `build`) and, for one platform, the image.
pub(crate) fn build_with(
    args: &BuildArgs,
    store: Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
    extras: Extras,
) -> Result<(Option<oci::Digest>, Option<export::Image>)> {
    let started = crate::cmd::attest::now();
    let progress = extras.progress.unwrap_or_else(|| Progress::new(mode(args)));
    let mut plan = plan(args)?;
    plan.shared = (extras.cancel.unwrap_or_default(), extras.slots);
    plan.remember = extras.remember;
    let call = Call::parse(&args.call, args.check).map_err(|e| anyhow!(e))?;
    let source = read_dockerfile(
        args,
        call.method == Method::Check,
        &plan.build_args,
        &store,
        rt,
    )?;
    let platforms = Platform::targets(&args.platforms);
    let client = Arc::new(LazyClient::new(
        args.registry.client_options(&args.insecure_registries),
    ));
    let images = Arc::new(
        Images::new(
            Arc::clone(&store),
            Arc::clone(&client),
            rt.handle().clone(),
            platforms[0].clone(),
        )
        .with_pull(args.pull),
    );
    for (name, image) in extras.contexts {
        images.preset(&name, image);
    }
    if matches!(call.method, Method::Outline | Method::Targets) {
        let target = args.target.as_deref();
        print!(
            "{}",
            checks::describe(&call, &source.parsed, &plan.build_args, target)
                .map_err(|e| anyhow!(e))?
        );
        return Ok((None, None));
    }
    if call.method == Method::Check {
        return Ok((
            check(&call, &plan, &source, args, &images, &progress)?,
            None,
        ));
    }
    let mut targets = Vec::new();
    for p in &platforms {
        targets.push(lower(&plan, &source, args, &images, p, &progress)?);
    }
    let report = run_checks(&plan, &source, args, &images, false)?;
    if let Some(e) = report.error() {
        progress.check_warnings(&report);
        bail!(e);
    }
    check_emulation(&targets, &source)?;
    if platforms.len() > 1 {
        export::check_index_outputs(&plan.outputs)?;
        let id = crate::cmd::multiplatform::build(
            args, &plan, &source, &platforms, &targets, &store, &images, &client, rt, &progress,
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
        args, &plan, &source, lowered, &store, &images, &client, rt, &remote, &progress, 1, None,
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
        args,
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
        let written = export::write_output(&store, &image, &names, output);
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
    if let Some(path) = &args.iidfile {
        fs_err::write(path, id.to_string())?;
    }
    if let Some(path) = &args.metadata_file {
        let full: Vec<String> = plan.tags.iter().map(Reference::to_string).collect();
        export::write_metadata(path, &image, &full)?;
    }
    if args.quiet {
        println!("{id}");
    }
    Ok((Some(id), Some(image)))
}
