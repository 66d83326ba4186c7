#!/bin/bash
# Concurrent identical builds on one cold store (issue #19, item 5): N rbuild processes build the
# deps-then-src context at once. Prints wall clock and CPU time (user+sys of every process) and how many
# times each RUN step executed. With the per-cache-key lock each shared step runs once; without it, N times.
#
#   bench/concurrent.sh                       # 8 builds, target/debug/rbuild (or RBUILD=…)
#   N=8 RBUILD=/path/to/old/rbuild bench/concurrent.sh
#
# The base is busybox built from Debian's busybox-static by rbuild itself (no registry needed); the store
# holds only that base when the N builds start.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
RBUILD=${RBUILD:-$REPO/target/release/rbuild}
[ -x "$RBUILD" ] || RBUILD=$REPO/target/debug/rbuild
N=${N:-8}
WORK=$(mktemp -d /tmp/rbuild-concurrent.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$WORK/busybox" "$WORK/ctx"
cp "$REPO"/examples/busybox/{Dockerfile,passwd,group,nsswitch.conf} /bin/busybox "$WORK/busybox/"
"$RBUILD" --root "$WORK/store" build -q -t busybox:local "$WORK/busybox" >/dev/null

cp -r "$REPO/bench/deps-then-src/." "$WORK/ctx/"
sh "$WORK/ctx/gen.sh" >/dev/null
sed -i 's|^FROM .*|FROM busybox:local|' "$WORK/ctx/Dockerfile"

# CPU time of the builds and everything they start (sandboxes included) from a cgroup v1 cpuacct group of
# their own: rusage misses processes that are not waited for by their parent.
CG=/sys/fs/cgroup/cpuacct/rbuild-concurrent-$$
mkdir "$CG"
trap 'rmdir "$CG" 2>/dev/null; rm -rf "$WORK"' EXIT
TIMEFORMAT='%R %U %S'
times=$( { time (
  echo $BASHPID > "$CG/cgroup.procs"
  for i in $(seq 1 "$N"); do
    "$RBUILD" --root "$WORK/store" build --progress plain -t "app:$i" "$WORK/ctx" >"$WORK/log.$i" 2>&1 &
  done
  fail=0
  for job in $(jobs -p); do wait "$job" || fail=1; done
  exit $fail
) ; } 2>&1 )
read -r wall user sys <<<"$times"
deps=$(grep -h -A3 'RUN set -e; mkdir -p /app/node_modules' "$WORK"/log.* | grep -c ' DONE ' || true)
src=$(grep -h -A3 'RUN find /app/src' "$WORK"/log.* | grep -c ' DONE ' || true)
echo "rbuild: $RBUILD"
cpu=$(awk '{printf "%.2f", $1 / 1e9}' "$CG/cpuacct.usage")
echo "$N concurrent builds of deps-then-src on a cold store: wall ${wall}s, cpu ${cpu}s (cpuacct; rusage of waited processes: user ${user}s, sys ${sys}s)"
echo "deps RUN executed $deps times, src RUN executed $src times (of $N builds)"
for i in $(seq 1 "$N"); do
  "$RBUILD" --root "$WORK/store" run "app:$i" >/dev/null || { echo "app:$i does not run" >&2; exit 1; }
done
