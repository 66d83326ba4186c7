//! Fuzzing the layer unpacker: arbitrary tar bytes → `unpack_layer` into a temp dir → no panic, and
//! nothing created, changed or removed outside the destination (issue #19).
//!
//! Inputs are mutations of hostile seed archives (`..`, absolute paths, symlinks then entries through
//! them, hardlinks out, whiteouts, opaque markers, PAX records, GNU sparse maps in every format, device
//! nodes, long names): bytes flipped, ranges spliced from another seed, truncated, headers' checksums
//! fixed up so that the mutation reaches the unpacker rather than the tar reader's first check.
//! Like the Dockerfile fuzz harness (frontend/tests/no_panic.rs) it runs a fixed count in CI and longer
//! on demand: `OCI_UNPACK_FUZZ_ITERS=N`, `OCI_UNPACK_FUZZ_SECS=T` (run for T seconds instead),
//! `OCI_UNPACK_FUZZ_SEED=S` (first seed).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64).max(1)).expect("fits")
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One tar entry of a seed: (type, path, link target or data, PAX records).
type Seed = &'static [(
    tar::EntryType,
    &'static str,
    &'static [u8],
    &'static [(&'static str, &'static str)],
)];

const SEEDS: &[Seed] = &[
    &[
        (tar::EntryType::Directory, "a/", b"", &[]),
        (tar::EntryType::Regular, "a/f", b"hello", &[]),
        (tar::EntryType::Symlink, "a/up", b"../../..", &[]),
        (tar::EntryType::Regular, "a/up/escape", b"x", &[]),
        (tar::EntryType::Link, "a/hl", b"../outside/sentinel", &[]),
    ],
    &[
        (tar::EntryType::Symlink, "etc", b"/", &[]),
        (
            tar::EntryType::Regular,
            "etc/passwd",
            b"root::0:0::/:/bin/sh\n",
            &[],
        ),
        (tar::EntryType::Regular, "/abs", b"abs", &[]),
        (tar::EntryType::Regular, "../dotdot", b"dd", &[]),
    ],
    &[
        (tar::EntryType::Directory, "d/", b"", &[]),
        (tar::EntryType::Regular, "d/.wh..wh..opq", b"", &[]),
        (tar::EntryType::Regular, "d/.wh.gone", b"", &[]),
        (tar::EntryType::Char, "d/null", b"", &[]),
        (tar::EntryType::Fifo, "d/fifo", b"", &[]),
    ],
    &[
        (
            tar::EntryType::Regular,
            "GNUSparseFile.1/s",
            b"2\n0\n3\n10\n2\n",
            &[
                ("GNU.sparse.major", "1"),
                ("GNU.sparse.minor", "0"),
                ("GNU.sparse.name", "s"),
                ("GNU.sparse.realsize", "20"),
            ],
        ),
        (
            tar::EntryType::Regular,
            "p",
            b"abcdef",
            &[("GNU.sparse.size", "100"), ("GNU.sparse.map", "0,3,50,3")],
        ),
        (
            tar::EntryType::Regular,
            "q",
            b"abcdef",
            &[
                ("GNU.sparse.size", "64"),
                ("GNU.sparse.numblocks", "2"),
                ("GNU.sparse.offset", "0"),
                ("GNU.sparse.numbytes", "3"),
                ("GNU.sparse.offset", "60"),
                ("GNU.sparse.numbytes", "3"),
            ],
        ),
        (
            tar::EntryType::Regular,
            "x",
            b"data",
            &[
                ("SCHILY.xattr.trusted.overlay.opaque", "y"),
                ("SCHILY.xattr.user.k", "v"),
                ("mtime", "-1.5"),
                ("uid", "4294967296"),
            ],
        ),
    ],
    &[
        (tar::EntryType::Regular, ".wh...", b"", &[]),
        (
            tar::EntryType::Regular,
            "y",
            b"data",
            &[("path", "renamed/../../x")],
        ),
    ],
];

/// A seed as tar bytes (a sparse 1.0 map is padded to its 512-byte block, as GNU tar writes it).
fn build(seed: Seed) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = tar::Builder::new(&mut out);
    for (kind, path, data, pax) in seed {
        if !pax.is_empty() {
            common::append_pax(&mut b, "PaxHeaders/x", pax);
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        // Raw bytes: the builder's own checks would refuse `..` and absolute paths.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_mode(0o755);
        let mut data = data.to_vec();
        if pax.iter().any(|(k, _)| *k == "GNU.sparse.major") {
            // The map's block, then its 3 + 2 bytes of fragments.
            data.resize(512, 0);
            data.extend_from_slice(b"abcde");
        }
        if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            h.set_link_name_literal(&data).unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        } else {
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, &data[..]).unwrap();
        }
    }
    b.finish().unwrap();
    drop(b);
    out
}

/// Recomputes the checksum of every 512-byte block that looks like a header, so that mutated headers
/// get past the tar reader's checksum test.
fn fix_checksums(bytes: &mut [u8]) {
    for block in bytes.chunks_mut(512) {
        if block.len() == 512 && (&block[257..262] == b"ustar") {
            block[148..156].fill(b' ');
            let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
            let text = format!("{sum:06o}\0 ");
            block[148..156].copy_from_slice(text.as_bytes());
        }
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(3) {
        if bytes.is_empty() {
            break;
        }
        match rng.below(6) {
            0 | 1 => {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            2 => {
                // A digit or a separator where numbers live (sizes, modes, maps).
                let at = rng.below(bytes.len());
                bytes[at] = b"0123456789\n,. /"[rng.below(15)];
            }
            3 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let len = rng.below(1024).min(other.len() - from);
                let at = rng.below(bytes.len());
                let end = (at + len).min(bytes.len());
                bytes.splice(at..end, other[from..from + len].iter().copied());
            }
            4 => bytes.truncate(rng.below(bytes.len() + 1)),
            _ => {
                let at = rng.below(bytes.len() + 1);
                let block: Vec<u8> = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, block);
            }
        }
    }
    if rng.below(4) != 0 {
        fix_checksums(&mut bytes);
    }
    bytes
}

/// Everything under `dir` (not following symlinks): path → (kind, size, mode, mtime, content hash).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // The root itself is left out: creating and removing `dest` changes its mtime.
    for e in walkdir::WalkDir::new(dir).min_depth(1).follow_links(false) {
        let e = e.unwrap();
        let meta = e.path().symlink_metadata().unwrap();
        let content = if meta.is_file() {
            format!(
                "{:?}",
                oci::Digest::sha256_of(&fs_err::read(e.path()).unwrap())
            )
        } else {
            String::new()
        };
        out.insert(
            e.path().display().to_string(),
            format!(
                "{:o} {} {} {} {content}",
                meta.mode(),
                meta.len(),
                meta.mtime(),
                meta.nlink()
            ),
        );
    }
    out
}

#[test]
#[allow(clippy::print_stderr)] // the count of inputs is the point of a long run
fn random_layers_unpack_without_panic_or_escape() {
    let first = env_u64("OCI_UNPACK_FUZZ_SEED", 1);
    let secs = env_u64("OCI_UNPACK_FUZZ_SECS", 0);
    let iters = if secs > 0 {
        u64::MAX - first
    } else {
        env_u64("OCI_UNPACK_FUZZ_ITERS", 1500)
    };
    let seeds: Vec<Vec<u8>> = SEEDS.iter().map(|s| build(s)).collect();
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs_err::create_dir(&outside).unwrap();
    fs_err::write(outside.join("sentinel"), b"untouched").unwrap();
    let before = snapshot(tmp.path());
    let started = std::time::Instant::now();
    let (mut done, mut ok) = (0u64, 0u64);
    for seed in first..first.saturating_add(iters) {
        if secs > 0 && started.elapsed().as_secs() >= secs {
            break;
        }
        done += 1;
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let input = mutate(&mut rng, &seeds);
        let dest = tmp.path().join("dest");
        let result = std::panic::catch_unwind(|| {
            oci::unpack_layer(&input[..], oci::media_type::OCI_LAYER_TAR, &dest)
        });
        match result {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) => {}
            Err(_) => {
                let kept = std::env::temp_dir().join(format!("rbuild-unpack-crash-{seed}.tar"));
                fs_err::write(&kept, &input).unwrap();
                panic!("seed {seed} panicked; input kept in {}", kept.display());
            }
        }
        if dest.exists() {
            fs_err::remove_dir_all(&dest).unwrap();
        }
        let after = snapshot(tmp.path());
        assert_eq!(
            before, after,
            "seed {seed} changed something outside the destination"
        );
    }
    eprintln!(
        "unpack_no_panic: {done} inputs (seeds {first}..{}), {ok} unpacked, in {:.1}s",
        first + done,
        started.elapsed().as_secs_f64()
    );
    assert!(done > 0);
}
