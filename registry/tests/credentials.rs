//! Credential sources against real registries: Docker credential helpers (`credHelpers`, `credsStore`),
//! identity tokens exchanged at a token service, podman's auth.json, and `login`/`logout`.

mod common;

use std::path::{Path, PathBuf};

use common::proxy::{Proxy, TokenAuth};
use common::{push_image, TestRegistry};
use oci::Platform;
use registry::{Client, ClientOptions, Error};

const NO_FILE: &str = "/nonexistent/rbuild-test/auth.json";

/// Writes `docker-credential-<name>` into `dir`: it logs each registry asked about to `dir/asked`, answers
/// `answers` (a `case` body over `$host`), and says "credentials not found" for anything else.
fn write_helper(dir: &Path, name: &str, answers: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("docker-credential-{name}"));
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r host\necho \"$host\" >> \"{}/asked\"\ncase \"$host\" in\n{answers}\n*) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        dir.display()
    );
    fs_err::write(&path, script).unwrap();
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn asked(dir: &Path) -> Vec<String> {
    fs_err::read_to_string(dir.join("asked"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A client reading `config` (JSON text) as its Docker config, with helpers from `dir`.
fn client_with_config(dir: &Path, config: serde_json::Value) -> Client {
    let path = dir.join("config.json");
    fs_err::write(&path, config.to_string()).unwrap();
    Client::new(ClientOptions {
        docker_config: Some(path),
        containers_auth: Some(PathBuf::from(NO_FILE)),
        credential_helper_dir: Some(dir.to_owned()),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn cred_helper_supplies_basic_credentials_and_is_asked_once() {
    let reg = TestRegistry::start_with_htpasswd("alice", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    write_helper(
        dir.path(),
        "rbtest",
        &format!(
            "{}) printf '{{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}}' \"$host\";;",
            reg.addr
        ),
    );
    let client = client_with_config(
        dir.path(),
        serde_json::json!({"credHelpers": {reg.addr.clone(): "rbtest"}, "auths": {}}),
    );
    let r = reg.reference("helped/app:1");
    let img = push_image(&client, &r, &Platform::host(), 700).await;
    let pulled = client.get_manifest(&r, &Platform::host()).await.unwrap();
    assert_eq!(pulled.digest, img.manifest_digest);
    assert_eq!(asked(dir.path()), vec![reg.addr.clone()]);
}

#[tokio::test]
async fn creds_store_without_an_answer_falls_back_to_auths_and_failures_are_errors() {
    let reg = TestRegistry::start_with_htpasswd("carol", "pw");
    let dir = tempfile::tempdir().unwrap();
    // The store knows nothing of this registry: the auths entry is used.
    write_helper(dir.path(), "emptystore", "");
    let auth = common::proxy::base64(b"carol:pw");
    let client = client_with_config(
        dir.path(),
        serde_json::json!({"credsStore": "emptystore", "auths": {reg.addr.clone(): {"auth": auth}}}),
    );
    let r = reg.reference("stored/app:1");
    push_image(&client, &r, &Platform::host(), 100).await;
    assert_eq!(asked(dir.path()), vec![reg.addr.clone()]);

    // A helper that breaks is reported, not silently skipped.
    let broken = tempfile::tempdir().unwrap();
    write_helper(
        broken.path(),
        "broken",
        "*) echo 'keychain locked' >&2; exit 2;;",
    );
    let client = client_with_config(broken.path(), serde_json::json!({"credsStore": "broken"}));
    let err = client
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CredentialHelper { .. }), "{err:?}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains("docker-credential-broken") && chain.contains("keychain locked"),
        "{chain}"
    );

    // A helper that is not installed is reported too.
    let client = client_with_config(
        broken.path(),
        serde_json::json!({"credHelpers": {reg.addr.clone(): "missing-xyz"}}),
    );
    let err = client
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("docker-credential-missing-xyz"),
        "{err}"
    );
}

#[tokio::test]
async fn identity_token_is_exchanged_with_a_refresh_token_post() {
    let reg = TestRegistry::start();
    let proxy = Proxy::start(
        &reg.addr,
        Some(TokenAuth::Refresh {
            refresh_token: "rt-123".into(),
        }),
    )
    .await;
    let r = proxy.reference("oauth/app:1");
    let dir = tempfile::tempdir().unwrap();

    let client = client_with_config(
        dir.path(),
        serde_json::json!({"auths": {proxy.addr.clone(): {"auth": "", "identitytoken": "rt-123"}}}),
    );
    let img = push_image(&client, &r, &Platform::host(), 300).await;
    assert_eq!(
        client
            .get_manifest(&r, &Platform::host())
            .await
            .unwrap()
            .digest,
        img.manifest_digest
    );
    assert_eq!(proxy.count("POST", "/token"), 2, "{:#?}", proxy.seen());
    assert_eq!(proxy.count("GET", "/token"), 0);

    // A helper answering with the `<token>` user hands out an identity token too.
    write_helper(
        dir.path(),
        "oauth",
        &format!(
            "{}) echo '{{\"Username\":\"<token>\",\"Secret\":\"rt-123\"}}';;",
            proxy.addr
        ),
    );
    let client = client_with_config(
        dir.path(),
        serde_json::json!({"credHelpers": {proxy.addr.clone(): "oauth"}}),
    );
    let pulled = client.get_manifest(&r, &Platform::host()).await.unwrap();
    assert_eq!(pulled.digest, img.manifest_digest);

    // A stale refresh token is an authentication error that says so.
    let client = client_with_config(
        dir.path(),
        serde_json::json!({"auths": {proxy.addr.clone(): {"identitytoken": "expired"}}}),
    );
    let err = client
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("identity token"), "{err}");
}

#[tokio::test]
async fn containers_auth_json_is_used_when_docker_config_has_nothing() {
    let reg = TestRegistry::start_with_htpasswd("dave", "podpw");
    let dir = tempfile::tempdir().unwrap();
    let auth_json = dir.path().join("auth.json");
    fs_err::write(
        &auth_json,
        serde_json::json!({"auths": {reg.addr.clone(): {"auth": common::proxy::base64(b"dave:podpw")}}})
            .to_string(),
    )
    .unwrap();
    let client = Client::new(ClientOptions {
        docker_config: Some(dir.path().join("missing-config.json")),
        containers_auth: Some(auth_json),
        ..Default::default()
    })
    .unwrap();
    let r = reg.reference("pod/app:1");
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
async fn login_writes_credentials_a_new_client_uses_and_logout_removes_them() {
    let reg = TestRegistry::start_with_htpasswd("erin", "pa:ss");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("docker/config.json");
    let client = || {
        Client::new(ClientOptions {
            docker_config: Some(config.clone()),
            containers_auth: Some(PathBuf::from(NO_FILE)),
            ..Default::default()
        })
        .unwrap()
    };
    let r = reg.reference("login/app:1");

    registry::login(&config, &reg.addr, "erin", "pa:ss").unwrap();
    let img = push_image(&client(), &r, &Platform::host(), 100).await;
    assert_eq!(
        client()
            .get_manifest(&r, &Platform::host())
            .await
            .unwrap()
            .digest,
        img.manifest_digest
    );

    assert!(registry::logout(&config, &reg.addr).unwrap());
    let err = client()
        .get_manifest(&r, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
}
