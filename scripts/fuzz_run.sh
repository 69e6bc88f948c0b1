#!/bin/bash
# Runs libFuzzer targets built by `make fuzz` and prints executions and
# crashes per target.
#
#   bash scripts/fuzz_run.sh SECONDS JOBS TARGET...     (make fuzz-run does this)
#
# Each target runs for SECONDS under `nice -n 15`, JOBS targets at a time,
# starting from its seed corpus fuzz/corpus/TARGET/ plus the inputs earlier
# runs found (build-fuzz/corpus/TARGET/, where new ones go: the repository's
# corpus is never written). Crashing inputs land in build-fuzz/crashes/ as
# TARGET-crash-*, logs in build-fuzz/TARGET.log. A single allocation over
# 512 MiB counts as a crash (-malloc_limit_mb): every input is a few KiB.
# fuzz/TARGET.dict, when there is one, is passed as -dict.
# Exit status: 0 when no target crashed.
set -u
cd "$(dirname "$0")/.."
secs=${1:?usage: fuzz_run.sh SECONDS JOBS TARGET...}
jobs=${2:?usage: fuzz_run.sh SECONDS JOBS TARGET...}
shift 2
[ $# -gt 0 ] || { echo "fuzz_run.sh: no targets" >&2; exit 2; }
mkdir -p build-fuzz/crashes

run_one() {
    local t=$1
    mkdir -p "build-fuzz/corpus/$t"
    rm -f "build-fuzz/crashes/$t"-*
    local dict=()
    [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
    nice -n 15 "build-fuzz/$t" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -print_final_stats=1 -artifact_prefix="build-fuzz/crashes/$t-" "${dict[@]}" \
        "build-fuzz/corpus/$t" "fuzz/corpus/$t" > "build-fuzz/$t.log" 2>&1
    echo "$?" > "build-fuzz/$t.rc"
}

running=0
for t in "$@"; do
    [ -x "build-fuzz/$t" ] || { echo "fuzz_run.sh: build-fuzz/$t missing (make fuzz)" >&2; exit 2; }
    echo "fuzzing $t for ${secs}s (log: build-fuzz/$t.log)"
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

bad=0
printf '%-18s %14s %8s %8s %s\n' target executions exec/s crashes corpus
for t in "$@"; do
    log="build-fuzz/$t.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    crashes=$(find build-fuzz/crashes -name "$t-*" 2>/dev/null | wc -l)
    units=$(find "build-fuzz/corpus/$t" -type f | wc -l)
    rc=$(cat "build-fuzz/$t.rc" 2>/dev/null || echo '?')
    printf '%-18s %14s %8s %8s %s\n' "$t" "${execs:-?}" "${speed:-?}" "$crashes" "$units (rc $rc)"
    if [ "$crashes" -ne 0 ] || [ "$rc" != 0 ]; then bad=1; fi
done
exit $bad
