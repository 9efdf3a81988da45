#!/usr/bin/env bash
# The nested tier's Linux snapshot and live-migration checks (Tests/Nested/checks.sh, docs/snapshot.md):
# the disk guest (Tests/Nested/disk-image.sh) with `avm_ack=RECORDS` appends numbered records to
# /avm-log.txt on its ext4 root, fsyncs each and then prints "ACK n" on its console (hvc0, a file), while
#   snapshot:  it is paused after ACK $AFTER, snapshotted, its VMM shut down, and a new VMM process
#              restores it with `--restore source_url=file://DIR,resume=on`;
#   migration: it migrates live over unix: from one VMM process to another (actor-vmm-remote
#              receive-migration / send-migration) after ACK $AFTER.
# Either way the guest must go on from where it was to its last record and power off. Prints one
# "FLOW STEP ..." line per step and "FLOW MARK offset=BYTES last-ack=N": the console file's size when the
# first VMM stopped running the guest (what follows was printed by the second VMM). The host's test
# (NestedSnapshotTests) checks the console and the image: ACKs 1...RECORDS exactly once, one boot, e2fsck
# clean, every acknowledged record in the file. Exits 0 when every step did what it should.
# Every VMM runs at -v (their stderr is in DIR and printed at the end); "FLOW PROGRESS" every 5 s, and the
# second VMM's device counters if the guest never finishes, show where a stuck guest stopped.
#   snapshot-flow.sh snapshot|migration VMM REMOTE KERNEL DISK DIR
#   env: RECORDS (80), AFTER (10), CPUS (2), RESTORED_TIMEOUT (seconds for the second VMM, 120),
#        DIAG (set: the guest prints /proc/interrupts every 5 s too), WORK (scratch, /run/actor-vmm-nested)
set -u
mode=$1 vmm=$2 remote=$3 kernel=$4 disk=$5 dir=$6
records=${RECORDS:-80} after=${AFTER:-10} work=${WORK:-/run/actor-vmm-nested}/$mode cpus=${CPUS:-2}
console=$dir/console.txt
rm -rf "$work" && mkdir -p "$work"
rm -f "$console"
FLOW_PREFIX=FLOW POLL=0.1
# shellcheck source=Tests/Nested/flow-steps.sh
. "$(dirname "$0")/flow-steps.sh"
last_tick() { local t; t=$(grep -o '^TICK [0-9.]*' "$console" 2>/dev/null | tail -n 1 | cut -d' ' -f2); echo "${t:-none}"; }
last_ack() { local n; n=$(grep -o '^ACK [0-9]*' "$console" 2>/dev/null | tail -n 1 | cut -d' ' -f2); echo "${n:-0}"; }
acks_in_first() {  # BYTES: the last ACK within the console's first BYTES
  local n; n=$(head -c "$1" "$console" 2>/dev/null | grep -ao '^ACK [0-9]*' | tail -n 1 | cut -d' ' -f2); echo "${n:-0}"
}
acked() { [ "$(last_ack)" -ge "$1" ]; }
bytes() { stat -c %s "$console" 2>/dev/null || echo 0; }
r() { local socket=$1; shift; "$remote" --api-socket "$socket" "$@"; }
state() { r "$1" info | grep -o '"state":"[A-Za-z]*"' | head -n 1 | cut -d'"' -f4; }
exited() { ! kill -0 "$1" 2>/dev/null; }
progress() {  # every 5 s: how far the guest is (for a failure's diagnosis)
  while sleep 5; do echo "FLOW PROGRESS $SECONDS s: last-ack=$(last_ack) last-tick=$(last_tick) console=$(bytes)"; done
}
finish() {  # PID NAME: wait for a VMM, expect exit 0
  local status
  wait "$1"; status=$?
  step "$2-exit=$status"
  expect "$2-exit-0" test "$status" = 0
}

# The source: the guest boots from the disk and starts its records.
source_socket=$work/source.sock
"$vmm" -v --api-socket "path=$source_socket" --kernel "$kernel" --disk "path=$disk" --cpus "boot=$cpus" \
  --memory size=256M --console "file=$console" --serial off \
  --cmdline "console=hvc0 root=/dev/vda1 rw avm_ack=$records ${DIAG:+avm_diag}" > "$dir/source.out" 2> "$dir/source.err" &
source_pid=$!
progress &
progress_pid=$!
if [ "$mode" = migration ]; then  # the destination waits for the source meanwhile
  destination_socket=$work/destination.sock migration=$work/migration.sock
  "$vmm" -v --api-socket "path=$destination_socket" > "$dir/destination.out" 2> "$dir/destination.err" &
  destination_pid=$!
  expect "destination-socket" waitfor 30 test -S "$destination_socket"
  r "$destination_socket" receive-migration "unix:$migration" > "$dir/receive.out" 2>&1 &
  receiver=$!
  expect "destination-listens" waitfor 30 test -S "$migration"
fi
expect "source-socket" waitfor 30 test -S "$source_socket"
expect "acks-before" waitfor 120 acked "$after"

if [ "$mode" = snapshot ]; then
  snapshot=$work/snapshot
  expect "pause" r "$source_socket" pause
  expect "paused" test "$(state "$source_socket")" = Paused
  mark=$(bytes); frozen=$(acks_in_first "$mark")
  expect "snapshot" r "$source_socket" snapshot "file://$snapshot"
  expect "snapshot-files" test -s "$snapshot/state.bin" -a -e "$snapshot/memory.bin"
  step "snapshot-size state=$(stat -c %s "$snapshot/state.bin") memory-allocated=$(du -k "$snapshot/memory.bin" | cut -f1)K"
  expect "source-shutdown-vmm" r "$source_socket" shutdown-vmm
  finish "$source_pid" source
  expect "no-output-after-pause" test "$(bytes)" = "$mark"
  echo "FLOW MARK offset=$mark last-ack=$frozen"
  # The new process: restored and resumed, it runs the guest to its power-off and exits by itself.
  restored_socket=$work/restored.sock
  "$vmm" -v --api-socket "path=$restored_socket" --restore "source_url=file://$snapshot,resume=on" \
    > "$dir/restored.out" 2> "$dir/restored.err" &
  restored_pid=$!
  expect "restored-exits" waitfor "${RESTORED_TIMEOUT:-120}" exited "$restored_pid"
  if ! exited "$restored_pid"; then
    echo "FLOW COUNTERS $(r "$restored_socket" counters)"
    kill -KILL "$restored_pid"
  fi
  finish "$restored_pid" restored
else
  before=$(last_ack)
  expect "send-migration" r "$source_socket" send-migration "unix:$migration"
  # The source's VM is shut down now: whatever the console gets from here was printed by the destination.
  mark=$(bytes); frozen=$(acks_in_first "$mark")
  step "migrated acks-before-send=$before acks-at-switch=$frozen"
  wait "$receiver"; status=$?
  expect "receive-migration" test "$status" = 0
  expect "source-shut-down" test "$(state "$source_socket")" = Shutdown
  expect "source-shutdown-vmm" r "$source_socket" shutdown-vmm
  finish "$source_pid" source
  echo "FLOW MARK offset=$mark last-ack=$frozen"
  # The destination runs the guest to its power-off and exits by itself.
  expect "destination-exits" waitfor "${RESTORED_TIMEOUT:-120}" exited "$destination_pid"
  if ! exited "$destination_pid"; then
    echo "FLOW COUNTERS $(r "$destination_socket" counters)"
    kill -KILL "$destination_pid"
  fi
  finish "$destination_pid" destination
fi
kill "$progress_pid" 2>/dev/null; wait "$progress_pid" 2>/dev/null
expect "acks-after" test "$(last_ack)" -gt "$frozen"
expect "all-acks" test "$(last_ack)" = "$records"
step "last-ack=$(last_ack) records=$records"
for f in "$dir"/*.err; do echo "--- ${f##*/}"; cat "$f"; done
rm -rf "$work"  # the snapshot's memory file, in L1's RAM
exit $failed
