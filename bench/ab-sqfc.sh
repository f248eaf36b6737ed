#!/usr/bin/env bash
# Interleaved A/B of the C2HData SUCCESS optimisation: `nvmf perf` with SQ flow
# control disabled (CATTR bit 2, the default: reads complete with C2HData SUCCESS,
# no response capsule) against `--sq-flow-control` (a CapsuleResp per command).
# Alternating the two in one sitting cancels most of the drift of a shared machine.
# Prints medians of IOPS, p50 latency and CPU µs per I/O of host and target.
set -euo pipefail
cd "$(dirname "$0")/.."
NVMF=${NVMF:-target/release/nvmf}
PORT=${BENCH_PORT:-44300}
ROUNDS=${BENCH_REPEAT:-5}
RUNTIME=${BENCH_RUNTIME:-2}
TMP=$(mktemp -d)
taskset -c 0 "$NVMF" target --listen "127.0.0.1:$PORT" --memory 1G --threads 1 >/dev/null 2>&1 &
T=$!
trap 'kill $T 2>/dev/null || true; rm -rf "$TMP"' EXIT
sleep 1
"$NVMF" perf -s "$PORT" --rw write --bs 128k --iodepth 16 --verify --runtime 0.001 -o json >/dev/null
ticks() { awk '{print $14+$15}' "/proc/$T/stat"; }
for i in $(seq "$ROUNDS"); do
    for mode in off on; do
        for qd in 1 128; do
            extra=(); [[ $mode == on ]] && extra=(--sq-flow-control)
            t0=$(ticks)
            taskset -c 1 "$NVMF" perf -s "$PORT" --rw randread --bs 4k --iodepth "$qd" \
                --runtime "$RUNTIME" -o json "${extra[@]}" 2>/dev/null >"$TMP/$mode-$qd-$i.json"
            echo $(( $(ticks) - t0 )) >"$TMP/$mode-$qd-$i.ticks"
        done
    done
done
python3 - "$TMP" "$ROUNDS" <<'PY'
import json, statistics as st, sys
d, n = sys.argv[1], int(sys.argv[2])
print("| SQ flow control | QD | IOPS | p50 µs | host CPU µs/IO | target CPU µs/IO |")
print("|---|---:|---:|---:|---:|---:|")
for mode in ("off", "on"):
    for qd in (1, 128):
        rs = [json.load(open(f"{d}/{mode}-{qd}-{i}.json")) for i in range(1, n + 1)]
        tk = [int(open(f"{d}/{mode}-{qd}-{i}.ticks").read()) for i in range(1, n + 1)]
        tcpu = [t / 100 * 1e6 / r["total"]["ios"] for t, r in zip(tk, rs)]
        label = "disabled (SUCCESS)" if mode == "off" else "enabled (CapsuleResp)"
        print(f"| {label} | {qd} | {st.median(r['total']['iops'] for r in rs):,.0f} | "
              f"{st.median(r['total']['lat_us']['p50'] for r in rs):.1f} | "
              f"{st.median(r['cpu']['us_per_io'] for r in rs):.2f} | {st.median(tcpu):.2f} |")
PY
