//! The build context: which files exist after `.dockerignore`, wildcard matching of COPY sources, and the
//! content digest of exactly the files a COPY reads (blake3, internal only; never mtime).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, Context as _, Result};
use rustix::fd::OwnedFd;
use rustix::fs::{openat, statat, AtFlags, FileType, Mode, OFlags};

/// One context entry, path relative to the context root with `/` separators.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    /// Stat fields from the listing, for the stat cache (files only).
    stat: Option<cache::StatKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// The build context after `.dockerignore`, listed once per build.
pub struct Context {
    root: PathBuf,
    /// Relative path → entry, sorted, excluding ignored paths. The root itself is "".
    entries: BTreeMap<String, Entry>,
    /// Content digests already computed in this build.
    digests: Mutex<BTreeMap<String, String>>,
    /// Digests of earlier builds, by stat fields; None without a store.
    stat_cache: Option<StatCache>,
    /// Paths on disk the context leaves out (`.dockerignore`, sockets, fifos, devices), topmost only:
    /// an excluded directory is listed without its contents unless `!` patterns re-include some of them.
    /// Sorted.
    hidden: Vec<String>,
}

/// The persistent stat cache of one context: (path, ino, size, mtime, ctime) → content digest.
struct StatCache {
    store: Arc<cache::Store>,
    /// The canonical context root: the key under which this context's entries are stored.
    root: String,
    /// Entries of earlier builds, loaded on the first digest asked for.
    known: OnceLock<std::collections::HashMap<String, cache::StatEntry>>,
    /// Digests computed in this build, written back when the context is dropped.
    pending: Mutex<Vec<(String, cache::StatEntry)>>,
    /// Files whose digest came from the stat cache.
    hits: AtomicUsize,
    /// Files whose contents were read.
    reads: AtomicUsize,
}

/// A file changed less than this long before it was read is not put in the stat cache: a later write in
/// the same timestamp tick could leave every stat field equal (git's "racily clean" entries).
const RACY_NS: i64 = 2_000_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Lists one directory of the context (relative path `rel`), and its subdirectories in parallel.
///
/// Entries are stat'ed relative to the directory's descriptor (no path walk per file); with the parallel
/// descent this lists a 2,000-file context in well under half the time of a path-based walk.
fn scan_dir(
    root: &Path,
    fd: OwnedFd,
    rel: &str,
    ignore: &frontend::DockerIgnore,
    hidden: &Mutex<Vec<String>>,
) -> Result<Vec<(String, Entry)>> {
    use rayon::prelude::*;
    let shown = || root.join(rel).display().to_string();
    let mut out = Vec::new();
    let mut subdirs = Vec::new();
    let mut dir = rustix::fs::Dir::read_from(&fd)
        .map_err(|e| anyhow!("reading build context {}: {e}", shown()))?;
    while let Some(item) = dir.read() {
        let item = item.map_err(|e| anyhow!("reading build context {}: {e}", shown()))?;
        let name = item.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let name_text = String::from_utf8_lossy(name.to_bytes());
        let child = if rel.is_empty() {
            name_text.into_owned()
        } else {
            format!("{rel}/{name_text}")
        };
        let excluded = ignore.is_excluded(&child);
        let listed = item.file_type();
        if excluded && listed != FileType::Directory && listed != FileType::Unknown {
            hide(hidden, child);
            continue;
        }
        let st = statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| anyhow!("stat {}: {e}", root.join(&child).display()))?;
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => Kind::Symlink,
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::File,
            // Sockets, fifos, devices are not sent by docker either.
            _ => {
                hide(hidden, child);
                continue;
            }
        };
        if kind == Kind::Dir && (!excluded || ignore.may_include_under(&child)) {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let sub = openat(&fd, name, flags, Mode::empty()).map_err(|e| {
                anyhow!("reading build context {}: {e}", root.join(&child).display())
            })?;
            subdirs.push((sub, child.clone()));
        }
        if excluded {
            if kind != Kind::Dir || !ignore.may_include_under(&child) {
                hide(hidden, child);
            }
            continue;
        }
        let stat = (kind == Kind::File).then(|| cache::StatKey {
            ino: st.st_ino,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: st.st_mtime * 1_000_000_000 + i64::try_from(st.st_mtime_nsec).unwrap_or(0),
            ctime_ns: st.st_ctime * 1_000_000_000 + i64::try_from(st.st_ctime_nsec).unwrap_or(0),
        });
        out.push((
            child,
            Entry {
                kind,
                mode: st.st_mode & 0o7777,
                stat,
            },
        ));
    }
    let nested: Vec<Vec<(String, Entry)>> = subdirs
        .into_par_iter()
        .map(|(sub, child)| scan_dir(root, sub, &child, ignore, hidden))
        .collect::<Result<_>>()?;
    out.extend(nested.into_iter().flatten());
    Ok(out)
}

fn hide(hidden: &Mutex<Vec<String>>, rel: String) {
    hidden
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(rel);
}

impl Context {
    /// Lists `root`, applying `ignore`.
    pub fn load(root: &Path, ignore: &frontend::DockerIgnore) -> Result<Self> {
        let meta =
            std::fs::metadata(root).with_context(|| format!("build context {}", root.display()))?;
        if !meta.is_dir() {
            bail!("build context {} is not a directory", root.display());
        }
        let top = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| anyhow::anyhow!("reading build context {}: {e}", root.display()))?;
        let hidden = Mutex::new(Vec::new());
        let mut listed = scan_dir(root, top, "", ignore, &hidden)?;
        let mut hidden = hidden
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hidden.sort_unstable();
        listed.push((
            String::new(),
            Entry {
                kind: Kind::Dir,
                mode: meta.permissions().mode() & 0o7777,
                stat: None,
            },
        ));
        // Sorted first, the map is built in one pass instead of 20,000 searching inserts.
        listed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let entries: BTreeMap<String, Entry> = listed.into_iter().collect();
        Ok(Self {
            root: root.to_owned(),
            entries,
            digests: Mutex::new(BTreeMap::new()),
            stat_cache: None,
            hidden,
        })
    }

    /// Paths below the root that are on disk but not in the context (see `Context::hidden`), sorted.
    pub fn hidden(&self) -> &[String] {
        &self.hidden
    }

    /// The published digest of the context's file tree (max provenance): sha256 over what
    /// `sha256sum` prints for every regular file the build can see (`.dockerignore` applied), sorted
    /// by path bytewise, paths relative to the root — so anyone can recompute it with
    /// `find . -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum` over the
    /// same files. Directories, modes and symlinks are not part of it (COPY's cache keys cover them).
    /// Reads every file once, in parallel; the internal blake3 digests are not published.
    pub fn tree_sha256(&self) -> Result<oci::Digest> {
        use rayon::prelude::*;
        let files: Vec<&String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.kind == Kind::File)
            .map(|(p, _)| p)
            .collect();
        let sums = files
            .par_iter()
            .map(|rel| {
                let path = self.host_path(rel);
                let mut f = std::fs::File::open(&path)
                    .with_context(|| format!("reading {rel} in build context"))?;
                let mut w = oci::HashingWriter::new(std::io::sink());
                std::io::copy(&mut f, &mut w)
                    .with_context(|| format!("reading {rel} in build context"))?;
                Ok(w.finish().1)
            })
            .collect::<Result<Vec<oci::Digest>>>()?;
        let mut listing = String::new();
        for (rel, sum) in files.iter().zip(&sums) {
            // sha256sum's line: a backslash-escaped name (and a leading `\`) when it holds `\` or `\n`.
            if rel.contains(['\\', '\n']) {
                let escaped = rel.replace('\\', "\\\\").replace('\n', "\\n");
                listing.push_str(&format!("\\{}  {escaped}\n", sum.hex()));
            } else {
                listing.push_str(&format!("{}  {rel}\n", sum.hex()));
            }
        }
        Ok(oci::Digest::sha256_of(listing.as_bytes()))
    }

    /// Uses (and updates) the stat cache in `store`, so unchanged files are not read again.
    pub fn with_stat_cache(mut self, store: Arc<cache::Store>) -> Self {
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        self.stat_cache = Some(StatCache {
            store,
            root: root.to_string_lossy().into_owned(),
            known: OnceLock::new(),
            pending: Mutex::new(Vec::new()),
            hits: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
        });
        self
    }

    pub fn host_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    pub fn entry(&self, rel: &str) -> Option<&Entry> {
        self.entries.get(rel)
    }

    /// Entries strictly below directory `rel`, sorted.
    pub fn below<'a>(&'a self, rel: &'a str) -> impl Iterator<Item = (&'a String, &'a Entry)> + 'a {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        self.entries
            .range(prefix.clone()..)
            .skip_while(move |(k, _)| k.is_empty() && !prefix.is_empty())
            .take_while({
                let prefix = if rel.is_empty() {
                    String::new()
                } else {
                    format!("{rel}/")
                };
                move |(k, _)| k.starts_with(&prefix)
            })
            .filter(|(k, _)| !k.is_empty())
    }

    /// The context path a matched COPY source stands for: the path itself, or, for a symlink, what it
    /// points to, resolved inside the context as if the context were `/` (BuildKit follows the
    /// symlinks of a named source this way: `fs.RootPath`). Symlinks *below* a copied directory are
    /// copied as symlinks; only the named source is followed. See: #17 (item 9), #19 (item 9).
    ///
    /// Errors name the source and its link target, never a host path: a target outside the context
    /// (absolute, or `..` above the root) or one the context does not hold (missing, or ignored).
    pub fn follow(&self, matched: &str) -> Result<String> {
        let mut path = matched.to_owned();
        for _ in 0..40 {
            let Some(entry) = self.entries.get(&path) else {
                bail!("COPY source {matched:?} not found in the build context");
            };
            if entry.kind != Kind::Symlink {
                return Ok(path);
            }
            let target = fs_err::read_link(self.host_path(&path))?;
            let target = target.to_string_lossy().into_owned();
            let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
            let joined = if target.starts_with('/') || parent.is_empty() {
                target.clone()
            } else {
                format!("{parent}/{target}")
            };
            let mut parts: Vec<&str> = Vec::new();
            let mut outside = target.starts_with('/');
            for c in joined.split('/') {
                match c {
                    "" | "." => {}
                    ".." => outside |= parts.pop().is_none(),
                    c => parts.push(c),
                }
            }
            let next = parts.join("/");
            if !self.entries.contains_key(&next) {
                if outside {
                    bail!(
                        "COPY source {matched:?} is a symlink to {target:?}, outside the build context: \
                         only files inside the context can be copied (a symlink is followed as if the \
                         context were /, and {next:?} is not in it)"
                    );
                }
                bail!(
                    "COPY source {matched:?} is a symlink to {target:?}, which is not in the build \
                     context (missing or excluded by .dockerignore)"
                );
            }
            path = next;
        }
        bail!("COPY source {matched:?}: too many levels of symbolic links")
    }

    /// Expands one COPY source (possibly a wildcard) to matching context paths.
    pub fn matches(&self, src: &str) -> Result<Vec<String>> {
        let clean = clean_rel(src)?;
        if !has_wildcard(&clean) {
            return Ok(if self.entries.contains_key(&clean) {
                vec![clean]
            } else {
                vec![]
            });
        }
        let depth = clean.split('/').count();
        Ok(self
            .entries
            .keys()
            .filter(|k| !k.is_empty() && k.split('/').count() == depth && path_match(&clean, k))
            .cloned()
            .collect())
    }

    /// Digest of everything COPY would read for these sources: paths, kinds, modes (unless `chmod`
    /// replaces them), symlink targets and file contents. Never mtime, uid or gid (COPY writes 0:0).
    pub fn content_key(&self, srcs: &[String], exclude: &[String], chmod: bool) -> Result<String> {
        let selected = self.selected(srcs, exclude)?;
        // The whole selection unchanged since an earlier build (same paths, modes and stat fields): its
        // key is one lookup, without loading the per-file stat cache (most of a no-op rebuild's work).
        let tree = self.tree_fingerprint(srcs, &selected, chmod);
        if let (Some(sc), Some((fp, _))) = (&self.stat_cache, &tree) {
            if let Some(v) = sc.store.cache_get(fp)? {
                if let Ok(key) = String::from_utf8(v) {
                    sc.hits.fetch_add(
                        selected
                            .iter()
                            .filter(|(_, _, e)| e.kind == Kind::File)
                            .count(),
                        Ordering::Relaxed,
                    );
                    return Ok(key);
                }
            }
        }
        let mut h = blake3::Hasher::new();
        let mut next = selected.iter().peekable();
        for (i, src) in srcs.iter().enumerate() {
            h.update(b"src\0");
            h.update(src.as_bytes());
            while let Some((_, p, e)) = next.next_if(|(j, _, _)| *j == i) {
                h.update(p.as_bytes());
                h.update(&[0, e.kind as u8]);
                if !chmod {
                    h.update(&e.mode.to_le_bytes());
                }
                match e.kind {
                    Kind::File => h.update(self.file_digest(p)?.as_bytes()),
                    Kind::Symlink => {
                        let t = std::fs::read_link(self.host_path(p))
                            .with_context(|| format!("reading link {p} in build context"))?;
                        h.update(t.to_string_lossy().as_bytes())
                    }
                    Kind::Dir => &mut h,
                };
            }
        }
        let key = h.finalize().to_hex().to_string();
        if let (Some(sc), Some((fp, false))) = (&self.stat_cache, &tree) {
            sc.store.cache_put(fp, key.as_bytes())?;
        }
        Ok(key)
    }

    /// The context entries `srcs` select (each with the index of its source), `exclude` applied, in order.
    fn selected(
        &self,
        srcs: &[String],
        exclude: &[String],
    ) -> Result<Vec<(usize, &String, &Entry)>> {
        let mut out = Vec::new();
        for (i, src) in srcs.iter().enumerate() {
            for m in self.matches(src)? {
                let m = self.follow(&m)?;
                let (path, entry) = self
                    .entries
                    .get_key_value(&m)
                    .expect("matches() returns listed paths");
                for (p, e) in std::iter::once((path, entry)).chain(self.below(path)) {
                    if !exclude
                        .iter()
                        .any(|x| path_match(x.trim_start_matches('/'), p))
                    {
                        out.push((i, p, e));
                    }
                }
            }
        }
        Ok(out)
    }

    /// A record name for a selection as it is on disk now (paths, kinds, modes, stat fields), and whether
    /// a file in it changed too recently for its stat fields to vouch for its contents (then the key is
    /// not recorded). `None` without a stat cache.
    fn tree_fingerprint(
        &self,
        srcs: &[String],
        selected: &[(usize, &String, &Entry)],
        chmod: bool,
    ) -> Option<(String, bool)> {
        let sc = self.stat_cache.as_ref()?;
        let racy_after = now_ns() - RACY_NS;
        let mut racy = false;
        // One buffer hashed once: many small hasher updates cost more than the hashing.
        let mut buf = Vec::with_capacity(64 * selected.len() + 256);
        buf.extend_from_slice(sc.root.as_bytes());
        buf.push(u8::from(chmod));
        for src in srcs {
            buf.extend_from_slice(src.as_bytes());
            buf.push(0);
        }
        for (i, p, e) in selected {
            buf.extend_from_slice(&(*i as u64).to_le_bytes());
            buf.extend_from_slice(p.as_bytes());
            buf.extend_from_slice(&[0, e.kind as u8]);
            buf.extend_from_slice(&e.mode.to_le_bytes());
            match (e.kind, e.stat) {
                (Kind::File, Some(st)) => {
                    racy |= st.mtime_ns > racy_after || st.ctime_ns > racy_after;
                    buf.extend_from_slice(&st.ino.to_le_bytes());
                    buf.extend_from_slice(&st.size.to_le_bytes());
                    buf.extend_from_slice(&st.mtime_ns.to_le_bytes());
                    buf.extend_from_slice(&st.ctime_ns.to_le_bytes());
                }
                (Kind::File, None) => return None,
                // A symlink's target is read each time (cheap, and a symlink has no content digest).
                (Kind::Symlink, _) => {
                    let t = std::fs::read_link(self.host_path(p)).ok()?;
                    buf.extend_from_slice(t.to_string_lossy().as_bytes());
                }
                (Kind::Dir, _) => {}
            }
        }
        let digest = blake3::hash(&buf);
        Some((solver::RecordFamily::ContextTree.key(digest.to_hex()), racy))
    }

    fn file_digest(&self, rel: &str) -> Result<String> {
        if let Some(d) = self.digests.lock().expect("digest cache lock").get(rel) {
            return Ok(d.clone());
        }
        let stat = self.entries.get(rel).and_then(|e| e.stat);
        if let (Some(sc), Some(stat)) = (&self.stat_cache, stat) {
            let known = sc.known.get_or_init(|| {
                let started = std::time::Instant::now();
                let known = sc.store.stat_cache_load(&sc.root).unwrap_or_else(|e| {
                    tracing::warn!("stat cache unavailable, reading every context file: {e:#}");
                    std::collections::HashMap::new()
                });
                tracing::debug!(entries = known.len(), elapsed = ?started.elapsed(), "stat cache loaded");
                known
            });
            if let Some(e) = known.get(rel).filter(|e| e.stat == stat) {
                sc.hits.fetch_add(1, Ordering::Relaxed);
                self.digests
                    .lock()
                    .expect("digest cache lock")
                    .insert(rel.to_owned(), e.digest.clone());
                return Ok(e.digest.clone());
            }
        }
        let read_at = now_ns();
        let mut h = blake3::Hasher::new();
        let path = self.host_path(rel);
        let mut f = std::fs::File::open(&path)
            .with_context(|| format!("reading {} in build context", path.display()))?;
        std::io::copy(&mut f, &mut h)
            .with_context(|| format!("reading {} in build context", path.display()))?;
        let d = h.finalize().to_hex().to_string();
        if let (Some(sc), Some(stat)) = (&self.stat_cache, stat) {
            sc.reads.fetch_add(1, Ordering::Relaxed);
            // The stat is from the listing, taken before the read: a write in between changes ctime,
            // so the entry can only miss later, never vouch for other contents.
            if stat.ctime_ns < read_at - RACY_NS && stat.mtime_ns < read_at - RACY_NS {
                sc.pending.lock().expect("stat cache lock").push((
                    rel.to_owned(),
                    cache::StatEntry {
                        stat,
                        digest: d.clone(),
                    },
                ));
            }
        }
        self.digests
            .lock()
            .expect("digest cache lock")
            .insert(rel.to_owned(), d.clone());
        Ok(d)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let Some(sc) = &self.stat_cache else { return };
        let pending = std::mem::take(&mut *sc.pending.lock().unwrap_or_else(|e| e.into_inner()));
        tracing::debug!(
            hits = sc.hits.load(Ordering::Relaxed),
            reads = sc.reads.load(Ordering::Relaxed),
            stored = pending.len(),
            "context stat cache"
        );
        if let Err(e) = sc.store.stat_cache_store(&sc.root, &pending) {
            // Only a speed-up is lost: the next build reads these files again.
            tracing::warn!("could not save the context stat cache: {e:#}");
        }
    }
}

/// Normalises a COPY source to a path relative to the context root; `..` that would leave the root is an error.
pub fn clean_rel(src: &str) -> Result<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in src.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("COPY source {src:?} is outside the build context");
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

pub fn has_wildcard(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// Go `filepath.Match` semantics, component-aligned: `*` and `?` never match `/`.
pub fn path_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| m(&p[1..], &n[i..])),
            Some(b'?') => !n.is_empty() && n[0] != b'/' && m(&p[1..], &n[1..]),
            Some(b'[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else {
                    return !n.is_empty() && n[0] == b'[' && m(&p[1..], &n[1..]);
                };
                if n.is_empty() || n[0] == b'/' {
                    return false;
                }
                let (neg, class) = match p[1] {
                    b'^' | b'!' => (true, &p[2..end]),
                    _ => (false, &p[1..end]),
                };
                let c = n[0];
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != neg && m(&p[end + 1..], &n[1..])
            }
            Some(b'\\') if p.len() > 1 => !n.is_empty() && n[0] == p[1] && m(&p[2..], &n[1..]),
            Some(&c) => !n.is_empty() && n[0] == c && m(&p[1..], &n[1..]),
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

/// The `.dockerignore` of a build: `<Dockerfile>.dockerignore` beside the Dockerfile first, as BuildKit
/// reads it, else `.dockerignore` at the context root; none is an empty one.
pub fn read_dockerignore(dockerfile: &Path, context: &Path) -> Result<frontend::DockerIgnore> {
    let beside = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    for p in [beside, context.join(".dockerignore")] {
        match std::fs::read_to_string(&p) {
            Ok(text) => return Ok(frontend::DockerIgnore::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow!(e).context(format!("reading {}", p.display()))),
        }
    }
    Ok(frontend::DockerIgnore::parse(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_sha256_is_what_sha256sum_of_the_visible_files_gives() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::create_dir_all(root.join("src/deep")).unwrap();
        fs_err::write(root.join("a.txt"), "a\n").unwrap();
        fs_err::write(root.join("src/deep/b.js"), "b").unwrap();
        fs_err::write(root.join("src/back\\slash"), "c").unwrap();
        fs_err::write(root.join("secret.env"), "TOKEN=x").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        let ignore = frontend::DockerIgnore::parse("*.env\n");
        let ctx = Context::load(root, &ignore).unwrap();
        let got = ctx.tree_sha256().unwrap();
        // The recipe docs/ATTESTATIONS.md gives, run by coreutils over the files .dockerignore keeps.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("find . -type f ! -name '*.env' -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum")
            .current_dir(root)
            .output()
            .unwrap();
        assert!(out.status.success());
        let want = String::from_utf8(out.stdout).unwrap();
        assert_eq!(got.hex(), want.split_whitespace().next().unwrap());
        // Content matters; an ignored file does not.
        fs_err::write(root.join("secret.env"), "TOKEN=y").unwrap();
        assert_eq!(
            Context::load(root, &ignore).unwrap().tree_sha256().unwrap(),
            got
        );
        fs_err::write(root.join("src/deep/b.js"), "B").unwrap();
        assert_ne!(
            Context::load(root, &ignore).unwrap().tree_sha256().unwrap(),
            got
        );
    }

    #[test]
    fn wildcards_follow_filepath_match() {
        assert!(path_match("*.js", "a.js"));
        assert!(!path_match("*.js", "src/a.js"));
        assert!(path_match("src/*.js", "src/a.js"));
        assert!(path_match("f?.txt", "f1.txt"));
        assert!(path_match("f[0-9].txt", "f7.txt"));
        assert!(!path_match("f[!0-9].txt", "f7.txt"));
    }

    #[test]
    fn clean_rel_refuses_escape() {
        assert_eq!(clean_rel("./a/../b/").unwrap(), "b");
        assert_eq!(clean_rel("/etc/passwd").unwrap(), "etc/passwd");
        assert!(clean_rel("../outside").is_err());
        assert!(clean_rel("a/../../x").is_err());
    }
}
