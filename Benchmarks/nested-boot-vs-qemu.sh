#!/usr/bin/env bash
# Boot time side by side with QEMU on a hardware-style KVM: the nested tier's L1 machine (docs/nested.md)
# boots Debian's cloud kernel (bzImage, unmodified) with the same busybox initramfs (Tests/Linux/
# debian-guest.sh: /init prints ACTORVMM-LINUX-INIT and powers off), 1 vCPU, 512 MiB, `console=ttyS0
# quiet`, under `actor-vmm`, `qemu-system-x86_64 -accel kvm -M microvm` and `-M q35`, interleaved (the
# order rotates each round), and prints the median time from process start to the marker and to exit.
#
#   Benchmarks/nested-boot-vs-qemu.sh [ROUNDS]     (default 5; on the host, as root; boots L1 once)
#
# Uses the release `actor-vmm` (built here with `swift build -c release` when missing or older than
# Sources/). Results table: docs/benchmarks.md, "Boot time against QEMU".
set -euo pipefail
if [ "${ACTOR_VMM_NESTED_L1:-}" = 1 ]; then
  # In L1: $1 is the output share; its env names the inputs.
  out=$1
  . "$out/env"
  stamp() { python3 "$ROOT/Tests/Nested/stamp.py" "$@"; }
  kernel=$DEBIAN/vmlinuz initrd=$DEBIAN/initramfs.cpio append="console=ttyS0 quiet"
  run() {  # NAME ROUND
    local prefix=$out/runs/$1-$2
    case $1 in
      actor-vmm) stamp "$prefix" 120 "$VMM" --kernel "$kernel" --initramfs "$initrd" --cpus boot=1 \
                   --memory size=512M --serial tty --console off --cmdline "$append" ;;
      qemu-microvm) stamp "$prefix" 120 qemu-system-x86_64 -accel kvm -cpu host -M microvm -smp 1 -m 512M \
                   -nodefaults -no-user-config -display none -serial stdio -no-reboot \
                   -kernel "$kernel" -initrd "$initrd" -append "$append" ;;
      qemu-q35) stamp "$prefix" 120 qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp 1 -m 512M \
                   -nodefaults -no-user-config -display none -serial stdio -no-reboot \
                   -kernel "$kernel" -initrd "$initrd" -append "$append" ;;
    esac || true
  }
  mkdir -p "$out/runs"
  vmms=(actor-vmm qemu-microvm qemu-q35)
  for round in $(seq 1 "$ROUNDS"); do
    for i in 0 1 2; do run "${vmms[$(((i + round) % 3))]}" "$round"; done
  done
  exit 0
fi

rounds=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
vmm=$root/.build/release/actor-vmm
if [ ! -x "$vmm" ] || [ -n "$(find Sources -newer "$vmm" -name '*.swift' | head -n 1)" ]; then
  nice swift build -c release --product actor-vmm >&2
fi
out=$(mktemp -d /tmp/actor-vmm-boot-vs-qemu.XXXXXX)
printf 'VMM=%s\nDEBIAN=%s\nROOT=%s\nROUNDS=%s\n' "$vmm" "$(Tests/Linux/debian-guest.sh)" "$root" "$rounds" > "$out/env"
ACTOR_VMM_NESTED_TIMEOUT=$((300 + rounds * 240)) Tests/Nested/run-l1.sh "$0" "$out"
echo "L1 ready after $(cat "$out/l1-ready-seconds") s; $rounds interleaved rounds; records in $out"
# One line per run: VMM ROUND MARKER-SECONDS EXIT-SECONDS STATUS GUEST-UPTIME-AT-MARKER (from
# Tests/Nested/stamp.py's records and /init's line).
for log in "$out"/runs/*.log; do
  name=$(basename "$log" .log)
  marker=$(awk '/ACTORVMM-LINUX-INIT/ { if (match($0, /[0-9]+\.[0-9]+/)) print substr($0, RSTART, RLENGTH); exit }' "$log")
  uptime=$(awk '/ACTORVMM-LINUX-INIT/ { if (match($0, /uptime=[0-9.]+/)) print substr($0, RSTART + 7, RLENGTH - 7); exit }' "$log")
  echo "${name%-*} ${name##*-} ${marker:-none} $(cat "${log%.log}.seconds") $(cat "${log%.log}.status") ${uptime:-none}"
done > "$out/results.txt"
awk '
  { marker[$1] = marker[$1] " " $3; total[$1] = total[$1] " " $4; uptime[$1] = uptime[$1] " " $6; if ($5 != 0) bad[$1]++ }
  function median(list,   n, a, i, j, t) {
    n = split(list, a, " "); for (i = 1; i <= n; i++) if (a[i] == "none") return "none"
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    base = median(marker["actor-vmm"])
    print "| VMM | process start to /init marker (median, s) | to exit (s) | vs actor-vmm | guest uptime at marker (s) | non-zero exits |"
    print "| --- | --- | --- | --- | --- | --- |"
    split("actor-vmm qemu-microvm qemu-q35", order, " ")
    for (k = 1; k <= 3; k++) {
      v = order[k]; m = median(marker[v])
      ratio = (m == "none" || base == "none") ? "-" : sprintf("%.2f×", m / base)
      printf "| %s | %s | %s | %s | %s | %d |\n", v, m, median(total[v]), ratio, median(uptime[v]), bad[v]
    }
  }' "$out/results.txt"
