#!/usr/bin/env bash
# Regenerates Tests/Footprint/actor-vmm.order: the functions actor-vmm executes when users run it, which the
# release link places first and together in .text (lld --symbol-ordering-file; Package.swift). The kernel maps
# a binary's code around every page fault (fault-around, 64 KiB), so code touched here and there across the
# 5 MB text (most of it the static Swift runtime and standard library) keeps most of it resident; packed
# together, the code that runs stays in a few hundred KiB (docs/benchmarks.md, "Footprint").
#
#   Tests/Footprint/symbol-order.sh [ACTOR_VMM_RELEASE_BINARY]
#
# Records with valgrind's callgrind (which lists every function executed, in the binary's own symbol names)
# while actor-vmm runs: the start row's own guest (first, so that its functions are placed first); the test
# guest's exit checks; every virtio device with the guest's drivers; the API with actor-vmm-remote (create,
# boot, info, counters, pause, resume, shutdown). seccomp is off under valgrind
# (it does not know the system call), so Seccomp's own functions are added by name; valgrind's CPU has no
# AVX-512, so glibc's string functions are the AVX2 ones there: the ones this CPU runs are added (read from the
# binary's IFUNC slots in a native run). A stale file is harmless:
# a name the binary no longer has is skipped, a function missing from the file is placed after the others.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=${1:-$root/.build/release/actor-vmm}
[ -x "$binary" ] || { echo "symbol-order.sh: no $binary (swift build -c release first)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "symbol-order.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "symbol-order.sh: needs python3 (for Tests/Footprint/resident.py)" >&2; exit 2; }
guest=$("$root/Tests/Guest/build.sh")
work=$(mktemp -d /tmp/actor-vmm-order.XXXXXX)
trap 'rm -rf "$work"' EXIT

# valgrind cannot read the DWARF 5 debug information: record a copy without it (same code, same symbols).
cp "$binary" "$work/actor-vmm" && strip --strip-debug "$work/actor-vmm"
record() {  # NAME ARGS...: one callgrind run of actor-vmm
  local name=$1; shift
  nice valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/$name.cg" \
    "$work/actor-vmm" --seccomp false "$@" > "$work/$name.log" 2>&1 || {
      echo "symbol-order.sh: the $name run failed:" >&2; tail -5 "$work/$name.log" >&2; exit 1; }
}

# First the start row's own run (docs/benchmarks.md, row 5: its guest, 1 vCPU, 128 MiB): its functions go first
# and together, so that what a started VM keeps resident is as few 64 KiB blocks as can be.
python3 "$here/resident.py" --write-guest "$work/start.elf"
record start --kernel "$work/start.elf" --memory size=128M --cpus boot=1 --serial tty --console off
record exits --kernel "$guest" --cmdline "tests=serial,cmdline,pio,mmio" --memory size=64M --cpus boot=1 \
  --serial tty --console off
truncate -s 1M "$work/a.raw" && truncate -s 1M "$work/b.raw"
for placement in shared per-device; do
  record "devices-$placement" --kernel "$guest" --cmdline "tests=pci,blk,rng,console" --memory size=64M \
    --serial tty --event-loops "$placement" --disk "path=$work/a.raw" --disk "path=$work/b.raw,readonly=on" \
    --rng --console "file=$work/console.txt"
done

# The API: actor-vmm under callgrind, driven by a native actor-vmm-remote.
socket=$work/api.sock
cat > "$work/vm.json" <<EOF
{"payload": {"kernel": "$guest", "cmdline": "tests=serial,pio,snapcount snap_ticks=1000000"}, "memory": {"size": 67108864},
 "serial": {"mode": "Null"}, "console": {"mode": "Off"}}
EOF
nice valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/api.cg" \
  "$work/actor-vmm" --seccomp false --api-socket "$socket" > "$work/api.log" 2>&1 &
vmm=$!
remote() { "$binary-remote" --api-socket "$socket" "$@" > /dev/null; }
# Ready once it answers (the socket's file exists a moment before the VMM listens on it).
for _ in $(seq 300); do "$binary-remote" --api-socket "$socket" ping > /dev/null 2>&1 && break; sleep 0.1; done
remote create "$work/vm.json"
remote boot
remote info
remote counters
remote pause
remote resume
sleep 1
remote shutdown
remote shutdown-vmm
wait "$vmm"

# The start row natively, page by page (fault-around off: Sources/CKvm/footprint.c): the functions on the
# pages it touches that the current order file does not place (those valgrind never sees run, with the
# neighbours that share their pages).
python3 "$here/resident.py" --binary "$binary" --touched-functions "$here/actor-vmm.order" > "$work/native"

# Every function named in a record (callgrind writes "fn=(id) name" and "cfn=(id) name" once per name;
# a "'N" suffix marks a recursion level): record by record, in the order of the runs above (the start row's
# first, the API's last; a name goes where it is first seen), sorted within a record (callgrind writes names
# in a different order every run). The seccomp code, which every run executes natively, and the native run's
# functions go with the start row's. Then the string and math functions this CPU runs are added next to the
# variants valgrind's CPU ran (resident.py).
{
  for name in start exits devices-shared devices-per-device api; do
    sed -n "s/^c\?fn=([0-9]*) \(.*\)$/\1/p" "$work/$name.cg" | sed "s/'[0-9]*\$//" | LC_ALL=C sort -u
    if [ "$name" = start ]; then
      nm --defined-only "$binary" \
        | awk '$2 ~ /[tT]/ && $3 ~ /Seccomp|BpfProgram|BpfInstruction|SyscallRule|ArgEquals|ThreadKind|ckvm_seccomp/ { print $3 }'
      LC_ALL=C sort -u "$work/native"
    fi
  done
} | sed "s/'[0-9]*\$//" | grep -v '^0x\|^(below main)$' | awk '!seen[$0]++' > "$work/order"
python3 "$here/resident.py" --binary "$binary" --native-ifuncs "$work/order" > "$here/actor-vmm.order"
echo "symbol-order.sh: $(wc -l < "$here/actor-vmm.order") functions in Tests/Footprint/actor-vmm.order" >&2
