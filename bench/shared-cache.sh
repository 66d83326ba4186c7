#!/bin/bash
# The shared cache on a fresh machine: rbuild (--cache-to type=registry,mode=max / --cache-from) against
# BuildKit of dockerd 20.10 (its frontend there can import only an inline cache: BUILDKIT_INLINE_CACHE=1 +
# --cache-from), in one run, for the deps-then-src scenario (bench/deps-then-src) and the Node/Express app
# (examples/node-express, npm install from the npm registry, on a node base built once and pushed).
#
#   bench/shared-cache.sh     # RBUILD=path (default target/release/rbuild, else debug); RUNS=3; SCENARIOS
#
# Per scenario and run, every store and BuildKit's cache start empty (docker: builder prune + rmi of the
# images and the base). Measured: cold build without any cache; build + mode=max export (and the export
# alone, as rbuild reports it); cold build on a fresh store with the cache imported; the same with --push to
# the cache's registry instead of a local image (rbuild only: docker 20.10 cannot build-and-push); bytes the
# importing build fetched from the registries (from their logs). Medians of RUNS.
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=${WORK:-/tmp/rbuild-bench-shared-cache}
RUNS=${RUNS:-3}
SCENARIOS=${SCENARIOS:-"deps-then-src node-app"}
DOCKER=/usr/bin/docker
REG=127.0.0.1:5002
LOGS=(/tmp/lab/logs/registry-5000.log /tmp/lab/logs/registry-5002.log)

"$LAB/up.sh" >/dev/null
rm -rf "$WORK"
mkdir -p "$WORK"

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >>"$WORK/log" 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
# Bytes served for blob GETs by the lab registries since the log sizes in $1.
mark() { for l in "${LOGS[@]}"; do stat -c %s "$l"; done | paste -sd' '; }
fetched() {
  local -a from; read -r -a from <<<"$1"
  local i=0 total=0 n
  for l in "${LOGS[@]}"; do
    # The access-log lines: "GET /v2/REPO/blobs/sha256:… HTTP/1.1" 200 BYTES
    n=$(tail -c +"$((from[i] + 1))" "$l" | sed -n 's|.*"GET /v2/[^ ]*/blobs/sha256:[0-9a-f]* HTTP/[0-9.]*" 200 \([0-9]*\).*|\1|p' \
      | paste -sd+ | bc)
    total=$((total + ${n:-0})); i=$((i + 1))
  done
  echo "$total"
}

prepare() { # scenario -> sets CTX, ARGS, BASE
  case $1 in
    deps-then-src)
      CTX=$WORK/ctx/deps-then-src
      mkdir -p "$WORK/ctx"; cp -r "$HERE/deps-then-src" "$CTX"; "$CTX/gen.sh" >/dev/null
      ARGS=(); BASE=127.0.0.1:5000/library/debian:bookworm ;;
    node-app)
      BASE=127.0.0.1:5000/bench/node:18
      if ! curl -sf -o /dev/null "http://127.0.0.1:5000/v2/bench/node/manifests/18"; then
        DEBIAN=127.0.0.1:5000/library/debian:bookworm RBUILD="$RBUILD" RBUILD_ROOT="$WORK/base-store" \
          RBUILD_FLAGS=--push "$REPO/examples/node-express/make-base.sh" "$BASE" >>"$WORK/log" 2>&1
        rm -rf "$WORK/base-store"
      fi
      CTX=$WORK/ctx/node-app
      mkdir -p "$CTX"; cp -r "$REPO/examples/node-express/." "$CTX/"; rm -rf "$CTX/base" "$CTX/make-base.sh"
      ARGS=(--build-arg "BASE=$BASE") ;;
  esac
}

docker_clean() { # forget everything: BuildKit's cache and every image (other images share the base's layers)
  $DOCKER rmi -f "$@" "$BASE" >/dev/null 2>&1 || true
  $DOCKER image prune -af >/dev/null
  $DOCKER builder prune -af >/dev/null
}

declare -A V
add() { echo "$2" >>"$WORK/$1"; }
for s in $SCENARIOS; do
  prepare "$s"
  for _ in $(seq "$RUNS"); do
    "$LAB/fresh-push-registry.sh"
    C=$REG/cache/$s:main
    # rbuild: cold, then cold + export, then a fresh store importing it (local image, then push).
    rm -rf "$WORK/s"
    add "$s.rb.cold" "$(secs "$RBUILD" --root "$WORK/s" build "${ARGS[@]}" -t app "$CTX")"
    rm -rf "$WORK/s"
    add "$s.rb.export" "$(secs "$RBUILD" --root "$WORK/s" build "${ARGS[@]}" -t app \
      --cache-to "type=registry,ref=$C,mode=max" "$CTX")"
    add "$s.rb.export-only" "$(grep 'exported cache to' "$WORK/log" | tail -1 | sed 's/.* in \([0-9.]*\)s$/\1/')"
    rm -rf "$WORK/s"; m=$(mark)
    add "$s.rb.import" "$(secs "$RBUILD" --root "$WORK/s" build "${ARGS[@]}" -t app --cache-from "$C" "$CTX")"
    add "$s.rb.import-bytes" "$(fetched "$m")"
    rm -rf "$WORK/s"; m=$(mark)
    add "$s.rb.import-push" "$(secs "$RBUILD" --root "$WORK/s" build "${ARGS[@]}" -t "$REG/app/$s:rb" --push \
      --cache-from "$C" "$CTX")"
    add "$s.rb.import-push-bytes" "$(fetched "$m")"
    rm -rf "$WORK/s"
    # BuildKit: cold, then cold with an inline cache (+ push, not timed), then a clean daemon importing it.
    docker_clean "$REG/dk/$s:1" "$REG/dk/$s:2"
    add "$s.bk.cold" "$(secs $DOCKER build --network=host "${ARGS[@]}" -t "$REG/dk/$s:0" "$CTX")"
    docker_clean "$REG/dk/$s:0"
    add "$s.bk.export" "$(secs $DOCKER build --network=host "${ARGS[@]}" --build-arg BUILDKIT_INLINE_CACHE=1 \
      -t "$REG/dk/$s:1" "$CTX")"
    $DOCKER push -q "$REG/dk/$s:1" >>"$WORK/log" 2>&1
    docker_clean "$REG/dk/$s:1"; m=$(mark)
    add "$s.bk.import" "$(secs $DOCKER build --network=host "${ARGS[@]}" --cache-from "$REG/dk/$s:1" \
      -t "$REG/dk/$s:2" "$CTX")"
    add "$s.bk.import-bytes" "$(fetched "$m")"
    if grep -q "CACHED" <(tail -40 "$WORK/log"); then :; else echo "BuildKit did not use its cache ($s)" >&2; fi
  done
done

med() { median <"$WORK/$1"; }
mb() { echo "scale=1; $(med "$1") / 1048576" | bc; }
ratio() { printf '%.2f×' "$(echo "$1 / $2" | bc -l)"; }
echo "| scenario | step | rbuild s | BuildKit s | rbuild / BuildKit |"
echo "|---|---|---:|---:|---:|"
for s in $SCENARIOS; do
  for step in cold export import; do
    r=$(med "$s.rb.$step") b=$(med "$s.bk.$step")
    case $step in cold) what="cold, no cache" ;; export) what="cold + cache export (rbuild mode=max, BuildKit inline)" ;;
      import) what="fresh store, cache imported, local image" ;; esac
    printf '| %s | %s | %.2f | %.2f | %s |\n' "$s" "$what" "$r" "$b" "$(ratio "$r" "$b")"
  done
  printf '| %s | fresh store, cache imported, --push to the cache registry | %.2f | — | — |\n' "$s" "$(med "$s.rb.import-push")"
done
echo
echo "| scenario | rbuild export alone s | export / build | rbuild fetched MB (local image) | rbuild fetched MB (--push) | BuildKit fetched MB |"
echo "|---|---:|---:|---:|---:|---:|"
for s in $SCENARIOS; do
  e=$(med "$s.rb.export-only") t=$(med "$s.rb.export")
  printf '| %s | %.2f | %.2f | %s | %s | %s |\n' "$s" "$e" "$(echo "$e / ($t - $e)" | bc -l)" \
    "$(mb "$s.rb.import-bytes")" "$(mb "$s.rb.import-push-bytes")" "$(mb "$s.bk.import-bytes")"
done
echo
echo "$(date -u +%FT%RZ); $(nproc) cores, $(uname -r); medians of $RUNS; rbuild: $RBUILD; log: $WORK/log"
