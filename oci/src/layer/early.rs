//! Early gzip: compressing the large files of a layer directory while a RUN step still writes them.
//!
//! A RUN that writes big files rarely keeps every core busy (it waits on a pipe, the disk, the network),
//! yet the layer used to be compressed only after it ended. [`EarlyGzip`] watches the RUN's upper
//! directory from a thread of the lowest priority (nice 19, so the RUN loses next to nothing) and
//! compresses each 1 MiB member of every file of at least [`MEMBER_SIZE`] bytes as soon as the file has
//! grown past it, into a spool file. The layer writer cuts gzip members around the data of such files
//! (see `gzip.rs`), so a member's bytes depend only on the file's bytes at that offset: when the layer is
//! written, each member whose data hashes (BLAKE3) to what was compressed is copied from the spool, and
//! any other is compressed then. The output is the same bytes with or without early members; only the
//! time differs. Nothing here trusts timestamps: a file rewritten after its member was compressed simply
//! fails the hash check.
//!
//! The watcher reads the directory while the build writes into it, so it never follows a name: it walks
//! with directory descriptors opened `O_NOFOLLOW`, takes each file by an `O_PATH` descriptor, checks that
//! the inode is a regular file and only then reopens that inode (through `/proc/self/fd`) for reading,
//! so a name swapped for a symlink or a device node in between is never opened.
//!
//! The spool costs disk space only until the layer is written: each member is aligned to the spool's
//! blocks and punched out once the layer writer takes it, and the watcher stops spooling when less than
//! [`MIN_FREE_BYTES`] are free, leaving the space to the RUN.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libdeflater::Compressor;
use rustix::fs::{FileType, Mode, OFlags};

use super::gzip::{compress_member, gzip_level, EarlyMember, MEMBER_SIZE};

/// The shortest pause between two walks of the directory.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The walk may take at most this share of the watcher's time (the pause is this many walk times).
const INTERVAL_PER_WALK: u32 = 10;
/// Directories deeper than this are not watched (each level holds a descriptor); their files are
/// compressed when the layer is written, as any file.
const MAX_DEPTH: usize = 128;

/// The watcher stops spooling when the file system of the spool has less free space than this: the RUN
/// needs the space more than the spool does (the layer is then compressed afterwards, as it always was).
const MIN_FREE_BYTES: u64 = 1 << 30;

/// Members start at multiples of the spool's block size, and at least of this, so that a taken member's
/// blocks can be punched out without touching its neighbours' (a hole punch zeroes partial blocks).
const MIN_SPOOL_ALIGN: u64 = 4096;

/// What [`EarlyGzip`] compressed: members of large files by (device, inode) and index, in a spool file
/// that is removed when this is dropped.
#[derive(Debug)]
pub struct Precompressed {
    level: u32,
    spool: Option<Arc<File>>,
    spool_path: PathBuf,
    spool_len: u64,
    files: HashMap<(u64, u64), Vec<Option<EarlyMember>>>,
    used: Arc<AtomicU64>,
    /// Members written to the spool.
    pushed: u64,
    /// The spool's block size (at least [`MIN_SPOOL_ALIGN`]): every member starts at a multiple of it.
    align: u64,
    /// Set when the file system got too full to spool more: the watcher stops, keeping what it has.
    full: bool,
}

impl Precompressed {
    fn new(level: u32, spool_path: PathBuf) -> Self {
        Self {
            level,
            spool: None,
            spool_path,
            spool_len: 0,
            files: HashMap::new(),
            used: Arc::new(AtomicU64::new(0)),
            pushed: 0,
            align: MIN_SPOOL_ALIGN,
            full: false,
        }
    }

    /// The early member `index` of the file with this device and inode, for a layer at gzip `level`.
    pub(crate) fn member(&self, level: u32, dev: u64, ino: u64, index: u64) -> Option<EarlyMember> {
        if level != self.level {
            return None;
        }
        let index = usize::try_from(index).ok()?;
        self.files.get(&(dev, ino))?.get(index)?.clone()
    }

    /// How many members were compressed early.
    pub fn compressed(&self) -> usize {
        self.files
            .values()
            .flatten()
            .filter(|m| m.is_some())
            .count()
    }

    /// How many early members the layer writer used (each one it did not have to compress). A member is
    /// used at most once: a second layer written from the same directory compresses it again.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Appends a compressed member to the spool (created on first use) and returns the spool, its offset
    /// and its span there; `None` when the file system is too full to spool more.
    fn push(&mut self, bytes: &[u8]) -> io::Result<Option<(Arc<File>, u64, u64)>> {
        let spool = match &self.spool {
            Some(s) => Arc::clone(s),
            None => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&self.spool_path)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("failed to create {}: {e}", self.spool_path.display()),
                        )
                    })?;
                let blksize = rustix::fs::fstat(&file).map_or(0, |st| st.st_blksize);
                self.align = u64::try_from(blksize).unwrap_or(0).max(MIN_SPOOL_ALIGN);
                let file = Arc::new(file);
                self.spool = Some(Arc::clone(&file));
                file
            }
        };
        // Checked every 64 members (64 MiB of input at most between two checks).
        if self.pushed.is_multiple_of(64) {
            let st = rustix::fs::fstatvfs(&*spool)?;
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            if free < MIN_FREE_BYTES {
                tracing::debug!(free, "too little free space: early gzip stops spooling");
                self.full = true;
                return Ok(None);
            }
        }
        self.pushed += 1;
        let offset = self.spool_len;
        (&*spool).write_all(bytes)?;
        let span = (bytes.len() as u64).div_ceil(self.align) * self.align;
        let pad = usize::try_from(span - bytes.len() as u64).expect("under the alignment");
        (&*spool).write_all(&vec![0u8; pad])?;
        self.spool_len += span;
        Ok(Some((spool, offset, span)))
    }
}

impl Drop for Precompressed {
    fn drop(&mut self) {
        if self.spool.is_some() {
            if let Err(e) = std::fs::remove_file(&self.spool_path) {
                tracing::debug!(path = %self.spool_path.display(), error = %e, "could not remove the early gzip spool");
            }
        }
    }
}

/// A thread compressing the large files of a directory while it is being written; see the module docs.
#[derive(Debug)]
pub struct EarlyGzip {
    stop: Arc<(Mutex<bool>, Condvar)>,
    walks: Arc<AtomicU64>,
    thread: Option<JoinHandle<io::Result<Precompressed>>>,
}

impl EarlyGzip {
    /// Starts watching `dir` (an overlay upper dir); members are compressed at gzip `level` (`None`:
    /// the default) into a spool file created in `scratch`.
    pub fn start(dir: &Path, scratch: &Path, level: Option<u32>) -> io::Result<Self> {
        let level = level.unwrap_or(super::gzip::DEFAULT_GZIP_LEVEL);
        let dir_fd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let spool_path = scratch.join(format!("early-gzip-{}", std::process::id()));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let walks = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, walks) = (Arc::clone(&stop), Arc::clone(&walks));
            std::thread::Builder::new()
                .name("rbuild-early-gzip".to_owned())
                .spawn(move || {
                    watch(
                        &dir_fd,
                        Precompressed::new(level, spool_path),
                        &stop,
                        &walks,
                    )
                })?
        };
        Ok(Self {
            stop,
            walks,
            thread: Some(thread),
        })
    }

    /// How many walks of the directory have been completed so far.
    pub fn walks(&self) -> u64 {
        self.walks.load(Ordering::Relaxed)
    }

    /// Stops the watcher and returns what it compressed. A watcher that failed is logged and gives
    /// `None`: the layer is then compressed as if it had never run.
    pub fn finish(mut self) -> Option<Precompressed> {
        self.signal_stop();
        let thread = self.thread.take()?;
        match thread.join() {
            Ok(Ok(done)) => {
                tracing::debug!(
                    members = done.compressed(),
                    spool_bytes = done.spool_len,
                    "early gzip done"
                );
                Some(done)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "early gzip failed; the layer is compressed afterwards");
                None
            }
            Err(_) => {
                tracing::warn!(
                    "the early gzip thread panicked; the layer is compressed afterwards"
                );
                None
            }
        }
    }

    fn signal_stop(&self) {
        let (lock, cvar) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cvar.notify_all();
    }
}

impl Drop for EarlyGzip {
    fn drop(&mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take() {
            // Its spool goes with the result.
            drop(thread.join());
        }
    }
}

/// The watcher's loop: walk, compress what is new, pause, until told to stop.
fn watch(
    dir: &OwnedFd,
    mut done: Precompressed,
    stop: &(Mutex<bool>, Condvar),
    walks: &AtomicU64,
) -> io::Result<Precompressed> {
    // The lowest priority: this thread only takes what the RUN leaves idle. Linux sets a thread's nice
    // value with the thread id.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        tracing::debug!(error = %e, "could not lower the early gzip thread's priority");
    }
    let mut compressor = Compressor::new(gzip_level(done.level));
    let mut sizes: HashMap<(u64, u64), u64> = HashMap::new();
    let stopped = || {
        *stop
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut interval = MIN_INTERVAL;
    loop {
        {
            let (lock, cvar) = stop;
            let guard = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (guard, _) = cvar
                .wait_timeout_while(guard, interval, |stop| !*stop)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *guard {
                return Ok(done);
            }
        }
        let started = Instant::now();
        let mut walker = Walker {
            done: &mut done,
            compressor: &mut compressor,
            sizes: &mut sizes,
            stopped: &stopped,
            compressing: Duration::ZERO,
        };
        walker.walk(dir, 0)?;
        let compressing = walker.compressing;
        walks.fetch_add(1, Ordering::Relaxed);
        if done.full {
            return Ok(done);
        }
        // Listing the directory takes at most a tenth of this thread's time, compressing counted as
        // time well spent: a walk that compressed much goes again at once (the RUN is likely still
        // writing), one that found nothing waits at least MIN_INTERVAL.
        let listing = started.elapsed().saturating_sub(compressing);
        interval = if compressing > Duration::ZERO {
            (listing * INTERVAL_PER_WALK).saturating_sub(compressing)
        } else {
            MIN_INTERVAL.max(listing * INTERVAL_PER_WALK)
        };
    }
}

struct Walker<'a> {
    done: &'a mut Precompressed,
    compressor: &'a mut Compressor,
    /// Each large file's size at the walk before, to tell when its last partial member stopped growing.
    sizes: &'a mut HashMap<(u64, u64), u64>,
    stopped: &'a dyn Fn() -> bool,
    /// Time spent reading and compressing members in this walk.
    compressing: Duration,
}

impl Walker<'_> {
    /// Walks one directory; entries that vanish or change kind under it are skipped. Only a failure to
    /// write the spool is an error (it stops the watcher).
    fn walk(&mut self, dir: &OwnedFd, depth: usize) -> io::Result<()> {
        let Ok(mut entries) = rustix::fs::Dir::read_from(dir) else {
            return Ok(());
        };
        while let Some(entry) = entries.read() {
            if (self.stopped)() {
                return Ok(());
            }
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            match entry.file_type() {
                FileType::Directory if depth < MAX_DEPTH => {
                    let Ok(sub) = rustix::fs::openat(
                        dir,
                        name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) else {
                        continue;
                    };
                    self.walk(&sub, depth + 1)?;
                }
                FileType::RegularFile | FileType::Unknown => {
                    let Ok(path_fd) = rustix::fs::openat(
                        dir,
                        name,
                        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) else {
                        continue;
                    };
                    self.file(&path_fd)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Compresses the members of a large regular file that are new since the last walk.
    fn file(&mut self, path_fd: &OwnedFd) -> io::Result<()> {
        let Ok(st) = rustix::fs::fstat(path_fd) else {
            return Ok(());
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(());
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size < MEMBER_SIZE as u64 {
            return Ok(());
        }
        let key = (st.st_dev, st.st_ino);
        let previous = self.sizes.insert(key, size);
        let member = MEMBER_SIZE as u64;
        let full = size / member;
        let tail = size % member;
        // The last partial member only once the file stopped growing (as seen one walk apart).
        let last = if tail > 0 && previous == Some(size) {
            full + 1
        } else {
            full
        };
        let have = self.done.files.get(&key).map_or(&[][..], Vec::as_slice);
        let wanted: Vec<u64> = (0..last)
            .filter(|&i| {
                let want_len = if i < full { member } else { tail };
                have.get(usize::try_from(i).unwrap_or(usize::MAX))
                    .and_then(Option::as_ref)
                    .is_none_or(|m| m.data_len as u64 != want_len)
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // Reopen the inode the O_PATH descriptor holds (never the name, which may have changed).
        let proc_path = format!("/proc/self/fd/{}", path_fd.as_fd().as_raw_fd());
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::open(&proc_path, flags | OFlags::NOATIME, Mode::empty()) {
            Ok(fd) => fd,
            // O_NOATIME needs the file's owner or CAP_FOWNER.
            Err(rustix::io::Errno::PERM) => {
                match rustix::fs::open(&proc_path, flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(_) => return Ok(()),
                }
            }
            Err(_) => return Ok(()),
        };
        let file = File::from(fd);
        let started = Instant::now();
        let result = self.compress(&file, key, size, &wanted);
        self.compressing += started.elapsed();
        result
    }

    /// Compresses members `wanted` of `file` (the inode `key`, of `size` bytes) into the spool.
    fn compress(
        &mut self,
        file: &File,
        key: (u64, u64),
        size: u64,
        wanted: &[u64],
    ) -> io::Result<()> {
        let member = MEMBER_SIZE as u64;
        let (full, tail) = (size / member, size % member);
        let mut data = vec![0u8; MEMBER_SIZE];
        for &index in wanted {
            if (self.stopped)() {
                return Ok(());
            }
            let want = if index < full { member } else { tail };
            let want = usize::try_from(want).expect("at most a member");
            let mut got = 0;
            while got < want {
                match file.read_at(&mut data[got..want], index * member + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            if got < want {
                // The file shrank meanwhile; the next walk sees its new size.
                return Ok(());
            }
            let bytes = compress_member(self.compressor, &data[..want])?;
            let hash = blake3::hash(&data[..want]);
            let Some((spool, offset, span)) = self.done.push(&bytes)? else {
                return Ok(());
            };
            let members = self.done.files.entry(key).or_default();
            let index = usize::try_from(index).expect("a member index fits");
            if members.len() <= index {
                members.resize(index + 1, None);
            }
            members[index] = Some(EarlyMember {
                spool,
                offset,
                len: bytes.len(),
                span,
                data_len: want,
                hash,
                taken: Arc::new(AtomicBool::new(false)),
                used: Arc::clone(&self.done.used),
            });
        }
        Ok(())
    }
}
