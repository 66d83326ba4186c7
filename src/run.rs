//! `rbuild run`: a container from an image in the local store (pulled if missing), in the build sandbox.

use std::process::Stdio;
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use oci::Platform;

use crate::cli::RunArgs;
use crate::worker::{snapshots, Images};

/// Runs the container and returns its exit code.
pub(crate) fn run(
    args: &RunArgs,
    store: Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
) -> Result<i32> {
    let client = registry::Client::new(registry::ClientOptions::default())?;
    let images = Images::new(
        Arc::clone(&store),
        client,
        rt.handle().clone(),
        Platform::host(),
    );
    let image = images
        .resolve(&args.image)
        .with_context(|| format!("image {}", args.image))?;
    let layers = images.fetch_layers(&image)?;
    let cfg = &image.config.config;

    let entrypoint: Vec<String> = match &args.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => cfg.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = if args.command.is_empty() {
        if args.entrypoint.is_some() {
            vec![]
        } else {
            cfg.cmd.clone().unwrap_or_default()
        }
    } else {
        args.command.clone()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(anyhow!(
            "no command given and image {} has no ENTRYPOINT or CMD",
            args.image
        ));
    }
    let mut run_cfg = cfg.clone();
    for kv in &args.env {
        match kv.split_once('=') {
            Some((k, v)) => run_cfg.env_set(k, v),
            None => {
                if let Ok(v) = std::env::var(kv) {
                    run_cfg.env_set(kv, &v);
                }
            }
        }
    }
    let mut lowers = snapshots(&store, &layers)?;
    if lowers.is_empty() {
        lowers.push(store.empty_dir()?);
    }
    let tmp = store.tmp_dir()?;
    let upper = tmp.path().join("upper");
    let work = tmp.path().join("work");
    fs_err::create_dir(&upper)?;
    fs_err::create_dir(&work)?;
    let spec = runner::Spec {
        lowers,
        upper,
        work,
        args: argv,
        env: run_cfg.env.clone().unwrap_or_default(),
        cwd: args
            .workdir
            .clone()
            .or_else(|| cfg.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: args
            .user
            .clone()
            .or_else(|| cfg.user.clone())
            .unwrap_or_default(),
        hostname: String::new(),
        network: match args.network.as_str() {
            "none" => runner::Network::None,
            "host" | "default" => runner::Network::Host,
            other => return Err(anyhow!("--network {other:?}: expected host or none")),
        },
        mounts: Vec::new(),
        readonly_rootfs: false,
        no_new_privs: false,
        seccomp: runner::Seccomp::Default,
    };
    let exe = std::env::current_exe().context("locating the rbuild executable")?;
    let mut child = runner::spawn(
        &spec,
        &exe,
        Stdio::inherit(),
        Stdio::inherit(),
        Stdio::inherit(),
    )
    .context("starting the container")?;
    // Forward termination signals to the sandbox's outside process, which relays them to PID 1's child.
    let pid = child.id();
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        loop {
            let sig = tokio::select! {
                _ = term.recv() => rustix::process::Signal::TERM,
                _ = int.recv() => rustix::process::Signal::INT,
                _ = hup.recv() => rustix::process::Signal::HUP,
            };
            if let Some(p) = rustix::process::Pid::from_raw(pid.cast_signed()) {
                // The child may have just exited; then there is nothing left to signal.
                let _ = rustix::process::kill_process(p, sig);
            }
        }
    });
    let status = child.wait().context("waiting for the container")?;
    drop(tmp);
    Ok(status.code().unwrap_or(128))
}
