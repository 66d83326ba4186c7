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

/// A client that gives up on a request after `stall` without progress, retrying for at most `budget`.
fn impatient_client(stall: std::time::Duration, budget: std::time::Duration) -> registry::Client {
    registry::Client::new(registry::ClientOptions {
        docker_config: Some("/nonexistent/rbuild-test/config.json".into()),
        containers_auth: Some("/nonexistent/rbuild-test/auth.json".into()),
        stall_timeout: Some(stall),
        retry_budget: Some(budget),
        ..Default::default()
    })
    .unwrap()
}

// See: #19. A registry frozen (SIGSTOP) before answering, or in the middle of a blob, made a pull wait
// 120 s per read times the retries; a trickle of bytes was waited on without end. Now each request fails
// after the stall timeout without progress, retries stop at the retry budget, and the error names the
// request. (Timings are scaled down: 1 s stall, 2 s budget; the defaults are 30 s and 60 s.)
#[tokio::test]
async fn r19_stalled_registry_fails_after_the_stall_timeout_naming_the_request() {
    use common::proxy::{Freeze, Trickle};
    use std::time::{Duration, Instant};
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let r = proxy.reference("frozen:1");
    let img = push_image(&anonymous_client(), &r, &Platform::host(), 64 << 10).await;
    let client = impatient_client(Duration::from_secs(1), Duration::from_secs(2));

    // Frozen before the answer: every attempt stalls, and the budget ends the retries.
    proxy.freeze(Freeze {
        method: "GET",
        path_contains: "/manifests/",
        after: 0,
        times: 100,
    });
    let started = Instant::now();
    let err = client
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    let took = started.elapsed();
    match &err {
        Error::Stalled {
            request, attempts, ..
        } => {
            assert!(request.starts_with("GET http://"), "{err}");
            assert!(request.contains("/v2/frozen/manifests/1"), "{err}");
            assert!(
                *attempts >= 2,
                "a stall is retried within the budget: {err}"
            );
        }
        other => panic!("expected a stall, got {other:?}"),
    }
    assert!(
        err.to_string().contains("stalled: no progress for 1s"),
        "{err}"
    );
    // 1 s per attempt until the 2 s budget is spent: never the 120 s read timeout of before.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let tries = proxy.count("GET", "/v2/frozen/manifests/1");
    assert!((2..=4).contains(&tries), "{tries} attempts");

    // Frozen in the middle of a blob: the download resumes (a Range request) until the budget is spent.
    let proxy2 = Proxy::start(&reg.addr, None).await;
    let r2 = proxy2.reference("frozen:1");
    proxy2.freeze(Freeze {
        method: "GET",
        path_contains: "/blobs/",
        after: 20 << 10,
        times: 100,
    });
    let started = Instant::now();
    let mut sink = Vec::new();
    let err = client
        .fetch_blob(&r2, &img.layer_desc, &mut sink)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Stalled { request, .. } if request.contains(&img.layer_desc.digest.to_string())),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");

    // A trickle (a byte every 20 ms, 50 bytes/s) is no progress either.
    let proxy3 = Proxy::start(&reg.addr, None).await;
    let r3 = proxy3.reference("frozen:1");
    proxy3.trickle(Trickle {
        method: "GET",
        path_contains: "/blobs/",
        interval_ms: 20,
    });
    let started = Instant::now();
    let mut sink = Vec::new();
    let err = client
        .fetch_blob(&r3, &img.layer_desc, &mut sink)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stalled { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");

    // A push to a registry frozen at the upload's start fails the same way.
    let proxy4 = Proxy::start(&reg.addr, None).await;
    proxy4.freeze(Freeze {
        method: "POST",
        path_contains: "/blobs/uploads/",
        after: 0,
        times: 100,
    });
    let dir = tempfile::tempdir().unwrap();
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &random_bytes(1000));
    let err = client
        .push_blob(&proxy4.reference("frozen:2"), &desc, &path)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Stalled { request, .. } if request.starts_with("POST ") && request.contains("/blobs/uploads/")),
        "{err:?}"
    );
}

// See: #19. A slow link is not a stall: 1 KiB every 300 ms with a 1 s stall timeout takes longer than
// the stall timeout in all and still succeeds.
#[tokio::test]
async fn r19_slow_but_steady_download_is_not_a_stall() {
    use std::time::Duration;
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let r = proxy.reference("slow:1");
    let img = push_image(&anonymous_client(), &r, &Platform::host(), 8 << 10).await;
    proxy.slow_blob_bodies(300);
    let client = impatient_client(Duration::from_secs(1), Duration::from_secs(2));
    let started = std::time::Instant::now();
    let mut sink = Vec::new();
    client
        .fetch_blob(&r, &img.layer_desc, &mut sink)
        .await
        .unwrap();
    assert_eq!(sink, img.layer);
    assert!(started.elapsed() > Duration::from_secs(1));
}

// See: #19. A `Docker-Content-Digest` that differs from the manifest body pulled by tag is refused, as
// docker's pull does (distribution/registry/client: the header is checked against the body).
#[tokio::test]
async fn r19_manifest_not_matching_its_docker_content_digest_is_refused() {
    use common::proxy::Rewrite;
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let r = proxy.reference("lying:1");
    let img = push_image(&client, &r, &Platform::host(), 100).await;
    // The registry's own header matches: accepted.
    let pulled = client.get_manifest(&r, &Platform::host()).await.unwrap();
    assert_eq!(pulled.digest, img.manifest_digest);

    let other = oci::Digest::sha256_of(b"another manifest");
    proxy.rewrite(Rewrite {
        method: "GET",
        path_contains: "/manifests/",
        name: "Docker-Content-Digest",
        value: other.to_string(),
    });
    let err = client
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    match &err {
        Error::ContentDigestMismatch { header, actual, .. } => {
            assert_eq!(header, &other.to_string());
            assert_eq!(actual, &img.manifest_digest);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("lying:1") && text.contains("Docker-Content-Digest"),
        "{text}"
    );
}
