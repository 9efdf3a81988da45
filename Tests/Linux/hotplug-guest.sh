#!/usr/bin/env bash
# Hotplug guest recipe (docs/hotplug.md): the microVM kernel with Tests/Linux/hotplug.config (evdev, memory
# and ACPI PCI hotplug) and the Debian guest's busybox with a different /init, which
#   - runs busybox acpid: a power-button press runs /etc/acpi/PWRF/00000080, which prints
#     "ACTORVMM-POWER-BUTTON" and powers off;
#   - prints "ACTORVMM-HOTPLUG-READY …" once, then a line "ACTORVMM-HOTPLUG cpus=… mem_kb=… disks=… nets=…"
#     whenever one of them changes, onlining every CPU that appears (CPU hotplug needs the guest to online
#     the CPU; memory blocks are onlined by the kernel itself: MEMORY_HOTPLUG_DEFAULT_ONLINE);
#   - prints the kernel's virtio_mem lines (dmesg) as "ACTORVMM-DMESG …" with the ready line and after each
#     change (console=ttyS0 quiet hides them otherwise);
#   - for each virtio disk that appears (the kernel has no file system for it): reads the first line of
#     sector 0, writes "ACTORVMM-GUEST-WROTE-<disk>-<uptime>" to sector 8 (fsync), drops the block cache
#     and reads it back, and prints "ACTORVMM-HOTPLUG-DISK <disk> read=… wrote=… readback=…".
# Everything it prints goes to /dev/console (console=ttyS0). Used by the nested tier's hotplug check
# (Tests/Nested/hotplug-flow.sh).
# Prints the folder holding vmlinux and initramfs.cpio. Builds the kernel once (microvm-kernel.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernel=$("$here/microvm-kernel.sh" "$here/hotplug.config")
out="$kernel/hotplug"
recipe=$(sha256sum "$here/$(basename "$0")" | cut -c1-12)
if [ -s "$out/initramfs.cpio" ] && [ "$(cat "$out/recipe" 2>/dev/null)" = "$recipe" ]; then echo "$out"; exit 0; fi
mkdir -p "$out" && rm -rf "$out/root" && mkdir -p "$out/root"
(cd "$out/root" && cpio -idm --quiet < "$kernel/initramfs.cpio")
cat > "$out/root/init" <<'INIT'
#!/bin/busybox sh
b=/bin/busybox
$b mount -t proc proc /proc
$b mount -t sysfs sys /sys
$b mount -t devtmpfs dev /dev
$b mkdir -p /etc/acpi/PWRF
$b printf '#!/bin/busybox sh\n/bin/busybox echo ACTORVMM-POWER-BUTTON > /dev/console\n/bin/busybox poweroff -f\n' > /etc/acpi/PWRF/00000080
$b chmod +x /etc/acpi/PWRF/00000080
# -d: in the foreground, logging to stderr (the console); without it busybox acpid opens
# /var/log/acpid.log, which this initramfs does not have, and exits.
$b acpid -d -c /etc/acpi -p /acpid.pid &
checked=
disk_check() {  # each new vdX: read sector 0, write sector 8, drop the cache, read sector 8 back
  local d host mark back
  for d in $($b ls /sys/block | $b grep '^vd'); do
    case " $checked " in *" $d "*) continue ;; esac
    checked="$checked $d"
    host=$($b dd if=/dev/$d bs=512 count=1 2>/dev/null | $b tr -d '\000' | $b head -n 1)
    mark="ACTORVMM-GUEST-WROTE-$d-$($b cut -d' ' -f1 /proc/uptime)"
    echo "$mark" | $b dd of=/dev/$d bs=512 seek=8 count=1 conv=sync,fsync 2>/dev/null
    $b blockdev --flushbufs /dev/$d
    back=$($b dd if=/dev/$d bs=512 skip=8 count=1 2>/dev/null | $b tr -d '\000' | $b head -n 1)
    echo "ACTORVMM-HOTPLUG-DISK $d read=$host wrote=$mark readback=$back"
  done
}
state() {
  for c in /sys/devices/system/cpu/cpu[0-9]*; do [ -f $c/online ] && [ "$($b cat $c/online)" = 0 ] && echo 1 > $c/online 2>/dev/null; done
  echo "cpus=$($b cat /sys/devices/system/cpu/online) mem_kb=$($b awk '/MemTotal/ { print $2 }' /proc/meminfo) disks=$($b ls /sys/block | $b grep vd | $b tr '\n' ,) nets=$($b ls /sys/class/net | $b tr '\n' ,)"
}
shown=0
driver_lines() {  # the virtio_mem driver's dmesg lines not printed yet
  local all
  all=$($b dmesg | $b grep -a virtio_mem)
  [ -n "$all" ] || return 0
  echo "$all" | $b tail -n +$((shown + 1)) | while read -r l; do echo "ACTORVMM-DMESG $l"; done
  shown=$(echo "$all" | $b wc -l)
}
last=$(state)
driver_lines
$b echo "ACTORVMM-HOTPLUG-READY inputs=$($b ls /dev/input | $b tr '\n' ,) $last"
while true; do
  $b sleep 1
  now=$(state)
  [ "$now" != "$last" ] && { $b echo "ACTORVMM-HOTPLUG $now"; driver_lines; }
  disk_check
  last=$now
done
INIT
chmod +x "$out/root/init"
python3 "$here/newc.py" "$out/root" "$out/initramfs.tmp" >&2
mv "$out/initramfs.tmp" "$out/initramfs.cpio"
ln -sf ../vmlinux "$out/vmlinux"
rm -rf "$out/root"
echo "$recipe" > "$out/recipe"
echo "$out"
