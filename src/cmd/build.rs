//! `rbuild build`: the flags become a [`driver::BuildRequest`], the driver crate builds it, progress drawn
//! in the mode the flags ask for.

use std::sync::Arc;

use anyhow::Result;

use crate::cli::{BuildArgs, CompressionArg, NetworkArg, ProgressMode};
use crate::progress::{self, Mode};

/// Runs one build; returns the image ID (the index digest for several platforms), or `None` for `--check`.
pub(crate) fn build(
    args: &BuildArgs,
    store: Arc<cache::Store>,
    rt: &tokio::runtime::Runtime,
) -> Result<Option<oci::Digest>> {
    driver::build(&request(args), store, rt, progress::new(mode(args)))
}

/// The progress mode: `-q` wins over `--progress`.
fn mode(args: &BuildArgs) -> Mode {
    match (args.quiet, args.progress) {
        (true, _) | (_, ProgressMode::Quiet) => Mode::Quiet,
        (_, ProgressMode::Tty) => Mode::Tty,
        (_, ProgressMode::RawJson) => Mode::Json,
        (_, ProgressMode::Auto) => Mode::auto(),
        (_, ProgressMode::Plain) => Mode::Plain,
    }
}

/// The flags as the driver takes them.
pub(crate) fn request(args: &BuildArgs) -> driver::BuildRequest {
    let a = &args.attest;
    driver::BuildRequest {
        context: args.context.clone(),
        file: args.file.clone(),
        tags: args.tags.clone(),
        build_args: args.build_args.clone(),
        target: args.target.clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        pull: args.pull,
        push: args.push,
        outputs: args.outputs.clone(),
        load: args.load,
        cache_to: args.cache_to.clone(),
        cache_from: args.cache_from.clone(),
        quiet: args.quiet,
        iidfile: args.iidfile.clone(),
        metadata_file: args.metadata_file.clone(),
        compression: match args.compression {
            CompressionArg::Gzip => oci::Compression::Gzip,
            CompressionArg::Zstd => oci::Compression::Zstd,
            CompressionArg::Uncompressed => oci::Compression::Uncompressed,
        },
        compression_level: args.compression_level,
        force_compression: args.force_compression,
        oci_mediatypes: args.oci_mediatypes,
        labels: args.labels.clone(),
        annotations: args.annotations.clone(),
        squash: match (args.squash, args.squash_all) {
            (_, true) => export::Squash::All,
            (true, false) => export::Squash::New,
            (false, false) => export::Squash::No,
        },
        rewrite_timestamp: args.rewrite_timestamp,
        jobs: args.jobs,
        network: match args.network {
            NetworkArg::Default => driver::Network::Default,
            NetworkArg::None => driver::Network::None,
            NetworkArg::Host => driver::Network::Host,
        },
        build_contexts: args.build_contexts.clone(),
        add_hosts: args.add_hosts.clone(),
        shm_size: args.shm_size,
        ulimits: args.ulimits.clone(),
        memory: args.memory,
        cpus: args.cpus,
        cpu_quota: args.cpu_quota,
        cpu_period: args.cpu_period,
        memory_swap: args.memory_swap,
        cpu_shares: args.cpu_shares,
        cpuset_cpus: args.cpuset_cpus.clone(),
        pids_limit: args.pids_limit,
        cgroup_parent: args.cgroup_parent.clone(),
        allow: args.allow.clone(),
        no_new_privileges: args.no_new_privileges,
        isolation: args.isolation.runner(),
        check: args.check,
        call: args.call.clone(),
        secrets: args.secrets.clone(),
        ssh: args.ssh.clone(),
        platforms: args.platforms.clone(),
        registry: args.registry.client_options(&args.insecure_registries),
        attest: driver::AttestFlags {
            provenance: a.provenance.clone(),
            sbom: a.sbom.clone(),
            attest: a.attest.clone(),
            sign_key: a.sign_key.clone(),
            attest_mode: a.attest_mode.clone(),
        },
    }
}
