#!/bin/bash
# Per-RUN sandbox overhead: `RUN true` steps, rbuild vs BuildKit (dockerd 20.10 of ../shared/lab), one run.
#
#   bench/run-overhead.sh           # RUNS=5 STEPS=20; RBUILD=path (default target/release, else debug)
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
# Bases present for both tools before timing.
"$RBUILD" --root "$STORE" build -q "$WORK/one" >/dev/null
$DOCKER build -q --network=host "$WORK/one" >/dev/null

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
declare -A S
for ctx in one many; do
  for _ in $(seq "$RUNS"); do
    S[rbuild,$ctx]+="$(secs "$RBUILD" --root "$STORE" build -q --no-cache "$WORK/$ctx") "
    S[buildkit,$ctx]+="$(secs $DOCKER build -q --no-cache --network=host "$WORK/$ctx") "
  done
done
echo "| tool | 1 RUN (s) | $((STEPS + 1)) RUNs (s) | per RUN (ms) |"
echo "|---|---:|---:|---:|"
declare -A PER
for t in rbuild buildkit; do
  one=$(echo "${S[$t,one]}" | tr ' ' '\n' | grep . | median)
  many=$(echo "${S[$t,many]}" | tr ' ' '\n' | grep . | median)
  PER[$t]=$(echo "($many - $one) * 1000 / $STEPS" | bc -l)
  printf '| %s | %.3f | %.3f | %.0f |\n' "$t" "$one" "$many" "${PER[$t]}"
done
printf '\nrbuild / BuildKit per RUN: %.2f×. %s; %s cores, %s; medians of %s; rbuild: %s\n' \
  "$(echo "${PER[rbuild]} / ${PER[buildkit]}" | bc -l)" "$(date -u +%FT%RZ)" "$(nproc)" "$(uname -r)" "$RUNS" "$RBUILD"
