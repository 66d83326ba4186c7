//! `rbuild pull`: an image from its registry into the local store, as a FROM would fetch it, then tagged.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use oci::{Platform, Reference};

use crate::cli::PullArgs;
use crate::worker::{platform_text, snapshots, Images, LayerFetch};

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
    let client = std::sync::Arc::new(crate::worker::LazyClient::new(
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
    let (image, layers) = images.pull(&reference.to_string(), |desc, status| {
        if status == LayerFetch::Fetched {
            fetched += 1;
        }
        if !args.quiet {
            let what = match status {
                LayerFetch::Present => "already exists",
                LayerFetch::Fetched => "pull complete",
            };
            eprintln!("{}: {what}", desc.digest.short());
        }
    })?;
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
