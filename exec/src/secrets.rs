//! Build secrets (`--secret`) and SSH agent sockets (`--ssh`) for `RUN --mount=type=secret|ssh`.
//!
//! Only ids enter the build graph, cache keys and records; values are read when a RUN needs
//! them and go to the sandbox over its spec pipe, onto a tmpfs private to the sandbox.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _, Result};

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// The secrets and SSH sockets given on the command line, by id.
#[derive(Debug, Default)]
pub struct Secrets {
    secrets: HashMap<String, SecretSource>,
    ssh: HashMap<String, PathBuf>,
}

impl Secrets {
    /// Parses `--secret` values (`id=x,src=FILE`, `id=x,env=VAR`, `id=x` — the variable `x` if
    /// set, else the file `x`) and `--ssh` values (`default`, `ID=SOCKET`).
    pub fn parse(secrets: &[String], ssh: &[String]) -> Result<Self> {
        let mut out = Self::default();
        for spec in secrets {
            let (id, source) = parse_secret(spec).with_context(|| format!("--secret {spec}"))?;
            out.secrets.insert(id, source);
        }
        for spec in ssh {
            let (id, path) = match spec.split_once('=') {
                Some((id, path)) => (id.to_owned(), PathBuf::from(path)),
                None => {
                    let sock = std::env::var_os("SSH_AUTH_SOCK").ok_or_else(|| {
                        anyhow!("--ssh {spec}: SSH_AUTH_SOCK is not set (start ssh-agent or give {spec}=SOCKET)")
                    })?;
                    (spec.clone(), PathBuf::from(sock))
                }
            };
            if path.to_string_lossy().contains(',') {
                bail!("--ssh {spec}: only one agent socket per id is supported");
            }
            out.ssh.insert(id, path);
        }
        Ok(out)
    }

    /// The ids of the `--secret`s and `--ssh` sockets given, sorted (never their values).
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .secrets
            .keys()
            .chain(self.ssh.keys())
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// The value of secret `id`, or `None` when it was not given.
    pub fn value(&self, id: &str) -> Result<Option<Vec<u8>>> {
        match self.secrets.get(id) {
            None => Ok(None),
            Some(SecretSource::File(path)) => fs_err::read(path)
                .map(Some)
                .with_context(|| format!("reading secret {id}")),
            Some(SecretSource::Env(var)) => std::env::var_os(var)
                .map(|v| Some(std::os::unix::ffi::OsStringExt::into_vec(v)))
                .ok_or_else(|| anyhow!("secret {id}: environment variable {var} is not set")),
        }
    }

    /// The agent socket for SSH id `id`, or `None` when it was not given.
    pub fn ssh_socket(&self, id: &str) -> Result<Option<PathBuf>> {
        let Some(path) = self.ssh.get(id) else {
            return Ok(None);
        };
        let meta = fs_err::metadata(path).with_context(|| format!("ssh {id}"))?;
        if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
            bail!(
                "ssh {id}: {} is not an agent socket (key files are not supported; load them into ssh-agent)",
                path.display()
            );
        }
        Ok(Some(path.clone()))
    }
}

fn parse_secret(spec: &str) -> Result<(String, SecretSource)> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut typ = None;
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| anyhow!("expected key=value, got {field:?}"))?;
        match k.trim() {
            "id" => id = Some(v.to_owned()),
            "src" | "source" => src = Some(v.to_owned()),
            "env" => env = Some(v.to_owned()),
            "type" => typ = Some(v.to_owned()),
            other => bail!("unknown key {other:?} (expected id, src, env or type)"),
        }
    }
    let id = id
        .or_else(|| src.clone())
        .or_else(|| env.clone())
        .ok_or_else(|| anyhow!("id is required"))?;
    let source = match (typ.as_deref(), src, env) {
        (_, Some(_), Some(_)) => bail!("give src or env, not both"),
        (Some("env"), Some(v), None) | (_, None, Some(v)) => SecretSource::Env(v),
        (Some("file") | None, Some(p), None) => SecretSource::File(p.into()),
        (Some("env"), None, None) => SecretSource::Env(id.clone()),
        (Some("file"), None, None) => SecretSource::File(id.clone().into()),
        (None, None, None) => {
            if std::env::var_os(&id).is_some() {
                SecretSource::Env(id.clone())
            } else {
                SecretSource::File(id.clone().into())
            }
        }
        (Some(t), _, _) => bail!("unknown type {t:?} (expected file or env)"),
    };
    Ok((id, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_forms() {
        let s = |v: &str| parse_secret(v).unwrap();
        assert_eq!(
            s("id=a,src=/f"),
            ("a".into(), SecretSource::File("/f".into()))
        );
        assert_eq!(
            s("id=a,source=/f"),
            ("a".into(), SecretSource::File("/f".into()))
        );
        assert_eq!(
            s("id=a,env=TOKEN"),
            ("a".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            s("id=a,type=env,src=T"),
            ("a".into(), SecretSource::Env("T".into()))
        );
        assert_eq!(
            s("id=rbuild-test-surely-unset"),
            (
                "rbuild-test-surely-unset".into(),
                SecretSource::File("rbuild-test-surely-unset".into())
            )
        );
        assert!(parse_secret("src=/f,env=X,id=a").is_err());
        assert!(parse_secret("id=a,bogus=1").is_err());
        assert!(parse_secret("type=env").is_err());
    }

    #[test]
    fn missing_ids_are_none_and_debug_shows_no_value() {
        let s = Secrets::parse(&["id=a,env=PATH".into()], &["k=/nonexistent.sock".into()]).unwrap();
        assert_eq!(s.value("b").unwrap(), None);
        assert!(s.value("a").unwrap().is_some());
        assert!(s.ssh_socket("k").is_err());
        assert_eq!(s.ssh_socket("other").unwrap(), None);
    }
}
