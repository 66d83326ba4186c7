//! Image assembly without a build: a lowered stage and a layer written into a temp store become a
//! config and a manifest that say what the Dockerfile and the flags asked for.

use std::collections::BTreeMap;

struct NoBases;

impl frontend::BaseImages for NoBases {
    fn config(&mut self, reference: &str) -> Result<oci::ImageConfig, frontend::BoxError> {
        Err(format!("no registry here ({reference})").into())
    }
}

const DOCKERFILE: &str = "FROM scratch\nCOPY app /app\nLABEL stage=yes\nENV A=1\nCMD [\"/app\"]\n";

/// A store with one layer holding `/app`, the lowered stage, and a solve whose head has that layer.
fn fixture(dir: &std::path::Path) -> (cache::Store, frontend::Lowered, solver::Solved) {
    let store = cache::Store::open(&dir.join("store")).unwrap();
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("app"), "#!/bin/sh\necho hi\n").unwrap();
    let opts = oci::LayerOptions::default();
    let layer =
        images::write_layer_blob(&store, |w| Ok(oci::write_layer(&tree, w, &opts)?)).unwrap();
    let df = frontend::parse(DOCKERFILE).unwrap();
    let lowered = frontend::lower(&df, &frontend::LowerOptions::default(), &mut NoBases).unwrap();
    let head = lowered.stages[lowered.target].head;
    let mut solved = solver::Solved::default();
    solved.outcomes.insert(
        head,
        solver::Outcome {
            layers: vec![layer],
            added_layer: true,
        },
    );
    (store, lowered, solved)
}

fn config_of(store: &cache::Store, image: &export::Image) -> serde_json::Value {
    serde_json::from_slice(&store.read_blob(&image.config_digest).unwrap()).unwrap()
}

#[test]
fn the_config_and_manifest_say_what_the_dockerfile_and_flags_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lowered, solved) = fixture(dir.path());
    let stage = &lowered.stages[lowered.target];
    let opts = export::ExportOptions {
        labels: BTreeMap::from([("team".to_owned(), "web".to_owned())]),
        annotations: BTreeMap::from([("org.example.k".to_owned(), "v".to_owned())]),
        source_date_epoch: Some(0),
        ..export::ExportOptions::default()
    };
    let image = export::assemble(&store, stage, &solved, &opts, None, &|_| Ok(())).unwrap();
    let config = config_of(&store, &image);
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/app"]));
    assert_eq!(config["config"]["Labels"]["stage"], "yes");
    assert_eq!(
        config["config"]["Labels"]["team"], "web",
        "--label joins the Dockerfile's labels"
    );
    assert_eq!(
        config["created"], "1970-01-01T00:00:00Z",
        "SOURCE_DATE_EPOCH clamps the time"
    );
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(image.manifest.layers.len(), 1);
    assert!(store.has_blob(&image.manifest.layers[0].digest));
    assert!(store.has_blob(&image.manifest_desc.digest));
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&image.manifest_desc.digest).unwrap()).unwrap();
    assert_eq!(manifest["annotations"]["org.example.k"], "v");
    // The same inputs give the same image (reproducible), and the previous image is kept when only
    // the build time would differ.
    let again = export::assemble(&store, stage, &solved, &opts, None, &|_| Ok(())).unwrap();
    assert_eq!(again.manifest_desc.digest, image.manifest_desc.digest);
    let later = export::ExportOptions {
        source_date_epoch: None,
        ..opts.clone()
    };
    let first = export::assemble(&store, stage, &solved, &later, None, &|_| Ok(())).unwrap();
    let kept = export::assemble(&store, stage, &solved, &later, Some(first.clone()), &|_| {
        Ok(())
    })
    .unwrap();
    assert_eq!(kept.manifest_desc.digest, first.manifest_desc.digest);
}

#[test]
fn docker_media_types_and_zstd_recompression_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (store, lowered, solved) = fixture(dir.path());
    let stage = &lowered.stages[lowered.target];
    let docker = export::ExportOptions {
        oci_mediatypes: false,
        ..export::ExportOptions::default()
    };
    let image = export::assemble(&store, stage, &solved, &docker, None, &|_| Ok(())).unwrap();
    assert_eq!(
        image.manifest_desc.media_type,
        oci::media_type::DOCKER_MANIFEST
    );
    assert_eq!(
        image.manifest.layers[0].media_type,
        oci::media_type::DOCKER_LAYER_GZIP
    );
    let zstd = export::ExportOptions {
        compression: oci::Compression::Zstd,
        ..export::ExportOptions::default()
    };
    let image = export::assemble(&store, stage, &solved, &zstd, None, &|_| Ok(())).unwrap();
    assert_eq!(
        oci::Compression::of_media_type(&image.manifest.layers[0].media_type),
        Some(oci::Compression::Zstd),
        "a layer of this build in another compression is recompressed"
    );
    // The diff_id (uncompressed content) is the same whatever the compression.
    assert_eq!(
        config_of(&store, &image)["rootfs"]["diff_ids"][0],
        solved.outcomes.values().next().unwrap().layers[0]
            .diff_id
            .to_string()
    );
}
