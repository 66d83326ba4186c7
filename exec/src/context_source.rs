//! Where a build context comes from: a directory, a git repository, a tarball URL or stdin.
//!
//! Every form ends as a directory that [`crate::Context::load`] lists with the `.dockerignore` rules, so
//! remote contexts behave exactly as local ones: a git checkout (the commit the reference resolves to,
//! shallow, `.git` left out unless kept, see [`crate::GitSources`]) or an unpacked tarball lands in a
//! scratch directory of the store that lives as long as the [`OpenContext`]. Cache keys follow the
//! content: COPY keys hash the files read, never where they came from.
//!
//! The forms, as buildx and kaniko spell them:
//!
//! | spelling | context |
//! |---|---|
//! | `DIR`, `dir://DIR` (kaniko) | a local directory |
//! | `https://host/org/repo.git#ref:subdir`, `git@host:org/repo.git#ref`, `git://…`, `ssh://…` | a git repository |
//! | `https://host/ctx.tar.gz` (any other http(s) URL) | a tarball (plain, gzip, bzip2, xz, zstd); a plain-text file is a Dockerfile with an empty context |
//! | `-` | stdin: a tarball as above, or a Dockerfile with an empty context |
//! | `tar://FILE` (kaniko) | a local tarball |

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};

/// A build context as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A local directory.
    Dir(PathBuf),
    /// A git repository (`reference` and `subdir` from the `#ref:subdir` fragment).
    Git(graph::Git),
    /// An http(s) URL of a tarball (or of a Dockerfile).
    Url(String),
    /// A local tarball (kaniko's `tar://`).
    TarFile(PathBuf),
    /// Stdin (`-`): a tarball or a Dockerfile.
    Stdin,
}

/// Whether `s` names a git repository, by buildx's rules: `git://`, `git@`, `ssh://`, `github.com/`, or
/// an http(s) URL whose path ends in `.git` (before any `#fragment`).
fn is_git_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    if ["git://", "git@", "ssh://", "github.com/"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        return true;
    }
    (lower.starts_with("https://") || lower.starts_with("http://"))
        && lower.split('#').next().is_some_and(|u| u.ends_with(".git"))
}

/// Splits `remote#ref:subdir` into a [`graph::Git`]; a `..` in the subdir is refused.
fn parse_git(s: &str, keep_git_dir: bool) -> Result<graph::Git> {
    let (remote, fragment) = match s.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (s, None),
    };
    // `github.com/org/repo` is https, as buildx reads it.
    let remote = if remote.to_ascii_lowercase().starts_with("github.com/") {
        format!("https://{remote}")
    } else {
        remote.to_owned()
    };
    let clean = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    let (reference, subdir) = match fragment {
        None => (None, None),
        Some(f) => match f.split_once(':') {
            Some((r, d)) => (clean(r), clean(d.trim_matches('/'))),
            None => (clean(f), None),
        },
    };
    if let Some(d) = &subdir {
        if d.split('/').any(|p| p == "..") {
            bail!("build context {s}: the subdirectory {d:?} leaves the repository");
        }
    }
    Ok(graph::Git {
        remote,
        reference,
        subdir,
        keep_git_dir,
        checksum: None,
    })
}

impl ContextSource {
    /// Reads a context argument. `keep_git_dir` is `BUILDKIT_CONTEXT_KEEP_GIT_DIR` (a build arg in buildx).
    pub fn parse(s: &str, keep_git_dir: bool) -> Result<Self> {
        if s == "-" {
            return Ok(Self::Stdin);
        }
        if let Some(path) = s.strip_prefix("tar://") {
            return Ok(Self::TarFile(PathBuf::from(path)));
        }
        if let Some(path) = s.strip_prefix("dir://") {
            return Ok(Self::Dir(PathBuf::from(path)));
        }
        if is_git_url(s) {
            return Ok(Self::Git(parse_git(s, keep_git_dir)?));
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            return Ok(Self::Url(s.to_owned()));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            bail!(
                "build context {s}: unsupported scheme {scheme}:// (a directory, a git URL, an http(s) \
                 tarball URL, `-` for stdin, tar://FILE or dir://DIR)"
            );
        }
        Ok(Self::Dir(PathBuf::from(s)))
    }

    /// Whether the context is a directory of the host (its files may change between builds, so the stat
    /// cache applies).
    pub fn is_local_dir(&self) -> bool {
        matches!(self, Self::Dir(_))
    }
}

/// Opens the context argument `context` with the Dockerfile of `-f` (`file`; `-` is stdin); a git
/// checkout keeps `.git` when `BUILDKIT_CONTEXT_KEEP_GIT_DIR` is 1 or true (the environment, or a build
/// arg as buildx passes it).
pub fn open(
    context: &str,
    file: Option<&Path>,
    build_args: &std::collections::BTreeMap<String, String>,
    store: &std::sync::Arc<cache::Store>,
    rt: &tokio::runtime::Handle,
) -> Result<OpenContext> {
    let keep_git = std::env::var("BUILDKIT_CONTEXT_KEEP_GIT_DIR")
        .ok()
        .or_else(|| build_args.get("BUILDKIT_CONTEXT_KEEP_GIT_DIR").cloned())
        .is_some_and(|v| matches!(v.as_str(), "1" | "true"));
    Opener {
        store,
        rt,
        stdin: None,
    }
    .open(
        &ContextSource::parse(context, keep_git)?,
        &DockerfileSource::from_flag(file),
    )
}

/// Where the Dockerfile comes from: `-f FILE`, `-f -` (stdin), or `Dockerfile` in the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerfileSource {
    Default,
    Path(PathBuf),
    Stdin,
}

impl DockerfileSource {
    pub fn from_flag(file: Option<&Path>) -> Self {
        match file {
            None => Self::Default,
            Some(p) if p == Path::new("-") => Self::Stdin,
            Some(p) => Self::Path(p.to_owned()),
        }
    }
}

/// A context ready to be listed: its root directory, the Dockerfile and its `.dockerignore`.
pub struct OpenContext {
    /// The context root: the directory given, or a scratch directory holding the remote content.
    pub root: PathBuf,
    /// The Dockerfile's path as shown to the user (`-` for stdin; `URL#path` inside a remote context).
    pub dockerfile_label: String,
    /// The Dockerfile's path on disk when there is one (for `<Dockerfile>.dockerignore` and the stat
    /// identities of steps).
    pub dockerfile_path: PathBuf,
    pub dockerfile_text: String,
    /// The `.dockerignore` rules (`<Dockerfile>.dockerignore` first, then the context's).
    pub ignore: frontend::DockerIgnore,
    /// The context is on the host as given (not a copy): the stat cache applies.
    pub local: bool,
    /// Keeps the scratch directory of a remote or stdin context until the build is done.
    _scratch: Option<tempfile::TempDir>,
}

impl OpenContext {
    /// The Dockerfile's identity for explaining cache misses across builds: its path, or for a remote
    /// context (whose scratch dir changes every build) its label.
    pub fn identity(&self) -> PathBuf {
        if self.local {
            self.dockerfile_path.clone()
        } else {
            PathBuf::from(&self.dockerfile_label)
        }
    }
}

/// What opening a context may need: the store (scratch space, downloads) and the runtime for downloads.
pub struct Opener<'a> {
    pub store: &'a std::sync::Arc<cache::Store>,
    pub rt: &'a tokio::runtime::Handle,
    /// Read instead of the process's stdin (tests); `None` reads stdin.
    pub stdin: Option<Box<dyn std::io::Read + 'a>>,
}

impl Opener<'_> {
    /// Opens `source` with the Dockerfile from `dockerfile`; stdin may be read by one of them only.
    pub fn open(
        mut self,
        source: &ContextSource,
        dockerfile: &DockerfileSource,
    ) -> Result<OpenContext> {
        if *source == ContextSource::Stdin && *dockerfile == DockerfileSource::Stdin {
            bail!("the build context and the Dockerfile (-f -) cannot both be read from stdin");
        }
        let wants_stdin = *source == ContextSource::Stdin || *dockerfile == DockerfileSource::Stdin;
        if wants_stdin
            && self.stdin.is_none()
            && std::io::IsTerminal::is_terminal(&std::io::stdin())
        {
            bail!("`-` reads the build context or Dockerfile from stdin, which is a terminal: pipe one in");
        }
        let mut stdin_dockerfile = None;
        if *dockerfile == DockerfileSource::Stdin {
            let mut text = String::new();
            self.stdin_reader()
                .read_to_string(&mut text)
                .context("reading the Dockerfile from stdin")?;
            stdin_dockerfile = Some(text);
        }
        let (root, scratch, context_dockerfile, label) = self.materialize(source)?;
        let (dockerfile_path, dockerfile_label, dockerfile_text) =
            match (stdin_dockerfile, context_dockerfile, dockerfile) {
                (Some(text), _, _) => (root.join(".rbuild-stdin-Dockerfile"), "-".to_owned(), text),
                (None, Some(text), DockerfileSource::Default) => (
                    root.join("Dockerfile"),
                    label.clone().unwrap_or_default(),
                    text,
                ),
                (None, Some(_), _) => bail!(
                    "build context {}: the context is a Dockerfile, so -f names nothing in it",
                    label.unwrap_or_default()
                ),
                (None, None, which) => {
                    let path = match (which, &label) {
                        (DockerfileSource::Path(p), None) => p.clone(),
                        // In a remote context `-f` names a file inside it, as buildx reads it.
                        (DockerfileSource::Path(p), Some(_)) => {
                            root.join(crate::context::clean_rel(&p.to_string_lossy())?)
                        }
                        _ => root.join("Dockerfile"),
                    };
                    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
                        std::io::ErrorKind::NotFound => match &label {
                            Some(l) => anyhow!(
                                "Dockerfile not found in build context {l}: {}",
                                path.strip_prefix(&root).unwrap_or(&path).display()
                            ),
                            None => anyhow!("Dockerfile not found: {}", path.display()),
                        },
                        _ => anyhow!(e).context(format!("reading {}", path.display())),
                    })?;
                    let shown = match &label {
                        Some(l) => format!(
                            "{l}#{}",
                            path.strip_prefix(&root).unwrap_or(&path).display()
                        ),
                        None => path.display().to_string(),
                    };
                    (path, shown, text)
                }
            };
        let ignore = crate::context::read_dockerignore(&dockerfile_path, &root)?;
        Ok(OpenContext {
            root,
            dockerfile_label,
            dockerfile_path,
            dockerfile_text,
            ignore,
            local: source.is_local_dir(),
            _scratch: scratch,
        })
    }

    /// The context's files in a directory: the directory given, or a scratch dir of the store with the
    /// checkout or the unpacked tarball; with the Dockerfile's text when the source was one, and the
    /// label of a remote source.
    #[allow(clippy::type_complexity)]
    fn materialize(
        &mut self,
        source: &ContextSource,
    ) -> Result<(
        PathBuf,
        Option<tempfile::TempDir>,
        Option<String>,
        Option<String>,
    )> {
        Ok(match source {
            ContextSource::Dir(dir) => {
                if !dir.is_dir() {
                    bail!(
                        "build context {} not found or not a directory",
                        dir.display()
                    );
                }
                (dir.clone(), None, None, None)
            }
            ContextSource::Git(g) => {
                let scratch = self.store.tmp_dir()?;
                let root = scratch.path().join("context");
                fs_err::create_dir(&root)?;
                crate::GitSources::default()
                    .checkout(g, scratch.path(), &root)
                    .with_context(|| format!("build context {}", g.remote))?;
                let shown = g.remote.clone();
                (root, Some(scratch), None, Some(shown))
            }
            ContextSource::Url(url) => {
                let scratch = self.store.tmp_dir()?;
                let file = scratch.path().join("download");
                crate::Downloads::new(std::sync::Arc::clone(self.store), self.rt.clone())
                    .download_to(url, &file)
                    .with_context(|| format!("build context {url}"))?;
                let (root, text) = unpack_or_dockerfile(&file, scratch.path())
                    .with_context(|| format!("build context {url}"))?;
                (root, Some(scratch), text, Some(url.clone()))
            }
            ContextSource::TarFile(path) => {
                let scratch = self.store.tmp_dir()?;
                let root = scratch.path().join("context");
                let kind = crate::copy::archive_kind(path)
                    .with_context(|| format!("build context tar://{}", path.display()))?
                    .ok_or_else(|| {
                        anyhow!("build context tar://{}: not a tar archive", path.display())
                    })?;
                crate::copy::unpack_archive(path, kind, &root)
                    .with_context(|| format!("unpacking build context {}", path.display()))?;
                (
                    root,
                    Some(scratch),
                    None,
                    Some(format!("tar://{}", path.display())),
                )
            }
            ContextSource::Stdin => {
                let scratch = self.store.tmp_dir()?;
                let file = scratch.path().join("stdin");
                let mut out = fs_err::File::create(&file)?;
                std::io::copy(&mut self.stdin_reader(), &mut out)
                    .context("reading the build context from stdin")?;
                drop(out);
                let (root, text) = unpack_or_dockerfile(&file, scratch.path())
                    .context("build context from stdin")?;
                (root, Some(scratch), text, Some("-".to_owned()))
            }
        })
    }

    /// The files of a named context (`--build-context NAME=DIR|URL`): its directory, and the scratch
    /// dir holding it (to keep until the build is done).
    pub fn open_tree(
        mut self,
        source: &ContextSource,
    ) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
        if *source == ContextSource::Stdin {
            bail!("a named context cannot be read from stdin");
        }
        let (root, scratch, dockerfile, label) = self.materialize(source)?;
        if dockerfile.is_some() {
            bail!("{}: not a tar archive", label.unwrap_or_default());
        }
        Ok((root, scratch))
    }

    fn stdin_reader(&mut self) -> Box<dyn std::io::Read + '_> {
        match self.stdin.as_mut() {
            Some(r) => Box::new(r),
            None => Box::new(std::io::stdin().lock()),
        }
    }
}

/// Unpacks `file` into `scratch/context` when it is a tar archive (plain or compressed, detected by
/// content as docker does); otherwise it is a Dockerfile, returned as text with an empty context.
fn unpack_or_dockerfile(file: &Path, scratch: &Path) -> Result<(PathBuf, Option<String>)> {
    let root = scratch.join("context");
    if let Some(kind) = crate::copy::archive_kind(file)? {
        crate::copy::unpack_archive(file, kind, &root)?;
        return Ok((root, None));
    }
    let bytes = fs_err::read(file)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow!("neither a tar archive (plain, gzip, bzip2, xz, zstd) nor a Dockerfile")
    })?;
    fs_err::create_dir(&root)?;
    Ok((root, Some(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(s: &str) -> graph::Git {
        match ContextSource::parse(s, false).unwrap() {
            ContextSource::Git(g) => g,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn context_forms_are_told_apart_as_buildx_does() {
        let g = git("https://host/org/repo.git#v1:sub/dir");
        assert_eq!(g.remote, "https://host/org/repo.git");
        assert_eq!(g.reference.as_deref(), Some("v1"));
        assert_eq!(g.subdir.as_deref(), Some("sub/dir"));
        let g = git("git@host:org/repo.git#main");
        assert_eq!(
            (g.remote.as_str(), g.reference.as_deref(), g.subdir),
            ("git@host:org/repo.git", Some("main"), None)
        );
        let g = git("git://127.0.0.1:9418/r.git#:docs");
        assert_eq!((g.reference, g.subdir.as_deref()), (None, Some("docs")));
        assert_eq!(
            git("github.com/moby/buildkit").remote,
            "https://github.com/moby/buildkit"
        );
        assert_eq!(
            ContextSource::parse("https://host/ctx.tar.gz", false).unwrap(),
            ContextSource::Url("https://host/ctx.tar.gz".into())
        );
        assert_eq!(
            ContextSource::parse("-", false).unwrap(),
            ContextSource::Stdin
        );
        assert_eq!(
            ContextSource::parse("tar:///ci/ctx.tar", false).unwrap(),
            ContextSource::TarFile("/ci/ctx.tar".into())
        );
        assert_eq!(
            ContextSource::parse("dir://app", false).unwrap(),
            ContextSource::Dir("app".into())
        );
        assert_eq!(
            ContextSource::parse("./app", false).unwrap(),
            ContextSource::Dir("./app".into())
        );
    }

    #[test]
    fn bad_contexts_name_the_problem() {
        let e = ContextSource::parse("s3://bucket/ctx.tar.gz", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported scheme s3://"), "{e}");
        let e = ContextSource::parse("https://h/r.git#main:../x", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("leaves the repository"), "{e}");
    }
}
