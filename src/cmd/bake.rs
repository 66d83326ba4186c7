//! `rbuild bake`: the targets of compose.yaml / docker-bake.hcl / docker-bake.json (resolved by the `bake`
//! crate), each built by `rbuild build`'s pipeline, all at once in this process over one store.
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

use anyhow::{anyhow, bail, Result};
use bake::schedule::Outcome;

use crate::cli::{BakeArgs, Cli, Command, ProgressMode};
use crate::cmd::build::{build_with, Extras};
use crate::diagnostics::SourceError;
use crate::progress::{Mode, Progress};

/// Resolves the bake files and builds (or prints) the targets asked for.
pub(crate) fn bake(
    args: &BakeArgs,
    store: &Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let cwd = std::env::current_dir()?;
    let files = bake::read_files(&args.files, &cwd)?;
    let def = bake::load(&files, &|k| std::env::var(k).ok())?;
    let sets = args
        .set
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<bake::Override>, _>>()?;
    let resolved = def.resolve(&args.targets, &sets)?;
    if args.print {
        println!("{}", resolved.to_json());
        return Ok(());
    }
    let order = resolved.build_order()?;
    let inline = tempfile::tempdir()?;
    let run = bake::RunOptions {
        jobs: args.jobs,
        no_cache: args.no_cache,
        pull: args.pull,
        push: args.push,
        load: args.load,
        insecure_registries: args.insecure_registries.clone(),
    };
    let mut builds = Vec::new();
    for name in &order {
        let (argv, ignored) = resolved.build_argv(name, &run, inline.path())?;
        for option in ignored {
            eprintln!("warning: target {name:?}: {option} is not supported by rbuild yet; ignored");
        }
        let parsed = <Cli as clap::Parser>::try_parse_from(&argv).map_err(|e| {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            anyhow!("target {name:?}: {first}")
        })?;
        let Command::Build(b) = parsed.command else {
            bail!("target {name:?}: not a build")
        };
        builds.push((name.clone(), b));
    }
    let mode = match args.progress {
        ProgressMode::Quiet => Mode::Quiet,
        ProgressMode::RawJson => Mode::Json,
        // Several targets at once: the live view would redraw over itself.
        _ => Mode::Plain,
    };
    let numbers = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(solver::Cancel::default());
    // One --jobs for the whole run: the targets' steps share it.
    let slots = Arc::new(solver::Slots::new(args.jobs.unwrap_or(8)));
    let args_of: HashMap<&str, &crate::cli::BuildArgs> =
        builds.iter().map(|(n, b)| (n.as_str(), b)).collect();
    let outcomes = bake::schedule::run(
        &order,
        |name| {
            let t = &resolved.targets[name];
            t.target_contexts()
                .iter()
                .map(|(_, d)| (*d).to_owned())
                .collect()
        },
        || !args.keep_going && shared.is_cancelled(),
        |name, built: HashMap<String, Option<images::ResolvedImage>>| {
            let build_args = args_of[name];
            let mut contexts = Vec::new();
            for (ctx, dep) in resolved.targets[name].target_contexts() {
                let image = built[dep].clone().ok_or_else(|| {
                    anyhow!("target {dep:?} is a context of {name:?}: it must build one platform")
                })?;
                contexts.push((ctx.to_owned(), image));
            }
            let extras = Extras {
                progress: Some(Progress::for_target(mode, name, Arc::clone(&numbers))),
                contexts,
                slots: Some(Arc::clone(&slots)),
                cancel: Some(if args.keep_going {
                    Arc::default()
                } else {
                    Arc::clone(&shared)
                }),
                remember: build_args.tags.is_empty().then(|| {
                    let dir = std::path::absolute(&build_args.context)
                        .map_or_else(|_| build_args.context.clone(), |d| d.display().to_string());
                    format!("bake-target {dir}#{name}")
                }),
            };
            let built = build_with(build_args, Arc::clone(store), rt, extras)
                .and_then(|(_, image)| image.map(|i| image_of(store, i)).transpose());
            if built.is_err() && !args.keep_going {
                shared.cancel();
            }
            built
        },
    );
    report(outcomes)
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

/// The summary: each target's image, then each failure with its Dockerfile line (targets stopped because
/// another failed are named as such).
fn report(
    outcomes: Vec<(
        String,
        Outcome<Option<images::ResolvedImage>, anyhow::Error>,
    )>,
) -> Result<()> {
    let mut failed = Vec::new();
    let mut not_built = 0;
    for (name, outcome) in outcomes {
        match outcome {
            Outcome::Built(Some(img)) => {
                eprintln!(
                    "target {name}: built, manifest {}",
                    img.manifest_desc.digest
                );
            }
            Outcome::Built(None) => eprintln!("target {name}: built (an image index)"),
            Outcome::Skipped => {
                not_built += 1;
                eprintln!("target {name}: not built (a target it needs or another target failed)");
            }
            Outcome::Failed(e) if format!("{e:#}").ends_with("cancelled") => {
                not_built += 1;
                eprintln!("target {name}: cancelled (another target failed)");
            }
            Outcome::Failed(e) => {
                eprintln!("error: target {name:?} failed:");
                match e.downcast::<SourceError>() {
                    Ok(d) => eprintln!("{:?}", miette::Report::new(d)),
                    Err(e) => eprintln!("  {e:#}"),
                }
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        if not_built > 0 {
            bail!("{not_built} target(s) not built");
        }
        return Ok(());
    }
    bail!("{} target(s) failed: {}", failed.len(), failed.join(", "))
}
