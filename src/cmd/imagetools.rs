//! `rbuild imagetools create`: an image index of images already in a registry (the CI matrix stitch).

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
