#!/bin/bash
# The bake monorepo (tests/fixtures/bake/monorepo: a base target and three services on it, each service's
# last RUN a CPU loop of WORK iterations), cold, three ways, in one run (issue #24):
#   rbuild-bake        `rbuild bake` of the default group (base, then api/worker/web at once)
#   rbuild-sequential  `rbuild build` of base, then of api, worker and web, one after another
#   buildkit           `docker build` of the same four with dockerd 20.10's BuildKit (it has no bake)
# Each round starts from a store holding only busybox:local (docker: its build cache pruned). Prints the
# medians and the ratio bake / sequential (goal <= 0.6 on 2 cores).
#
#   bench/bake.sh        # RBUILD=path (default target/release/rbuild, else debug); RUNS=3; WORK=600000
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
OUT=${OUT:-/tmp/rbuild-bench-bake}
RUNS=${RUNS:-3}
WORK=${WORK:-600000}
DOCKER=/usr/bin/docker
FIXTURE=$REPO/tests/fixtures/bake/monorepo

"$LAB/up.sh" >/dev/null
rm -rf "$OUT"
mkdir -p "$OUT/bb"
cp "$REPO"/examples/busybox/{Dockerfile,passwd,group,nsswitch.conf} "$OUT/bb/"
cp /bin/busybox "$OUT/bb/"
"$RBUILD" --root "$OUT/seed" build -q -t busybox:local "$OUT/bb" >/dev/null
# BuildKit gets the same base image, through an archive of rbuild's.
"$RBUILD" --root "$OUT/seed" save busybox:local -o "$OUT/bb.tar"
$DOCKER load -q -i "$OUT/bb.tar" >/dev/null
cp -r "$FIXTURE" "$OUT/mono"
cd "$OUT/mono"

fresh() { rm -rf "$OUT/store"; cp -a "$OUT/seed" "$OUT/store"; sync; }
timed() { # timed NAME CMD...: appends "NAME seconds" to rounds
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >>"$OUT/log" 2>&1
  t1=$(date +%s.%N)
  echo "$name $(echo "$t1 - $t0" | bc)" >>"$OUT/rounds"
}
sequential_rbuild() {
  "$RBUILD" --root "$OUT/store" build --progress plain -t base base
  for s in api worker web; do
    "$RBUILD" --root "$OUT/store" build --progress plain --build-arg WORK="$WORK" -t "mono/$s:dev" "$s"
  done
}
sequential_docker() {
  $DOCKER build --progress plain -t base base
  for s in api worker web; do
    $DOCKER build --progress plain --build-arg WORK="$WORK" -t "mono/$s:dev" "$s"
  done
}
docker_clean() {
  $DOCKER rmi -f base mono/api:dev mono/worker:dev mono/web:dev >/dev/null 2>&1 || true
  $DOCKER builder prune -af >/dev/null
}
: >"$OUT/rounds"
: >"$OUT/log"
for _ in $(seq 1 "$RUNS"); do
  fresh
  timed rbuild-bake env WORK="$WORK" "$RBUILD" --root "$OUT/store" bake -f docker-bake.hcl \
    --progress plain --set base.args.WORK=1
  fresh
  timed rbuild-sequential sequential_rbuild
  docker_clean
  timed buildkit sequential_docker
done
# The bake log must show each shared step running once (it is checked, not assumed).
fresh
WORK=1 "$RBUILD" --root "$OUT/store" bake -f docker-bake.hcl --progress plain 2>"$OUT/bake-plain.log"
shared=$(grep -c 'cache miss' "$OUT/bake-plain.log" || true)
med() { awk -v n="$1" '$1 == n {print $2}' "$OUT/rounds" | median; }
b=$(med rbuild-bake); s=$(med rbuild-sequential); k=$(med buildkit)
echo "### bake monorepo, cold (medians of $RUNS rounds; WORK=$WORK; $(basename "$(dirname "$RBUILD")") rbuild; $(nproc) cores)"
echo
echo "| run | seconds | / rbuild sequential |"
echo "|---|---:|---:|"
printf '| rbuild bake (4 targets, one process) | %.2f | %.2f |\n' "$b" "$(echo "$b / $s" | bc -l)"
printf '| rbuild build x4, sequential | %.2f | 1.00 |\n' "$s"
printf '| BuildKit docker build x4, sequential | %.2f | %.2f |\n' "$k" "$(echo "$k / $s" | bc -l)"
echo
echo "steps that ran in a bake of the fixture (14 expected: base 3, FROM base 1, the shared RUN 1, 3 per service): $shared"
