//! End-to-end tests: the real `rbuild` binary against real parts (namespaces, the CNCF registry, skopeo,
//! umoci). They need root, as CI has.

/// `rbuild bake`: several targets from compose.yaml / docker-bake.hcl in one run.
mod bake;
/// Attestations: SBOM and provenance checked by independent tools, signing, both attachment modes (#21).
mod attest;
/// Building images: multi-stage builds, caching, outputs, push, and what consumers see.
mod build;
/// The store under concurrency and crashes, GC, cache policies.
mod cache;
/// Build checks: `--check`/`--call=check`, the `# check=` directive, warnings after a build, outline, targets.
mod checks;
/// `--isolation=chroot` without CAP_SYS_ADMIN (as in a locked-down pod).
mod chroot;
/// Shared harness: temp stores, the busybox base image, the registry.
mod common;
/// Build contexts from git URLs, tarball URLs, stdin, kaniko's `tar://` and `dir://`.
mod contexts;
/// COPY/ADD semantics against BuildKit: wildcards, symlink sources, --chmod, destinations, users.
mod copy;
/// The differential's CI subset: rbuild's images against BuildKit's, recorded (tests/differential/).
mod differential;
/// docs/CI.md: every documented rbuild build line parses.
mod docs;
/// Bad input: each gives a clear error, a non-zero exit, and leaves tags alone.
mod errors;
/// Outputs and formats: archives, compression, reproducibility, history and inspect.
mod export;
/// buildx's flags for every RUN (`--add-host`, `--shm-size`, `--ulimit`, `--secret`), seen from inside.
mod flags;
/// Dockerfile features end to end: instructions, flags, heredocs, ADD, .dockerignore, `--check`.
mod frontend;
/// Managing images: tag, rmi, images filters and formats, push under another name, save and load.
mod images;
/// Debian's Linux 5.10 and 6.1 kernels in QEMU running the build scenarios (issue #16).
mod kernels;
/// RUN --mount (cache, bind, tmpfs, secret, ssh) end to end.
mod mounts;
/// Multi-platform builds: emulated RUN, image indexes, push-by-digest + imagetools create (issue #20).
mod multiplatform;
/// The Node/Express acceptance scenario (issue #8).
mod node;
/// `--progress` modes: rawjson, tty under a pseudo-terminal.
mod progress;
/// Registries end to end: login/logout, push and pull through auth, `rbuild pull`, `--platform`.
mod registry;
/// Rootless mode: rbuild as an ordinary user, in a user namespace.
mod rootless;
/// `rbuild run`.
mod run;
/// The sandbox as a security boundary: escapes refused, nothing leaked, nothing left behind.
mod security;
/// The shared cache: --cache-to / --cache-from through a registry, a directory or the image itself.
mod shared_cache;
