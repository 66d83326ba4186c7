//! Execution of build steps: the [`solver::Worker`] that runs RUN through the runner with its mounts,
//! performs COPY/ADD/WORKDIR as file operations on snapshots, and reads the build context, git
//! repositories, http sources and secrets.
//!
//! It does not resolve or pull images itself ([`images`] does), assemble or push images (`export`), or
//! know the shared cache's format (it sees it as an [`images::BlobSource`]). Main types: [`BuildWorker`],
//! [`Context`], [`Secrets`], [`Downloads`], [`GitSources`].
//!
//! ```no_run
//! # fn f(worker: exec::BuildWorker, graph: &graph::BuildGraph) {
//! // The binary wires a BuildWorker and hands it to solver::solve with the graph.
//! # }
//! ```

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use graph::{CopySource, Mount, Network, Node, NodeId, Op, Sharing};
use images::{write_layer_blob_pushing, BlobSource, BlobTap, Images};
use oci::{LayerOptions, MergedView};
use solver::{ExecContext, Outcome, WorkerError};

pub mod cdi;
pub mod container;
pub mod context;
pub mod context_source;
pub mod copy;
pub mod fetch;
pub mod git;
pub mod named_context;
pub mod run_flags;
pub mod secrets;

pub use context::Context;
pub use context_source::{ContextSource, DockerfileSource, OpenContext, Opener};
pub use fetch::Downloads;
pub use git::GitSources;
pub use secrets::Secrets;

/// The worker of a build: what the solver calls to run each node.
pub struct BuildWorker {
    pub images: Arc<Images>,
    pub store: Arc<cache::Store>,
    pub context: Arc<Context>,
    pub exe: PathBuf,
    pub layer_opts: LayerOptions,
    pub secrets: Arc<Secrets>,
    pub downloads: Arc<Downloads>,
    /// Network of RUN steps that do not choose one (`--network`).
    pub default_network: runner::Network,
    /// `--no-new-privileges`.
    pub no_new_privs: bool,
    /// `--isolation`; not part of any cache key (the result is the same layer).
    pub isolation: runner::Isolation,
    /// Caches imported with `--cache-from`: where missing blobs and cache mounts come from.
    pub remote: Arc<dyn BlobSource>,
    /// `ADD <git URL>` sources.
    pub git: Arc<GitSources>,
    /// With `--push`: uploads of the pushed image's RUN layers while they are written.
    pub eager: Option<Arc<dyn BlobTap>>,
    /// `--add-host` entries and `--shm-size`/`--ulimit` of every RUN; in the RUN's cache key when given.
    pub run_hosts: Vec<(String, String)>,
    pub run_limits: runner::Limits,
    /// `--allow`: what RUN steps may ask for beyond the sandbox.
    pub entitlements: run_flags::Entitlements,
}

/// The runner mounts of one RUN, with what must live as long as the RUN does.
struct Mounts {
    specs: Vec<runner::MountSpec>,
    /// `KEY=value` entries added to the command's environment (secrets with `env=`, SSH_AUTH_SOCK).
    env: Vec<String>,
    /// Cache mount locks and scratch dirs, released and deleted after the RUN.
    _guards: Vec<Box<dyn std::any::Any>>,
}

fn werr(e: anyhow::Error) -> WorkerError {
    WorkerError::Failed(e.into())
}

/// The platform an image node is resolved for: the one it names, else the build platform (the host).
fn image_platform(named: Option<&str>) -> Result<oci::Platform, WorkerError> {
    match named {
        Some(p) => p
            .parse()
            .map_err(|e: oci::PlatformParseError| werr(anyhow::anyhow!(e))),
        None => Ok(oci::Platform::host()),
    }
}

impl solver::Worker for BuildWorker {
    fn content_key(&self, node: &Node) -> Result<Option<String>, WorkerError> {
        match &node.op {
            Op::Image {
                reference,
                platform,
            } => {
                let img = self
                    .images
                    .resolve_for(reference, &image_platform(platform.as_deref())?)
                    .map_err(werr)?;
                Ok(Some(img.manifest_desc.digest.to_string()))
            }
            Op::Copy(c) if c.source == CopySource::Context => self
                .context
                .content_key(&c.srcs, &c.exclude, c.chmod.is_some())
                .map(Some)
                .map_err(werr),
            Op::Http(h) => self.downloads.content_key(h).map(Some).map_err(werr),
            Op::Git(g) => self.git.content_key(g).map(Some).map_err(werr),
            // Build-wide RUN options enter the key only when not the default, so default keys do not move.
            Op::Exec(e) => {
                // Checked before any cache lookup, as BuildKit validates entitlements: a cached result
                // does not get around a missing --allow.
                if e.security == graph::Security::Insecure && !self.entitlements.security_insecure {
                    return Err(WorkerError::msg(
                        "RUN --security=insecure is not allowed: build with --allow security.insecure",
                    ));
                }
                if !e.devices.is_empty() {
                    // Same order as BuildKit: a device is allowed before any cache lookup.
                    cdi::apply(&e.devices, self.entitlements.device).map_err(WorkerError::msg)?;
                }
                if e.network == Network::Host && !self.entitlements.network_host {
                    return Err(WorkerError::msg(
                        "RUN --network=host is not allowed: build with --allow network.host",
                    ));
                }
                let mut opts: Vec<String> = Vec::new();
                if e.network == Network::Default && self.default_network == runner::Network::None {
                    opts.push("network=none".into());
                }
                if self.no_new_privs {
                    opts.push("no-new-privileges".into());
                }
                // As BuildKit's ExecOp meta: extra hosts, /dev/shm size and ulimits change what a RUN sees.
                for (host, ip) in &self.run_hosts {
                    opts.push(format!("add-host={host}:{ip}"));
                }
                if self.run_limits.shm_size != 0 {
                    opts.push(format!("shm-size={}", self.run_limits.shm_size));
                }
                for l in &self.run_limits.rlimits {
                    opts.push(format!("ulimit={}={}:{}", l.name, l.soft, l.hard));
                }
                Ok((!opts.is_empty()).then(|| format!("run-options: {}", opts.join(" "))))
            }
            _ => Ok(None),
        }
    }

    fn execute(
        &self,
        node: &Node,
        inputs: &[Outcome],
        ctx: &ExecContext<'_>,
    ) -> Result<Outcome, WorkerError> {
        match &node.op {
            Op::Scratch => Ok(Outcome::default()),
            Op::Image {
                reference,
                platform,
            } => {
                let (_, layers) = self
                    .images
                    .pull_for(reference, &image_platform(platform.as_deref())?, |_, _| {})
                    .map_err(werr)?;
                // Unpacked here rather than by the first step that uses the base, so that a layer that
                // does not unpack (a hostile or broken base) is reported at its FROM line. See: #19.
                self.remote
                    .snapshots(&self.store, &layers)
                    .with_context(|| format!("unpacking base image {reference}"))
                    .map_err(werr)?;
                Ok(Outcome {
                    layers,
                    added_layer: false,
                })
            }
            Op::Exec(exec) => self.exec(exec, inputs, ctx),
            Op::Merge => {
                let mut layers = inputs[0].layers.clone();
                layers.extend(inputs[1].layers.iter().cloned());
                Ok(Outcome {
                    layers,
                    added_layer: inputs[1].added_layer,
                })
            }
            Op::Git(g) => self.file_op(&Outcome::default(), |dir| {
                let scratch = self.store.tmp_dir()?;
                self.git.checkout(g, scratch.path(), dir)
            }),
            Op::Http(h) => self.file_op(&Outcome::default(), |dir| {
                self.downloads.materialize(h, dir)
            }),
            Op::Copy(c) => {
                let base = &inputs[0];
                let from = match &c.source {
                    CopySource::Input { index } => Some(&inputs[*index]),
                    _ => None,
                };
                self.file_op(base, |layer_dir| {
                    let dest_view =
                        MergedView::new(self.remote.snapshots(&self.store, &base.layers)?);
                    let src_view = match from {
                        Some(o) => Some(MergedView::new(
                            self.remote.snapshots(&self.store, &o.layers)?,
                        )),
                        None => None,
                    };
                    copy::copy(c, &self.context, src_view.as_ref(), &dest_view, layer_dir)
                })
            }
            Op::Mkdir(m) => {
                let base = &inputs[0];
                let view = MergedView::new(
                    self.remote
                        .snapshots(&self.store, &base.layers)
                        .map_err(werr)?,
                );
                // `WORKDIR /` adds no layer (BuildKit's dispatchWorkdir commits one for any other
                // path, existing or not).
                if m.path == "/" {
                    return Ok(Outcome {
                        layers: base.layers.clone(),
                        added_layer: false,
                    });
                }
                // An existing directory is left as it is (its mode, such as /tmp's 1777, and owner):
                // the layer is empty, as BuildKit's `mkdir -p` of it changes nothing.
                let exists = view
                    .resolve(&m.path, true)
                    .map_err(|e| werr(e.into()))?
                    .is_some_and(|r| r.is_dir);
                self.file_op(base, |layer_dir| {
                    if exists {
                        Ok(())
                    } else {
                        copy::mkdir(&m.path, &m.user, &view, layer_dir)
                    }
                })
            }
        }
    }

    fn is_usable(&self, outcome: &Outcome) -> bool {
        outcome
            .layers
            .iter()
            .all(|l| self.store.has_blob(&l.blob.digest) || self.remote.can_fetch(&l.blob.digest))
    }
}

impl BuildWorker {
    /// Runs `fill` on a fresh layer dir and turns the dir into a layer on top of `base`.
    fn file_op(
        &self,
        base: &Outcome,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Outcome, WorkerError> {
        let tmp = self.store.tmp_dir().map_err(|e| werr(e.into()))?;
        let dir = tmp.path().join("layer");
        fs_err::create_dir(&dir).map_err(|e| werr(e.into()))?;
        fill(&dir).map_err(werr)?;
        self.commit_layer(base, &dir, None, None).map_err(werr)
    }

    /// Writes `dir` (overlay format) as a layer blob and keeps `dir` as its snapshot; `early` holds gzip
    /// members compressed while a RUN wrote `dir`, and `node` is that RUN (its layer may be pushed while
    /// it is written).
    fn commit_layer(
        &self,
        base: &Outcome,
        dir: &Path,
        early: Option<&oci::Precompressed>,
        node: Option<NodeId>,
    ) -> Result<Outcome> {
        // A step that changed nothing still commits a layer (an empty tar), as BuildKit does: its
        // images have one layer per RUN/COPY/ADD/WORKDIR and history entries with `empty_layer:
        // false` (lab: dockerd 20.10; current exporter normalizeLayersAndHistory). Found by the
        // differential, where it was the most common difference.
        let push = self.eager.as_deref().zip(node);
        let layer = write_layer_blob_pushing(&self.store, push, |w| {
            oci::write_layer_early(dir, w, &self.layer_opts, early).context("writing layer")
        })?;
        if let Some(early) = early {
            tracing::debug!(
                compressed = early.compressed(),
                used = early.used(),
                "gzip members compressed during the RUN"
            );
        }
        self.store.commit_snapshot(dir, &layer.diff_id)?;
        let mut layers = base.layers.clone();
        layers.push(layer);
        Ok(Outcome {
            layers,
            added_layer: true,
        })
    }

    /// Turns a RUN's `--mount`s into runner mounts.
    fn mounts(&self, exec: &graph::Exec, inputs: &[Outcome]) -> Result<Mounts> {
        let mut out = Mounts {
            specs: Vec::new(),
            env: Vec::new(),
            _guards: Vec::new(),
        };
        for m in &exec.mounts {
            match m {
                Mount::Cache {
                    id,
                    target,
                    readonly,
                    sharing,
                    mode,
                    uid,
                    gid,
                    from,
                    source,
                } => {
                    let dir = match sharing {
                        Sharing::Locked => {
                            out._guards.push(Box::new(self.store.lock_cache_mount(id)?));
                            self.store.cache_mount_dir(id)?
                        }
                        // One writer at a time gets the persistent dir; the others a fresh one.
                        Sharing::Private => {
                            match self.store.try_lock(&format!("cache-mount-private:{id}"))? {
                                Some(guard) => {
                                    out._guards.push(Box::new(guard));
                                    self.store.cache_mount_dir(id)?
                                }
                                None => {
                                    let tmp = self.store.tmp_dir()?;
                                    let dir = tmp.path().join("cache");
                                    fs_err::create_dir(&dir)?;
                                    out._guards.push(Box::new(tmp));
                                    dir
                                }
                            }
                        }
                        Sharing::Shared => self.store.cache_mount_dir(id)?,
                    };
                    // A mount restored from an imported cache is new here: it gets its mode and owner
                    // like an empty one (its top directory is not in the exported tar).
                    let restored = self.remote.restore_mount(&self.store, id, &dir)?;
                    if restored {
                        tracing::info!(id = %id, "cache mount restored from an imported cache");
                    }
                    if let Some(index) = from {
                        seed_cache_dir(
                            &self.store,
                            self.remote.as_ref(),
                            &dir,
                            inputs,
                            *index,
                            source,
                        )?;
                    }
                    // Without `from`, `source` is a subpath of the cache itself, as BuildKit
                    // mounts it (with `from` the cache was seeded from that subpath). See: #19.
                    let dir = if from.is_none() && !source.is_empty() {
                        let rel = context::clean_rel(source)?;
                        let (sub, fresh) = cache_subdir(&dir, &rel)?;
                        init_cache_dir(&sub, *mode, *uid, *gid, fresh || restored)?;
                        sub
                    } else {
                        init_cache_dir(&dir, *mode, *uid, *gid, restored)?;
                        dir
                    };
                    out.specs.push(runner::MountSpec::Bind {
                        source: dir,
                        target: target.clone(),
                        readonly: *readonly,
                    });
                }
                Mount::Tmpfs { target, size } => {
                    out.specs.push(runner::MountSpec::Tmpfs {
                        target: target.clone(),
                        size: *size,
                    });
                }
                Mount::Bind {
                    input,
                    source,
                    target,
                    readwrite,
                } => {
                    let (lowers, source) = match input {
                        None => {
                            let rel = context::clean_rel(source)?;
                            let mut lowers = vec![self.context.host_path("")];
                            // See: #19. What .dockerignore leaves out is not in the context, so not
                            // in a bind of it either: a layer of whiteouts over the context hides it.
                            if let Some(layer) = context_whiteouts(
                                &self.store,
                                &self.context,
                                &rel,
                                &mut out._guards,
                            )? {
                                lowers.push(layer);
                            }
                            (lowers, format!("/{rel}"))
                        }
                        Some(index) => {
                            let input = inputs.get(*index).ok_or_else(|| {
                                anyhow!("RUN --mount from= names input {index}, which is missing")
                            })?;
                            (
                                self.remote.snapshots(&self.store, &input.layers)?,
                                source.clone(),
                            )
                        }
                    };
                    let scratch = if *readwrite {
                        let tmp = self.store.tmp_dir()?;
                        let dir = tmp.path().to_owned();
                        out._guards.push(Box::new(tmp));
                        Some(dir)
                    } else {
                        None
                    };
                    out.specs.push(runner::MountSpec::Overlay {
                        lowers,
                        source,
                        target: target.clone(),
                        scratch,
                    });
                }
                Mount::Secret {
                    id,
                    target,
                    env,
                    required,
                    mode,
                    uid,
                    gid,
                } => {
                    let Some(value) = self.secrets.value(id)? else {
                        if *required {
                            return Err(anyhow!(
                                "secret {id} is required but was not given (use --secret id={id},src=FILE or --secret id={id},env=VAR)"
                            ));
                        }
                        continue;
                    };
                    if let Some(var) = env {
                        let text = String::from_utf8(value.clone()).map_err(|_| {
                            anyhow!("secret {id} is not UTF-8, so it cannot be put in {var}")
                        })?;
                        out.env.push(format!("{var}={text}"));
                    }
                    if !target.is_empty() {
                        out.specs.push(runner::MountSpec::File {
                            content: runner::SecretBytes(value),
                            target: target.clone(),
                            mode: *mode,
                            uid: *uid,
                            gid: *gid,
                        });
                    }
                }
                Mount::Ssh {
                    id,
                    target,
                    required,
                } => {
                    let Some(socket) = self.secrets.ssh_socket(id)? else {
                        if *required {
                            return Err(anyhow!(
                                "ssh agent {id} is required but was not given (use --ssh {id} or --ssh {id}=SOCKET)"
                            ));
                        }
                        continue;
                    };
                    out.specs.push(runner::MountSpec::Bind {
                        source: socket,
                        target: target.clone(),
                        readonly: false,
                    });
                    out.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
            }
        }
        Ok(out)
    }

    fn exec(
        &self,
        exec: &graph::Exec,
        inputs: &[Outcome],
        ctx: &ExecContext<'_>,
    ) -> Result<Outcome, WorkerError> {
        // A RUN for another architecture runs through the kernel's binfmt_misc handler (qemu-user); the
        // build checks one is registered before anything runs.
        let base = &inputs[0];
        let mut lowers = self
            .remote
            .snapshots(&self.store, &base.layers)
            .map_err(werr)?;
        if lowers.is_empty() {
            lowers.push(self.store.empty_dir().map_err(|e| werr(e.into()))?);
        }
        let tmp = self.store.tmp_dir().map_err(|e| werr(e.into()))?;
        let upper = tmp.path().join("upper");
        let work = tmp.path().join("work");
        fs_err::create_dir(&upper).map_err(|e| werr(e.into()))?;
        fs_err::create_dir(&work).map_err(|e| werr(e.into()))?;

        let mounts = self.mounts(exec, inputs).map_err(werr)?;
        let Mounts {
            specs: mounts,
            env: extra_env,
            _guards,
        } = mounts;
        let mut env = exec.env.clone();
        env.extend(extra_env);
        let cdi = cdi::apply(&exec.devices, self.entitlements.device).map_err(WorkerError::msg)?;
        env.extend(cdi.env);
        let mut mounts = mounts;
        mounts.extend(cdi.mounts);

        let spec = runner::Spec {
            lowers,
            upper: upper.clone(),
            work,
            args: exec.args.clone(),
            env,
            cwd: exec.cwd.clone(),
            user: exec.user.clone(),
            hostname: String::new(),
            network: match exec.network {
                Network::None => runner::Network::None,
                Network::Host => runner::Network::Host,
                Network::Default => self.default_network,
            },
            mounts,
            readonly_rootfs: false,
            no_new_privs: self.no_new_privs,
            seccomp: match exec.security {
                graph::Security::Sandbox => runner::Seccomp::Default,
                graph::Security::Insecure => runner::Seccomp::Unconfined,
            },
            tty: false,
            isolation: self.isolation,
            extra_hosts: self.run_hosts.clone(),
            limits: self.run_limits.clone(),
            capabilities: match exec.security {
                graph::Security::Sandbox => runner::Capabilities::Default,
                graph::Security::Insecure => runner::Capabilities::All,
            },
            devices: cdi.devices,
        };
        // Compress the big files of the layer while the RUN writes them, with what CPU it leaves idle.
        // In chroot mode the upper dir is filled only after the command ends.
        let early = (self.layer_opts.compression == oci::Compression::Gzip
            && self.isolation == runner::Isolation::Namespaces)
            .then(|| oci::EarlyGzip::start(&upper, tmp.path(), self.layer_opts.level))
            .and_then(|started| {
                started
                    .map_err(|e| tracing::debug!(error = %e, "early gzip did not start"))
                    .ok()
            });
        let mut child = runner::spawn(
            &spec,
            &self.exe,
            Stdio::null(),
            Stdio::piped(),
            Stdio::piped(),
        )
        .map_err(|e| WorkerError::other("starting the sandbox", e))?;
        let setup_error = Arc::new(Mutex::new(Vec::<String>::new()));
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            let setup_error = Arc::clone(&setup_error);
            let reporter_lines = std::sync::mpsc::channel::<String>();
            let (tx, rx) = reporter_lines;
            let handle = std::thread::spawn(move || {
                for line in BufReader::new(stream)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    if line.starts_with("rbuild-runner: ") {
                        setup_error
                            .lock()
                            .expect("setup error lock")
                            .push(line.clone());
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            (handle, rx)
        })
        .collect();
        let status = loop {
            for (_, rx) in &readers {
                while let Ok(line) = rx.try_recv() {
                    ctx.log(&line);
                }
            }
            if ctx.cancel.is_cancelled() {
                // Killing the outside process kills the sandbox (its PID 1 has PDEATHSIG).
                let _ = child.kill(); // already-exited is fine: we wait next
                let _ = child.wait();
                return Err(WorkerError::Cancelled);
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    tracing::debug!(?status, "sandbox exited");
                    break status;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(WorkerError::other("waiting for the sandbox", e)),
            }
        };
        for (handle, rx) in readers {
            let _ = handle.join(); // a reader thread only ends by EOF; its panics are impossible here
            while let Ok(line) = rx.try_recv() {
                ctx.log(&line);
            }
        }
        let code = status.code().unwrap_or(128);
        if code == runner::EXIT_SETUP_FAILED {
            let lines = setup_error.lock().expect("setup error lock").join("; ");
            if !lines.is_empty() {
                return Err(WorkerError::msg(format!("sandbox setup failed: {lines}")));
            }
        }
        if code != 0 {
            let lines = setup_error.lock().expect("setup error lock");
            if let Some(oom) = lines.iter().find(|l| l.contains("out of memory")) {
                let oom = oom.trim_start_matches("rbuild-runner: ");
                return Err(WorkerError::msg(format!("exit code {code}: {oom}")));
            }
            return Err(WorkerError::ExitCode { code });
        }
        let early = early.and_then(oci::EarlyGzip::finish);
        self.commit_layer(base, &upper, early.as_ref(), Some(ctx.node))
            .map_err(werr)
    }
}

/// The directory `rel` inside cache dir `dir`, made if missing; whether it was made. An earlier RUN may
/// have left a symlink anywhere in the cache: every component must be a real directory, so the bind mount
/// of the result stays inside the cache.
fn cache_subdir(dir: &Path, rel: &str) -> Result<(PathBuf, bool)> {
    let mut path = dir.to_owned();
    let mut fresh = false;
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        path.push(comp);
        match fs_err::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(anyhow!(
                    "cache mount source {rel}: {comp} in the cache is not a directory (a symlink left by an earlier step?)"
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs_err::create_dir(&path)?;
                fresh = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok((path, fresh))
}

/// A layer of overlay whiteouts for the paths on disk that the context leaves out (`.dockerignore`), to
/// stack over the context in a bind of `rel`; `None` when nothing is left out there. See: #19.
///
/// A bind of a path that is itself left out fails as a missing source does in BuildKit.
fn context_whiteouts(
    store: &cache::Store,
    context: &context::Context,
    rel: &str,
    guards: &mut Vec<Box<dyn std::any::Any>>,
) -> Result<Option<PathBuf>> {
    let under = |h: &str| rel.is_empty() || h == rel || h.starts_with(&format!("{rel}/"));
    if let Some(h) = context
        .hidden()
        .iter()
        .find(|h| rel == h.as_str() || rel.starts_with(&format!("{h}/")))
    {
        return Err(anyhow!(
            "RUN --mount=type=bind source {rel} is not in the build context: {h} is excluded by .dockerignore"
        ));
    }
    let hidden: Vec<&String> = context.hidden().iter().filter(|h| under(h)).collect();
    if hidden.is_empty() {
        return Ok(None);
    }
    let tmp = store.tmp_dir()?;
    let layer = tmp.path().join("ignored");
    // Directories of the whiteout layer hide the context's own in the merged view: same mode and
    // owner as those.
    let like_context = |dir: &str| -> Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let ours = if dir.is_empty() {
            layer.clone()
        } else {
            layer.join(dir)
        };
        fs_err::create_dir(&ours)?;
        let theirs = fs_err::symlink_metadata(context.host_path(dir))?;
        std::os::unix::fs::lchown(&ours, Some(theirs.uid()), Some(theirs.gid()))
            .with_context(|| format!("chown {}", ours.display()))?;
        fs_err::set_permissions(
            &ours,
            std::fs::Permissions::from_mode(theirs.mode() & 0o7777),
        )?;
        Ok(())
    };
    like_context("")?;
    for h in hidden {
        let path = layer.join(h);
        let comps: Vec<&str> = h.split('/').collect();
        for end in 1..comps.len() {
            let dir = comps[..end].join("/");
            if !layer.join(&dir).exists() {
                like_context(&dir)?;
            }
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .with_context(|| format!("making the whiteout of {h} for a bind of the context"))?;
    }
    guards.push(Box::new(tmp));
    Ok(Some(layer))
}

/// Fills a new (empty) cache dir with `source` of input `index` (`RUN --mount=type=cache,from=…`); a cache
/// dir that already has contents keeps them, as BuildKit seeds only on creation.
fn seed_cache_dir(
    store: &cache::Store,
    remote: &dyn BlobSource,
    dir: &Path,
    inputs: &[Outcome],
    index: usize,
    source: &str,
) -> Result<()> {
    if fs_err::read_dir(dir)?.next().is_some() {
        return Ok(());
    }
    let input = inputs
        .get(index)
        .ok_or_else(|| anyhow!("RUN --mount cache from= names input {index}, which is missing"))?;
    let view = MergedView::new(remote.snapshots(store, &input.layers)?);
    let src = if source.is_empty() { "/" } else { source };
    view.copy_out(src, dir, true)
        .with_context(|| format!("seeding the cache mount from {src}"))?;
    Ok(())
}

/// Gives a cache dir its `mode`, `uid` and `gid` while it is empty (just created, as BuildKit
/// sets them only on creation) or `new` (just restored from an imported cache).
fn init_cache_dir(dir: &Path, mode: u32, uid: u32, gid: u32, new: bool) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !new && fs_err::read_dir(dir)?.next().is_some() {
        return Ok(());
    }
    let meta = fs_err::metadata(dir)?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", dir.display()))?;
    }
    if meta.mode() & 0o7777 != mode & 0o7777 {
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(())
}
