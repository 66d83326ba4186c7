#!/bin/bash
# A registry frozen with SIGSTOP (issue #19, item 6): how long `rbuild pull` and `rbuild push` take to fail,
# and what they say. Uses the real CNCF registry (docker-registry) on a free loopback port and the default
# stall timeout (30 s; RBUILD_REGISTRY_STALL_TIMEOUT overrides it) unless STALL is set.
#
#   bench/stalled-registry.sh                 # target/debug/rbuild (or RBUILD=…)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
RBUILD=${RBUILD:-$REPO/target/release/rbuild}
[ -x "$RBUILD" ] || RBUILD=$REPO/target/debug/rbuild
[ -n "${STALL:-}" ] && export RBUILD_REGISTRY_STALL_TIMEOUT=$STALL
WORK=$(mktemp -d /tmp/rbuild-stalled.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/data
http:
  addr: 127.0.0.1:$PORT
EOF
/usr/bin/docker-registry serve "$WORK/config.yml" 2>"$WORK/registry.log" &
REG=$!
trap 'rc=$?; kill -CONT $REG 2>/dev/null; kill $REG 2>/dev/null; wait $REG 2>/dev/null; rm -rf "$WORK"; exit $rc' EXIT
until curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null; do sleep 0.1; done

mkdir -p "$WORK/busybox"
cp "$REPO"/examples/busybox/{Dockerfile,passwd,group,nsswitch.conf} /bin/busybox "$WORK/busybox/"
IMAGE=127.0.0.1:$PORT/stall/busybox:1
"$RBUILD" --root "$WORK/store" build -q -t "$IMAGE" --push "$WORK/busybox" >/dev/null

measure() {
  local what=$1; shift
  local start end rc=0
  start=$(date +%s%N)
  "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
  end=$(date +%s%N)
  echo "$what against a frozen registry: exit $rc after $(awk "BEGIN {printf \"%.1f\", ($end - $start) / 1e9}") s"
  grep -v ' WARN ' "$WORK/err" | sed 's/\x1b\[[0-9;]*m//g' | grep -v '^\s*$' | tail -2 | cut -c1-300
}

# A second tag of the same image, pushed while the registry is frozen.
"$RBUILD" --root "$WORK/store" build -q -t "127.0.0.1:$PORT/stall/other:1" "$WORK/busybox" >/dev/null
kill -STOP $REG
echo "rbuild: $RBUILD (stall timeout ${RBUILD_REGISTRY_STALL_TIMEOUT:-30 (default)} s)"
measure "rbuild pull" "$RBUILD" --root "$WORK/store2" pull "$IMAGE"
measure "rbuild push" "$RBUILD" --root "$WORK/store" push "127.0.0.1:$PORT/stall/other:1"
