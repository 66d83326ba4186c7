//! Retries and failure handling, with faults injected by a proxy in front of a real registry.

mod common;

use common::proxy::{Fault, Proxy, Truncate};
use common::{anonymous_client, blob_file, push_image, random_bytes, TestRegistry};
use oci::{media_type, Platform};
use registry::{Error, PushOutcome};

#[tokio::test]
async fn transient_server_errors_are_retried() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let r = proxy.reference("flaky:1");
    let img = push_image(&client, &r, &Platform::host(), 100).await;

    proxy.inject(Fault {
        method: "GET",
        path_contains: "/manifests/",
        status: 503,
        times: 2,
    });
    proxy.inject(Fault {
        method: "GET",
        path_contains: "/blobs/",
        status: 429,
        times: 1,
    });
    let pulled = client.get_manifest(&r, &Platform::host()).await.unwrap();
    assert_eq!(pulled.digest, img.manifest_digest);
    assert_eq!(proxy.count("GET", "/v2/flaky/manifests/"), 3);
    assert_eq!(
        client.fetch_blob_bytes(&r, &img.config_desc).await.unwrap(),
        img.config
    );
}

#[tokio::test]
async fn persistent_server_errors_give_up_after_three_retries() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let r = proxy.reference("down:1");
    proxy.inject(Fault {
        method: "GET",
        path_contains: "/manifests/",
        status: 502,
        times: 100,
    });
    let err = client
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    match &err {
        Error::Status {
            status: 502, body, ..
        } => assert!(body.contains("INJECTED"), "{err}"),
        other => panic!("expected a 502, got {other:?}"),
    }
    assert_eq!(
        proxy.count("GET", "/manifests/"),
        4,
        "one attempt and three retries"
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let r = proxy.reference("bad:1");
    proxy.inject(Fault {
        method: "GET",
        path_contains: "/manifests/",
        status: 400,
        times: 100,
    });
    let err = client
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 400, .. }), "{err:?}");
    assert_eq!(proxy.count("GET", "/manifests/"), 1);
}

#[tokio::test]
async fn failed_blob_upload_restarts_from_a_new_session() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let r = proxy.reference("restart:1");
    let dir = tempfile::tempdir().unwrap();
    let (path, desc) = blob_file(
        dir.path(),
        media_type::OCI_LAYER_GZIP,
        &random_bytes(300_000),
    );
    proxy.inject(Fault {
        method: "PUT",
        path_contains: "/blobs/uploads/",
        status: 500,
        times: 1,
    });
    assert_eq!(
        client.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );
    assert_eq!(
        proxy.count("POST", "/blobs/uploads/"),
        2,
        "{:#?}",
        proxy.seen()
    );
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 2);
    assert!(client.has_blob(&r, &desc.digest).await.unwrap());
}

#[tokio::test]
async fn payload_too_large_fails_at_once() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let r = proxy.reference("huge:1");
    let dir = tempfile::tempdir().unwrap();
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &random_bytes(1000));
    proxy.inject(Fault {
        method: "PUT",
        path_contains: "/blobs/uploads/",
        status: 413,
        times: 100,
    });
    let err = client.push_blob(&r, &desc, &path).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("too large") && msg.contains(&desc.digest.to_string()),
        "{msg}"
    );
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 1);
}

#[tokio::test]
async fn broken_blob_download_resumes_with_a_range_request() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let r = proxy.reference("resume:1");
    let img = push_image(&client, &r, &Platform::host(), 200_000).await;

    proxy.truncate(Truncate {
        method: "GET",
        path_contains: "/blobs/",
        bytes: 50_000,
        times: 2,
    });
    let mut out = Vec::new();
    client
        .fetch_blob(&r, &img.layer_desc, &mut out)
        .await
        .unwrap();
    assert!(out == img.layer, "resumed download differs");
    assert_eq!(proxy.count("GET", "/blobs/"), 3, "{:#?}", proxy.seen());
}

#[tokio::test]
async fn blob_upload_sends_a_content_length() {
    // Monolithic uploads must be sized: some registries and proxies refuse chunked blob PUTs.
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let r = proxy.reference("sized:1");
    let dir = tempfile::tempdir().unwrap();
    let (path, desc) = blob_file(
        dir.path(),
        media_type::OCI_LAYER_GZIP,
        &random_bytes(1 << 20),
    );
    assert_eq!(
        client.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );
    let puts: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|l| l.starts_with("PUT "))
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert!(puts[0].ends_with(" content-length=1048576"), "{puts:?}");
}
