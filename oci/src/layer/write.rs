//! Writing an overlay-format directory as a layer tar, compressed and hashed in one streaming pass.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::{EntryType, Header};

use super::pargz::ParallelGzEncoder;
use super::pax::push_record;
use super::{Compression, LayerError, LayerInfo, LayerOptions, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::{Hasher, HashingWriter};

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
    let info = compress(out, opts, |w| write_tar(dir, w, opts))?;
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
    compress(out, opts, |w| {
        io::copy(&mut tar, w).map_err(LayerError::Blob)?;
        Ok(())
    })
}

/// Runs `body` on a writer whose bytes are hashed (the diff_id), compressed per `opts`, hashed again (the
/// digest) and written to `out`.
fn compress<W: Write>(
    out: W,
    opts: &LayerOptions,
    body: impl FnOnce(&mut dyn Write) -> Result<(), LayerError>,
) -> Result<LayerInfo, LayerError> {
    fn feed<E: Write>(
        enc: E,
        body: impl FnOnce(&mut dyn Write) -> Result<(), LayerError>,
    ) -> Result<(crate::Digest, E), LayerError> {
        let mut tee = DiffIdWriter {
            inner: enc,
            hasher: Hasher::new(),
        };
        body(&mut tee)?;
        tee.flush().map_err(LayerError::Write)?;
        Ok((tee.hasher.finish(), tee.inner))
    }
    let hashed_out = HashingWriter::new(out);
    let (diff_id, hashed_out) = match opts.compression {
        Compression::Gzip if opts.threads.is_some() => {
            let threads = opts.threads.unwrap_or(1).max(1);
            let gz = ParallelGzEncoder::new(hashed_out, opts.level.unwrap_or(6), threads)
                .map_err(LayerError::Write)?;
            let (diff_id, gz) = feed(gz, body)?;
            (diff_id, gz.finish().map_err(LayerError::Write)?)
        }
        Compression::Gzip => {
            let level = flate2::Compression::new(opts.level.unwrap_or(6).min(9));
            // GzBuilder writes mtime 0 and no file name, so the header is the same for the same input.
            let gz = flate2::GzBuilder::new().write(hashed_out, level);
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
    let (mut out, digest, size) = hashed_out.finish();
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
fn write_tar(dir: &Path, out: &mut dyn Write, opts: &LayerOptions) -> Result<(), LayerError> {
    // Tar headers are 512-byte writes; batch them before hashing and compressing.
    let buffered = BufWriter::with_capacity(256 * 1024, out);
    let mut writer = TarWriter {
        builder: tar::Builder::new(buffered),
        epoch: opts.source_date_epoch,
        links: HashMap::new(),
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
    hasher: Hasher,
}

impl<W: Write> Write for DiffIdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    epoch: Option<i64>,
    /// The first tar path seen for each (device, inode) of a file with more than one link.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> TarWriter<W> {
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
            let result = self.append(header, path, None, xattrs, data);
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
        mut header: Header,
        path: &[u8],
        link: Option<&[u8]>,
        xattrs: &[(String, Vec<u8>)],
        data: impl Read,
    ) -> Result<(), LayerError> {
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
        self.builder
            .append(&header, data)
            .map_err(LayerError::Write)
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
