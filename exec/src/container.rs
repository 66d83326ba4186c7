//! Containers from images (`rbuild run`): the runner spec an image's config and `docker run`-style
//! options make, and the relays around the running sandbox (signals, a pty).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use oci::ImageConfig;

/// How long a stopped container may take before it is killed.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// What `docker run` options ask of a container, as text from the command line.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `--entrypoint` (empty: none).
    pub entrypoint: Option<String>,
    /// The command and its arguments (empty: the image's CMD).
    pub command: Vec<String>,
    /// `-e KEY=VALUE` / `-e KEY` (taken from our environment), after the `--env-file` lines.
    pub env: Vec<String>,
    /// `--env-file` paths.
    pub env_files: Vec<PathBuf>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-u`.
    pub user: Option<String>,
    /// `--network`: `host` (or `default`) or `none`.
    pub network: String,
    /// `-v HOST:CTR[:ro|:rw]`.
    pub volumes: Vec<String>,
    /// `--security-opt`.
    pub security_opts: Vec<String>,
    /// `-t`.
    pub tty: bool,
    /// `--isolation`.
    pub isolation: runner::Isolation,
}

/// The runner spec of a container of an image whose config is `config` (`image` names it in errors),
/// on the snapshot dirs `lowers` with a fresh `upper` and `work` dir.
pub fn spec(
    image: &str,
    config: &ImageConfig,
    opts: &Options,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
) -> Result<runner::Spec> {
    let cfg = &config.config;
    let entrypoint: Vec<String> = match &opts.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.clone()],
        None => cfg.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = match (opts.command.is_empty(), opts.entrypoint.is_some()) {
        (false, _) => opts.command.clone(),
        (true, true) => vec![],
        (true, false) => cfg.cmd.clone().unwrap_or_default(),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(anyhow!(
            "no command given and image {image} has no ENTRYPOINT or CMD"
        ));
    }
    let mut run_cfg = cfg.clone();
    let mut pairs = Vec::new();
    for file in &opts.env_files {
        pairs.extend(read_env_file(&fs_err::read_to_string(file)?));
    }
    pairs.extend(opts.env.iter().cloned());
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
    let security = security_opts(&opts.security_opts)?;
    Ok(runner::Spec {
        lowers,
        upper,
        work,
        args: argv,
        env: run_cfg.env.clone().unwrap_or_default(),
        cwd: opts
            .workdir
            .clone()
            .or_else(|| cfg.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        user: opts
            .user
            .clone()
            .or_else(|| cfg.user.clone())
            .unwrap_or_default(),
        hostname: String::new(),
        network: match opts.network.as_str() {
            "none" => runner::Network::None,
            "host" | "default" => runner::Network::Host,
            other => return Err(anyhow!("--network {other:?}: expected host or none")),
        },
        mounts: opts
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<Result<_>>()?,
        readonly_rootfs: false,
        no_new_privs: security.no_new_privs,
        seccomp: security.seccomp,
        tty: opts.tty,
        isolation: opts.isolation,
        extra_hosts: vec![],
        limits: runner::Limits::default(),
        capabilities: runner::Capabilities::Default,
        devices: vec![],
    })
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
    let source = fs_err::canonicalize(Path::new(host)).with_context(|| format!("-v {v}"))?;
    Ok(runner::MountSpec::Bind {
        source,
        target: target.to_owned(),
        readonly,
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
                out.seccomp = runner::Seccomp::Unconfined;
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

/// Copies between our stdio and a pty master until the container's side closes; joins the output
/// thread when dropped.
pub struct PtyRelay {
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

/// Starts relaying the pty `master` to stdout (and stdin to it when `interactive`).
pub fn relay_pty(master: std::os::fd::OwnedFd, interactive: bool) -> Result<PtyRelay> {
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

/// Forwards SIGTERM/SIGINT/SIGHUP to the sandbox's outside process `pid` (its init passes them to the
/// command). If the command ignores it, a second signal or a [`GRACE`] period kills the sandbox: SIGKILL
/// to the outside process, whose PID 1 dies with it (parent death signal), and with PID 1 every process
/// of the pid namespace. Runs until then; spawn it on the runtime.
pub async fn forward_signals(pid: u32) {
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

    fn config(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let mut c = ImageConfig::scratch();
        c.config.entrypoint =
            (!entrypoint.is_empty()).then(|| entrypoint.iter().map(|s| (*s).to_owned()).collect());
        c.config.cmd = (!cmd.is_empty()).then(|| cmd.iter().map(|s| (*s).to_owned()).collect());
        c.config.working_dir = Some("/app".into());
        c.config.env = Some(vec!["A=image".into(), "B=image".into()]);
        c
    }

    fn argv(c: &ImageConfig, opts: &Options) -> Result<Vec<String>> {
        spec("img", c, opts, vec![], "/u".into(), "/w".into()).map(|s| s.args)
    }

    /// docker run's rules: the command replaces CMD, `--entrypoint` replaces ENTRYPOINT and drops CMD,
    /// `--entrypoint ''` clears it; `-e` overrides the image's ENV; `-w` the WORKDIR.
    #[test]
    fn entrypoint_cmd_env_and_workdir_follow_docker_run() {
        let c = config(&["/entry"], &["default"]);
        let opts = Options {
            network: "host".into(),
            ..Options::default()
        };
        assert_eq!(argv(&c, &opts).unwrap(), ["/entry", "default"]);
        let with_cmd = Options {
            command: vec!["x".into()],
            ..opts.clone()
        };
        assert_eq!(argv(&c, &with_cmd).unwrap(), ["/entry", "x"]);
        let other_entry = Options {
            entrypoint: Some("/other".into()),
            ..opts.clone()
        };
        assert_eq!(argv(&c, &other_entry).unwrap(), ["/other"]);
        let cleared = Options {
            entrypoint: Some(String::new()),
            command: vec!["sh".into()],
            ..opts.clone()
        };
        assert_eq!(argv(&c, &cleared).unwrap(), ["sh"]);
        let none = config(&[], &[]);
        let e = argv(&none, &opts).unwrap_err().to_string();
        assert!(e.contains("no ENTRYPOINT or CMD"), "{e}");
        let s = spec(
            "img",
            &c,
            &Options {
                env: vec!["B=flag".into()],
                workdir: Some("/w2".into()),
                ..opts.clone()
            },
            vec![],
            "/u".into(),
            "/w".into(),
        )
        .unwrap();
        assert_eq!(s.env, ["A=image", "B=flag"]);
        assert_eq!(s.cwd, "/w2");
        assert_eq!(
            spec("img", &c, &opts, vec![], "/u".into(), "/w".into())
                .unwrap()
                .cwd,
            "/app"
        );
        let bad = Options {
            network: "bridge".into(),
            ..opts.clone()
        };
        assert!(argv(&c, &bad)
            .unwrap_err()
            .to_string()
            .contains("--network"));
        let bad = Options {
            security_opts: vec!["apparmor=x".into()],
            ..opts
        };
        assert!(argv(&c, &bad)
            .unwrap_err()
            .to_string()
            .contains("--security-opt"));
    }
}
