#!/usr/bin/env bash
# bench/wake-floor.sh -- what waking a sleeping server costs on this machine, without NVMe
# (not run in CI: it prints figures, it checks nothing).
#
#   bench/wake-floor.sh [ROUNDS [COUNT]]      (default 3 rounds of 20000 round trips)
#
# A loopback TCP ping-pong (crates/cli/examples/wake_floor.rs): a 72-byte request (a
# command capsule) answered with 4120 bytes (a C2HData PDU with 4 KiB), server on core 0,
# spinning client on core 1 (as spdk_nvme_perf), the server either sleeping in read()
# ("block": a target that does not poll) or spinning ("spin": SPDK's reactor). Rounds
# alternate the two; medians of the per-round means are printed. block minus spin is
# what a queue depth 1 command on a target that sleeps pays on top of one that polls.
# A third case, "both", has the client sleep in read() too, as `nvmf perf` without
# --hipri does: with both CPUs idle between round trips, each wakeup costs more.
#
# The cost depends on how the (virtual) CPU idles: the cpuidle driver and, with the
# cpuidle-haltpoll driver of KVM guests, guest_halt_poll_ns (the kernel's default is
# 200000; 0 halts at once, so each wakeup leaves the guest). Both are printed.
# WF_HALTPOLL_NS=N sets guest_halt_poll_ns to N for the run (root) and puts the old value
# back at the end, for an A/B of the machine's setting.
set -u
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
COUNT=${2:-20000}
PORT=${WF_PORT:-4599}
HP=/sys/module/haltpoll/parameters/guest_halt_poll_ns
cargo build -q --release -p nvmf-cli --example wake_floor || exit 1
BIN=target/release/examples/wake_floor
((ROUNDS >= 1 && COUNT >= 100)) || { echo "ROUNDS must be at least 1 and COUNT at least 100" >&2; exit 2; }

OLD_HP=
if [[ -n ${WF_HALTPOLL_NS:-} ]]; then
    [[ -w $HP ]] || { echo "WF_HALTPOLL_NS needs a writable $HP (root, cpuidle-haltpoll)" >&2; exit 2; }
    OLD_HP=$(cat "$HP")
    echo "$WF_HALTPOLL_NS" >"$HP"
fi
restore() { [[ -n $OLD_HP ]] && echo "$OLD_HP" >"$HP"; }
trap restore EXIT
trap "exit 130" INT TERM

echo "cpuidle driver: $(cat /sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none)," \
    "guest_halt_poll_ns: $(cat "$HP" 2>/dev/null || echo n/a), kernel $(uname -r)"

declare -A MEANS
for ((r = 1; r <= ROUNDS; r++)); do
    for mode in block spin both; do
        smode=$mode cmode=spin
        [[ $mode == both ]] && smode=block cmode=block
        taskset -c 0 "$BIN" server --port "$PORT" --mode "$smode" --resp 4120 &
        spid=$!
        line=$(taskset -c 1 "$BIN" client --port "$PORT" --mode "$cmode" --req 72 --resp 4120 --count "$COUNT") || { kill "$spid" 2>/dev/null; exit 1; }
        wait "$spid" 2>/dev/null
        echo "round $r $mode: $line"
        MEANS[$mode]+="$(awk '{print $5}' <<<"$line") "
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
b=$(median "${MEANS[block]}")
s=$(median "${MEANS[spin]}")
o=$(median "${MEANS[both]}")
echo "median mean round trip: block $b µs, spin $s µs, a wakeup costs $(awk -v b="$b" -v s="$s" 'BEGIN {printf "%.1f", b - s}') µs; both sleeping $o µs"
