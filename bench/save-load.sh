#!/bin/bash
# save and load of the node base image (examples/node-express/make-base.sh, ~250 MB unpacked), rbuild vs
# docker (dockerd 20.10 of ../shared/lab) and skopeo, in one run (issue #22):
#   save: `rbuild save node:18 -o F` vs `docker save -o F node:18`
#   load: `rbuild load -i F` into an empty store vs `docker load -i F` after `docker rmi`, each tool loading
#         its own save (docker's archive has plain layers, rbuild's keeps the store's gzip ones), and
#         rbuild loading docker's archive (what a user moving an image from docker does)
#   reference: `skopeo copy docker-archive:F oci:DIR` of the same archive.
# Prints medians of seconds and rbuild's peak RSS (GNU time).
#
#   bench/save-load.sh        # RBUILD=path (default target/release/rbuild, else debug); RUNS=3
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=${WORK:-/tmp/rbuild-bench-saveload}
RUNS=${RUNS:-3}
DOCKER=/usr/bin/docker

"$LAB/up.sh" >/dev/null
rm -rf "$WORK"
mkdir -p "$WORK"
BASE=$WORK/base
RBUILD="$RBUILD" RBUILD_ROOT=$BASE "$REPO/scripts/make-debian.sh" >/dev/null 2>&1
RBUILD="$RBUILD" RBUILD_ROOT=$BASE "$REPO/examples/node-express/make-base.sh" >/dev/null 2>&1
# docker gets the same image through an archive of rbuild's.
"$RBUILD" --root "$BASE" save node:18 -o "$WORK/seed.tar"
$DOCKER rmi -f node:18 >/dev/null 2>&1 || true
$DOCKER load -q -i "$WORK/seed.tar" >/dev/null

timed() { # timed NAME CMD...: appends "NAME seconds rss_kib" to rounds
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$WORK/t" "$@" >>"$WORK/log" 2>&1
  echo "$name $(cat "$WORK/t")" >>"$WORK/rounds"
}
: >"$WORK/rounds"
for _ in $(seq 1 "$RUNS"); do
  rm -f "$WORK"/*.out.tar; rm -rf "$WORK/fresh" "$WORK/fresh2" "$WORK/oci"
  timed rbuild-save "$RBUILD" --root "$BASE" save node:18 -o "$WORK/rbuild.out.tar"
  timed docker-save $DOCKER save -o "$WORK/docker.out.tar" node:18
  timed rbuild-load "$RBUILD" --root "$WORK/fresh" load -i "$WORK/rbuild.out.tar"
  # rbuild unpacks layers when an image is first used, docker at load: the first run adds that.
  timed rbuild-first-run "$RBUILD" --root "$WORK/fresh" run --network none node:18 true
  timed rbuild-load-docker-archive "$RBUILD" --root "$WORK/fresh2" load -i "$WORK/docker.out.tar"
  $DOCKER rmi -f node:18 >/dev/null
  timed docker-load $DOCKER load -q -i "$WORK/docker.out.tar"
  timed skopeo-copy skopeo copy -q "docker-archive:$WORK/docker.out.tar" "oci:$WORK/oci:node"
done
med() { awk -v n="$1" '$1 == n {print $2}' "$WORK/rounds" | median; }
rss() { awk -v n="$1" '$1 == n {print $3}' "$WORK/rounds" | sort -n | tail -1; }
mb() { echo "$(( $(stat -c %s "$1") / 1000000 ))"; }
echo "### save / load of node:18 (medians of $RUNS rounds; $(basename "$(dirname "$RBUILD")") rbuild)"
echo
echo "archives: rbuild save $(mb "$WORK/rbuild.out.tar") MB (gzip layers), docker save $(mb "$WORK/docker.out.tar") MB (plain layers)"
echo
echo "| step | seconds | peak RSS MiB |"
echo "|---|---:|---:|"
for n in rbuild-save docker-save rbuild-load rbuild-first-run rbuild-load-docker-archive docker-load skopeo-copy; do
  printf '| %s | %.2f | %s |\n' "$n" "$(med "$n")" "$(case $n in rbuild*) echo $(( $(rss "$n") / 1024 ));; *) echo "(client)";; esac)"
done
printf '\nrbuild save / docker save: %.2f×; rbuild load / docker load: %.2f× (its own archive; %.2f× with the\nunpacking of the first run), %.2f× (docker'"'"'s archive); target ≤ 0.5×, RSS ≤ 64 MiB\n' \
  "$(echo "$(med rbuild-save) / $(med docker-save)" | bc -l)" \
  "$(echo "$(med rbuild-load) / $(med docker-load)" | bc -l)" \
  "$(echo "($(med rbuild-load) + $(med rbuild-first-run)) / $(med docker-load)" | bc -l)" \
  "$(echo "$(med rbuild-load-docker-archive) / $(med docker-load)" | bc -l)"
