#!/bin/bash
# Per-RUN sandbox overhead: `RUN true` steps, rbuild vs BuildKit (dockerd 20.10 of ../shared/lab), one run.
#
#   bench/run-overhead.sh           # RUNS=5 STEPS=20; RBUILD=path (default target/release, else debug)
#
# When the user ROOTLESS_USER (default rbuild-rootless, made by scripts/install-deps.sh) exists, a third row
# runs the same binary as that user (rootless mode: a user namespace, overlay with userxattr).
#
# Builds a Dockerfile with one `RUN true` and one with 1+STEPS of them (distinct commands, so nothing is
# deduplicated), with the cache disabled and the base image present; per-RUN overhead = (T(1+STEPS) - T(1)) /
# STEPS, medians of RUNS builds each, the tools interleaved. Prints a markdown table.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=${WORK:-/tmp/rbuild-bench-run}
RUNS=${RUNS:-5}
STEPS=${STEPS:-20}
BASE=127.0.0.1:5000/library/busybox:1.35
DOCKER=/usr/bin/docker

"$LAB/up.sh" >/dev/null
rm -rf "$WORK"
mkdir -p "$WORK/one" "$WORK/many"
printf 'FROM %s\nRUN true 0\n' "$BASE" >"$WORK/one/Dockerfile"
{
  echo "FROM $BASE"
  for i in $(seq 0 "$STEPS"); do echo "RUN true $i"; done
} >"$WORK/many/Dockerfile"
STORE=$WORK/store
TOOLS=(rbuild buildkit)
ROOTLESS_USER=${ROOTLESS_USER:-rbuild-rootless}
RL=$WORK/rootless
rootless() {
  setpriv --reuid="$ROOTLESS_USER" --regid="$ROOTLESS_USER" --init-groups \
    env -i PATH="$PATH" HOME="$RL" XDG_DATA_HOME="$RL/data" "$RL/rbuild" "$@"
}
if id "$ROOTLESS_USER" >/dev/null 2>&1; then
  TOOLS=(rbuild rbuild-rootless buildkit)
  mkdir -p "$RL/data"
  cp "$RBUILD" "$RL/rbuild"
  chown -R "$ROOTLESS_USER:" "$RL"
fi
build() { # TOOL CTX [flags]
  local tool=$1 ctx=$2
  shift 2
  case $tool in
    rbuild) "$RBUILD" --root "$STORE" build -q "$@" "$WORK/$ctx" ;;
    rbuild-rootless) rootless build -q "$@" "$WORK/$ctx" ;;
    buildkit) $DOCKER build -q --network=host "$@" "$WORK/$ctx" ;;
  esac
}
# Bases present for every tool before timing.
for t in "${TOOLS[@]}"; do build "$t" one >/dev/null; done

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
declare -A S
for ctx in one many; do
  for _ in $(seq "$RUNS"); do
    for t in "${TOOLS[@]}"; do
      S[$t,$ctx]+="$(secs build "$t" "$ctx" --no-cache) "
    done
  done
done
echo "| tool | 1 RUN (s) | $((STEPS + 1)) RUNs (s) | per RUN (ms) |"
echo "|---|---:|---:|---:|"
declare -A PER
for t in "${TOOLS[@]}"; do
  one=$(echo "${S[$t,one]}" | tr ' ' '\n' | grep . | median)
  many=$(echo "${S[$t,many]}" | tr ' ' '\n' | grep . | median)
  PER[$t]=$(echo "($many - $one) * 1000 / $STEPS" | bc -l)
  printf '| %s | %.3f | %.3f | %.0f |\n' "$t" "$one" "$many" "${PER[$t]}"
done
printf '\nrbuild / BuildKit per RUN: %.2f×. %s; %s cores, %s; medians of %s; rbuild: %s\n' \
  "$(echo "${PER[rbuild]} / ${PER[buildkit]}" | bc -l)" "$(date -u +%FT%RZ)" "$(nproc)" "$(uname -r)" "$RUNS" "$RBUILD"
if [ -n "${PER[rbuild-rootless]:-}" ]; then
  printf 'rootless / root rbuild per RUN: %.2f×\n' "$(echo "${PER[rbuild-rootless]} / ${PER[rbuild]}" | bc -l)"
fi
