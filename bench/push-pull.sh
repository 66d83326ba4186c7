#!/bin/bash
# Push and pull of a ~500 MB-layer image (bench/big-layer), rbuild vs docker (dockerd 20.10 of ../shared/lab),
# in one run, each push to an empty registry (127.0.0.1:5002), each pull into an empty store / after rmi.
# Prints seconds and rbuild's peak RSS (GNU time).
#
#   bench/push-pull.sh        # RBUILD=path (default target/release/rbuild, else debug); RUNS=3
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=${WORK:-/tmp/rbuild-bench-pushpull}
RUNS=${RUNS:-3}
DOCKER=/usr/bin/docker
R=127.0.0.1:5002/bench/big

"$LAB/up.sh" >/dev/null
rm -rf "$WORK"
mkdir -p "$WORK"
cp -r "$HERE/big-layer" "$WORK/ctx"
"$RBUILD" --root "$WORK/store" build -q -t "$R:rbuild" "$WORK/ctx" >/dev/null
$DOCKER build -q --network=host -t "$R:docker" "$WORK/ctx" >/dev/null
# Only this tag may hold the image (a pull after `rmi` must fetch and extract), and no build cache.
id=$($DOCKER image inspect -f '{{.Id}}' "$R:docker")
for t in $($DOCKER image inspect -f '{{range .RepoTags}}{{.}} {{end}}' "$id"); do
  [ "$t" = "$R:docker" ] || $DOCKER rmi "$t" >/dev/null
done
$DOCKER builder prune -af >/dev/null

timed() { # file, command...: appends "seconds rss_kib"
  local out=$1; shift
  /usr/bin/time -f "%e %M" -o "$WORK/t" "$@" >>"$WORK/log" 2>&1
  cat "$WORK/t" >>"$out"
}
for _ in $(seq "$RUNS"); do
  "$LAB/fresh-push-registry.sh"
  timed "$WORK/rb-push" "$RBUILD" --root "$WORK/store" push "$R:rbuild"
  rm -rf "$WORK/pull-store"
  timed "$WORK/rb-pull" "$RBUILD" --root "$WORK/pull-store" pull -q "$R:rbuild"
  "$LAB/fresh-push-registry.sh"
  timed "$WORK/dk-push" $DOCKER push -q "$R:docker"
  $DOCKER rmi -f "$R:docker" >/dev/null
  if $DOCKER image inspect "$id" >/dev/null 2>&1; then
    echo "the image is still present after rmi: the pull would not fetch" >&2
    exit 1
  fi
  timed "$WORK/dk-pull" $DOCKER pull -q "$R:docker"
done
col() { awk -v c="$2" '{print $c}' "$1" | median; }
echo "| operation | rbuild s | docker s | rbuild / docker | rbuild peak RSS MiB |"
echo "|---|---:|---:|---:|---:|"
for op in push pull; do
  r=$(col "$WORK/rb-$op" 1) d=$(col "$WORK/dk-$op" 1) m=$(awk '{print $2}' "$WORK/rb-$op" | sort -n | tail -1)
  printf '| %s | %.2f | %.2f | %.2f× | %.0f |\n' "$op" "$r" "$d" "$(echo "$r / $d" | bc -l)" "$(echo "$m / 1024" | bc -l)"
done
size=$(du -sm "$WORK/store/blobs" 2>/dev/null | cut -f1)
echo
echo "$(date -u +%FT%RZ); $(nproc) cores, $(uname -r); medians of $RUNS; store blobs ${size} MB; rbuild: $RBUILD"
