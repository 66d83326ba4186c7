//! `rbuild inspect` and `rbuild history`: what the local store knows of an image, as docker prints it.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};

use export::local_image;

use crate::cli::{ImagesArgs, PushArgs};

/// `rbuild images`: the images of the local store, filtered and formatted as asked.
pub(crate) fn images(args: &ImagesArgs, store: &cache::Store) -> Result<()> {
    let how = images::ListFormat {
        format: args.format.clone(),
        digests: args.digests,
        quiet: args.quiet,
    };
    print!(
        "{}",
        images::render(&images::list(store, &args.filter)?, &how)?
    );
    Ok(())
}

/// `rbuild tag SOURCE TARGET...`.
pub(crate) fn tag(store: &cache::Store, source: &str, targets: &[String]) -> Result<()> {
    for t in targets {
        store.tag_image(source, t)?;
    }
    Ok(())
}

/// `rbuild rmi IMAGE...`: prints `Untagged: NAME` per removed tag, as docker.
pub(crate) fn rmi(store: &cache::Store, names: &[String]) -> Result<()> {
    for n in names {
        for removed in store.untag(n)? {
            println!("Untagged: {removed}");
        }
    }
    Ok(())
}

/// `rbuild save IMAGE... [-o FILE] [--format docker|oci]`: stdout only when it is not a terminal.
pub(crate) fn save(
    store: &cache::Store,
    names: &[String],
    out: Option<&Path>,
    format: &str,
) -> Result<()> {
    let dest = match out {
        Some(p) => p,
        None if std::io::stdout().is_terminal() => {
            bail!("refusing to write an archive to a terminal: give -o FILE or redirect stdout")
        }
        None => Path::new("-"),
    };
    export::save(store, names, dest, format == "docker")
}

/// `rbuild load [-i FILE|oci:DIR[:TAG]]`: prints `Loaded image: NAME` (or the ID of an untagged one).
pub(crate) fn load(store: &cache::Store, input: Option<&str>) -> Result<()> {
    let loaded = match input {
        Some(i) if i != "-" => match images::parse_oci_dir(i) {
            Some((dir, tag)) => images::load_layout_dir(store, &dir, tag.as_deref())?,
            None => images::load_archive(store, fs_err::File::open(i)?)?,
        },
        _ if std::io::stdin().is_terminal() => {
            bail!("no archive to load: give -i FILE or pipe one to stdin")
        }
        _ => images::load_archive(store, std::io::stdin().lock())?,
    };
    for l in &loaded {
        if l.names.is_empty() {
            println!("Loaded image ID: {}", l.config);
        }
        for n in &l.names {
            println!("Loaded image: {n}");
        }
    }
    Ok(())
}

/// `rbuild push IMAGE [DESTINATION]`: pushes an image of the local store to the registry its name (or
/// DESTINATION) says.
pub(crate) fn push(
    args: &PushArgs,
    store: &cache::Store,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    let pairs: Vec<(String, String)> = if args.all_tags {
        if args.destination.is_some() {
            bail!("--all-tags pushes each tag under its own name: no DESTINATION");
        }
        let tags = store.repository_tags(&args.image)?;
        if tags.is_empty() {
            bail!("no tags of repository {} in the local store", args.image);
        }
        tags.into_iter().map(|t| (t.clone(), t)).collect()
    } else {
        let dest = args.destination.as_deref().unwrap_or(&args.image);
        vec![(args.image.clone(), dest.to_owned())]
    };
    let client = Arc::new(images::LazyClient::new(
        args.registry.client_options(&args.insecure_registries),
    ));
    for (source, dest) in pairs {
        let reference: oci::Reference = dest.parse().with_context(|| format!("image {dest:?}"))?;
        // A tagged image has all its blobs here; no imported cache is involved.
        let built = export::Built::local(store, &source)?;
        let digest = rt.block_on(built.push(
            client.get()?,
            store,
            &images::NoBlobSource,
            None,
            &reference,
        ))?;
        if let export::Built::Image(image) = &built {
            driver::attest::push_stored(store, client.get()?, rt, &source, &reference, image)?;
        }
        if let Some(file) = &args.digestfile {
            fs_err::write(file, digest.to_string())?;
        }
        println!("{}@{digest}", reference.name());
    }
    Ok(())
}

/// `rbuild inspect IMAGE`: descriptor, manifest and config as one JSON document on stdout.
pub(crate) fn inspect(store: &cache::Store, name: &str) -> Result<()> {
    if let Some((index, images)) = export::local_index(store, name)? {
        let manifests = images
            .iter()
            .map(|(p, i)| {
                (
                    p.clone(),
                    i.config_digest.clone(),
                    i.manifest_desc.clone(),
                    i.manifest.clone(),
                )
            })
            .collect::<Vec<_>>();
        let shown =
            images::show::inspect_index(store, name, &index.desc, &index.index, &manifests)?;
        println!("{shown}");
        return Ok(());
    }
    let image = local_image(store, name)?;
    println!(
        "{}",
        images::show::inspect(
            store,
            name,
            &image.config_digest,
            &image.manifest_desc,
            &image.manifest
        )?
    );
    Ok(())
}

/// `rbuild history IMAGE`: one line per history entry, newest first, like `docker history`.
pub(crate) fn history(store: &cache::Store, name: &str, no_trunc: bool) -> Result<()> {
    let image = local_image(store, name)?;
    print!(
        "{}",
        images::show::history(store, &image.config_digest, &image.manifest, no_trunc)?
    );
    Ok(())
}

pub(crate) use images::human_size;
