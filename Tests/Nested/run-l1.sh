#!/usr/bin/env bash
# Boots the nested tier's L1 machine (Tests/Nested/l1-setup.sh, docs/nested.md) and runs SCRIPT in it, as
# root, chrooted into the host's own root file system (read-only 9p + tmpfs overlay: every host path is
# the same in L1). SCRIPT gets OUT as $1: a host directory shared read-write at the same path, for its
# results. Prints nothing on stdout; exits with SCRIPT's status (124 on timeout, 125 if L1 never ran it).
#
#   Tests/Nested/run-l1.sh SCRIPT [OUT]   (OUT defaults to a new directory under /tmp, kept)
#
# Environment: ACTOR_VMM_NESTED_TIMEOUT (seconds, default 900). Writes to OUT: l1-console.log (L1's serial
# console), l1-ready-seconds (QEMU start to L1's init ready, wall clock), l1-seconds (whole run), l1.status.
# One L1 CPU, pure emulation (TCG) with the `max` CPU model (its SVM gives L1 a working kvm_amd); niced.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: run-l1.sh SCRIPT [OUT]" >&2; exit 2; }
script=$(readlink -f "$1")
[ -r "$script" ] || { echo "run-l1.sh: cannot read $1" >&2; exit 2; }
out=${2:-$(mktemp -d /tmp/actor-vmm-nested.XXXXXX)}
mkdir -p "$out" && out=$(readlink -f "$out")
case "$out$script" in *[[:space:],]*) echo "run-l1.sh: paths must not contain spaces or commas" >&2; exit 2 ;; esac
l1=$("$here/l1-setup.sh")
rm -f "$out/l1.status" "$out/l1-ready-seconds"
: > "$out/l1-console.log"
timeout_seconds=${ACTOR_VMM_NESTED_TIMEOUT:-900}

start=$(date +%s.%N)
elapsed() { awk -v start="$start" -v now="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", now - start }'; }
timeout --kill-after=10 "$timeout_seconds" nice qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 4G -nographic \
  -no-reboot -kernel "$l1/vmlinuz" -initrd "$l1/l1.cpio" \
  -append "console=ttyS0 panic=-1 loglevel=4 no_timer_check avm_out=$out avm_run=$script" \
  -fsdev local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap \
  -device virtio-9p-pci,fsdev=fs0,mount_tag=hostroot \
  -fsdev local,id=fs1,path="$out",security_model=none,multidevs=remap \
  -device virtio-9p-pci,fsdev=fs1,mount_tag=out \
  -net none < /dev/null > "$out/l1-console.log" 2>&1 &
qemu=$!
trap 'kill "$qemu" 2>/dev/null || true' EXIT INT TERM  # || true: under set -e a failed kill (QEMU already gone) would turn the exit status into 1
# L1 ready: its init prints the marker once the modules are loaded and the host root is mounted.
while kill -0 "$qemu" 2>/dev/null; do
  if grep -q ACTORVMM-L1-READY "$out/l1-console.log" 2>/dev/null; then
    elapsed > "$out/l1-ready-seconds"
    break
  fi
  sleep 0.1
done
qemu_status=0
wait "$qemu" || qemu_status=$?
elapsed > "$out/l1-seconds"
if [ "$qemu_status" = 124 ] || [ "$qemu_status" = 137 ]; then
  echo "run-l1.sh: L1 timed out after ${timeout_seconds}s (console: $out/l1-console.log)" >&2
  exit 124
fi
if [ ! -s "$out/l1.status" ]; then
  echo "run-l1.sh: L1 did not run $script (QEMU exit $qemu_status); console:" >&2
  tail -n 30 "$out/l1-console.log" >&2
  exit 125
fi
exit "$(cat "$out/l1.status")"
