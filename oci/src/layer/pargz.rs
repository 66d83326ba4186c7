//! Deterministic parallel gzip: the same bytes for any number of threads.
//!
//! The input is cut into fixed-size blocks. Each block is deflated on its own, primed with the previous
//! 32 KiB of input as the dictionary (so matches may reach back across the cut), and ends with a sync
//! flush (an empty stored block), which byte-aligns it so the blocks concatenate into one deflate stream;
//! the last block is finished instead. The CRC-32s of the blocks are combined in order. A block's output
//! depends only on its bytes, the dictionary and the level — never on which thread ran it or when — so the
//! output is independent of the thread count (gzp and pigz with varying options are not).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

/// Uncompressed bytes per block (pigz's default).
const BLOCK_SIZE: usize = 128 * 1024;
/// The deflate window: how far back a match may reach, and so the dictionary size.
const WINDOW: usize = 32 * 1024;
/// gzip header: magic, deflate, no flags, mtime 0, no extra flags, OS "unknown" (as flate2 writes).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

struct Job {
    index: u64,
    dictionary: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

type Done = (u64, io::Result<(Vec<u8>, Crc)>);

/// A gzip writer that compresses fixed-size blocks on `threads` threads, with output independent of
/// the thread count. Call [`ParallelGzEncoder::finish`] to write the trailer and get the writer back.
pub(super) struct ParallelGzEncoder<W: Write> {
    out: W,
    block: Vec<u8>,
    /// The last `WINDOW` bytes of input before `block`.
    dictionary: Vec<u8>,
    crc: Crc,
    /// Compressor threads; empty when compressing inline (one thread).
    workers: Vec<(Sender<Job>, JoinHandle<()>)>,
    results: Option<Receiver<Done>>,
    level: u32,
    next_index: u64,
    next_write: u64,
    pending: BTreeMap<u64, (Vec<u8>, Crc)>,
    in_flight: usize,
}

impl<W: Write> ParallelGzEncoder<W> {
    /// A writer compressing at `level` (0–9) on `threads` threads (at least one).
    pub(super) fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        out.write_all(&GZIP_HEADER)?;
        let level = level.min(9);
        let mut workers = Vec::new();
        let mut results = None;
        if threads > 1 {
            let (done_tx, done_rx) = mpsc::channel::<Done>();
            for _ in 0..threads {
                let (job_tx, job_rx) = mpsc::channel::<Job>();
                let done_tx = done_tx.clone();
                let handle = std::thread::Builder::new()
                    .name("rbuild-gzip".to_owned())
                    .spawn(move || {
                        for job in job_rx {
                            let result =
                                compress_block(level, &job.dictionary, &job.data, job.last);
                            if done_tx.send((job.index, result)).is_err() {
                                // The encoder was dropped (an error upstream); nobody wants the rest.
                                break;
                            }
                        }
                    })?;
                workers.push((job_tx, handle));
            }
            results = Some(done_rx);
        }
        Ok(Self {
            out,
            block: Vec::with_capacity(BLOCK_SIZE),
            dictionary: Vec::new(),
            crc: Crc::new(),
            workers,
            results,
            level,
            next_index: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            in_flight: 0,
        })
    }

    /// Compresses what is left, writes the gzip trailer and returns the inner writer.
    pub(super) fn finish(mut self) -> io::Result<W> {
        let rest = std::mem::take(&mut self.block);
        self.dispatch(rest, true)?;
        while self.in_flight > 0 {
            self.receive()?;
        }
        debug_assert!(self.pending.is_empty());
        for (sender, handle) in std::mem::take(&mut self.workers) {
            drop(sender);
            handle
                .join()
                .map_err(|_| io::Error::other("gzip compressor thread panicked"))?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&trailer)?;
        Ok(self.out)
    }

    fn dispatch(&mut self, data: Vec<u8>, last: bool) -> io::Result<()> {
        let dictionary = std::mem::take(&mut self.dictionary);
        self.dictionary = next_dictionary(&dictionary, &data);
        let index = self.next_index;
        self.next_index += 1;
        if self.workers.is_empty() {
            let (bytes, crc) = compress_block(self.level, &dictionary, &data, last)?;
            self.pending.insert(index, (bytes, crc));
            return self.write_ready();
        }
        // Bound memory: at most two blocks per thread in flight.
        while self.in_flight >= 2 * self.workers.len() {
            self.receive()?;
        }
        let worker = &self.workers[usize::try_from(index).unwrap_or(0) % self.workers.len()].0;
        worker
            .send(Job {
                index,
                dictionary,
                data,
                last,
            })
            .map_err(|_| io::Error::other("gzip compressor thread exited"))?;
        self.in_flight += 1;
        Ok(())
    }

    fn receive(&mut self) -> io::Result<()> {
        let results = self
            .results
            .as_ref()
            .expect("threaded encoders always have a result channel");
        let (index, result) = results
            .recv()
            .map_err(|_| io::Error::other("gzip compressor threads exited"))?;
        self.in_flight -= 1;
        self.pending.insert(index, result?);
        self.write_ready()
    }

    /// Writes finished blocks that are next in order.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some((bytes, crc)) = self.pending.remove(&self.next_write) {
            self.out.write_all(&bytes)?;
            self.crc.combine(&crc);
            self.next_write += 1;
        }
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK_SIZE - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK_SIZE {
            let full = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE));
            self.dispatch(full, false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Flushing a partial block would make the output depend on write timing; blocks stay whole.
        self.out.flush()
    }
}

fn new_compress(level: u32) -> Compress {
    // Raw deflate: the gzip framing is ours.
    Compress::new(flate2::Compression::new(level), false)
}

/// The dictionary for the block after `data`: the last `WINDOW` bytes of `dictionary ++ data`.
fn next_dictionary(dictionary: &[u8], data: &[u8]) -> Vec<u8> {
    if data.len() >= WINDOW {
        return data[data.len() - WINDOW..].to_vec();
    }
    let keep = (WINDOW - data.len()).min(dictionary.len());
    let mut next = dictionary[dictionary.len() - keep..].to_vec();
    next.extend_from_slice(data);
    next
}

/// Deflates one block, primed with `dictionary`, ending in a sync flush (or the final block).
fn compress_block(
    level: u32,
    dictionary: &[u8],
    data: &[u8],
    last: bool,
) -> io::Result<(Vec<u8>, Crc)> {
    let mut compress = new_compress(level);
    if !dictionary.is_empty() {
        compress
            .set_dictionary(dictionary)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = usize::try_from(compress.total_in()).expect("a block fits in memory");
        let status = compress
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in =
            usize::try_from(compress.total_in()).expect("a block fits in memory") == data.len();
        // A flush is complete when it returns with output space to spare.
        let done = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if done {
            break;
        }
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok((out, crc))
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Compressible but not trivial data: text with a pseudo-random walk through it.
    fn sample(len: usize) -> Vec<u8> {
        let words = [
            "layer ",
            "tar ",
            "overlay ",
            "whiteout ",
            "digest ",
            "\n",
            "sha256 ",
            "rbuild ",
        ];
        let mut state = 0x2545_f491_u32;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            out.extend_from_slice(words[(state % 8) as usize].as_bytes());
            if state & 7 == 3 {
                out.extend_from_slice(&state.to_le_bytes());
            }
        }
        out.truncate(len);
        out
    }

    fn compress(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, threads).unwrap();
        for piece in data.chunks(chunk.max(1)) {
            enc.write_all(piece).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn same_bytes_for_any_thread_count() {
        let data = sample(3 * BLOCK_SIZE + 12_345);
        let one = compress(&data, 1, 4096);
        assert_eq!(compress(&data, 2, 1000), one);
        assert_eq!(compress(&data, 4, 70_000), one);
        assert!(
            one.len() < data.len() / 2,
            "it compresses: {} of {}",
            one.len(),
            data.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(one.as_slice())
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn same_bytes_for_any_thread_count_over_many_blocks() {
        // Regression: reusing a compressor through `Compress::reset` (zlib-rs) leaked state between
        // blocks, so the output depended on which thread had compressed which earlier block. It
        // showed only after dozens of blocks of mildly compressible data.
        let mut state = 1u32;
        let data: Vec<u8> = (0..48 * BLOCK_SIZE as u32)
            .map(|i| {
                if i % 3 == 0 {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                }
                state.to_le_bytes()[0] & 0x3f
            })
            .collect();
        let one = compress(&data, 1, 65_536);
        assert_eq!(compress(&data, 2, 65_536), one);
        assert_eq!(compress(&data, 3, 100_000), one);
    }

    #[test]
    fn dictionary_lets_matches_cross_blocks() {
        // Incompressible bytes, then a repeat of the 16 KiB before the cut: only the dictionary can
        // make the second block small. (Not the whole 32 KiB: deflate matches reach at most
        // 32 KiB - 262 bytes back.)
        let mut state = 0x9e37_79b9_u32;
        let block: Vec<u8> = (0..BLOCK_SIZE)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state.to_le_bytes()[0]
            })
            .collect();
        let mut data = block.clone();
        data.extend_from_slice(&block[block.len() - WINDOW / 2..]);
        let out = compress(&data, 2, BLOCK_SIZE);
        let first_only = compress(&block, 2, BLOCK_SIZE);
        assert!(
            out.len() < first_only.len() + 2048,
            "{} vs {}",
            out.len(),
            first_only.len()
        );
    }

    #[test]
    fn empty_and_exact_block_inputs_are_valid_gzip() {
        for len in [0, 1, BLOCK_SIZE, 2 * BLOCK_SIZE] {
            let data = sample(len);
            let out = compress(&data, 3, 8192);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(out.as_slice())
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "length {len}");
        }
    }
}
