//! What one build is asked to do: [`BuildRequest`], the flags of `rbuild build` as plain values (specs
//! such as `-o` and `--cache-to` still as written: the pipeline checks them, naming the flag).

use std::path::PathBuf;

/// One build's flags, already typed where clap types them; the binary fills it from `rbuild build`'s
/// arguments and `rbuild bake` from each target's. `Default` is the empty request, not the flags'
/// defaults: `oci_mediatypes` is false there (Docker media types) and `call` empty (a build).
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The build context as written: a directory, a git URL, a tarball URL, `-`, `tar://FILE`, `dir://DIR`.
    pub context: String,
    /// `-f`: the Dockerfile (default: CONTEXT/Dockerfile; `-`: stdin).
    pub file: Option<PathBuf>,
    /// `-t NAME[:TAG]`, as written.
    pub tags: Vec<String>,
    /// `--build-arg KEY=VALUE` (or `KEY`: from the environment).
    pub build_args: Vec<String>,
    /// `--target STAGE`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter STAGE`.
    pub no_cache_filter: Vec<String>,
    /// `--pull`: base images from their registry even when the store has them.
    pub pull: bool,
    /// `--push`.
    pub push: bool,
    /// `-o SPEC`, as buildx spells them.
    pub outputs: Vec<String>,
    /// `--load`: also `-o type=docker` without dest.
    pub load: bool,
    /// `--cache-to SPEC`.
    pub cache_to: Vec<String>,
    /// `--cache-from SPEC`.
    pub cache_from: Vec<String>,
    /// `-q`: the image ID on stdout.
    pub quiet: bool,
    /// `--iidfile FILE`.
    pub iidfile: Option<PathBuf>,
    /// `--metadata-file FILE`.
    pub metadata_file: Option<PathBuf>,
    /// `--compression`.
    pub compression: oci::Compression,
    /// `--compression-level N` (checked against the compression).
    pub compression_level: Option<u32>,
    /// `--force-compression`.
    pub force_compression: bool,
    /// `--oci-mediatypes` (false: Docker schema2 media types).
    pub oci_mediatypes: bool,
    /// `--label KEY=VALUE`.
    pub labels: Vec<String>,
    /// `--annotation KEY=VALUE`.
    pub annotations: Vec<String>,
    /// `--squash` / `--squash-all`.
    pub squash: export::Squash,
    /// `--rewrite-timestamp`.
    pub rewrite_timestamp: bool,
    /// `--jobs N` (default 8).
    pub jobs: Option<usize>,
    /// `--network`: of RUN steps without their own.
    pub network: Network,
    /// `--build-context NAME=VALUE`.
    pub build_contexts: Vec<String>,
    /// `--add-host HOST:IP`.
    pub add_hosts: Vec<(String, String)>,
    /// `--shm-size`, bytes.
    pub shm_size: Option<u64>,
    /// `--ulimit`.
    pub ulimits: Vec<runner::Rlimit>,
    /// `--memory`, bytes.
    pub memory: Option<u64>,
    /// `--cpus`.
    pub cpus: Option<f64>,
    /// `--cpu-quota`, microseconds.
    pub cpu_quota: Option<u64>,
    /// `--cpu-period`, microseconds.
    pub cpu_period: Option<u64>,
    /// `--memory-swap`, bytes (-1: unlimited).
    pub memory_swap: Option<i64>,
    /// `--cpu-shares`.
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`.
    pub cpuset_cpus: Option<String>,
    /// `--pids-limit`.
    pub pids_limit: Option<u64>,
    /// `--cgroup-parent`.
    pub cgroup_parent: Option<String>,
    /// `--allow ENTITLEMENT`.
    pub allow: Vec<String>,
    /// `--no-new-privileges`.
    pub no_new_privileges: bool,
    /// `--isolation`.
    pub isolation: runner::Isolation,
    /// `--check`.
    pub check: bool,
    /// `--call METHOD[,…]`.
    pub call: String,
    /// `--secret id=ID,src=FILE`.
    pub secrets: Vec<String>,
    /// `--ssh default|ID=SOCKET`.
    pub ssh: Vec<String>,
    /// `--platform`: the target platforms (none: the host's).
    pub platforms: Vec<oci::Platform>,
    /// Registry flags (`--insecure-registry`, CAs, mirrors, TLS, retries).
    pub registry: registry::ClientOptions,
    /// `--provenance`, `--sbom`, `--attest`, `--sign-key`, `--attest-mode`.
    pub attest: AttestFlags,
}

/// `--network` of `rbuild build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's network (BuildKit's default for RUN).
    #[default]
    Default,
    /// A new network namespace with only loopback.
    None,
    /// The host's network, and the `network.host` entitlement as buildx grants it.
    Host,
}

/// The attestation flags of `rbuild build`, as written (checked by [`attest::Wanted::from_flags`]).
#[derive(Debug, Clone, Default)]
pub struct AttestFlags {
    /// `--provenance[=MODE]`.
    pub provenance: Option<String>,
    /// `--sbom[=OPTS]`.
    pub sbom: Option<String>,
    /// `--attest type=…`.
    pub attest: Vec<String>,
    /// `--sign-key FILE`.
    pub sign_key: Option<PathBuf>,
    /// `--attest-mode referrers|index`.
    pub attest_mode: String,
}
