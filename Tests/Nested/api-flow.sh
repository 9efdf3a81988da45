#!/usr/bin/env bash
# The nested tier's API check (Tests/Nested/checks.sh): the disk guest (Tests/Nested/disk-image.sh, with
# avm_wait: it ticks every second instead of powering off) created, booted, paused, resumed and shut down
# through the REST API with actor-vmm-remote. Prints one "API STEP ..." line per step for the host's test;
# exits 0 when every step did what it should.
#   api-flow.sh VMM REMOTE KERNEL DISK DIR     (NET: the --net value, turned into the config's net[0])
set -u
vmm=$1 remote=$2 kernel=$3 disk=$4 dir=$5
socket=/tmp/actor-vmm-nested-api.sock serial=$dir/serial.txt
FLOW_PREFIX=API
# shellcheck source=Tests/Nested/flow-steps.sh
. "$(dirname "$0")/flow-steps.sh"
net_json=$(echo "$NET" | awk -F, '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); printf "%s\"%s\": \"%s\"", (i > 1 ? ", " : ""), kv[1], kv[2] } }')
cat > "$dir/config.json" <<JSON
{"payload": {"kernel": "$kernel", "cmdline": "console=ttyS0 root=/dev/vda1 rw avm_wait"},
 "cpus": {"boot_vcpus": 2, "max_vcpus": 2}, "memory": {"size": 536870912},
 "disks": [{"path": "$disk"}], "net": [{$net_json}], "rng": {"src": "/dev/urandom"},
 "serial": {"mode": "File", "file": "$serial"}, "console": {"mode": "Off"}}
JSON
rm -f "$socket"
"$vmm" --api-socket "path=$socket" > "$dir/vmm.out" 2> "$dir/vmm.err" &
pid=$!
r() { "$remote" --api-socket "$socket" "$@"; }
state() { r info | grep -o '"state":"[A-Za-z]*"' | head -n 1 | cut -d'"' -f4; }
ticks() { local n; n=$(grep -c ACTORVMM-DISK-TICK "$serial" 2>/dev/null); echo "${n:-0}"; }
more_ticks_than() { [ "$(ticks)" -gt "$1" ]; }
expect "socket" waitfor 30 test -S "$socket"
expect "create" r create "$dir/config.json"
expect "created" test "$(state)" = Created
expect "boot" r boot
expect "running" test "$(state)" = Running
expect "init" waitfor 120 grep -q ACTORVMM-DISK-INIT "$serial"
expect "ticking" waitfor 30 more_ticks_than 0
expect "pause" r pause
expect "paused" test "$(state)" = Paused
frozen=$(ticks); sleep 3
expect "no-ticks-while-paused" test "$(ticks)" = "$frozen"
expect "resume" r resume
expect "resumed" test "$(state)" = Running
expect "ticks-again" waitfor 30 more_ticks_than "$frozen"
expect "shutdown" r shutdown
expect "shut-down" test "$(state)" = Shutdown
expect "shutdown-vmm" r shutdown-vmm
wait "$pid"; status=$?
expect "vmm-exit-0" test "$status" = 0
step "ticks=$(ticks) vmm-exit=$status"
echo "--- serial"; cat "$serial"; echo "--- vmm stderr"; cat "$dir/vmm.err"
exit $failed
