#!/usr/bin/env bash
# Debian guest recipe: Debian's own cloud kernel, unmodified, plus a busybox initramfs.
#
# Prints the cache folder on stdout; in it:
#   vmlinuz        the kernel as Debian ships it (bzImage)
#   vmlinux        the ELF kernel extracted from it (boots through PVH)
#   initramfs.cpio newc archive: busybox, the virtio modules, and an /init that mounts proc/sys/dev,
#                  loads the modules, prints "ACTORVMM-LINUX-INIT uptime=… devices=… cpus=…" (cpus: the
#                  online CPUs, e.g. 0-3) and powers off
# Everything comes from Debian's packages (`apt-get download`, `dpkg-deb -x`); the host's /boot is never
# read. Cached in ${ACTOR_VMM_CACHE:-~/.cache/actor-vmm}/debian (rebuilt when this script changes);
# idempotent and safe to run concurrently.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${ACTOR_VMM_CACHE:-$HOME/.cache/actor-vmm}/debian
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
cd "$cache"
recipe=$(sha256sum "$here/$(basename "$0")" | cut -c1-12)
if [ -s vmlinuz ] && [ -s vmlinux ] && [ -s initramfs.cpio ] && [ "$(cat recipe 2>/dev/null)" = "$recipe" ]; then
  echo "$cache"
  exit 0
fi

log() { echo "debian-guest: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
missing=()
need dpkg-deb dpkg; need xz xz-utils; need zstd zstd; need lz4 lz4; need python3 python3
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2
fi

# The newest cloud kernel the archive has: what the meta-package depends on.
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then apt-get update -qq >&2; fi
image=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$image" ] || { log "cannot resolve linux-image-cloud-amd64"; exit 1; }
log "downloading $image and busybox-static"
rm -rf pkg root && mkdir -p pkg root
(cd pkg && apt-get download -q "$image" busybox-static >&2)
for deb in pkg/*.deb; do dpkg-deb -x "$deb" root; done
cp root/boot/vmlinuz-* vmlinuz.tmp
version=$(basename root/boot/vmlinuz-* | sed 's/^vmlinuz-//')
echo "$version" > version

# vmlinux: find the compressed payload inside the bzImage and decompress it (what scripts/extract-vmlinux does).
python3 "$here/extract-vmlinux.py" vmlinuz.tmp vmlinux.tmp >&2

# The initramfs: busybox and the virtio modules (all =m in Debian's kernel), in dependency order.
rm -rf initramfs && mkdir -p initramfs/{bin,dev,proc,sys,lib/modules}
cp root/bin/busybox initramfs/bin/busybox
modules="virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net virtio_console rng-core virtio-rng"
for m in $modules; do
  file=$(find root/lib/modules -name "$m.ko*" | head -n 1)
  [ -n "$file" ] || { log "module $m not in $image (built in?)"; continue; }
  case "$file" in
    *.ko.xz) xz -dc "$file" > "initramfs/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$file" > "initramfs/lib/modules/$m.ko" ;;
    *) cp "$file" "initramfs/lib/modules/$m.ko" ;;
  esac
done
cat > initramfs/init <<INIT
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in $modules; do
  [ -f /lib/modules/\$m.ko ] && /bin/busybox insmod /lib/modules/\$m.ko
done
/bin/busybox echo "ACTORVMM-LINUX-INIT uptime=\$(/bin/busybox cut -d' ' -f1 /proc/uptime) devices=\$(/bin/busybox ls /sys/bus/virtio/devices | /bin/busybox wc -l) cpus=\$(/bin/busybox cat /sys/devices/system/cpu/online)"
/bin/busybox poweroff -f
INIT
chmod +x initramfs/init
python3 "$here/newc.py" initramfs initramfs.tmp >&2

mv vmlinuz.tmp vmlinuz && mv vmlinux.tmp vmlinux && mv initramfs.tmp initramfs.cpio && echo "$recipe" > recipe
rm -rf pkg root initramfs
log "ready: Linux $version"
echo "$cache"
