#!/usr/bin/env bash
# MicroVM test kernel recipe: Linux from Debian's linux-source-6.1 package, `make tinyconfig` plus
# Tests/Linux/microvm.config (virtio-pci/blk/net/console/rng, ACPI, PCI/MSI, 8250, PVH, tickless idle at
# 100 Hz; no modules).
#
# Builds once into ${ACTOR_VMM_CACHE:-~/.cache/actor-vmm}/microvm-<config hash>/ and prints that folder,
# which holds `bzImage`, `vmlinux` (ELF, PVH) and `initramfs.cpio` (the Debian guest's busybox /init,
# without modules). Rebuilds only when the config fragment changes. ~5 minutes on 2 cores the first time.
#   microvm-kernel.sh [EXTRA.config]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# An optional second fragment adds options for one use (Tests/Nested/microvm-disk.config: ext4 and POSIX
# timers for the nested tier's root-disk guest); the cache folder is named by both.
fragments=("$here/microvm.config")
[ $# -ge 1 ] && fragments+=("$(readlink -f "$1")")
hash=$(cat "${fragments[@]}" | sha256sum | cut -c1-12)
cache=${ACTOR_VMM_CACHE:-$HOME/.cache/actor-vmm}/microvm-$hash
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -s "$cache/bzImage" ] && [ -s "$cache/vmlinux" ] && [ -s "$cache/initramfs.cpio" ]; then
  echo "$cache"
  exit 0
fi
log() { echo "microvm-kernel: $*" >&2; }

packages=(linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev python3 xz-utils)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

src="$cache/src"
if [ ! -f "$src/Makefile" ]; then
  tarball=$(ls /usr/src/linux-source-6.1.tar.xz 2>/dev/null || ls /usr/src/linux-source-6.1*.tar.* | head -n 1)
  log "unpacking $tarball"
  rm -rf "$src" && mkdir -p "$src"
  tar -xf "$tarball" -C "$src" --strip-components=1
fi
cd "$src"
log "configuring (tinyconfig + microvm.config)"
make -s tinyconfig >&2
./scripts/kconfig/merge_config.sh -m .config "${fragments[@]}" >&2
make -s olddefconfig >&2
extra=$(cat "${fragments[@]:1}" /dev/null | sed -n 's/^CONFIG_\([A-Z0-9_]*\)=y$/\1/p')
for option in $extra VIRTIO_PCI VIRTIO_BLK VIRTIO_NET VIRTIO_CONSOLE HW_RANDOM_VIRTIO PVH ACPI PCI_MSI SERIAL_8250_CONSOLE SMP NO_HZ_IDLE HZ_100; do
  grep -q "^CONFIG_$option=y" .config || { log "CONFIG_$option did not survive olddefconfig"; exit 1; }
done
log "building bzImage with $(nproc) jobs"
make -s -j"$(nproc)" bzImage >&2
cp arch/x86/boot/bzImage "$cache/bzImage.tmp" && mv "$cache/bzImage.tmp" "$cache/bzImage"
cp vmlinux "$cache/vmlinux.tmp" && mv "$cache/vmlinux.tmp" "$cache/vmlinux"

# The initramfs: the Debian guest's busybox /init (modules are built in here, so none are loaded).
debian=$("$here/debian-guest.sh")
cp "$debian/initramfs.cpio" "$cache/initramfs.cpio"
log "ready"
echo "$cache"
