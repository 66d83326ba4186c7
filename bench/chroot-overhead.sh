#!/bin/bash
# Per-RUN cost of --isolation=chroot against the default isolation, on a small and a big base image.
#
#   bench/chroot-overhead.sh        # RUNS=3 STEPS=5; RBUILD=path (default target/release, else debug)
#
# Bases, both built locally with rbuild: busybox:local (examples/busybox, ~2 MB, ~400 paths) and big:local
# (busybox plus a copy of this host's /usr/share: BIG_SRC). For each base and isolation, a Dockerfile with one
# `RUN true` and one with 1+STEPS of them are built with --no-cache; per-RUN cost = (T(1+STEPS) - T(1)) /
# STEPS, medians of RUNS builds. Prints a markdown table. Needs root (the default isolation).
set -euo pipefail
cd "$(dirname "$0")/.."
RBUILD=${RBUILD:-$( [ -x target/release/rbuild ] && echo target/release/rbuild || echo target/debug/rbuild )}
WORK=${WORK:-/tmp/rbuild-bench-chroot}
RUNS=${RUNS:-3}
STEPS=${STEPS:-5}
BIG_SRC=${BIG_SRC:-/usr/share}
STORE=$WORK/store
rb() { "$RBUILD" --root "$STORE" "$@"; }

rm -rf "$WORK"
mkdir -p "$WORK/busybox" "$WORK/big"
cp examples/busybox/{Dockerfile,passwd,group,nsswitch.conf} "$WORK/busybox/"
cp /bin/busybox "$WORK/busybox/"
rb build -q -t busybox:local "$WORK/busybox" >/dev/null
cp -a "$BIG_SRC" "$WORK/big/tree"
printf 'FROM busybox:local\nCOPY tree /big\n' >"$WORK/big/Dockerfile"
rb build -q -t big:local "$WORK/big" >/dev/null
paths() { rb run "$1" sh -c 'find / -xdev | wc -l'; }
size() { rb run "$1" sh -c 'du -sm / 2>/dev/null | cut -f1'; }

for base in busybox big; do
  mkdir -p "$WORK/$base-one" "$WORK/$base-many"
  printf 'FROM %s:local\nRUN true 0\n' "$base" >"$WORK/$base-one/Dockerfile"
  {
    echo "FROM $base:local"
    for i in $(seq 0 "$STEPS"); do echo "RUN true $i"; done
  } >"$WORK/$base-many/Dockerfile"
done
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "| base | paths | MB | isolation | 1 RUN (s) | $((STEPS + 1)) RUNs (s) | per RUN (ms) |"
echo "|---|---:|---:|---|---:|---:|---:|"
for base in busybox big; do
  n=$(paths "$base:local"); mb=$(size "$base:local")
  for iso in default chroot; do
    one=""; many=""
    for _ in $(seq "$RUNS"); do
      one+="$(secs rb build -q --no-cache --isolation="$iso" "$WORK/$base-one") "
      many+="$(secs rb build -q --no-cache --isolation="$iso" "$WORK/$base-many") "
    done
    o=$(echo "$one" | tr ' ' '\n' | grep . | median)
    m=$(echo "$many" | tr ' ' '\n' | grep . | median)
    printf '| %s | %s | %s | %s | %.3f | %.3f | %.0f |\n' "$base" "$n" "$mb" "$iso" "$o" "$m" \
      "$(echo "($m - $o) * 1000 / $STEPS" | bc -l)"
  done
done
printf '\n%s; %s cores, %s; medians of %s; rbuild: %s; store on %s\n' "$(date -u +%FT%RZ)" "$(nproc)" \
  "$(uname -r)" "$RUNS" "$RBUILD" "$(df -T "$WORK" | awk 'NR==2 {print $2}')"
