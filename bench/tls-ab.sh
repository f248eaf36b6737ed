#!/bin/bash
# bench/tls-ab.sh -- TLS against plain TCP, and A/B of nvmf binaries, in one sitting
# (not run in CI).
#
#   bench/tls-ab.sh ROUNDS SECONDS BIN...
#   TLS_AB_MODES="tls" bench/tls-ab.sh 3 5 /tmp/nvmf-a /tmp/nvmf-b
#
# Each round runs, for each binary in turn and for each mode (plain, tls): its
# own target (`--memory 1G --threads 1`, with `--tls --tls-key K` in tls mode,
# pinned to CPU 0), sequential 128 KiB writes that fill the namespace
# (4 s passes repeated until 1 GiB is written; printed), then every
# case with its own `nvmf perf` (with `--tls-key K` in tls mode) pinned to CPU 1
# for SECONDS. One TSV line per run on stdout and in bench/results/tls-ab-*.tsv:
# IOPS, MiB/s, p50, target CPU seconds per GiB moved (utime+stime from
# /proc/PID/stat), host CPU per I/O (perf's JSON) and the 1-minute load average
# at the start of the run. Medians per (binary, mode, case) at the end.
set -u
ROUNDS=$1 SECS=$2; shift 2
PORT=${TLS_AB_PORT:-46500}
MODES=${TLS_AB_MODES:-"plain tls"}
KEY=${TLS_AB_KEY:-"NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:"}
CASES=${CASES:-"4k-rr-qd128|--rw randread --bs 4k --iodepth 128;128k-r-qd16|--rw read --bs 128k --iodepth 16;128k-w-qd16|--rw write --bs 128k --iodepth 16"}
HZ=$(getconf CLK_TCK)
OUT=${TLS_AB_OUT:-$(dirname "$0")/results/tls-ab-$(date -u +%Y-%m-%d-%H%M%S).tsv}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
printf 'round\tbin\tmode\tcase\tiops\tmib_s\tp50_us\ttgt_cpu_s_per_gib\thost_us_per_io\tload1\n' | tee "$OUT"
for r in $(seq "$ROUNDS"); do
 for bin in "$@"; do
  for mode in $MODES; do
   PORT=$((PORT+1))
   TOPT="" POPT=""
   [ "$mode" = tls ] && TOPT="--tls --tls-key $KEY" && POPT="--tls-key $KEY"
   # shellcheck disable=SC2086
   taskset -c 0 "$bin" target --listen 127.0.0.1:$PORT --memory 1G --threads 1 $TOPT ${TLS_AB_TARGET_OPTS:-} >/tmp/tls-ab-target.log 2>&1 &
   TP=$!
   for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.05; done
   N="-t tcp -a 127.0.0.1 -s $PORT -n nqn.2024-01.io.nvmf-rs:default"
   # fill: 4 s passes of sequential 128 KiB writes until >= 1 GiB written (at most 6)
   filled=0 fills=""
   for _ in 1 2 3 4 5 6; do
    # shellcheck disable=SC2086
    f=$(taskset -c 1 "$bin" perf $N $POPT --rw write --bs 128k --iodepth 16 --size 1G --runtime 4 -o json 2>/dev/null |
      python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["total"]["mib_s"])' 2>/dev/null)
    fills="$fills ${f:-?}"; filled=$((filled + ${f:-0} * 4))
    [ $filled -ge 1024 ] && break
   done
   echo "# round $r $(basename "$bin") $mode: fill passes (MiB/s x 4 s):$fills = $filled MiB" >&2
   IFS=';' read -ra CS <<<"$CASES"
   for c in "${CS[@]}"; do
    name=${c%%|*}; opts=${c#*|}
    l=$(load1)
    t0=$(cpu_ticks $TP)
    # shellcheck disable=SC2086
    out=$(taskset -c 1 "$bin" perf $N $POPT $opts --size 1G --runtime "$SECS" -o json 2>/dev/null)
    t1=$(cpu_ticks $TP)
    echo "$out" | python3 -c "
import json,sys; j=json.load(sys.stdin); d=j['total']; gib=d['mib_s']*$SECS/1024
print('%s\t%s\t%s\t%s\t%.0f\t%.1f\t%.1f\t%.3f\t%.2f\t%s'%('$r','$(basename "$bin")','$mode','$name',d['iops'],d['mib_s'],d['lat_us']['p50'],($t1-$t0)/$HZ/gib if gib>0 else 0, j['cpu']['us_per_io'],'$l'))" \
      | tee -a "$OUT" || echo "# $name $bin $mode: no result" >&2
   done
   kill $TP; wait $TP 2>/dev/null
  done
 done
done
echo "# medians ($OUT)"
python3 - "$OUT" <<'EOF'
import csv, sys, statistics as st
rows = list(csv.DictReader(open(sys.argv[1]), delimiter='\t'))
keys = []
for r in rows:
    k = (r['bin'], r['mode'], r['case'])
    if k not in keys:
        keys.append(k)
for k in sorted(keys, key=lambda k: (k[2], k[0], k[1])):
    rs = [r for r in rows if (r['bin'], r['mode'], r['case']) == k]
    med = lambda f: st.median(float(r[f]) for r in rs)
    print('%-12s %-16s %-5s iops %9.0f MiB/s %7.1f p50 %8.1f tgt_cpu_s/GiB %.3f host_us/io %.2f load %s (n=%d)' % (
        k[2], k[0], k[1], med('iops'), med('mib_s'), med('p50_us'), med('tgt_cpu_s_per_gib'),
        med('host_us_per_io'), '/'.join(r['load1'] for r in rs), len(rs)))
EOF
