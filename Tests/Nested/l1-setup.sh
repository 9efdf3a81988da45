#!/usr/bin/env bash
# The nested KVM tier's L1 machine (docs/nested.md): Debian's generic kernel (it has kvm_amd, 9p, overlay
# and tun as modules) and an initramfs whose /init loads them, mounts the host's root file system read-only
# over 9p with a tmpfs overlay on top, mounts the writable output share at the same path as on the host,
# chroots and runs the script named on the kernel command line, writes its exit status to the share and
# powers off. Run by Tests/Nested/run-l1.sh.
#
# Installs what is missing (apt-get: qemu-system-x86 busybox-static cpio kmod fdisk e2fsprogs python3),
# prints the cache folder on stdout; in it: `vmlinuz`, `l1.cpio`, `version`. Cached in
# ${ACTOR_VMM_CACHE:-~/.cache/actor-vmm}/nested-<hash of this script> (older ones are removed); idempotent,
# safe to run concurrently.
set -euo pipefail
self=$(readlink -f "$0")
hash=$(sha256sum "$self" | cut -c1-12)
cache=${ACTOR_VMM_CACHE:-$HOME/.cache/actor-vmm}/nested-$hash
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
log() { echo "l1-setup: $*" >&2; }

missing=()
for p in qemu-system-x86 busybox-static cpio kmod fdisk e2fsprogs python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing ${missing[*]} and not root: cannot install"; exit 3; }
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -s "$cache/vmlinuz" ] && [ -s "$cache/l1.cpio" ]; then
  echo "$cache"
  exit 0
fi
cd "$cache"
for old in "$(dirname "$cache")"/nested-[0-9a-f]*; do [ "$old" = "$cache" ] || rm -rf "$old"; done
# The generic kernel the meta-package points at.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then apt-get update -qq >&2; fi
image=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
[ -n "$image" ] || { log "cannot resolve linux-image-amd64"; exit 1; }
log "downloading $image"
rm -rf pkg root initramfs && mkdir -p pkg root
(cd pkg && apt-get download -q "$image" >&2)
dpkg-deb -x pkg/*.deb root
version=$(basename root/boot/vmlinuz-* | sed 's/^vmlinuz-//')
depmod -b root "$version"

# Modules in load order: each wanted module's dependencies first, each file once.
mkdir -p initramfs/{bin,dev,proc,sys,host,upper,newroot,lib/modules}
: > initramfs/modules.order
for m in virtio_pci kvm kvm_amd 9p 9pnet_virtio overlay tun af_packet; do
  modprobe -d root -S "$version" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r file; do
  name=$(basename "$file"); name=${name%%.ko*}
  case "$file" in
    *.ko.xz) xz -dc "$file" > "initramfs/lib/modules/$name.ko" ;;
    *.ko.zst) zstd -qdc "$file" > "initramfs/lib/modules/$name.ko" ;;
    *) cp "$file" "initramfs/lib/modules/$name.ko" ;;
  esac
  echo "$name" >> initramfs/modules.order
done
log "modules: $(tr '\n' ' ' < initramfs/modules.order)"
cp /bin/busybox initramfs/bin/busybox

cat > initramfs/init <<'INIT'
#!/bin/busybox sh
# L1's init (Tests/Nested/l1-setup.sh): modules, host root (9p, read-only) + tmpfs overlay, the output
# share, chroot, run avm_run=SCRIPT with its output in avm_out=DIR, write DIR/l1.status, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m.ko || echo "L1: insmod $m failed"; done
for word in $(cat /proc/cmdline); do
  case "$word" in avm_out=*) out=${word#avm_out=} ;; avm_run=*) run=${word#avm_run=} ;; esac
done
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /host
mount -t tmpfs -o size=2G upper /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/host,upperdir=/upper/u,workdir=/upper/w /newroot
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm && mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs run /newroot/run
mkdir -p "/newroot$out" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out "/newroot$out"
ip link set lo up
echo "ACTORVMM-L1-READY uptime=$(cut -d' ' -f1 /proc/uptime) kvm=$(test -c /dev/kvm && echo yes || echo no)"
chroot /newroot /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  ACTOR_VMM_NESTED_L1=1 /bin/bash "$run" "$out"
status=$?
echo "$status" > "/newroot$out/l1.status"
echo "ACTORVMM-L1-DONE status=$status uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
umount "/newroot$out"
poweroff -f
INIT
chmod +x initramfs/init
python3 "$(dirname "$self")/../Linux/newc.py" initramfs l1.cpio.tmp >&2
cp root/boot/vmlinuz-"$version" vmlinuz.tmp
echo "$version" > version
mv l1.cpio.tmp l1.cpio && mv vmlinuz.tmp vmlinuz
rm -rf pkg root initramfs
log "ready: Linux $version"
echo "$cache"
