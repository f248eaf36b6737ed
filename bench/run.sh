#!/usr/bin/env bash
# nvmf-rs benchmark matrix on loopback (not run in CI).
#
# Starts the release target (memory namespace) pinned to CPU 0 with one worker
# thread, runs `nvmf perf` pinned to CPU 1 over a fixed matrix, repeats each case
# BENCH_REPEAT times and reports the median run (by IOPS) next to SPDK's reference
# figures (copied from /work/shared/bench/reference.md).
#
# Environment:
#   BENCH_RUNTIME   seconds per run (default 10)
#   BENCH_REPEAT    runs per case (default 3)
#   BENCH_PORT      first TCP port to try (default 44200)
#   BENCH_ONLY      regex: only run cases whose name matches
#   BENCH_PREFILL   0: skip writing the namespace once before the reads
#   BENCH_EXTRA     1: also run the SQ-flow-control comparison (CATTR bit 2 off)
#   NVMF            path to the nvmf binary (default target/release/nvmf)
#   BENCH_TARGET_OPTS  extra `nvmf target` options, e.g. "--busy-poll-us 50 --busy-poll-batch 0 --tcp-congestion cubic"
#   BENCH_PERF_OPTS    extra `nvmf perf` options, e.g. "--hipri --tcp-congestion cubic"
#   BENCH_QD1_PERF_OPTS  extra `nvmf perf` options for the queue-depth-1 cases only
#   BENCH_NS        memory (default) or null: the namespace the target serves
#                   (null: reads return zeroes, writes are dropped; compared with
#                   SPDK's Null bdev figures)
#   BENCH_TUNED     1: target "--busy-poll-us 50 --busy-poll-batch 0 --tcp-congestion cubic", perf
#                   "--tcp-congestion cubic", and "--hipri" for the QD 1 cases
#                   (polling the host at high depth shrinks its batches and costs
#                   throughput; docs/performance.md)
#
# Output: bench/results/<date>.md, .json, and <date>-latency.png (if matplotlib).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNTIME=${BENCH_RUNTIME:-10}
REPEAT=${BENCH_REPEAT:-3}
PORT=${BENCH_PORT:-44200}
ONLY=${BENCH_ONLY:-.}
if [[ ${BENCH_TUNED:-0} == 1 ]]; then
    : "${BENCH_TARGET_OPTS:=--busy-poll-us 50 --busy-poll-batch 0 --tcp-congestion cubic}"
    : "${BENCH_PERF_OPTS:=--tcp-congestion cubic}"
    : "${BENCH_QD1_PERF_OPTS:=--hipri}"
fi
TOPTS=${BENCH_TARGET_OPTS:-}
NS=${BENCH_NS:-memory}
[[ $NS == memory || $NS == null ]] || { echo "BENCH_NS must be memory or null" >&2; exit 2; }
POPTS=${BENCH_PERF_OPTS:-}
QD1OPTS=${BENCH_QD1_PERF_OPTS:-}
NVMF=${NVMF:-$ROOT/target/release/nvmf}
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=$ROOT/bench/results
RAW=$OUT/$STAMP.raw
mkdir -p "$OUT" "$RAW"
printf 'namespace: %s\ntarget: %s\nperf: %s\nperf at QD 1: %s\ncongestion control (system): %s\n' "$NS" "$TOPTS" "$POPTS" "$QD1OPTS" \
    "$(cat /proc/sys/net/ipv4/tcp_congestion_control 2>/dev/null)" >"$RAW/options.txt"

if [[ ! -x $NVMF ]]; then
    echo "building release binary..." >&2
    cargo build --release -p nvmf-cli >&2
fi

if [[ $(nproc) -lt 2 ]]; then
    echo "warning: fewer than 2 CPUs; pinning will overlap" >&2
fi

TARGET_PID=
stop_target() {
    if [[ -n $TARGET_PID ]]; then
        kill "$TARGET_PID" 2>/dev/null || true
        wait "$TARGET_PID" 2>/dev/null || true
        TARGET_PID=
    fi
}
trap stop_target EXIT

# start_target PINNING THREADS: PINNING is "taskset -c 0" or "".
start_target() {
    local pin=$1 threads=$2 try
    stop_target
    for try in 1 2 3 4 5; do
        PORT=$((PORT + 1))
        # shellcheck disable=SC2086
        $pin "$NVMF" target --listen "127.0.0.1:$PORT" --"$NS" 1G --threads "$threads" $TOPTS \
            >"$RAW/target-$PORT.log" 2>&1 &
        TARGET_PID=$!
        for _ in $(seq 50); do
            if ! kill -0 "$TARGET_PID" 2>/dev/null; then break; fi
            if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
            sleep 0.1
        done
        stop_target
    done
    echo "cannot start the target (see $RAW)" >&2
    exit 1
}

# The matrix: name | target (pinned|scaling) | perf options
CASES=(
    "randread-4k-qd1|pinned|--rw randread --bs 4k --iodepth 1"
    "randread-4k-qd32|pinned|--rw randread --bs 4k --iodepth 32"
    "randread-4k-qd128|pinned|--rw randread --bs 4k --iodepth 128"
    "randwrite-4k-qd128|pinned|--rw randwrite --bs 4k --iodepth 128"
    "read-128k-qd16|pinned|--rw read --bs 128k --iodepth 16"
    "write-128k-qd16|pinned|--rw write --bs 128k --iodepth 16"
    "digest-randread-4k-qd1|pinned|--rw randread --bs 4k --iodepth 1 -g -G"
    "digest-randread-4k-qd32|pinned|--rw randread --bs 4k --iodepth 32 -g -G"
    "digest-randread-4k-qd128|pinned|--rw randread --bs 4k --iodepth 128 -g -G"
    "digest-randwrite-4k-qd128|pinned|--rw randwrite --bs 4k --iodepth 128 -g -G"
    "digest-read-128k-qd16|pinned|--rw read --bs 128k --iodepth 16 -g -G"
    "digest-write-128k-qd16|pinned|--rw write --bs 128k --iodepth 16 -g -G"
    "scaling-randread-4k-qd128-j2|scaling|--rw randread --bs 4k --iodepth 128 --numjobs 2"
    "scaling-read-128k-qd16-j2|scaling|--rw read --bs 128k --iodepth 16 --numjobs 2"
)
if [[ ${BENCH_EXTRA:-0} == 1 ]]; then
    CASES+=(
        "sqfc-on-randread-4k-qd1|pinned|--rw randread --bs 4k --iodepth 1 --sq-flow-control"
        "sqfc-on-randread-4k-qd128|pinned|--rw randread --bs 4k --iodepth 128 --sq-flow-control"
        "sqfc-on-read-128k-qd16|pinned|--rw read --bs 128k --iodepth 16 --sq-flow-control"
    )
fi

echo "load before the run: $(uptime)" | tee "$RAW/uptime-before.txt" >&2
current=
for c in "${CASES[@]}"; do
    IFS='|' read -r name mode opts <<<"$c"
    [[ $name =~ $ONLY ]] || continue
    if [[ $mode != "$current" ]]; then
        if [[ $mode == pinned ]]; then
            start_target "taskset -c 0" 1
        else
            start_target "" 2
        fi
        current=$mode
        # Write the whole namespace once so reads copy real data (as SPDK's Malloc
        # bdev does) instead of zero-filling never-written chunks.
        if [[ ${BENCH_PREFILL:-1} == 1 && $NS == memory ]]; then
            echo "== prefill 1 GiB" >&2
            "$NVMF" perf -a 127.0.0.1 -s "$PORT" --rw write --bs 128k --iodepth 16 \
                --verify --runtime 0.001 -o json >"$RAW/prefill-$PORT.json" 2>&1 || true
        fi
    fi
    if [[ $mode == pinned ]]; then pin="taskset -c 1"; else pin=""; fi
    extra=$POPTS
    if [[ $opts == *"--iodepth 1 "* || $opts == *"--iodepth 1" ]]; then extra="$extra $QD1OPTS"; fi
    for r in $(seq "$REPEAT"); do
        echo "== $name run $r/$REPEAT ($RUNTIME s)" >&2
        t0=$(awk '{print $14+$15}' "/proc/$TARGET_PID/stat" 2>/dev/null || echo 0)
        # shellcheck disable=SC2086
        if ! $pin "$NVMF" perf -a 127.0.0.1 -s "$PORT" $opts $extra --runtime "$RUNTIME" -o json \
            >"$RAW/$name.$r.json" 2>"$RAW/$name.$r.err"; then
            echo "   failed: $(tail -1 "$RAW/$name.$r.err")" >&2
            rm -f "$RAW/$name.$r.json"
        fi
        # The target's own CPU time during the run (USER_HZ ticks, from /proc).
        t1=$(awk '{print $14+$15}' "/proc/$TARGET_PID/stat" 2>/dev/null || echo 0)
        echo $((t1 - t0)) >"$RAW/$name.$r.target-ticks"
    done
done
stop_target
echo "load after the run: $(uptime)" | tee "$RAW/uptime-after.txt" >&2

if ! python3 -c 'import matplotlib' 2>/dev/null; then
    echo "matplotlib missing; trying: pip install matplotlib" >&2
    python3 -m pip install -q matplotlib >&2 || echo "could not install matplotlib; the plot will be skipped" >&2
fi
python3 "$ROOT/bench/summarize.py" "$RAW" "$OUT/$STAMP" "$RUNTIME" "$REPEAT"
echo "wrote $OUT/$STAMP.md and $OUT/$STAMP.json" >&2
