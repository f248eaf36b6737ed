#!/usr/bin/env bash
# bench/repeat.sh -- one case run again and again against one target process, with the
# network counters per I/O of each run: tells a change in the programs from a change in
# the machine (not run in CI: needs SPDK's client).
#
#   SPDK_DIR=/path/to/built/spdk bench/repeat.sh [RUNS [SECONDS]]   (default 8 runs of 4 s)
#
# Starts our target once (`nvmf target --memory 1G --block-size 4096 --threads 1` on core
# 0, plus $REPEAT_TARGET_ARGS), fills it with 128 KiB writes, then runs spdk_nvme_perf
# (core 1) RUNS times with $REPEAT_CASE (default `-q 16 -o 131072 -w read`). For each run
# it prints the throughput and, over a 2 s window in its middle, segments and bytes on the
# wire per I/O and the TCP coalescing counters (nstat). If runs differ in throughput but
# not in what went over the wire per I/O, the programs did the same work each time and the
# difference is the machine's (docs/performance.md, "the mode switch").
#
# Environment: SPDK_DIR (required; without it the script prints SKIP and exits 0), NVMF
# (default target/release/nvmf), REPEAT_PORT (default 46520), SPDK_HUGE (1: hugepages).
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/spdk-lib.sh
. "$ROOT/bench/spdk-lib.sh"
spdk_check

RUNS=${1:-8}
SECS=${2:-4}
((SECS >= 4)) || { echo "SECONDS must be at least 4 (the counters take a 2 s window)" >&2; exit 2; }
NVMF=${NVMF:-$ROOT/target/release/nvmf}
PORT=${REPEAT_PORT:-46520}
CASE=${REPEAT_CASE:--q 16 -o 131072 -w read}
command -v nstat >/dev/null || { echo "nstat (iproute2) is needed" >&2; exit 1; }
[[ -x $NVMF ]] || cargo build --release -p nvmf-cli >&2 || exit 1
RAW=$(mktemp -d /tmp/repeat.XXXXXX)

# shellcheck disable=SC2086
taskset -c 0 "$NVMF" target --listen "127.0.0.1:$PORT" --memory 1G --block-size 4096 \
    --threads 1 ${REPEAT_TARGET_ARGS:-} >"$RAW/target.log" 2>&1 &
TPID=$!
trap 'kill $TPID 2>/dev/null; wait $TPID 2>/dev/null' EXIT
wait_port "$PORT" || { echo "our target did not come up ($RAW/target.log)" >&2; exit 1; }
TRID="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:nqn.2024-01.io.nvmf-rs:default"
spdk_perf "$RAW/fill.out" "$RAW/fill.err" "$TRID" -q 16 -o 131072 -w write -t 8 >/dev/null ||
    { echo "fill failed ($RAW/fill.err)" >&2; exit 1; }

# counter NAME FILE: the value of one nstat counter in a `nstat -z` dump
counter() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
echo "case: $CASE; $RUNS runs of $SECS s against one target process (pid $TPID)"
printf '%4s %10s %10s %9s %9s %11s %11s %11s\n' run IOPS MiB/s segs_in segs_out bytes_in backlog_co rcv_co
for r in $(seq "$RUNS"); do
    # shellcheck disable=SC2086
    spdk_perf "$RAW/run$r.out" "$RAW/run$r.err" "$TRID" $CASE -t "$SECS" &
    ppid=$!
    sleep 1
    nstat -n
    sleep 2
    nstat -z >"$RAW/nstat$r"
    wait $ppid
    iops=$(perf_total "$RAW/run$r.out" 1)
    mib=$(perf_total "$RAW/run$r.out" 2)
    [[ -n $iops ]] || { echo "run $r gave no result ($RAW/run$r.err)" >&2; exit 1; }
    awk -v r="$r" -v iops="$iops" -v mib="$mib" \
        -v si="$(counter TcpInSegs "$RAW/nstat$r")" -v so="$(counter TcpOutSegs "$RAW/nstat$r")" \
        -v bi="$(counter IpExtInOctets "$RAW/nstat$r")" \
        -v bc="$(counter TcpExtTCPBacklogCoalesce "$RAW/nstat$r")" \
        -v rc="$(counter TcpExtTCPRcvCoalesce "$RAW/nstat$r")" \
        'BEGIN { n = iops * 2; printf "%4d %10.0f %10.1f %9.2f %9.2f %11.0f %11.2f %11.2f\n", r, iops, mib, si / n, so / n, bi / n, bc / n, rc / n }'
done
echo "per I/O over a 2 s window (both directions of loopback count once each); raw output in $RAW"
