#!/bin/sh
# perf-clients.sh -- guest script (a benchmark, not a test suite): how hard does
# each NVMe/TCP client drive OUR target?  Our `nvmf target --memory` on the
# guest's loopback, driven alternately by
#   * the Linux kernel host (nvme-tcp, `nvme connect -i 1`) + fio (libaio and/or
#     io_uring, direct=1) on /dev/nvmeXnY, and
#   * our `nvmf perf` (one I/O queue, like the kernel host's -i 1),
# over the same matrix, for PC_ROUNDS interleaved rounds (the order of the
# clients alternates from round to round).  Every run snapshots /proc/uptime, the
# target's /proc/PID/stat (utime+stime), the per-CPU lines of /proc/stat and
# (kernel host) /sys/block/nvmeXnY/stat four times: before the client starts
# (.a0), PC_WARM s after (.a), 1 s before its runtime ends (.b) and after it
# exited (.b0), so CPU per I/O can be taken over the steady-state window a..b
# (no process start-up, connect or fio set-up in it) as well as over the whole
# run.  The clients' JSON reports and the snapshots are copied to the host share
# as perf-clients.tar.  bench/clients.sh runs it and makes the table:
#
#   cargo build --release -p nvmf-cli
#   tests/interop/run-vm.sh --no-target --with-fio --smp 2 --share DIR \
#       --extra target/release/nvmf --script tests/interop/guest/perf-clients.sh
#
# With 2 or more vCPUs the target runs on vCPU 1 (`taskset -c 1`, --threads 1)
# and every client on vCPU 0.  vCPU 0 is where the kernel host's work lands
# too: with one I/O queue nvme-tcp's io_work runs on CPU 0 (qid 1 -> first
# online CPU) and fio submits from CPU 0.  With one vCPU nothing is pinned.
#
# Environment (run-vm.sh --env NAME=VALUE):
#   PC_RUNTIME   seconds per run (default 6)
#   PC_WARM      seconds from the client's start to the window's start (default 2)
#   PC_ROUNDS    rounds (default 3)
#   PC_CASES     cases, RW-BS-qdN (default "randread-4k-qd32 randread-4k-qd128 read-128k-qd16")
#   PC_CLIENTS   clients (default "kernel-libaio kernel-io_uring kernel-io_uring-batch nvmf-perf
#                nvmf-perf-sqfc"); kernel-ENGINE-batch
#                is fio with --iodepth_batch_submit=QD/4 --iodepth_batch_complete_max=QD;
#                nvmf-perf-sqfc is `nvmf perf --sq-flow-control` (CATTR bit 2 not set, as
#                the kernel host does: the target sends a CapsuleResp after every read's data)
#   PC_SIZE_MB   memory namespace size, MiB (default 128); written once before the runs
. /lib/nvme-vm/lib.sh

NVMF=${NVMF_BIN:-/extra/nvmf}
NQN=${PC_NQN:-nqn.2024-01.io.nvmf-rs:perf}
ADDR=127.0.0.1
PORT=4420
RUNTIME=${PC_RUNTIME:-6}
WARM=${PC_WARM:-2}
WINDOW=$(awk -v r=$RUNTIME -v w=$WARM 'BEGIN{x=r-w-1; if(x<1)x=1; print x}')
ROUNDS=${PC_ROUNDS:-3}
CASES=${PC_CASES:-"randread-4k-qd32 randread-4k-qd128 read-128k-qd16"}
CLIENTS=${PC_CLIENTS:-"kernel-libaio kernel-io_uring kernel-io_uring-batch nvmf-perf nvmf-perf-sqfc"}
SIZE_MB=${PC_SIZE_MB:-128}
OUT=/tmp/perf-clients
TMO="timeout 120"
TARGET_PID=
rc=0

say() { echo "=== $*"; }
mkdir -p $OUT

NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
    TGT_PIN="taskset -c 1"; CLI_PIN="taskset -c 0"; PINNING="target on vCPU 1, clients on vCPU 0"
else
    TGT_PIN=""; CLI_PIN=""; PINNING="1 vCPU: target and clients share it (nothing pinned)"
fi

# ------------------------------------------------------------- environment --
{
    echo "kernel=$(uname -r)"
    echo "cmdline=$(cat /proc/cmdline)"
    echo "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
    echo "vcpus=$NCPU"
    echo "pinning=$PINNING"
    echo "cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
    echo "nvmf_version=$($NVMF --version 2>&1 | head -n1)"
    echo "fio_version=$(fio --version 2>&1 | head -n1)"
    echo "nvme_cli=$(nvme version 2>&1 | head -n1)"
    echo "runtime_s=$RUNTIME"
    echo "warm_s=$WARM"
    echo "window_s=$WINDOW"
    echo "rounds=$ROUNDS"
    echo "cases=$CASES"
    echo "clients=$CLIENTS"
    echo "size_mb=$SIZE_MB"
    echo "user_hz=100"
} >$OUT/env.txt
dmesg | grep -iE 'isolation|mitigat|vulnerab|clocksource|tsc:' >$OUT/dmesg.txt 2>&1
cat $OUT/env.txt | sed 's/^/    /'
command -v fio >/dev/null || { skip "fio not in the guest (run-vm.sh --with-fio): kernel-host cases dropped"; CLIENTS=nvmf-perf; }

# ------------------------------------------------------------------ target --
wait_listen() {
    _w=0
    while [ $_w -lt 200 ]; do
        netstat -ltn 2>/dev/null | grep -qE "[:.]$PORT[[:space:]]" && return 0
        kill -0 "$TARGET_PID" 2>/dev/null || return 1
        _w=$((_w+1)); sleep 0.1
    done
    return 1
}

say "target: $TGT_PIN $NVMF target --listen $ADDR:$PORT --memory ${SIZE_MB}M --subnqn $NQN --threads 1"
$TGT_PIN $NVMF target --listen $ADDR:$PORT --memory ${SIZE_MB}M --subnqn $NQN --threads 1 \
    >$OUT/target.log 2>&1 &
TARGET_PID=$!
if wait_listen; then
    pass "nvmf target listening (pid $TARGET_PID, comm $(cat /proc/$TARGET_PID/comm), affinity $(taskset -p $TARGET_PID 2>/dev/null | awk '{print $NF}'))"
else
    fail "nvmf target did not start"; cat $OUT/target.log; exit 1
fi

# prefill: write the whole namespace once, so reads copy real data instead of
# zero-filling never-written chunks (as bench/run.sh does)
say "prefill ${SIZE_MB} MiB"
_t0=$(uptime_s)
if $CLI_PIN $NVMF perf -t tcp -a $ADDR -s $PORT -n $NQN --rw write --bs 128k --iodepth 16 \
        --verify --runtime 0.001 -o json >$OUT/prefill.json 2>$OUT/prefill.err; then
    pass "prefill (verify pass over ${SIZE_MB} MiB)"; rate $SIZE_MB $_t0
else
    fail "prefill: $(tail -n 3 $OUT/prefill.err)"; rc=1
fi

# ------------------------------------------------------------------ kernel --
DEV=; DISK=
kernel_connect() {
    DEV=
    if ! $TMO nvme connect -t tcp -a $ADDR -s $PORT -n $NQN -i 1 >$OUT/connect.out 2>&1; then
        fail "nvme connect: $(cat $OUT/connect.out)"; return 1
    fi
    DEV=$(nvmevm_wait_ns_dev $NQN 1) || { fail "no namespace device after nvme connect"; DEV=; return 1; }
    # with native multipath (6.1: no I/O statistics on the head node) the I/Os are
    # counted on the hidden path device nvmeXcYnZ
    DISK=$(basename $DEV)
    _p=$(ls /sys/block 2>/dev/null | grep -E "^${DISK%n*}c[0-9]+n${DISK##*n}\$" | head -n1)
    [ -n "$_p" ] && DISK=$_p
    # no request merging: the target must see the same commands from both clients
    # (with batched submission blk-mq merged 4 sequential 128 KiB reads into one)
    for _q in $(basename $DEV) $DISK; do echo 2 >/sys/block/$_q/queue/nomerges 2>/dev/null; done
    echo "    $DEV (stats: $DISK): nomerges=$(cat /sys/block/$(basename $DEV)/queue/nomerges),$(cat /sys/block/$DISK/queue/nomerges)" \
        "max_hw_sectors_kb=$(cat /sys/block/$DISK/queue/max_hw_sectors_kb)" \
        "max_sectors_kb=$(cat /sys/block/$DISK/queue/max_sectors_kb)" \
        "nr_requests=$(cat /sys/block/$DISK/queue/nr_requests)" \
        "hw_queues=$(ls -d /sys/block/$DISK/mq/* 2>/dev/null | wc -l)" | tee -a $OUT/kernel-dev.txt
    return 0
}
kernel_disconnect() {
    $TMO nvme disconnect -n $NQN >/dev/null 2>&1 || fail "nvme disconnect"
    DEV=; DISK=
}

# ---------------------------------------------------------------- the runs --
snap() {   # snap FILE: uptime, the target's stat, per-CPU times, the disk's stat
    {
        echo "uptime $(cat /proc/uptime)"
        echo "target $(cat /proc/$TARGET_PID/stat)"
        grep -E '^(cpu|ctxt)' /proc/stat
        [ -z "$DISK" ] || echo "disk $(cat /sys/block/$DISK/stat)"
    } >"$1"
}

# run_one CLIENT CASE ROUND
run_one() {
    _cl=$1; _case=$2; _r=$3
    _rw=${_case%%-*}; _x=${_case#*-}; _bs=${_x%%-*}; _qd=${_x#*-qd}
    _n=$OUT/$_cl.$_case.$_r
    echo "--- round $_r: $_cl $_case"
    snap $_n.a0
    case $_cl in
        kernel-*)
            _eng=${_cl#kernel-}; _batch=""
            case $_eng in *-batch)   # submit qd/4 at a time, reap up to qd at a time
                _eng=${_eng%-batch}; _b=$((_qd / 4)); [ $_b -ge 1 ] || _b=1
                _batch="--iodepth_batch_submit=$_b --iodepth_batch_complete_min=1 --iodepth_batch_complete_max=$_qd" ;;
            esac
            [ -n "$DEV" ] || { fail "$_cl $_case round $_r: not connected"; return 1; }
            $CLI_PIN fio --name=$_case --filename=$DEV --ioengine=$_eng --direct=1 --rw=$_rw \
                --bs=$_bs --iodepth=$_qd --numjobs=1 --runtime=$RUNTIME --time_based \
                --norandommap --randrepeat=0 $_batch --output-format=json --output=$_n.json >$_n.err 2>&1 &
            ;;
        nvmf-perf|nvmf-perf-sqfc)
            _sqfc=""; [ $_cl = nvmf-perf-sqfc ] && _sqfc=--sq-flow-control
            $CLI_PIN $NVMF perf -t tcp -a $ADDR -s $PORT -n $NQN --rw $_rw --bs $_bs \
                --iodepth $_qd --runtime $RUNTIME $_sqfc -o json >$_n.json 2>$_n.err &
            ;;
        *) fail "unknown client $_cl"; return 1 ;;
    esac
    _pid=$!
    sleep $WARM; snap $_n.a
    sleep $WINDOW; snap $_n.b
    wait $_pid
    _rc=$?
    snap $_n.b0
    if [ $_rc -ne 0 ]; then
        fail "$_cl $_case round $_r (rc=$_rc): $(tail -n 3 $_n.err)"; rc=1; return 1
    fi
    grep -o '"iops" *: *[0-9.]*' $_n.json | head -n1 | sed 's/^/    /'
    return 0
}

kernel_clients=""; ours=""
for c in $CLIENTS; do
    case $c in kernel-*) kernel_clients="$kernel_clients $c" ;; *) ours="$ours $c" ;; esac
done

kernel_block() {   # one round of every kernel client and case, connected once
    [ -n "$kernel_clients" ] || return 0
    kernel_connect || { rc=1; return 1; }
    for _c in $CASES; do for _k in $kernel_clients; do run_one $_k $_c $1; done; done
    kernel_disconnect
}
ours_block() {
    for _c in $CASES; do for _o in $ours; do run_one $_o $_c $1; done; done
}

_t0=$(uptime_s)
r=1
while [ $r -le $ROUNDS ]; do
    say "round $r/$ROUNDS"
    if [ $((r % 2)) = 1 ]; then kernel_block $r; ours_block $r; else ours_block $r; kernel_block $r; fi
    r=$((r+1))
done
echo "    all rounds: $(awk -v a=$_t0 -v b=$(uptime_s) 'BEGIN{printf "%.0f", b-a}') s guest time"

# ---------------------------------------------------------------- wrap up --
if kill -0 $TARGET_PID 2>/dev/null; then
    kill -TERM $TARGET_PID
    _w=0; while [ $_w -lt 50 ] && kill -0 $TARGET_PID 2>/dev/null; do _w=$((_w+1)); sleep 0.1; done
    kill -0 $TARGET_PID 2>/dev/null && { fail "target still running 5 s after SIGTERM"; kill -9 $TARGET_PID; rc=1; }
else
    fail "target died during the runs"; rc=1
fi
grep -qi panick $OUT/target.log && { fail "panic in the target's log"; rc=1; }
tail -n 5 $OUT/target.log | sed 's/^/    target: /'

(cd /tmp && tar -cf /tmp/perf-clients.tar perf-clients) && nvmevm_copy_out /tmp/perf-clients.tar || rc=1
exit $rc
