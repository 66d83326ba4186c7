//! Pull and push against a real, anonymous CNCF distribution registry.

mod common;

use std::time::{Duration, Instant};

use common::{anonymous_client, blob_file, push_image, random_bytes, TestRegistry};
use oci::{media_type, Descriptor, Digest, Index, Platform};
use registry::{Error, PushOutcome};

#[tokio::test]
async fn push_blob_heads_uploads_then_reports_exists() {
    let reg = TestRegistry::start();
    let client = anonymous_client();
    let r = reg.reference("blobs/one:latest");
    let dir = tempfile::tempdir().unwrap();
    let (path, desc) = blob_file(
        dir.path(),
        media_type::OCI_LAYER_GZIP,
        &random_bytes(10_000),
    );

    assert!(!client.has_blob(&r, &desc.digest).await.unwrap());
    assert_eq!(
        client.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );
    assert!(client.has_blob(&r, &desc.digest).await.unwrap());
    assert_eq!(
        client.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Exists
    );

    let mut back = Vec::new();
    client.fetch_blob(&r, &desc, &mut back).await.unwrap();
    assert_eq!(back, fs_err::read(&path).unwrap());
}

#[tokio::test]
async fn pushed_image_pulls_back_with_its_digest() {
    let reg = TestRegistry::start();
    let client = anonymous_client();
    let r = reg.reference("app/web:1.0");
    let img = push_image(&client, &r, &Platform::host(), 4096).await;
    assert_eq!(img.manifest_digest, Digest::sha256_of(&img.manifest_bytes));

    let pulled = client.get_manifest(&r, &Platform::host()).await.unwrap();
    assert_eq!(pulled.digest, img.manifest_digest);
    assert_eq!(pulled.bytes, img.manifest_bytes);
    assert_eq!(pulled.media_type, media_type::OCI_MANIFEST);
    assert_eq!(pulled.manifest.config, img.config_desc);
    assert_eq!(pulled.manifest.layers, vec![img.layer_desc.clone()]);

    // By digest too: the digest is verified against the bytes.
    let by_digest = reg.reference(&format!("app/web@{}", img.manifest_digest));
    assert_eq!(
        client
            .get_manifest(&by_digest, &Platform::host())
            .await
            .unwrap()
            .bytes,
        img.manifest_bytes
    );

    assert_eq!(
        client
            .fetch_blob_bytes(&r, &pulled.manifest.config)
            .await
            .unwrap(),
        img.config
    );
    let mut layer = Vec::new();
    client
        .fetch_blob(&r, &pulled.manifest.layers[0], &mut layer)
        .await
        .unwrap();
    assert_eq!(layer, img.layer);
}

#[tokio::test]
async fn fetch_blob_checks_the_descriptor_size() {
    let reg = TestRegistry::start();
    let client = anonymous_client();
    let r = reg.reference("sizes:1");
    let img = push_image(&client, &r, &Platform::host(), 1000).await;

    let shorter = Descriptor {
        size: 999,
        ..img.layer_desc.clone()
    };
    let err = client
        .fetch_blob(&r, &shorter, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::SizeMismatch { expected: 999, .. }),
        "{err:?}"
    );
    let longer = Descriptor {
        size: 1001,
        ..img.layer_desc.clone()
    };
    let err = client
        .fetch_blob(&r, &longer, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeMismatch {
                expected: 1001,
                actual: 1000,
                ..
            }
        ),
        "{err:?}"
    );

    let missing = Descriptor::new(
        media_type::OCI_LAYER_GZIP,
        Digest::sha256_of(b"never pushed"),
        12,
    );
    let err = client
        .fetch_blob(&r, &missing, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BlobNotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.digest.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn push_with_wrong_digest_is_refused() {
    let reg = TestRegistry::start();
    let client = anonymous_client();
    let r = reg.reference("wrong:1");
    let dir = tempfile::tempdir().unwrap();
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &random_bytes(2048));
    let lie = Descriptor {
        digest: Digest::sha256_of(b"something else"),
        ..desc
    };

    let err = client.push_blob(&r, &lie, &path).await.unwrap_err();
    match &err {
        Error::Status {
            status: 400, body, ..
        } => assert!(body.contains("DIGEST_INVALID"), "{err}"),
        other => panic!("expected a 400 DIGEST_INVALID, got {other:?}"),
    }
    assert!(!client.has_blob(&r, &lie.digest).await.unwrap());

    // A file that doesn't match the descriptor's size is refused before anything is sent.
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, b"tiny");
    let err = client
        .push_blob(&r, &Descriptor { size: 5, ..desc }, &path)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::SizeMismatch { what: "file", .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn manifest_with_missing_blobs_is_refused() {
    let reg = TestRegistry::start();
    let client = anonymous_client();
    let r = reg.reference("dangling:1");
    let manifest = oci::Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: Descriptor::new(media_type::OCI_CONFIG, Digest::sha256_of(b"{}"), 2),
        layers: vec![],
        annotations: Default::default(),
    };
    let err = client
        .put_manifest(
            &r,
            media_type::OCI_MANIFEST,
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("MANIFEST_BLOB_UNKNOWN"), "{err}");
}

#[tokio::test]
async fn index_resolves_to_the_host_platform() {
    let reg = TestRegistry::start();
    let client = anonymous_client();
    let platform = |arch: &str| Platform {
        architecture: arch.into(),
        os: "linux".into(),
        variant: None,
        os_version: None,
    };
    let amd = push_image(
        &client,
        &reg.reference("multi:amd64"),
        &platform("amd64"),
        100,
    )
    .await;
    let arm = push_image(
        &client,
        &reg.reference("multi:arm64"),
        &platform("arm64"),
        100,
    )
    .await;
    let entry = |img: &common::PushedImage, arch: &str| Descriptor {
        platform: Some(platform(arch)),
        ..Descriptor::new(
            media_type::OCI_MANIFEST,
            img.manifest_digest.clone(),
            img.manifest_bytes.len() as u64,
        )
    };
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        manifests: vec![entry(&arm, "arm64"), entry(&amd, "amd64")],
        annotations: Default::default(),
    };
    let r = reg.reference("multi:latest");
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let index_digest = client
        .put_manifest(&r, media_type::OCI_INDEX, &index_bytes)
        .await
        .unwrap();

    let host = Platform::host();
    assert_eq!(
        host.architecture, "amd64",
        "this test expects an amd64 host"
    );
    let pulled = client.get_manifest(&r, &host).await.unwrap();
    assert_eq!(pulled.digest, amd.manifest_digest);
    assert_eq!(pulled.bytes, amd.manifest_bytes);
    assert_eq!(pulled.manifest.config, amd.config_desc);

    let pulled = client.get_manifest(&r, &platform("arm64")).await.unwrap();
    assert_eq!(pulled.digest, arm.manifest_digest);

    // The index pinned by digest resolves the same way.
    let pinned = reg.reference(&format!("multi@{index_digest}"));
    assert_eq!(
        client.get_manifest(&pinned, &host).await.unwrap().digest,
        amd.manifest_digest
    );

    let err = client
        .get_manifest(&r, &platform("s390x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err:?}");
    assert!(
        err.to_string().contains("linux/arm64, linux/amd64"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_repository_or_tag_is_not_found() {
    let reg = TestRegistry::start();
    let client = anonymous_client();
    let r = reg.reference("nobody/here:v9");
    let err = client
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "manifest unknown: image {}/nobody/here:v9 not found",
            reg.addr
        )
    );

    push_image(&client, &reg.reference("exists:1"), &Platform::host(), 10).await;
    let err = client
        .get_manifest(&reg.reference("exists:2"), &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("exists:2"), "{err}");
}

#[tokio::test]
async fn closed_port_is_unreachable_quickly() {
    let client = anonymous_client();
    let port = common::free_port();
    let r: oci::Reference = format!("127.0.0.1:{port}/app:1").parse().unwrap();
    let started = Instant::now();
    let err = client
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("check the address"),
        "{msg}"
    );
    // Three retries with 200/400/800 ms backoff, and nothing else.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn five_megabyte_blob_round_trips() {
    let reg = TestRegistry::start();
    let client = anonymous_client();
    let r = reg.reference("big:1");
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(5 << 20);
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &bytes);
    assert_eq!(
        client.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );

    let out_path = dir.path().join("fetched");
    let mut out = std::io::BufWriter::new(fs_err::File::create(&out_path).unwrap());
    client.fetch_blob(&r, &desc, &mut out).await.unwrap();
    drop(out);
    assert!(
        fs_err::read(&out_path).unwrap() == bytes,
        "fetched bytes differ"
    );
}

/// OCI distribution spec 1.1, "Listing Referrers": a registry with the API answers
/// `GET /v2/<name>/referrers/<digest>` with an image index; one without it answers 404, which
/// `get_referrers` reports as `None` (the caller falls back to the `sha256-<hex>` tag schema).
/// docker-registry 2.8 has no referrers API; the proxy serves it from the tag schema's index.
#[tokio::test]
async fn referrers_come_from_the_referrers_api_and_a_registry_without_it_gives_none() {
    let reg = TestRegistry::start();
    let proxy = common::proxy::Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let r = proxy.reference("refs:1");
    let img = push_image(&client, &r, &Platform::host(), 100).await;
    let subject = &img.manifest_digest;
    let in_toto = "application/vnd.in-toto+json";
    assert_eq!(
        client
            .get_referrers(&r, subject, Some(in_toto))
            .await
            .unwrap(),
        None,
        "docker-registry 2.8 has no referrers API"
    );

    // The referrers index under the tag schema (listing a manifest the repository has).
    let listed = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": [{
            "mediaType": media_type::OCI_MANIFEST,
            "digest": subject.to_string(),
            "size": img.manifest_bytes.len(),
            "artifactType": in_toto,
        }],
    }))
    .unwrap();
    let tag: oci::Reference = format!("{}:{}", r.name(), subject.to_string().replacen(':', "-", 1))
        .parse()
        .unwrap();
    client
        .put_manifest(&tag, media_type::OCI_INDEX, &listed)
        .await
        .unwrap();
    proxy.serve_referrers_api();
    let got = client
        .get_referrers(&r, subject, Some(in_toto))
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(listed.as_slice()));
    let asked = proxy.seen();
    assert!(
        asked.iter().any(|l| l.starts_with(&format!(
            "GET /v2/refs/referrers/{subject}?artifactType=application%2Fvnd.in-toto%2Bjson"
        ))),
        "{asked:?}"
    );
}
