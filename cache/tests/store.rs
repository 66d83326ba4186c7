//! Store behaviour that needs threads, several OS processes, a killed process, or skopeo as the reader.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cache::{Store, REF_NAME_ANNOTATION};
use oci::{media_type, Descriptor, Digest, Manifest};

/// Environment variable that switches a test binary re-run by a test into a child role.
const ROLE: &str = "CACHE_TEST_ROLE";
const ROOT: &str = "CACHE_TEST_ROOT";

/// Re-runs this test binary as a child executing only test `name`, in child role `role`.
fn child(name: &str, role: &str, root: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(ROOT, root);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

fn role() -> Option<(String, PathBuf)> {
    Some((std::env::var(ROLE).ok()?, std::env::var_os(ROOT)?.into()))
}

/// Writes a small but complete image (config, one empty gzip layer, manifest) and returns the manifest
/// descriptor and bytes.
fn write_image(store: &Store, label: &str) -> (Descriptor, Vec<u8>) {
    let tar = vec![0u8; 1024]; // an empty tar archive: two zero blocks
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let layer = gz.finish().unwrap();
    let layer_digest = store.put_blob(&layer).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "test": label } },
        "rootfs": { "type": "layers", "diff_ids": [Digest::sha256_of(&tar).to_string()] },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = store.put_blob(&config).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: Descriptor::new(media_type::OCI_CONFIG, config_digest, config.len() as u64),
        layers: vec![Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            layer_digest,
            layer.len() as u64,
        )],
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = store.put_blob(&bytes).unwrap();
    (
        Descriptor::new(media_type::OCI_MANIFEST, digest, bytes.len() as u64),
        bytes,
    )
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("failed to run skopeo ({e}); install it with `apt-get install skopeo`")
        });
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn concurrent_writers_of_the_same_blob_all_succeed() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let want = Digest::sha256_of(&content);
    let content = Arc::new(content);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (store, content, barrier, want) = (
                store.clone(),
                content.clone(),
                barrier.clone(),
                want.clone(),
            );
            std::thread::spawn(move || {
                let mut w = store.blob_writer().unwrap();
                barrier.wait();
                for chunk in content.chunks(64 * 1024) {
                    w.write_all(chunk).unwrap();
                }
                w.commit(Some(&want)).unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), (want.clone(), content.len() as u64));
    }
    assert_eq!(store.read_blob(&want).unwrap(), *content);
    assert_eq!(store.usage().unwrap().blobs, 1);
    // No temp file is left behind by the losers.
    let leftovers: Vec<_> = walk_files(&root.path().join("tmp"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".lock"))
        .collect();
    assert_eq!(leftovers, Vec::<PathBuf>::new());
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs_err::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk_files(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out
}

#[test]
fn tags_survive_reopen_and_index_json_lists_them() {
    let root = tempfile::tempdir().unwrap();
    let (app, registry_tag);
    {
        let store = Store::open(root.path()).unwrap();
        app = write_image(&store, "app").0;
        registry_tag = write_image(&store, "pushed").0;
        store.set_tag("app:latest", &app).unwrap();
        store.set_tag("127.0.0.1:5000/x:y", &registry_tag).unwrap();
        store.set_tag("app:old", &registry_tag).unwrap();
        assert!(store.remove_tag("app:old").unwrap());
        assert!(!store.remove_tag("app:old").unwrap());
    }
    let store = Store::open(root.path()).unwrap();
    assert_eq!(store.resolve_tag("app:latest").unwrap(), Some(app.clone()));
    assert_eq!(store.resolve_tag("app:old").unwrap(), None);
    assert_eq!(
        store.list_tags().unwrap(),
        vec![
            ("127.0.0.1:5000/x:y".to_owned(), registry_tag.clone()),
            ("app:latest".to_owned(), app.clone())
        ]
    );
    // Retagging replaces.
    store.set_tag("app:latest", &registry_tag).unwrap();
    store.set_tag("app:latest", &app).unwrap();

    let layout: serde_json::Value =
        serde_json::from_slice(&fs_err::read(root.path().join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
    let index: oci::Index =
        serde_json::from_slice(&fs_err::read(root.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index.schema_version, 2);
    assert_eq!(index.media_type.as_deref(), Some(media_type::OCI_INDEX));
    let listed: Vec<(&str, &Digest)> = index
        .manifests
        .iter()
        .map(|d| (d.annotations[REF_NAME_ANNOTATION].as_str(), &d.digest))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("127.0.0.1:5000/x:y", &registry_tag.digest),
            ("app:latest", &app.digest)
        ]
    );
    for d in &index.manifests {
        assert_eq!(d.media_type, media_type::OCI_MANIFEST);
        assert!(store.has_blob(&d.digest));
    }
}

#[test]
fn skopeo_reads_a_tagged_image() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let (desc, bytes) = write_image(&store, "skopeo");
    store.set_tag("app:latest", &desc).unwrap();
    let other = write_image(&store, "other").0;
    store.set_tag("127.0.0.1:5000/x:y", &other).unwrap();

    let reference = format!("oci:{}:app:latest", root.path().display());
    assert_eq!(skopeo(&["inspect", "--raw", &reference]), bytes);
    // Without --raw skopeo also reads the config blob.
    let info: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", &reference])).unwrap();
    assert_eq!(info["Digest"], desc.digest.to_string());
    assert_eq!(info["Labels"]["test"], "skopeo");
    // A full copy reads and verifies every blob.
    let out = tempfile::tempdir().unwrap();
    let dest = format!("dir:{}", out.path().join("copy").display());
    skopeo(&["copy", &reference, &dest]);
    assert_eq!(
        fs_err::read(out.path().join("copy/manifest.json")).unwrap(),
        bytes
    );
    let reference = format!("oci:{}:127.0.0.1:5000/x:y", root.path().display());
    let info: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", &reference])).unwrap();
    assert_eq!(info["Labels"]["test"], "other");
}

#[test]
fn three_processes_commit_records_concurrently() {
    const NAME: &str = "three_processes_commit_records_concurrently";
    const RECORDS: usize = 500;
    if let Some((role, root)) = role() {
        // Child: commit RECORDS records one transaction each, and retag every 50 records.
        let store = Store::open(&root).unwrap();
        let manifest = store.resolve_tag("shared:base").unwrap().unwrap();
        for i in 0..RECORDS {
            store
                .cache_put(
                    &format!("{role}-{i}"),
                    format!("value {role} {i}").as_bytes(),
                )
                .unwrap();
            if i % 50 == 0 {
                store.set_tag(&format!("{role}:{i}"), &manifest).unwrap();
            }
        }
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let image = write_image(&store, "shared").0;
    store.set_tag("shared:base", &image).unwrap();
    let start = Instant::now();
    let children: Vec<_> = ["p0", "p1", "p2"]
        .iter()
        .map(|r| child(NAME, r, root.path()).spawn().unwrap())
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "writer process failed: {out:?}");
    }
    let elapsed = start.elapsed();
    assert_eq!(
        store.usage().unwrap().records,
        3 * RECORDS as u64,
        "took {elapsed:?}"
    );
    for r in ["p0", "p1", "p2"] {
        for i in [0, 250, RECORDS - 1] {
            assert_eq!(
                store.cache_get(&format!("{r}-{i}")).unwrap().unwrap(),
                format!("value {r} {i}").into_bytes()
            );
        }
    }
    // Every process's tags made it into both the table and index.json.
    let tags = store.list_tags().unwrap();
    assert_eq!(tags.len(), 1 + 3 * RECORDS / 50);
    let index: oci::Index =
        serde_json::from_slice(&fs_err::read(root.path().join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index
        .manifests
        .iter()
        .map(|d| d.annotations[REF_NAME_ANNOTATION].as_str())
        .collect();
    let want: Vec<&str> = tags.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want);
}

#[test]
fn racing_snapshot_commits_keep_one_copy() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(root.path()).unwrap());
    let diff_id = Digest::sha256_of(b"racing layer");
    for round in 0..20 {
        let diff_id = Digest::sha256_of(format!("racing layer {round}").as_bytes());
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let (store, barrier, diff_id) = (store.clone(), barrier.clone(), diff_id.clone());
                std::thread::spawn(move || {
                    let dir = store.tmp_dir().unwrap();
                    fs_err::create_dir(dir.path().join("etc")).unwrap();
                    fs_err::write(dir.path().join("etc/owner"), format!("thread {t}")).unwrap();
                    barrier.wait();
                    store.commit_snapshot(dir, &diff_id).unwrap()
                })
            })
            .collect();
        let paths: Vec<PathBuf> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(paths[0], paths[1]);
        assert_eq!(store.snapshot_path(&diff_id), Some(paths[0].clone()));
        let owner = fs_err::read_to_string(paths[0].join("etc/owner")).unwrap();
        assert!(owner == "thread 0" || owner == "thread 1", "{owner}");
        assert_eq!(
            fs_err::read_dir(paths[0].join("etc")).unwrap().count(),
            1,
            "one copy, not a merge"
        );
    }
    assert_eq!(store.snapshot_path(&diff_id), None);
    assert_eq!(
        fs_err::read_dir(root.path().join("snapshots"))
            .unwrap()
            .count(),
        20
    );
    assert_eq!(store.usage().unwrap().snapshots, 20);
    // The losers' directories are gone from scratch space.
    assert_eq!(
        walk_files(&root.path().join("tmp"))
            .iter()
            .filter(|p| !p.to_string_lossy().ends_with(".lock"))
            .count(),
        0
    );
}

#[test]
fn killed_writer_leaves_no_blob_and_open_cleans_its_temp_file() {
    const NAME: &str = "killed_writer_leaves_no_blob_and_open_cleans_its_temp_file";
    if let Some((_, root)) = role() {
        // Child: write half a blob, say so, and wait to be killed.
        let store = Store::open(&root).unwrap();
        let mut w = store.blob_writer().unwrap();
        w.write_all(&vec![7u8; 1 << 20]).unwrap();
        w.flush().unwrap();
        fs_err::write(root.join("ready"), b"").unwrap();
        std::thread::sleep(Duration::from_secs(120));
        panic!("child was not killed");
    }
    let root = tempfile::tempdir().unwrap();
    // A live writer in this process, whose temp file must survive the cleanup.
    let live = Store::open(root.path()).unwrap();
    let mut live_writer = live.blob_writer().unwrap();
    live_writer.write_all(b"still being written").unwrap();
    live_writer.flush().unwrap();

    let mut c = child(NAME, "writer", root.path()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !root.path().join("ready").exists() {
        assert!(Instant::now() < deadline, "child never got ready");
        if let Some(status) = c.try_wait().unwrap() {
            panic!("child exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill().unwrap(); // SIGKILL: no destructor runs
    c.wait().unwrap();

    let tmp = root.path().join("tmp");
    let temp_files = |min_len: u64| {
        walk_files(&tmp)
            .into_iter()
            .filter(|p| {
                fs_err::metadata(p).unwrap().len() >= min_len
                    && !p.to_string_lossy().ends_with(".lock")
            })
            .count()
    };
    assert_eq!(
        temp_files(1 << 20),
        1,
        "the killed writer's temp file is left over"
    );
    assert_eq!(
        live.usage().unwrap().blobs,
        0,
        "no blob from an unfinished write"
    );

    let reopened = Store::open(root.path()).unwrap();
    assert_eq!(
        temp_files(1 << 20),
        0,
        "open removed the dead process's temp file"
    );
    assert_eq!(temp_files(1), 1, "the live writer's temp file is untouched");
    let (d, n) = live_writer.commit(None).unwrap();
    assert_eq!(n, 19);
    assert_eq!(reopened.read_blob(&d).unwrap(), b"still being written");
}

#[test]
fn a_blob_writer_hashed_by_its_caller_is_named_by_the_callers_digest_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store")).unwrap();
    let bytes = b"layer bytes the caller hashed";
    let mut w = store.blob_writer_hashed_by_caller().unwrap();
    w.write_all(bytes).unwrap();
    let digest = Digest::sha256_of(bytes);
    assert_eq!(
        w.commit(Some(&digest)).unwrap(),
        (digest.clone(), bytes.len() as u64)
    );
    assert_eq!(store.read_blob(&digest).unwrap(), bytes);
    // Without the caller's digest there is no name: an error, and nothing stored.
    let mut w = store.blob_writer_hashed_by_caller().unwrap();
    w.write_all(b"other").unwrap();
    assert!(w.commit(None).is_err());
    assert!(!store.has_blob(&Digest::sha256_of(b"other")));
    // The ordinary writer still checks what it is told.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"checked").unwrap();
    assert!(w.commit(Some(&digest)).is_err());
}
