//! The named steps of a build — request → Dockerfile → lowering → cache import → solve → image →
//! outputs and pushes → cache export — each telling the user what it does through [`Progress`]; the
//! single- and multi-platform flows (`build`, `multiplatform`) call them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use oci::{Platform, Reference};

use crate::diagnostics;
use crate::progress::Progress;
use crate::request::{BuildRequest, Network};
use crate::specs;
use exec::{BuildWorker, Context};
use frontend::checks::{self, Call};
use images::{BlobSource, Images, LazyClient};
use remotecache::{CacheFrom, CacheTo, LayeredRecords, Remote};

/// Base-image configs for lowering, resolved through [`Images`].
struct Bases<'a>(&'a Images);

impl frontend::BaseImages for Bases<'_> {
    fn config(&mut self, reference: &str) -> Result<oci::ImageConfig, frontend::BoxError> {
        Ok(self.0.resolve(reference)?.config)
    }
    fn config_for(
        &mut self,
        reference: &str,
        platform: &Platform,
    ) -> Result<oci::ImageConfig, frontend::BoxError> {
        Ok(self.0.resolve_for(reference, platform)?.config)
    }
}

/// What the flags ask for, checked before anything runs.
pub(crate) struct Plan {
    pub(crate) outputs: Vec<export::Output>,
    pub(crate) cache_to: Vec<CacheTo>,
    cache_from: Vec<CacheFrom>,
    pub(crate) push: bool,
    /// `push-by-digest=true`: pushes name no tag (`name@sha256:…`).
    pub(crate) by_digest: bool,
    pub(crate) tags: Vec<Reference>,
    pub(crate) build_args: BTreeMap<String, String>,
    pub(crate) export_opts: export::ExportOptions,
    /// `rbuild bake`: the cancel flag and `--jobs` limit shared with the other targets' solves.
    pub(crate) shared: (Arc<solver::Cancel>, Option<Arc<solver::Slots>>),
    /// `rbuild bake`: a store record naming the last image of an untagged build (a dependency target),
    /// so that it keeps its digest when only the build time would change, as a tagged one does.
    pub(crate) remember: Option<String>,
    attest: Option<attest::Wanted>,
}

/// The Dockerfile, read and parsed.
pub(crate) struct Source {
    pub(crate) label: String,
    pub(crate) text: String,
    pub(crate) parsed: frontend::Dockerfile,
    context: exec::OpenContext,
}

/// After the solve: what an imported cache gave (`cache import: N blobs downloaded …`).
pub(crate) fn report_cache_import(
    remote: &Remote,
    solved: &Solved,
    progress: &Progress,
) -> Result<()> {
    if !remote.is_empty() {
        let kept = solved.records.keep_used(&solved.solved)?;
        let fetched = remote.stats();
        progress.info(&format!(
            "cache import: {} blobs downloaded ({}), {kept} records kept in the local store",
            fetched.blobs,
            images::human_size(fetched.bytes)
        ));
    }
    Ok(())
}

/// Fails before any step runs when a RUN is for an architecture the host neither runs nor emulates.
pub(crate) fn check_emulation(targets: &[frontend::Lowered], source: &Source) -> Result<()> {
    let dir = Path::new(runner::binfmt::BINFMT_DIR);
    let runs = targets.iter().flat_map(frontend::Lowered::run_platforms);
    let runs = runs.map(|(p, span)| (p.architecture.clone(), (p, span)));
    if let Some((arch, (platform, span))) = runner::binfmt::first_unemulated(dir, runs)? {
        let (message, help) = runner::binfmt::missing_handler(&platform.to_string(), &arch, dir);
        let help = Some(help);
        let d = frontend::Diagnostic {
            message,
            span,
            help,
        };
        bail!(diagnostics::from_frontend(
            &source.label,
            &source.text,
            &[d]
        ));
    }
    Ok(())
}

/// Checks every flag that names an output, a cache, a tag or an export option.
pub(crate) fn plan(req: &BuildRequest) -> Result<Plan> {
    let mut outputs = export::Output::parse_all(&req.outputs)?;
    if req.load {
        outputs.push(export::Output::DockerEngine { names: Vec::new() });
    }
    // Checked before building, so that a typo does not cost a whole build (see: #19).
    for (flag, path) in [
        ("--iidfile", &req.iidfile),
        ("--metadata-file", &req.metadata_file),
    ] {
        if let Some(path) = path {
            export::require_parent_dir(flag, path)?;
        }
    }
    let cache_to = req
        .cache_to
        .iter()
        .map(|s| CacheTo::parse(s))
        .collect::<Result<_>>()?;
    let cache_from = req
        .cache_from
        .iter()
        .map(|s| CacheFrom::parse(s))
        .collect::<Result<_>>()?;
    let push = req.push || outputs.iter().any(export::Output::pushes);
    let by_digest = outputs.iter().any(export::Output::by_digest);
    let tags = req
        .tags
        .iter()
        .chain(outputs.iter().flat_map(export::Output::image_names))
        .map(|t| t.parse::<Reference>().map_err(|e| anyhow!("-t {t:?}: {e}")))
        .collect::<Result<_>>()?;
    let mut build_args = BTreeMap::new();
    for kv in &req.build_args {
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_owned(), v.to_owned()),
            // `--build-arg NAME` takes the value from the environment, as docker does.
            None => std::env::var(kv)
                .ok()
                .and_then(|v| build_args.insert(kv.clone(), v)),
        };
    }
    let compression = req.compression;
    let export_opts = export::ExportOptions {
        compression,
        level: specs::compression_level(compression, req.compression_level)?,
        force_compression: req.force_compression,
        oci_mediatypes: req.oci_mediatypes,
        labels: specs::key_values("--label", &req.labels)?,
        annotations: specs::key_values("--annotation", &req.annotations)?,
        source_date_epoch: specs::source_date_epoch(&build_args)?,
        rewrite_timestamp: req.rewrite_timestamp,
        base: None,
        inline_cache: None,
        squash: req.squash,
    };
    Ok(Plan {
        attest: crate::attest::wanted(&req.attest)?,
        outputs,
        cache_to,
        cache_from,
        push,
        by_digest,
        tags,
        build_args,
        export_opts,
        shared: (Arc::default(), None),
        remember: None,
    })
}

impl Plan {
    /// Where a push of tag `t` goes: `t`, or its repository by digest alone with `push-by-digest=true`.
    pub(crate) fn push_target(&self, t: &Reference) -> Reference {
        Reference {
            tag: if self.by_digest { None } else { t.tag.clone() },
            ..t.clone()
        }
    }
}

/// Opens the context (a directory, git, a tarball URL, stdin) and parses its Dockerfile.
pub(crate) fn read_dockerfile(
    req: &BuildRequest,
    check: bool,
    build_args: &BTreeMap<String, String>,
    store: &Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
    progress: &Progress,
) -> Result<Source> {
    let context = exec::context_source::open(
        &req.context,
        req.file.as_deref(),
        build_args,
        store,
        rt.handle(),
    )?;
    let label = context.dockerfile_label.clone();
    let text = context.dockerfile_text.clone();
    let parsed = frontend::parse(&text).map_err(|d| {
        if check {
            // As BuildKit: the checks that fired on the lines before the error, then the error.
            progress.data(&checks::before_parse_error(
                &text,
                &label,
                &Default::default(),
            ));
        }
        diagnostics::from_frontend(&label, &text, &d)
    })?;
    Ok(Source {
        label,
        text,
        parsed,
        context,
    })
}

/// Lowers the Dockerfile for the target platform; warnings go to the user.
pub(crate) fn lower(
    plan: &Plan,
    source: &Source,
    req: &BuildRequest,
    images: &Images,
    platform: &Platform,
    progress: &Progress,
) -> Result<frontend::Lowered> {
    let opts = frontend::LowerOptions {
        build_args: plan.build_args.clone(),
        target: req.target.clone(),
        platform: platform.clone(),
        build_platform: Platform::host(),
        named_images: exec::named_context::resolve(&req.build_contexts, images, &images.store)?,
    };
    let lowered = frontend::lower(&source.parsed, &opts, &mut Bases(images))
        .map_err(|d| diagnostics::from_frontend(&source.label, &source.text, &d))?;
    for w in &lowered.warnings {
        progress.warning(&format!("{}:{}: {}", source.label, w.span.line, w.message));
    }
    Ok(lowered)
}

/// Reads the metadata of every `--cache-from` (a cache that fails is a warning: the build goes on).
pub(crate) fn import_caches(
    plan: &Plan,
    store: &cache::Store,
    client: &Arc<LazyClient>,
    rt: &tokio::runtime::Runtime,
    images: &Images,
    progress: &Progress,
) -> Remote {
    let mut remote = Remote::new(Arc::clone(client), rt.handle().clone());
    for from in &plan.cache_from {
        let task = progress.task(format!("importing cache manifest from {from}"));
        match remote.import(from, store, &images.platform) {
            Ok(found) => task.status(&format!(
                "importing cache from {from}: {} records, {} blobs{}{}",
                found.records,
                found.blobs,
                if found.mounts > 0 {
                    format!(", {} cache mounts", found.mounts)
                } else {
                    String::new()
                },
                if found.inline { " (inline)" } else { "" }
            )),
            // A cache is an optimisation: the build goes on without it, loudly.
            Err(e) => {
                task.fail("failed");
                progress.warning(&format!(
                    "cache import from {from} failed, building without it: {e:#}"
                ));
            }
        }
    }
    remote
}

/// What the solve leaves for the steps after it.
pub(crate) struct Solved {
    pub(crate) solved: solver::Solved,
    records: LayeredRecords,
    /// With `--push`: the uploads of the image's RUN layers made while they were written.
    pub(crate) eager: Option<Arc<export::EagerPush>>,
}

/// Runs the graph: the worker, the records (local and imported), and the failure pointed at its line.
#[allow(clippy::too_many_arguments)]
pub(crate) fn solve(
    req: &BuildRequest,
    plan: &Plan,
    source: &Source,
    lowered: &frontend::Lowered,
    store: &Arc<cache::Store>,
    images: &Arc<Images>,
    client: &LazyClient,
    rt: &tokio::runtime::Runtime,
    remote: &Arc<Remote>,
    progress: &dyn solver::Reporter,
    together: usize,
    shared: Option<Arc<solver::Shared>>,
) -> Result<Solved> {
    let stage = &lowered.stages[lowered.target];
    let walk = std::time::Instant::now();
    let mut context = Context::load(&source.context.root, &source.context.ignore)?;
    if source.context.local {
        context = context.with_stat_cache(Arc::clone(store));
    }
    let context = Arc::new(context);
    tracing::debug!(elapsed = ?walk.elapsed(), "build context walked");
    // With --push, the image's RUN layers start uploading while they are written (each platform's
    // of a multi-platform build: see multiplatform::build).
    let eager = match plan.tags.first() {
        Some(first) if plan.push => Some(Arc::new(export::EagerPush::new(
            client.get()?.clone(),
            first.clone(),
            rt.handle().clone(),
            &lowered.graph,
            stage.head,
        ))),
        _ => None,
    };
    let worker = BuildWorker {
        images: Arc::clone(images),
        store: Arc::clone(store),
        context,
        exe: std::env::current_exe().context("locating the rbuild executable")?,
        layer_opts: plan.export_opts.layer_options(),
        secrets: Arc::new(exec::Secrets::parse(&req.secrets, &req.ssh)?),
        downloads: Arc::new(exec::Downloads::new(Arc::clone(store), rt.handle().clone())),
        default_network: match req.network {
            Network::None => runner::Network::None,
            Network::Default | Network::Host => runner::Network::Host,
        },
        no_new_privs: req.no_new_privileges,
        isolation: req.isolation,
        remote: Arc::clone(remote) as Arc<dyn BlobSource>,
        git: Arc::default(),
        eager: eager.clone().map(|e| e as Arc<dyn images::BlobTap>),
        run_hosts: req.add_hosts.clone(),
        run_limits: runner::Limits {
            shm_size: req.shm_size.unwrap_or(0),
            rlimits: req.ulimits.clone(),
            cgroup: exec::run_flags::cgroup_limits(
                req.memory,
                req.cpus,
                req.cpu_quota,
                req.cpu_period,
                req.pids_limit,
                req.cgroup_parent.clone(),
                exec::run_flags::MoreLimits {
                    memory_swap: req.memory_swap,
                    cpu_shares: req.cpu_shares,
                    cpuset_cpus: req.cpuset_cpus.clone(),
                },
            )
            .map_err(|e| anyhow!(e))?,
        },
        entitlements: exec::run_flags::Entitlements::parse(&req.allow)
            .map_err(|e| anyhow!(e))?
            // `--network host` grants it, as buildx adds the entitlement for that flag.
            .with_network_host(req.network == Network::Host),
    };
    let solve_opts = solver::SolveOptions {
        // Solves running together share --jobs.
        jobs: req.jobs.unwrap_or(8).div_ceil(together).max(1),
        cache: cache_policy(req, lowered),
        identities: node_identities(&lowered.graph, &source.context.identity()),
        cancel: Arc::clone(&plan.shared.0),
        slots: plan.shared.1.clone(),
        shared,
    };
    let _lease = store.lease()?;
    let records = LayeredRecords {
        store: Arc::clone(store),
        remote: Arc::clone(remote),
    };
    let started = std::time::Instant::now();
    let solved = solver::solve(
        &lowered.graph,
        stage.head,
        &worker,
        &records,
        progress,
        &solve_opts,
    )
    .map_err(|e| match &e {
        solver::SolveError::Node {
            node,
            source: cause,
            ..
        } => {
            let n = lowered.graph.node(*node);
            let what = format!(
                "`{}` failed: {}",
                n.name.instruction(),
                solver::error_chain(cause)
            );
            match n.span {
                Some(span) => {
                    anyhow!(diagnostics::step_failed(
                        &source.label,
                        &source.text,
                        span,
                        what
                    ))
                }
                None => anyhow!(what),
            }
        }
        solver::SolveError::Records(_) => anyhow!(e),
    })?;
    tracing::debug!(elapsed = ?started.elapsed(), "solved");
    Ok(Solved {
        solved,
        records,
        eager,
    })
}

/// Writes the image into the store and, with `tag`, names it with the tags (`exporting to image`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn export_image(
    plan: &Plan,
    stage: &frontend::Stage,
    solved: &solver::Solved,
    export_opts: &export::ExportOptions,
    store: &cache::Store,
    remote: &Remote,
    progress: &Progress,
    tag: bool,
) -> Result<export::Image> {
    let task = progress.task(if tag {
        "exporting to image".to_owned()
    } else {
        format!("exporting to image for {}", stage.platform)
    });
    // Layers of an imported cache are fetched only when something here reads them: a push alone to the
    // registry the cache lives in needs none of them.
    let local_needed = !plan.push || !plan.outputs.iter().all(export::Output::pushes);
    if local_needed {
        if let Some(head) = solved.outcomes.get(&stage.head) {
            for l in &head.layers {
                remote.ensure(store, &l.blob)?;
            }
        }
    }
    // The image the first tag names now: kept when only the build time would change.
    let previous = plan
        .tags
        .first()
        .filter(|_| tag)
        .and_then(|t| export::local_image(store, &t.familiar()).ok())
        .or_else(|| {
            let desc = store.base_get(plan.remember.as_deref()?).ok()??;
            export::local_image(store, &desc.digest.to_string()).ok()
        });
    let fetch = |l: &solver::Layer| remote.ensure(store, &l.blob);
    let image = export::assemble(store, stage, solved, export_opts, previous, &fetch)?;
    task.status(&format!("writing image {}", image.config_digest));
    if let Some(name) = &plan.remember {
        store.base_put(name, &image.manifest_desc)?;
    }
    if !tag {
        return Ok(image);
    }
    let complete = image
        .manifest
        .layers
        .iter()
        .all(|l| store.has_blob(&l.digest));
    for t in &plan.tags {
        if complete {
            store.set_tag(&t.familiar(), &image.manifest_desc)?;
            task.status(&format!("naming to {}", t.familiar()));
        } else {
            // Never a tag naming blobs this store does not have.
            task.status(&format!(
                "not naming {} in the local store: some of its layers are only in the cache registry \
                 (`rbuild pull {}` fetches them)",
                t.familiar(),
                t.familiar()
            ));
        }
    }
    Ok(image)
}

/// `--provenance` / `--sbom`: the image's attestations, stored as its referrers (`attesting image`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attest_image(
    req: &BuildRequest,
    plan: &Plan,
    source: &Source,
    lowered: &frontend::Lowered,
    solved: &solver::Solved,
    images: &Images,
    platform: &Platform,
    image: &export::Image,
    store: &cache::Store,
    started: i64,
    progress: &Progress,
) -> Result<Option<attest::Attested>> {
    let Some(wanted) = &plan.attest else {
        return Ok(None);
    };
    let task = progress.task("attesting image");
    let in_context = format!("{}/", req.context.trim_end_matches('/'));
    let path = source.label.strip_prefix(&in_context);
    let dockerfile = attest::provenance::Dockerfile {
        path: path.unwrap_or(&source.label).to_owned(),
        text: source.text.clone(),
    };
    let build = crate::attest::Build {
        req,
        build_args: &plan.build_args,
        dockerfile: &dockerfile,
        lowered,
        solved,
        images,
        platform,
        image,
        tags: &plan.tags,
        started,
        source_date_epoch: plan.export_opts.source_date_epoch,
        context_digest: match wanted.request.provenance {
            Some(attest::provenance::Mode::Max) => {
                let ctx = &source.context;
                Some(Context::load(&ctx.root, &ctx.ignore)?.tree_sha256()?)
            }
            _ => None,
        },
    };
    match crate::attest::make(wanted, &build, store) {
        Ok(a) => {
            task.status(&format!("attested: {}", a.describe()));
            Ok(Some(a))
        }
        Err(e) => {
            task.fail(&format!("{e:#}"));
            Err(e)
        }
    }
}

/// `--push`: the image to every tag's registry; prints `NAME@DIGEST` on stdout for each.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push(
    plan: &Plan,
    store: &cache::Store,
    client: &LazyClient,
    rt: &tokio::runtime::Runtime,
    remote: &Remote,
    eager: Option<&export::EagerPush>,
    image: &export::Image,
    attested: Option<(&attest::Attested, &Platform)>,
    progress: &Progress,
) -> Result<()> {
    if !plan.push {
        return Ok(());
    }
    if plan.tags.is_empty() {
        bail!("--push needs a -t NAME that names the registry");
    }
    for t in &plan.tags {
        let task = progress.task(format!("pushing {}", t.familiar()));
        let t = &plan.push_target(t);
        let pushed = rt
            .block_on(export::push(client.get()?, store, remote, eager, image, t))
            .and_then(|d| match attested {
                Some((a, platform)) => {
                    crate::attest::push(a, client.get()?, store, rt, t, image, platform)
                }
                None => Ok(d),
            });
        let digest = match pushed {
            Ok(d) => d,
            Err(e) => {
                task.fail(&format!("{e:#}"));
                return Err(e);
            }
        };
        task.status(&format!("pushed {}@{digest}", t.familiar()));
        progress.data(&format!("{}@{digest}\n", t.name()));
    }
    Ok(())
}

/// One `--cache-to` export and what it needs.
pub(crate) struct CacheExport<'a> {
    pub(crate) to: &'a CacheTo,
    pub(crate) store: &'a cache::Store,
    pub(crate) remote: &'a Remote,
    pub(crate) client: &'a LazyClient,
    pub(crate) rt: &'a tokio::runtime::Runtime,
}

impl CacheExport<'_> {
    /// Exports the cache and says what went where (`exporting cache to REF`).
    /// `solves` are the graph, target head and solve of each platform.
    pub(crate) fn run(
        &self,
        solves: &[(&graph::BuildGraph, graph::NodeId, &solver::Solved)],
        export_opts: &export::ExportOptions,
        progress: &Progress,
    ) -> Result<()> {
        if *self.to == CacheTo::Inline {
            let task = progress.task("exporting cache");
            task.status("cache written inline into the image config");
            return Ok(());
        }
        let shown = self.to.label();
        let task = progress.task(format!("exporting cache to {shown}"));
        let started = std::time::Instant::now();
        let exported = remotecache::export_all(
            self.to,
            self.store,
            self.remote,
            self.client,
            self.rt.handle(),
            solves,
            export_opts.compression,
        );
        match exported {
            Ok(s) => {
                task.status(&s.describe(&shown, started.elapsed().as_secs_f64()));
                Ok(())
            }
            Err(e) if self.to.ignores_errors() => {
                task.fail("failed");
                let warning = format!("cache export to {shown} failed (ignore-error=true): {e:#}");
                progress.warning(&warning);
                Ok(())
            }
            Err(e) => {
                task.fail(&format!("{e:#}"));
                Err(e.context(format!("exporting the cache to {shown}")))
            }
        }
    }
}

/// The exit status a command asks for, with nothing more to print (`--check` found warnings).
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct Status(pub u8);

/// BuildKit's build checks on the stages this build needs (every stage when `all_stages` and no
/// `--target`, as `--check`).
pub(crate) fn run_checks(
    plan: &Plan,
    source: &Source,
    req: &BuildRequest,
    images: &Images,
    all_stages: bool,
) -> Result<checks::Report> {
    let ignore = &source.context.ignore;
    let opts = checks::CheckOptions {
        build_args: plan.build_args.clone(),
        target: req.target.clone(),
        all_stages,
        platform: images.platform.clone(),
        dockerignore: Some(ignore),
    };
    Ok(checks::run(&source.parsed, &opts, &mut Bases(images))
        .map_err(|d| diagnostics::from_frontend(&source.label, &source.text, &[d]))?)
}

/// `--check` (`--call=check`): the checks' report on stdout as buildx prints it, then the build
/// validated by lowering it (its error after the warnings); exit status 1 when a check fired.
pub(crate) fn check(
    call: &Call,
    plan: &Plan,
    source: &Source,
    req: &BuildRequest,
    images: &Images,
    progress: &Progress,
) -> Result<Option<oci::Digest>> {
    let report = run_checks(plan, source, req, images, true)?;
    let out = report.output(call.json, &source.label, &source.text);
    let lowered = lower(plan, source, req, images, &images.platform, progress);
    if lowered.is_ok() || !report.warnings.is_empty() || call.json {
        progress.data(&out);
    }
    let lowered = lowered?;
    progress.info(&format!(
        "check complete, no errors: {} ({} stage(s), {} step(s) to build)",
        source.label,
        lowered.stages.len(),
        lowered.graph.len()
    ));
    if !report.warnings.is_empty() && !call.ignore_status {
        return Err(Status(1).into());
    }
    Ok(None)
}

/// `--no-cache` ignores every record; `--no-cache-filter STAGE` those of the named stages' steps.
pub(crate) fn cache_policy(req: &BuildRequest, lowered: &frontend::Lowered) -> solver::CachePolicy {
    if req.no_cache {
        return solver::CachePolicy::Ignore;
    }
    if req.no_cache_filter.is_empty() {
        return solver::CachePolicy::Use;
    }
    let mut nodes = Vec::new();
    for want in &req.no_cache_filter {
        match lowered.stage(want) {
            Some(s) => nodes.extend(s.layer_history.iter().map(|(_, n)| *n)),
            // A stage the target does not need is not built at all; nothing to re-run.
            None => {
                tracing::info!(stage = %want, "--no-cache-filter: stage not part of this build")
            }
        }
    }
    // The solver looks records up from the target down, so a hit on a consumer would hide the stage:
    // everything that (transitively) reads a filtered node ignores the cache too.
    solver::CachePolicy::IgnoreNodes(lowered.graph.with_dependents(&nodes).into_iter().collect())
}

/// The image the target stage starts from (through earlier stages), for the base-image annotations.
pub(crate) fn base_of(
    lowered: &frontend::Lowered,
    stage: &frontend::Stage,
    images: &Images,
) -> Option<(String, oci::Digest)> {
    let name = lowered.base_image(stage)?;
    let r = images.resolve_for(name, &stage.platform).ok()?;
    let shown = r
        .reference
        .as_ref()
        .map_or_else(|| name.to_owned(), Reference::to_string);
    Some((shown, r.manifest_desc.digest))
}

/// Stable identities for explaining misses: Dockerfile path + stage + position, not the instruction text.
pub(crate) fn node_identities(
    graph: &graph::BuildGraph,
    dockerfile: &Path,
) -> HashMap<graph::NodeId, String> {
    let file = std::fs::canonicalize(dockerfile).unwrap_or_else(|_| dockerfile.to_owned());
    graph
        .nodes()
        .iter()
        .filter_map(|n| {
            let place = n.name.identity()?;
            Some((n.id, format!("{}#{place}", file.display())))
        })
        .collect()
}
