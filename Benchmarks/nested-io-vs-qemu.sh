#!/usr/bin/env bash
# Block and network I/O side by side with QEMU on a hardware-style KVM: the nested tier's L1 machine
# (docs/nested.md) runs the same guest (Benchmarks/nested-io-guest.sh: Debian's cloud kernel, fio, iperf3,
# sockperf in an initramfs), 1 vCPU, 512 MiB, under `actor-vmm` and `qemu-system-x86_64 -accel kvm -M q35`
# (virtio-blk-pci, virtio-net-pci), with the same raw scratch disk (a file on L1's tmpfs) and the same
# persistent TAP in L1, in interleaved rounds (the order alternates). In the guest: fio 4 KiB random
# read/write at QD 1 and QD 32 (libaio, direct I/O on /dev/vda: IOPS, latency p50/p99 from submission to
# completion), sequential 1 MiB read/write at QD 8 (MiB/s), iperf3 to and from L1 (Mbit/s) and sockperf
# TCP ping-pong with L1 (64-byte request/response: transactions/s, round-trip p50/p99). Prints a table
# (medians over the rounds; ratio = ActorVMM / QEMU, the median of the per-round ratios: ≥ 1 is better
# for IOPS and throughput, ≤ 1 for latency; also per unit of L1 CPU, which the host samples) and writes
# results/nested-io-<UTC time>.{json,txt} and results/nested-io-latest.{json,txt}. Several runs can be
# pooled afterwards: Benchmarks/nested-io-report.py OUT1 results OUT2 ...
#
#   Benchmarks/nested-io-vs-qemu.sh [ROUNDS [SECONDS]]   (defaults 4 and 4: each step runs SECONDS + 1 s warm-up)
#
# On the host, as root; boots L1 once. Environment: STEPS (comma list, default all: randread-qd1,
# randwrite-qd1, randread-qd32, randwrite-qd32, seqread, seqwrite, net-tx, net-rx, net-rr; for diagnosis
# also dmesg, interrupts, features), VMMS (default "actor-vmm qemu"; also qemu-io_uring: QEMU with
# aio=io_uring; actor-vmm-enqueue, actor-vmm-per-device: --handoff enqueue, --event-loops per-device;
# actor-vmm-sync: ACTOR_VMM_BLOCK_IO=sync, block I/O with preadv/pwritev on the device loop;
# actor-vmm-io_uring: ACTOR_VMM_BLOCK_IO=io_uring, every read and write through the ring (the default
# before inline writes); actor-vmm-inline: ACTOR_VMM_BLOCK_INLINE_WRITES=16777216, writes the file
# system cannot take without blocking served on the shared loop whatever their size; the
# ratios are against the first qemu* in the list), ACTOR_VMM (the binary; default the
# release build, rebuilt with `swift build -c release` when older than Sources/), ACTOR_VMM_QEMU_LOCK (a
# file to `flock` around the L1 run only, e.g. /work/qemu.lock where QEMU is shared). Method and results:
# docs/benchmarks.md, "Block and network I/O against QEMU".
set -euo pipefail
self=$(readlink -f "$0")
all_steps=randread-qd1,randwrite-qd1,randread-qd32,randwrite-qd32,seqread,seqwrite,net-tx,net-rx,net-rr
if [ "${ACTOR_VMM_NESTED_L1:-}" = 1 ]; then
  # In L1: $1 is the output share; its env names the inputs.
  out=$1
  . "$out/env"
  stamp() { python3 "$ROOT/Tests/Nested/stamp.py" "$@"; }
  work=/run/actor-vmm-io
  mkdir -p "$work" "$out/runs"
  date +%s.%N > "$out/l1-clock"  # the host notes when it sees this: L1's clock against the host's
  # The scratch disk: written once (tmpfs pages, not holes), the same file for every run.
  dd if=/dev/zero of="$work/scratch.raw" bs=1M count="$DISK_MIB" status=none
  # One persistent TAP for both VMMs; L1's end of it is 192.168.250.1 with the servers on it.
  ip tuntap add dev avmio0 mode tap
  ip addr add 192.168.250.1/24 dev avmio0
  ip link set avmio0 up
  iperf3 -s -B 192.168.250.1 > "$out/iperf3-server.log" 2>&1 &
  servers=$!
  sockperf server --tcp -i 192.168.250.1 -p 11111 > "$out/sockperf-server.log" 2>&1 &
  servers="$servers $!"
  { uname -r; qemu-system-x86_64 --version | head -n 1; grep -m 1 'model name' /proc/cpuinfo; nproc; } > "$out/l1-info.txt"
  append="console=ttyS0 quiet avm_rt=$SECONDS_PER_STEP avm_steps=$STEPS"
  mac=52:54:00:12:34:60
  nsteps=$(echo "$STEPS" | tr , '\n' | wc -l)
  limit=$((180 + nsteps * (SECONDS_PER_STEP + 30)))
  run() {  # NAME ROUND
    local prefix=$out/runs/$1-$2
    local qemu=(qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp 1 -m 512M -nodefaults -no-user-config
      -display none -serial stdio -no-reboot -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio"
      -append "$append" -device virtio-blk-pci,drive=d0 -device virtio-net-pci,netdev=n0,mac=$mac
      -netdev tap,id=n0,ifname=avmio0,script=no,downscript=no)
    local variant=() io=auto inline=
    case $1 in
      actor-vmm-enqueue) variant=(--handoff enqueue) ;; actor-vmm-per-device) variant=(--event-loops per-device) ;;
      actor-vmm-sync) io=sync ;; actor-vmm-io_uring) io=io_uring ;; actor-vmm-inline) inline=16777216 ;;
    esac
    case $1 in
      actor-vmm|actor-vmm-enqueue|actor-vmm-per-device|actor-vmm-sync|actor-vmm-io_uring|actor-vmm-inline) \
                   ACTOR_VMM_BLOCK_IO=$io ACTOR_VMM_BLOCK_INLINE_WRITES=$inline stamp "$prefix" "$limit" "$VMM" "${variant[@]}" --kernel "$GUEST/vmlinuz" --initramfs "$GUEST/initramfs.cpio" \
                   --cpus boot=1 --memory size=512M --serial tty --console off --cmdline "$append" \
                   --disk "path=$work/scratch.raw" --net "tap=avmio0,mac=$mac" ;;
      qemu) stamp "$prefix" "$limit" "${qemu[@]}" -drive "file=$work/scratch.raw,format=raw,if=none,id=d0" ;;
      qemu-io_uring) stamp "$prefix" "$limit" "${qemu[@]}" \
                   -drive "file=$work/scratch.raw,format=raw,if=none,id=d0,aio=io_uring" ;;
    esac || true
    date +%s.%N > "$prefix.end"  # with .seconds, when the run began on L1's clock
  }
  read -r -a vmms <<< "$VMMS"
  for round in $(seq 1 "$ROUNDS"); do
    for i in $(seq 0 $((${#vmms[@]} - 1))); do
      run "${vmms[$(((i + round - 1) % ${#vmms[@]}))]}" "$round"
    done
  done
  kill $servers 2>/dev/null || true
  exit 0
fi

rounds=${1:-4}
seconds=${2:-4}
steps=${STEPS:-$all_steps}
vmms=${VMMS:-actor-vmm qemu}
case "$rounds$seconds" in *[!0-9]*|'') echo "usage: nested-io-vs-qemu.sh [ROUNDS [SECONDS]]" >&2; exit 2 ;; esac
for step in ${steps//,/ }; do
  case ",$all_steps,dmesg,interrupts,features," in *",$step,"*) ;; *) echo "nested-io-vs-qemu.sh: unknown step $step in STEPS (known: $all_steps)" >&2; exit 2 ;; esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
vmm=${ACTOR_VMM:-$root/.build/release/actor-vmm}
if [ -z "${ACTOR_VMM:-}" ] && { [ ! -x "$vmm" ] || [ -n "$(find Sources -newer "$vmm" -name '*.swift' | head -n 1)" ]; }; then
  nice swift build -c release --product actor-vmm >&2
fi
[ -x "$vmm" ] || { echo "nested-io-vs-qemu.sh: no actor-vmm at $vmm" >&2; exit 2; }
guest=$(Benchmarks/nested-io-guest.sh)
out=$(mktemp -d /tmp/actor-vmm-io-vs-qemu.XXXXXX)
printf 'VMM=%s\nGUEST=%s\nROOT=%s\nROUNDS=%s\nSECONDS_PER_STEP=%s\nSTEPS=%s\nVMMS="%s"\nDISK_MIB=512\n' \
  "$vmm" "$guest" "$root" "$rounds" "$seconds" "$steps" "$vmms" > "$out/env"
{
  echo "host_cpu=$(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "host_cpus=$(nproc)"
  echo "host_kernel=$(uname -r)"
  echo "load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- Sources 2>/dev/null || echo +dirty)"
  echo "vmm_binary=$vmm"
  echo "started=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$out/host-info.txt"
nvmm=$(echo "$vmms" | wc -w)
nsteps=$(echo "${steps//,/ }" | wc -w)
export ACTOR_VMM_NESTED_TIMEOUT=$((300 + rounds * nvmm * (180 + nsteps * (seconds + 30))))
# The L1 QEMU's CPU time (utime + stime, clock ticks) every 0.2 s on the host's clock, and the moment L1's
# clock was first seen: the report divides each step's rates by the share of a host CPU L1 had meanwhile.
sample_l1_cpu() {
  local pid="" stat seen=""
  while :; do
    if [ -z "$pid" ] || [ ! -d "/proc/$pid" ]; then pid=$(pgrep -f -- "^qemu-system-x86_64 .*avm_out=$out " | head -n 1 || true); fi
    if [ -n "$pid" ] && read -r -a stat < "/proc/$pid/stat" 2>/dev/null; then echo "$EPOCHREALTIME $((stat[13] + stat[14]))"; fi
    if [ -z "$seen" ] && [ -s "$out/l1-clock" ]; then seen=1; echo "clock $EPOCHREALTIME $(cat "$out/l1-clock")"; fi
    sleep 0.2
  done > "$out/l1-cpu.txt"
}
sample_l1_cpu &
sampler=$!
trap 'kill "$sampler" 2>/dev/null || true' EXIT
start=$SECONDS
lock=()
[ -n "${ACTOR_VMM_QEMU_LOCK:-}" ] && lock=(flock "$ACTOR_VMM_QEMU_LOCK")
status=0
"${lock[@]}" Tests/Nested/run-l1.sh "$self" "$out" || status=$?
if [ "$status" = 125 ] && ! grep -q ACTORVMM-L1-READY "$out/l1-console.log"; then
  # L1's kernel did not come up (under TCG on a loaded host it can fail its IO-APIC timer check and panic):
  # once more.
  echo "nested-io-vs-qemu.sh: L1 did not boot; trying once more" >&2
  status=0
  "${lock[@]}" Tests/Nested/run-l1.sh "$self" "$out" || status=$?
fi
if [ "$(cat "$out/l1.status" 2>/dev/null)" != 0 ]; then
  echo "nested-io-vs-qemu.sh: the run in L1 failed (run-l1.sh exit $status); records in $out" >&2
  exit 1
fi
echo "run_seconds=$((SECONDS - start))" >> "$out/host-info.txt"
echo "clock_ticks=$(getconf CLK_TCK)" >> "$out/host-info.txt"
echo "L1 ready after $(cat "$out/l1-ready-seconds") s, L1 run $(cat "$out/l1-seconds") s; $rounds interleaved rounds of $seconds s steps; records in $out" >&2
python3 Benchmarks/nested-io-report.py "$out" "$root/results"
