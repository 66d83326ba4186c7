//! `rbuild run`: a container from an image in the local store (pulled if missing), in the build sandbox.

use std::process::Stdio;
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use oci::Platform;

use crate::cli::RunArgs;
use images::{snapshots, Images};

/// How long a stopped container may take before it is killed.
const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

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
    let mut pairs = Vec::new();
    for file in &args.env_files {
        pairs.extend(read_env_file(&fs_err::read_to_string(file)?));
    }
    pairs.extend(args.env.iter().cloned());
    for kv in &pairs {
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
    let security = security_opts(&args.security_opts)?;
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
        mounts: args
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<_>>()?,
        readonly_rootfs: false,
        no_new_privs: security.no_new_privs,
        seccomp: security.seccomp,
        tty: args.tty,
        isolation: args.isolation.runner(),
    };
    let exe = std::env::current_exe().context("locating the rbuild executable")?;
    let (stdin, stdout, stderr, relay) = if args.tty {
        let (master, slave) = runner::open_pty().context("allocating a pty")?;
        let relay = relay_pty(master, args.interactive)?;
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
    // The first SIGTERM/SIGINT/SIGHUP goes to the command (through the sandbox's init). If the
    // command ignores it, a second signal or a 10 s grace kills the sandbox: SIGKILL to its
    // outside process, whose PID 1 dies with it (parent death signal), and with PID 1 every
    // process of the pid namespace.
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
        let Some(p) = rustix::process::Pid::from_raw(pid.cast_signed()) else {
            return;
        };
        let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let grace = async {
                match deadline.as_mut() {
                    Some(d) => d.await,
                    None => std::future::pending().await,
                }
            };
            let sig = tokio::select! {
                _ = term.recv() => rustix::process::Signal::TERM,
                _ = int.recv() => rustix::process::Signal::INT,
                _ = hup.recv() => rustix::process::Signal::HUP,
                () = grace => rustix::process::Signal::KILL,
            };
            let sig = if deadline.is_some() {
                rustix::process::Signal::KILL
            } else {
                deadline = Some(Box::pin(tokio::time::sleep(GRACE)));
                sig
            };
            // The child may have just exited; then there is nothing left to signal.
            let _ = rustix::process::kill_process(p, sig);
            if sig == rustix::process::Signal::KILL {
                return;
            }
        }
    });
    let status = child.wait().context("waiting for the container")?;
    drop(relay);
    drop(tmp);
    Ok(status.code().unwrap_or(128))
}

/// `KEY=value` (or bare `KEY`, taken from our environment) lines of a Docker env file.
fn read_env_file(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// `-v HOST:CTR[:ro|:rw]`: a bind mount of an absolute host path.
fn parse_volume(v: &str) -> Result<runner::MountSpec> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, target, readonly) = match parts.as_slice() {
        [h, t] => (*h, *t, false),
        [h, t, "ro"] => (*h, *t, true),
        [h, t, "rw"] => (*h, *t, false),
        _ => return Err(anyhow!("-v {v:?}: expected HOST:CONTAINER[:ro]")),
    };
    if !host.starts_with('/') || !target.starts_with('/') {
        return Err(anyhow!(
            "-v {v:?}: both paths must be absolute (named volumes are not supported)"
        ));
    }
    let source = fs_err::canonicalize(host).with_context(|| format!("-v {v}"))?;
    Ok(runner::MountSpec::Bind {
        source,
        target: target.to_owned(),
        readonly,
    })
}

/// Copies between our stdio and the pty master until the container's side closes.
struct PtyRelay {
    output: Option<std::thread::JoinHandle<()>>,
}

impl Drop for PtyRelay {
    fn drop(&mut self) {
        if let Some(h) = self.output.take() {
            // The output thread ends at EOF/EIO once every slave descriptor is closed.
            let _ = h.join();
        }
    }
}

fn relay_pty(master: std::os::fd::OwnedFd, interactive: bool) -> Result<PtyRelay> {
    use std::io::{Read, Write};
    let mut reader = std::fs::File::from(master);
    if interactive {
        let mut writer = reader.try_clone()?;
        // Detached: it blocks on our stdin, which may never close.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 || writer.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let output = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdout = std::io::stdout();
        // EIO once the last slave descriptor is closed: the normal end.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || stdout.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = stdout.flush(); // a closed stdout ends the loop on the next write
        }
    });
    Ok(PtyRelay {
        output: Some(output),
    })
}

/// What `--security-opt` asked for.
struct Security {
    no_new_privs: bool,
    seccomp: runner::Seccomp,
}

/// `--security-opt` values, as docker run spells them: `no-new-privileges[=true|false]`,
/// `seccomp=unconfined`; others are refused by name.
fn security_opts(opts: &[String]) -> Result<Security> {
    let mut out = Security {
        no_new_privs: false,
        seccomp: runner::Seccomp::Default,
    };
    for o in opts {
        match o.as_str() {
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                out.no_new_privs = true;
            }
            "no-new-privileges=false" | "no-new-privileges:false" => out.no_new_privs = false,
            "seccomp=unconfined" | "seccomp:unconfined" => {
                out.seccomp = runner::Seccomp::Unconfined
            }
            other => {
                return Err(anyhow!(
                "--security-opt {other:?}: supported are no-new-privileges and seccomp=unconfined"
            ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_and_env_files() {
        assert_eq!(
            parse_volume("/tmp:/data:ro").unwrap(),
            runner::MountSpec::Bind {
                source: fs_err::canonicalize("/tmp").unwrap(),
                target: "/data".into(),
                readonly: true
            }
        );
        assert!(parse_volume("/tmp:/data").is_ok());
        assert!(parse_volume("named:/data").is_err());
        assert!(parse_volume("/tmp:/data:xx").is_err());
        assert_eq!(
            read_env_file("# c\nA=1\n\n  B=two words\nC\n"),
            ["A=1", "B=two words", "C"]
        );
    }
}
