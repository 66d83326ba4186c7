//! Authentication: Basic (a real registry with htpasswd) and Bearer tokens (a token-issuing proxy in
//! front of a real registry).

mod common;

use common::proxy::{Proxy, TokenAuth};
use common::{
    anonymous_client, blob_file, client_with_credentials, push_image, random_bytes, TestRegistry,
};
use oci::{media_type, Platform};
use registry::{Error, PushOutcome};

#[tokio::test]
async fn htpasswd_registry_without_credentials_is_unauthorized() {
    let reg = TestRegistry::start_with_htpasswd("alice", "s3cret");
    let client = anonymous_client();
    let err = client
        .get_manifest(&reg.reference("app:1"), &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&reg.addr) && msg.contains("no credentials"),
        "{msg}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &random_bytes(100));
    let err = client
        .push_blob(&reg.reference("app:1"), &desc, &path)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
}

#[tokio::test]
async fn htpasswd_registry_rejects_wrong_password() {
    let reg = TestRegistry::start_with_htpasswd("alice", "s3cret");
    let (client, _dir) = client_with_credentials(&reg.addr, "alice", "wrong");
    let err = client
        .has_blob(&reg.reference("app:1"), &oci::Digest::sha256_of(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("rejected"), "{err}");
}

#[tokio::test]
async fn htpasswd_registry_with_credentials_pushes_and_pulls() {
    let reg = TestRegistry::start_with_htpasswd("alice", "s3cret");
    let (client, _dir) = client_with_credentials(&reg.addr, "alice", "s3cret");
    let r = reg.reference("team/app:2");
    let img = push_image(&client, &r, &Platform::host(), 3000).await;
    let pulled = client.get_manifest(&r, &Platform::host()).await.unwrap();
    assert_eq!(pulled.digest, img.manifest_digest);
    assert_eq!(
        client.fetch_blob_bytes(&r, &img.layer_desc).await.unwrap(),
        img.layer
    );

    // A clone shares the cached Basic header; a second push finds the blobs.
    let dir = tempfile::tempdir().unwrap();
    let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &img.layer);
    assert_eq!(
        client.clone().push_blob(&r, &desc, &path).await.unwrap(),
        PushOutcome::Exists
    );
}

#[tokio::test]
async fn anonymous_bearer_token_is_fetched_once_per_scope() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(&reg.addr, Some(TokenAuth::Anonymous)).await;
    let client = anonymous_client();
    let r = proxy.reference("lib/tool:3");
    let img = push_image(&client, &r, &Platform::host(), 500).await;
    let pulled = client.get_manifest(&r, &Platform::host()).await.unwrap();
    assert_eq!(pulled.digest, img.manifest_digest);
    client.fetch_blob_bytes(&r, &img.layer_desc).await.unwrap();
    assert!(client.has_blob(&r, &img.config_desc.digest).await.unwrap());

    // One token for pull,push (the push) and one for pull (the pull), however many requests were made.
    let tokens: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|l| l.starts_with("GET /token"))
        .collect();
    assert_eq!(tokens.len(), 2, "{tokens:#?}");
    assert!(
        tokens[0].contains("scope=repository%3Alib%2Ftool%3Apull%2Cpush"),
        "{tokens:?}"
    );
    assert!(
        tokens[1].contains("scope=repository%3Alib%2Ftool%3Apull") && !tokens[1].contains("push"),
        "{tokens:?}"
    );
}

#[tokio::test]
async fn bearer_token_service_uses_docker_config_credentials() {
    let reg = TestRegistry::start();
    let token_auth = TokenAuth::Basic {
        user: "bob".into(),
        password: "hunter2".into(),
    };
    let proxy = Proxy::start(&reg.addr, Some(token_auth)).await;
    let r = proxy.reference("private/app:1");

    let err = anonymous_client()
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(
        err.to_string().contains("refused anonymous access"),
        "{err}"
    );

    let (bad, _d1) = client_with_credentials(&proxy.addr, "bob", "nope");
    let err = bad.get_manifest(&r, &Platform::host()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("rejected the credentials of user \"bob\""),
        "{err}"
    );

    let (client, _d2) = client_with_credentials(&proxy.addr, "bob", "hunter2");
    let img = push_image(&client, &r, &Platform::host(), 100).await;
    assert_eq!(
        client
            .get_manifest(&r, &Platform::host())
            .await
            .unwrap()
            .digest,
        img.manifest_digest
    );
}

#[tokio::test]
async fn check_login_accepts_right_and_refuses_wrong_credentials() {
    // Basic auth at the registry itself.
    let reg = TestRegistry::start_with_htpasswd("alice", "s3cret");
    let client = anonymous_client();
    client
        .check_login(&reg.addr, "alice", "s3cret")
        .await
        .unwrap();
    let err = client
        .check_login(&reg.addr, "alice", "wrong")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("wrong username or password for user \"alice\""),
        "{err}"
    );

    // Bearer tokens from a token service that wants Basic credentials.
    let plain = TestRegistry::start();
    let proxy = Proxy::start(
        &plain.addr,
        Some(TokenAuth::Basic {
            user: "bob".into(),
            password: "hunter2".into(),
        }),
    )
    .await;
    client
        .check_login(&proxy.addr, "bob", "hunter2")
        .await
        .unwrap();
    let err = client
        .check_login(&proxy.addr, "bob", "nope")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("wrong username or password"),
        "{err}"
    );
}
