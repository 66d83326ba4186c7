//! The fault matrix: each fault injected by the proxy in front of the real registry, a push (or a pull)
//! through it, and then the invariant checked on the registry directly: a tag exists only when its
//! manifest and every blob it names can be pulled. Run with `--nocapture` to see the matrix.

mod common;

use common::proxy::{Fault, Proxy, Truncate};
use common::{anonymous_client, blob_file, random_bytes, TestRegistry};
use oci::{media_type, Descriptor, Manifest, Platform, Reference};

/// When a fault is injected: before the push, or after a clean push and before the pull.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Push,
    Pull,
}

struct Row {
    fault: &'static str,
    phase: Phase,
    /// Whether the operation must succeed (by retry or fallback) or must fail cleanly.
    succeeds: bool,
    inject: fn(&Proxy),
}

fn fault(method: &'static str, path_contains: &'static str, status: u16, times: u32) -> Fault {
    Fault {
        method,
        path_contains,
        status,
        times,
    }
}

const ROWS: &[Row] = &[
    Row {
        fault: "500 on the first 2 blob HEADs",
        phase: Phase::Push,
        succeeds: true,
        inject: |p| p.inject(fault("HEAD", "/blobs/", 500, 2)),
    },
    Row {
        fault: "429 + Retry-After on an upload POST",
        phase: Phase::Push,
        succeeds: true,
        inject: |p| {
            p.fault_header("Retry-After", "1");
            p.inject(fault("POST", "/blobs/uploads/", 429, 1));
        },
    },
    Row {
        fault: "503 twice on the manifest PUT",
        phase: Phase::Push,
        succeeds: true,
        inject: |p| p.inject(fault("PUT", "/manifests/", 503, 2)),
    },
    Row {
        fault: "connection reset in the answer to a blob PUT",
        phase: Phase::Push,
        succeeds: true,
        inject: |p| {
            p.truncate(Truncate {
                method: "PUT",
                path_contains: "/blobs/uploads/",
                bytes: 10,
                times: 1,
            })
        },
    },
    Row {
        fault: "500 on the second blob PUT, once",
        phase: Phase::Push,
        succeeds: true,
        inject: |p| p.fail_after("PUT", "/blobs/uploads/", 1, 500),
    },
    Row {
        fault: "monolithic uploads refused (415)",
        phase: Phase::Push,
        succeeds: true,
        inject: |p| p.reject_monolithic_uploads(),
    },
    Row {
        fault: "413 on every blob PUT",
        phase: Phase::Push,
        succeeds: false,
        inject: |p| p.inject(fault("PUT", "/blobs/uploads/", 413, 100)),
    },
    Row {
        fault: "500 on every manifest PUT",
        phase: Phase::Push,
        succeeds: false,
        inject: |p| p.inject(fault("PUT", "/manifests/", 500, 100)),
    },
    Row {
        fault: "connection reset mid-body on a blob GET",
        phase: Phase::Pull,
        succeeds: true,
        inject: |p| {
            p.truncate(Truncate {
                method: "GET",
                path_contains: "/blobs/",
                bytes: 400,
                times: 1,
            })
        },
    },
    Row {
        fault: "503 twice on the manifest GET",
        phase: Phase::Pull,
        succeeds: true,
        inject: |p| p.inject(fault("GET", "/manifests/", 503, 2)),
    },
    Row {
        fault: "slow blob bodies (1 KiB every 100 ms)",
        phase: Phase::Pull,
        succeeds: true,
        inject: |p| p.slow_blob_bodies(100),
    },
    Row {
        fault: "503 on every blob GET",
        phase: Phase::Pull,
        succeeds: false,
        inject: |p| p.inject(fault("GET", "/blobs/", 503, 100)),
    },
];

/// Pushes a config, two layers and a manifest, stopping at the first error (no unwraps: a failed push is
/// an outcome here).
async fn push(client: &registry::Client, r: &Reference) -> Result<Manifest, registry::Error> {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": Platform::host().architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {},
    }))
    .unwrap();
    let (config_path, config_desc) = blob_file(dir.path(), media_type::OCI_CONFIG, &config);
    let mut layers = Vec::new();
    for size in [3000, 5000] {
        let (path, desc) = blob_file(dir.path(), media_type::OCI_LAYER_GZIP, &random_bytes(size));
        client.push_blob(r, &desc, &path).await?;
        layers.push(desc);
    }
    client.push_blob(r, &config_desc, &config_path).await?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.to_owned()),
        config: config_desc,
        layers,
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&manifest).unwrap();
    client
        .put_manifest(r, media_type::OCI_MANIFEST, &bytes)
        .await?;
    Ok(manifest)
}

/// Resolves `r` and fetches (and so verifies) every blob its manifest names.
async fn pull(client: &registry::Client, r: &Reference) -> Result<Manifest, registry::Error> {
    let pulled = client.get_manifest(r, &Platform::host()).await?;
    let descs: Vec<&Descriptor> = std::iter::once(&pulled.manifest.config)
        .chain(&pulled.manifest.layers)
        .collect();
    for d in descs {
        client.fetch_blob_bytes(r, d).await?;
    }
    Ok(pulled.manifest)
}

#[tokio::test]
#[allow(clippy::print_stderr)] // the matrix is the test's report (`--nocapture`)
async fn every_fault_ends_in_success_or_a_clean_failure_and_no_tag_names_a_missing_blob() {
    let reg = TestRegistry::start();
    let client = anonymous_client();
    let mut table = vec![
        "| fault | during | outcome | tag on the registry afterwards |".to_owned(),
        "|---|---|---|---|".to_owned(),
    ];
    for (i, row) in ROWS.iter().enumerate() {
        let proxy = Proxy::start(&reg.addr, None).await;
        let name = format!("sweep/f{i}:1");
        let through = proxy.reference(&name);
        let direct = reg.reference(&name);
        let outcome = match row.phase {
            Phase::Push => {
                (row.inject)(&proxy);
                push(&client, &through).await
            }
            Phase::Pull => {
                push(&client, &through)
                    .await
                    .unwrap_or_else(|e| panic!("{}: the clean push failed: {e}", row.fault));
                (row.inject)(&proxy);
                pull(&client, &through).await
            }
        };
        assert_eq!(
            outcome.is_ok(),
            row.succeeds,
            "{} ({:?}): {:?}",
            row.fault,
            row.phase,
            outcome.as_ref().err().map(ToString::to_string)
        );
        // The invariant, checked on the registry itself: the tag is absent, or whole.
        let tag = match client.get_manifest(&direct, &Platform::host()).await {
            Err(registry::Error::NotFound { .. }) => "absent".to_owned(),
            Err(e) => panic!("{}: reading the tag back: {e}", row.fault),
            Ok(_) => {
                let m = pull(&client, &direct)
                    .await
                    .unwrap_or_else(|e| panic!("{}: a tag names a missing blob: {e}", row.fault));
                if let Ok(pushed) = &outcome {
                    assert_eq!(pushed.layers, m.layers, "{}", row.fault);
                }
                format!("present, all {} blobs pull", m.layers.len() + 1)
            }
        };
        if row.phase == Phase::Push && outcome.is_err() {
            assert_eq!(tag, "absent", "{}: a failed push left a tag", row.fault);
        }
        let shown = match &outcome {
            Ok(_) => "succeeded (retry/fallback)".to_owned(),
            Err(e) => format!("failed cleanly: {}", e.to_string().replace('|', "/")),
        };
        table.push(format!(
            "| {} | {:?} | {shown} | {tag} |",
            row.fault, row.phase
        ));
    }
    eprintln!("{}", table.join("\n"));
}
