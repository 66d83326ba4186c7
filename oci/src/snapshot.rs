//! A read-only merged view of stacked overlay-format snapshot directories, computed without mounting.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps};

/// The most symlinks followed in one resolution, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINK_HOPS: u32 = 40;

/// A read-only merged view of a stack of overlay-format snapshot dirs, like the overlay mount would show.
///
/// An upper entry hides the same path below it; a whiteout (character device 0/0) hides it without
/// showing anything; a directory with `trusted.overlay.opaque=y` hides everything below it in lower
/// layers; a directory only merges with directories below it (a lower non-directory ends the merge).
#[derive(Debug, Clone)]
pub struct MergedView {
    /// Snapshot directories, base first.
    layers: Vec<PathBuf>,
}

/// A path resolved inside a [`MergedView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The host path of the topmost layer's entry.
    pub host_path: PathBuf,
    /// The canonical absolute path inside the merged root (`/` for the root), symlinks followed.
    pub merged_path: String,
    /// Whether the entry is a directory.
    pub is_dir: bool,
}

/// What a merged path is.
#[derive(Debug, Clone)]
enum Node {
    /// A directory, made of these layers' directories (indices, topmost first).
    Dir(Vec<usize>),
    /// A non-directory from one layer.
    Other { layer: usize, symlink: bool },
}

impl MergedView {
    /// A view of `layers`, base first.
    pub fn new(layers: Vec<PathBuf>) -> Self {
        Self { layers }
    }

    /// Resolves an absolute or relative path inside the merged root, following symlinks within the root.
    ///
    /// An absolute symlink target is relative to the merged root and `..` never goes above it; at most 40
    /// symlinks are followed (then `ELOOP`). `follow_last` says whether a final symlink is followed (a
    /// trailing `/` always follows). Returns `None` when the path does not exist in the merged view
    /// (including when it is whited out, hidden by an opaque directory, or goes through a non-directory).
    pub fn resolve(&self, path: &str, follow_last: bool) -> io::Result<Option<Resolved>> {
        Ok(self
            .resolve_node(path.as_bytes(), follow_last)?
            .map(|(comps, node)| self.resolved(&comps, &node)))
    }

    /// Lists the merged entries of a directory (names, sorted bytewise), respecting whiteouts and opaque
    /// directories. Fails with `NotFound` if the path is missing and `NotADirectory` if it is no directory.
    pub fn read_dir(&self, path: &str) -> io::Result<Vec<String>> {
        let (comps, node) = self.resolve_node(path.as_bytes(), true)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{path} not found in merged view"),
            )
        })?;
        let Node::Dir(layers) = node else {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        };
        Ok(self
            .children(&comps, &layers)?
            .into_iter()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect())
    }

    /// Copies the merged subtree at `src` to `dest` on the host, as a plain tree without whiteouts.
    ///
    /// `src` may be a file, symlink, device, fifo or directory; `dest` is the path the copy gets (for a
    /// directory, its contents merge into an existing directory at `dest`). Missing parents of `dest` are
    /// created. Mode, owner, mtime, symlink targets, xattrs (except `trusted.overlay.*`) and hardlinks
    /// within the copy are preserved. An existing non-directory at a destination path is replaced; a
    /// symlink in the destination is never followed.
    pub fn copy_out(&self, src: &str, dest: &Path, follow_last: bool) -> io::Result<()> {
        let (comps, node) = self
            .resolve_node(src.as_bytes(), follow_last)?
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{src} not found in merged view"),
                )
            })?;
        if let Some(parent) = dest.parent() {
            if !parent.as_os_str().is_empty() {
                fs_err::create_dir_all(parent)?;
            }
        }
        let mut links = HashMap::new();
        self.copy_node(&comps, &node, dest, &mut links)
    }

    fn resolved(&self, comps: &[OsString], node: &Node) -> Resolved {
        let (layer, is_dir) = match node {
            Node::Dir(layers) => (layers[0], true),
            Node::Other { layer, .. } => (*layer, false),
        };
        let mut merged_path = String::from("/");
        merged_path.push_str(
            &comps
                .iter()
                .map(|c| c.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
        );
        Resolved {
            host_path: self.host_path(layer, comps),
            merged_path,
            is_dir,
        }
    }

    fn root(&self) -> Node {
        Node::Dir((0..self.layers.len()).rev().collect())
    }

    fn host_path(&self, layer: usize, comps: &[OsString]) -> PathBuf {
        let mut path = self.layers[layer].clone();
        path.extend(comps);
        path
    }

    /// Resolves `path` to its canonical components and node.
    fn resolve_node(
        &self,
        path: &[u8],
        follow_last: bool,
    ) -> io::Result<Option<(Vec<OsString>, Node)>> {
        let follow_last = follow_last || path.ends_with(b"/");
        let mut queue: VecDeque<Vec<u8>> = split(path).collect();
        // The directories walked so far: (name, node); the root is implicit.
        let mut stack: Vec<(OsString, Node)> = Vec::new();
        let mut hops = 0;
        while let Some(comp) = queue.pop_front() {
            if comp == b".." {
                stack.pop();
                continue;
            }
            let parent = stack
                .last()
                .map_or_else(|| self.root(), |(_, node)| node.clone());
            let Node::Dir(parent_layers) = parent else {
                // A path through a non-directory does not exist.
                return Ok(None);
            };
            let comps: Vec<OsString> = stack.iter().map(|(name, _)| name.clone()).collect();
            let name = OsString::from_vec(comp);
            let Some(node) = self.lookup(&parent_layers, &comps, &name)? else {
                return Ok(None);
            };
            if let Node::Other {
                layer,
                symlink: true,
            } = node
            {
                if !queue.is_empty() || follow_last {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let mut host = self.host_path(layer, &comps);
                    host.push(&name);
                    let target = fs_err::read_link(&host)?;
                    let target = target.as_os_str().as_bytes();
                    if target.starts_with(b"/") {
                        stack.clear();
                    }
                    for part in split(target).collect::<Vec<_>>().into_iter().rev() {
                        queue.push_front(part);
                    }
                    continue;
                }
            }
            stack.push((name, node));
        }
        let node = stack
            .last()
            .map_or_else(|| self.root(), |(_, node)| node.clone());
        if matches!(&node, Node::Dir(layers) if layers.is_empty()) {
            // No layers at all: not even the root exists.
            return Ok(None);
        }
        Ok(Some((
            stack.into_iter().map(|(name, _)| name).collect(),
            node,
        )))
    }

    /// Looks `name` up in the merged directory `comps` made of `parent_layers` (topmost first).
    fn lookup(
        &self,
        parent_layers: &[usize],
        comps: &[OsString],
        name: &OsStr,
    ) -> io::Result<Option<Node>> {
        let mut dirs = Vec::new();
        for &layer in parent_layers {
            let mut host = self.host_path(layer, comps);
            host.push(name);
            let meta = match fs_err::symlink_metadata(&host) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                dirs.push(layer);
                if is_opaque(&host)? {
                    break;
                }
            } else if !dirs.is_empty() {
                // A whiteout or non-directory below a directory ends the merge.
                break;
            } else if ft.is_char_device() && meta.rdev() == 0 {
                return Ok(None);
            } else {
                return Ok(Some(Node::Other {
                    layer,
                    symlink: ft.is_symlink(),
                }));
            }
        }
        Ok(if dirs.is_empty() {
            None
        } else {
            Some(Node::Dir(dirs))
        })
    }

    /// The visible children of a merged directory, sorted by name.
    fn children(&self, comps: &[OsString], layers: &[usize]) -> io::Result<Vec<(OsString, Node)>> {
        let mut names = BTreeSet::new();
        for &layer in layers {
            for entry in fs_err::read_dir(self.host_path(layer, comps))? {
                names.insert(entry?.file_name());
            }
        }
        let mut out = Vec::new();
        for name in names {
            if let Some(node) = self.lookup(layers, comps, &name)? {
                out.push((name, node));
            }
        }
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(out)
    }

    fn copy_node(
        &self,
        comps: &[OsString],
        node: &Node,
        dest: &Path,
        links: &mut HashMap<(u64, u64), PathBuf>,
    ) -> io::Result<()> {
        match node {
            Node::Dir(layers) => {
                let src = self.host_path(layers[0], comps);
                match fs_err::symlink_metadata(dest) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        fs_err::remove_file(dest)?;
                        fs_err::create_dir(dest)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => fs_err::create_dir(dest)?,
                    Err(e) => return Err(e),
                }
                let mut child_comps = comps.to_vec();
                for (name, child) in self.children(comps, layers)? {
                    child_comps.push(name);
                    self.copy_node(
                        &child_comps,
                        &child,
                        &dest.join(child_comps.last().expect("just pushed")),
                        links,
                    )?;
                    child_comps.pop();
                }
                // Last, so that creating the children does not change the copied mtime.
                copy_metadata(&src, dest, &fs_err::symlink_metadata(&src)?)
            }
            Node::Other { layer, .. } => {
                let src = self.host_path(*layer, comps);
                copy_entry(&src, dest, links)
            }
        }
    }
}

/// Splits a path into its components, without empty ones and `.`.
fn split(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
}

fn is_opaque(path: &Path) -> io::Result<bool> {
    crate::layer::is_opaque_dir(path)
}

/// Copies one non-directory from `src` to `dest` (replacing a non-directory there) with its metadata.
fn copy_entry(src: &Path, dest: &Path, links: &mut HashMap<(u64, u64), PathBuf>) -> io::Result<()> {
    let meta = fs_err::symlink_metadata(src)?;
    match fs_err::symlink_metadata(dest) {
        Ok(existing) if existing.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "cannot replace directory {} with a non-directory",
                    dest.display()
                ),
            ));
        }
        Ok(_) => fs_err::remove_file(dest)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if meta.nlink() > 1 {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = links.get(&key) {
            return fs_err::hard_link(first, dest);
        }
        links.insert(key, dest.to_owned());
    }
    let ft = meta.file_type();
    if ft.is_file() {
        fs_err::copy(src, dest)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs_err::read_link(src)?, dest)?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let kind = if ft.is_char_device() {
            FileType::CharacterDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else {
            FileType::Fifo
        };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dest,
            kind,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )?;
    } else {
        tracing::debug!(path = %src.display(), "skipping socket");
        return Ok(());
    }
    copy_metadata(src, dest, &meta)
}

/// Copies owner, then mode (chown clears setuid), then xattrs (chown clears `security.capability`),
/// then times, without following a symlink at `dest`.
fn copy_metadata(src: &Path, dest: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let symlink = meta.file_type().is_symlink();
    rustix::fs::chownat(
        rustix::fs::CWD,
        dest,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if !symlink {
        rustix::fs::chmodat(
            rustix::fs::CWD,
            dest,
            Mode::from_raw_mode(meta.mode() & 0o7777),
            AtFlags::empty(),
        )?;
    }
    let names = match xattr::list(src) {
        Ok(names) => names.collect::<Vec<_>>(),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Vec::new(),
        Err(e) => return Err(e),
    };
    for name in names {
        let bytes = name.as_bytes();
        if bytes.starts_with(b"trusted.overlay.") || bytes.starts_with(b"user.overlay.") {
            continue;
        }
        let Some(value) = xattr::get(src, &name)? else {
            continue;
        };
        if let Err(e) = xattr::set(dest, &name, &value) {
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                tracing::debug!(path = %dest.display(), ?name, "destination does not support xattr");
                continue;
            }
            return Err(e);
        }
    }
    let mtime = Timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec(),
    };
    let atime = Timespec {
        tv_sec: meta.atime(),
        tv_nsec: meta.atime_nsec(),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        dest,
        &Timestamps {
            last_access: atime,
            last_modification: mtime,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_drops_empty_and_dot() {
        let parts: Vec<Vec<u8>> = split(b"/a//./b/../c/").collect();
        assert_eq!(
            parts,
            vec![b"a".to_vec(), b"b".to_vec(), b"..".to_vec(), b"c".to_vec()]
        );
    }

    #[test]
    fn empty_view_has_nothing() {
        let view = MergedView::new(Vec::new());
        assert_eq!(view.resolve("/x", true).unwrap(), None);
        assert_eq!(view.resolve("/", true).unwrap(), None);
    }
}
