//! Push paths beyond the plain monolithic upload: cross-repository mounts, chunked uploads (chosen, or
//! as a fallback when a registry refuses a monolithic PUT, and resumed from the registry's Range), and
//! waiting as long as `Retry-After` says.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Proxy, TokenAuth, Truncate};
use common::{anonymous_client, blob_file, random_bytes, TestRegistry};
use oci::media_type;
use registry::{Client, ClientOptions, PushOutcome, UploadMethod};

fn chunked_client(chunk_size: u64) -> Client {
    Client::new(ClientOptions {
        docker_config: Some("/nonexistent/rbuild-test/config.json".into()),
        containers_auth: Some("/nonexistent/rbuild-test/auth.json".into()),
        upload: UploadMethod::Chunked,
        chunk_size: Some(chunk_size),
        ..Default::default()
    })
    .unwrap()
}

/// Upload requests that carried bytes (PUT or PATCH with a non-zero Content-Length).
fn upload_bodies(proxy: &Proxy) -> Vec<String> {
    proxy
        .seen()
        .into_iter()
        .filter(|l| {
            (l.starts_with("PUT ") || l.starts_with("PATCH "))
                && l.contains("/blobs/uploads/")
                && !l.contains("content-length=0")
        })
        .collect()
}

#[tokio::test]
async fn blob_is_mounted_from_another_repository_without_sending_it() {
    let reg = TestRegistry::start();
    // Through a token proxy, so the mount's two scopes go through the token service.
    let proxy = Proxy::start(&reg.addr, Some(TokenAuth::Anonymous)).await;
    let client = anonymous_client();
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(40_000);
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &bytes);
    let a = proxy.reference("team/base:1");
    let b = proxy.reference("team/app:1");

    assert_eq!(
        client.push_blob(&a, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );
    assert_eq!(upload_bodies(&proxy).len(), 1);
    assert_eq!(
        client
            .push_blob_from(&b, &desc, &path, Some("team/base"))
            .await
            .unwrap(),
        PushOutcome::Mounted
    );
    assert_eq!(upload_bodies(&proxy).len(), 1, "{:#?}", proxy.seen());
    // Two POSTs: the first is answered 401 (the mount needs a token for both repositories).
    assert_eq!(
        proxy.count("POST", "/v2/team/app/blobs/uploads/?mount=sha256%3A"),
        2,
        "{:#?}",
        proxy.seen()
    );
    // The mount's token asks for push on the target and pull on the source, as two scope parameters.
    let want = "GET /token?service=proxy-test&scope=repository%3Ateam%2Fapp%3Apull%2Cpush\
                &scope=repository%3Ateam%2Fbase%3Apull";
    assert!(
        proxy.seen().iter().any(|l| l == want),
        "{:#?}",
        proxy.seen()
    );

    // The registry really has it in b, straight from the registry without the proxy.
    let direct = reg.reference("team/app:1");
    assert_eq!(
        client.fetch_blob_bytes(&direct, &desc).await.unwrap(),
        bytes
    );
    // Pushing again finds it.
    assert_eq!(
        client
            .push_blob_from(&b, &desc, &path, Some("team/base"))
            .await
            .unwrap(),
        PushOutcome::Exists
    );
}

#[tokio::test]
async fn mount_that_the_registry_declines_falls_back_to_uploading() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = anonymous_client();
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(5000);
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &bytes);

    // The source repository doesn't have the blob: the real registry answers 202 with a session.
    let r = proxy.reference("x/app:1");
    assert_eq!(
        client
            .push_blob_from(&r, &desc, &path, Some("x/nothing-here"))
            .await
            .unwrap(),
        PushOutcome::Uploaded
    );
    assert_eq!(proxy.count("POST", "mount="), 1);
    assert_eq!(
        proxy.count("POST", "/blobs/uploads/"),
        1,
        "one session only"
    );
    assert_eq!(upload_bodies(&proxy).len(), 1);

    // A registry that ignores mount requests (202 for a blob the source has) gets an upload too.
    proxy.ignore_mounts();
    let r2 = proxy.reference("x/other:1");
    assert_eq!(
        client
            .push_blob_from(&r2, &desc, &path, Some("x/app"))
            .await
            .unwrap(),
        PushOutcome::Uploaded
    );
    assert_eq!(upload_bodies(&proxy).len(), 2);
    assert_eq!(
        client
            .fetch_blob_bytes(&reg.reference("x/other:1"), &desc)
            .await
            .unwrap(),
        bytes
    );
}

#[tokio::test]
async fn chunked_upload_round_trips() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    let client = chunked_client(1000);
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(4500);
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &bytes);
    let r = proxy.reference("chunks/app:1");
    assert_eq!(
        client.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );
    let patches: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|l| l.starts_with("PATCH "))
        .collect();
    assert_eq!(patches.len(), 5, "{patches:#?}");
    assert!(patches[4].contains("content-length=500"), "{patches:#?}");
    assert_eq!(
        upload_bodies(&proxy).len(),
        5,
        "the final PUT carries no bytes"
    );
    assert_eq!(client.fetch_blob_bytes(&r, &desc).await.unwrap(), bytes);

    // Straight to the registry, with one chunk bigger than the blob.
    let big = chunked_client(1 << 20);
    let r = reg.reference("chunks/direct:1");
    assert_eq!(
        big.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );
    assert_eq!(big.fetch_blob_bytes(&r, &desc).await.unwrap(), bytes);
}

#[tokio::test]
async fn refused_monolithic_upload_falls_back_to_chunks() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    proxy.reject_monolithic_uploads();
    let client = Client::new(ClientOptions {
        docker_config: Some("/nonexistent/rbuild-test/config.json".into()),
        containers_auth: Some("/nonexistent/rbuild-test/auth.json".into()),
        chunk_size: Some(3000),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(7000);
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &bytes);
    let r = proxy.reference("nomono/app:1");
    assert_eq!(
        client.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );
    let bodies = upload_bodies(&proxy);
    assert_eq!(bodies.len(), 4, "{bodies:#?}");
    assert!(bodies[0].starts_with("PUT ") && bodies[0].contains("content-length=7000"));
    assert!(
        bodies[1..].iter().all(|l| l.starts_with("PATCH ")),
        "{bodies:#?}"
    );
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 2);
    assert_eq!(client.fetch_blob_bytes(&r, &desc).await.unwrap(), bytes);
}

#[tokio::test]
async fn failed_chunk_resumes_from_the_registry_range() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    // The second chunk fails before reaching the registry.
    proxy.fail_after("PATCH", "/blobs/uploads/", 1, 503);
    let client = chunked_client(2000);
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(5000);
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &bytes);
    let r = proxy.reference("resume/app:1");
    assert_eq!(
        client.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );
    // The status GET said 2000 bytes arrived, so the upload went on at 2000 in the same session (the
    // registry answers 416 to a PATCH at any other offset).
    assert_eq!(
        proxy.count("GET", "/blobs/uploads/"),
        1,
        "{:#?}",
        proxy.seen()
    );
    assert_eq!(
        proxy.count("PATCH", "/blobs/uploads/"),
        4,
        "{:#?}",
        proxy.seen()
    );
    assert_eq!(proxy.count("POST", "/blobs/uploads/"), 1);
    assert_eq!(client.fetch_blob_bytes(&r, &desc).await.unwrap(), bytes);
}

#[tokio::test]
async fn lost_chunk_answer_restarts_the_upload_in_a_new_session() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    // The registry stores the first chunk, but the answer never reaches the client; distribution then
    // refuses the status query (its `_state` is stale), so only a new session can go on.
    proxy.truncate(Truncate {
        method: "PATCH",
        path_contains: "/blobs/uploads/",
        bytes: 0,
        times: 1,
    });
    let client = chunked_client(2000);
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(5000);
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &bytes);
    let r = proxy.reference("restart/app:1");
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
    assert_eq!(
        proxy.count("PATCH", "/blobs/uploads/"),
        4,
        "{:#?}",
        proxy.seen()
    );
    assert_eq!(client.fetch_blob_bytes(&r, &desc).await.unwrap(), bytes);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, None).await;
    proxy.fault_header("Retry-After", "1");
    proxy.inject(common::proxy::Fault {
        method: "HEAD",
        path_contains: "/blobs/",
        status: 429,
        times: 1,
    });
    let client = anonymous_client();
    let dir = tempfile::tempdir().unwrap();
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &random_bytes(100));
    let r = proxy.reference("slow/app:1");
    let start = Instant::now();
    assert_eq!(
        client.push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Uploaded
    );
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "waited only {:?}",
        start.elapsed()
    );
    assert_eq!(proxy.count("HEAD", "/blobs/"), 2);
}

#[tokio::test]
async fn token_fetch_is_retried_on_server_errors() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, Some(TokenAuth::Anonymous)).await;
    proxy.inject(common::proxy::Fault {
        method: "GET",
        path_contains: "/token",
        status: 503,
        times: 2,
    });
    let client = anonymous_client();
    let r = proxy.reference("tok/app:1");
    assert!(!client
        .has_blob(&r, &oci::Digest::sha256_of(b"none"))
        .await
        .unwrap());
    assert_eq!(proxy.count("GET", "/token"), 3, "{:#?}", proxy.seen());
}
