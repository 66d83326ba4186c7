//! Pruning: what is kept (tags, referenced and in-use items), LRU order, ages, and leases across processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cache::{GcItem, PruneOptions, Store};
use oci::{media_type, Descriptor, Digest, Manifest};

const ROLE: &str = "CACHE_TEST_ROLE";
const ROOT: &str = "CACHE_TEST_ROOT";

fn keep_nothing(_: GcItem<'_>) -> bool {
    false
}

/// A committed snapshot with one file of `len` bytes.
fn snapshot(store: &Store, name: &str, len: usize) -> Digest {
    let diff_id = Digest::sha256_of(name.as_bytes());
    let dir = store.tmp_dir().unwrap();
    fs_err::write(dir.path().join("f"), vec![1u8; len]).unwrap();
    store.commit_snapshot(dir, &diff_id).unwrap();
    diff_id
}

/// A one-layer image whose config lists `diff_id`; returns the manifest descriptor and all blob digests.
fn image(store: &Store, label: &str, diff_id: &Digest) -> (Descriptor, Vec<Digest>) {
    let layer = store
        .put_blob(format!("layer of {label}").as_bytes())
        .unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [diff_id.to_string()] },
    }))
    .unwrap();
    let config_digest = store.put_blob(&config).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: Descriptor::new(
            media_type::OCI_CONFIG,
            config_digest.clone(),
            config.len() as u64,
        ),
        layers: vec![Descriptor::new(
            media_type::OCI_LAYER_GZIP,
            layer.clone(),
            1,
        )],
        annotations: BTreeMap::new(),
    };
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let d = store.put_blob(&bytes).unwrap();
    (
        Descriptor::new(media_type::OCI_MANIFEST, d.clone(), bytes.len() as u64),
        vec![d, config_digest, layer],
    )
}

#[test]
fn default_prune_removes_only_what_nothing_references() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    // Tagged image with its snapshot.
    let tagged_snap = snapshot(&store, "tagged", 10);
    let (tagged, tagged_blobs) = image(&store, "tagged", &tagged_snap);
    store.set_tag("app:latest", &tagged).unwrap();
    // A base-image resolution with its snapshot.
    let base_snap = snapshot(&store, "base", 10);
    let (base, base_blobs) = image(&store, "base", &base_snap);
    store
        .base_put("docker.io/library/alpine:3.20", &base)
        .unwrap();
    // A cache record referencing a blob and a snapshot.
    let rec_blob = store.put_blob(b"record output").unwrap();
    let rec_snap = snapshot(&store, "record", 10);
    store
        .cache_put_with_refs("key", b"v", &[rec_blob.clone(), rec_snap.clone()])
        .unwrap();
    // Garbage.
    let orphan_blob = store.put_blob(&[9u8; 100]).unwrap();
    let orphan_snap = snapshot(&store, "orphan", 50);

    let report = store.prune(PruneOptions::default(), &keep_nothing).unwrap();
    assert_eq!(
        (report.blobs, report.snapshots, report.records, report.bases),
        (1, 1, 0, 0)
    );
    assert_eq!(report.bytes, 150);
    assert!(!store.has_blob(&orphan_blob));
    assert_eq!(store.snapshot_path(&orphan_snap), None);
    for d in tagged_blobs.iter().chain(&base_blobs).chain([&rec_blob]) {
        assert!(store.has_blob(d), "{d} was pruned");
    }
    for s in [&tagged_snap, &base_snap, &rec_snap] {
        assert!(store.snapshot_path(s).is_some(), "{s} was pruned");
    }
    assert_eq!(store.cache_get("key").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(store.usage().unwrap().snapshots, 3);
}

#[test]
fn all_keeps_tags_and_in_use_items_only() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let tagged_snap = snapshot(&store, "tagged", 1);
    let (tagged, tagged_blobs) = image(&store, "tagged", &tagged_snap);
    store.set_tag("app:latest", &tagged).unwrap();
    let base_snap = snapshot(&store, "base", 1);
    let (base, base_blobs) = image(&store, "base", &base_snap);
    store.base_put("alpine", &base).unwrap();
    let a = store.put_blob(b"a").unwrap();
    let b = store.put_blob(b"b").unwrap();
    store
        .cache_put_with_refs("a", b"", std::slice::from_ref(&a))
        .unwrap();
    store
        .cache_put_with_refs("b", b"", std::slice::from_ref(&b))
        .unwrap();
    let mount = store.cache_mount_dir("go-build").unwrap();
    let locked_mount = store.cache_mount_dir("apt").unwrap();
    let guard = store.lock_cache_mount("apt").unwrap();

    let keep = |item: GcItem<'_>| item == GcItem::Record("b");
    let report = store
        .prune(
            PruneOptions {
                all: true,
                ..PruneOptions::default()
            },
            &keep,
        )
        .unwrap();
    assert_eq!((report.records, report.bases, report.mounts), (1, 1, 1));
    assert_eq!(store.cache_get("a").unwrap(), None);
    assert!(!store.has_blob(&a));
    assert!(store.cache_get("b").unwrap().is_some());
    assert!(store.has_blob(&b), "kept through its in-use record");
    assert_eq!(store.base_get("alpine").unwrap(), None);
    assert!(base_blobs.iter().all(|d| !store.has_blob(d)));
    assert_eq!(store.snapshot_path(&base_snap), None);
    assert!(tagged_blobs.iter().all(|d| store.has_blob(d)));
    assert!(store.snapshot_path(&tagged_snap).is_some());
    assert!(!mount.exists());
    assert!(locked_mount.exists(), "a locked cache mount is in use");
    drop(guard);
    // skopeo-visible layout stays intact.
    assert_eq!(
        store.list_tags().unwrap(),
        vec![("app:latest".to_owned(), tagged)]
    );
}

#[test]
fn older_than_removes_stale_owners_and_their_exclusive_blobs() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let shared = store.put_blob(b"shared").unwrap();
    let old_only = store.put_blob(b"old only").unwrap();
    store
        .cache_put_with_refs("old", b"", &[shared.clone(), old_only.clone()])
        .unwrap();
    store.cache_mount_dir("stale").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    store
        .cache_put_with_refs("new", b"", std::slice::from_ref(&shared))
        .unwrap();
    let fresh = store.cache_mount_dir("fresh").unwrap();

    let opts = PruneOptions {
        older_than: Some(Duration::from_millis(200)),
        ..PruneOptions::default()
    };
    let report = store.prune(opts, &keep_nothing).unwrap();
    assert_eq!((report.records, report.blobs, report.mounts), (1, 1, 1));
    assert_eq!(report.bytes, 8);
    assert_eq!(store.cache_get("old").unwrap(), None);
    assert!(store.cache_get("new").unwrap().is_some());
    assert!(store.has_blob(&shared));
    assert!(!store.has_blob(&old_only));
    assert!(fresh.exists());
}

#[test]
fn keep_bytes_evicts_least_recently_used_first() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let mut blobs = Vec::new();
    for (i, key) in ["r1", "r2", "r3"].iter().enumerate() {
        let d = store
            .put_blob(&vec![u8::try_from(i).unwrap(); 1000])
            .unwrap();
        store
            .cache_put_with_refs(key, b"", std::slice::from_ref(&d))
            .unwrap();
        blobs.push(d);
        std::thread::sleep(Duration::from_millis(5));
    }
    // Using r1 makes r2 the least recently used.
    store.cache_get("r1").unwrap().unwrap();
    let opts = PruneOptions {
        keep_bytes: Some(2000),
        ..PruneOptions::default()
    };
    let report = store.prune(opts, &keep_nothing).unwrap();
    assert_eq!((report.records, report.blobs, report.bytes), (1, 1, 1000));
    assert_eq!(store.cache_get("r2").unwrap(), None);
    assert!(!store.has_blob(&blobs[1]));
    assert!(store.has_blob(&blobs[0]) && store.has_blob(&blobs[2]));
    // Already under the limit: nothing more goes.
    assert_eq!(
        store.prune(opts, &keep_nothing).unwrap(),
        cache::PruneReport::default()
    );
    let opts = PruneOptions {
        keep_bytes: Some(0),
        ..PruneOptions::default()
    };
    let in_use = |item: GcItem<'_>| item == GcItem::Record("r3");
    assert_eq!(store.prune(opts, &in_use).unwrap().records, 1);
    assert!(store.cache_get("r3").unwrap().is_some());
    assert_eq!(store.usage().unwrap().blob_bytes, 1000);
}

#[test]
fn prune_waits_for_a_lease_in_another_process() {
    const NAME: &str = "prune_waits_for_a_lease_in_another_process";
    if let (Ok(_), Some(root)) = (std::env::var(ROLE), std::env::var_os(ROOT)) {
        // Child: hold a lease until told to let go.
        let root = PathBuf::from(root);
        let store = Store::open(&root).unwrap();
        let lease = store.lease().unwrap();
        fs_err::write(root.join("ready"), b"").unwrap();
        wait_for(&root.join("release"));
        drop(lease);
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(root.path()).unwrap());
    let orphan = store.put_blob(b"orphan").unwrap();
    // Our own lease does not block our own prune.
    let own = store.lease().unwrap();
    assert_eq!(
        store
            .prune(PruneOptions::default(), &keep_nothing)
            .unwrap()
            .blobs,
        1
    );
    let orphan2 = store.put_blob(b"orphan 2").unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(ROLE, "lease")
        .env(ROOT, root.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&root.path().join("ready"));
    let (tx, rx) = mpsc::channel();
    let shared = store.clone();
    let pruner = std::thread::spawn(move || {
        // The same store: its lease (held by `own`) is upgraded, only the other process is waited for.
        let report = shared
            .prune(PruneOptions::default(), &keep_nothing)
            .unwrap();
        tx.send(report).unwrap();
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "prune ran during another process's build"
    );
    assert!(store.has_blob(&orphan2));
    fs_err::write(root.path().join("release"), b"").unwrap();
    let report = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("prune finished once the lease was released");
    assert_eq!(report.blobs, 1);
    assert!(!store.has_blob(&orphan) && !store.has_blob(&orphan2));
    pruner.join().unwrap();
    assert!(child.wait().unwrap().success());
    drop(own);
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
