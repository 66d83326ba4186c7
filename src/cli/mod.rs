//! Command-line interface, following `docker build` / `docker run` spelling.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// rbuild: a daemonless container image builder.
#[derive(Debug, Parser)]
#[command(name = "rbuild", version, about)]
pub(crate) struct Cli {
    /// Store root (blobs, snapshots, records, tags).
    #[arg(long, global = true, env = "RBUILD_ROOT", value_name = "DIR")]
    pub(crate) root: Option<PathBuf>,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Whether `a` names a subcommand (or alias, or help/version): anything else first on the command line
/// means `build` (so `rbuild -t app .` works). Asked of clap, so a new subcommand needs no list here.
fn is_subcommand(a: &str) -> bool {
    use clap::CommandFactory as _;
    matches!(a, "help" | "-h" | "--help" | "-V" | "--version")
        || Cli::command()
            .get_subcommands()
            .any(|c| c.get_name() == a || c.get_all_aliases().any(|x| x == a))
}

/// Inserts `build` when the first argument after global options is not a subcommand.
pub(crate) fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--root" {
            i += 2;
        } else if a.starts_with("--root=")
            || a == "--verbose"
            || (a.starts_with("-v") && a[1..].chars().all(|c| c == 'v'))
        {
            i += 1;
        } else {
            if !is_subcommand(&a) {
                args.insert(i, "build".into());
            } else if a == "run" {
                run_volume_flags(&mut args[i + 1..]);
            }
            return args;
        }
    }
    args
}

/// `docker run -v HOST:CTR`: `-v` is the global `--verbose`, so before the image name of `run` it is
/// rewritten to `--volume`.
fn run_volume_flags(args: &mut [std::ffi::OsString]) {
    use clap::CommandFactory as _;
    // The flags of `run` that take a value, as clap knows them (`-e`, `--env`, …).
    let cli = Cli::command();
    let takes_value: Vec<String> = cli
        .find_subcommand("run")
        .into_iter()
        .flat_map(clap::Command::get_arguments)
        .filter(|a| a.get_action().takes_values() && !a.is_positional())
        .flat_map(|a| {
            let short = a.get_short().map(|c| format!("-{c}"));
            let long = a.get_long().map(|l| format!("--{l}"));
            short.into_iter().chain(long)
        })
        .collect();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        if a == "-v" {
            args[i] = "--volume".into();
            i += 2;
        } else if let Some(rest) = a.strip_prefix("-v").filter(|r| r.starts_with('/')) {
            args[i] = format!("--volume={rest}").into();
            i += 1;
        } else if takes_value.contains(&a) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return;
        }
    }
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub(crate) enum Command {
    /// Build an image from a Dockerfile (the default command).
    Build(BuildArgs),
    /// Build several images from compose.yaml / docker-bake.hcl / docker-bake.json, like `docker buildx bake`.
    Bake(BakeArgs),
    /// Run a command in a new container from an image in the local store.
    Run(RunArgs),
    /// List the images of the local store.
    Images(ImagesArgs),
    /// Give an image of the local store more names (`name:tag`, `name@sha256:…` or an ID as the source).
    Tag {
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Remove tags (an ID or digest: all tags of that image); the blobs stay until `rbuild prune`.
    #[command(alias = "rm")]
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Write images to a docker archive (`docker load` reads it) or an OCI archive.
    Save {
        #[arg(required = true)]
        images: Vec<String>,
        /// Archive file (default: stdout, unless it is a terminal).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Archive format.
        #[arg(long, default_value = "docker", value_parser = ["docker", "oci"])]
        format: String,
    },
    /// Load images from a docker or OCI archive (default: stdin) or an OCI layout dir (`oci:DIR[:TAG]`).
    Load {
        #[arg(short, long, value_name = "FILE|oci:DIR[:TAG]")]
        input: Option<String>,
    },
    /// Push an image from the local store to a registry.
    Push(PushArgs),
    /// Pull an image from a registry into the local store and tag it there.
    Pull(PullArgs),
    /// Log in to a registry: check the credentials and save them in Docker's config.json.
    Login(LoginArgs),
    /// Log out from a registry: remove its credentials from Docker's config.json.
    Logout {
        /// Registry host (default: Docker Hub).
        registry: Option<String>,
    },
    /// Show the history of an image in the local store, like `docker history`.
    History {
        /// Image (a tag in the local store).
        image: String,
        /// Do not truncate the output.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Print the manifest and config of an image in the local store as JSON.
    Inspect {
        /// Image (a tag in the local store; with --sbom/--provenance also a registry image).
        image: String,
        /// Print the SBOM (SPDX) attached by `build --sbom` instead.
        #[arg(long, conflicts_with = "provenance")]
        sbom: bool,
        /// Print the provenance attached by `build --provenance` instead.
        #[arg(long)]
        provenance: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Check an image's attestations: signed by the key, in-toto, about this image.
    Verify {
        /// The public key (PEM `PUBLIC KEY`, as `cosign public-key` or `openssl pkey -pubout` write it).
        #[arg(long, value_name = "PUB")]
        key: PathBuf,
        /// Image: a tag in the local store, else read from its registry.
        image: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Remove build cache: unused records, base resolutions, cache mounts, and unreferenced blobs/snapshots.
    Prune(PruneArgs),
    /// Show the disk usage of the local store.
    Du,
    /// Verify the local store: blobs match their digests, tags reach complete images, cache records
    /// name blobs that are there, the store is private. Exits 1 when something is broken.
    Check {
        /// Remove what is broken (corrupt blobs, the tags and records that need them, lost snapshots)
        /// and make the store private again; the next build redoes what was removed.
        #[arg(long)]
        repair: bool,
    },
    /// Show what this machine offers rbuild: kernel features, isolation, rootless ids, store, registries.
    Info(InfoArgs),
    /// Multi-platform images in registries (buildx's `imagetools`).
    Imagetools {
        #[command(subcommand)]
        what: ImagetoolsCommand,
    },
    /// List the binfmt_misc handlers (emulated architectures); `--install ARCH...` registers Debian's
    /// qemu-user-static for them with the F flag (root; docs/MULTIPLATFORM.md).
    Binfmt {
        /// Register handlers for the named architectures (`arm64 arm s390x`..., or `all`).
        #[arg(long)]
        install: bool,
        /// Architectures, OCI or qemu names (`arm64` or `aarch64`).
        #[arg(value_name = "ARCH", requires = "install")]
        archs: Vec<String>,
    },
    /// Inspect internals.
    Debug {
        #[command(subcommand)]
        what: DebugCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ImagetoolsCommand {
    /// Push an image index of images already in a registry (per-platform builds pushed with
    /// `-o type=registry,push-by-digest=true`, or other indexes): only manifests are read.
    Create(ImagetoolsCreateArgs),
    /// Show an image or index in a registry: its manifests, the raw JSON (`--raw`), or its attestations
    /// as buildx prints them (`--format '{{json .SBOM}}'`, `'{{json .Provenance}}'`).
    Inspect(ImagetoolsInspectArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ImagetoolsInspectArgs {
    /// Image (`registry/repo:tag` or `@sha256:…`).
    pub(crate) image: String,
    /// Print the manifest or index as the registry serves it.
    #[arg(long, conflicts_with = "format")]
    pub(crate) raw: bool,
    /// `{{json .SBOM}}` or `{{json .Provenance}}` (buildx's templates that read attestations).
    #[arg(long)]
    pub(crate) format: Option<String>,
    /// Registry hosts reached over plain HTTP; loopback always is.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ImagetoolsCreateArgs {
    /// The index's name (`registry/repo:tag`); repeatable.
    #[arg(short = 't', long = "tag", required = true)]
    pub(crate) tags: Vec<String>,
    /// Images to put in it (`registry/repo@sha256:…` or a tag; an index adds all its images).
    #[arg(required = true, value_name = "SOURCE")]
    pub(crate) sources: Vec<String>,
    /// Print the index and push nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Registry hosts reached over plain HTTP; loopback always is.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

/// Where `verify` and `inspect --sbom|--provenance` read an image's attestations.
#[derive(Debug, Args)]
pub(crate) struct RemoteArgs {
    /// Read the image from its registry even when the local store has it (without: only when it
    /// does not).
    #[arg(long)]
    pub(crate) remote: bool,
    /// For an image index in a registry: this platform's image only (default: every platform).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
    pub(crate) platform: Option<oci::Platform>,
    /// Registry hosts reached over plain HTTP; loopback always is.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BakeArgs {
    /// Targets or groups to build (default: `default`).
    #[arg(value_name = "TARGET|GROUP")]
    pub(crate) targets: Vec<String>,
    /// Bake file; repeatable, later files override (default: compose.yaml, docker-compose.yml,
    /// docker-bake.json, docker-bake.hcl and their overrides, those that exist, as buildx).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,
    /// Override an option of the targets matching TARGET (`*` globs; `KEY+=VALUE` appends); repeatable.
    #[arg(long = "set", value_name = "TARGET.KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Print the resolved definition as JSON (as buildx) and build nothing.
    #[arg(long)]
    pub(crate) print: bool,
    /// Push every target's tags.
    #[arg(long)]
    pub(crate) push: bool,
    /// Load every target's image into the Docker engine.
    #[arg(long)]
    pub(crate) load: bool,
    /// Build without reading the cache.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Always ask the registry for base images.
    #[arg(long)]
    pub(crate) pull: bool,
    /// Progress output (a terminal gets plain lines too: several targets run at once).
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub(crate) progress: ProgressMode,
    /// Steps that may run at once, all targets together (default 8).
    #[arg(long, value_name = "N")]
    pub(crate) jobs: Option<usize>,
    /// Go on with the other targets when one fails (default: the first failure stops them all).
    #[arg(long)]
    pub(crate) keep_going: bool,
    /// Registry hosts (host[:port]) reached over plain HTTP; loopback always is.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    /// Output format: text, or json for scripts.
    #[arg(long, value_enum, default_value_t = InfoFormat::Text)]
    pub(crate) format: InfoFormat,
    /// Registry hosts reached over plain HTTP (shown as configured).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
    /// Docker Hub mirrors (shown as configured; `RBUILD_REGISTRY_MIRRORS` too).
    #[arg(
        long = "registry-mirror",
        value_name = "URL",
        env = "RBUILD_REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    pub(crate) registry_mirrors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InfoFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DebugCommand {
    /// Print the parsed AST of a Dockerfile in BuildKit's test `result` format.
    Ast {
        /// Dockerfile path.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProgressMode {
    /// plain when stderr is not a terminal, else tty.
    Auto,
    /// One line per event, BuildKit style.
    Plain,
    /// Live view: running steps with timers and their last output lines.
    Tty,
    /// One JSON object per event line.
    #[value(name = "rawjson")]
    RawJson,
    /// Only errors.
    Quiet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum NetworkArg {
    /// The host's network (BuildKit's default for RUN).
    Default,
    /// A new network namespace with only loopback.
    None,
    /// The host's network.
    Host,
}

/// `--isolation`, with buildah's value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum IsolationArg {
    /// Namespaces and an overlay rootfs (needs CAP_SYS_ADMIN).
    #[value(alias = "oci")]
    Default,
    /// chroot into a copy of the rootfs, for pods where namespaces cannot be created.
    Chroot,
}

impl IsolationArg {
    pub(crate) fn runner(self) -> runner::Isolation {
        match self {
            IsolationArg::Default => runner::Isolation::Namespaces,
            IsolationArg::Chroot => runner::Isolation::Chroot,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum CompressionArg {
    /// gzip, on every core with a deterministic block scheme.
    Gzip,
    /// zstd, through libzstd's multithreaded path.
    Zstd,
    /// Plain tar.
    Uncompressed,
}

#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub(crate) tags: Vec<String>,
    /// Dockerfile path (default: CONTEXT/Dockerfile; inside a remote context; `-`: stdin).
    #[arg(short = 'f', long = "file", alias = "dockerfile", value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// Build-time variable; repeatable.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub(crate) build_args: Vec<String>,
    /// Stage to build (default: the last).
    #[arg(long, value_name = "STAGE")]
    pub(crate) target: Option<String>,
    /// Do not use cache records.
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// Do not use cache records for the steps of these stages (name or index); repeatable or comma-separated.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub(crate) no_cache_filter: Vec<String>,
    /// Always resolve base images from their registry, even when a local tag or an earlier resolution exists.
    #[arg(long)]
    pub(crate) pull: bool,
    /// Push the image to its registry (the tag names the registry).
    #[arg(long)]
    pub(crate) push: bool,
    /// Output, as buildx spells it: `type=image[,name=N][,push=true]`, `type=registry`,
    /// `type=oci,dest=FILE|DIR[,tar=false]`, `type=docker,dest=FILE`, `type=local,dest=DIR`,
    /// `type=tar,dest=FILE` (`-` is stdout); repeatable.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub(crate) outputs: Vec<String>,
    /// Send the image to the Docker engine at DOCKER_HOST (as `-o type=docker` without dest).
    #[arg(long)]
    pub(crate) load: bool,
    /// Export the build cache: `type=registry,ref=REF[,mode=min|max][,cache-mounts=true]`,
    /// `type=local,dest=DIR[,tag=T]`, `type=inline`; options `compression=`, `ignore-error=true`;
    /// repeatable.
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub(crate) cache_to: Vec<String>,
    /// Import a build cache (read lazily): `type=registry,ref=REF` (or just `REF`; a cache or an image with
    /// an inline cache), `type=local,src=DIR[,tag=T]`; repeatable.
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub(crate) cache_from: Vec<String>,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub(crate) progress: ProgressMode,
    /// Print only the image ID.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) iidfile: Option<PathBuf>,
    /// Write build result metadata (image digest, config digest, descriptor, names) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) metadata_file: Option<PathBuf>,
    /// Layer compression.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub(crate) compression: CompressionArg,
    /// Compression level (gzip 0-12, default 6; zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    pub(crate) compression_level: Option<u32>,
    /// Recompress base and cached layers to the chosen compression.
    #[arg(long)]
    pub(crate) force_compression: bool,
    /// OCI media types; `--oci-mediatypes=false` writes Docker schema2 ones.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(crate) oci_mediatypes: bool,
    /// Image label; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// Manifest annotation; repeatable.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub(crate) annotations: Vec<String>,
    /// The layers this build adds as one layer on top of the base image's (buildah's --squash).
    #[arg(long, conflicts_with = "squash_all")]
    pub(crate) squash: bool,
    /// The whole image as one layer (buildah's --squash-all, kaniko's --single-snapshot).
    #[arg(long, alias = "single-snapshot")]
    pub(crate) squash_all: bool,
    /// With SOURCE_DATE_EPOCH, also clamp the file times of base layers (rewrites them).
    #[arg(long)]
    pub(crate) rewrite_timestamp: bool,
    /// Steps that may run at once.
    #[arg(long, value_name = "N")]
    pub(crate) jobs: Option<usize>,
    /// Network of RUN steps without their own `--network`: default (the host's, as BuildKit), none, host.
    #[arg(long, value_enum, default_value_t = NetworkArg::Default)]
    pub(crate) network: NetworkArg,
    /// Named context for `FROM NAME` / `COPY --from=NAME`: `NAME=docker-image://REF`,
    /// `NAME=oci-layout://DIR[:TAG|@DIGEST]`, or a directory, git URL or tarball URL; repeatable.
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub(crate) build_contexts: Vec<String>,
    /// `/etc/hosts` entry of every RUN step (`HOST:IP`); repeatable.
    #[arg(long = "add-host", value_name = "HOST:IP", value_parser = exec::run_flags::parse_add_host)]
    pub(crate) add_hosts: Vec<(String, String)>,
    /// Size of /dev/shm in RUN steps (e.g. 128m; default 64m).
    #[arg(long, value_name = "SIZE", value_parser = exec::run_flags::parse_ram)]
    pub(crate) shm_size: Option<u64>,
    /// Resource limit of RUN steps, `TYPE=SOFT[:HARD]` (e.g. nofile=1024:2048); repeatable.
    #[arg(long = "ulimit", value_name = "TYPE=SOFT[:HARD]", value_parser = runner::Rlimit::parse)]
    pub(crate) ulimits: Vec<runner::Rlimit>,
    /// Memory limit of each RUN step (e.g. 512m), through a cgroup; the OOM killer ends it beyond.
    #[arg(long, short = 'm', value_name = "SIZE", value_parser = exec::run_flags::parse_ram)]
    pub(crate) memory: Option<u64>,
    /// CPUs each RUN step may use (e.g. 1.5).
    #[arg(long, value_name = "N")]
    pub(crate) cpus: Option<f64>,
    /// CPU time of each RUN step in microseconds per --cpu-period (default 100000).
    #[arg(long, value_name = "US")]
    pub(crate) cpu_quota: Option<u64>,
    #[arg(long, value_name = "US", hide = true)]
    pub(crate) cpu_period: Option<u64>,
    /// Memory plus swap of each RUN step (needs --memory; -1: unlimited swap).
    #[arg(long, value_name = "SIZE", value_parser = exec::run_flags::parse_memory_swap, allow_hyphen_values = true)]
    pub(crate) memory_swap: Option<i64>,
    /// Relative CPU weight of each RUN step (1024 by default).
    #[arg(long, short = 'c', value_name = "N")]
    pub(crate) cpu_shares: Option<u64>,
    /// CPUs each RUN step may run on (e.g. 0-1,3).
    #[arg(long, value_name = "LIST")]
    pub(crate) cpuset_cpus: Option<String>,
    /// Maximum number of processes of each RUN step.
    #[arg(long, value_name = "N")]
    pub(crate) pids_limit: Option<u64>,
    /// Cgroup under which RUN steps get theirs (default: the one rbuild runs in).
    #[arg(long, value_name = "PATH")]
    pub(crate) cgroup_parent: Option<String>,
    /// Grant RUN steps an entitlement: `network.host` (RUN --network=host), `security.insecure`
    /// (RUN --security=insecure: all capabilities, no seccomp), `device` (RUN --device); repeatable.
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub(crate) allow: Vec<String>,
    /// Run RUN steps with no_new_privs (setuid binaries then do not raise privileges).
    #[arg(long)]
    pub(crate) no_new_privileges: bool,
    /// How RUN steps are isolated: default (namespaces; `oci` is a synonym) or chroot (for pods
    /// that cannot create namespaces; see docs/ISOLATION.md).
    #[arg(long, value_enum, env = "RBUILD_ISOLATION", default_value_t = IsolationArg::Default)]
    pub(crate) isolation: IsolationArg,
    /// Registry hosts (host[:port]) reached over plain HTTP; loopback always is.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
    /// BuildKit's build checks, and the build validated (base images resolved) without running it;
    /// exits 1 when a check fires (`--call=check`).
    #[arg(long)]
    pub(crate) check: bool,
    /// What to do, as buildx: `build`, `check`, `outline` (build args and secrets of the target),
    /// `targets` (the stages); `,format=json`, `,ignorestatus=true`.
    #[arg(long, value_name = "METHOD[,format=json]", default_value = "build")]
    pub(crate) call: String,
    /// Secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VAR`; repeatable.
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    pub(crate) secrets: Vec<String>,
    /// SSH agent for `RUN --mount=type=ssh`: `default` (SSH_AUTH_SOCK) or `ID=SOCKET`; repeatable.
    #[arg(long = "ssh", value_name = "default|ID=SOCKET")]
    pub(crate) ssh: Vec<String>,
    /// Target platforms (`os/arch[/variant]`, comma-separated or repeated): one image per platform, in an
    /// image index when there are several; RUN for a foreign architecture runs through binfmt_misc
    /// (`rbuild binfmt`, docs/MULTIPLATFORM.md).
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT],...", value_delimiter = ',', value_parser = parse_platform)]
    pub(crate) platforms: Vec<oci::Platform>,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    #[command(flatten)]
    pub(crate) attest: AttestArgs,
    /// Build context: a directory, a git URL (`https://host/r.git#ref:dir`, `git@host:r.git`), a tarball
    /// URL, `-` (stdin: a tarball or a Dockerfile), kaniko's `tar://FILE`, `dir://DIR`.
    #[arg(value_name = "CONTEXT")]
    pub(crate) context: String,
}

/// Attestation flags of `build` (docs/ATTESTATIONS.md).
#[derive(Debug, Args)]
pub(crate) struct AttestArgs {
    /// SLSA provenance: `true`, `mode=min`, `mode=max` (`--provenance` alone is `mode=min`).
    #[arg(long, value_name = "MODE", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(crate) provenance: Option<String>,
    /// SPDX SBOM made by rbuild's scanners: `true`, `scan-stages=true`.
    #[arg(long, value_name = "OPTS", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(crate) sbom: Option<String>,
    /// Attestation as buildx spells it: `type=provenance[,mode=max]`, `type=sbom[,scan-stages=true]`.
    #[arg(long = "attest", value_name = "type=..")]
    pub(crate) attest: Vec<String>,
    /// Sign the attestations (DSSE) with this ECDSA P-256 or Ed25519 PKCS#8 PEM key.
    #[arg(long, value_name = "FILE")]
    pub(crate) sign_key: Option<PathBuf>,
    /// How pushed attestations are attached: `referrers` (OCI 1.1) or `index` (BuildKit's layout).
    #[arg(long, value_name = "referrers|index", default_value = "referrers")]
    pub(crate) attest_mode: String,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Set an environment variable; repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub(crate) workdir: Option<String>,
    /// User (`name`, `uid`, `uid:gid`).
    #[arg(short = 'u', long = "user")]
    pub(crate) user: Option<String>,
    /// Network: host (default) or none.
    #[arg(long, default_value = "host")]
    pub(crate) network: String,
    /// `no-new-privileges`: run the command with no_new_privs (as docker run's option).
    #[arg(long = "security-opt", value_name = "OPT")]
    pub(crate) security_opts: Vec<String>,
    /// Isolation: default (namespaces; `oci` is a synonym) or chroot (see docs/ISOLATION.md).
    #[arg(long, value_enum, env = "RBUILD_ISOLATION", default_value_t = IsolationArg::Default)]
    pub(crate) isolation: IsolationArg,
    /// Override the image's ENTRYPOINT.
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    /// The image of a multi-platform image (index) to run (`os/arch[/variant]`; default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
    pub(crate) platform: Option<oci::Platform>,
    /// Bind mount `HOST:CONTAINER[:ro]`; repeatable.
    #[arg(long = "volume", value_name = "HOST:CTR[:ro]")]
    pub(crate) volumes: Vec<String>,
    /// Read environment variables from a file (`KEY=value` lines, `#` comments); repeatable.
    #[arg(long = "env-file", value_name = "FILE")]
    pub(crate) env_files: Vec<PathBuf>,
    /// Keep stdin open (without it the command reads /dev/null).
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    /// Give the command a terminal (a pty).
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    /// Remove the container's filesystem afterwards (always done; accepted for docker compatibility).
    #[arg(long)]
    pub(crate) rm: bool,
    /// Image (a tag in the local store).
    pub(crate) image: String,
    /// Command and arguments (default: the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ImagesArgs {
    /// Show the manifest digests.
    #[arg(long)]
    pub(crate) digests: bool,
    /// Print only image IDs.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// `reference=PATTERN` (`*` and `?` globs) or `dangling=true|false`; repeatable.
    #[arg(short, long, value_name = "FILTER")]
    pub(crate) filter: Vec<String>,
    /// `table`, `json`, or a template such as `{{.Repository}}:{{.Tag}}` (fields Repository, Tag, Digest,
    /// ID, Size; `table TEMPLATE` adds a header).
    #[arg(long)]
    pub(crate) format: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// Image in the local store (tag, `name@sha256:…` or ID); names the registry unless DESTINATION does.
    pub(crate) image: String,
    /// Push under this name instead (`registry/repo:tag`).
    pub(crate) destination: Option<String>,
    /// Push every tag of the repository IMAGE names.
    #[arg(short, long)]
    pub(crate) all_tags: bool,
    /// Write the pushed manifest's digest to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) digestfile: Option<std::path::PathBuf>,
    /// Registry hosts reached over plain HTTP; loopback always is.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

/// Registry TLS trust and Docker Hub mirrors, shared by the commands that talk to registries.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct RegistryArgs {
    /// Trust this CA (PEM file) for this registry (`host[:port]`); repeatable. Docker's
    /// `/etc/docker/certs.d/HOST/*.crt` (or `$RBUILD_CERTS_D/HOST/*.crt`) are trusted too.
    #[arg(long = "registry-ca", value_name = "HOST=FILE", value_parser = parse_registry_ca)]
    pub(crate) registry_cas: Vec<(String, PathBuf)>,
    /// Mirror tried first for pulls (falling back to the registry): `URL` for Docker Hub,
    /// `REGISTRY=URL` for any other; repeatable or comma-separated.
    #[arg(
        long = "registry-mirror",
        value_name = "[REGISTRY=]URL",
        env = "RBUILD_REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    pub(crate) registry_mirrors: Vec<String>,
    /// `--tls-verify=false`: do not verify registries' TLS certificates (self-signed CI registries).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(crate) tls_verify: bool,
    /// Do not verify this registry's TLS certificate (kaniko's spelling); repeatable.
    #[arg(long = "skip-tls-verify-registry", value_name = "HOST")]
    pub(crate) skip_tls_verify: Vec<String>,
    /// Retries of a failed registry request or transfer (default 3).
    #[arg(long = "retry", value_name = "N")]
    pub(crate) retry: Option<u32>,
}

impl RegistryArgs {
    /// Client options with these settings and the `--insecure-registry` hosts.
    pub(crate) fn client_options(&self, insecure: &[String]) -> registry::ClientOptions {
        registry::ClientOptions {
            insecure_registries: insecure.to_vec(),
            registry_cas: self.registry_cas.clone(),
            mirrors: self.registry_mirrors.clone(),
            skip_tls_verify: if self.tls_verify {
                self.skip_tls_verify.clone()
            } else {
                vec!["*".into()]
            },
            max_retries: self.retry,
            ..Default::default()
        }
    }
}

fn parse_registry_ca(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((host, file)) if !host.is_empty() && !file.is_empty() => {
            Ok((host.to_owned(), PathBuf::from(file)))
        }
        _ => Err(format!("invalid --registry-ca {s:?}: expected HOST=FILE")),
    }
}

#[derive(Debug, Args)]
pub(crate) struct PullArgs {
    /// Image reference (`name[:tag|@digest]`).
    pub(crate) image: String,
    /// Platform to pull from a multi-platform image (`os/arch[/variant]`; default: the host's).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
    pub(crate) platform: Option<oci::Platform>,
    /// Registry hosts reached over plain HTTP; loopback always is.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
    /// Print only the digest.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub(crate) struct LoginArgs {
    /// Registry host (default: Docker Hub).
    pub(crate) registry: Option<String>,
    /// User name (asked for on a terminal when missing).
    #[arg(short, long)]
    pub(crate) username: Option<String>,
    /// Password (visible to other users in the process list; prefer --password-stdin).
    #[arg(short, long, conflicts_with = "password_stdin")]
    pub(crate) password: Option<String>,
    /// Read the password from the first line of stdin.
    #[arg(long)]
    pub(crate) password_stdin: bool,
    /// Registry hosts reached over plain HTTP; loopback always is.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub(crate) insecure_registries: Vec<String>,
    #[command(flatten)]
    pub(crate) registry_args: RegistryArgs,
}

/// Parses `os/arch[/variant]` (docker's `--platform`), normalised as containerd does (`oci::Platform`).
pub(crate) fn parse_platform(s: &str) -> Result<oci::Platform, String> {
    s.parse()
        .map_err(|e: oci::PlatformParseError| e.to_string())
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Remove all build cache (tagged images and what they use stay).
    #[arg(short, long)]
    pub(crate) all: bool,
    /// Evict least recently used cache until the store fits in SIZE (e.g. 10GB, 512MB, 1000000).
    #[arg(long, value_name = "SIZE")]
    pub(crate) keep_storage: Option<String>,
    /// `until=DURATION`: remove cache not used for DURATION (e.g. 24h, 30m, 7d).
    #[arg(long, value_name = "FILTER")]
    pub(crate) filter: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_as_docker_spells_them() {
        let p = parse_platform("linux/arm/v7").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
            ("linux", "arm", Some("v7"))
        );
        let p = parse_platform("linux/x86_64").unwrap();
        assert_eq!((p.architecture.as_str(), p.variant), ("amd64", None));
        assert_eq!(parse_platform("linux/arm64/v8").unwrap().variant, None);
        for bad in ["linux", "", "linux/", "/amd64", "a/b/c/d"] {
            let e = parse_platform(bad).unwrap_err();
            assert!(e.contains("OS/ARCH"), "{bad}: {e}");
        }
    }

    #[test]
    fn run_dash_v_is_a_volume_before_the_image() {
        let args = |v: &[&str]| {
            v.iter()
                .map(Into::into)
                .collect::<Vec<std::ffi::OsString>>()
        };
        assert_eq!(
            with_default_command(args(&[
                "rbuild",
                "-v",
                "run",
                "-e",
                "A=1",
                "--security-opt",
                "seccomp=unconfined",
                "-v",
                "/h:/c",
                "-v/x:/y:ro",
                "img",
                "ls",
                "-v"
            ])),
            args(&[
                "rbuild",
                "-v",
                "run",
                "-e",
                "A=1",
                "--security-opt",
                "seccomp=unconfined",
                "--volume",
                "/h:/c",
                "--volume=/x:/y:ro",
                "img",
                "ls",
                "-v"
            ])
        );
    }
}
