//! `rbuild login` and `rbuild logout`: credentials in Docker's config.json, checked before they are saved.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};

use crate::cli::LoginArgs;

/// The registry a `login`/`logout` argument names; none means Docker Hub, as in docker.
fn registry_host(arg: Option<&str>) -> String {
    registry::normalise_host(arg.unwrap_or(oci::DOCKER_HUB))
}

fn config_path() -> Result<PathBuf> {
    registry::default_docker_config()
        .ok_or_else(|| anyhow!("no place for credentials: set DOCKER_CONFIG or HOME"))
}

/// Checks the credentials against the registry and saves them; nothing is written when they are refused.
pub(crate) fn login(args: &LoginArgs, rt: &tokio::runtime::Runtime) -> Result<()> {
    let host = registry_host(args.registry.as_deref());
    let stdin = std::io::stdin();
    let username = match &args.username {
        Some(u) => u.clone(),
        None if !args.password_stdin && stdin.is_terminal() => prompt("Username: ", Echo::On)?,
        None => bail!("login to {host} needs a user name: pass -u USER"),
    };
    if username.is_empty() {
        bail!("login to {host}: the user name is empty");
    }
    let password = if args.password_stdin {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(p) = &args.password {
        eprintln!(
            "WARNING! Using --password on the command line is insecure. Use --password-stdin."
        );
        p.clone()
    } else if stdin.is_terminal() {
        prompt("Password: ", Echo::Off)?
    } else {
        bail!("login to {host} needs a password: pass --password-stdin (or -p PASSWORD)");
    };
    if password.is_empty() {
        bail!("login to {host}: the password is empty");
    }
    let client =
        registry::Client::new(args.registry_args.client_options(&args.insecure_registries))?;
    rt.block_on(client.check_login(&host, &username, &password))
        .with_context(|| format!("logging in to {host}"))?;
    let path = config_path()?;
    registry::login(&path, &host, &username, &password)?;
    eprintln!("credentials saved in {}", path.display());
    eprintln!("Login Succeeded");
    Ok(())
}

/// Removes the saved credentials of the registry.
pub(crate) fn logout(registry: Option<&str>) -> Result<()> {
    let host = registry_host(registry);
    let path = config_path()?;
    if registry::logout(&path, &host)? {
        eprintln!("Removing login credentials for {host}");
    } else {
        eprintln!("Not logged in to {host}");
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Echo {
    On,
    Off,
}

/// Asks on the terminal (stdin) and reads one line; with [`Echo::Off`] the typed text is not shown.
fn prompt(question: &str, echo: Echo) -> Result<String> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    // stty acts on its stdin, the terminal we read from; no termios code of our own for one prompt.
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let hidden = echo == Echo::Off && stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        stty("echo");
        eprintln!();
    }
    read.context("reading from the terminal")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
