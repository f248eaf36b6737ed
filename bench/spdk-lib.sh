# shellcheck shell=bash
# bench/spdk-lib.sh -- helpers shared by bench/spdk-interop.sh and bench/side-by-side.sh
# (sourced, not run). SPDK itself is never fetched or built here: SPDK_DIR points at an
# SPDK tree built elsewhere, outside this repository, whose build/bin has nvmf_tgt,
# spdk_nvme_perf and spdk_nvme_identify (docs/performance.md, "SPDK side by side").
#
# spdk_check          exit 0 with a SKIP line when SPDK_DIR is unset or lacks the binaries
# spdk_tgt_start P    SPDK's nvmf_tgt, reactor on core 0, no hugepages, one Malloc bdev
#                     (SPDK_MALLOC_MB, default 1024; SPDK_MALLOC_BS, default 4096) as
#                     namespace 1 of $SPDK_NQN, listening on 127.0.0.1:P; with
#                     SPDK_AIO_FILE=PATH an AIO bdev on that file instead (libaio, O_DIRECT,
#                     block size SPDK_MALLOC_BS)
# spdk_tgt_stop       stop it (SIGTERM, then SIGKILL after 15 s)
# spdk_perf OUT ERR TRID ARGS...   spdk_nvme_perf on core 1 (-c 0x2), no hugepages;
#                     retries an attach that failed ("No valid NVMe controllers found",
#                     SPDK's host gives CONNECT 500 ms); status 1 without a "Total" line

SPDK_NQN=${SPDK_NQN:-nqn.2016-06.io.spdk:cnode1}
SPDK_TGT_PID=
SPDK_RPC_SOCK=/var/tmp/nvmf-rs-bench-spdk.$$.sock
SPDK_TGT_LOG=${SPDK_TGT_LOG:-/tmp/nvmf-rs-bench-spdk-tgt.$$.log}
# Debian's python3 has the modules scripts/rpc.py needs; a pyenv python3 in PATH may not.
SPDK_PY=${SPDK_PY:-/usr/bin/python3}

spdk_check() {
    local b
    if [[ -z ${SPDK_DIR:-} ]]; then
        echo "SKIP: SPDK_DIR is not set (an SPDK tree built with nvmf_tgt, spdk_nvme_perf, spdk_nvme_identify; see docs/performance.md)"
        exit 0
    fi
    for b in nvmf_tgt spdk_nvme_perf spdk_nvme_identify; do
        if [[ ! -x $SPDK_DIR/build/bin/$b ]]; then
            echo "SKIP: $SPDK_DIR/build/bin/$b is missing (SPDK_DIR must be a built SPDK tree)"
            exit 0
        fi
    done
    export LD_LIBRARY_PATH=$SPDK_DIR/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT: true once something listens on 127.0.0.1:PORT, false after 5 s
wait_port() {
    for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.05; done
    return 1
}

proc_alive() {   # true while $1 exists and is not a zombie
    local st
    [[ -r /proc/$1/stat ]] || return 1
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

# utime+stime of a process, in USER_HZ ticks (0 if it is gone)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# spdk_mem_args MB: DPDK memory options. Default: `--no-huge -s MB` (anonymous 4 KiB
# pages, nothing to set up). SPDK_HUGE=1: `-s MB` from 2 MiB hugetlbfs pages, which is how
# SPDK is meant to run (its DMA-able buffers, the Malloc bdev included, live there); the
# pages are reserved and /dev/hugepages mounted here if they are not yet.
spdk_mem_args() {
    if [[ ${SPDK_HUGE:-0} == 1 ]]; then
        local need=$(( (SPDK_MEM_TOTAL_MB + 1) / 2 )) have
        have=$(awk '/^HugePages_Total/ {print $2}' /proc/meminfo)
        ((have >= need)) || echo "$need" >/proc/sys/vm/nr_hugepages
        mountpoint -q /dev/hugepages || { mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages; }
        echo "-s $1"
    else
        echo "--no-huge -s $1"
    fi
}
# Hugepages to reserve with SPDK_HUGE=1: the target's and the client's memory, plus slack.
SPDK_MEM_TOTAL_MB=$(( ${SPDK_MEM:-2048} + ${PERF_MEM:-1024} + 1024 ))

spdk_rpc() { "$SPDK_PY" "$SPDK_DIR/scripts/rpc.py" -s "$SPDK_RPC_SOCK" -t 30 "$@" >>"$SPDK_TGT_LOG" 2>&1; }

spdk_tgt_start() {
    local port=$1 i
    spdk_tgt_stop
    rm -f "$SPDK_RPC_SOCK" "$SPDK_RPC_SOCK.lock"
    "$SPDK_DIR/build/bin/nvmf_tgt" -m 0x1 $(spdk_mem_args "${SPDK_MEM:-2048}") -r "$SPDK_RPC_SOCK" \
        </dev/null >>"$SPDK_TGT_LOG" 2>&1 &
    SPDK_TGT_PID=$!
    for ((i = 0; i < 300; i++)); do
        proc_alive "$SPDK_TGT_PID" || { echo "nvmf_tgt exited during init (log $SPDK_TGT_LOG)" >&2; return 1; }
        [[ -S $SPDK_RPC_SOCK ]] && "$SPDK_PY" "$SPDK_DIR/scripts/rpc.py" -s "$SPDK_RPC_SOCK" -t 2 \
            framework_wait_init >/dev/null 2>&1 && break
        sleep 0.1
    done
    ((i < 300)) || { echo "nvmf_tgt: RPC socket did not come up (log $SPDK_TGT_LOG)" >&2; return 1; }
    spdk_rpc nvmf_create_transport -t TCP &&
        if [[ -n ${SPDK_AIO_FILE:-} ]]; then
            spdk_rpc bdev_aio_create "$SPDK_AIO_FILE" Bdev0 "${SPDK_MALLOC_BS:-4096}"
        else
            spdk_rpc bdev_malloc_create -b Bdev0 "${SPDK_MALLOC_MB:-1024}" "${SPDK_MALLOC_BS:-4096}"
        fi &&
        spdk_rpc nvmf_create_subsystem "$SPDK_NQN" -a -s SPDK00000000000001 &&
        spdk_rpc nvmf_subsystem_add_ns -n 1 "$SPDK_NQN" Bdev0 &&
        spdk_rpc nvmf_subsystem_add_listener "$SPDK_NQN" -t tcp -f ipv4 -a 127.0.0.1 -s "$port" ||
        { echo "nvmf_tgt: configuration failed (log $SPDK_TGT_LOG)" >&2; return 1; }
    for ((i = 0; i < 100; i++)); do
        port_open "$port" && return 0
        sleep 0.1
    done
    echo "nvmf_tgt: 127.0.0.1:$port does not accept connections" >&2
    return 1
}

spdk_tgt_stop() {
    local i
    [[ -n $SPDK_TGT_PID ]] || return 0
    kill -TERM "$SPDK_TGT_PID" 2>/dev/null
    for ((i = 0; i < 150; i++)); do proc_alive "$SPDK_TGT_PID" || break; sleep 0.1; done
    proc_alive "$SPDK_TGT_PID" && kill -KILL "$SPDK_TGT_PID" 2>/dev/null
    wait "$SPDK_TGT_PID" 2>/dev/null
    SPDK_TGT_PID=
    rm -f "$SPDK_RPC_SOCK" "$SPDK_RPC_SOCK.lock"
}

# spdk_perf OUT ERR TRID ARGS...   (foreground)
spdk_perf() {
    local out=$1 err=$2 trid=$3 n rc
    shift 3
    for ((n = 1; n <= ${PERF_ATTACH_TRIES:-3}; n++)); do
        stdbuf -oL "$SPDK_DIR/build/bin/spdk_nvme_perf" -c 0x2 $(spdk_mem_args "${PERF_MEM:-1024}") \
            -r "$trid" "$@" >"$out" 2>"$err"
        rc=$?
        grep -q '^Total' "$out" && return 0
        grep -q 'No valid NVMe controllers found' "$err" "$out" || break
        echo "spdk_nvme_perf: attach failed (try $n), retrying" >&2
        sleep 1
    done
    ((rc == 0)) && rc=1
    return "$rc"
}

# perf_total FILE FIELD: from spdk_nvme_perf's "Total : IOPS MiB/s Average min max" line
# FIELD 1 = IOPS, 2 = MiB/s, 3 = mean latency (us), 4 = min, 5 = max
perf_total() { awk -v f="$2" '/^Total/ { sub(/^Total[^:]*:/, ""); print $f }' "$1"; }
