//! `ADD <git URL> /dst`: the tree of one commit of a remote repository, with the system's `git`.
//!
//! The cache key is the commit the reference resolves to (`git ls-remote`; a full commit hash needs no
//! network), so a moved branch misses and an unchanged one hits without fetching. Only network transports
//! are allowed (https, http, git, ssh): `file://`, local paths and `ext::` would let a Dockerfile read the
//! host outside its context, and `GIT_ALLOW_PROTOCOL` holds the same line for submodules and redirects.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context as _, Result};

/// Resolutions and checkouts of the git sources of one build.
#[derive(Default)]
pub struct GitSources {
    /// (remote, reference) → commit, so the key and the checkout agree within a build.
    resolved: Mutex<HashMap<(String, Option<String>), String>>,
}

/// Whether `remote` uses a network transport we allow.
fn check_remote(remote: &str) -> Result<()> {
    let lower = remote.to_ascii_lowercase();
    let scp_like = lower.starts_with("git@") && !lower.contains("://");
    if ["https://", "http://", "git://", "ssh://"]
        .iter()
        .any(|p| lower.starts_with(p))
        || scp_like
    {
        return Ok(());
    }
    bail!(
        "git remote {remote:?} is not allowed: only https://, http://, git://, ssh:// and git@host: remotes \
         (a local or file:// repository would be read outside the build context)"
    )
}

fn is_commit(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn git() -> Command {
    let mut c = Command::new("git");
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "https:http:git:ssh")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null());
    c
}

/// Runs git, returning stdout; a failure carries git's own message.
fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("{what}: git is not installed (apt-get install git)")
        } else {
            anyhow!(e).context(what.to_owned())
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{what}: {}", err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl GitSources {
    /// The commit `g` names now: its reference as a full hash, or what the remote says the reference is.
    pub fn resolve(&self, g: &graph::Git) -> Result<String> {
        check_remote(&g.remote)?;
        let key = (g.remote.clone(), g.reference.clone());
        if let Some(c) = self.resolved.lock().expect("git lock").get(&key) {
            return Ok(c.clone());
        }
        let commit = match &g.reference {
            Some(r) if is_commit(r) => r.to_ascii_lowercase(),
            reference => {
                let wanted = reference.as_deref().unwrap_or("HEAD");
                let mut cmd = git();
                cmd.args(["ls-remote", "--", &g.remote, wanted]);
                let listing = run(cmd, &format!("resolving {wanted} of {}", g.remote))?;
                pick_ref(&listing, wanted)
                    .ok_or_else(|| anyhow!("{} has no branch or tag {wanted:?}", g.remote))?
            }
        };
        if let Some(sum) = &g.checksum {
            if !sum.eq_ignore_ascii_case(&commit) {
                bail!(
                    "{}#{} is commit {commit}, not the --checksum {sum}",
                    g.remote,
                    g.reference.as_deref().unwrap_or("HEAD")
                );
            }
        }
        self.resolved
            .lock()
            .expect("git lock")
            .insert(key, commit.clone());
        Ok(commit)
    }

    /// The content key: the commit (the remote, subdir and keep flag are in the op).
    pub fn content_key(&self, g: &graph::Git) -> Result<String> {
        Ok(format!("git-commit {}", self.resolve(g)?))
    }

    /// Checks the commit out into `dir` (its `subdir` only, when given), without `.git` unless kept.
    pub fn checkout(&self, g: &graph::Git, scratch: &Path, dir: &Path) -> Result<()> {
        let commit = self.resolve(g)?;
        let repo = scratch.join("repo");
        let mut init = git();
        init.args(["init", "-q"]).arg(&repo);
        run(init, "git init")?;
        let fetch = |target: &str, shallow: bool| {
            let mut f = git();
            f.current_dir(&repo).args(["fetch", "-q", "--no-tags"]);
            if shallow {
                f.arg("--depth=1");
            }
            f.args(["--", &g.remote, target]);
            run(f, &format!("fetching {target} from {}", g.remote))
        };
        // Servers serve an advertised ref at depth 1; a bare commit may need the whole history.
        let by_name = g.reference.as_deref().filter(|r| !is_commit(r));
        let fetched = match by_name {
            Some(name) => fetch(name, true),
            None => fetch(&commit, true),
        };
        if fetched.is_err()
            || rev(&repo, "FETCH_HEAD^{commit}").ok().as_deref() != Some(commit.as_str())
        {
            // The ref moved since it was resolved, or the server refuses a fetch by hash: fetch all.
            fetch("+refs/*:refs/remotes/origin/*", false)
                .context("fetching the repository to find the commit")?;
        }
        let mut checkout = git();
        checkout.current_dir(&repo).args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            &commit,
        ]);
        run(checkout, &format!("checking out {commit}"))?;
        if !g.keep_git_dir {
            fs_err::remove_dir_all(repo.join(".git"))?;
        }
        let src = match &g.subdir {
            Some(d) => {
                let p = repo.join(d.trim_start_matches('/'));
                // The subdir must be a real directory of the tree, not a symlink out of it.
                let meta = fs_err::symlink_metadata(&p)
                    .map_err(|_| anyhow!("{} has no directory {d:?} at {commit}", g.remote))?;
                if !meta.is_dir() {
                    bail!("{d:?} in {} is not a directory", g.remote);
                }
                p
            }
            None => repo.clone(),
        };
        for entry in fs_err::read_dir(&src)? {
            let entry = entry?;
            fs_err::rename(entry.path(), dir.join(entry.file_name()))?;
        }
        Ok(())
    }
}

fn rev(repo: &Path, name: &str) -> Result<String> {
    let mut c = git();
    c.current_dir(repo).args(["rev-parse", name]);
    Ok(run(c, "git rev-parse")?.trim().to_owned())
}

/// The commit of `wanted` in `git ls-remote` output: a branch, then a tag (peeled to its commit), then an
/// exact ref name.
fn pick_ref(listing: &str, wanted: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| {
        refs.iter()
            .find(|(_, r)| *r == name)
            .map(|(c, _)| (*c).to_owned())
    };
    find(&format!("refs/heads/{wanted}"))
        .or_else(|| find(&format!("refs/tags/{wanted}^{{}}")))
        .or_else(|| find(&format!("refs/tags/{wanted}")))
        .or_else(|| find(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_remotes_are_allowed() {
        for ok in [
            "https://github.com/moby/buildkit.git",
            "git://127.0.0.1:9418/r.git",
            "ssh://git@host/r.git",
            "git@github.com:org/r.git",
        ] {
            assert!(check_remote(ok).is_ok(), "{ok}");
        }
        for bad in [
            "file:///etc/x.git",
            "/srv/repo.git",
            "ext::sh -c id",
            "../r.git",
        ] {
            let e = check_remote(bad).unwrap_err().to_string();
            assert!(e.contains("not allowed"), "{bad}: {e}");
        }
    }

    #[test]
    fn refs_resolve_branch_then_peeled_tag() {
        let listing = "1111111111111111111111111111111111111111\tHEAD\n\
                       2222222222222222222222222222222222222222\trefs/heads/main\n\
                       3333333333333333333333333333333333333333\trefs/tags/v1\n\
                       4444444444444444444444444444444444444444\trefs/tags/v1^{}\n";
        assert_eq!(pick_ref(listing, "main").unwrap(), "2".repeat(40));
        assert_eq!(pick_ref(listing, "v1").unwrap(), "4".repeat(40));
        assert_eq!(pick_ref(listing, "HEAD").unwrap(), "1".repeat(40));
        assert!(pick_ref(listing, "nope").is_none());
    }
}
