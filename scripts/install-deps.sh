#!/usr/bin/env bash
# Installs the Debian packages rbuild's tests and examples need (idempotent; needs root).
set -euo pipefail
# libarchive-tools: bsdtar for the sparse-file unpack test. qemu-system-x86, cpio, binutils (objcopy) and
# e2fsprogs: tests/it/kernels.rs boots Debian's 5.10 and 6.1 kernels (fetched by scripts/kernel-vm.sh into
# /var/cache/rbuild-test/kernels). python3: the differential's CI subset (tests/it/differential.rs).
# docker.io: dockerd 20.10 for tests/it/images.rs (--load, docker load/save interop). qemu-user-static: the
# emulated arm64 RUN steps of tests/it/multiplatform.rs (registered by `rbuild binfmt --install arm64`).
# python3-venv: the independent attestation checkers below (tests/it/attest.rs).
# fuse-overlayfs: rootless builds on kernels without overlay in a user namespace (tests/it/rootless.rs, the 5.10 VM).
# rpm: rpmbuild and rpm make a real rpmdb.sqlite for the SBOM's RPM scanner test (attest/src/sbom/rpm.rs).
pkgs=(docker-registry busybox-static skopeo umoci jq curl apache2-utils debootstrap openssl git uidmap procps
  libarchive-tools qemu-system-x86 cpio binutils e2fsprogs python3 python3-venv docker.io zstd qemu-user-static rpm
  fuse-overlayfs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# tests/it/multiplatform.rs: an arm64 busybox (Debian's busybox-static:arm64) for an arm64 base image made
# FROM scratch, so that no test needs Docker Hub.
arm64_busybox=/var/cache/rbuild-test/arm64/busybox
if [ ! -x "$arm64_busybox" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq busybox-static:arm64 2>/dev/null || { apt-get update -qq && apt-get download -qq busybox-static:arm64; })
  dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$tmp/x"
  mkdir -p "$(dirname "$arm64_busybox")"
  install -m 0755 "$tmp/x/bin/busybox" "$arm64_busybox"
  rm -rf "$tmp"
fi

# Rootless mode tests run rbuild as these users: one with subordinate ids, one without.
# /dev/fuse for everyone, as Debian's udev rule makes it (a machine without udev leaves it 0600): the rootless
# fuse-overlayfs test runs as an ordinary user.
modprobe fuse 2>/dev/null || true
[ -c /dev/fuse ] && chmod 0666 /dev/fuse
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

# Independent checkers of rbuild's attestations (tests/it/attest.rs), from PyPI into their own venv:
# SPDX's own validator (pyspdxtools), the JSON Schema validator, securesystemslib's DSSE verifier, and
# CycloneDX's own strict JSON-schema validator (cyclonedx-python-lib).
pytools=/opt/rbuild-pytools
if ! "$pytools/bin/python" -c 'import spdx_tools, jsonschema, securesystemslib, cryptography, cyclonedx.validation.json' 2>/dev/null; then
  /usr/bin/python3 -m venv "$pytools"
  "$pytools/bin/pip" install -q 'spdx-tools==0.8.*' 'jsonschema==4.*' 'securesystemslib[crypto]==1.*' \
    'cyclonedx-python-lib[json-validation]==11.*'
fi
