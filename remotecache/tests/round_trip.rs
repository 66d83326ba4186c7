//! The cache format round trip without a registry: a solve's records exported to a directory, imported
//! by a fresh store, served from there, and their blobs fetched only when asked for.

use std::sync::Arc;

use images::BlobSource as _;
use remotecache::{CacheFrom, CacheTo, ExportOpts, Mode, Remote};

#[test]
fn records_exported_to_a_directory_come_back_in_a_fresh_store() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Arc::new(images::LazyClient::new(registry::ClientOptions::default()));

    // A "build": one RUN-like node whose outcome is a layer in the first store.
    let first = cache::Store::open(&dir.path().join("first")).unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("out"), "built\n").unwrap();
    let opts = oci::LayerOptions::default();
    let layer =
        images::write_layer_blob(&first, |w| Ok(oci::write_layer(&tree, w, &opts)?)).unwrap();
    let mut g = graph::BuildGraph::default();
    let base = g.add(graph::Op::Scratch, vec![], None, "FROM scratch".into());
    let run = g.add(
        graph::Op::Exec(graph::Exec::shell("make")),
        vec![base],
        None,
        "RUN make".into(),
    );
    let outcome = solver::Outcome {
        layers: vec![layer.clone()],
        added_layer: true,
    };
    let key = solver::CacheKey("ab".repeat(32));
    let mut solved = solver::Solved::default();
    solved.outcomes.insert(run, outcome.clone());
    solved.keys.insert(run, key.clone());

    let dest = dir.path().join("cache");
    let to = CacheTo::Local {
        dest: dest.clone(),
        tag: "main".into(),
        opts: ExportOpts {
            mode: Mode::Max,
            mounts: false,
            compression: None,
            ignore_error: false,
        },
    };
    let nothing = Remote::new(Arc::clone(&client), rt.handle().clone());
    let summary = remotecache::export(
        &to,
        &first,
        &nothing,
        &client,
        rt.handle(),
        &g,
        run,
        &solved,
        oci::Compression::Gzip,
    )
    .unwrap();
    assert_eq!(summary.records, 1);
    assert!(dest.join("index.json").exists(), "an OCI layout");

    // A fresh store imports metadata only: the record is there, the blob is not downloaded yet.
    let second = cache::Store::open(&dir.path().join("second")).unwrap();
    let mut remote = Remote::new(client, rt.handle().clone());
    let found = remote
        .import(
            &CacheFrom::Local {
                src: dest.clone(),
                tag: "main".into(),
            },
            &second,
            &oci::Platform::host(),
        )
        .unwrap();
    assert_eq!((found.records, found.inline), (1, false));
    assert_eq!(remote.record(&key.0), Some(&outcome));
    assert!(!second.has_blob(&layer.blob.digest));
    assert!(remote.can_fetch(&layer.blob.digest));
    // Asked for, the blob comes from the directory, verified, into the second store.
    remote.ensure(&second, &layer.blob).unwrap();
    assert!(second.has_blob(&layer.blob.digest));
    assert_eq!(remote.stats().blobs, 1);

    // Another tag of the same directory is not this cache.
    let mut other = Remote::new(
        Arc::new(images::LazyClient::new(registry::ClientOptions::default())),
        rt.handle().clone(),
    );
    assert!(other
        .import(
            &CacheFrom::Local {
                src: dest,
                tag: "nope".into()
            },
            &second,
            &oci::Platform::host()
        )
        .is_err());
}
