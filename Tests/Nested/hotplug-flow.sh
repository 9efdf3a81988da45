#!/usr/bin/env bash
# The nested tier's hotplug check (Tests/Nested/checks.sh, docs/hotplug.md): the hotplug guest
# (Tests/Linux/hotplug-guest.sh: the microVM kernel with hotplug.config, an init that runs busybox acpid,
# onlines new CPUs, prints "ACTORVMM-HOTPLUG cpus=… mem_kb=… disks=… nets=…" on each change and reads and
# writes each disk that appears) booted with 2 of 4 vCPUs, 256 MiB + 512 MiB of ACPI hotplug RAM and one NIC
# (eth0), then driven through actor-vmm-remote: CPUs 2 → 4 → 2, RAM 256 → 384 MiB, a disk added (read,
# written, read back by the guest, then removed and gone from vm.info), a NIC added (eth1), the power
# button (the guest powers off, the VMM exits 0). Prints one "HOTPLUG STEP NAME ok|FAILED" line per step
# for the host's test; exits 0 when every step did what it should.
#   hotplug-flow.sh VMM REMOTE GUEST-DIR DISK DIR   (GUEST-DIR: vmlinux and initramfs.cpio; DISK: a raw file)
set -u
vmm=$1 remote=$2 guest=$3 disk=$4 dir=$5
socket=/tmp/actor-vmm-nested-hotplug.sock serial=$dir/serial.txt
FLOW_PREFIX=HOTPLUG
# shellcheck source=Tests/Nested/flow-steps.sh
. "$(dirname "$0")/flow-steps.sh"
r() { "$remote" --api-socket "$socket" "$@"; }
# The guest's state lines; `mark` remembers how many there are, `since` greps only the newer ones, so each
# step waits for a change that came after its own request.
text() { tr -d '\r' 2>/dev/null < "$serial"; }  # the guest's tty writes \r\n
lines() { text | grep -a "^ACTORVMM-HOTPLUG "; }
mark() { seen=$(lines | wc -l); }
since() { lines | tail -n +$((seen + 1)) | grep -q -- "$1"; }
last_mem() { lines | tail -n 1 | sed -n 's/.* mem_kb=\([0-9]*\) .*/\1/p'; }
mem_above() { local m; m=$(lines | tail -n +$((seen + 1)) | sed -n 's/.* mem_kb=\([0-9]*\) .*/\1/p' | tail -n 1); [ -n "$m" ] && [ "$m" -gt "$1" ]; }
info_lacks() { ! r info | grep -q "$1"; }

# The disk: a pattern in sector 0 for the guest to read, zeros where it writes (sector 8).
printf 'ACTORVMM-L1-DISK-PATTERN-%s\n' "$RANDOM$RANDOM" | dd of="$disk" bs=512 count=1 conv=sync,notrunc 2>/dev/null
truncate -s 4M "$disk"
pattern=$(head -n 1 "$disk")
rm -f "$socket"
"$vmm" --api-socket "path=$socket" --kernel "$guest/vmlinux" --initramfs "$guest/initramfs.cpio" \
  --cmdline "console=ttyS0 quiet" --cpus boot=2,max=4 --memory size=256M,hotplug_method=acpi,hotplug_size=512M \
  --net "tap=avmh0,mac=52:54:00:12:34:60,ip=192.168.250.1,mask=255.255.255.0" \
  --serial "file=$serial" --console off -v < /dev/null > "$dir/vmm.out" 2> "$dir/vmm.err" &
pid=$!
expect "socket" waitfor 30 test -S "$socket"
ready() { text | grep -aq "^ACTORVMM-HOTPLUG-READY .*cpus=0-1 .*nets=eth0,"; }
expect "ready" waitfor 120 ready
seen=0
mark; expect "resize-cpus-4" r resize --cpus 4
expect "cpus-0-3" waitfor 60 since "cpus=0-3 "
mark; expect "resize-cpus-2" r resize --cpus 2
expect "cpus-0-1" waitfor 60 since "cpus=0-1 "
before=$(last_mem)
mark; expect "resize-memory-384M" r resize --memory 384M
expect "memtotal-grew" waitfor 60 mem_above "${before:-0}"
step "mem_kb before=${before:-?} after=$(last_mem)"
mark; expect "add-disk" r add-disk "path=$disk,id=hotdisk"
expect "disk-appeared" waitfor 60 since "disks=vd"
disk_io() { text | grep -aq "^ACTORVMM-HOTPLUG-DISK vd[a-z] read=$pattern wrote=\(ACTORVMM-GUEST-WROTE-[^ ]*\) readback=\1\$"; }
expect "disk-io" waitfor 30 disk_io
mark; expect "add-net" r add-net "tap=avmh1,mac=52:54:00:12:34:61,ip=192.168.251.1,mask=255.255.255.0,id=hotnet"
expect "eth1" waitfor 60 since "nets=eth0,eth1,"
mark; expect "remove-device" r remove-device hotdisk
expect "disk-gone-in-guest" waitfor 60 since "disks= "
expect "disk-gone-from-info" waitfor 30 info_lacks hotdisk
echo "HOTPLUG INFO ids: $(r info | grep -o '"id":"[^"]*"' | sort -u | tr '\n' ' ')"  # config and device tree
wrote=$(text | grep -ao "wrote=ACTORVMM-GUEST-WROTE-[^ ]*" | head -n 1 | cut -d= -f2)
expect "disk-file-has-guest-write" test -n "$wrote" -a "$(dd if="$disk" bs=512 skip=8 count=1 2>/dev/null | tr -d '\000' | head -n 1)" = "$wrote"
expect "power-button" r power-button
waitfor 60 eval '! kill -0 $pid 2>/dev/null'
kill -0 "$pid" 2>/dev/null && { step "vmm still running after the power button: killing it"; kill -KILL "$pid"; }
wait "$pid"; status=$?
power() { text | grep -aq "^ACTORVMM-POWER-BUTTON"; }
expect "guest-saw-power-button" power
expect "vmm-exit-0" test "$status" = 0
step "vmm-exit=$status"
echo "--- serial"; text; echo "--- vmm stderr"; cat "$dir/vmm.err"
exit $failed
