#!/usr/bin/env bash
# bench/side-by-side.sh -- our target and SPDK's nvmf_tgt in one sitting, same client
# (not run in CI: SPDK takes too long to build there).
#
#   SPDK_DIR=/path/to/built/spdk bench/side-by-side.sh [ROUNDS [SECONDS]]   (default 3 rounds of 6 s)
#
# One client for every target, pinned to core 1: SPDK's spdk_nvme_perf (-c 0x2), or with
# SBS_CLIENT=nvmf our `nvmf perf` (taskset -c 1, one job, same cases).
# Targets, started afresh in each round (so rounds interleave ours and SPDK's); the order
# rotates by one each round (round 1: as listed, round 2 starts with the second, ...), since
# the target that runs first in a round came out slowest in sittings that kept one order
# (docs/performance.md, night of 2026-12-04): with as many rounds as targets, each takes
# every place once.
#   ours         `nvmf target --memory 1G --block-size 4096 --threads 1`, taskset -c 0: the
#                default options (adaptive polling: 50 µs after passes of at most 2 PDUs)
#   spdk         SPDK's nvmf_tgt, reactor on core 0 (-m 0x1), one 1 GiB Malloc bdev, 4096-byte blocks
#   ours-poll    as ours, plus `--busy-poll-batch 0` (poll 50 µs after every pass)
#   ours-nopoll  as ours, plus `--busy-poll-us 0` (never poll: the default before 2026-12-04)
#   ours-nopoll-lat0  as ours-nopoll, plus `--cpu-latency-us 0` (the target sleeps; idle CPUs
#                poll in the kernel instead of halting, system-wide while it runs)
#   ours-cubic   as ours, plus `--tcp-congestion cubic` (when the system's is bbr, which paces)
#   ours-alt     as ours, but the binary NVMF_ALT: an A/B of two builds with SPDK's client,
#                SPDK's target alongside as the yardstick
# SPDK's memory (target and spdk_nvme_perf): 4 KiB pages (`--no-huge`) by default;
# SPDK_HUGE=1 gives both 2 MiB hugetlbfs pages (reserved and mounted by bench/spdk-lib.sh),
# SPDK as it is meant to run: its Malloc bdev and buffers then sit in huge pages, as our
# memory namespace always does (transparent huge pages).
# SBS_FILE=PATH: both targets serve that file (1 GiB, made if missing) instead of memory:
# ours as `--file PATH` (default options: O_DIRECT where there is a page cache to bypass,
# io_uring, or inline on tmpfs), SPDK's as an AIO bdev (libaio with O_DIRECT), so the
# two file data paths meet on the same file; on tmpfs (/dev/shm) the figures are the
# targets' CPU cost, on a disk they are mostly the disk's.
# Each target's namespace is written full first (spdk_nvme_perf 128 KiB sequential writes
# for SBS_FILL_SECS, default 10 s; a fresh process first-touching 1 GiB writes only
# 100-300 MiB/s here), then every case runs for SECONDS:
#   4 KiB randread QD128, 4 KiB randwrite QD128, 128 KiB read QD16, 128 KiB write QD16,
#   4 KiB randread QD1 (mean latency).
# CPU per I/O on both sides comes from /proc/PID/stat (utime+stime) of the target and of
# spdk_nvme_perf over the same window: from perf's "Initialization complete" line to 0.5 s
# before its end; what the rest of the machine used in that window (/proc/stat less those
# two) is recorded too, to tell a run disturbed by other work. SPDK's reactor and spdk_nvme_perf poll, so each burns its whole core.
# Reports medians over the rounds as a Markdown table (stdout and bench/results/
# side-by-side-<date>.md; the per-run figures in side-by-side-<date>.tsv).
#
# Environment: SPDK_DIR (required; without it the script prints SKIP and exits 0),
#   NVMF (default target/release/nvmf), NVMF_ALT (the binary of ours-alt), SBS_PORT (first port, default 46420),
#   SBS_ONLY (regex over case names), SBS_TARGETS (default "ours spdk ours-poll"),
#   SBS_CLIENT (spdk, the default, or nvmf), SPDK_HUGE (1: hugepages for SPDK),
#   SBS_LARGE (1: add 1 MiB read and write at QD 8; our writes then take R2T/H2CData).
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/spdk-lib.sh
. "$ROOT/bench/spdk-lib.sh"
spdk_check

ROUNDS=${1:-3}
SECS=${2:-6}
NVMF=${NVMF:-$ROOT/target/release/nvmf}
PORT=${SBS_PORT:-46420}
ONLY=${SBS_ONLY:-.}
TARGETS=${SBS_TARGETS:-ours spdk ours-poll}
FILE=${SBS_FILE:-}
if [[ -n $FILE ]]; then
    [[ -f $FILE ]] || truncate -s 1G "$FILE" || exit 1
    export SPDK_AIO_FILE=$FILE
    OUR_NS=(--file "$FILE")
else
    OUR_NS=(--memory 1G)
fi
CLIENT=${SBS_CLIENT:-spdk}
[[ $CLIENT == spdk || $CLIENT == nvmf ]] || { echo "SBS_CLIENT must be spdk or nvmf, not $CLIENT" >&2; exit 2; }
HZ=$(getconf CLK_TCK)
OUR_NQN=nqn.2024-01.io.nvmf-rs:default
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=$ROOT/bench/results
RAW=$(mktemp -d /tmp/side-by-side.XXXXXX)
mkdir -p "$OUT"
TSV=$OUT/side-by-side-$STAMP.tsv
MD=$OUT/side-by-side-$STAMP.md
if [[ ! -x $NVMF ]]; then
    echo "building release binary..." >&2
    cargo build --release -p nvmf-cli >&2 || exit 1
fi
((SECS >= 2)) || { echo "SECONDS must be at least 2" >&2; exit 2; }

# name|spdk_nvme_perf options|nvmf perf options
CASES=(
    "randread-4k-qd128|-q 128 -o 4096 -w randread|--iodepth 128 --bs 4k --rw randread"
    "randwrite-4k-qd128|-q 128 -o 4096 -w randwrite|--iodepth 128 --bs 4k --rw randwrite"
    "read-128k-qd16|-q 16 -o 131072 -w read|--iodepth 16 --bs 128k --rw read"
    "write-128k-qd16|-q 16 -o 131072 -w write|--iodepth 16 --bs 128k --rw write"
    "randread-4k-qd1|-q 1 -o 4096 -w randread|--iodepth 1 --bs 4k --rw randread"
)
# SBS_LARGE=1: also 1 MiB sequential I/O, where writes no longer fit in our capsule (R2T/H2CData)
if [[ ${SBS_LARGE:-0} == 1 ]]; then
    CASES+=(
        "read-1m-qd8|-q 8 -o 1048576 -w read|--iodepth 8 --bs 1m --rw read"
        "write-1m-qd8|-q 8 -o 1048576 -w write|--iodepth 8 --bs 1m --rw write"
    )
fi

OPID=
stop_ours() { [[ -n $OPID ]] && { kill "$OPID" 2>/dev/null; wait "$OPID" 2>/dev/null; OPID=; }; }
cleanup() { stop_ours; spdk_tgt_stop; }
trap cleanup EXIT
trap "exit 130" INT TERM

# start_target NAME: sets TPID and TRID
start_target() {
    local name=$1
    PORT=$((PORT + 1))
    case $name in
    spdk)
        spdk_tgt_start "$PORT" || exit 1
        TPID=$SPDK_TGT_PID
        TRID="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:$SPDK_NQN"
        NQN=$SPDK_NQN
        ;;
    ours | ours-poll | ours-nopoll | ours-nopoll-lat0 | ours-cubic | ours-alt)
        local extra= bin=$NVMF
        [[ $name == ours-alt ]] && bin=${NVMF_ALT:?ours-alt needs NVMF_ALT, the other build}
        [[ $name == ours-poll ]] && extra="--busy-poll-batch 0"
        [[ $name == ours-nopoll ]] && extra="--busy-poll-us 0"
        [[ $name == ours-nopoll-lat0 ]] && extra="--busy-poll-us 0 --cpu-latency-us 0"
        [[ $name == ours-cubic ]] && extra="--tcp-congestion cubic"
        # shellcheck disable=SC2086
        taskset -c 0 "$bin" target --listen "127.0.0.1:$PORT" "${OUR_NS[@]}" --block-size 4096 \
            --threads 1 $extra >"$RAW/$name-$PORT.log" 2>&1 &
        OPID=$!
        wait_port "$PORT" || { echo "our target did not come up ($RAW/$name-$PORT.log)" >&2; exit 1; }
        TPID=$OPID
        TRID="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:$OUR_NQN"
        NQN=$OUR_NQN
        ;;
    *)
        echo "unknown target $name (ours, spdk, ours-poll, ours-nopoll, ours-nopoll-lat0, ours-cubic, ours-alt)" >&2
        exit 2
        ;;
    esac
}
stop_target() { stop_ours; spdk_tgt_stop; }

# busy time of the whole machine, USER_HZ ticks (user nice system irq softirq steal)
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# nvmf_client OUT ERR ARGS...: `nvmf perf` on core 1 against the current target, in the
# background (sets ppid); its JSON result goes to OUT
nvmf_client() {
    local out=$1 err=$2
    shift 2
    taskset -c 1 "$NVMF" perf -t tcp -a 127.0.0.1 -s "$PORT" -n "$NQN" --size 1G -o json "$@" \
        >"$out" 2>"$err" &
    ppid=$!
}

# nvmf_total FILE FIELD: the figures of `nvmf perf -o json` in perf_total's order
nvmf_total() {
    python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))["total"]
print([d["iops"], d["mib_s"], d["lat_us"]["mean"]][int(sys.argv[2]) - 1])' "$1" "$2" 2>/dev/null
}

# result_total FILE FIELD: IOPS (1), MiB/s (2) or mean latency (3) of one client run
result_total() {
    if [[ $CLIENT == nvmf ]]; then nvmf_total "$@"; else perf_total "$@"; fi
}
has_result() {
    if [[ $CLIENT == nvmf ]]; then [[ -n $(nvmf_total "$1" 1) ]]; else grep -q '^Total' "$1"; fi
}

# measure_run TAIL: CPU ticks of the target, of the client ($ppid) and of the whole machine
# from now until TAIL seconds before the client's run of SECS ends, then waits for the
# client (sets run_case's t0 t1 c0 c1 m0 m1 n0 n1)
measure_run() {
    t0=$(cpu_ticks "$TPID") c0=$(cpu_ticks "$ppid") m0=$(machine_ticks) n0=$(date +%s%N)
    sleep "$(awk -v s="$SECS" -v t="$1" 'BEGIN { print s - t }')"
    t1=$(cpu_ticks "$TPID") c1=$(cpu_ticks "$ppid") m1=$(machine_ticks) n1=$(date +%s%N)
    wait "$ppid"
}

# run_case ROUND TARGET CASE SPDK_OPTS NVMF_OPTS: one client run, one TSV line
run_case() {
    local round=$1 tname=$2 cname=$3 opts=$4 nopts=$5 try ppid out err t0 t1 c0 c1 m0 m1 n0 n1 i
    out=$RAW/$tname.$cname.$round.out err=$RAW/$tname.$cname.$round.err
    if [[ $CLIENT == nvmf ]]; then
        # shellcheck disable=SC2086
        nvmf_client "$out" "$err" $nopts --runtime "$SECS"
        sleep 0.3 # connected and running (its connect takes a few ms)
        measure_run 0.8
    else
        for try in 1 2 3; do
            # shellcheck disable=SC2086
            stdbuf -oL "$SPDK_DIR/build/bin/spdk_nvme_perf" -c 0x2 $(spdk_mem_args "${PERF_MEM:-1024}") \
                -r "$TRID" $opts -t "$SECS" >"$out" 2>"$err" &
            ppid=$!
            for ((i = 0; i < 600; i++)); do
                grep -q "Initialization complete" "$out" 2>/dev/null && break
                proc_alive "$ppid" || break
                sleep 0.02
            done
            measure_run 0.5
            grep -q '^Total' "$out" && break
            grep -q 'No valid NVMe controllers found' "$out" "$err" || break
            echo "   attach failed (try $try), retrying" >&2
            sleep 1
        done
    fi
    if ! has_result "$out"; then
        echo "   $tname $cname round $round: no result ($(tail -1 "$err"))" >&2
        return
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$tname" "$cname" \
        "$(result_total "$out" 1)" "$(result_total "$out" 2)" "$(result_total "$out" 3)" \
        "$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v w="$((n1 - n0))" 'BEGIN { printf "%.3f", (b - a) / hz / (w / 1e9) }')" \
        "$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" -v w="$((n1 - n0))" 'BEGIN { printf "%.3f", (b - a) / hz / (w / 1e9) }')" \
        "$(cat "$err" "$out" | grep -E '\*ERROR\*' | grep -c -v 'DISCONNECTED\] CQ transport error -6 (No')" \
        "$(awk -v a="$((m1 - m0 - (t1 - t0) - (c1 - c0)))" -v hz="$HZ" -v w="$((n1 - n0))" 'BEGIN { printf "%.3f", a / hz / (w / 1e9) }')" >>"$TSV"
    tail -1 "$TSV" | awk -F'\t' '{ printf "   %-12s %-20s IOPS %10.0f  MiB/s %8.1f  mean %8.1f us  target CPU %.2f  client CPU %.2f  others %.2f\n", $2, $3, $4, $5, $6, $7, $8, $10 }' >&2
}

printf 'round\ttarget\tcase\tiops\tmib_s\tmean_us\ttarget_cpu\tclient_cpu\terrors\tother_cpu\n' >"$TSV"
{
    echo "started: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "load before: $(cat /proc/loadavg)"
    # how an idle CPU waits decides what waking a sleeping target costs (bench/wake-floor.sh)
    echo "kernel $(uname -r); cpuidle driver $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none); guest_halt_poll_ns $(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns 2>/dev/null || echo n/a)"
    echo "ours: $NVMF ($("$NVMF" --version 2>/dev/null)); commit $(git -C "$ROOT" log -1 --format=%h 2>/dev/null)"
    [[ -n ${NVMF_ALT:-} ]] && echo "ours-alt: $NVMF_ALT ($("$NVMF_ALT" --version 2>/dev/null))"
    echo "spdk: $SPDK_DIR ($(cat "$SPDK_DIR/VERSION" 2>/dev/null || grep -m1 -o 'v[0-9][0-9.]*' "$SPDK_DIR/CHANGELOG.md" 2>/dev/null))"
    echo "rounds: $ROUNDS x $SECS s; targets in each round: $TARGETS (order rotating by one each round)"
    if [[ -n $FILE ]]; then
        echo "namespace: file $FILE ($(df --output=fstype "$FILE" | tail -1 | tr -d ' '); ours with default options, SPDK an AIO bdev)"
    else
        echo "namespace: memory, 1 GiB (SPDK: Malloc bdev)"
    fi
    echo "client: $([[ $CLIENT == nvmf ]] && echo "nvmf perf (ours)" || echo "spdk_nvme_perf"); SPDK memory: $([[ ${SPDK_HUGE:-0} == 1 ]] && echo "2 MiB hugetlbfs pages" || echo "4 KiB pages (--no-huge)")"
} >"$RAW/meta.txt"
cat "$RAW/meta.txt" >&2

for r in $(seq "$ROUNDS"); do
    read -ra tl <<<"$TARGETS"
    shift_by=$(((r - 1) % ${#tl[@]}))
    for t in "${tl[@]:shift_by}" "${tl[@]:0:shift_by}"; do
        echo "== round $r/$ROUNDS: $t (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
        start_target "$t"
        # fill the namespace (1 GiB) so reads copy written data on both targets
        if [[ $CLIENT == nvmf ]]; then
            nvmf_client "$RAW/prefill.out" "$RAW/prefill.err" --rw write --bs 128k --iodepth 16 \
                --runtime "${SBS_FILL_SECS:-10}"
            wait "$ppid" || echo "   prefill failed: $(tail -1 "$RAW/prefill.err")" >&2
        else
            spdk_perf "$RAW/prefill.out" "$RAW/prefill.err" "$TRID" -q 16 -o 131072 -w write -t "${SBS_FILL_SECS:-10}" ||
                echo "   prefill failed: $(tail -1 "$RAW/prefill.err")" >&2
        fi
        awk -v m="$(result_total "$RAW/prefill.out" 2)" -v s="${SBS_FILL_SECS:-10}" 'BEGIN { if (m * s < 1024) print "   warning: prefill wrote less than 1 GiB (" m " MiB/s)" }' >&2
        for c in "${CASES[@]}"; do
            IFS='|' read -r name opts nopts <<<"$c"
            [[ $name =~ $ONLY ]] || continue
            run_case "$r" "$t" "$name" "$opts" "$nopts"
        done
        stop_target
    done
done
echo "load after: $(cat /proc/loadavg)" >>"$RAW/meta.txt"
echo "load after: $(cat /proc/loadavg)" >&2

python3 - "$TSV" "$RAW/meta.txt" "$TARGETS" "$CLIENT" >"$MD" <<'EOF'
import csv, statistics, sys
tsv, meta, targets, client = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4]
cname = 'nvmf perf' if client == 'nvmf' else 'spdk_nvme_perf'
rows = list(csv.DictReader(open(tsv), delimiter='\t'))
cases = []
for r in rows:
    if r['case'] not in cases:
        cases.append(r['case'])
def med(t, c, k):
    v = [float(r[k]) for r in rows if r['target'] == t and r['case'] == c]
    return (statistics.median(v), len(v)) if v else (None, 0)
label = {'ours': 'ours (default options)', 'ours-poll': 'ours `--busy-poll-batch 0`',
         'ours-nopoll': 'ours `--busy-poll-us 0`', 'ours-cubic': 'ours `--tcp-congestion cubic`', 'spdk': 'SPDK nvmf_tgt',
         'ours-alt': 'ours, NVMF_ALT build',
         'ours-nopoll-lat0': 'ours `--busy-poll-us 0 --cpu-latency-us 0`'}
print(f'# Side by side: our target and SPDK nvmf_tgt, client {cname}\n')
for line in open(meta):
    print('- ' + line.rstrip())
print('\nMedians over the rounds (n = runs that gave a result). Throughput: IOPS for 4 KiB,'
      ' MiB/s for 128 KiB and 1 MiB; QD 1: mean latency in µs. "× SPDK" > 1 means ours is faster'
      ' (for QD 1: SPDK latency / ours).\n')
ours = [t for t in targets if t != 'spdk']
hdr = ['case', label['spdk']]
for t in ours:
    hdr += [label.get(t, t), '× SPDK']
print('| ' + ' | '.join(hdr) + ' |')
print('|---' + '|---:' * (len(hdr) - 1) + '|')
def fmt(v, k):
    if v is None: return '—'
    return f'{v:,.1f}' if k in ('mean_us', 'mib_s') else f'{v:,.0f}'
for c in cases:
    k = 'mean_us' if c.endswith('qd1') else ('mib_s' if '128k' in c or '1m' in c else 'iops')
    s, sn = med('spdk', c, k)
    cells = [c + (' (mean µs)' if k == 'mean_us' else ' (MiB/s)' if k == 'mib_s' else ' (IOPS)'),
             f'{fmt(s, k)} (n={sn})']
    for t in ours:
        o, on = med(t, c, k)
        cells.append(f'{fmt(o, k)} (n={on})')
        if o is None or s is None: cells.append('—')
        elif k == 'mean_us': cells.append(f'{s / o:.2f}')
        else: cells.append(f'{o / s:.2f}')
    print('| ' + ' | '.join(cells) + ' |')
print(f'\nCPU per I/O (µs of CPU time per I/O, medians): target process | {cname}; '
      'in brackets the share of a core each used.\n')
hdr = ['case'] + [label.get(t, t) for t in ['spdk'] + ours]
print('| ' + ' | '.join(hdr) + ' |')
print('|---' + '|---:' * (len(hdr) - 1) + '|')
for c in cases:
    cells = [c]
    for t in ['spdk'] + ours:
        per = []
        for r in rows:
            # a negative share: perf had exited before the window closed; not a figure
            if r['target'] == t and r['case'] == c and float(r['iops']) > 0 \
                    and float(r['target_cpu']) >= 0 and float(r['client_cpu']) >= 0:
                per.append((float(r['target_cpu']) * 1e6 / float(r['iops']),
                            float(r['client_cpu']) * 1e6 / float(r['iops']),
                            float(r['target_cpu']), float(r['client_cpu'])))
        if not per:
            cells.append('—'); continue
        m = [statistics.median(x[i] for x in per) for i in range(4)]
        cells.append(f'{m[0]:.2f} ({m[2]:.2f}) \\| {m[1]:.2f} ({m[3]:.2f})')
    print('| ' + ' | '.join(cells) + ' |')
oth = sorted(float(r['other_cpu']) for r in rows)
if oth:
    print(f'\nCPU used by other processes during the runs (cores, of 2): median {statistics.median(oth):.2f}, max {oth[-1]:.2f}'
          f' ({sum(1 for x in oth if x > 0.1)} of {len(oth)} runs above 0.10).')
errs = sum(int(r['errors']) for r in rows)
print(f'\nSPDK host errors logged over all runs: {errs} (not counting the "CQ transport error -6" spdk_nvme_perf logs as it frees its I/O queue, against either target).')
EOF
cat "$MD"
echo "wrote $MD and $TSV (raw logs in $RAW)" >&2
