#!/bin/bash
# bench/ab-spdk.sh -- A/B our target binaries with SPDK's spdk_nvme_perf as the client
# (not run in CI; needs SPDK_DIR, an SPDK tree built outside this repository).
#
#   SPDK_DIR=/path/to/spdk bench/ab-spdk.sh ROUNDS SECONDS BIN...
#
# Each round runs, for each binary in turn: its own target (`BIN target --memory 1G
# --block-size 4096 --threads 1`, taskset core 0, TOPTS added), a fill of FILL seconds
# (default 10) of 128 KiB sequential writes, then every case of CASES
# ("name|spdk_nvme_perf options;..."), spdk_nvme_perf on core 1 for SECONDS. One line
# per run: case, binary, IOPS, mean latency (µs), target CPU ticks over the run. A BIN
# may be a wrapper script that adds options (exec nvmf "$@" --busy-poll-us 0). Take
# medians: runs of one binary spread ±30 % here.
# The client runs in hugepages (SPDK_HUGE, default 1 here; bench/spdk-lib.sh).
set -u
ROUNDS=$1 SECS=$2
shift 2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/spdk-lib.sh
. "$ROOT/bench/spdk-lib.sh"
spdk_check
export SPDK_HUGE=${SPDK_HUGE:-1}
CASES=${CASES:-"rr128|-q 128 -o 4096 -w randread;rw128|-q 128 -o 4096 -w randwrite;r128k|-q 16 -o 131072 -w read;qd1|-q 1 -o 4096 -w randread"}
PORT=${AB_PORT:-47100}
RAW=$(mktemp -d /tmp/ab-spdk.XXXXXX)
for _ in $(seq "$ROUNDS"); do
    for bin in "$@"; do
        PORT=$((PORT + 1))
        # shellcheck disable=SC2086
        taskset -c 0 "$bin" target --listen "127.0.0.1:$PORT" --memory 1G --block-size 4096 \
            --threads 1 ${TOPTS:-} >/dev/null 2>&1 &
        tp=$!
        wait_port "$PORT"
        trid="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:nqn.2024-01.io.nvmf-rs:default"
        spdk_perf "$RAW/fill.out" "$RAW/fill.err" "$trid" -q 16 -o 131072 -w write -t "${FILL:-10}"
        IFS=';' read -ra cs <<<"$CASES"
        for c in "${cs[@]}"; do
            name=${c%%|*} opts=${c#*|}
            t0=$(cpu_ticks "$tp")
            # shellcheck disable=SC2086
            if spdk_perf "$RAW/run.out" "$RAW/run.err" "$trid" $opts -t "$SECS"; then
                res="$(perf_total "$RAW/run.out" 1) $(perf_total "$RAW/run.out" 3)"
            else
                res=no-result
            fi
            t1=$(cpu_ticks "$tp")
            echo "$name $(basename "$bin") $res tgtcpu=$((t1 - t0))"
        done
        kill "$tp"
        wait "$tp" 2>/dev/null
    done
done
rm -rf "$RAW"
