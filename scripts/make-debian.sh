#!/usr/bin/env bash
# Makes a Debian bookworm base image with rbuild: `debootstrap --variant=minbase` from the apt mirror this
# machine is configured with, cached as a tarball between runs, then `FROM scratch` + `COPY rootfs/ /`.
#
#   scripts/make-debian.sh [TAG...]       # default tag: debian:bookworm
#
# Environment:
#   RBUILD             the rbuild binary (default: rbuild on PATH)
#   RBUILD_ROOT        the store to tag the image in (rbuild's default otherwise)
#   DEBIAN_MIRROR      mirror to debootstrap from (default: the first bookworm mirror in the host's apt sources)
#   RBUILD_TEST_CACHE  where the rootfs tarball is cached (default: /var/cache/rbuild-test)
#   RBUILD_FLAGS       extra `rbuild build` flags (e.g. --push when a tag names a registry)
#
# The image's apt sources are the host's Debian sources (so a RUN apt-get in it uses the same mirror as the
# host), plus the host's Acquire:: settings that a snapshot mirror or a proxy needs. Needs root and debootstrap.
set -euo pipefail

[ "$#" -gt 0 ] || set -- debian:bookworm
tags=()
for t in "$@"; do tags+=(-t "$t"); done
rbuild=${RBUILD:-rbuild}
cache=${RBUILD_TEST_CACHE:-/var/cache/rbuild-test}
tarball=$cache/debian-bookworm.tar

# The Debian sources of the host: deb822 files and one-line lists, enabled ones only.
host_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && grep -qE '^[[:space:]]*(deb|URIs:)' "$f" && grep -q 'bookworm' "$f" && echo "$f"
  done
  return 0
}

mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  local f uri
  for f in $(host_sources); do
    uri=$(awk '
      /^[[:space:]]*URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }
      /^[[:space:]]*deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/ && $(i+1) == "bookworm") { print $i; exit } break } }
    ' "$f")
    if [ -n "$uri" ]; then
      echo "$uri"
      return
    fi
  done
  echo "http://deb.debian.org/debian"
}

if [ ! -f "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/debootstrap.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  m=$(mirror)
  echo "debootstrap bookworm from $m (cached in $tarball afterwards)" >&2
  if ! debootstrap --variant=minbase bookworm "$work/rootfs" "$m" >"$work/log" 2>&1; then
    tail -30 "$work/log" >&2
    [ -f "$work/rootfs/debootstrap/debootstrap.log" ] && tail -30 "$work/rootfs/debootstrap/debootstrap.log" >&2
    exit 1
  fi
  # What a container image does not want: downloaded packages, indexes, logs.
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
    "$work"/rootfs/var/log/* "$work"/rootfs/debootstrap
  tar --numeric-owner --xattrs -C "$work/rootfs" -cf "$work/rootfs.tar" .
  mv "$work/rootfs.tar" "$tarball"
  rm -rf "$work"
  trap - EXIT
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/rootfs"
tar --numeric-owner -C "$ctx/rootfs" -xf "$tarball"
# Device nodes are not part of a build context (rbuild, like docker, skips them); the runner mounts /dev.
find "$ctx/rootfs/dev" -mindepth 1 -delete
# apt sources: the host's, so RUN apt-get reaches the mirror this machine reaches.
rm -f "$ctx/rootfs/etc/apt/sources.list"
for f in $(host_sources); do
  case $f in
    /etc/apt/sources.list) cp "$f" "$ctx/rootfs/etc/apt/sources.list" ;;
    *) cp "$f" "$ctx/rootfs/etc/apt/sources.list.d/" ;;
  esac
done
if [ -z "$(host_sources)" ]; then
  echo "deb $(mirror) bookworm main" >"$ctx/rootfs/etc/apt/sources.list"
fi
# The host's Acquire:: settings that matter for reaching its mirror (proxies, snapshot mirrors' dates).
if command -v apt-config >/dev/null; then
  apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy|Retries) ' \
    >"$ctx/rootfs/etc/apt/apt.conf.d/90host" || rm -f "$ctx/rootfs/etc/apt/apt.conf.d/90host"
fi
# What Docker's Debian images configure: no fsync per file in dpkg (the layer is written once at the end),
# no translations; and, as in the -slim images, no docs, man pages or locales from later installs.
echo force-unsafe-io >"$ctx/rootfs/etc/dpkg/dpkg.cfg.d/rbuild-apt-speedup"
printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
  'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
  >"$ctx/rootfs/etc/dpkg/dpkg.cfg.d/rbuild-slim"
echo 'Acquire::Languages "none";' >"$ctx/rootfs/etc/apt/apt.conf.d/rbuild-no-languages"
cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["bash"]
EOF
# shellcheck disable=SC2086
"$rbuild" build --progress plain "${tags[@]}" ${RBUILD_FLAGS:-} "$ctx"
