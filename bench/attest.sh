#!/bin/bash
# Cost of attestations (issue #21): SBOM + provenance (mode=max) on the node base (Debian bookworm +
# apt-get install nodejs npm) and on the Node/Express app (examples/node-express), against the build itself.
#
#   bench/attest.sh          # RBUILD=path (default target/release/rbuild, else debug); RUNS=3 cached rounds
#
# For each image: the cold build without attestations (wall), the `attesting image` step of a cold build
# with `--sbom --provenance=mode=max` (its DONE time: scan + SPDX + provenance + store), a cached build
# without and with attestations (wall, medians; a rebuild of the same image reuses its stored SBOM), peak RSS of the cached build with them, the size of both
# documents, the packages found; and, for reference on the same tree, `dpkg-query -W` and `find | wc -l`.
# There is no BuildKit column: its SBOM comes from a scanner image (docker/buildkit-syft-scanner) this
# offline lab cannot pull. Prints a markdown table.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=${WORK:-/tmp/rbuild-bench-attest}
RUNS=${RUNS:-3}
rm -rf "$WORK"
mkdir -p "$WORK"
STORE=$WORK/store
export NO_COLOR=1
rb() { "$RBUILD" --root "$STORE" build --progress plain "$@" 2>&1; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
ATT=(--sbom --provenance=mode=max)

RBUILD=$RBUILD RBUILD_ROOT=$STORE "$REPO/scripts/make-debian.sh" debian:bookworm >/dev/null 2>&1
CONTEXT_ONLY=$WORK/base "$REPO/examples/node-express/make-base.sh" >/dev/null
mkdir -p "$WORK/app"
cp -r "$REPO/examples/node-express/." "$WORK/app/"
rm -rf "$WORK/app/base" "$WORK/app/make-base.sh"

# image name, context, extra args
measure() {
  local name=$1 ctx=$2; shift 2
  local cold attest_step cached_plain cached_att rss sbom prov pkgs dpkg_s find_s files
  cold=$(secs rb --no-cache -t "$name" "$@" "$ctx")
  attest_step=$(rb --no-cache -t "$name" "$@" "${ATT[@]}" "$ctx" |
    awk '/ attesting image$/ {n=$1} n && $1==n && / DONE / {sub(/s$/,"",$3); print $3}')
  : >"$WORK/cached"
  for _ in $(seq 1 "$RUNS"); do
    echo "$(secs rb -t "$name" "$@" "$ctx") $(secs rb -t "$name" "$@" "${ATT[@]}" "$ctx")" >>"$WORK/cached"
  done
  cached_plain=$(awk '{print $1}' "$WORK/cached" | median)
  cached_att=$(awk '{print $2}' "$WORK/cached" | median)
  /usr/bin/time -f %M -o "$WORK/rss" "$RBUILD" --root "$STORE" build -q -t "$name" "$@" "${ATT[@]}" "$ctx" >/dev/null 2>&1
  rss=$(( $(cat "$WORK/rss") / 1024 ))
  sbom=$("$RBUILD" --root "$STORE" inspect --sbom "$name" | wc -c)
  prov=$("$RBUILD" --root "$STORE" inspect --provenance "$name" | wc -c)
  pkgs=$("$RBUILD" --root "$STORE" inspect --sbom "$name" | jq -s '.[0].packages | length - 1')
  rm -rf "$WORK/tree"
  "$RBUILD" --root "$STORE" build -q "$@" -o "type=local,dest=$WORK/tree" "$ctx" >/dev/null 2>&1
  sync
  dpkg_s=$(secs dpkg-query --admindir="$WORK/tree/var/lib/dpkg" -W)
  find_s=$(secs find "$WORK/tree")
  files=$(find "$WORK/tree" | wc -l)
  echo "| $name | $cold | $attest_step | $(echo "scale=1; 100 * $attest_step / $cold" | bc)% | $cached_plain | $cached_att | $rss | $pkgs | $sbom | $prov | $dpkg_s | $find_s ($files files) |"
}

echo "### SBOM + provenance (mode=max) cost, rbuild $("$RBUILD" --version 2>/dev/null || echo "$RBUILD"), $(nproc) cores"
echo
echo "| image | cold build (s) | attesting step (s) | of cold | cached build (s) | cached + attestations (s) | peak RSS cached + att. (MiB) | packages | SBOM bytes | provenance bytes | dpkg-query -W (s) | find (s) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
measure node:18 "$WORK/base"
measure app:1 "$WORK/app" --build-arg BASE=node:18
