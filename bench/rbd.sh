#!/usr/bin/env bash
# bench/rbd.sh [CEPH_DIR]: `nvmf perf` through our target on an RBD image
# against `rbd bench` on the same image, same cluster (scripts/ceph-cluster.sh,
# one OSD on memstore on this machine), 4 KiB random writes then reads, queue
# depth 16, 10 s each. Prints one line per case with IOPS and MiB/s.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$ROOT/target/ceph-bench}
NVMF=${NVMF:-$ROOT/target/release/nvmf}
(cd "$ROOT" && cargo build --release -p nvmf-cli 2>/dev/null)
conf=$("$ROOT/scripts/ceph-cluster.sh" start "$dir" 2>/dev/null)
trap '"$ROOT/scripts/ceph-cluster.sh" stop "$dir"; kill $TP 2>/dev/null || true' EXIT
rbd -c "$conf" create rbd/bench --size 1G
# fill the image so reads are of real data
rbd -c "$conf" bench --io-type write --io-size 4M --io-threads 4 --io-total 1G --io-pattern seq rbd/bench >/dev/null
for rw in write read; do
    out=$(rbd -c "$conf" bench --io-type $rw --io-size 4K --io-threads 16 --io-total 4G --io-pattern rand \
        --rbd-cache=false rbd/bench 2>&1 & p=$!; sleep 10; kill -INT $p 2>/dev/null; wait $p 2>/dev/null || true)
    echo "rbd bench  rand$rw 4k QD16: $(echo "$out" | grep -E '^ +[0-9]+ ' | tail -n +2 | awk '{s+=$3; n++} END {printf "%.0f IOPS (mean of %d s)", s/n, n}')"
done
port=4499
"$NVMF" target --listen 127.0.0.1:$port --discovery-listen 127.0.0.1:$((port+1)) --rbd "rbd/bench,conf=$conf" \
    --block-size 4096 >/dev/null 2>&1 & TP=$!
for _ in $(seq 100); do ss -ltn | grep -q ":$port " && break; kill -0 $TP || exit 1; sleep 0.1; done
for rw in randwrite randread; do
    "$NVMF" perf -t tcp -a 127.0.0.1 -s $port -n nqn.2024-01.io.nvmf-rs:default --rw $rw --bs 4k --iodepth 16 \
        --runtime 10 --size 1G -o json | python3 -c "import json,sys; t=json.load(sys.stdin)['total']; print(f\"nvmf perf via our target $(printf %-9s $rw) 4k QD16: {t['iops']:.0f} IOPS, {t['mib_s']:.1f} MiB/s, p99 {t['lat_us']['p99']:.0f} us\")"
done
