#!/usr/bin/env bash
# Installs the Debian packages rbuild's tests and examples need (idempotent; needs root).
set -euo pipefail
pkgs=(docker-registry busybox-static skopeo umoci jq curl apache2-utils debootstrap openssl git)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
