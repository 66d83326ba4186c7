//! `rbuild imagetools create`: an image index of images already in a registry (the CI matrix stitch);
//! `rbuild imagetools inspect`: what a registry holds under a name, and its attestations.

use anyhow::Result;

/// `rbuild imagetools create -t TAG SRC...`: prints `NAME@DIGEST` per tag (the index JSON with
/// `--dry-run`).
pub(crate) fn create(
    args: &crate::cli::ImagetoolsCreateArgs,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    use anyhow::Context as _;
    let parse = |s: &String| {
        s.parse::<oci::Reference>()
            .with_context(|| format!("image {s:?}"))
    };
    let sources = args.sources.iter().map(parse).collect::<Result<Vec<_>>>()?;
    let client = registry::Client::new(args.registry.client_options(&args.insecure_registries))?;
    for tag in &args.tags {
        let target = parse(tag)?;
        let (index, pushed) = rt.block_on(export::create_index(
            &client,
            &sources,
            &target,
            args.dry_run,
        ))?;
        match pushed {
            Some(d) => println!("{}@{d}", target.name()),
            None => println!("{}", String::from_utf8_lossy(&index.bytes)),
        }
    }
    Ok(())
}

/// `rbuild imagetools inspect IMAGE`: buildx's summary (name, media type, digest, and an index's
/// manifests), `--raw`, or `--format '{{json .SBOM}}'|'{{json .Provenance}}'` (attest::remote).
pub(crate) fn inspect(
    args: &crate::cli::ImagetoolsInspectArgs,
    rt: &tokio::runtime::Runtime,
) -> Result<()> {
    use anyhow::Context as _;
    let image: oci::Reference = args
        .image
        .parse()
        .with_context(|| format!("image {:?}", args.image))?;
    let client = registry::Client::new(args.registry.client_options(&args.insecure_registries))?;
    if let Some(format) = &args.format {
        let template: attest::remote::Template = format.parse().map_err(anyhow::Error::msg)?;
        let images = rt.block_on(attest::remote::find(&client, &image, None))?;
        let value = attest::remote::buildx_value(&images, template)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let raw = rt.block_on(client.get_manifest_raw(&image))?;
    if args.raw {
        print!("{}", String::from_utf8_lossy(&raw.bytes));
        return Ok(());
    }
    println!("{:<11}{image}", "Name:");
    println!("{:<11}{}", "MediaType:", raw.media_type);
    println!("{:<11}{}", "Digest:", raw.digest);
    if oci::media_type::is_index(&raw.media_type) {
        let index: oci::Index = serde_json::from_slice(&raw.bytes).context("parsing the index")?;
        println!("\nManifests:");
        for (k, m) in index.manifests.iter().enumerate() {
            if k > 0 {
                println!();
            }
            println!("  {:<11}{}@{}", "Name:", image.name(), m.digest);
            println!("  {:<11}{}", "MediaType:", m.media_type);
            if let Some(p) = &m.platform {
                println!("  {:<11}{p}", "Platform:");
            }
            for (k, v) in &m.annotations {
                println!("  {:<11}{k}: {v}", "Annotation:");
            }
        }
    }
    Ok(())
}
