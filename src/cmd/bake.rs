//! `rbuild bake`: the targets of compose.yaml / docker-bake.hcl / docker-bake.json (resolved by the `bake`
//! crate), each target's flags parsed as `rbuild build`'s, then built together by [`driver::bake::run`];
//! the summary of what each target became.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use bake::schedule::Outcome;
use std::sync::Arc;

use crate::cli::{BakeArgs, Cli, Command, ProgressMode};
use crate::progress::{self, Mode};

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
    let mut requests = HashMap::new();
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
        requests.insert(name.clone(), crate::cmd::build::request(&b));
    }
    let mode = match args.progress {
        ProgressMode::Quiet => Mode::Quiet,
        ProgressMode::RawJson => Mode::Json,
        // Several targets at once: the live view would redraw over itself.
        _ => Mode::Plain,
    };
    let options = driver::bake::BakeOptions {
        jobs: args.jobs,
        keep_going: args.keep_going,
    };
    let target_progress = |name: &str, numbers| progress::for_target(mode, name, numbers);
    let outcomes = driver::bake::run(
        &resolved,
        &order,
        &requests,
        options,
        store,
        rt,
        &target_progress,
    );
    report(outcomes)
}

/// The summary: each target's image, then each failure with its Dockerfile line (targets stopped because
/// another failed are named as such).
fn report(outcomes: driver::bake::Outcomes) -> Result<()> {
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
                match e.downcast::<driver::SourceError>() {
                    Ok(d) => eprintln!("{}", crate::diagnostics::draw(d)),
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
