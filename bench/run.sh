#!/bin/bash
# Side-by-side benchmark: rbuild vs BuildKit (dockerd 20.10) vs buildah, in ONE run on one machine.
#
#   bench/run.sh                      # everything (takes a while: big-layer writes 500 MB per cold build)
#   BENCHES="parallel multistage-prune" RUNS=3 bench/run.sh
#   TOOLS="rbuild buildkit" bench/run.sh
#
# Scenarios per bench: cold (all caches and images removed, base pulled from the lab registry), noop
# (nothing changed), edit (one file's content changed), touch (one file's mtime changed). Plus `scaling`:
# noop with a 2,000-file and a 20,000-file context. Medians of RUNS runs each (hyperfine).
# Prints a markdown table of medians and each tool's ratio to BuildKit, then target checks, and writes
# everything under $OUT (default /tmp/rbuild-bench/results).
#
# Needs: ../shared/lab (up.sh: registries on 127.0.0.1:5000, dockerd on /tmp/lab/docker.sock, base images
# 127.0.0.1:5000/library/{busybox:1.35,debian:bookworm}), hyperfine, jq, buildah, and a release build of
# rbuild (`cargo build --release`; RBUILD overrides the path). All tools use the same base images.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
LAB=${LAB:-$(cd "$REPO/../shared/lab" 2>/dev/null && pwd || echo /work/shared/lab)}
RBUILD=${RBUILD:-$REPO/target/release/rbuild}
WORK=${WORK:-/tmp/rbuild-bench}
OUT=${OUT:-$WORK/results}
STORE=${STORE:-$WORK/rbuild-store}
TOOLS=${TOOLS:-"rbuild buildkit buildah"}
BENCHES=${BENCHES:-"parallel deps-then-src multistage-prune cache-mount big-layer"}
SCENARIOS=${SCENARIOS:-"cold noop edit touch"}
SCALING=${SCALING:-"2000 20000"}
RUNS=${RUNS:-5}
RUNS_COLD=${RUNS_COLD:-3}
export DOCKER_HOST=unix:///tmp/lab/docker.sock DOCKER_BUILDKIT=1
DOCKER=/usr/bin/docker

[ -x "$RBUILD" ] || { echo "no rbuild at $RBUILD: run cargo build --release" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "hyperfine missing: apt-get install hyperfine" >&2; exit 1; }
"$LAB/up.sh" >/dev/null || { echo "lab up.sh failed" >&2; exit 1; }
rm -rf "$OUT"; mkdir -p "$OUT" "$WORK/ctx"

# --- contexts: copies of bench/* (edits never touch the repo), generated parts made here -----------------
for b in $BENCHES scaling; do
  [ "$b" = scaling ] && continue
  rm -rf "$WORK/ctx/$b"; cp -r "$HERE/$b" "$WORK/ctx/$b"
done
[ -x "$WORK/ctx/deps-then-src/gen.sh" ] && "$WORK/ctx/deps-then-src/gen.sh" >/dev/null
gen_scaling() { # n -> context dir
  local n=$1 d="$WORK/ctx/scaling-$1" i=0
  if [ "$(find "$d/src" -type f 2>/dev/null | wc -l)" -ne "$n" ]; then
    rm -rf "$d"; mkdir -p "$d"; cp "$HERE/scaling/Dockerfile" "$d/"
    while [ $i -lt $((n / 100)) ]; do
      mkdir -p "$d/src/d$i"
      ( cd "$d/src/d$i" && for f in $(seq 0 99); do echo "file $i/$f" > "f$f.txt"; done )
      i=$((i+1))
    done
  fi
}
for n in $SCALING; do gen_scaling "$n"; done

editfile() {
  case $1 in
    parallel) echo note.txt ;; deps-then-src) echo src/mod7/file7.js ;; big-layer) echo marker.txt ;;
    cache-mount) echo input.txt ;; multistage-prune) echo fast.txt ;; scaling-*) echo src/d7/f7.txt ;;
  esac
}
target() { [ "$1" = multistage-prune ] && echo "--target fast" || true; }

build_cmd() { # tool bench
  local t ctx="$WORK/ctx/$2"; t=$(target "$2")
  case $1 in
    rbuild)   echo "$RBUILD --root $STORE build -q $t -t bench/$2:rbuild $ctx" ;;
    buildkit) echo "$DOCKER build --network=host -q $t -t bench/$2:buildkit $ctx" ;;
    buildah)  echo "buildah bud --layers --isolation=chroot --network=host -q $t -t bench/$2:buildah $ctx" ;;
    buildah-runc) echo "buildah bud --layers --isolation=oci --runtime=$(command -v runc) --network=host -q $t -t bench/$2:buildah $ctx" ;;
  esac
}
clean_cmd() { # tool
  case $1 in
    rbuild)   echo "rm -rf $STORE" ;;
    buildkit) echo "$DOCKER builder prune -af >/dev/null && $DOCKER image prune -af >/dev/null" ;;
    buildah*) echo "buildah rm --all >/dev/null; buildah rmi --all --force >/dev/null 2>&1; rm -rf /var/tmp/buildah-cache /var/tmp/buildah-cache-*; true" ;;
  esac
}

hf() { # json prepare runs command
  local json=$1 prep=$2 runs=$3 cmd=$4
  local args=(--style none --export-json "$json" --runs "$runs")
  [ -n "$prep" ] && args+=(--prepare "$prep")
  if ! hyperfine "${args[@]}" "$cmd" >"${json%.json}.log" 2>&1; then
    echo "!!! failed: $cmd" | tee -a "$OUT/FAILURES.txt"; tail -5 "${json%.json}.log" >> "$OUT/FAILURES.txt"; rm -f "$json"
  fi
}

run_bench() { # tool bench scenarios...
  local tool=$1 b=$2; shift 2
  local f="$WORK/ctx/$b/$(editfile "$b")" build clean orig
  orig=$(cat "$f"); build=$(build_cmd "$tool" "$b"); clean=$(clean_cmd "$tool")
  for s in "$@"; do
    local j="$OUT/${b}__${s}__${tool}.json"
    echo ">>> $tool $b $s" >&2
    case $s in
      # The cold prepare deletes a whole store/cache: on this kind of VM disk (ext4, discard) the deletion
      # slows file creation for seconds afterwards, so every tool's prepare ends with a settle period.
      cold)  hf "$j" "$clean; sync; sleep ${SETTLE:-5}" "$RUNS_COLD" "$build" ;;
      # The contexts were just copied: rbuild does not trust stat fields of files changed in the last 2 s
      # (racily clean, as git), so a no-op right after the copy reads every file. Let them age first.
      noop)  eval "$build" >/dev/null 2>&1; sleep 3; eval "$build" >/dev/null 2>&1; hf "$j" "" "$RUNS" "$build" ;;
      edit)  eval "$build" >/dev/null 2>&1; hf "$j" "echo \"// edit \$(date +%s%N)\" >> $f" "$RUNS" "$build" ;;
      touch) eval "$build" >/dev/null 2>&1; hf "$j" "touch $f" "$RUNS" "$build" ;;
    esac
  done
  printf '%s\n' "$orig" > "$f"
}

# One tool at a time per bench, tools interleaved per bench so machine load drifts alike for all of them.
for b in $BENCHES; do
  for tool in $TOOLS; do run_bench "$tool" "$b" $SCENARIOS; done
done
for n in $SCALING; do
  for tool in $TOOLS; do run_bench "$tool" "scaling-$n" noop; done
done

# --- target checks on rbuild (plain progress) ----------------------------------------------------------------
checks() {
  local log="$OUT/checks.log" ctx
  : > "$log"
  if [[ " $BENCHES " == *" parallel "* ]]; then
    ctx="$WORK/ctx/parallel"
    # Base image present, every step re-run: wall vs the longest RUN.
    local t0 t1 wall longest
    t0=$(date +%s.%N)
    "$RBUILD" --root "$STORE" build --no-cache --progress plain -t bench/parallel:check "$ctx" 2> "$OUT/parallel-plain.log" >/dev/null
    t1=$(date +%s.%N)
    wall=$(echo "$t1 - $t0" | bc)
    longest=$(grep -E '^#[0-9]+ DONE' "$OUT/parallel-plain.log" | awk '{sub("s","",$3); if ($3>m) m=$3} END{print m+0}')
    printf -- '- parallel (--no-cache, base present): wall %.2f s, longest step %.2f s, ratio %.2f (target <= 1.15)\n' \
      "$wall" "$longest" "$(echo "$wall / $longest" | bc -l)" >> "$log"
  fi
  if [[ " $BENCHES " == *" multistage-prune "* ]]; then
    ctx="$WORK/ctx/multistage-prune"
    "$RBUILD" --root "$STORE" build --no-cache --progress plain --target fast -t bench/ms:check "$ctx" 2> "$OUT/ms-plain.log" >/dev/null
    if grep -q 'sleep 6' "$OUT/ms-plain.log"; then echo "- --target fast: FAIL, the slow stage ran" >> "$log"
    else echo "- --target fast: slow stage never ran (no 'sleep 6' step in the plain log)" >> "$log"; fi
  fi
  for b in $BENCHES; do
    ctx="$WORK/ctx/$b"
    "$RBUILD" --root "$STORE" build $(target "$b") -q -t "bench/$b:rbuild" "$ctx" >/dev/null 2>&1
    touch "$ctx/$(editfile "$b")"
    "$RBUILD" --root "$STORE" build $(target "$b") --progress plain -t "bench/$b:rbuild" "$ctx" 2> "$OUT/touch-$b.log" >/dev/null
    if grep -q 'cache miss' "$OUT/touch-$b.log"; then echo "- touch $b: FAIL, $(grep -c 'cache miss' "$OUT/touch-$b.log") step(s) re-ran" >> "$log"
    else echo "- touch $b: full cache hit ($(grep -c CACHED "$OUT/touch-$b.log") steps CACHED, none ran)" >> "$log"; fi
  done
}
checks

# --- table ------------------------------------------------------------------------------------------------
med() { [ -f "$1" ] && jq -r '.results[0].median' "$1" || echo ""; }
{
  printf '| bench | scenario |'; for t in $TOOLS; do printf ' %s s |' "$t"; done
  for t in $TOOLS; do [ "$t" = buildkit ] || printf ' %s / BuildKit |' "$t"; done; echo
  printf '|---|---|'; for t in $TOOLS; do printf -- '---:|'; done
  for t in $TOOLS; do [ "$t" = buildkit ] || printf -- '---:|'; done; echo
  rows=""
  for b in $BENCHES; do for s in $SCENARIOS; do rows="$rows $b:$s"; done; done
  for n in $SCALING; do rows="$rows scaling-$n:noop"; done
  for r in $rows; do
    b=${r%%:*}; s=${r#*:}
    bk=$(med "$OUT/${b}__${s}__buildkit.json")
    printf '| %s | %s |' "$b" "$s"
    for t in $TOOLS; do m=$(med "$OUT/${b}__${s}__${t}.json"); [ -n "$m" ] && printf ' %.3f |' "$m" || printf ' – |'; done
    for t in $TOOLS; do
      [ "$t" = buildkit ] && continue
      m=$(med "$OUT/${b}__${s}__${t}.json")
      if [ -n "$m" ] && [ -n "$bk" ]; then printf ' %.2f× |' "$(echo "$m / $bk" | bc -l)"; else printf ' – |'; fi
    done
    echo
  done
  echo
  echo "Medians of $RUNS runs ($RUNS_COLD for cold), hyperfine; $(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores, $(uname -r)."
  echo
  echo "Checks:"; echo; cat "$OUT/checks.log"
  echo
  echo "Commands (per bench; CTX=$WORK/ctx/BENCH, --target fast for multistage-prune):"
  echo
  for t in $TOOLS; do echo "- $t: \`$(build_cmd "$t" BENCH)\`; cold prepare: \`$(clean_cmd "$t")\`"; done
} | tee "$OUT/table.md"
[ -s "$OUT/FAILURES.txt" ] && { echo; echo "FAILURES:"; cat "$OUT/FAILURES.txt"; }
true
