//! End-to-end tests: the real `rbuild` binary against real parts (namespaces, the CNCF registry, skopeo,
//! umoci). They need root, as CI has.

/// Building images: multi-stage builds, caching, outputs, push, and what consumers see.
mod build;
/// Shared harness: temp stores, the busybox base image, the registry.
mod common;
/// Bad input: each gives a clear error, a non-zero exit, and leaves tags alone.
mod errors;
/// `rbuild run`.
mod run;
