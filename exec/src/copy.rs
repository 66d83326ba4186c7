//! COPY, ADD and WORKDIR as file operations: they fill a fresh overlay-format layer dir.
//!
//! Docker's rules: a source directory's *contents* are copied; several sources, a wildcard, a trailing `/`
//! or an existing directory at the destination make the destination a directory; files from the context
//! are owned by 0:0 unless `--chown`; files from another stage keep their owners. The destination path is
//! resolved inside the target rootfs (symlinks followed within it), so `COPY x /bin/` on an image whose
//! `/bin` is a symlink writes into the link's target and never replaces the link. Parent directories that
//! already exist in the rootfs keep their mode and owner in the layer.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use oci::MergedView;

use crate::context::{has_wildcard, path_match, Context, Kind};

/// Performs one COPY/ADD into `layer`.
pub fn copy(
    c: &graph::Copy,
    ctx: &Context,
    src_view: Option<&MergedView>,
    dest_view: &MergedView,
    layer: &Path,
) -> Result<()> {
    let owner = match &c.chown {
        Some(spec) => Some(lookup_owner(spec, dest_view, false)?),
        None => None,
    };
    // Parent directories this COPY creates get the --chmod mode (current BuildKit: tonistiigi/fsutil
    // 183e7fb "fix custom chmod for parent directories"; the lab's 0.8 left them 0755) and the --chown
    // owner (both versions); the rootfs's existing directories keep theirs.
    let new_dirs = NewDirs {
        mode: c.chmod.unwrap_or(0o755),
        owner: owner.unwrap_or((0, 0)),
    };
    if let graph::CopySource::Inline { name, content } = &c.source {
        let dest = if c.dest.ends_with('/') {
            format!("{}{name}", c.dest)
        } else {
            c.dest.clone()
        };
        let target = prepare_dest(&dest, dest_view, layer, new_dirs)?;
        fs_err::write(&target, content)?;
        let mode = c.chmod.unwrap_or(0o644);
        fs_err::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
        let (uid, gid) = owner.unwrap_or((0, 0));
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid))?;
        return Ok(());
    }

    if c.parents {
        return copy_parents(c, ctx, src_view, dest_view, layer, owner);
    }
    // Expand sources: (name as matched, path read after following a named symlink, is a directory).
    let mut sources: Vec<(String, String, bool)> = Vec::new();
    // Sources as written that matched something: a wildcard matching nothing does not count.
    let mut matched_sources = c.inline.len();
    for src in &c.srcs {
        let found: Vec<(String, String, bool)> = match (&c.source, src_view) {
            (graph::CopySource::Context, _) => ctx
                .matches(src)?
                .into_iter()
                .map(|m| {
                    let read = ctx.follow(&m)?;
                    let is_dir = ctx.entry(&read).is_some_and(|e| e.kind == Kind::Dir);
                    Ok((m, read, is_dir))
                })
                .collect::<Result<_>>()?,
            (graph::CopySource::Input { .. }, Some(view)) => stage_matches(view, src)?
                .into_iter()
                .map(|(p, d)| (p.clone(), p, d))
                .collect(),
            _ => bail!("COPY source has no input"),
        };
        if found.is_empty() {
            // A wildcard that matches nothing is skipped, beside other sources or alone (BuildKit's
            // file op: AllowEmptyWildcard; lab: `COPY nothere* f /w/` copies f, `COPY nothere* /w/`
            // succeeds and creates nothing). A plain path must exist. See: #17 (item 3)
            if has_wildcard(src) {
                continue;
            }
            let place = match c.source {
                graph::CopySource::Context => "the build context",
                _ => "the source stage",
            };
            bail!("COPY source {src:?} not found in {place}");
        }
        matched_sources += 1;
        sources.extend(found);
    }
    sources.retain(|(p, _, _)| {
        !c.exclude
            .iter()
            .any(|x| path_match(x.trim_start_matches('/'), p))
    });
    if sources.is_empty() && c.inline.is_empty() {
        return Ok(());
    }

    // The destination is a directory when it says so (`/` at the end) or already is one. A pattern is
    // one source even when it matches several paths: each is copied to the destination in turn, as
    // BuildKit does (#17 item 8). Several sources written out need a directory destination, as
    // Docker's documentation says; BuildKit (lab 0.8 and current source) instead copies each onto the
    // same path, keeping only the last: we refuse that rather than lose files. See: #19 (item 9)
    let dest_exists_as_dir = dest_view.resolve(&c.dest, true)?.is_some_and(|r| r.is_dir);
    let dest_is_dir = c.dest.ends_with('/') || dest_exists_as_dir;
    if !dest_is_dir && matched_sources > 1 {
        bail!(
            "COPY has {matched_sources} sources but its destination {:?} is not a directory: when \
             using COPY with more than one source file, the destination must be a directory and end \
             with a /",
            c.dest
        );
    }
    for (name, src, is_dir) in &sources {
        let dest = if *is_dir {
            c.dest.clone()
        } else if dest_is_dir {
            let base = name.rsplit('/').next().unwrap_or(name);
            format!("{}/{}", c.dest.trim_end_matches('/'), base)
        } else {
            c.dest.clone()
        };
        // The archive on the host: a context file, or a download (`ADD --unpack=true URL`).
        let archive = match (&c.source, src_view) {
            _ if !c.unpack || *is_dir => None,
            (graph::CopySource::Context, _) => ctx
                .entry(src)
                .is_some_and(|e| e.kind == Kind::File)
                .then(|| ctx.host_path(src)),
            (graph::CopySource::Input { .. }, Some(view)) => view
                .resolve(src, true)?
                .filter(|r| !r.is_dir)
                .map(|r| r.host_path),
            _ => None,
        };
        if let Some(host) = archive {
            if let Some(kind) = archive_kind(&host)? {
                // ADD of a local tar archive: its contents go into the destination directory, owners
                // and modes as archived unless --chown/--chmod say otherwise.
                let target = prepare_dest(&c.dest, dest_view, layer, new_dirs)?;
                keep_dir_meta(&c.dest, dest_view, &target)?;
                unpack_archive(&host, kind, &target)
                    .with_context(|| format!("ADD: unpacking the archive {name}"))?;
                apply_owner_mode(&target, owner, c.chmod)?;
                continue;
            }
        }
        let target = prepare_dest(&dest, dest_view, layer, new_dirs)?;
        let default_owner = match c.source {
            graph::CopySource::Context => Some((0, 0)),
            _ => None,
        };
        if *is_dir {
            // A directory's contents go into the destination directory. That directory keeps its
            // metadata when the rootfs has it, and is otherwise new: 0755 (or the --chmod mode),
            // root (or the --chown owner), never the source directory's mode or owner (lab:
            // `COPY d /new` with d 0700 gives /new 0755; current fsutil `prepareTargetDir` makes it
            // with MkdirAll and leaves it alone after).
            let existed = target.symlink_metadata().is_ok_and(|m| m.is_dir());
            match (&c.source, src_view) {
                (graph::CopySource::Context, _) => {
                    copy_from_context(ctx, src, &target, &c.exclude)?;
                }
                (_, Some(view)) => view
                    .copy_out(src, &target, true)
                    .with_context(|| format!("copying {src} from the source stage"))?,
                _ => unreachable!("checked above"),
            }
            for entry in fs_err::read_dir(&target)? {
                apply_owner_mode(&entry?.path(), owner.or(default_owner), c.chmod)?;
            }
            if !existed {
                dest_dir_meta(&c.dest, dest_view, &target, new_dirs)?;
            }
            continue;
        }
        match (&c.source, src_view) {
            (graph::CopySource::Context, _) => copy_from_context(ctx, src, &target, &c.exclude)?,
            (_, Some(view)) => view
                .copy_out(src, &target, true)
                .with_context(|| format!("copying {src} from the source stage"))?,
            _ => unreachable!("checked above"),
        }
        apply_owner_mode(&target, owner.or(default_owner), c.chmod)?;
    }
    for f in &c.inline {
        let dest = if dest_is_dir {
            format!("{}/{}", c.dest.trim_end_matches('/'), f.name)
        } else {
            c.dest.clone()
        };
        let target = prepare_dest(&dest, dest_view, layer, new_dirs)?;
        if target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            fs_err::remove_dir_all(&target)?;
        }
        fs_err::write(&target, &f.content)?;
        fs_err::set_permissions(
            &target,
            std::fs::Permissions::from_mode(c.chmod.unwrap_or(0o644)),
        )?;
        let (uid, gid) = owner.unwrap_or((0, 0));
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// `COPY --parents`: each match keeps its path below the pivot (`a/./b/c` → `b/c`; no pivot → the whole
/// path) under the destination directory.
fn copy_parents(
    c: &graph::Copy,
    ctx: &Context,
    src_view: Option<&MergedView>,
    dest_view: &MergedView,
    layer: &Path,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let new_dirs = NewDirs {
        mode: c.chmod.unwrap_or(0o755),
        owner: owner.unwrap_or((0, 0)),
    };
    for src in &c.srcs {
        let (pivot, pattern) = src.split_once("/./").unwrap_or(("", src));
        let pivot = crate::context::clean_rel(pivot)?;
        let pattern = crate::context::clean_rel(pattern)?;
        let full = if pivot.is_empty() {
            pattern
        } else {
            format!("{pivot}/{pattern}")
        };
        let found: Vec<(String, bool)> = match (&c.source, src_view) {
            (graph::CopySource::Context, _) => ctx
                .matches(&full)?
                .into_iter()
                .map(|m| {
                    let is_dir = ctx.entry(&m).is_some_and(|e| e.kind == Kind::Dir);
                    (m, is_dir)
                })
                .collect(),
            (graph::CopySource::Input { .. }, Some(view)) => stage_matches(view, &full)?
                .into_iter()
                .map(|(p, d)| (p.trim_start_matches('/').to_owned(), d))
                .collect(),
            _ => bail!("COPY source has no input"),
        };
        if found.is_empty() {
            bail!("COPY source {src:?} not found");
        }
        for (path, _) in found {
            if c.exclude
                .iter()
                .any(|x| path_match(x.trim_start_matches('/'), &path))
            {
                continue;
            }
            let rel = if pivot.is_empty() {
                path.as_str()
            } else {
                path.strip_prefix(&pivot)
                    .map_or(path.as_str(), |r| r.trim_start_matches('/'))
            };
            let dest = format!("{}/{rel}", c.dest.trim_end_matches('/'));
            let target = prepare_dest(&dest, dest_view, layer, new_dirs)?;
            match (&c.source, src_view) {
                (graph::CopySource::Context, _) => {
                    copy_from_context(ctx, &path, &target, &c.exclude)?;
                }
                (_, Some(view)) => view
                    .copy_out(&format!("/{path}"), &target, true)
                    .with_context(|| format!("copying {path} from the source stage"))?,
                _ => unreachable!("checked above"),
            }
            let default_owner = match c.source {
                graph::CopySource::Context => Some((0, 0)),
                _ => None,
            };
            apply_owner_mode(&target, owner.or(default_owner), c.chmod)?;
        }
    }
    Ok(())
}

/// Sets the owner and/or mode of `target` and everything below it (symlinks keep their mode).
fn apply_owner_mode(target: &Path, owner: Option<(u32, u32)>, chmod: Option<u32>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        walk_apply(target, &|p, md| {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid))?;
            // chown clears setuid/setgid on files (even as root): put them back, as BuildKit does.
            if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
            }
            Ok(())
        })?;
    }
    if let Some(mode) = chmod {
        walk_apply(target, &|p, md| {
            if md.file_type().is_symlink() {
                Ok(())
            } else {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            }
        })?;
    }
    Ok(())
}

/// How a local file ADD would unpack is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Archive {
    Tar,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Archive {
    /// The host program that decompresses this format (`None`: done in process).
    fn program(self) -> Option<&'static str> {
        match self {
            Self::Tar | Self::Gzip => None,
            Self::Bzip2 => Some("bzip2"),
            Self::Xz => Some("xz"),
            Self::Zstd => Some("zstd"),
        }
    }
}

/// Decompressed contents of `path` as a stream (bzip2, xz and zstd through the host's programs).
fn decompressed(path: &Path, kind: Archive) -> Result<Box<dyn std::io::Read>> {
    let file = fs_err::File::open(path)?;
    Ok(match kind.program() {
        None if kind == Archive::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        None => Box::new(file),
        Some(prog) => {
            let child = std::process::Command::new(prog)
                .arg("-dc")
                .stdin(std::process::Stdio::from(std::fs::File::from(file)))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .with_context(|| {
                    format!(
                        "{} is compressed with {prog}, and running {prog} to decompress it failed",
                        path.display()
                    )
                })?;
            Box::new(ChildOutput(child))
        }
    })
}

/// A child's stdout that reaps the child when dropped.
struct ChildOutput(std::process::Child);

impl std::io::Read for ChildOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.stdout.as_mut() {
            Some(out) => out.read(buf),
            None => Ok(0),
        }
    }
}

impl Drop for ChildOutput {
    fn drop(&mut self) {
        drop(self.0.stdout.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `path` is a tar archive (plain, gzip, bzip2, xz or zstd), detected by content as Docker does:
/// the (decompressed) data must start with a valid tar header. Anything else is copied as a file.
pub(crate) fn archive_kind(path: &Path) -> Result<Option<Archive>> {
    use std::io::Read as _;
    let mut head = [0u8; 6];
    let n = {
        let mut f = fs_err::File::open(path)?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..])? {
                0 => break,
                k => n += k,
            }
        }
        n
    };
    let head = &head[..n];
    let kind = if head.starts_with(&[0x1f, 0x8b]) {
        Archive::Gzip
    } else if head.starts_with(b"BZh") {
        Archive::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Archive::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Archive::Zstd
    } else {
        Archive::Tar
    };
    let mut block = [0u8; 512];
    let mut reader = decompressed(path, kind)?;
    let mut got = 0;
    while got < block.len() {
        match reader.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            // Not valid data in that format after all: a plain file.
            Err(_) => return Ok(None),
        }
    }
    Ok((got == block.len() && is_tar_header(&block)).then_some(kind))
}

/// A tar header block: its checksum field matches the sum of its bytes (with the field as spaces).
fn is_tar_header(block: &[u8; 512]) -> bool {
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let Ok(expected) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    block[0] != 0 && sum == expected
}

/// Mode and owner of the directories a COPY creates.
#[derive(Clone, Copy)]
struct NewDirs {
    mode: u32,
    owner: (u32, u32),
}

impl NewDirs {
    /// What WORKDIR and other internal paths get: root, 0755.
    const ROOT: Self = Self {
        mode: 0o755,
        owner: (0, 0),
    };
}

/// Gives the destination directory of a directory copy (`target`, in the layer) the metadata it has in
/// the rootfs, or, when new, that of a directory this COPY creates.
fn dest_dir_meta(dest: &str, view: &MergedView, target: &Path, new_dirs: NewDirs) -> Result<()> {
    let (mode, (uid, gid)) = match view.resolve(dest, true)?.filter(|r| r.is_dir) {
        Some(r) => {
            let md = fs_err::metadata(&r.host_path)?;
            (md.mode() & 0o7777, (md.uid(), md.gid()))
        }
        None => (new_dirs.mode, new_dirs.owner),
    };
    std::os::unix::fs::lchown(target, Some(uid), Some(gid))?;
    fs_err::set_permissions(target, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Creates `target` (in the layer) as a directory with the metadata `dest` has in the rootfs, if any.
fn keep_dir_meta(dest: &str, view: &MergedView, target: &Path) -> Result<()> {
    let Some(r) = view.resolve(dest, true)?.filter(|r| r.is_dir) else {
        return Ok(());
    };
    if target.symlink_metadata().is_ok() {
        return Ok(());
    }
    fs_err::create_dir(target)?;
    let md = fs_err::metadata(&r.host_path)?;
    fs_err::set_permissions(target, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    std::os::unix::fs::lchown(target, Some(md.uid()), Some(md.gid()))?;
    Ok(())
}

/// Unpacks the tar archive at `path` into `target` (created if missing) with the safe layer unpacker.
pub(crate) fn unpack_archive(path: &Path, kind: Archive, target: &Path) -> Result<()> {
    if target.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
        fs_err::remove_file(target)?;
    }
    let reader = decompressed(path, kind)?;
    oci::unpack_layer(reader, oci::media_type::OCI_LAYER_TAR, target)?;
    Ok(())
}

/// Creates WORKDIR `path` in `layer`, owned by `user` (root when empty).
pub fn mkdir(path: &str, user: &str, view: &MergedView, layer: &Path) -> Result<()> {
    let target = prepare_dest(path, view, layer, NewDirs::ROOT)?;
    fs_err::create_dir_all(&target)?;
    fs_err::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    if !user.is_empty() {
        let (uid, gid) = lookup_owner(user, view, true)?;
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Matches a COPY --from source (wildcards in the last component) in a stage's rootfs.
fn stage_matches(view: &MergedView, src: &str) -> Result<Vec<(String, bool)>> {
    let src = format!("/{}", src.trim_start_matches('/'));
    let (parent, name) = src.rsplit_once('/').unwrap_or(("", &src));
    let candidates: Vec<String> = if has_wildcard(name) {
        match view.read_dir(if parent.is_empty() { "/" } else { parent }) {
            Ok(names) => names
                .into_iter()
                .filter(|n| path_match(name, n))
                .map(|n| format!("{parent}/{n}"))
                .collect(),
            Err(_) => vec![],
        }
    } else {
        vec![src.clone()]
    };
    let mut out = Vec::new();
    for cand in candidates {
        if let Some(r) = view.resolve(&cand, true)? {
            out.push((cand, r.is_dir));
        }
    }
    Ok(out)
}

/// Resolves `dest` (absolute, in the target rootfs) to a path inside `layer`, creating its parents there
/// with the metadata they have in the rootfs (or root 0755 when new).
fn prepare_dest(dest: &str, view: &MergedView, layer: &Path, new_dirs: NewDirs) -> Result<PathBuf> {
    let comps: Vec<&str> = dest
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.contains(&"..") {
        // Frontend joins paths; a remaining `..` is resolved lexically, never above the root.
        let joined = clean_abs(dest);
        return prepare_dest(&joined, view, layer, new_dirs);
    }
    // Canonicalise the parent path inside the rootfs, component by component.
    let mut canon = String::new();
    let mut existing = true;
    for c in &comps[..comps.len().saturating_sub(1)] {
        let candidate = format!("{canon}/{c}");
        if existing {
            if let Some(r) = view.resolve(&candidate, true)? {
                if !r.is_dir {
                    bail!("COPY destination {dest}: {candidate} is not a directory");
                }
                canon = if r.merged_path == "/" {
                    String::new()
                } else {
                    r.merged_path
                };
                continue;
            }
            existing = false;
        }
        canon = candidate;
    }
    // Create the parents in the layer.
    let mut host = layer.to_path_buf();
    let mut merged = String::new();
    for c in canon.split('/').filter(|c| !c.is_empty()) {
        merged.push('/');
        merged.push_str(c);
        host.push(c);
        if host.symlink_metadata().is_ok() {
            continue;
        }
        fs_err::create_dir(&host)?;
        match view.resolve(&merged, false)? {
            Some(r) if r.is_dir => {
                let md = fs_err::metadata(&r.host_path)?;
                fs_err::set_permissions(
                    &host,
                    std::fs::Permissions::from_mode(md.mode() & 0o7777),
                )?;
                std::os::unix::fs::lchown(&host, Some(md.uid()), Some(md.gid()))?;
                let mtime = filetime::FileTime::from_last_modification_time(&md);
                filetime::set_file_mtime(&host, mtime)?;
            }
            _ => {
                fs_err::set_permissions(&host, std::fs::Permissions::from_mode(new_dirs.mode))?;
                let (uid, gid) = new_dirs.owner;
                std::os::unix::fs::lchown(&host, Some(uid), Some(gid))?;
            }
        }
    }
    match comps.last() {
        Some(last) => Ok(host.join(last)),
        None => Ok(host),
    }
}

fn clean_abs(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// Copies a context path (file, symlink, or directory contents) to `target`.
fn copy_from_context(ctx: &Context, rel: &str, target: &Path, exclude: &[String]) -> Result<()> {
    let entry = ctx
        .entry(rel)
        .ok_or_else(|| anyhow!("{rel} vanished from the build context"))?;
    match entry.kind {
        Kind::Dir => {
            if target
                .symlink_metadata()
                .map(|m| !m.is_dir())
                .unwrap_or(false)
            {
                fs_err::remove_file(target)?;
            }
            if !target.exists() {
                fs_err::create_dir(target)?;
            }
            copy_meta(&ctx.host_path(rel), target)?;
            let prefix_len = if rel.is_empty() { 0 } else { rel.len() + 1 };
            for (path, e) in ctx.below(rel) {
                if exclude
                    .iter()
                    .any(|x| path_match(x.trim_start_matches('/'), path))
                {
                    continue;
                }
                let dst = target.join(&path[prefix_len..]);
                if !dst.parent().is_some_and(Path::exists) {
                    continue; // its parent directory was excluded
                }
                copy_one(ctx, path, e.kind, &dst)?;
            }
        }
        kind => copy_one(ctx, rel, kind, target)?,
    }
    Ok(())
}

fn copy_one(ctx: &Context, rel: &str, kind: Kind, dst: &Path) -> Result<()> {
    let src = ctx.host_path(rel);
    if let Ok(md) = dst.symlink_metadata() {
        if md.is_dir() && kind != Kind::Dir {
            fs_err::remove_dir_all(dst)?;
        } else if !md.is_dir() {
            fs_err::remove_file(dst)?;
        }
    }
    match kind {
        Kind::Dir => {
            if !dst.exists() {
                fs_err::create_dir(dst)?;
            }
            copy_meta(&src, dst)?;
        }
        Kind::File => {
            fs_err::copy(&src, dst)?;
            copy_meta(&src, dst)?;
        }
        Kind::Symlink => {
            let t = fs_err::read_link(&src)?;
            std::os::unix::fs::symlink(&t, dst)
                .with_context(|| format!("creating symlink {}", dst.display()))?;
            let md = fs_err::symlink_metadata(&src)?;
            filetime::set_symlink_file_times(
                dst,
                filetime::FileTime::from_last_access_time(&md),
                filetime::FileTime::from_last_modification_time(&md),
            )?;
        }
    }
    Ok(())
}

fn copy_meta(src: &Path, dst: &Path) -> Result<()> {
    let md = fs_err::metadata(src)?;
    fs_err::set_permissions(dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    filetime::set_file_mtime(dst, filetime::FileTime::from_last_modification_time(&md))?;
    Ok(())
}

fn walk_apply(
    root: &Path,
    f: &dyn Fn(&Path, &std::fs::Metadata) -> std::io::Result<()>,
) -> Result<()> {
    for e in walkdir::WalkDir::new(root)
        .follow_links(false)
        // A symlink given as the root is the entry itself (a dangling one has nothing behind it).
        .follow_root_links(false)
    {
        let e = e?;
        let md = e.path().symlink_metadata()?;
        f(e.path(), &md)
            .with_context(|| format!("setting owner or mode of {}", e.path().display()))?;
    }
    Ok(())
}

/// Resolves `user[:group]` (names or ids) with the rootfs's /etc/passwd and /etc/group.
///
/// Without a group, `primary_group` picks the user's passwd group (WORKDIR, as BuildKit); otherwise the
/// gid equals the uid (COPY --chown, as Docker documents).
pub fn lookup_owner(spec: &str, view: &MergedView, primary_group: bool) -> Result<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (spec, None),
    };
    // `--chown=${A}:${B}` with both unset is `:`: BuildKit resolves the empty name to 0 (found by
    // the differential: buildah's copy-chown/Dockerfile.bad2).
    let user = if user.is_empty() { "0" } else { user };
    let read = |path: &str| -> Result<String> {
        match view.resolve(path, true)? {
            Some(r) if !r.is_dir => Ok(fs_err::read_to_string(&r.host_path)?),
            _ => Ok(String::new()),
        }
    };
    let (uid, passwd_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let passwd = read("/etc/passwd")?;
            let fields = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 4 && f[0] == user);
            match fields {
                Some(f) => (f[2].parse()?, Some(f[3].parse::<u32>()?)),
                // `root` needs no passwd entry (an image FROM scratch): BuildKit's file ops resolve
                // it to 0:0 (lab: `FROM scratch`, `USER root`, `WORKDIR /w`, `COPY --chown=root`
                // build). Other unknown names stay errors (BuildKit silently uses 0 for them: a
                // typo would make files root's). See: #17 (item 4)
                None if user == "root" => (0, Some(0)),
                None => bail!("unknown user {user:?}: not in the image's /etc/passwd"),
            }
        }
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let groups = read("/etc/group")?;
                groups
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 3 && f[0] == g)
                    .map_or_else(
                        || {
                            if g == "root" {
                                Ok(0)
                            } else {
                                Err(anyhow!(
                                    "unknown group {g:?}: not in the image's /etc/group"
                                ))
                            }
                        },
                        |f| Ok(f[2].parse()?),
                    )?
            }
        },
        None if primary_group => passwd_gid.unwrap_or(uid),
        None => uid,
    };
    Ok((uid, gid))
}
