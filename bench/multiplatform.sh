#!/bin/bash
# Multi-platform builds (linux/amd64 + linux/arm64), rbuild vs buildah 1.28 (`buildah build --platform a,b
# --manifest`), both with the lab's registry (../shared/lab, 127.0.0.1:5000) holding the bases:
#
#   bench/multiplatform.sh          # RUNS=3; RBUILD=path (default target/release, else debug)
#
# (a) emulated RUN: three RUN steps of shell work on a busybox base, for both platforms (arm64 through
#     qemu-user: `rbuild binfmt --install arm64` registers it; buildah uses the same kernel handler).
# (b) cross-compile: a FROM --platform=$BUILDPLATFORM stage with Debian's gcc and gcc-aarch64-linux-gnu
#     (a bookworm rootfs made by debootstrap, pushed once) compiles a generated C program for TARGETARCH,
#     copied into each target's busybox base; rbuild's two-platform time is also compared with its own
#     single-platform (linux/amd64) build of the same Dockerfile.
# Every build misses the cache (a new nonce file is COPYed first), bases already pulled; medians of RUNS, tools interleaved. Max RSS of the
# rbuild process tree from /usr/bin/time. Needs root, debootstrap, qemu-user-static, buildah (lab; runc, as
# crun fails on the lab's hybrid cgroups).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
WORK=${WORK:-/tmp/rbuild-bench-multiplatform}
RUNS=${RUNS:-3}
REG=127.0.0.1:5000/bench-mp

"$LAB/up.sh" >/dev/null
"$RBUILD" binfmt --install arm64 >/dev/null
mkdir -p "$WORK"
STORE=$WORK/store
BROOT=$WORK/buildah
rb() { "$RBUILD" --root "$STORE" "$@"; }
bh() { buildah --root "$BROOT/root" --runroot "$BROOT/run" --storage-driver overlay "$@"; }

# Bases: a two-platform busybox index (host busybox + Debian's busybox-static:arm64) and the compiler image.
if ! skopeo inspect --tls-verify=false --raw "docker://$REG/busybox:1" >/dev/null 2>&1; then
  mkdir -p "$WORK/base"
  cp /bin/busybox "$WORK/base/busybox-amd64"
  cp /var/cache/rbuild-test/arm64/busybox "$WORK/base/busybox-arm64"
  printf 'FROM scratch\nARG TARGETARCH\nCOPY busybox-${TARGETARCH} /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' \
    >"$WORK/base/Dockerfile"
  rb build -q --platform linux/amd64,linux/arm64 -t "$REG/busybox:1" --push "$WORK/base" >/dev/null
fi
if ! skopeo inspect --tls-verify=false --raw "docker://$REG/cc:1" >/dev/null 2>&1; then
  CC_ROOT=${CC_ROOT:-$WORK/ccroot}
  [ -x "$CC_ROOT/usr/bin/aarch64-linux-gnu-gcc" ] ||
    debootstrap --variant=minbase --include=gcc,libc6-dev,gcc-aarch64-linux-gnu,libc6-dev-arm64-cross \
      bookworm "$CC_ROOT" http://deb.debian.org/debian >/dev/null
  mkdir -p "$WORK/cc"
  tar -C "$CC_ROOT" --exclude=./proc --exclude=./sys --exclude=./dev -cf "$WORK/cc/rootfs.tar" .
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/sh"]\n' >"$WORK/cc/Dockerfile"
  rb build -q -t "$REG/cc:1" --push "$WORK/cc" >/dev/null
fi

mkdir -p "$WORK/emulated" "$WORK/cross"
cat >"$WORK/emulated/Dockerfile" <<EOF
FROM $REG/busybox:1
COPY nonce /
RUN i=0; while [ \$i -lt 30000 ]; do i=\$((i+1)); done; echo \$i > /count
RUN for f in /bin/*; do md5sum \$f; done > /sums && sort /sums | md5sum > /sums.md5
RUN mkdir /t && cd /t && for i in \$(seq 1 200); do echo line \$i > f\$i; done && tar -cf - . | gzip > /t.tgz
EOF
python3 - "$WORK/cross/prog.c" <<'EOF'
import sys
n = 400
with open(sys.argv[1], "w") as f:
    f.write("#include <stdio.h>\n")
    for i in range(n):
        f.write(f"static long f{i}(long x) {{ long s = 0; for (long j = 0; j < x; j++) s += (j * {i + 3}) ^ (s >> 3); return s; }}\n")
    f.write("int main(void) { long t = 0;\n")
    for i in range(n):
        f.write(f"  t += f{i}({i});\n")
    f.write('  printf("%ld\\n", t); return 0; }\n')
EOF
cat >"$WORK/cross/Dockerfile" <<EOF
FROM --platform=\$BUILDPLATFORM $REG/cc:1 AS build
ARG TARGETARCH
COPY nonce prog.c /src/
RUN mkdir /out && case \$TARGETARCH in amd64) CC=gcc;; arm64) CC=aarch64-linux-gnu-gcc;; esac && \\
    \$CC -O2 -static -o /out/prog /src/prog.c
FROM $REG/busybox:1
COPY --from=build /out/prog /prog
EOF

PLATS=linux/amd64,linux/arm64
# A new nonce file before every build makes every step after its COPY miss the cache (rbuild's --no-cache
# would also stop the platforms from sharing the build-platform stage; BuildKit merges it even then).
build() { # TOOL CTX PLATFORMS
  date +%s.%N >"$WORK/$2/nonce"
  case $1 in
    rbuild) rb build -q --platform "$3" -t "bench-$2" "$WORK/$2" ;;
    buildah)
      bh manifest rm "bench-$2" >/dev/null 2>&1 || true
      bh build -q --no-cache --runtime=runc --tls-verify=false --platform "$3" --manifest "bench-$2" "$WORK/$2" ;;
  esac
}
# Bases present for both tools before timing; check each image's RUN ran on its architecture.
for t in rbuild buildah; do for c in emulated cross; do build "$t" "$c" "$PLATS" >/dev/null; done; done
[ "$(rb run --platform linux/arm64 bench-cross /prog)" = "$(rb run bench-cross /prog)" ]

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }
declare -A S
for _ in $(seq "$RUNS"); do
  for c in emulated cross; do
    for t in rbuild buildah; do S[$t,$c]+="$(secs build "$t" "$c" "$PLATS") "; done
  done
  S[rbuild,single]+="$(secs build rbuild cross linux/amd64) "
  S[buildah,single]+="$(secs build buildah cross linux/amd64) "
done
med() { tr ' ' '\n' <<<"${S[$1]}" | grep . | median; }
date +%s.%N >"$WORK/emulated/nonce"
RSS_A=$(rss "$RBUILD" --root "$STORE" build -q --platform "$PLATS" -t bench-emulated "$WORK/emulated")
date +%s.%N >"$WORK/cross/nonce"
RSS_B=$(rss "$RBUILD" --root "$STORE" build -q --platform "$PLATS" -t bench-cross "$WORK/cross")
echo "| pattern (linux/amd64 + linux/arm64, cache missed) | rbuild s | buildah s | rbuild / buildah | max RSS (rbuild + children) |"
echo "|---|---|---|---|---|"
for c in emulated cross; do
  r=$(med "rbuild,$c") b=$(med "buildah,$c")
  rss=$([ "$c" = emulated ] && echo "$RSS_A" || echo "$RSS_B")
  printf '| %s | %.2f | %.2f | %.2fx | %d MiB |\n' "$c" "$r" "$b" "$(echo "$r / $b" | bc -l)" $((rss / 1024))
done
r1=$(med rbuild,single) b1=$(med buildah,single)
printf '| cross, linux/amd64 only | %.2f | %.2f | %.2fx | |\n' "$r1" "$b1" "$(echo "$r1 / $b1" | bc -l)"
printf '\ncross-compile, two platforms / one platform: rbuild %.2fx, buildah %.2fx\n' \
  "$(echo "$(med rbuild,cross) / $r1" | bc -l)" "$(echo "$(med buildah,cross) / $b1" | bc -l)"
