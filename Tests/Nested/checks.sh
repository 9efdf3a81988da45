#!/usr/bin/env bash
# The nested tier's batch (docs/nested.md): runs in L1 (Tests/Nested/run-l1.sh) as root on L1's /dev/kvm,
# a KVM over (emulated) SVM, and leaves each check's record in OUT/checks for the host's Swift tests
# (Tests/EndToEndTests/NestedKvmTests.swift), which assert on them one by one:
#   NAME.log (stamped output, Tests/Nested/stamp.py), NAME.status, NAME.seconds, NAME/ (artifacts).
# OUT/env (written by the host) names the inputs: VMM REMOTE GUEST DEBIAN MICROVM DISK HOTPLUG [XCTEST]
# [NESTED_ONLY].
# NESTED_ONLY (a regular expression on check names) runs a subset.
set -u
out=$1
# shellcheck source=/dev/null
. "$out/env"
here=$(cd "$(dirname "$0")" && pwd)
checks=$out/checks
work=/run/actor-vmm-nested  # L1's own tmpfs
mkdir -p "$checks" "$work"
stamp() { python3 "$here/stamp.py" "$@"; }
selected() { [[ "$1" =~ ${NESTED_ONLY:-.} ]]; }
# The network of the disk guests. The command-line checks use Cloud Hypervisor's README value verbatim,
# `tap=,mac=,ip=,mask=`: the VMM creates vmtapN with Cloud Hypervisor's default 192.168.249.1/24 and picks
# a random MAC (the guest's init takes .2). The API check names its TAP and MAC (disk_net).
CH_NET="tap=,mac=,ip=,mask="
DISK_MAC=52:54:00:12:34:58
disk_net() { echo "tap=avmd$1,mac=$DISK_MAC,ip=192.168.249.1,mask=255.255.255.0"; }

# 1. The test guest's device suite, as VirtioTests on the bare host, with compatibility mode off, under each
#    hand-off strategy and both event-loop placements. The host checks disk A's pattern, disk B unchanged,
#    the console file and the TAP peer's record.
devices() {  # NAME HANDOFF PLACEMENT
  local name=$1 dir=$checks/$1 tap=avmt$RANDOM
  mkdir -p "$dir"
  truncate -s 1M "$work/$name-a.raw"
  python3 -c 'import sys; sys.stdout.buffer.write(bytes((i * 131 + 7) & 255 for i in range(65536)))' > "$work/$name-b.raw"
  python3 "$here/tap-peer.py" "$tap" "$dir/peer.txt" &
  local peer=$!
  stamp "$checks/$name" 120 "$VMM" --kernel "$GUEST" --cmdline "tests=pci,blk,rng,console,net" \
    --memory size=64M --serial tty --compat off --handoff "$2" --event-loops "$3" \
    --disk "path=$work/$name-a.raw" --disk "path=$work/$name-b.raw,readonly=on" --rng \
    --console "file=$dir/console.txt" --net "tap=$tap,mac=52:54:00:12:34:56,ip=192.168.248.1,mask=255.255.255.0"
  kill -TERM "$peer"; wait "$peer"
  cp "$work/$name-a.raw" "$dir/disk-a.raw"; cp "$work/$name-b.raw" "$dir/disk-b.raw"
}
for handoff in inline enqueue task; do
  for placement in shared per-device; do
    selected "devices-$handoff-$placement" && devices "devices-$handoff-$placement" "$handoff" "$placement"
  done
done

# 2. Debian's cloud kernel, unmodified, bzImage and PVH, 1 and 4 vCPUs, to /init's marker and power-off.
for file in vmlinuz vmlinux; do
  for cpus in 1 4; do
    name=debian-$file-${cpus}cpu
    selected "$name" || continue
    stamp "$checks/$name" 180 "$VMM" --kernel "$DEBIAN/$file" --initramfs "$DEBIAN/initramfs.cpio" \
      --cpus "boot=$cpus" --memory size=512M --serial tty --console off --cmdline "console=ttyS0 quiet" -v
  done
done

# 3. Cloud Hypervisor's README command lines, only paths changed: the microVM kernel, a partitioned raw disk
#    with an ext4 root, 4 vCPUs, 1 GiB, a TAP. While the guest runs, L1 pings it and records its MAC as
#    L1's neighbour table saw it; afterwards the image goes to the share for the host to read.
host_side() {  # RESULT: ping the guest until it answers, then record the neighbour entry
  local i
  for i in $(seq 1 300); do
    if busybox ping -c 1 -W 1 192.168.249.2 >/dev/null 2>&1; then
      echo "ping=ok neighbour=$(ip neigh show 192.168.249.2 | awk '{ for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1) }')" > "$1"
      return
    fi
    sleep 0.2
  done
  echo "ping=fail neighbour=none" > "$1"
}
disk() {  # NAME VMM-ARGUMENTS...
  local name=$1 dir=$checks/$1
  shift
  mkdir -p "$dir"
  cp --sparse=always "$DISK" "$work/$name.raw"
  host_side "$dir/host.txt" &
  local pinger=$!
  stamp "$checks/$name" 180 "$VMM" "$@"
  kill "$pinger" 2>/dev/null; wait "$pinger" 2>/dev/null
  [ -s "$dir/host.txt" ] || echo "ping=fail neighbour=none" > "$dir/host.txt"
  cp --sparse=always "$work/$name.raw" "$dir/disk.raw"
}
selected disk-hvc0 && disk disk-hvc0 --kernel "$MICROVM/vmlinux" --disk "path=$work/disk-hvc0.raw" \
  --cmdline "console=hvc0 root=/dev/vda1 rw" --cpus boot=4 --memory size=1024M --net "$CH_NET"
selected disk-serial && disk disk-serial --kernel "$MICROVM/vmlinux" --console off --serial tty \
  --disk "path=$work/disk-serial.raw" --cmdline "console=ttyS0 root=/dev/vda1 rw" --cpus boot=4 \
  --memory size=1024M --net "$CH_NET" --rng
# The hvc0 line with a queue per vCPU on the disk and the NIC, each queue (pair) on a loop of its own:
# Linux's multi-queue virtio-blk and virtio-net drive the VMM's queue workers (docs/devices.md).
selected disk-perqueue && disk disk-perqueue --kernel "$MICROVM/vmlinux" --disk "path=$work/disk-perqueue.raw,num_queues=4" \
  --cmdline "console=hvc0 root=/dev/vda1 rw" --cpus boot=4 --memory size=1024M --net "$CH_NET,num_queues=8" \
  --event-loops per-queue -v

# 4. The same guest through the REST API with actor-vmm-remote: create, boot, pause, resume, shutdown.
if selected api; then
  mkdir -p "$checks/api"
  cp --sparse=always "$DISK" "$work/api.raw"
  NET="$(disk_net 3)" stamp "$checks/api" 180 bash "$here/api-flow.sh" "$VMM" "$REMOTE" "$MICROVM/vmlinux" \
    "$work/api.raw" "$checks/api"
  cp --sparse=always "$work/api.raw" "$checks/api/disk.raw"
fi

# 4b. Hotplug with Linux (docs/hotplug.md): the hotplug guest (Tests/Linux/hotplug-guest.sh) driven through
#     actor-vmm-remote: CPUs 2 -> 4 -> 2, RAM grown, a disk added, used and removed, a NIC added, the
#     power button (Tests/Nested/hotplug-flow.sh).
if [ -n "${HOTPLUG:-}" ] && selected hotplug; then
  mkdir -p "$checks/hotplug"
  rm -f "$work/hotplug.raw"
  stamp "$checks/hotplug" 180 bash "$here/hotplug-flow.sh" "$VMM" "$REMOTE" "$HOTPLUG" "$work/hotplug.raw" \
    "$checks/hotplug"
fi
# 4c. virtio-mem with Linux: the same guest booted with hotplug_method=virtio-mem (one VM has one method):
#     MemTotal up by 256 MiB after `resize --memory 512M`, down again after `resize --memory 256M`, vm.info's
#     hotplugged_size following (Tests/Nested/virtio-mem-flow.sh).
if [ -n "${HOTPLUG:-}" ] && selected hotplug-virtio-mem; then
  mkdir -p "$checks/hotplug-virtio-mem"
  stamp "$checks/hotplug-virtio-mem" 240 bash "$here/virtio-mem-flow.sh" "$VMM" "$REMOTE" "$HOTPLUG" \
    "$checks/hotplug-virtio-mem"
fi

# 5. Linux across a snapshot restored in a new VMM process, and across a live migration over unix: between
#    two VMM processes, while it appends fsynced records to its ext4 root and acknowledges each on its
#    console (Tests/Nested/snapshot-flow.sh); afterwards the image goes to the share for the host's e2fsck.
#    The switch comes after ACK 10; a live migration takes as long as the guest needs for 70-110 records,
#    so that guest writes 250; the pause comes some 25 records after ACK 10, so the restored one writes 80.
for mode in snapshot migration; do
  name=linux-$mode
  selected "$name" || continue
  mkdir -p "$checks/$name"
  cp --sparse=always "$DISK" "$work/$name.raw"
  records=80; [ "$mode" = migration ] && records=250
  AFTER=10 RECORDS=$records stamp "$checks/$name" 300 bash "$here/snapshot-flow.sh" "$mode" "$VMM" "$REMOTE" \
    "$MICROVM/vmlinux" "$work/$name.raw" "$checks/$name"
  cp --sparse=always "$work/$name.raw" "$checks/$name/disk.raw"
done

# 6. The project's own KVM suites, run by the test bundle the host built (its nested suite skips in L1).
#    Left out: the Linux suites (kvm_pvm's compatibility-mode boots; Linux on this KVM is checks 2-4 above),
#    TerminalTests (the host terminal's handling; its 100 KB serial flood alone outlasts a loaded L1's
#    minute and a half) and the suites of bad command lines and API requests (refused before any KVM call). L1 has one CPU, so everything else shares it: 600 s is about twice an idle run.
#    If their output stops for two minutes, every thread of the test bundle and its VMMs is recorded (state,
#    kernel wait channel and stack) in checks/suites/stalls.txt, which the host's test prints on failure.
stall_watch() {  # LOG DUMP: while LOG does not grow for 120 s, append a dump of the stuck processes to DUMP
  local size last=-1 quiet=0
  while sleep 10; do
    size=$(stat -c %s "$1" 2>/dev/null || echo 0)
    if [ "$size" = "$last" ]; then quiet=$((quiet + 10)); else quiet=0; fi
    last=$size
    if [ "$quiet" -ge 120 ]; then
      quiet=0
      {
        echo "=== output stalled for 120 s (L1 uptime $(cut -d' ' -f1 /proc/uptime) s)"
        ps -eLo pid,tid,ppid,stat,wchan:32,comm,args | grep -E "actor-vmm|ActorVmm|PID"
        local p t
        for p in $(pgrep -f "actor-vmm|ActorVmmPackageTests"); do
          for t in /proc/"$p"/task/*; do
            echo "--- pid $p tid ${t##*/} $(cat "$t/comm" 2>/dev/null)"; head -8 "$t/stack" 2>/dev/null
          done
        done
      } >> "$2" 2>&1
    fi
  done
}
if [ -n "${XCTEST:-}" ] && selected suites; then
  mkdir -p "$checks/suites"
  stall_watch "$checks/suites.log" "$checks/suites/stalls.txt" &
  watcher=$!
  (cd "$ROOT" && NO_COLOR=1 stamp "$checks/suites" 600 "$XCTEST" --testing-library swift-testing \
    --filter 'EndToEndTests|VcpuLifecycleTests|CompatEndToEndTests' \
    --skip 'LinuxBootTests|LinuxHotplugTests|LinuxSnapshotTests|TerminalTests|BadInputTests|ApiBadInputEndToEndTests|ClientFaultEndToEndTests')
  kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null
fi
exit 0
