#!/usr/bin/env bash
# The guest of Benchmarks/nested-io-vs-qemu.sh: Debian's cloud kernel (Tests/Linux/debian-guest.sh, bzImage,
# unmodified) and an initramfs that holds everything the guest runs, so that it needs no root disk and
# its only virtio disk is the scratch disk under test:
#   - the cloud kernel's virtio modules and busybox (unpacked from debian-guest.sh's initramfs),
#   - fio 3.33 (Debian bookworm's upstream tarball, sha256-checked, built here static with libaio from the
#     libaio-dev .deb: Debian's own fio links librados/librbd/libgfapi, about 100 MB of closure),
#   - iperf3 and sockperf as Debian packages them (installed on the host with apt-get, which also gives L1
#     the servers through the shared root) with the shared libraries `ldd` names,
#   - an /init that loads the modules, sets eth0 to 192.168.250.2/24, runs the benchmark steps named on the
#     kernel command line (avm_steps=a,b,...; avm_rt=SECONDS each) and prints one "AVMIO STEP ..." line per
#     step on ttyS0, then "AVMIO done" and powers off.
#
# Prints the cache folder (in it: vmlinuz, initramfs.cpio). Cached in
# ${ACTOR_VMM_CACHE:-~/.cache/actor-vmm}/nested-io-<hash of this script>; idempotent, safe to run
# concurrently. First run: about a minute (fio's build), then instant.
set -euo pipefail
self=$(readlink -f "$0")
root=$(cd "$(dirname "$self")/.." && pwd)
cache=${ACTOR_VMM_CACHE:-$HOME/.cache/actor-vmm}/nested-io-$(sha256sum "$self" | cut -c1-12)
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
debian=$("$root/Tests/Linux/debian-guest.sh")
if [ -s "$cache/initramfs.cpio" ] && [ "$(cat "$cache/kernel" 2>/dev/null)" = "$(cat "$debian/version")" ]; then
  echo "$cache"
  exit 0
fi
log() { echo "nested-io-guest: $*" >&2; }
for old in "$(dirname "$cache")"/nested-io-[0-9a-f]*; do [ "$old" = "$cache" ] || rm -rf "$old"; done
cd "$cache"
start=$SECONDS

missing=()
for p in iperf3 sockperf build-essential cpio curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "missing ${missing[*]} and not root: cannot install"; exit 3; }
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# fio, static, from the tarball Debian bookworm's fio 3.33-3 is built from (its own cache folder: it does
# not change with this script).
fio_url=http://deb.debian.org/debian/pool/main/f/fio/fio_3.33.orig.tar.gz
fio_sha=d2410e13e0f379d061d077cc5ae325835bb7c6186aa7bafc1df954cbc9b014fc
fio_dir=$(dirname "$cache")/fio-3.33-static
mkdir -p "$fio_dir"
if [ ! -x "$fio_dir/fio" ]; then
  (cd "$fio_dir" && rm -rf build && mkdir build)
  pushd "$fio_dir" >/dev/null
  log "downloading $fio_url and libaio-dev"
  curl -sSf -o build/fio.tar.gz "$fio_url"
  echo "$fio_sha  build/fio.tar.gz" | sha256sum -c --quiet -
  (cd build && apt-get download -q libaio-dev >/dev/null 2>&1 && dpkg-deb -x libaio-dev_*.deb aio)
  tar -xzf build/fio.tar.gz -C build
  log "building fio (static)"
  (cd build/fio-3.33 &&
    export C_INCLUDE_PATH=$fio_dir/build/aio/usr/include LIBRARY_PATH=$fio_dir/build/aio/usr/lib/x86_64-linux-gnu &&
    ./configure --build-static --disable-native > ../configure.log 2>&1 &&
    grep -q "Linux AIO support  *yes" ../configure.log &&
    nice make -j"$(nproc)" fio > ../make.log 2>&1) || { log "fio build failed: $fio_dir/build/*.log"; exit 1; }
  strip -o fio.tmp build/fio-3.33/fio && mv fio.tmp fio
  rm -rf build
  popd >/dev/null
fi

rm -rf initramfs && mkdir initramfs
(cd initramfs && cpio -idm --quiet < "$debian/initramfs.cpio")
rm -f initramfs/init
mkdir -p initramfs/usr/bin initramfs/tmp initramfs/lib64
cp "$fio_dir/fio" initramfs/usr/bin/fio
for bin in /usr/bin/iperf3 /usr/bin/sockperf; do
  cp "$bin" initramfs/usr/bin/
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/lib64\// { print $1 }'); do
    mkdir -p "initramfs$(dirname "$lib")"
    cp -L "$lib" "initramfs$lib"
  done
done

cat > initramfs/init <<'INIT'
#!/bin/busybox sh
# Benchmarks/nested-io-guest.sh: the steps named by avm_steps=, each avm_rt= seconds, on /dev/vda and eth0.
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev 2>/dev/null
$B mount -t tmpfs tmp /tmp
export PATH=/usr/bin:/bin
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover virtio_net; do
  [ -f /lib/modules/$m.ko ] && $B insmod /lib/modules/$m.ko
done
rt=10 steps=
for word in $($B cat /proc/cmdline); do
  case "$word" in avm_rt=*) rt=${word#avm_rt=} ;; avm_steps=*) steps=$($B echo "${word#avm_steps=}" | $B tr , ' ') ;; esac
done
peer=192.168.250.1
$B ip link set lo up
$B ip addr add 192.168.250.2/24 dev eth0
$B ip link set eth0 up
up=no
for i in 1 2 3 4 5 6 7 8 9 10; do $B ping -c 1 -W 2 $peer >/dev/null 2>&1 && { up=yes; break; }; done
clock=$($B cat /sys/devices/system/clocksource/clocksource0/current_clocksource)
echo "AVMIO ready uptime=$($B cut -d' ' -f1 /proc/uptime) disk=$($B cat /sys/block/vda/size 2>/dev/null) link=$up clock=$clock"
# One fio job on the raw disk, its terse (v3) line. --lat_percentiles: the percentiles are of the total
# latency (submission to completion): with one L1 CPU a request often completes inside io_submit (the
# VMM runs while the vCPU is out), so the completion latency alone (clat) is mostly 0.
fio_step() {  # NAME RW BS DEPTH
  echo "AVMIO $1 $(fio --name=$1 --filename=/dev/vda --rw=$2 --bs=$3 --iodepth=$4 --ioengine=libaio --direct=1 \
    --runtime=$rt --ramp_time=1 --time_based --norandommap --output-format=terse --terse-version=3 \
    --lat_percentiles=1 --percentile_list=50:99 2>&1 | $B tr '\n' ' ')"
}
iperf_step() {  # NAME [-R]: the receiver's summary line (Mbit/s)
  echo "AVMIO $1 $(iperf3 -c $peer -t $rt -O 1 -i 0 -f m $2 2>&1 | $B grep -E 'receiver|error' | $B tr '\n' ' ')"
}
for step in $steps; do
  case $step in
    randread-qd1) fio_step $step randread 4k 1 ;;
    randwrite-qd1) fio_step $step randwrite 4k 1 ;;
    randread-qd32) fio_step $step randread 4k 32 ;;
    randwrite-qd32) fio_step $step randwrite 4k 32 ;;
    seqread) fio_step $step read 1m 8 ;;
    seqwrite) fio_step $step write 1m 8 ;;
    net-tx) iperf_step $step ;;
    net-rx) iperf_step $step -R ;;
    net-rr) echo "AVMIO $step $(sockperf ping-pong --tcp -i $peer -p 11111 -t $rt -m 64 --no-rdtsc 2>&1 \
              | $B grep -E 'Valid Duration|percentile (50|99)\.000|ERROR' | $B tr '\n' ' ')" ;;
    dmesg) $B dmesg | $B sed 's/^/AVMIO dmesg /' ;;  # these two for diagnosis, not measurements
    features) for f in /sys/bus/virtio/devices/*/features; do echo "AVMIO features $f $($B cat $f)"; done ;;
    interrupts) $B grep -E 'CPU|virtio|LOC|TLB|RES|CAL' /proc/interrupts | $B sed 's/^/AVMIO interrupts /' ;;
    *) echo "AVMIO $step unknown" ;;
  esac
done
echo "AVMIO done uptime=$($B cut -d' ' -f1 /proc/uptime)"
$B poweroff -f
INIT
chmod +x initramfs/init
python3 "$root/Tests/Linux/newc.py" initramfs initramfs.tmp >&2
cp "$debian/vmlinuz" vmlinuz.tmp
mv vmlinuz.tmp vmlinuz && mv initramfs.tmp initramfs.cpio && cp "$debian/version" kernel
rm -rf initramfs
log "ready in $((SECONDS - start)) s: Linux $(cat kernel), initramfs $(du -h initramfs.cpio | cut -f1)"
echo "$cache"
