#!/usr/bin/env bash
# Builds the libFuzzer targets (Tests/Fuzz/Sources) and runs each in turn, then prints a summary table.
#
#   Tests/Fuzz/run.sh                      every target, 10^6 inputs each (or the time budget, if sooner)
#   Tests/Fuzz/run.sh http json            only these targets
#   RUNS=100000 SECONDS_PER_TARGET=60 Tests/Fuzz/run.sh
#   Tests/Fuzz/run.sh --list               the targets and what they cover
#
# The build lives in .build-fuzz (release, -sanitize=fuzzer,address) and never touches .build: the normal
# `swift build` / `swift test` do not see the fuzz targets (Package.swift adds them only when ACTORVMM_FUZZ=1).
# Corpora grow under $CORPUS_ROOT (default .build-fuzz/corpus/<target>), seeded from the committed seeds in
# Tests/Fuzz/corpus/<target>; crashes go to .build-fuzz/findings/<target>. Runs are niced.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
RUNS=${RUNS:-1000000}
SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-900}
CORPUS_ROOT=${CORPUS_ROOT:-$root/.build-fuzz/corpus}
FINDINGS_ROOT=$root/.build-fuzz/findings
SUMMARY=${SUMMARY:-$root/.build-fuzz/summary.txt}

ACTORVMM_FUZZ=1 nice swift build -c release --scratch-path .build-fuzz --product actor-vmm-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -enable-testing 2>&1 \
    | grep -v "Cannot export local symbol" >&2 || true
binary=$(ACTORVMM_FUZZ=1 swift build -c release --scratch-path .build-fuzz --show-bin-path)/actor-vmm-fuzz
[[ -x $binary ]] || { echo "run.sh: build failed: no $binary" >&2; exit 1; }

listing=$(ACTORVMM_FUZZ_TARGET=--list "$binary" 2>&1 || true)  # an unknown target lists them all
all=$(awk '/^  /{print $1}' <<< "$listing")
if [[ ${1:-} == --list ]]; then tail -n +2 <<< "$listing"; exit 0; fi
targets=${*:-$all}

# Per-target input size limits: structured scripts need room, line parsers less.
max_len() {
    case $1 in
        kernel_elf|kernel_bzimage|kernel_pvh) echo 16384 ;;
        virtio_*|split_queue) echo 8192 ;;
        x86_decoder) echo 20 ;;
        *) echo 4096 ;;
    esac
}

printf '%-16s %10s %8s %9s  %s\n' target inputs seconds exec/s findings > "$SUMMARY.new"
status=0
for target in $targets; do
    corpus=$CORPUS_ROOT/$target findings=$FINDINGS_ROOT/$target
    mkdir -p "$corpus" "$findings"
    seeds=()
    [[ -d Tests/Fuzz/corpus/$target ]] && seeds=("Tests/Fuzz/corpus/$target")
    log=$findings/log.txt
    dict=()
    [[ -f Tests/Fuzz/dict/$target.dict ]] && dict=("-dict=Tests/Fuzz/dict/$target.dict")
    start=$(date +%s.%N)
    set +e
    ACTORVMM_FUZZ_TARGET=$target SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 nice -n 19 "$binary" \
        -runs="$RUNS" -max_total_time="$SECONDS_PER_TARGET" -max_len="$(max_len "$target")" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$findings/" "${dict[@]}" \
        "$corpus" "${seeds[@]}" > "$log" 2>&1
    rc=$?
    set -e
    elapsed=$(echo "$(date +%s.%N) - $start" | bc)
    inputs=$(awk '/stat::number_of_executed_units:/{print $2}' "$log" | tail -1)
    rate=$(awk '/stat::average_exec_per_sec:/{print $2}' "$log" | tail -1)
    crashes=$(find "$findings" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l)
    verdict=$([[ $rc == 0 && $crashes == 0 ]] && echo none || echo "$crashes (exit $rc, see $findings)")
    [[ $rc == 0 && $crashes == 0 ]] || status=1
    printf '%-16s %10s %8.0f %9s  %s\n' "$target" "${inputs:-?}" "$elapsed" "${rate:-?}" "$verdict" | tee -a "$SUMMARY.new"
done
mv "$SUMMARY.new" "$SUMMARY"
echo
cat "$SUMMARY"
exit $status
