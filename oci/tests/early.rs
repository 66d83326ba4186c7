//! Early gzip: members compressed while the directory is written give the same layer bytes, are used
//! only where the data is unchanged, and the watcher never reads through links or special files.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use oci::{Compression, EarlyGzip, LayerOptions};

const MIB: usize = 1 << 20;

fn opts(threads: usize) -> LayerOptions {
    LayerOptions {
        compression: Compression::Gzip,
        level: None,
        source_date_epoch: None,
        threads: Some(threads),
    }
}

/// Bytes that compress somewhat, different for each seed.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i % 4 == 0 {
                b'a' + (x % 26) as u8
            } else {
                b' '
            }
        })
        .collect()
}

fn layer(
    dir: &Path,
    early: Option<&oci::Precompressed>,
    threads: usize,
) -> (oci::LayerInfo, Vec<u8>) {
    let mut out = Vec::new();
    let info = oci::write_layer_early(dir, &mut out, &opts(threads), early).unwrap();
    (info, out)
}

/// Runs a watcher until it has walked the directory `walks` more times.
fn watch_until(w: &EarlyGzip, walks: u64) {
    let target = w.walks() + walks;
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.walks() < target {
        assert!(Instant::now() < deadline, "the watcher made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn early_members_give_the_same_layer_and_are_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("upper");
    fs_err::create_dir_all(dir.join("sub")).unwrap();
    fs_err::write(dir.join("small.txt"), "small").unwrap();
    fs_err::write(dir.join("sub/big.bin"), data(3 * MIB + 12_345, 1)).unwrap();
    fs_err::write(dir.join("exact.bin"), data(2 * MIB, 2)).unwrap();
    let w = EarlyGzip::start(&dir, tmp.path(), None).unwrap();
    watch_until(&w, 3);
    let early = w.finish().unwrap();
    // big.bin: 3 full members and its tail; exact.bin: 2.
    assert_eq!(early.compressed(), 6);
    let (plain_info, plain) = layer(&dir, None, 2);
    let (info, bytes) = layer(&dir, Some(&early), 2);
    assert_eq!(info, plain_info);
    assert!(bytes == plain, "early members change the bytes");
    assert_eq!(early.used(), 6, "every early member is used");
    // Each is used once (its spool range is freed): another layer of the same dir compresses them.
    let (info, bytes) = layer(&dir, Some(&early), 1);
    assert_eq!(info, plain_info);
    assert!(bytes == plain);
    assert_eq!(early.used(), 6);
}

#[test]
fn early_members_of_another_level_are_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("upper");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(dir.join("big.bin"), data(2 * MIB, 6)).unwrap();
    let w = EarlyGzip::start(&dir, tmp.path(), None).unwrap();
    watch_until(&w, 3);
    let early = w.finish().unwrap();
    assert_eq!(early.compressed(), 2);
    let level9 = LayerOptions {
        level: Some(9),
        ..opts(2)
    };
    let mut with = Vec::new();
    oci::write_layer_early(&dir, &mut with, &level9, Some(&early)).unwrap();
    assert_eq!(early.used(), 0);
    let mut without = Vec::new();
    oci::write_layer(&dir, &mut without, &level9).unwrap();
    assert!(with == without);
}

#[test]
fn a_member_rewritten_after_it_was_compressed_is_compressed_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("upper");
    fs_err::create_dir_all(&dir).unwrap();
    let path = dir.join("big.bin");
    fs_err::write(&path, data(3 * MIB, 3)).unwrap();
    let w = EarlyGzip::start(&dir, tmp.path(), None).unwrap();
    watch_until(&w, 3);
    let early = w.finish().unwrap();
    assert_eq!(early.compressed(), 3);
    // Same inode, same size and (restored) mtime: only the content of the second member differs.
    let mtime = filetime::FileTime::from_last_modification_time(&fs_err::metadata(&path).unwrap());
    {
        let mut f = fs_err::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start((MIB + 10) as u64)).unwrap();
        f.write_all(b"changed after compression").unwrap();
    }
    filetime::set_file_mtime(&path, mtime).unwrap();
    let (_, plain) = layer(&dir, None, 2);
    let (_, bytes) = layer(&dir, Some(&early), 2);
    assert!(bytes == plain, "a stale early member was used");
    assert_eq!(early.used(), 2, "members 0 and 2 are still good");
}

#[test]
fn a_file_growing_while_watched_gives_the_same_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("upper");
    fs_err::create_dir_all(&dir).unwrap();
    let w = EarlyGzip::start(&dir, tmp.path(), None).unwrap();
    let content = data(6 * MIB + 777, 4);
    {
        let mut f = fs_err::File::create(dir.join("growing.log")).unwrap();
        for piece in content.chunks(300_000) {
            f.write_all(piece).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(40));
        }
    }
    watch_until(&w, 2);
    let early = w.finish().unwrap();
    assert!(early.compressed() >= 5, "{} members", early.compressed());
    let (_, plain) = layer(&dir, None, 2);
    let (_, bytes) = layer(&dir, Some(&early), 2);
    assert!(bytes == plain);
    assert!(early.used() >= 5, "{} used", early.used());
    assert_eq!(
        oci::Digest::sha256_of(&gunzip(&bytes)),
        oci::write_layer(&dir, std::io::sink(), &opts(1))
            .unwrap()
            .diff_id
    );
}

#[test]
fn the_watcher_reads_no_link_fifo_or_file_outside_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs_err::create_dir_all(&outside).unwrap();
    fs_err::write(outside.join("secret.bin"), data(2 * MIB, 5)).unwrap();
    let dir = tmp.path().join("upper");
    fs_err::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.bin"), dir.join("link.bin")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("linkdir")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let w = EarlyGzip::start(&dir, tmp.path(), None).unwrap();
    watch_until(&w, 3);
    let early = w.finish().unwrap();
    assert_eq!(
        early.compressed(),
        0,
        "nothing inside is a large regular file"
    );
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(gz), &mut out).unwrap();
    out
}

#[test]
fn the_watcher_spools_nothing_on_a_nearly_full_file_system() {
    // A 1100 MiB tmpfs with 200 MiB used: under the 1 GiB the watcher leaves to the RUN.
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("fs");
    fs_err::create_dir_all(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1100m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount runs");
    assert!(status.success(), "mounting a tmpfs (the tests run as root)");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);
    let dir = mnt.join("upper");
    fs_err::create_dir_all(&dir).unwrap();
    fs_err::write(mnt.join("filler"), vec![1u8; 200 * MIB]).unwrap();
    fs_err::write(dir.join("big.bin"), data(3 * MIB, 7)).unwrap();
    let w = EarlyGzip::start(&dir, &mnt, None).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.walks() < 1 {
        assert!(Instant::now() < deadline, "the watcher made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let early = w.finish().unwrap();
    assert_eq!(early.compressed(), 0);
    let (_, plain) = layer(&dir, None, 2);
    let (_, bytes) = layer(&dir, Some(&early), 2);
    assert!(bytes == plain);
}
