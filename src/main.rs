//! rbuild: a daemonless container image builder.
//!
//! `rbuild -t app .` builds; `rbuild run app` runs; see `rbuild --help`.
//!
//! The binary is a shell over the workspace's crates (a build is the `driver` crate's): `cli/` parses
//! flags, `cmd/` wires one subcommand each, `progress/` renders what a build tells its user,
//! `diagnostics` points errors at Dockerfile lines.
// The binary is where output goes: stdout for data, stderr for what the user reads.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod diagnostics;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;

use crate::cli::{Cli, Command, DebugCommand};

fn default_root() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/lib/rbuild")
    } else {
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                    .join(".local/share")
            });
        data.join("rbuild")
    }
}

fn main() -> ExitCode {
    // The sandbox init must run before any thread exists (it forks), so this comes first.
    runner::init_if_requested();
    // Keep each message on one line: image names and paths must stay greppable in CI logs.
    // set_hook only fails when a hook is already installed, and none is at this point.
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().wrap_lines(false).build())
    }));
    let cli = Cli::parse_from(cli::with_default_command(std::env::args_os().collect()));
    // The store location is decided as the caller, before rootless mode makes us uid 0.
    let root = cli.root.clone().unwrap_or_else(default_root);
    if needs_namespace_root(&cli.command) {
        // Still single-threaded: nothing above starts a thread, and unshare needs that.
        if let Err(e) = runner::enter_rootless() {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // With `--progress rawjson` every stderr line is JSON: log records and the final error too.
    let json =
        matches!(&cli.command, Command::Build(b) if b.progress == cli::ProgressMode::RawJson);
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RBUILD_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    match real_main(cli, root) {
        Ok(code) => code,
        Err(e) if e.is::<driver::Status>() => {
            ExitCode::from(e.downcast_ref::<driver::Status>().map_or(1, |s| s.0))
        }
        Err(e) if json => {
            eprintln!(
                "{}",
                serde_json::json!({"event": "error", "message": format!("{e:#}")})
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            match e.downcast::<driver::SourceError>() {
                Ok(d) => eprintln!("{}", diagnostics::draw(d)),
                Err(e) => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Whether the command works on the store or runs containers, and so needs, when rbuild is not
/// run as root, the user namespace of rootless mode (files owned by any id, overlay mounts).
fn needs_namespace_root(command: &Command) -> bool {
    !matches!(
        command,
        Command::Login(_)
            | Command::Logout { .. }
            | Command::Debug { .. }
            | Command::Binfmt { .. }
            | Command::Imagetools { .. }
    )
}

fn real_main(cli: Cli, root: PathBuf) -> Result<ExitCode> {
    let open = || -> Result<Arc<cache::Store>> {
        Ok(Arc::new(cache::Store::open(&root).with_context(|| {
            format!("opening store {}", root.display())
        })?))
    };
    let rt = || -> Result<tokio::runtime::Runtime> {
        Ok(tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?)
    };
    match cli.command {
        Command::Build(args) => drop(cmd::build::build(&args, open()?, &rt()?)?),
        Command::Bake(args) => cmd::bake::bake(&args, &open()?, &rt()?)?,
        Command::Run(args) => {
            let code = cmd::run::run(&args, open()?, &rt()?)?;
            return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
        }
        Command::Images(args) => cmd::image::images(&args, &*open()?)?,
        Command::Tag { source, targets } => cmd::image::tag(&*open()?, &source, &targets)?,
        Command::Rmi { images } => cmd::image::rmi(&*open()?, &images)?,
        Command::Save {
            images,
            output,
            format,
        } => cmd::image::save(&*open()?, &images, output.as_deref(), &format)?,
        Command::Load { input } => cmd::image::load(&*open()?, input.as_deref())?,
        Command::Push(args) => cmd::image::push(&args, &*open()?, &rt()?)?,
        Command::Pull(args) => cmd::pull::pull(&args, open()?, &rt()?)?,
        Command::Login(args) => cmd::login::login(&args, &rt()?)?,
        Command::Logout { registry } => cmd::login::logout(registry.as_deref())?,
        Command::History { image, no_trunc } => cmd::image::history(&*open()?, &image, no_trunc)?,
        Command::Inspect {
            image,
            sbom,
            provenance,
            remote,
        } => match (sbom, provenance) {
            (true, _) => cmd::attest::inspect(
                &*open()?,
                &image,
                &remote,
                &rt,
                attest::sbom::PREDICATE_TYPE,
            )?,
            (_, true) => {
                let p = attest::provenance::PREDICATE_TYPE;
                cmd::attest::inspect(&*open()?, &image, &remote, &rt, p)?
            }
            _ if remote.remote => {
                anyhow::bail!("--remote reads attestations: add --sbom or --provenance")
            }
            _ => cmd::image::inspect(&*open()?, &image)?,
        },
        Command::Verify { key, image, remote } => {
            cmd::attest::verify(&*open()?, &key, &image, &remote, &rt)?
        }
        Command::Prune(args) => cmd::prune::prune(&args, &*open()?)?,
        Command::Info(args) => cmd::info::info(&args, &root)?,
        Command::Binfmt { install, archs } => cmd::binfmt::binfmt(install, &archs)?,
        Command::Imagetools {
            what: cli::ImagetoolsCommand::Create(args),
        } => cmd::imagetools::create(&args, &rt()?)?,
        Command::Imagetools {
            what: cli::ImagetoolsCommand::Inspect(args),
        } => cmd::imagetools::inspect(&args, &rt()?)?,
        Command::Du => cmd::prune::du(&*open()?)?,
        Command::Check { repair } => return cmd::prune::check(&*open()?, repair),
        Command::Debug {
            what: DebugCommand::Ast { file },
        } => {
            let src = fs_err::read_to_string(&file)?;
            let label = file.display().to_string();
            let df = frontend::parse(&src)
                .map_err(|d| driver::diagnostics::from_frontend(&label, &src, &d))?;
            print!("{}", df.dump());
        }
    }
    Ok(ExitCode::SUCCESS)
}
