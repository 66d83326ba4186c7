//! `rbuild run`: a container from an image in the local store (pulled if missing), in the build sandbox.

use std::process::Stdio;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use exec::container;
use oci::Platform;

use crate::cli::RunArgs;
use images::{snapshots, Images};

/// Runs the container and returns its exit code.
pub(crate) fn run(
    args: &RunArgs,
    store: Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
) -> Result<i32> {
    let client = std::sync::Arc::new(images::LazyClient::new(registry::ClientOptions::default()));
    let images = Images::new(
        Arc::clone(&store),
        client,
        rt.handle().clone(),
        args.platform.clone().unwrap_or_else(Platform::host),
    );
    let image = images
        .resolve(&args.image)
        .with_context(|| format!("image {}", args.image))?;
    let layers = images.fetch_layers(&image)?;
    let mut lowers = snapshots(&store, &layers)?;
    if lowers.is_empty() {
        lowers.push(store.empty_dir()?);
    }
    let tmp = store.tmp_dir()?;
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    fs_err::create_dir(&upper)?;
    fs_err::create_dir(&work)?;
    let opts = container::Options {
        entrypoint: args.entrypoint.clone(),
        command: args.command.clone(),
        env: args.env.clone(),
        env_files: args.env_files.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        network: args.network.clone(),
        volumes: args.volumes.clone(),
        security_opts: args.security_opts.clone(),
        tty: args.tty,
        isolation: args.isolation.runner(),
    };
    let spec = container::spec(&args.image, &image.config, &opts, lowers, upper, work)?;
    let exe = std::env::current_exe().context("locating the rbuild executable")?;
    let (stdin, stdout, stderr, relay) = if args.tty {
        let (master, slave) = runner::open_pty().context("allocating a pty")?;
        let relay = container::relay_pty(master, args.interactive)?;
        (
            Stdio::from(slave.try_clone()?),
            Stdio::from(slave.try_clone()?),
            Stdio::from(slave),
            Some(relay),
        )
    } else {
        let stdin = if args.interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        (stdin, Stdio::inherit(), Stdio::inherit(), None)
    };
    let mut child =
        runner::spawn(&spec, &exe, stdin, stdout, stderr).context("starting the container")?;
    // The first SIGTERM/SIGINT/SIGHUP goes to the command; a second, or a grace period, kills it.
    rt.spawn(container::forward_signals(child.id()));
    let status = child.wait().context("waiting for the container")?;
    drop(relay);
    drop(tmp);
    Ok(status.code().unwrap_or(128))
}
