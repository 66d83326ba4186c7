//! `rbuild build`: Dockerfile → frontend → solver → exporters.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use oci::{Platform, Reference};

use crate::cli::{specs, BuildArgs, ProgressMode};
use crate::diagnostics;
use crate::progress::{PlainReporter, Verbosity};
use exec::{BuildWorker, Context};
use images::{BlobSource, Images};
use remotecache::{CacheTo, LayeredRecords, Remote};

/// Base-image configs for lowering, resolved through [`Images`].
struct Bases<'a>(&'a Images);

impl frontend::BaseImages for Bases<'_> {
    fn config(&mut self, reference: &str) -> Result<oci::ImageConfig, String> {
        self.0
            .resolve(reference)
            .map(|r| r.config)
            .map_err(|e| format!("{e:#}"))
    }
}

/// Runs one build; returns the image config digest (the image ID), or `None` for `--check`.
pub(crate) fn build(
    args: &BuildArgs,
    store: Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
) -> Result<Option<oci::Digest>> {
    let outputs = specs::parse_outputs(&args.outputs)?;
    let cache_to: Vec<CacheTo> = args
        .cache_to
        .iter()
        .map(|s| specs::parse_cache_to(s))
        .collect::<Result<_>>()?;
    let cache_from: Vec<remotecache::CacheFrom> = args
        .cache_from
        .iter()
        .map(|s| specs::parse_cache_from(s))
        .collect::<Result<_>>()?;
    let push = args.push || outputs.iter().any(export::Output::pushes);
    let tags: Vec<Reference> = args
        .tags
        .iter()
        .chain(outputs.iter().flat_map(export::Output::image_names))
        .map(|t| t.parse::<Reference>().map_err(|e| anyhow!("-t {t:?}: {e}")))
        .collect::<Result<_>>()?;

    let context_dir = &args.context;
    if !context_dir.is_dir() {
        bail!(
            "build context {} not found or not a directory",
            context_dir.display()
        );
    }
    let dockerfile = args
        .file
        .clone()
        .unwrap_or_else(|| context_dir.join("Dockerfile"));
    let src = std::fs::read_to_string(&dockerfile).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow!("Dockerfile not found: {}", dockerfile.display()),
        _ => anyhow!(e).context(format!("reading {}", dockerfile.display())),
    })?;
    let file_label = dockerfile.display().to_string();
    let df =
        frontend::parse(&src).map_err(|d| diagnostics::from_frontend(&file_label, &src, &d))?;

    let mut build_args = BTreeMap::new();
    for kv in &args.build_args {
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_owned(), v.to_owned()),
            // `--build-arg NAME` takes the value from the environment, as docker does.
            None => std::env::var(kv)
                .ok()
                .and_then(|v| build_args.insert(kv.clone(), v)),
        };
    }
    let compression = match args.compression {
        crate::cli::CompressionArg::Gzip => oci::Compression::Gzip,
        crate::cli::CompressionArg::Zstd => oci::Compression::Zstd,
        crate::cli::CompressionArg::Uncompressed => oci::Compression::Uncompressed,
    };
    let export_opts = export::ExportOptions {
        compression,
        level: specs::compression_level(compression, args.compression_level)?,
        force_compression: args.force_compression,
        oci_mediatypes: args.oci_mediatypes,
        labels: specs::key_values("--label", &args.labels)?,
        annotations: specs::key_values("--annotation", &args.annotations)?,
        source_date_epoch: specs::source_date_epoch(&build_args)?,
        rewrite_timestamp: args.rewrite_timestamp,
        base: None,
        inline_cache: None,
    };
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let opts = frontend::LowerOptions {
        build_args,
        target: args.target.clone(),
        platform: platform.clone(),
    };
    let client = Arc::new(images::LazyClient::new(
        args.registry.client_options(&args.insecure_registries),
    ));
    let images = Arc::new(
        Images::new(
            Arc::clone(&store),
            Arc::clone(&client),
            rt.handle().clone(),
            platform,
        )
        .with_pull(args.pull),
    );
    let lowered = frontend::lower(&df, &opts, &mut Bases(&images))
        .map_err(|d| diagnostics::from_frontend(&file_label, &src, &d))?;
    for w in &lowered.warnings {
        eprintln!("warning: {file_label}:{}: {}", w.span.line, w.message);
    }
    if args.check {
        return check_done(&lowered, &file_label);
    }
    let stage = &lowered.stages[lowered.target];

    let ignore = read_dockerignore(&dockerfile, context_dir)?;
    let walk = std::time::Instant::now();
    let context =
        Arc::new(Context::load(context_dir, &ignore)?.with_stat_cache(Arc::clone(&store)));
    tracing::debug!(elapsed = ?walk.elapsed(), "build context walked");

    let mut remote = Remote::new(Arc::clone(&client), rt.handle().clone());
    for from in &cache_from {
        match remote.import(from, &store, &images.platform) {
            Ok(found) if !args.quiet => eprintln!(
                "importing cache from {from}: {} records, {} blobs{}{}",
                found.records,
                found.blobs,
                if found.mounts > 0 {
                    format!(", {} cache mounts", found.mounts)
                } else {
                    String::new()
                },
                if found.inline { " (inline)" } else { "" }
            ),
            Ok(_) => {}
            // A cache is an optimisation: the build goes on without it, loudly.
            Err(e) => {
                eprintln!("warning: cache import from {from} failed, building without it: {e:#}")
            }
        }
    }
    let remote = Arc::new(remote);
    // With --push, the image's RUN layers start uploading while they are written.
    let eager = match tags.first() {
        Some(first) if push => Some(Arc::new(export::EagerPush::new(
            client.get()?.clone(),
            first.clone(),
            rt.handle().clone(),
            &lowered.graph,
            stage.head,
        ))),
        _ => None,
    };
    let worker = BuildWorker {
        images: Arc::clone(&images),
        store: Arc::clone(&store),
        context,
        exe: std::env::current_exe().context("locating the rbuild executable")?,
        layer_opts: export_opts.layer_options(),
        secrets: Arc::new(exec::Secrets::parse(&args.secrets, &args.ssh)?),
        downloads: Arc::new(exec::Downloads::new(
            Arc::clone(&store),
            rt.handle().clone(),
        )),
        default_network: match args.network {
            crate::cli::NetworkArg::None => runner::Network::None,
            crate::cli::NetworkArg::Default | crate::cli::NetworkArg::Host => runner::Network::Host,
        },
        no_new_privs: args.no_new_privileges,
        isolation: args.isolation.runner(),
        remote: Arc::clone(&remote) as Arc<dyn BlobSource>,
        git: Arc::default(),
        eager: eager.clone().map(|e| e as Arc<dyn images::BlobTap>),
    };
    let verbosity = match (args.quiet, args.progress) {
        (true, _) | (_, ProgressMode::Quiet) => Verbosity::Quiet,
        (_, ProgressMode::Tty) => Verbosity::Tty,
        (_, ProgressMode::RawJson) => Verbosity::Json,
        (_, ProgressMode::Auto) => Verbosity::auto(),
        _ => Verbosity::Plain,
    };
    let reporter = PlainReporter::new(&lowered.graph, verbosity);
    let identities = node_identities(&lowered.graph, &dockerfile);
    let solve_opts = solver::SolveOptions {
        jobs: args.jobs.unwrap_or(8).max(1),
        cache: cache_policy(args, &lowered)?,
        identities,
    };
    let _lease = store.lease()?;
    let records = LayeredRecords {
        store: Arc::clone(&store),
        remote: Arc::clone(&remote),
    };
    let solve_started = std::time::Instant::now();
    let solved = solver::solve(
        &lowered.graph,
        stage.head,
        &worker,
        &records,
        &reporter,
        &solve_opts,
    )
    .map_err(|e| match &e {
        solver::SolveError::Node { node, .. } => {
            let n = lowered.graph.node(*node);
            let what = format!(
                "`{}` failed: {}",
                instruction_text(&n.name),
                failure_text(&e)
            );
            match n.span {
                Some(span) => anyhow!(diagnostics::step_failed(&file_label, &src, span, what)),
                None => anyhow!(what),
            }
        }
        solver::SolveError::Records(_) => anyhow!(e),
    })?;

    tracing::debug!(elapsed = ?solve_started.elapsed(), "solved");
    let mut export_opts = export_opts;
    export_opts.base = base_of(&lowered.stages, stage, &images);
    if cache_to.contains(&CacheTo::Inline) {
        export_opts.inline_cache = remotecache::inline_value(&solved, &lowered.graph, stage.head);
    }
    // Layers of an imported cache are fetched only when something here reads them: a push alone to the
    // registry the cache lives in needs none of them.
    let local_needed = !push || !outputs.iter().all(export::Output::pushes);
    if local_needed {
        if let Some(head) = solved.outcomes.get(&stage.head) {
            for l in &head.layers {
                remote.ensure(&store, &l.blob)?;
            }
        }
    }
    // The image the first tag names now: kept when only the build time would change.
    let previous = tags
        .first()
        .and_then(|t| export::local_image(&store, &t.familiar()).ok());
    let fetch = |l: &solver::Layer| remote.ensure(&store, &l.blob);
    let image = export::assemble(&store, stage, &solved, &export_opts, previous, &fetch)?;
    let id = image.config_digest.clone();
    if !args.quiet {
        eprintln!("writing image {id}");
    }
    let complete = image
        .manifest
        .layers
        .iter()
        .all(|l| store.has_blob(&l.digest));
    for t in &tags {
        if !complete {
            // Never a tag naming blobs this store does not have.
            if !args.quiet {
                eprintln!(
                    "not naming {} in the local store: some of its layers are only in the cache registry \
                     (`rbuild pull {}` fetches them)",
                    t.familiar(),
                    t.familiar()
                );
            }
            continue;
        }
        store.set_tag(&t.familiar(), &image.manifest_desc)?;
        if !args.quiet {
            eprintln!("naming to {}", t.familiar());
        }
    }
    let names: Vec<String> = tags.iter().map(Reference::familiar).collect();
    export::write_outputs(&store, &image, &names, &outputs, args.quiet)?;
    if push {
        if tags.is_empty() {
            bail!("--push needs a -t NAME that names the registry");
        }
        for t in &tags {
            let digest = rt.block_on(export::push(
                client.get()?,
                &store,
                remote.as_ref(),
                eager.as_deref(),
                &image,
                t,
            ))?;
            if !args.quiet {
                eprintln!("pushed {}@{digest}", t.familiar());
            }
            println!("{}@{digest}", t.name());
        }
    }
    for to in &cache_to {
        export_cache(
            to,
            &store,
            &remote,
            &client,
            rt,
            &lowered.graph,
            stage.head,
            &solved,
            &export_opts,
            args.quiet,
        )?;
    }
    if !remote.is_empty() {
        let kept = records.keep_used(&solved)?;
        let fetched = remote.stats();
        if !args.quiet {
            eprintln!(
                "cache import: {} blobs downloaded ({}), {kept} records kept in the local store",
                fetched.blobs,
                crate::cmd::image::human_size(fetched.bytes)
            );
        }
    }
    if let Some(path) = &args.iidfile {
        fs_err::write(path, id.to_string())?;
    }
    if let Some(path) = &args.metadata_file {
        let full: Vec<String> = tags.iter().map(Reference::to_string).collect();
        export::write_metadata(path, &image, &full)?;
    }
    if args.quiet {
        println!("{id}");
    }
    Ok(Some(id))
}

/// Exports the cache to one `--cache-to` destination and says what went where.
#[allow(clippy::too_many_arguments)]
fn export_cache(
    to: &CacheTo,
    store: &cache::Store,
    remote: &Remote,
    client: &images::LazyClient,
    rt: &tokio::runtime::Runtime,
    graph: &graph::BuildGraph,
    head: graph::NodeId,
    solved: &solver::Solved,
    export_opts: &export::ExportOptions,
    quiet: bool,
) -> Result<()> {
    let (shown, ignore_error) = match to {
        CacheTo::Inline => {
            if !quiet {
                eprintln!("cache written inline into the image config");
            }
            return Ok(());
        }
        CacheTo::Registry { reference, opts } => (reference.to_string(), opts.ignore_error),
        CacheTo::Local { dest, tag, opts } => {
            (format!("{}:{tag}", dest.display()), opts.ignore_error)
        }
    };
    let started = std::time::Instant::now();
    match remotecache::export(
        to,
        store,
        remote,
        client,
        rt.handle(),
        graph,
        head,
        solved,
        export_opts.compression,
    ) {
        Ok(s) => {
            if !quiet {
                eprintln!(
                    "exported cache to {shown}: {} records{}, blobs: {} uploaded ({}), {} already there, {} mounted, in {:.2}s",
                    s.records,
                    if s.mounts > 0 { format!(", {} cache mounts", s.mounts) } else { String::new() },
                    s.blobs.uploaded,
                    crate::cmd::image::human_size(s.blobs.uploaded_bytes),
                    s.blobs.present,
                    s.blobs.mounted,
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        Err(e) if ignore_error => {
            eprintln!("warning: cache export to {shown} failed (ignore-error=true): {e:#}");
            Ok(())
        }
        Err(e) => Err(e.context(format!("exporting the cache to {shown}"))),
    }
}

/// `--check`: the Dockerfile parsed and lowered; report and stop before running anything.
fn check_done(lowered: &frontend::Lowered, file_label: &str) -> Result<Option<oci::Digest>> {
    let steps = lowered.graph.len();
    let stages = lowered.stages.len();
    eprintln!(
        "check complete, no errors: {file_label} ({stages} stage(s), {steps} step(s) to build)"
    );
    Ok(None)
}

/// `--no-cache` ignores every record; `--no-cache-filter STAGE` those of the named stages' steps.
fn cache_policy(args: &BuildArgs, lowered: &frontend::Lowered) -> Result<solver::CachePolicy> {
    if args.no_cache {
        return Ok(solver::CachePolicy::Ignore);
    }
    if args.no_cache_filter.is_empty() {
        return Ok(solver::CachePolicy::Use);
    }
    let mut nodes = Vec::new();
    for want in &args.no_cache_filter {
        let want_lc = want.to_lowercase();
        let stage = lowered
            .stages
            .iter()
            .find(|s| s.name.as_deref() == Some(want_lc.as_str()) || s.index.to_string() == *want);
        match stage {
            Some(s) => nodes.extend(s.layer_history.iter().map(|(_, n)| *n)),
            // A stage the target does not need is not built at all; nothing to re-run.
            None => {
                tracing::info!(stage = %want, "--no-cache-filter: stage not part of this build")
            }
        }
    }
    // The solver looks records up from the target down, so a hit on a consumer would hide the stage:
    // everything that (transitively) reads a filtered node ignores the cache too.
    let mut ignored: std::collections::HashSet<graph::NodeId> = nodes.iter().copied().collect();
    loop {
        let before = ignored.len();
        for n in lowered.graph.nodes() {
            if n.inputs.iter().any(|i| ignored.contains(i)) {
                ignored.insert(n.id);
            }
        }
        if ignored.len() == before {
            break;
        }
    }
    Ok(solver::CachePolicy::IgnoreNodes(
        ignored.into_iter().collect(),
    ))
}

/// The image the target stage starts from (through earlier stages), for the base-image annotations.
fn base_of(
    stages: &[frontend::Stage],
    stage: &frontend::Stage,
    images: &Images,
) -> Option<(String, oci::Digest)> {
    let mut s = stage;
    for _ in 0..=stages.len() {
        match &s.base {
            frontend::Base::Scratch => return None,
            frontend::Base::Image(name) => {
                let r = images.resolve(name).ok()?;
                let shown = r
                    .reference
                    .as_ref()
                    .map_or_else(|| name.clone(), Reference::to_string);
                return Some((shown, r.manifest_desc.digest));
            }
            frontend::Base::Stage(i) => s = stages.iter().find(|t| t.index == *i)?,
        }
    }
    None
}

fn read_dockerignore(dockerfile: &Path, context: &Path) -> Result<frontend::DockerIgnore> {
    let beside = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    for p in [beside, context.join(".dockerignore")] {
        match std::fs::read_to_string(&p) {
            Ok(text) => return Ok(frontend::DockerIgnore::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!(e).context(format!("reading {}", p.display()))),
        }
    }
    Ok(frontend::DockerIgnore::parse(""))
}

/// `[build 2/4] RUN make` → `RUN make`.
fn instruction_text(name: &str) -> &str {
    name.split_once("] ").map_or(name, |(_, rest)| rest)
}

fn failure_text(e: &solver::SolveError) -> String {
    match e {
        solver::SolveError::Node { source, .. } => format!("{source}"),
        other => other.to_string(),
    }
}

/// Stable identities for explaining misses: Dockerfile path + stage + position, not the instruction text.
fn node_identities(graph: &graph::BuildGraph, dockerfile: &Path) -> HashMap<graph::NodeId, String> {
    let file = std::fs::canonicalize(dockerfile).unwrap_or_else(|_| dockerfile.to_owned());
    graph
        .nodes()
        .iter()
        .filter_map(|n| {
            let inner = n.name.strip_prefix('[')?.split_once(']')?.0;
            let position = inner.split_once('/').map_or(inner, |(p, _)| p).trim();
            Some((n.id, format!("{}#{position}", file.display())))
        })
        .collect()
}
