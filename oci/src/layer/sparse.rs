//! Reading GNU sparse files stored in PAX format (GNU tar `--sparse --format=posix`, bsdtar), so that a
//! base layer holding one unpacks to the file rather than to `GNUSparseFile.<pid>/<name>`.
//!
//! The formats, as GNU tar documents them ("Storing Sparse Files") and containerd/Go's archive/tar read
//! them:
//! - 0.0: PAX records `GNU.sparse.size` (the real size), `GNU.sparse.numblocks`, then the map as
//!   repeated `GNU.sparse.offset` / `GNU.sparse.numbytes` records; the entry keeps its own name.
//! - 0.1: `GNU.sparse.size`, `GNU.sparse.numblocks`, `GNU.sparse.map` (`offset,size,offset,size…`) and
//!   `GNU.sparse.name`.
//! - 1.0: `GNU.sparse.major=1`, `GNU.sparse.minor=0`, `GNU.sparse.name`, `GNU.sparse.realsize`; the map
//!   is at the start of the entry's data, in decimal lines (count, then offset and size of each
//!   fragment), padded to a 512-byte block.
//!
//! In every format the entry's data is the fragments, back to back. The old GNU format (entry type `S`)
//! is read by the tar crate itself.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// A fragment of data: (offset in the real file, length).
type Fragment = (u64, u64);

/// Why a sparse entry can't be read.
#[derive(Debug)]
pub(super) enum Error {
    /// Reading the stream or writing the file failed.
    Io(io::Error),
    /// The map is malformed or does not fit the data.
    Bad(String),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Bad(reason.into())
}

/// Where the map is.
#[derive(Debug, PartialEq, Eq)]
enum Map {
    /// In the PAX records (0.0 and 0.1).
    Listed(Vec<Fragment>),
    /// At the start of the data (1.0).
    InData,
}

/// A sparse entry's PAX description.
#[derive(Debug)]
pub(super) struct Sparse {
    /// The real name, when the header's is a `GNUSparseFile.<pid>/` placeholder.
    pub(super) name: Option<Vec<u8>>,
    real_size: u64,
    map: Map,
}

fn number(value: &[u8], key: &str) -> Result<u64, Error> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| bad(format!("{key} is not a number")))
}

impl Sparse {
    /// The sparse description in `entry`'s PAX records, if it has one.
    pub(super) fn of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Sparse>, Error> {
        let Some(pax) = entry.pax_extensions()? else {
            return Ok(None);
        };
        let mut name = None;
        let mut size = None;
        let mut real_size = None;
        let mut major = None;
        let mut map_text = None;
        let mut offsets = Vec::new();
        let mut lengths = Vec::new();
        for ext in pax {
            let ext = ext?;
            let value = ext.value_bytes();
            match ext.key_bytes() {
                b"GNU.sparse.name" => name = Some(value.to_vec()),
                b"GNU.sparse.size" => size = Some(number(value, "GNU.sparse.size")?),
                b"GNU.sparse.realsize" => {
                    real_size = Some(number(value, "GNU.sparse.realsize")?);
                }
                b"GNU.sparse.major" => major = Some(number(value, "GNU.sparse.major")?),
                b"GNU.sparse.map" => map_text = Some(value.to_vec()),
                b"GNU.sparse.offset" => offsets.push(number(value, "GNU.sparse.offset")?),
                b"GNU.sparse.numbytes" => lengths.push(number(value, "GNU.sparse.numbytes")?),
                _ => {}
            }
        }
        let map = if let Some(major) = major {
            if major != 1 {
                return Err(bad(format!("unknown GNU sparse format {major}")));
            }
            Map::InData
        } else if let Some(text) = map_text {
            let numbers = text
                .split(|&b| b == b',')
                .filter(|n| !n.is_empty())
                .map(|n| number(n, "GNU.sparse.map"))
                .collect::<Result<Vec<_>, _>>()?;
            if numbers.len() % 2 != 0 {
                return Err(bad("GNU.sparse.map has an odd count of numbers"));
            }
            Map::Listed(numbers.chunks(2).map(|c| (c[0], c[1])).collect())
        } else if !offsets.is_empty() || !lengths.is_empty() {
            if offsets.len() != lengths.len() {
                return Err(bad(
                    "GNU.sparse.offset and GNU.sparse.numbytes records do not pair up",
                ));
            }
            Map::Listed(offsets.into_iter().zip(lengths).collect())
        } else if size.is_some() || real_size.is_some() {
            // A sparse size without a map: the file is one hole.
            Map::Listed(Vec::new())
        } else {
            return Ok(None);
        };
        let real_size = real_size
            .or(size)
            .ok_or_else(|| bad("no GNU.sparse.realsize or GNU.sparse.size"))?;
        Ok(Some(Sparse {
            name,
            real_size,
            map,
        }))
    }

    /// Writes the real file into `file` (new and empty) from the entry's `stored` bytes of `data`.
    ///
    /// Holes stay holes: fragments are written at their offsets and the file is then extended to the
    /// real size.
    pub(super) fn write(
        &self,
        data: &mut impl Read,
        stored: u64,
        file: &mut std::fs::File,
    ) -> Result<(), Error> {
        let (map, map_bytes) = match &self.map {
            Map::Listed(map) => (std::borrow::Cow::Borrowed(map), 0),
            Map::InData => {
                let (map, used) = read_map(data, stored)?;
                (std::borrow::Cow::Owned(map), used)
            }
        };
        let mut available = stored - map_bytes;
        let mut end = 0u64;
        for &(offset, len) in map.iter() {
            let stop = offset
                .checked_add(len)
                .filter(|stop| *stop <= self.real_size)
                .ok_or_else(|| {
                    bad(format!(
                        "fragment at {offset} of {len} bytes ends past the real size {}",
                        self.real_size
                    ))
                })?;
            if offset < end {
                return Err(bad(format!("fragment at {offset} overlaps the one before")));
            }
            if len > available {
                return Err(bad(format!(
                    "fragments hold more bytes than the entry's {stored}"
                )));
            }
            available -= len;
            end = stop;
            if len == 0 {
                continue;
            }
            file.seek(SeekFrom::Start(offset))?;
            let copied = io::copy(&mut data.take(len), file)?;
            if copied != len {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the layer ends inside a sparse file",
                )));
            }
        }
        file.set_len(self.real_size)?;
        file.flush()?;
        Ok(())
    }
}

/// Reads a 1.0 map from the start of the data: decimal numbers, one a line (count, then offset and
/// length of each fragment), padded to 512 bytes. Returns the map and the bytes it took.
fn read_map(data: &mut impl Read, stored: u64) -> Result<(Vec<Fragment>, u64), Error> {
    let mut used = 0u64;
    let count = map_line(data, &mut used, stored)?;
    let mut map = Vec::new();
    for _ in 0..count {
        // Each line is at least two bytes, so a count past the data fails at the data's end, before
        // the map grows further than the data allows.
        let offset = map_line(data, &mut used, stored)?;
        let len = map_line(data, &mut used, stored)?;
        map.push((offset, len));
    }
    let padded = used.div_ceil(512) * 512;
    if padded > stored {
        return Err(bad("the map's padding runs past the entry's data"));
    }
    io::copy(&mut data.take(padded - used), &mut io::sink())?;
    Ok((map, padded))
}

/// One decimal line of a 1.0 map; `used` counts the bytes read.
fn map_line(data: &mut impl Read, used: &mut u64, stored: u64) -> Result<u64, Error> {
    let mut line = Vec::new();
    loop {
        if *used >= stored {
            return Err(bad("the map runs past the entry's data"));
        }
        let mut byte = [0u8];
        data.read_exact(&mut byte)?;
        *used += 1;
        match byte[0] {
            b'\n' => break,
            b'0'..=b'9' if line.len() < 20 => line.push(byte[0]),
            _ => return Err(bad("the map holds something other than decimal lines")),
        }
    }
    number(&line, "a sparse map line")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_padded_map() {
        let mut data = b"2\n0\n5\n100\n3\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"helloabc");
        let mut r = &data[..];
        let (map, used) = read_map(&mut r, data.len() as u64).unwrap();
        assert_eq!(map, vec![(0, 5), (100, 3)]);
        assert_eq!(used, 512);
        assert_eq!(r, b"helloabc");
    }

    #[test]
    fn refuses_maps_past_the_data() {
        let data = b"999999999\n0\n5\n";
        let mut r = &data[..];
        assert!(matches!(
            read_map(&mut r, data.len() as u64),
            Err(Error::Bad(_))
        ));
        let data = b"1\n0\nx\n";
        assert!(matches!(read_map(&mut &data[..], 6), Err(Error::Bad(_))));
    }
}
