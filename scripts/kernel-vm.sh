#!/usr/bin/env bash
# Boots one of Debian's real cloud kernels in QEMU (TCG: no KVM needed) with an initramfs holding busybox, the
# given rbuild binary (and its shared libraries) and a scenario script, runs the script as PID 1's child and prints
# the console. Used by tests/it/kernels.rs; runnable by hand:
#
#   scripts/kernel-vm.sh SUITE RBUILD SCENARIO      # SUITE: bullseye (Linux 5.10) or bookworm (Linux 6.1)
#
# The kernel is Debian's `linux-image-*-cloud-amd64-unsigned` of that suite, fetched with apt from the host's
# Debian mirror through a private sources list (the host's own apt configuration is not touched) and cached in
# $RBUILD_TEST_CACHE/kernels (default /var/cache/rbuild-test). Needs root, apt, dpkg-deb, cpio, qemu-system-x86.
#
# The guest: PID 1 copies the initramfs to a tmpfs and switch_roots into it (pivot_root, which the runner uses,
# cannot leave the initramfs), loads overlay.ko from the kernel package, formats the virtio disk as ext4 for the
# store (tmpfs has no user.* xattrs before 6.6, which rootless overlay needs), runs SCENARIO with busybox sh and
# powers off. The scenario prints its results on the console (ttyS0).
set -euo pipefail

suite=$1 rbuild=$2 scenario=$3
cache=${RBUILD_TEST_CACHE:-/var/cache/rbuild-test}/kernels
case $suite in
  bullseye) series=5.10 ;;
  bookworm) series=6.1 ;;
  *) echo "unknown suite $suite (bullseye or bookworm)" >&2; exit 2 ;;
esac
for tool in qemu-system-x86_64 cpio dpkg-deb apt-get mkfs.ext4 objcopy; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run scripts/install-deps.sh" >&2; exit 2; }
done

mirror() {
  local uri
  uri=$(grep -hE '^[[:space:]]*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -hE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list 2>/dev/null | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit }}' | grep -v security | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# The newest cloud kernel of the suite, downloaded once.
kernel_dir=$cache/$suite
if [ ! -f "$kernel_dir/ready" ]; then
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(mirror) $suite main" >"$work/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work" -o "Dir::Cache::archives=$work/archives"
    -o Acquire::Languages=none -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
  apt-get "${apt_opts[@]}" update -qq >&2
  pkg=$(apt-cache "${apt_opts[@]}" search --names-only "^linux-image-${series//./\\.}\\..*-cloud-amd64-unsigned\$" |
    awk '{print $1}' | sort -V | tail -1)
  [ -n "$pkg" ] || { echo "no linux-image-$series cloud kernel in $suite" >&2; exit 1; }
  echo "fetching $pkg from $(mirror) $suite" >&2
  (cd "$work" && apt-get "${apt_opts[@]}" download "$pkg" >&2)
  mkdir "$work/x"
  dpkg-deb -x "$work"/linux-image-*.deb "$work/x"
  rm -rf "$kernel_dir"
  mkdir -p "$kernel_dir"
  cp "$work"/x/boot/vmlinuz-* "$kernel_dir/vmlinuz"
  cp "$work"/x/boot/config-* "$kernel_dir/config"
  # The modules the guest loads (the virtio disk, overlay, fuse), numbered in dependency order; a kernel that
  # has one built in or split differently simply lacks that file.
  n=10
  for m in virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk overlay fuse; do
    f=$(find "$work/x/lib/modules" -name "$m.ko*" | head -1)
    [ -n "$f" ] && cp "$f" "$kernel_dir/$n-$(basename "$f")"
    n=$((n + 1))
  done
  echo "$pkg" >"$kernel_dir/ready"
  rm -rf "$work"
  trap - EXIT
fi

# The initramfs.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,root,newroot,modules,usr/bin,home/u}
cp /bin/busybox "$root/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
# Without debug info: a debug build is ~100 MB, ~20 without.
objcopy --strip-debug "$rbuild" "$root/bin/rbuild"
cp "$scenario" "$root/scenario.sh"
cp "$kernel_dir"/*.ko* "$root/modules/" 2>/dev/null || true
# Shared libraries of rbuild and of the rootless helpers (newuidmap/newgidmap keep their setuid bit).
bins=("$rbuild")
for b in /usr/bin/newuidmap /usr/bin/newgidmap; do
  [ -x "$b" ] && { cp -p "$b" "$root/usr/bin/"; bins+=("$b"); }
done
# fuse-overlayfs outside PATH: the scenario puts /opt/fuse in PATH for the rootless check that uses it.
if [ -x /usr/bin/fuse-overlayfs ]; then
  mkdir -p "$root/opt/fuse"
  cp /usr/bin/fuse-overlayfs "$root/opt/fuse/"
  bins+=(/usr/bin/fuse-overlayfs)
fi
for lib in $(ldd "${bins[@]}" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000:u:/home/u:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nu:x:1000:\n' >"$root/etc/group"
echo 'u:100000:65536' >"$root/etc/subuid"
echo 'u:100000:65536' >"$root/etc/subgid"
cat >"$root/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin HOME=/root
if [ ! -e /switched ]; then
  mount -t tmpfs -o size=90% tmpfs /newroot
  for e in /*; do case $e in /proc|/sys|/dev|/newroot) ;; *) cp -a "$e" /newroot/ ;; esac; done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev
  touch /newroot/switched
  exec switch_root /newroot /init
fi
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
chmod 1777 /tmp
for m in /modules/*.ko*; do [ -e "$m" ] && insmod "$m"; done
ip link set lo up
mkdir -p /store
if ! mount -t ext4 /dev/vda /store 2>/dev/null; then mount -t tmpfs tmpfs /store; fi
chmod 0755 /store
echo "RBUILD-VM-KERNEL $(uname -r)"
sh /scenario.sh
echo "RBUILD-VM-DONE rc=$?"
poweroff -f
EOF
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$root.cpio.gz"
disk=$(mktemp)
truncate -s 4G "$disk"
mkfs.ext4 -q -F "$disk"
trap 'rm -rf "$root" "$root.cpio.gz" "$disk"' EXIT
echo "booting $(cat "$kernel_dir/ready")" >&2
timeout "${RBUILD_VM_TIMEOUT:-900}" qemu-system-x86_64 -machine q35 -cpu max -smp 2 -m 2048 -nographic -no-reboot \
  -kernel "$kernel_dir/vmlinuz" -initrd "$root.cpio.gz" \
  -drive "file=$disk,if=virtio,format=raw" \
  -append "console=ttyS0 panic=-1 ${RBUILD_VM_APPEND:-quiet loglevel=3}" </dev/null
