//! Layer tars: write_layer → unpack_layer round trips, determinism, hostile tars, and real tools.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use oci::{Compression, Digest, LayerError, LayerOptions};
use rustix::fs::{FileType, Mode, Timespec, Timestamps};

/// A valid VFS_CAP_REVISION_2 `security.capability` value granting cap_net_bind_service (bit 10),
/// effective. The kernel rejects malformed values, so a made-up blob would not do.
const CAP_NET_BIND_SERVICE: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // magic_etc: revision 2 | effective
    0x00, 0x04, 0x00, 0x00, // permitted[0]
    0x00, 0x00, 0x00, 0x00, // inheritable[0]
    0x00, 0x00, 0x00, 0x00, // permitted[1]
    0x00, 0x00, 0x00, 0x00, // inheritable[1]
];

fn write(path: &Path, content: &[u8]) {
    fs_err::create_dir_all(path.parent().unwrap()).unwrap();
    fs_err::write(path, content).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn mknod(path: &Path, ft: FileType, mode: u32, major: u32, minor: u32) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        ft,
        Mode::from_raw_mode(mode),
        rustix::fs::makedev(major, minor),
    )
    .unwrap();
}

/// A tree exercising every kind of entry a snapshot can hold.
fn sample_tree(root: &Path) {
    write(&root.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n");
    write(&root.join("usr/bin/su"), b"#!setuid\n");
    chmod(&root.join("usr/bin/su"), 0o4755);
    fs_err::create_dir_all(root.join("tmp")).unwrap();
    chmod(&root.join("tmp"), 0o1777);
    write(&root.join("home/user/notes"), b"mine");
    rustix::fs::chown(
        root.join("home/user/notes"),
        Some(uid(1000)),
        Some(gid(1000)),
    )
    .unwrap();
    rustix::fs::chown(root.join("home/user"), Some(uid(1000)), Some(gid(1000))).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("etc/abs-link")).unwrap();
    write(&root.join("usr/bin/a"), b"hardlinked");
    fs_err::hard_link(root.join("usr/bin/a"), root.join("usr/bin/b")).unwrap();
    write(&root.join("usr/bin/ping"), b"ping");
    xattr::set(
        root.join("usr/bin/ping"),
        "security.capability",
        &CAP_NET_BIND_SERVICE,
    )
    .unwrap();
    xattr::set(root.join("etc/passwd"), "user.test", b"hello").unwrap();
    mknod(&root.join("run-fifo"), FileType::Fifo, 0o640, 0, 0);
    mknod(
        &root.join("dev-null"),
        FileType::CharacterDevice,
        0o666,
        1,
        3,
    );
    // Overlay format: a whiteout and an opaque directory.
    write(&root.join("var/keep"), b"k");
    mknod(
        &root.join("var/deleted"),
        FileType::CharacterDevice,
        0,
        0,
        0,
    );
    write(&root.join("opaque/new"), b"n");
    xattr::set(root.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
    let long_dir = "d".repeat(80);
    let long_name = "f".repeat(120);
    write(&root.join(&long_dir).join(&long_name), b"long");
    std::os::unix::fs::symlink("t".repeat(150), root.join("long-link")).unwrap();
}

fn uid(n: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(n)
}

fn gid(n: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(n)
}

/// Everything observable about one path: type, mode, owner, mtime (not for symlinks), content or target,
/// device number and xattrs.
fn describe_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let path = entry.path();
        let meta = fs_err::symlink_metadata(path).unwrap();
        let ft = meta.file_type();
        let detail = if ft.is_file() {
            format!(
                "file {:?}",
                String::from_utf8_lossy(&fs_err::read(path).unwrap())
            )
        } else if ft.is_symlink() {
            format!("symlink {}", fs_err::read_link(path).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_char_device() {
            format!(
                "char {}:{}",
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev())
            )
        } else if ft.is_fifo() {
            "fifo".to_owned()
        } else {
            "other".to_owned()
        };
        let mtime = if ft.is_symlink() || ft.is_dir() {
            String::new()
        } else {
            format!(" mtime={}", meta.mtime())
        };
        let mut xattrs: Vec<String> = xattr::list(path)
            .unwrap()
            .map(|n| {
                format!(
                    "{}={:?}",
                    n.to_string_lossy(),
                    xattr::get(path, &n).unwrap().unwrap()
                )
            })
            .collect();
        xattrs.sort();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.insert(
            rel,
            format!(
                "{detail} mode={:o} owner={}:{}{mtime} xattrs={xattrs:?}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
        );
    }
    out
}

fn gzip_opts() -> LayerOptions {
    LayerOptions {
        compression: Compression::Gzip,
        level: None,
        source_date_epoch: None,
        threads: None,
    }
}

fn gunzip(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(blob)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Entry paths of an uncompressed tar, with their type byte.
fn tar_entries(tar_bytes: &[u8]) -> Vec<(String, u8)> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type().as_byte(),
            )
        })
        .collect()
}

#[test]
fn round_trip_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let mut blob = Vec::new();
    let info = oci::write_layer(&src, &mut blob, &gzip_opts()).unwrap();
    assert_eq!(info.media_type, oci::media_type::OCI_LAYER_GZIP);
    assert_eq!(info.size, blob.len() as u64);
    assert_eq!(info.digest, Digest::sha256_of(&blob));
    assert_eq!(info.diff_id, Digest::sha256_of(&gunzip(&blob)));

    let dest = tmp.path().join("dest");
    let diff_id =
        oci::unpack_layer(blob.as_slice(), oci::media_type::OCI_LAYER_GZIP, &dest).unwrap();
    assert_eq!(diff_id, info.diff_id);
    let (before, after) = (describe_tree(&src), describe_tree(&dest));
    assert_eq!(before, after);
    // Spot checks, so that a describe_tree bug cannot hide a loss.
    assert!(
        after["usr/bin/su"].contains("mode=4755"),
        "{}",
        after["usr/bin/su"]
    );
    assert!(after["tmp"].contains("mode=1777"));
    assert!(after["home/user/notes"].contains("owner=1000:1000"));
    assert!(after["usr/bin/ping"].contains("security.capability"));
    assert!(after["etc/passwd"].contains("user.test"));
    assert!(after["var/deleted"].starts_with("char 0:0"));
    assert!(after["opaque"].contains("trusted.overlay.opaque"));
    assert!(after["run-fifo"].starts_with("fifo"));
    let a = fs_err::metadata(dest.join("usr/bin/a")).unwrap();
    let b = fs_err::metadata(dest.join("usr/bin/b")).unwrap();
    assert_eq!(
        (a.dev(), a.ino()),
        (b.dev(), b.ino()),
        "hardlinks share an inode after unpack"
    );
    // Directory mtimes survive the creation of their children.
    for dir in ["etc", "usr/bin", "opaque"] {
        let m1 = fs_err::metadata(src.join(dir)).unwrap().mtime();
        let m2 = fs_err::metadata(dest.join(dir)).unwrap().mtime();
        assert_eq!(m1, m2, "mtime of {dir}");
    }
}

#[test]
fn tar_uses_oci_whiteouts_and_relative_paths() {
    let tmp = tempfile::tempdir().unwrap();
    sample_tree(tmp.path());
    let mut blob = Vec::new();
    let opts = LayerOptions {
        compression: Compression::Uncompressed,
        ..gzip_opts()
    };
    let info = oci::write_layer(tmp.path(), &mut blob, &opts).unwrap();
    assert_eq!(info.media_type, oci::media_type::OCI_LAYER_TAR);
    assert_eq!(info.diff_id, info.digest);
    let entries = tar_entries(&blob);
    let paths: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    assert!(paths.contains(&"var/.wh.deleted"), "{paths:?}");
    assert!(!paths.contains(&"var/deleted"));
    let opq = paths
        .iter()
        .position(|p| *p == "opaque/.wh..wh..opq")
        .expect("opaque marker");
    assert_eq!(
        paths[opq - 1],
        "opaque/",
        "the marker follows its directory"
    );
    assert!(paths.contains(&"etc/"));
    assert!(paths.contains(&"etc/passwd"));
    assert!(paths
        .iter()
        .all(|p| !p.starts_with("./") && !p.starts_with('/')));
    let by_path: BTreeMap<_, _> = entries.iter().cloned().collect();
    assert_eq!(
        by_path["usr/bin/b"], b'1',
        "second name of a hardlinked file is a link entry"
    );
    assert_eq!(by_path["usr/bin/a"], b'0');
    assert_eq!(by_path["var/.wh.deleted"], b'0');
    // Parents come before children and siblings are sorted.
    let pos = |p: &str| paths.iter().position(|x| *x == p).unwrap();
    assert!(pos("usr/") < pos("usr/bin/"));
    assert!(pos("usr/bin/a") < pos("usr/bin/b"));
    assert!(pos("etc/") < pos("usr/"));
    let long = format!("{}/{}", "d".repeat(80), "f".repeat(120));
    assert!(paths.contains(&long.as_str()));
    // The whole tree is the layer, but not its root.
    assert!(!paths.contains(&"./") && !paths.contains(&""));
}

#[test]
fn identical_input_gives_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    sample_tree(tmp.path());
    let (mut one, mut two) = (Vec::new(), Vec::new());
    let i1 = oci::write_layer(tmp.path(), &mut one, &gzip_opts()).unwrap();
    let i2 = oci::write_layer(tmp.path(), &mut two, &gzip_opts()).unwrap();
    assert_eq!(one, two);
    assert_eq!(i1, i2);
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for (root, when) in [(&a, 1_700_000_000), (&b, 1_800_000_000)] {
        write(&root.join("dir/file"), b"same");
        set_mtime(&root.join("dir/file"), when);
        set_mtime(&root.join("dir"), when + 5);
    }
    let digest = |root: &Path, epoch| {
        let opts = LayerOptions {
            source_date_epoch: epoch,
            ..gzip_opts()
        };
        oci::write_layer(root, std::io::sink(), &opts)
            .unwrap()
            .digest
    };
    assert_ne!(digest(&a, None), digest(&b, None));
    assert_eq!(
        digest(&a, Some(1_000_000_000)),
        digest(&b, Some(1_000_000_000))
    );
    // Older mtimes are kept as they are.
    let mut blob = Vec::new();
    let opts = LayerOptions {
        source_date_epoch: Some(1_750_000_000),
        compression: Compression::Uncompressed,
        level: None,
        threads: None,
    };
    oci::write_layer(&a, &mut blob, &opts).unwrap();
    let mut archive = tar::Archive::new(blob.as_slice());
    let mtimes: Vec<u64> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().header().mtime().unwrap())
        .collect();
    assert_eq!(mtimes, vec![1_700_000_005, 1_700_000_000]);
}

#[test]
fn gzip_layer_is_listed_by_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    let blob_path = tmp.path().join("layer.tar.gz");
    let file = fs_err::File::create(&blob_path).unwrap();
    oci::write_layer(&src, file, &gzip_opts()).unwrap();
    let output = Command::new("tar")
        .arg("-tzf")
        .arg(&blob_path)
        .output()
        .expect("tar is installed");
    assert!(
        output.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    for expected in [
        "etc/",
        "etc/passwd",
        "usr/bin/su",
        "var/.wh.deleted",
        "opaque/.wh..wh..opq",
    ] {
        assert!(
            lines.contains(&expected),
            "{expected} missing from {lines:?}"
        );
    }
    let long = format!("{}/{}", "d".repeat(80), "f".repeat(120));
    assert!(
        lines.contains(&long.as_str()),
        "long name missing from {lines:?}"
    );
    // GNU tar extracts it too, with the xattrs.
    let out = tmp.path().join("extracted");
    fs_err::create_dir(&out).unwrap();
    let status = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xzf"])
        .arg(&blob_path)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs_err::read(out.join("etc/passwd")).unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    assert_eq!(
        xattr::get(out.join("etc/passwd"), "user.test")
            .unwrap()
            .as_deref(),
        Some(b"hello".as_slice())
    );
    assert_eq!(
        fs_err::read_link(out.join("long-link")).unwrap(),
        PathBuf::from("t".repeat(150)),
        "long symlink target through PAX linkpath"
    );
}

#[test]
fn empty_dir_is_empty_layer() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(oci::is_empty_dir(tmp.path()).unwrap());
    let mut blob = Vec::new();
    let info = oci::write_layer(tmp.path(), &mut blob, &gzip_opts()).unwrap();
    assert_eq!(
        gunzip(&blob),
        vec![0u8; 1024],
        "an empty tar is two zero blocks"
    );
    assert_eq!(info.diff_id, Digest::sha256_of(&[0u8; 1024]));
    fs_err::create_dir(tmp.path().join("x")).unwrap();
    assert!(!oci::is_empty_dir(tmp.path()).unwrap());
}

/// Builds a tar from raw (name, type, link, data) tuples, bypassing the tar crate's path checks.
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn assert_unsafe(result: Result<Digest, LayerError>) {
    match result {
        Err(LayerError::UnsafePath { .. }) => {}
        other => panic!("expected an unsafe-path error, got {other:?}"),
    }
}

#[test]
fn unpack_refuses_parent_components() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a/b/dest");
    let tar = raw_tar(&[("../../etc/evil", tar::EntryType::Regular, "", b"evil")]);
    assert_unsafe(oci::unpack_layer(
        tar.as_slice(),
        oci::media_type::OCI_LAYER_TAR,
        &dest,
    ));
    assert!(!tmp.path().join("a/etc/evil").exists());
    assert!(!tmp.path().join("etc/evil").exists());
}

#[test]
fn unpack_makes_absolute_paths_relative() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[("/abs/path", tar::EntryType::Regular, "", b"inside")]);
    oci::unpack_layer(tar.as_slice(), oci::media_type::OCI_LAYER_TAR, tmp.path()).unwrap();
    assert_eq!(
        fs_err::read(tmp.path().join("abs/path")).unwrap(),
        b"inside"
    );
}

#[test]
fn unpack_never_writes_through_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs_err::create_dir_all(outside.join("etc")).unwrap();
    let dest = tmp.path().join("dest");
    let target = outside.to_str().unwrap();
    let tar = raw_tar(&[
        ("evil", tar::EntryType::Symlink, target, b""),
        ("evil/etc/passwd", tar::EntryType::Regular, "", b"pwned"),
    ]);
    assert_unsafe(oci::unpack_layer(
        tar.as_slice(),
        oci::media_type::OCI_LAYER_TAR,
        &dest,
    ));
    assert!(
        !outside.join("etc/passwd").exists(),
        "wrote through the symlink"
    );
    assert_eq!(
        fs_err::read_link(dest.join("evil")).unwrap(),
        outside,
        "the symlink is stored verbatim"
    );

    // `evil -> /` style: a relative-to-root target is just as inert.
    let dest2 = tmp.path().join("dest2");
    let tar = raw_tar(&[
        ("evil", tar::EntryType::Symlink, "/", b""),
        ("evil/tmp/x", tar::EntryType::Regular, "", b"x"),
    ]);
    assert_unsafe(oci::unpack_layer(
        tar.as_slice(),
        oci::media_type::OCI_LAYER_TAR,
        &dest2,
    ));
}

#[test]
fn unpack_refuses_hardlinks_out_of_dest() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("x");
    write(&secret, b"secret");
    let dest = tmp.path().join("a/dest");
    let tar = raw_tar(&[("h", tar::EntryType::Link, "../../x", b"")]);
    assert_unsafe(oci::unpack_layer(
        tar.as_slice(),
        oci::media_type::OCI_LAYER_TAR,
        &dest,
    ));
    assert!(!dest.join("h").exists());

    // Through a symlink to a directory outside: refused, not resolved.
    let dest2 = tmp.path().join("dest2");
    let target = tmp.path().to_str().unwrap();
    let tar = raw_tar(&[
        ("up", tar::EntryType::Symlink, target, b""),
        ("h", tar::EntryType::Link, "up/x", b""),
    ]);
    assert_unsafe(oci::unpack_layer(
        tar.as_slice(),
        oci::media_type::OCI_LAYER_TAR,
        &dest2,
    ));
    assert_eq!(fs_err::metadata(&secret).unwrap().nlink(), 1);
}

#[test]
fn unpack_replaces_earlier_entries_and_ignores_forged_overlay_xattrs() {
    let tmp = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(1);
    header.set_path("a").unwrap();
    header.set_cksum();
    builder.append(&header, b"1".as_slice()).unwrap();
    // A forged overlay xattr would turn a directory into a redirect or hide lower layers.
    let mut pax = Vec::new();
    for (k, v) in [
        ("SCHILY.xattr.trusted.overlay.opaque", "y"),
        ("SCHILY.xattr.user.kept", "v"),
    ] {
        let rec = format!(" {k}={v}\n");
        let len = rec.len() + 2;
        pax.extend_from_slice(format!("{len}{rec}").as_bytes());
    }
    let mut xh = tar::Header::new_ustar();
    xh.set_entry_type(tar::EntryType::XHeader);
    xh.set_size(pax.len() as u64);
    xh.set_path("PaxHeaders.0/a").unwrap();
    xh.set_cksum();
    builder.append(&xh, pax.as_slice()).unwrap();
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o750);
    dir.set_size(0);
    dir.set_path("a/").unwrap();
    dir.set_cksum();
    builder.append(&dir, std::io::empty()).unwrap();
    let tar = builder.into_inner().unwrap();
    oci::unpack_layer(tar.as_slice(), oci::media_type::OCI_LAYER_TAR, tmp.path()).unwrap();
    let meta = fs_err::symlink_metadata(tmp.path().join("a")).unwrap();
    assert!(meta.is_dir(), "the later directory entry replaces the file");
    assert_eq!(meta.mode() & 0o7777, 0o750);
    assert_eq!(
        xattr::get(tmp.path().join("a"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert_eq!(
        xattr::get(tmp.path().join("a"), "user.kept")
            .unwrap()
            .as_deref(),
        Some(b"v".as_slice())
    );
}

#[test]
fn unpack_detects_gzip_and_hashes_the_whole_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let mut tar = raw_tar(&[("f", tar::EntryType::Regular, "", b"data")]);
    // Extra zero blocks after the end-of-archive marker are part of the diff_id too.
    tar.extend_from_slice(&[0u8; 4096]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let blob = gz.finish().unwrap();
    // The media type says uncompressed, the magic says gzip: the magic wins.
    let diff_id =
        oci::unpack_layer(blob.as_slice(), oci::media_type::OCI_LAYER_TAR, tmp.path()).unwrap();
    assert_eq!(diff_id, Digest::sha256_of(&tar));
    assert_eq!(fs_err::read(tmp.path().join("f")).unwrap(), b"data");
}

#[test]
fn unpack_whiteouts_and_opaque_markers() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[
        ("dir/", tar::EntryType::Directory, "", b""),
        ("dir/.wh..wh..opq", tar::EntryType::Regular, "", b""),
        ("dir/.wh.gone", tar::EntryType::Regular, "", b""),
        (".wh..wh.plnk", tar::EntryType::Directory, "", b""),
    ]);
    oci::unpack_layer(tar.as_slice(), oci::media_type::OCI_LAYER_TAR, tmp.path()).unwrap();
    let gone = fs_err::symlink_metadata(tmp.path().join("dir/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert_eq!(
        xattr::get(tmp.path().join("dir"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(b"y".as_slice())
    );
    let names: Vec<_> = fs_err::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "aufs metadata is skipped: {names:?}");
    assert_eq!(names[0].as_bytes(), b"dir");
}

#[test]
fn parallel_gzip_is_identical_for_any_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_tree(&src);
    // Enough data for several gzip members (a large file's own and the stream's), some of it
    // compressible.
    let big: Vec<u8> = (0..700_000u32)
        .flat_map(|i| (i / 7).to_le_bytes())
        .collect();
    write(&src.join("big/data.bin"), &big);
    let layer = |threads| {
        let mut blob = Vec::new();
        let opts = LayerOptions {
            threads,
            ..gzip_opts()
        };
        let info = oci::write_layer(&src, &mut blob, &opts).unwrap();
        (info, blob)
    };
    let (one, blob) = layer(Some(1));
    for threads in [2, 4] {
        assert_eq!(
            layer(Some(threads)),
            (one.clone(), blob.clone()),
            "{threads} threads"
        );
    }
    assert_eq!(layer(None), (one.clone(), blob.clone()), "no thread count");
    assert_eq!(one.diff_id, Digest::sha256_of(&gunzip(&blob)));
    assert_eq!(one.digest, Digest::sha256_of(&blob));

    let blob_path = tmp.path().join("par.tar.gz");
    fs_err::write(&blob_path, &blob).unwrap();
    let status = Command::new("gzip")
        .arg("-t")
        .arg(&blob_path)
        .status()
        .expect("gzip is installed");
    assert!(status.success(), "gzip -t rejects the multi-member stream");
    let dest = tmp.path().join("dest");
    let diff_id = oci::unpack_layer(blob.as_slice(), one.media_type, &dest).unwrap();
    assert_eq!(diff_id, one.diff_id);
    assert_eq!(fs_err::read(dest.join("big/data.bin")).unwrap(), big);
}

/// Fails (never skips) when a tool a test needs is missing.
fn require_tool(bin: &str, package: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: install it with `apt-get install {package}` (or run scripts/install-deps.sh)"
    );
}

// See: #19. Sparse files in base layers unpacked as `GNUSparseFile.<pid>/name` junk (PAX formats) instead
// of the file, which containerd and Docker read. Each format GNU tar writes (old GNU, PAX 0.0, 0.1, 1.0)
// and bsdtar's (PAX 1.0 without the closing empty fragment) must give the same file, with its holes.
#[test]
fn r19_gnu_sparse_files_from_gnu_tar_and_bsdtar_unpack_as_the_file() {
    require_tool("/usr/bin/tar", "tar");
    require_tool("/usr/bin/bsdtar", "libarchive-tools");
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs_err::create_dir_all(src.join("dir")).unwrap();
    // 8 MiB with data at the start, in the middle (not block-aligned) and at the very end.
    let size: u64 = 8 << 20;
    let mut expected = vec![0u8; usize::try_from(size).unwrap()];
    {
        let mut f = fs_err::File::create(src.join("dir/holes")).unwrap();
        f.set_len(size).unwrap();
        use std::io::Seek;
        for (at, bytes) in [
            (0u64, &b"start"[..]),
            (3_000_001, b"middle"),
            (size - 3, b"end"),
        ] {
            f.seek(std::io::SeekFrom::Start(at)).unwrap();
            f.write_all(bytes).unwrap();
            let at = usize::try_from(at).unwrap();
            expected[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }
    write(&src.join("dir/plain"), b"not sparse");
    let gnu = |format: &str, extra: &[&str], out: &str| {
        let status = Command::new("tar")
            .arg("-C")
            .arg(&src)
            .args(["--sparse", &format!("--format={format}")])
            .args(extra)
            .arg("-cf")
            .arg(tmp.path().join(out))
            .args(["dir"])
            .status()
            .unwrap();
        assert!(status.success());
    };
    gnu("gnu", &[], "gnu.tar");
    for v in ["0.0", "0.1", "1.0"] {
        gnu(
            "posix",
            &[&format!("--sparse-version={v}")],
            &format!("pax{v}.tar"),
        );
    }
    let status = Command::new("bsdtar")
        .arg("-C")
        .arg(&src)
        .args(["--read-sparse", "-cf"])
        .arg(tmp.path().join("bsdtar.tar"))
        .arg("dir")
        .status()
        .unwrap();
    assert!(status.success());

    for name in [
        "gnu.tar",
        "pax0.0.tar",
        "pax0.1.tar",
        "pax1.0.tar",
        "bsdtar.tar",
    ] {
        let blob = fs_err::read(tmp.path().join(name)).unwrap();
        if name != "gnu.tar" {
            assert!(
                blob.windows(10).any(|w| w == b"GNU.sparse"),
                "{name} holds no GNU sparse records: the test would prove nothing"
            );
        }
        let dest = tmp.path().join(format!("out-{name}"));
        let diff_id = oci::unpack_layer(&blob[..], oci::media_type::OCI_LAYER_TAR, &dest).unwrap();
        assert_eq!(diff_id, Digest::sha256_of(&blob), "{name}");
        let mut names: Vec<_> = fs_err::read_dir(dest.join("dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["holes", "plain"], "{name}");
        let got = fs_err::read(dest.join("dir/holes")).unwrap();
        assert!(got == expected, "{name}: content differs");
        assert_eq!(fs_err::read(dest.join("dir/plain")).unwrap(), b"not sparse");
        let meta = fs_err::metadata(dest.join("dir/holes")).unwrap();
        if name != "gnu.tar" {
            // The tar crate fills the old format's holes; ours are kept.
            assert!(
                meta.blocks() * 512 < size / 4,
                "{name}: {} bytes allocated, holes not kept",
                meta.blocks() * 512
            );
        }
    }
}

// See: #19. Sparse maps that do not fit their data are refused with an error naming the entry.
#[test]
fn r19_bad_sparse_maps_are_refused() {
    let pax = |records: &[(&str, &str)], data: &[u8]| {
        let mut out = Vec::new();
        {
            let mut b = tar::Builder::new(&mut out);
            common::append_pax(&mut b, "PaxHeaders/f", records);
            let mut h = tar::Header::new_ustar();
            h.set_path("GNUSparseFile.1/f").unwrap();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, data).unwrap();
            b.finish().unwrap();
        }
        out
    };
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [u8],
        &'static str,
    );
    let cases: &[Case] = &[
        (
            &[("GNU.sparse.size", "10"), ("GNU.sparse.map", "5,10")],
            b"0123456789",
            "past the real size",
        ),
        (
            &[("GNU.sparse.size", "100"), ("GNU.sparse.map", "0,50")],
            b"0123456789",
            "more bytes than",
        ),
        (
            &[("GNU.sparse.size", "100"), ("GNU.sparse.map", "20,5,10,5")],
            b"0123456789",
            "overlaps",
        ),
        (
            &[("GNU.sparse.major", "1"), ("GNU.sparse.realsize", "10")],
            b"99\n0\n",
            "runs past",
        ),
    ];
    for (records, data, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let blob = pax(records, data);
        let err =
            oci::unpack_layer(&blob[..], oci::media_type::OCI_LAYER_TAR, tmp.path()).unwrap_err();
        let text = format!("{err}");
        assert!(
            matches!(err, LayerError::BadSparse { .. }) && text.contains(want),
            "{records:?}: {text}"
        );
        assert!(text.contains("GNUSparseFile.1/f"), "{text}");
    }
}

/// #17 item 10: a PAX global header (GNU tar's `--pax-option=KEY=VALUE` writes one named
/// `/tmp/GlobalHead.<pid>.<n>`; `git archive` writes `pax_global_header`) leaves nothing behind.
/// Lab: `ADD content.tar.gz /x/` of such a tar under dockerd 20.10's BuildKit → `/x` holds `d` only.
#[test]
fn pax_global_header_leaves_no_stray_directory() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("src/d/f"), b"hi\n");
    let tarball = tmp.path().join("g.tar");
    let out = Command::new("tar")
        .args(["--format=pax", "--pax-option=comment=release 1.0", "-cf"])
        .arg(&tarball)
        .args(["-C", tmp.path().join("src").to_str().unwrap(), "d"])
        .output()
        .expect("GNU tar (apt-get install tar)");
    assert!(out.status.success(), "{out:?}");
    let bytes = fs_err::read(&tarball).unwrap();
    // The archive does start with a global header (type `g`), or this test would prove nothing.
    assert_eq!(bytes[156], b'g');
    // A global header whose name collides with an existing file must not remove it either.
    let dest = tmp.path().join("dest");
    write(&dest.join("tmp/keep"), b"k");
    oci::unpack_layer(&bytes[..], oci::media_type::OCI_LAYER_TAR, &dest).unwrap();
    let mut names: Vec<String> = walkdir::WalkDir::new(&dest)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(&dest)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, vec!["d", "d/f", "tmp", "tmp/keep"]);
    let dest2 = tmp.path().join("dest2");
    oci::unpack_layer(&bytes[..], oci::media_type::OCI_LAYER_TAR, &dest2).unwrap();
    let names: Vec<_> = fs_err::read_dir(&dest2)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("d")]);
    assert_eq!(fs_err::read(dest2.join("d/f")).unwrap(), b"hi\n");
}
