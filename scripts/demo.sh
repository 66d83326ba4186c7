#!/usr/bin/env bash
# The main job, on a fresh machine with no registry and no internet: build a busybox base image from
# Debian's busybox-static with rbuild itself, build the example app on it (RUN steps, two stages), and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --locked
RB="${CARGO_TARGET_DIR:-$PWD/target}/debug/rbuild"
ROOT="${RBUILD_ROOT:-$PWD/target/demo-store}"
cp /bin/busybox examples/busybox/busybox
"$RB" --root "$ROOT" build -t busybox:local examples/busybox
"$RB" --root "$ROOT" build -t hello:latest --build-arg BASE=busybox:local examples/hello
"$RB" --root "$ROOT" images
"$RB" --root "$ROOT" run hello:latest
