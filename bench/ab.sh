#!/bin/bash
# bench/ab.sh -- A/B two or more nvmf binaries in one sitting (not run in CI).
#
#   bench/ab.sh ROUNDS SECONDS BIN...
#   CASES="name|perf options;name|perf options" bench/ab.sh 3 5 /tmp/nvmf-a /tmp/nvmf-b
#
# Each round runs, for each binary in turn: its own target (`--memory 1G
# --threads 1`, pinned to CPU 0), a 2 s sequential write over the namespace, then
# every case with its own `nvmf perf` pinned to CPU 1 for SECONDS. Prints one line
# per run: IOPS, MiB/s, p50, target CPU per I/O (from /proc/PID/stat) and host
# CPU per I/O (perf's JSON). AB_TARGET_OPTS adds target options to every run
# (e.g. "--busy-poll-us 50 --busy-poll-batch 0 --tcp-congestion cubic"). Alternating binaries within each round is what makes
# the comparison fair on a machine that varies ±30 % run to run; take medians.
set -u
ROUNDS=$1 SECS=$2; shift 2
PORT=${AB_PORT:-45500}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
CASES=${CASES:-"4k-rr-qd128|--rw randread --bs 4k --iodepth 128;128k-r-qd16|--rw read --bs 128k --iodepth 16"}
HZ=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
 for bin in "$@"; do
  PORT=$((PORT+1))
  # shellcheck disable=SC2086
  taskset -c 0 "$bin" target --listen 127.0.0.1:$PORT --memory 1G --threads 1 ${AB_TARGET_OPTS:-} >/dev/null 2>&1 &
  TP=$!
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
  N="-t tcp -a 127.0.0.1 -s $PORT -n nqn.2024-01.io.nvmf-rs:default"
  # shellcheck disable=SC2086
  taskset -c 1 "$bin" perf $N --rw write --bs 128k --iodepth 16 --size 1G --runtime 2 -o json >/dev/null 2>&1
  IFS=';' read -ra CS <<<"$CASES"
  for c in "${CS[@]}"; do
    name=${c%%|*}; opts=${c#*|}
    t0=$(cpu_ticks $TP)
    # shellcheck disable=SC2086
    out=$(taskset -c 1 "$bin" perf $N $opts --size 1G --runtime "$SECS" -o json 2>/dev/null)
    t1=$(cpu_ticks $TP)
    echo "$out" | python3 -c "
import json,sys; j=json.load(sys.stdin); d=j['total']; ios=d['iops']*$SECS
print('%-14s %-20s iops %9.0f MiB/s %7.1f p50 %7.1f tgt_us/io %.2f host_us/io %.2f'%('$name','$(basename "$bin")',d['iops'],d['mib_s'],d['lat_us']['p50'],($t1-$t0)*1e6/$HZ/ios, j['cpu']['us_per_io']))" \
      || echo "$name $bin: no result"
  done
  kill $TP; wait $TP 2>/dev/null
 done
done
