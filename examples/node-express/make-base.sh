#!/usr/bin/env bash
# Builds the node base image with rbuild FROM the Debian base of scripts/make-debian.sh:
#
#   examples/node-express/make-base.sh [TAG...]     # default tag: node:18 (Debian bookworm's nodejs is 18)
#
# The context gets the host's CA bundle (for TLS-intercepting proxies) and an npmrc naming the host's npm
# registry. Environment: DEBIAN (the base, default debian:bookworm), RBUILD (default: rbuild on PATH),
# RBUILD_ROOT, RBUILD_FLAGS (extra `rbuild build` flags, e.g. --push), CONTEXT_ONLY=DIR (assemble the
# context in DIR and stop, e.g. to build the same base with another tool).
set -euo pipefail
[ "$#" -gt 0 ] || set -- node:18
tags=()
for t in "$@"; do tags+=(-t "$t"); done
debian=${DEBIAN:-debian:bookworm}
rbuild=${RBUILD:-rbuild}
here=$(cd "$(dirname "$0")" && pwd)
ca=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if [ -n "${CONTEXT_ONLY:-}" ]; then
  ctx=$CONTEXT_ONLY
  mkdir -p "$ctx"
else
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
fi
cp "$here/base/Dockerfile" "$ctx/Dockerfile"
if [ -f "$ca" ]; then
  cp "$ca" "$ctx/ca-certificates.crt"
else
  : >"$ctx/ca-certificates.crt"
fi
registry=https://registry.npmjs.org/
if command -v npm >/dev/null; then
  registry=$(npm config get registry 2>/dev/null || echo "$registry")
fi
{
  echo "registry=$registry"
  [ -s "$ctx/ca-certificates.crt" ] && echo "cafile=/usr/local/share/rbuild-host-ca.crt"
  echo "fund=false"
  echo "audit=false"
  echo "update-notifier=false"
} >"$ctx/npmrc"
[ -z "${CONTEXT_ONLY:-}" ] || exit 0
# shellcheck disable=SC2086
"$rbuild" build --progress plain --build-arg "DEBIAN=$debian" "${tags[@]}" ${RBUILD_FLAGS:-} "$ctx"
