#!/bin/bash
# Export figures (issue #7), rbuild vs BuildKit in one run:
#  1. big-layer (one RUN writing ~500 MB of semi-compressible data): `rbuild build --push` (wall time, peak RSS)
#     against BuildKit's `docker build` + `docker push`, each push to an empty registry (127.0.0.1:5002).
#  2. layer export throughput on the same kind of data: oci's writer (examples/layer_throughput.rs) against
#     `tar | pigz -p N` and `tar | zstd -T N` as the physical reference.
#  3. interop: `-o type=docker` of the image loaded with `docker load` into dockerd 20.10 and run.
#
#   bench/export.sh          # RBUILD=path (default target/release/rbuild, else debug); RUNS=3 rounds
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=${WORK:-/tmp/rbuild-bench-export}
DOCKER=/usr/bin/docker
CORES=$(nproc)

for tool in pigz zstd bc; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install $tool" >&2; exit 1; }
done
"$LAB/up.sh" >/dev/null
rm -rf "$WORK"
mkdir -p "$WORK"
cp -r "$HERE/big-layer" "$WORK/ctx"
STORE=$WORK/store

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >>"$WORK/log" 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

# 1. build + push, both from a cold cache with the base image already pulled once; RUNS rounds, one of
#    each tool per round (so machine load drifts alike for both), medians.
RUNS=${RUNS:-3}
mkdir -p "$WORK/base" "$WORK/hello"
echo "FROM 127.0.0.1:5000/library/busybox:1.35" >"$WORK/base/Dockerfile"
$DOCKER pull -q 127.0.0.1:5000/library/busybox:1.35 >/dev/null
: >"$WORK/rounds"
for round in $(seq 1 "$RUNS"); do
  rm -rf "$STORE"
  "$RBUILD" --root "$STORE" build -q "$WORK/base" >/dev/null
  "$LAB/fresh-push-registry.sh"
  sync; sleep 2
  RBUILD_LOG=exec=debug,rbuild::worker=debug NO_COLOR=1 /usr/bin/time -f "%e %M" -o "$WORK/rbuild.time" "$RBUILD" --root "$STORE" \
    build --progress plain -t 127.0.0.1:5002/bench/big:rbuild --push "$WORK/ctx" >"$WORK/rbuild.log" 2>&1
  cat "$WORK/rbuild.log" >>"$WORK/log"
  read -r rb_wall rb_rss <"$WORK/rbuild.time"
  # (rbuild::worker: the log target of builds before the crate split, to compare old binaries)
  early=$(grep -o 'compressed=[0-9]* used=[0-9]*' "$WORK/rbuild.log" | head -1 || true)
  $DOCKER builder prune -af >/dev/null
  $DOCKER rmi -f 127.0.0.1:5002/bench/big:buildkit >/dev/null 2>&1 || true
  sync; sleep 2
  bk_build=$(secs $DOCKER build --network=host -t 127.0.0.1:5002/bench/big:buildkit "$WORK/ctx")
  "$LAB/fresh-push-registry.sh"
  bk_push=$(secs $DOCKER push 127.0.0.1:5002/bench/big:buildkit)
  echo "$rb_wall $rb_rss $bk_build $bk_push ${early:-none}" >>"$WORK/rounds"
done
med() { awk -v c="$1" '{print $c}' "$WORK/rounds" | median; }
rb_wall=$(med 1); rb_rss=$(awk '{print $2}' "$WORK/rounds" | sort -n | tail -1)
bk_build=$(med 3); bk_push=$(med 4)
bk_sum=$(awk '{print $3 + $4}' "$WORK/rounds" | median)

echo "### big-layer: build + push to an empty registry (medians of $RUNS rounds)"
echo
echo "| tool | seconds | peak RSS MiB |"
echo "|---|---:|---:|"
printf '| rbuild build --push | %.2f | %.0f |\n' "$rb_wall" "$(echo "$rb_rss / 1024" | bc -l)"
printf '| BuildKit docker build (%.2f) + docker push (%.2f) | %.2f | (daemon) |\n' "$bk_build" "$bk_push" "$bk_sum"
printf '\nrbuild / BuildKit: %.2f× (target ≤ 0.5×)\n\n' "$(echo "$rb_wall / $bk_sum" | bc -l)"
echo "Rounds (rbuild s, rbuild RSS KiB, BuildKit build s, docker push s, gzip members compressed during the RUN / used):"
sed 's/^/    /' "$WORK/rounds"
echo

# 2. throughput on the same data, generated on the host the same way.
mkdir -p "$WORK/data"
for i in $(seq 0 49); do
  head -c 4500000 /dev/urandom | base64 >"$WORK/data/text$i.b64"
  head -c 4000000 /dev/zero >"$WORK/data/zero$i.bin"
done
mb=$(du -sbm "$WORK/data" | cut -f1)
echo "### layer export throughput ($mb MB of files, $CORES cores)"
echo
(cd "$REPO" && cargo run -q --release -p oci --example layer_throughput -- "$WORK/data")
echo
echo "| reference | seconds | MB/s |"
echo "|---|---:|---:|"
for c in "pigz -p 1" "pigz -p $CORES" "zstd -q -T1" "zstd -q -T$CORES"; do
  t=$(secs sh -c "tar -C '$WORK/data' -cf - . | $c -c >/dev/null")
  printf '| tar \\| %s | %.2f | %.0f |\n' "$c" "$t" "$(echo "$mb / $t" | bc -l)"
done
echo

# 3. docker load of the docker-format output, and docker run of it.
cat >"$WORK/hello/Dockerfile" <<'EOF2'
FROM 127.0.0.1:5000/library/busybox:1.35
RUN echo "hello from an rbuild image" > /msg
CMD ["cat", "/msg"]
EOF2
"$RBUILD" --root "$STORE" build -q -t bench/hello:docker -o "type=docker,dest=$WORK/hello.tar" "$WORK/hello" >/dev/null
$DOCKER load -i "$WORK/hello.tar" >>"$WORK/log"
out=$($DOCKER run --rm bench/hello:docker)
echo "docker load + docker run of rbuild's type=docker output: \"$out\""
[ "$out" = "hello from an rbuild image" ]
echo
echo "$(date -u +%FT%RZ); $CORES cores, $(uname -r); rbuild: $RBUILD; log in $WORK/log"
