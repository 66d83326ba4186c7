#!/bin/bash
# The Node/Express example (examples/node-express, issue #8) built by rbuild and by BuildKit (dockerd 20.10
# of ../shared/lab) in one run, phase by phase, from the same Debian base (127.0.0.1:5000/library/debian:bookworm).
#
#   bench/node-express.sh            # RBUILD=path/to/rbuild (default target/release/rbuild, else debug)
#
# Phases: node base (apt-get install nodejs npm), app cold (npm install), app after an index.js edit,
# production template cold (two npm ci, empty npm cache mount), production after a package.json change
# (warm npm cache mount). BuildKit gets Dockerfile.prod without its `# syntax=` line (dockerd 20.10 would try to
# pull a frontend image). Prints a markdown table with seconds and the rbuild/BuildKit ratio.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=${WORK:-/tmp/rbuild-bench-node}
DEBIAN=${DEBIAN:-127.0.0.1:5000/library/debian:bookworm}
DOCKER=(/usr/bin/docker)

"$LAB/up.sh" >/dev/null
rm -rf "$WORK"
mkdir -p "$WORK"
STORE=$WORK/store
"${DOCKER[@]}" builder prune -af >/dev/null
"${DOCKER[@]}" rmi -f bench-node:18 bench-app:1 bench-app:prod >/dev/null 2>&1 || true

CONTEXT_ONLY=$WORK/base "$REPO/examples/node-express/make-base.sh"
for t in rbuild buildkit; do
  mkdir -p "$WORK/app-$t"
  cp -r "$REPO/examples/node-express/." "$WORK/app-$t/"
  rm -rf "$WORK/app-$t/base" "$WORK/app-$t/make-base.sh"
done
sed -i '1{/^# syntax=/d}' "$WORK/app-buildkit/Dockerfile.prod"

rb() { "$RBUILD" --root "$STORE" build --progress plain "$@" >>"$WORK/rbuild.log" 2>&1; }
bk() { "${DOCKER[@]}" build --network=host --progress plain "$@" >>"$WORK/buildkit.log" 2>&1; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@"; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

declare -A T
phase() { # name, rbuild args..., --, buildkit args...
  local name=$1; shift
  local ra=() ba=()
  while [ "$1" != -- ]; do ra+=("$1"); shift; done
  shift
  ba=("$@")
  T[$name,rbuild]=$(secs rb "${ra[@]}")
  T[$name,buildkit]=$(secs bk "${ba[@]}")
  echo "$name: rbuild ${T[$name,rbuild]} s, BuildKit ${T[$name,buildkit]} s" >&2
}

A=$WORK/app-rbuild B=$WORK/app-buildkit
phase "node base (apt-get install nodejs npm)" \
  --build-arg "DEBIAN=$DEBIAN" -t bench-node:18 "$WORK/base" -- \
  --build-arg "DEBIAN=$DEBIAN" -t bench-node:18 "$WORK/base"
phase "app, cold (npm install)" --build-arg BASE=bench-node:18 -t bench-app:1 "$A" -- \
  --build-arg BASE=bench-node:18 -t bench-app:1 "$B"
for d in "$A" "$B"; do sed -i '1i // edited' "$d/index.js"; done
phase "app, after an index.js edit" --build-arg BASE=bench-node:18 -t bench-app:1 "$A" -- \
  --build-arg BASE=bench-node:18 -t bench-app:1 "$B"
P=(--build-arg NODE_IMAGE=bench-node --build-arg NODE_VERSION=18 -t bench-app:prod)
phase "production, cold (npm ci x2, empty npm cache)" "${P[@]}" -f "$A/Dockerfile.prod" "$A" -- \
  "${P[@]}" -f "$B/Dockerfile.prod" "$B"
for d in "$A" "$B"; do sed -i 's/"version": "1.0.0"/"version": "1.0.1"/' "$d/package.json"; done
phase "production, after a package.json change (warm npm cache)" "${P[@]}" -f "$A/Dockerfile.prod" "$A" -- \
  "${P[@]}" -f "$B/Dockerfile.prod" "$B"

echo
echo "| phase | rbuild s | BuildKit s | rbuild / BuildKit |"
echo "|---|---:|---:|---:|"
for name in "node base (apt-get install nodejs npm)" "app, cold (npm install)" "app, after an index.js edit" \
  "production, cold (npm ci x2, empty npm cache)" "production, after a package.json change (warm npm cache)"; do
  r=${T[$name,rbuild]} b=${T[$name,buildkit]}
  printf '| %s | %.2f | %.2f | %.2f× |\n' "$name" "$r" "$b" "$(echo "$r / $b" | bc -l)"
done
echo
echo "$(date -u +%FT%RZ); $(nproc) cores, $(uname -r); rbuild: $RBUILD; logs in $WORK/{rbuild,buildkit}.log"
