//! `rbuild pull`: an image from its registry into the local store, as a FROM would fetch it, then tagged.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use oci::{Platform, Reference};

use crate::cli::PullArgs;
use images::{platform_text, snapshots, Images, LayerFetch};

/// Pulls `args.image` for the wanted platform, unpacks its layers, tags it; prints `name@digest`.
pub(crate) fn pull(
    args: &PullArgs,
    store: Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let reference: Reference = args
        .image
        .parse()
        .with_context(|| format!("image {:?}", args.image))?;
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let client = std::sync::Arc::new(images::LazyClient::new(
        args.registry.client_options(&args.insecure_registries),
    ));
    let images = Images::new(
        Arc::clone(&store),
        client,
        rt.handle().clone(),
        platform.clone(),
    )
    .with_pull(true);
    let _lease = store.lease()?;
    if !args.quiet {
        eprintln!(
            "pulling {} for {}",
            reference.familiar(),
            platform_text(&platform)
        );
    }
    let mut fetched = 0usize;
    // Each layer is unpacked as soon as it is in the store, while the others still download.
    let (tx, rx) = std::sync::mpsc::channel::<solver::Layer>();
    let unpacker = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || -> Result<()> {
            use rayon::iter::{ParallelBridge as _, ParallelIterator as _};
            // Several layers unpack at once: decompression is the cost, one core per layer.
            rx.into_iter()
                .par_bridge()
                .try_for_each(|layer| images::ensure_snapshot(&store, &layer).map(drop))
        })
    };
    let pulled = images.pull(&reference.to_string(), |layer, status| {
        if status == LayerFetch::Fetched {
            fetched += 1;
        }
        let _ = tx.send(layer.clone()); // the unpacker only stops early on an error, reported below
        if !args.quiet {
            let what = match status {
                LayerFetch::Present => "already exists",
                LayerFetch::Fetched => "pull complete",
            };
            eprintln!("{}: {what}", layer.blob.digest.short());
        }
    });
    drop(tx);
    let unpacked = unpacker
        .join()
        .map_err(|_| anyhow::anyhow!("internal error: the unpacking thread panicked"))?;
    let (image, layers) = pulled?;
    unpacked.with_context(|| format!("unpacking {}", reference.familiar()))?;
    snapshots(&store, &layers).with_context(|| format!("unpacking {}", reference.familiar()))?;
    let name = reference.familiar();
    let previous = store.resolve_tag(&name)?;
    store.set_tag(&name, &image.manifest_desc)?;
    let digest = &image.manifest_desc.digest;
    if !args.quiet {
        eprintln!("Digest: {digest}");
        let up_to_date = fetched == 0 && previous.is_some_and(|p| p.digest == *digest);
        if up_to_date {
            eprintln!("Status: Image is up to date for {name}");
        } else {
            eprintln!("Status: Downloaded newer image for {name}");
        }
    }
    println!("{}@{digest}", reference.name());
    Ok(())
}
