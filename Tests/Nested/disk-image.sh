#!/usr/bin/env bash
# The nested tier's disk guest (docs/nested.md): a raw disk image with an MBR partition table and an ext4
# root file system on partition 1 (sfdisk, mkfs.ext4 -d), holding busybox and an /sbin/init that
#   - prints the online CPUs, eth0's MAC and 16 bytes read from /dev/hwrng (virtio-rng),
#   - configures eth0 as 192.168.249.2/24 and pings 192.168.249.1 (Cloud Hypervisor's default TAP address),
#   - writes all of that to /avm-result.txt on the root file system, syncs and remounts it read-only,
#   - prints "ACTORVMM-DISK-INIT ..." and, unless the command line says avm_wait (then it prints a tick
#     every second until stopped from outside), waits 2 s (for the host's ping) and powers off;
#   - or, with avm_ack=N on the command line, runs the snapshot/migration workload instead (below).
# Booted by the microVM kernel (Tests/Linux/microvm-kernel.sh: ext4 and virtio built in) with
# `root=/dev/vda1 rw` and no initramfs. The host reads the result back with
# `debugfs -R 'cat /avm-result.txt' 'IMAGE?offset=1048576'`.
#
# Prints the image's path; cached in ${ACTOR_VMM_CACHE:-~/.cache/actor-vmm}/nested-disk-<hash of this
# script>/disk.raw (older ones are removed; copy it before use: the guest writes to it). Needs
# busybox-static and fdisk (Tests/Nested/l1-setup.sh installs them).
set -euo pipefail
self=$(readlink -f "$0")
cache=${ACTOR_VMM_CACHE:-$HOME/.cache/actor-vmm}/nested-disk-$(sha256sum "$self" | cut -c1-12)
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
cd "$cache"
if [ -s disk.raw ]; then echo "$cache/disk.raw"; exit 0; fi
for old in "$(dirname "$cache")"/nested-disk-*; do [ "$old" = "$cache" ] || rm -rf "$old"; done
rm -rf root && mkdir -p root/{bin,sbin,dev,proc,sys,tmp}
cp /bin/busybox root/bin/busybox
cat > root/sbin/init <<'INIT'
#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev 2>/dev/null  # mounted already where the kernel has DEVTMPFS_MOUNT
# avm_ack=N on the command line: the snapshot and migration workload (Tests/Nested/snapshot-flow.sh) instead
# of the checks below. Appends "record n" to /avm-log.txt, fsyncs the file, and only then prints "ACK n"
# on the console, for n = 1...N, then remounts / read-only and powers off: every ACK the console shows is a
# record that must be on the disk. A second process prints a tick every second meanwhile.
read -r cmdline < /proc/cmdline
for word in $cmdline; do
  case $word in avm_ack=*) records=${word#avm_ack=} ;; esac
done
if [ -n "${records:-}" ]; then
  read -r up rest < /proc/uptime
  echo "ACTORVMM-ACK-START records=$records cpus=$($B cat /sys/devices/system/cpu/online) uptime=$up"
  # The console also gets a tick every second (with avm_diag, /proc/interrupts every 5 s too).
  (
    t=0
    while :; do
      $B sleep 1; t=$((t + 1))
      read -r up rest < /proc/uptime
      echo "TICK $up"
      case "$cmdline" in *avm_diag*) [ $((t % 5)) = 0 ] && $B cat /proc/interrupts ;; esac
    done
  ) &
  n=0
  while [ "$n" -lt "$records" ]; do
    n=$((n + 1))
    echo "record $n" >> /avm-log.txt
    $B sync /avm-log.txt || { echo "ACTORVMM-ACK-FAILED fsync of record $n"; break; }
    read -r up rest < /proc/uptime
    echo "ACK $n uptime=$up"
  done
  $B mount -o remount,ro /
  echo "ACTORVMM-ACK-DONE n=$n"
  $B poweroff -f
fi
cpus=$($B cat /sys/devices/system/cpu/online)
mac=$($B cat /sys/class/net/eth0/address 2>/dev/null || echo none)
rng=$($B dd if=/dev/hwrng bs=16 count=1 2>/dev/null | $B od -An -tx1 | $B tr -d ' \n')
[ -n "$rng" ] || rng=none
$B ip addr add 192.168.249.2/24 dev eth0 && $B ip link set eth0 up
if $B ping -c 3 -W 3 192.168.249.1 >/dev/null 2>&1; then ping=ok; else ping=fail; fi
root=$($B awk '$2 == "/" && $1 != "rootfs" { print $1 ":" $3 ":" substr($4, 1, 2) }' /proc/mounts)
line="cpus=$cpus mac=$mac rng=$rng ping=$ping root=$root"
echo "$line" > /avm-result.txt
$B sync
# Read-only from here: the journal is checkpointed, so the image is consistent even when the VM is then
# shut down from outside (the API check), and debugfs on the host can read it.
$B mount -o remount,ro /
echo "ACTORVMM-DISK-INIT $line uptime=$($B cut -d' ' -f1 /proc/uptime)"
if $B grep -q avm_wait /proc/cmdline; then
  while :; do $B sleep 1; echo "ACTORVMM-DISK-TICK $($B cut -d' ' -f1 /proc/uptime)"; done
fi
$B sleep 2
$B poweroff -f
INIT
chmod +x root/sbin/init
rm -f part.img disk.tmp
mkfs.ext4 -q -F -L root -d root part.img 31M >/dev/null
truncate -s 32M disk.tmp
echo 'start=2048, type=83' | sfdisk -q disk.tmp >/dev/null
dd if=part.img of=disk.tmp bs=512 seek=2048 conv=notrunc,sparse status=none
rm -rf root part.img
mv disk.tmp disk.raw
echo "$cache/disk.raw"
