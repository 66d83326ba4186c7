//! Layer compression: zstd through its multithreaded path, gzip on several threads, recompression.

use std::path::Path;

use oci::{media_type, Compression, LayerOptions};

/// A tree with compressible and incompressible files, big enough for several zstd jobs and gzip blocks.
fn tree(root: &Path) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = vec![0u8; 3 << 20];
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    fs_err::create_dir_all(root.join("data/sub")).unwrap();
    fs_err::write(root.join("data/noise.bin"), &noise).unwrap();
    fs_err::write(
        root.join("data/sub/text.txt"),
        "layer text\n".repeat(400_000),
    )
    .unwrap();
    fs_err::write(root.join("small"), "s").unwrap();
}

fn write(
    dir: &Path,
    compression: Compression,
    threads: Option<usize>,
) -> (oci::LayerInfo, Vec<u8>) {
    let mut out = Vec::new();
    let info = oci::write_layer(
        dir,
        &mut out,
        &LayerOptions {
            compression,
            level: None,
            source_date_epoch: Some(1_700_000_000),
            threads,
        },
    )
    .unwrap();
    (info, out)
}

#[test]
fn zstd_gives_the_same_bytes_for_1_2_and_4_workers() {
    let tmp = tempfile::tempdir().unwrap();
    tree(tmp.path());
    let (one, bytes1) = write(tmp.path(), Compression::Zstd, Some(1));
    let (_, bytes_default) = write(tmp.path(), Compression::Zstd, None);
    assert_eq!(bytes1, bytes_default, "None means one worker, same path");
    for n in [2, 4] {
        let (info, bytes) = write(tmp.path(), Compression::Zstd, Some(n));
        assert_eq!(info, one, "{n} workers");
        assert!(bytes == bytes1, "{n} workers give other bytes");
    }
    assert_eq!(one.media_type, media_type::OCI_LAYER_ZSTD);
    assert!(bytes1.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
    assert!(one.size < 3_500_000, "compressed: {}", one.size);
    // Same tar as the gzip layer.
    let (gz, _) = write(tmp.path(), Compression::Gzip, Some(2));
    assert_eq!(gz.diff_id, one.diff_id);
}

#[test]
fn gzip_gives_the_same_bytes_for_1_2_and_4_threads() {
    let tmp = tempfile::tempdir().unwrap();
    tree(tmp.path());
    let (one, bytes1) = write(tmp.path(), Compression::Gzip, Some(1));
    for n in [2, 4] {
        let (info, bytes) = write(tmp.path(), Compression::Gzip, Some(n));
        assert_eq!(info, one, "{n} threads");
        assert!(bytes == bytes1, "{n} threads give other bytes");
    }
}

#[test]
fn zstd_layers_unpack_to_the_same_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    tree(&src);
    let (info, bytes) = write(&src, Compression::Zstd, Some(2));
    let dest = tmp.path().join("dest");
    let diff_id = oci::unpack_layer(&bytes[..], media_type::OCI_LAYER_ZSTD, &dest).unwrap();
    assert_eq!(diff_id, info.diff_id);
    for f in ["data/noise.bin", "data/sub/text.txt", "small"] {
        assert_eq!(
            fs_err::read(src.join(f)).unwrap(),
            fs_err::read(dest.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn recompression_keeps_the_diff_id_between_every_pair() {
    let tmp = tempfile::tempdir().unwrap();
    tree(tmp.path());
    let kinds = [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Uncompressed,
    ];
    for from in kinds {
        let (info, bytes) = write(tmp.path(), from, Some(2));
        for to in kinds {
            let mut out = Vec::new();
            let opts = LayerOptions {
                compression: to,
                threads: Some(2),
                ..LayerOptions::default()
            };
            let re = oci::recompress_layer(&bytes[..], info.media_type, &mut out, &opts).unwrap();
            assert_eq!(re.diff_id, info.diff_id, "{from:?} -> {to:?}");
            assert_eq!(re.media_type, to.oci_media_type());
            assert_eq!(re.size, out.len() as u64);
            assert_eq!(re.digest, oci::Digest::sha256_of(&out));
            // Recompressing into the same format with the same options gives the writer's bytes.
            if from == to {
                assert!(out == bytes, "{from:?} round trip changed the bytes");
            }
        }
    }
    assert_eq!(
        Compression::of_media_type(media_type::DOCKER_LAYER_GZIP),
        Some(Compression::Gzip)
    );
    assert_eq!(
        Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar"),
        Some(Compression::Uncompressed)
    );
    assert_eq!(
        Compression::of_media_type(media_type::OCI_LAYER_ZSTD),
        Some(Compression::Zstd)
    );
}
