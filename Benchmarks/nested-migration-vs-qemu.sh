#!/usr/bin/env bash
# Live migration side by side with QEMU on a hardware-style KVM: the nested tier's L1 machine (docs/nested.md)
# migrates the same Linux guest — Debian's cloud kernel (bzImage, unmodified) with Tests/Linux/debian-guest.sh's
# busybox initramfs plus an /init of its own (below), 1 vCPU, MEMORY MiB, no devices but the serial port —
# between two `actor-vmm` processes (vm.receive-migration / vm.send-migration over unix:) and between two
# `qemu-system-x86_64 -accel kvm -M q35` (-incoming unix: / QMP migrate), an idle guest and one that keeps
# rewriting DIRTY_MB MiB of RAM, interleaved; Benchmarks/nested-migration-run.py does the runs and the table.
#
#   flock /work/qemu.lock Benchmarks/nested-migration-vs-qemu.sh [ROUNDS]   (default 2; on the host, as root)
#   MEMORY=256 DIRTY_MB=32 (the defaults)
#
# Uses the release `actor-vmm` (built here when missing or older than Sources/). Results: docs/benchmarks.md,
# "Live migration against QEMU".
set -euo pipefail
if [ "${ACTOR_VMM_NESTED_L1:-}" = 1 ]; then
  out=$1
  . "$out/env"
  exec python3 "$ROOT/Benchmarks/nested-migration-run.py" run "$out" > "$out/l1-run.log" 2>&1
fi

rounds=${1:-2}
memory=${MEMORY:-256}
dirty=${DIRTY_MB:-32}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
vmm=$root/.build/release/actor-vmm
if [ ! -x "$vmm" ] || [ -n "$(find Sources -newer "$vmm" -name '*.swift' | head -n 1)" ]; then
  nice swift build -c release --product actor-vmm >&2
fi
debian=$(Tests/Linux/debian-guest.sh)
out=$(mktemp -d /tmp/actor-vmm-migration-vs-qemu.XXXXXX)
# The guest's /init, appended to Debian's initramfs as a second cpio archive (the later /init wins):
# avm_dirty_mb=0 idles (a line every second, `sleep` in between); N > 0 fills N MiB with random bytes once,
# then rewrites a tmpfs file of N MiB in place over and over (dd conv=notrunc: the same pages every pass,
# none of them zero, so neither VMM can skip them), a line per pass.
mkdir -p "$out/overlay"
cat > "$out/overlay/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
mb=$(/bin/busybox sed -n 's/.*avm_dirty_mb=\([0-9]*\).*/\1/p' /proc/cmdline)
mb=${mb:-0}
if [ "$mb" -gt 0 ]; then
  /bin/busybox dd if=/dev/urandom of=/src bs=1M count="$mb" 2>/dev/null
  /bin/busybox cp /src /dst
  /bin/busybox echo "AVMMIG READY dirty_mb=$mb"
  n=0
  while :; do
    /bin/busybox dd if=/src of=/dst bs=1M conv=notrunc 2>/dev/null
    n=$((n + 1)); /bin/busybox echo "AVMMIG PASS $n"
  done
fi
/bin/busybox echo "AVMMIG READY idle"
n=0
while :; do /bin/busybox sleep 1; n=$((n + 1)); /bin/busybox echo "AVMMIG BEAT $n"; done
INIT
chmod +x "$out/overlay/init"
python3 Tests/Linux/newc.py "$out/overlay" "$out/overlay.cpio"
cat "$debian/initramfs.cpio" "$out/overlay.cpio" > "$out/initramfs.cpio"
printf 'VMM=%s\nKERNEL=%s\nINITRD=%s\nROOT=%s\nROUNDS=%s\nMEMORY=%s\nDIRTY_MB=%s\n' \
  "$vmm" "$debian/vmlinuz" "$out/initramfs.cpio" "$root" "$rounds" "$memory" "$dirty" > "$out/env"
status=0
ACTOR_VMM_NESTED_TIMEOUT=$((300 + rounds * 400)) Tests/Nested/run-l1.sh "$0" "$out" || status=$?
echo "L1 ready after $(cat "$out/l1-ready-seconds" 2>/dev/null || echo ?) s; $rounds interleaved rounds; records in $out (exit $status)"
[ -s "$out/results.json" ] || { tail -n 30 "$out/l1-run.log" "$out/l1-console.log" 2>/dev/null >&2; exit 1; }
python3 Benchmarks/nested-migration-run.py report "$out"
