#!/usr/bin/env bash
# Installs the Debian packages rbuild's tests and examples need (idempotent; needs root).
set -euo pipefail
# libarchive-tools: bsdtar for the sparse-file unpack test. qemu-system-x86, cpio, binutils (objcopy) and
# e2fsprogs: tests/it/kernels.rs boots Debian's 5.10 and 6.1 kernels (fetched by scripts/kernel-vm.sh into
# /var/cache/rbuild-test/kernels). python3: the differential's CI subset (tests/it/differential.rs).
# docker.io: dockerd 20.10 for tests/it/images.rs (--load, docker load/save interop).
pkgs=(docker-registry busybox-static skopeo umoci jq curl apache2-utils debootstrap openssl git uidmap procps
  libarchive-tools qemu-system-x86 cpio binutils e2fsprogs python3 docker.io zstd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rootless mode tests run rbuild as these users: one with subordinate ids, one without.
if ! id rbuild-rootless >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh rbuild-rootless
fi
if ! grep -q '^rbuild-rootless:' /etc/subuid 2>/dev/null || ! grep -q '^rbuild-rootless:' /etc/subgid 2>/dev/null; then
  usermod --add-subuids 300000-365535 --add-subgids 300000-365535 rbuild-rootless
fi
if ! id rbuild-nosubids >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 rbuild-nosubids
fi
sed -i '/^rbuild-nosubids:/d' /etc/subuid /etc/subgid
