//! Writing an overlay-format directory as a layer tar, compressed and hashed in one streaming pass.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use tar::{EntryType, Header};

use super::early::Precompressed;
use super::gzip::{EarlyMember, GzipEncoder, DEFAULT_GZIP_LEVEL, MEMBER_SIZE};
use super::pax::push_record;
use super::{Compression, LayerError, LayerInfo, LayerOptions, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::Hasher;

/// The longest name or link name that fits a ustar header field without a PAX record.
const NAME_FIELD: usize = 100;
/// The largest value of the 8-byte octal uid/gid fields (7 digits).
const MAX_OCTAL_ID: u64 = 0o7_777_777;
/// The largest value of the 12-byte octal size field (11 digits).
const MAX_OCTAL_SIZE: u64 = 0o77_777_777_777;

/// Writes the layer tar of an overlay-format directory to `out`, compressing and hashing in one pass.
///
/// Whiteouts (character devices 0/0) become `.wh.<name>` entries and opaque directories get a
/// `.wh..wh..opq` entry. Entries are in a stable order (a depth-first walk with names sorted bytewise,
/// parents before children), with real owners, modes and mtimes (clamped to
/// [`LayerOptions::source_date_epoch`]), xattrs other than `trusted.overlay.*` as PAX `SCHILY.xattr.*`
/// records, and hardlinks (same device and inode within the layer) as link entries to the first path.
/// The directory itself is not an entry. Memory use does not depend on the layer size.
pub fn write_layer(
    dir: &Path,
    out: impl Write,
    opts: &LayerOptions,
) -> Result<LayerInfo, LayerError> {
    write_layer_early(dir, out, opts, None)
}

/// [`write_layer`] taking the gzip members of large files that [`EarlyGzip`](super::EarlyGzip) compressed
/// while `dir` was written, wherever their data is still what was compressed. The bytes written are the
/// same as [`write_layer`]'s.
pub fn write_layer_early(
    dir: &Path,
    out: impl Write,
    opts: &LayerOptions,
    early: Option<&Precompressed>,
) -> Result<LayerInfo, LayerError> {
    let early = early.filter(|_| opts.compression == Compression::Gzip);
    let info = compress(out, opts, |w| write_tar(dir, w, opts, early))?;
    tracing::debug!(dir = %dir.display(), diff_id = %info.diff_id, digest = %info.digest, size = info.size, "wrote layer");
    Ok(info)
}

/// Re-encodes a layer blob (gzip, zstd or a plain tar, per `media_type` and its magic bytes) with the
/// compression of `opts`, hashing in the same streaming pass. The tar bytes are copied unchanged, so the
/// diff_id stays the same; [`LayerOptions::source_date_epoch`] does not apply here.
pub fn recompress_layer(
    blob: impl Read,
    media_type: &str,
    out: impl Write,
    opts: &LayerOptions,
) -> Result<LayerInfo, LayerError> {
    let mut tar = super::unpack::decoder(blob, media_type)?;
    compress(out, opts, |w| copy_tar(&mut tar, w))
}

/// Copies a tar stream unchanged into `out`, cutting gzip members around the data of regular files of
/// at least [`MEMBER_SIZE`] bytes as [`write_layer`] does, so that recompressing one of our layers gives
/// the bytes it was written with. Where the stream is not a tar this can parse, the rest is copied as it
/// is: the cuts decide only how the bytes are compressed, never which bytes are written.
fn copy_tar(tar: &mut dyn Read, out: &mut dyn TarSink) -> Result<(), LayerError> {
    /// Reads until `buf` is full or the stream ends; returns how much was read.
    fn read(tar: &mut dyn Read, buf: &mut [u8]) -> Result<usize, LayerError> {
        let mut filled = 0;
        while filled < buf.len() {
            match tar.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LayerError::Blob(e)),
            }
        }
        Ok(filled)
    }
    /// Copies up to `n` bytes; returns how many there were.
    fn copy(
        tar: &mut dyn Read,
        out: &mut dyn TarSink,
        buf: &mut [u8],
        n: u64,
    ) -> Result<u64, LayerError> {
        let mut copied = 0;
        while copied < n {
            let want = usize::try_from((n - copied).min(buf.len() as u64)).expect("buffer-sized");
            let got = read(tar, &mut buf[..want])?;
            out.write_all(&buf[..got]).map_err(LayerError::Write)?;
            copied += got as u64;
            if got < want {
                break;
            }
        }
        Ok(copied)
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut block = [0u8; 512];
    loop {
        let got = read(tar, &mut block)?;
        out.write_all(&block[..got]).map_err(LayerError::Write)?;
        if got < block.len() {
            return Ok(());
        }
        if block.iter().all(|&b| b == 0) {
            continue;
        }
        let header = Header::from_byte_slice(&block);
        let Ok(size) = header.entry_size() else {
            copy(tar, out, &mut buf, u64::MAX)?;
            return Ok(());
        };
        let large = header.entry_type() == EntryType::Regular && size >= MEMBER_SIZE as u64;
        if large {
            out.cut().map_err(LayerError::Write)?;
        }
        if copy(tar, out, &mut buf, size)? < size {
            return Ok(());
        }
        if large {
            out.cut().map_err(LayerError::Write)?;
        }
        copy(tar, out, &mut buf, (512 - size % 512) % 512)?;
    }
}

/// The uncompressed side of a layer stream: the tar bytes, plus the places where a gzip member may end.
pub(super) trait TarSink: Write {
    /// Ends the current gzip member here; other compressions have no members and ignore it.
    fn cut(&mut self) -> io::Result<()>;
    /// Writes `data` as a gzip member of its own (`early`: the same compressed before); other
    /// compressions just write it.
    fn member(&mut self, data: Vec<u8>, early: Option<EarlyMember>) -> io::Result<()>;
}

/// A compressor of the tar stream (or the plain tar writer), as [`compress`] drives it.
trait Encoder: Write {
    fn cut(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn member(&mut self, data: Arc<Vec<u8>>, _early: Option<EarlyMember>) -> io::Result<()> {
        self.write_all(&data)
    }
}

impl<W: Write> Encoder for GzipEncoder<W> {
    fn cut(&mut self) -> io::Result<()> {
        GzipEncoder::cut(self)
    }
    fn member(&mut self, data: Arc<Vec<u8>>, early: Option<EarlyMember>) -> io::Result<()> {
        GzipEncoder::member(self, data, early)
    }
}
impl<W: Write> Encoder for zstd::stream::write::Encoder<'_, W> {}
impl<W: Write> Encoder for HashedOutput<W> {}

/// Runs `body` on a sink whose bytes are hashed (the diff_id), compressed per `opts`, hashed again (the
/// digest) and written to `out`.
fn compress<W: Write>(
    out: W,
    opts: &LayerOptions,
    body: impl FnOnce(&mut dyn TarSink) -> Result<(), LayerError>,
) -> Result<LayerInfo, LayerError> {
    fn feed<E: Encoder>(
        enc: E,
        body: impl FnOnce(&mut dyn TarSink) -> Result<(), LayerError>,
    ) -> Result<(crate::Digest, E), LayerError> {
        let mut tee = DiffIdWriter {
            inner: enc,
            hasher: HashThread::start().map_err(LayerError::Write)?,
        };
        body(&mut tee)?;
        let diff_id = tee.hasher.finish().map_err(LayerError::Write)?;
        Ok((diff_id, tee.inner))
    }
    let hashed_out = HashedOutput::new(out).map_err(LayerError::Write)?;
    let (diff_id, hashed_out) = match opts.compression {
        Compression::Gzip => {
            let threads = opts.threads.unwrap_or(1).max(1);
            let gz = GzipEncoder::new(
                hashed_out,
                opts.level.unwrap_or(DEFAULT_GZIP_LEVEL),
                threads,
            )
            .map_err(LayerError::Write)?;
            let (diff_id, gz) = feed(gz, body)?;
            (diff_id, gz.finish().map_err(LayerError::Write)?)
        }
        Compression::Zstd => {
            let level = i32::try_from(opts.level.unwrap_or(3).clamp(1, 22)).unwrap_or(3);
            let mut enc =
                zstd::stream::write::Encoder::new(hashed_out, level).map_err(LayerError::Write)?;
            // Always the multithreaded path (even with one worker): its frames do not depend on the
            // number of workers, unlike the single-threaded path's.
            let workers = u32::try_from(opts.threads.unwrap_or(1).max(1)).unwrap_or(1);
            enc.multithread(workers).map_err(LayerError::Write)?;
            enc.include_checksum(false).map_err(LayerError::Write)?;
            let (diff_id, enc) = feed(enc, body)?;
            (diff_id, enc.finish().map_err(LayerError::Write)?)
        }
        Compression::Uncompressed => feed(hashed_out, body)?,
    };
    let (mut out, digest, size) = hashed_out.finish().map_err(LayerError::Write)?;
    out.flush().map_err(LayerError::Write)?;
    Ok(LayerInfo {
        diff_id,
        digest,
        size,
        media_type: opts.compression.oci_media_type(),
    })
}

/// Whether an overlay-format directory would produce an empty layer (it has no entries at all).
pub fn is_empty_dir(dir: &Path) -> io::Result<bool> {
    Ok(fs_err::read_dir(dir)?.next().is_none())
}

/// Writes the uncompressed tar of `dir` into `out`.
fn write_tar(
    dir: &Path,
    out: &mut dyn TarSink,
    opts: &LayerOptions,
    early: Option<&Precompressed>,
) -> Result<(), LayerError> {
    // Tar headers are 512-byte writes; batch them before hashing and compressing.
    let buffered = BufWriter::with_capacity(256 * 1024, out);
    let mut writer = TarWriter {
        builder: tar::Builder::new(buffered),
        epoch: opts.source_date_epoch,
        links: HashMap::new(),
        early,
        level: opts.level.unwrap_or(DEFAULT_GZIP_LEVEL),
    };
    writer.builder.sparse(false);
    writer.walk(dir, &mut Vec::new())?;
    let mut buffered = writer.builder.into_inner().map_err(LayerError::Write)?;
    buffered.flush().map_err(LayerError::Write)?;
    Ok(())
}

/// Hashes the uncompressed tar bytes on their way to the compressor.
struct DiffIdWriter<W> {
    inner: W,
    hasher: HashThread,
}

impl<W: Write> Write for DiffIdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n])?;
        Ok(n)
    }
    /// Does not flush the compressor: a zstd flush ends a block, which would make the bytes depend on
    /// where the tar writer drains its buffer. [`compress`] finishes the compressor instead.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<E: Encoder> TarSink for DiffIdWriter<E> {
    fn cut(&mut self) -> io::Result<()> {
        self.inner.cut()
    }
    fn member(&mut self, data: Vec<u8>, early: Option<EarlyMember>) -> io::Result<()> {
        let data = Arc::new(data);
        self.hasher.update_shared(Arc::clone(&data))?;
        self.inner.member(data, early)
    }
}

/// The layer blob on its way out: counted, and hashed (the digest) on a thread of its own.
struct HashedOutput<W> {
    inner: W,
    hasher: HashThread,
    size: u64,
}

impl<W: Write> HashedOutput<W> {
    fn new(inner: W) -> io::Result<Self> {
        Ok(Self {
            inner,
            hasher: HashThread::start()?,
            size: 0,
        })
    }

    fn finish(self) -> io::Result<(W, crate::Digest, u64)> {
        let digest = self.hasher.finish()?;
        Ok((self.inner, digest, self.size))
    }
}

impl<W: Write> Write for HashedOutput<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n])?;
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A SHA-256 computed on a thread of its own: the layer writer's thread already reads the files and
/// writes the compressed output, and with the diff_id and the digest on that thread too it would be the
/// longest chain after a RUN whose members were compressed early.
struct HashThread {
    sender: Option<SyncSender<Arc<Vec<u8>>>>,
    thread: Option<JoinHandle<crate::Digest>>,
    /// Small writes (tar headers), gathered before they are sent.
    pending: Vec<u8>,
}

impl HashThread {
    const BATCH: usize = 256 * 1024;

    fn start() -> io::Result<Self> {
        // A few members in flight at most: the memory stays bounded whatever the layer size.
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(8);
        let thread = std::thread::Builder::new()
            .name("rbuild-diff-id".to_owned())
            .spawn(move || {
                let mut hasher = Hasher::new();
                for bytes in receiver {
                    hasher.update(&bytes);
                }
                hasher.finish()
            })?;
        Ok(Self {
            sender: Some(sender),
            thread: Some(thread),
            pending: Vec::new(),
        })
    }

    fn update(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= Self::BATCH {
            self.send_pending()?;
        }
        Ok(())
    }

    fn update_shared(&mut self, bytes: Arc<Vec<u8>>) -> io::Result<()> {
        self.send_pending()?;
        self.send(bytes)
    }

    fn send_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(Self::BATCH));
        self.send(Arc::new(batch))
    }

    fn send(&mut self, bytes: Arc<Vec<u8>>) -> io::Result<()> {
        self.sender
            .as_ref()
            .expect("the sender lives until finish")
            .send(bytes)
            .map_err(|_| io::Error::other("the diff_id hasher thread exited"))
    }

    fn finish(mut self) -> io::Result<crate::Digest> {
        self.send_pending()?;
        drop(self.sender.take());
        self.thread
            .take()
            .expect("joined only here")
            .join()
            .map_err(|_| io::Error::other("the diff_id hasher thread panicked"))
    }
}

impl Drop for HashThread {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            // Only reached when the layer failed; its digest is not wanted.
            drop(thread.join());
        }
    }
}

struct TarWriter<'a, 'e> {
    builder: tar::Builder<BufWriter<&'a mut dyn TarSink>>,
    /// Members compressed early, by (device, inode) of large files, and the gzip level of this layer.
    early: Option<&'e Precompressed>,
    level: u32,
    epoch: Option<i64>,
    /// The first tar path seen for each (device, inode) of a file with more than one link.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl TarWriter<'_, '_> {
    /// Writes the entries below `dir`, whose tar path prefix is `prefix` (empty or ending in `/`).
    fn walk(&mut self, dir: &Path, prefix: &mut Vec<u8>) -> Result<(), LayerError> {
        let read_err = |source| LayerError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut names: Vec<OsString> = fs_err::read_dir(dir)
            .map_err(read_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let host = dir.join(&name);
            let meta = fs_err::symlink_metadata(&host).map_err(|source| LayerError::Read {
                path: host.clone(),
                source,
            })?;
            let prefix_len = prefix.len();
            prefix.extend_from_slice(name.as_bytes());
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                let mut path = prefix[..prefix_len].to_vec();
                path.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
                path.extend_from_slice(name.as_bytes());
                self.marker(&path)?;
            } else if ft.is_dir() {
                prefix.push(b'/');
                let xattrs = read_xattrs(&host)?;
                let opaque = is_opaque(&host)?;
                self.entry(&host, &meta, prefix, &xattrs)?;
                if opaque {
                    let mut marker = prefix.clone();
                    marker.extend_from_slice(OPAQUE_MARKER.as_bytes());
                    self.marker(&marker)?;
                }
                self.walk(&host, prefix)?;
            } else if ft.is_socket() {
                // A tar cannot hold a socket; tar, BuildKit and Docker skip them too.
                tracing::debug!(path = %host.display(), "skipping socket");
            } else {
                let xattrs = read_xattrs(&host)?;
                self.entry(&host, &meta, prefix, &xattrs)?;
            }
            prefix.truncate(prefix_len);
        }
        Ok(())
    }

    /// Writes a whiteout or opaque marker: an empty regular file owned by root, mode 0, mtime 0.
    fn marker(&mut self, path: &[u8]) -> Result<(), LayerError> {
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(0);
        self.append(header, path, None, &[], io::empty())
    }

    fn entry(
        &mut self,
        host: &Path,
        meta: &std::fs::Metadata,
        path: &[u8],
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), LayerError> {
        let read_err = |source| LayerError::Read {
            path: host.to_owned(),
            source,
        };
        let mut header = Header::new_ustar();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        let mut mtime = meta.mtime();
        if let Some(epoch) = self.epoch {
            mtime = mtime.min(epoch);
        }
        header.set_mtime(u64::try_from(mtime).unwrap_or(0));
        header.set_size(0);
        let ft = meta.file_type();

        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                header.set_entry_type(EntryType::Link);
                return self.append(header, path, Some(&first), xattrs, io::empty());
            }
            self.links.insert(key, path.to_vec());
        }

        if ft.is_dir() {
            header.set_entry_type(EntryType::Directory);
            self.append(header, path, None, xattrs, io::empty())
        } else if ft.is_file() {
            header.set_entry_type(EntryType::Regular);
            let size = meta.len();
            header.set_size(size);
            let file = fs_err::File::open(host).map_err(read_err)?;
            let mut read_error = None;
            // The header already says `size`: never write more, and pad if the file shrank meanwhile.
            let data = ReadErrorSlot {
                inner: file.take(size),
                error: &mut read_error,
            }
            .chain(io::repeat(0))
            .take(size);
            let result = if size >= MEMBER_SIZE as u64 {
                self.append_large(header, path, xattrs, data, (meta.dev(), meta.ino()))
            } else {
                self.append(header, path, None, xattrs, data)
            };
            match read_error {
                Some(source) => Err(read_err(source)),
                None => result,
            }
        } else if ft.is_symlink() {
            header.set_entry_type(EntryType::Symlink);
            let target = fs_err::read_link(host).map_err(read_err)?;
            self.append(
                header,
                path,
                Some(target.as_os_str().as_bytes()),
                xattrs,
                io::empty(),
            )
        } else if ft.is_char_device() || ft.is_block_device() {
            header.set_entry_type(if ft.is_char_device() {
                EntryType::Char
            } else {
                EntryType::Block
            });
            let (major, minor) = (
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev()),
            );
            header.set_device_major(major).map_err(LayerError::Write)?;
            header.set_device_minor(minor).map_err(LayerError::Write)?;
            self.append(header, path, None, xattrs, io::empty())
        } else {
            // Sockets are filtered out by the caller, so this is a fifo.
            header.set_entry_type(EntryType::Fifo);
            self.append(header, path, None, xattrs, io::empty())
        }
    }

    /// Appends a PAX header when needed, then `header` with `path` and `link`, then `data`.
    fn append(
        &mut self,
        header: Header,
        path: &[u8],
        link: Option<&[u8]>,
        xattrs: &[(String, Vec<u8>)],
        data: impl Read,
    ) -> Result<(), LayerError> {
        let header = self.prepare(header, path, link, xattrs)?;
        self.builder
            .append(&header, data)
            .map_err(LayerError::Write)
    }

    /// [`Self::append`] for a regular file of at least [`MEMBER_SIZE`] bytes: its data is cut into gzip
    /// members of its own (at file offsets that are multiples of [`MEMBER_SIZE`]), so that their bytes
    /// depend on the file's content alone, not on where in the stream it lands; `file` is its (device,
    /// inode), to find members compressed early.
    fn append_large(
        &mut self,
        header: Header,
        path: &[u8],
        xattrs: &[(String, Vec<u8>)],
        mut data: impl Read,
        file: (u64, u64),
    ) -> Result<(), LayerError> {
        let header = self.prepare(header, path, None, xattrs)?;
        let size = header.entry_size().map_err(LayerError::Write)?;
        let (early, level) = (self.early, self.level);
        let out = self.builder.get_mut();
        let mut write = |out: &mut BufWriter<&mut dyn TarSink>| -> io::Result<()> {
            out.write_all(header.as_bytes())?;
            out.flush()?;
            let mut left = size;
            let mut index = 0;
            while left > 0 {
                let want = usize::try_from(left.min(MEMBER_SIZE as u64)).expect("at most a member");
                let mut piece = vec![0u8; want];
                data.read_exact(&mut piece)?;
                let member = early.and_then(|e| e.member(level, file.0, file.1, index));
                out.get_mut().member(piece, member)?;
                left -= want as u64;
                index += 1;
            }
            out.get_mut().cut()?;
            let pad = (512 - size % 512) % 512;
            out.write_all(&[0u8; 512][..usize::try_from(pad).expect("under 512")])
        };
        write(out).map_err(LayerError::Write)
    }

    /// Writes the PAX header entry `header` needs (long names, large ids or sizes, xattrs), if any, and
    /// returns `header` with `path`, `link` and its checksum set.
    fn prepare(
        &mut self,
        mut header: Header,
        path: &[u8],
        link: Option<&[u8]>,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<Header, LayerError> {
        let mut pax = Vec::new();
        set_field(&mut header.as_old_mut().name, path, b"path", &mut pax);
        if let Some(link) = link {
            set_field(
                &mut header.as_old_mut().linkname,
                link,
                b"linkpath",
                &mut pax,
            );
        }
        // Values beyond the octal fields are also written in binary by the tar crate (a GNU extension);
        // the PAX record is what POSIX readers use.
        for (key, value) in [
            (b"uid".as_slice(), header.uid().unwrap_or(0)),
            (b"gid", header.gid().unwrap_or(0)),
        ] {
            if value > MAX_OCTAL_ID {
                push_record(&mut pax, key, value.to_string().as_bytes());
            }
        }
        let size = header.entry_size().unwrap_or(0);
        if size > MAX_OCTAL_SIZE {
            push_record(&mut pax, b"size", size.to_string().as_bytes());
        }
        for (name, value) in xattrs {
            let key = format!("SCHILY.xattr.{name}");
            push_record(&mut pax, key.as_bytes(), value);
        }
        if !pax.is_empty() {
            let mut pax_header = Header::new_ustar();
            pax_header.set_entry_type(EntryType::XHeader);
            pax_header.set_mode(0o644);
            pax_header.set_uid(0);
            pax_header.set_gid(0);
            pax_header.set_mtime(0);
            pax_header.set_size(pax.len() as u64);
            set_raw(&mut pax_header.as_old_mut().name, &pax_name(path));
            pax_header.set_cksum();
            self.builder
                .append(&pax_header, pax.as_slice())
                .map_err(LayerError::Write)?;
        }
        header.set_cksum();
        Ok(header)
    }
}

/// Stores `value` in a ustar name field, or a truncated copy plus a PAX record when it does not fit.
fn set_field(field: &mut [u8; NAME_FIELD], value: &[u8], key: &[u8], pax: &mut Vec<u8>) {
    if value.len() > NAME_FIELD {
        push_record(pax, key, value);
    }
    set_raw(field, value);
}

/// Copies as much of `value` as fits, NUL-padded.
fn set_raw(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// The name of a PAX header entry, as Go's archive/tar names it: `<dir>/PaxHeaders.0/<base>`.
fn pax_name(path: &[u8]) -> Vec<u8> {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&b""[..], trimmed),
    };
    let mut name = dir.to_vec();
    name.extend_from_slice(b"PaxHeaders.0/");
    name.extend_from_slice(base);
    name
}

/// Keeps a read error aside, so that it is reported as a read of the source file, not a write of the layer.
struct ReadErrorSlot<'a, R> {
    inner: R,
    error: &'a mut Option<io::Error>,
}

impl<R: Read> Read for ReadErrorSlot<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            let copy = io::Error::new(e.kind(), e.to_string());
            *self.error = Some(e);
            copy
        })
    }
}

/// Whether a directory is opaque in overlay terms (an opaque xattr is `y`).
fn is_opaque(path: &Path) -> Result<bool, LayerError> {
    super::is_opaque_dir(path).map_err(|source| LayerError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The xattrs of a file (not following symlinks), sorted by name, without overlayfs' own.
fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>, LayerError> {
    let read_err = |source| LayerError::Read {
        path: path.to_owned(),
        source,
    };
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    for name in names {
        let Some(name) = name.to_str() else {
            tracing::debug!(path = %path.display(), ?name, "skipping xattr with a non-UTF-8 name");
            continue;
        };
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        // An xattr removed between list and get is simply gone.
        if let Some(value) = xattr::get(path, name).map_err(read_err)? {
            out.push((name.to_owned(), value));
        }
    }
    out.sort();
    Ok(out)
}
