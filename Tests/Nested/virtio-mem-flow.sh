#!/usr/bin/env bash
# The nested tier's virtio-mem check (Tests/Nested/checks.sh, docs/hotplug.md): the hotplug guest
# (Tests/Linux/hotplug-guest.sh: the microVM kernel with hotplug.config, whose virtio_mem driver is built in,
# and an init that prints "ACTORVMM-HOTPLUG … mem_kb=…" whenever MemTotal changes) booted with 256 MiB and
# 512 MiB of virtio-mem hotplug RAM (one VM has one hotplug_method, so this is a boot of its own beside
# hotplug-flow.sh's ACPI one), then driven through actor-vmm-remote:
#   resize --memory 512M: the driver plugs 256 MiB and the kernel onlines it (MEMORY_HOTPLUG_DEFAULT_ONLINE):
#     MemTotal grows by 256 MiB; vm.info's config has hotplugged_size 256 MiB (what was asked), vm.counters'
#     mem0 plugged_size 256 MiB and vm.info's memory_actual_size 512 MiB (what the driver plugged);
#   resize --memory 256M: the driver unplugs the blocks (it must offline or fake-offline the memory first):
#     MemTotal falls back, hotplugged_size leaves vm.info, plugged_size 0, memory_actual_size 256 MiB;
#   power-button: the guest powers off, the VMM exits 0.
# Prints one "VIRTIO-MEM STEP NAME ok|FAILED" line per step for the host's test and "VIRTIO-MEM MEM …"
# lines with the figures; exits 0 when every step did what it should.
#   virtio-mem-flow.sh VMM REMOTE GUEST-DIR DIR   (GUEST-DIR: vmlinux and initramfs.cpio)
set -u
vmm=$1 remote=$2 guest=$3 dir=$4
socket=/tmp/actor-vmm-nested-virtio-mem.sock serial=$dir/serial.txt
FLOW_PREFIX=VIRTIO-MEM
# shellcheck source=Tests/Nested/flow-steps.sh
. "$(dirname "$0")/flow-steps.sh"
r() { "$remote" --api-socket "$socket" "$@"; }
text() { tr -d '\r' 2>/dev/null < "$serial"; }  # the guest's tty writes \r\n
lines() { text | grep -a "^ACTORVMM-HOTPLUG"; }  # the ready line and every change after it
mem() { lines | tail -n 1 | sed -n 's/.* mem_kb=\([0-9]*\) .*/\1/p'; }
mem_at_least() { local m; m=$(mem); [ -n "$m" ] && [ "$m" -ge "$1" ]; }
mem_at_most() { local m; m=$(mem); [ -n "$m" ] && [ "$m" -le "$1" ]; }
info_has() { r info | grep -q -- "$1"; }
plugged() { r counters | grep -q -- "\"mem0\":{[^}]*\"plugged_size\":$1[,}]"; }
mib=1048576

rm -f "$socket"
# memhp_default_state=online_movable: the kernel onlines the plugged memory into ZONE_MOVABLE, where it puts
# only pages it can migrate, so the driver can take every block back. With the default (online: ZONE_NORMAL)
# a shrink from 512 to 256 MiB left one 4 MiB subblock plugged here (an unmovable kernel page in it).
"$vmm" --api-socket "path=$socket" --kernel "$guest/vmlinux" --initramfs "$guest/initramfs.cpio" \
  --cmdline "console=ttyS0 quiet memhp_default_state=online_movable" --cpus boot=1 --memory size=256M,hotplug_method=virtio-mem,hotplug_size=512M \
  --serial "file=$serial" --console off -v < /dev/null > "$dir/vmm.out" 2> "$dir/vmm.err" &
pid=$!
expect "socket" waitfor 30 test -S "$socket"
ready() { text | grep -aq "^ACTORVMM-HOTPLUG-READY "; }
expect "ready" waitfor 120 ready
expect "nothing-plugged-at-boot" plugged 0
expect "info-actual-256M" info_has "\"memory_actual_size\":$((256 * mib))[,}]"
before=$(mem)
echo "VIRTIO-MEM MEM boot mem_kb=${before:-?}"
# Up by 256 MiB: MemTotal must grow by at least 250 MiB (the memmap of the new memory comes out of it).
expect "resize-memory-512M" r resize --memory 512M
expect "memtotal-grew" waitfor 60 mem_at_least $(( ${before:-0} + 250 * 1024 ))
grown=$(mem)
echo "VIRTIO-MEM MEM grown mem_kb=${grown:-?}"
expect "info-hotplugged-256M" info_has "\"hotplugged_size\":$((256 * mib))[,}]"
expect "counters-plugged-256M" waitfor 30 plugged $((256 * mib))
expect "info-actual-512M" info_has "\"memory_actual_size\":$((512 * mib))[,}]"
echo "VIRTIO-MEM INFO grown: $(r info | grep -o '"hotplugged_size":[0-9]*\|"memory_actual_size":[0-9]*' | tr '\n' ' ')"
# Down again: the driver unplugs the 256 MiB (it offlines the blocks, migrating what the kernel put there).
expect "resize-memory-256M" r resize --memory 256M
expect "memtotal-shrank" waitfor 60 mem_at_most $(( ${before:-0} + 2 * 1024 ))
echo "VIRTIO-MEM MEM shrunk mem_kb=$(mem)"
expect "counters-plugged-0" waitfor 30 plugged 0
expect "info-no-hotplugged" eval '! info_has "\"hotplugged_size\":"'
expect "info-actual-256M-again" info_has "\"memory_actual_size\":$((256 * mib))[,}]"
echo "VIRTIO-MEM INFO shrunk: $(r info | grep -o '"hotplugged_size":[0-9]*\|"memory_actual_size":[0-9]*' | tr '\n' ' ')"
echo "VIRTIO-MEM COUNTERS $(r counters | grep -o '"mem0":{[^}]*}')"
expect "power-button" r power-button
waitfor 60 eval '! kill -0 $pid 2>/dev/null'
kill -0 "$pid" 2>/dev/null && { step "vmm still running after the power button: killing it"; kill -KILL "$pid"; }
wait "$pid"; status=$?
expect "vmm-exit-0" test "$status" = 0
echo "--- serial"; text; echo "--- vmm stderr"; cat "$dir/vmm.err"
exit $failed
