#!/usr/bin/env bash
# bench/spdk-interop.sh -- SPDK's NVMe/TCP initiator against our target (not run in CI:
# SPDK takes too long to build there; run it by hand after changes to the transport).
#
#   SPDK_DIR=/path/to/built/spdk bench/spdk-interop.sh
#
# Starts `nvmf target --listen 127.0.0.1:$INTEROP_PORT --memory 1G` (pinned to core 0),
# then runs SPDK's spdk_nvme_identify and short spdk_nvme_perf runs (core 1), each
# without and with `hostnqn:` in the transport ID (without it SPDK's host sends an
# empty Host NQN in CONNECT), perf also with header and data digests (-H -I):
# 4 KiB randread QD32, 4 KiB randwrite QD32, 128 KiB and 256 KiB 50/50 read/write QD8
# (writes of up to 128 KiB travel in the capsule, 256 KiB ones through R2T and two
# H2CData PDUs of MAXH2CDATA, 128 KiB).
# spdk_nvme_perf has no data verification; the data path itself is verified by our
# host's tests and `nvmf perf --verify`. spdk_nvme_identify has no digest option.
#
# Prints one PASS/FAIL line per check; exits 1 if any failed, 0 if all passed, and 0
# with a SKIP line when SPDK_DIR is unset or not a built SPDK tree.
#
# Environment:
#   SPDK_DIR           built SPDK tree (build/bin/spdk_nvme_perf, spdk_nvme_identify)
#   NVMF               our binary (default target/release/nvmf; built if missing)
#   INTEROP_PORT       default 44420
#   INTEROP_SECS       seconds per perf run (default 2)
#   INTEROP_TARGET_OPTS  extra `nvmf target` options (e.g. "--block-size 4096")
#   INTEROP_LOGS       directory for the logs (default a new one under /tmp)
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=bench/spdk-lib.sh
. "$ROOT/bench/spdk-lib.sh"
spdk_check

NVMF=${NVMF:-$ROOT/target/release/nvmf}
PORT=${INTEROP_PORT:-44420}
SECS=${INTEROP_SECS:-2}
SUBNQN=nqn.2024-01.io.nvmf-rs:default
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:2a7c1e64-5b1c-4c3e-9d4a-1f0e6b3c7d21
LOGS=${INTEROP_LOGS:-$(mktemp -d /tmp/spdk-interop.XXXXXX)}
mkdir -p "$LOGS"
if [[ ! -x $NVMF ]]; then
    echo "building release binary..." >&2
    cargo build --release -p nvmf-cli >&2 || exit 1
fi
port_open "$PORT" && { echo "FAIL: 127.0.0.1:$PORT is already taken"; exit 1; }

TPID=
stop_target() { [[ -n $TPID ]] && { kill "$TPID" 2>/dev/null; wait "$TPID" 2>/dev/null; TPID=; }; }
trap stop_target EXIT
# shellcheck disable=SC2086
taskset -c 0 "$NVMF" target --listen "127.0.0.1:$PORT" --memory 1G ${INTEROP_TARGET_OPTS:-} \
    >"$LOGS/target.log" 2>&1 &
TPID=$!
wait_port "$PORT" || { echo "FAIL: our target did not come up (log $LOGS/target.log)"; exit 1; }

TRID="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:$SUBNQN"
FAILED=0 PASSED=0
pass() { echo "PASS: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }

# errors SPDK's host logs (I/O errors, transport errors) in a run's output, less one
# line SPDK v26.05's spdk_nvme_perf always logs when it frees its I/O queue at the end
# ("CQ transport error -6 (No such device or address)" on the DISCONNECTED qpair), against
# SPDK's own nvmf_tgt too
spdk_errors() {
    grep -h -E '\*ERROR\*|completed with error|failed' "$@" 2>/dev/null |
        grep -v 'DISCONNECTED\] CQ transport error -6 (No such device or address)' | head -3
}

for hn in "" "$HOSTNQN"; do
    label=${hn:+hostnqn}
    label=${label:-empty-hostnqn}
    trid=$TRID${hn:+ hostnqn:$hn}
    # identify
    log=$LOGS/identify-$label
    "$SPDK_DIR/build/bin/spdk_nvme_identify" -p 1 --no-huge -s 512 -r "$trid" >"$log.out" 2>"$log.err"
    rc=$?
    if ((rc == 0)) && grep -q "^Subsystem NQN: *$SUBNQN" "$log.out" && grep -q '^Namespace ID:1' "$log.out" &&
        [[ -z $(spdk_errors "$log.out" "$log.err") ]]; then
        pass "identify ($label)"
    else
        fail "identify ($label): rc $rc; $(spdk_errors "$log.out" "$log.err" | head -1) (log $log.*)"
    fi
    for dg in "" "-H -I"; do
        dlabel=${dg:+digests}
        dlabel=${dlabel:-no-digests}
        for c in "randread-4k-qd32|-q 32 -o 4096 -w randread" \
            "randwrite-4k-qd32|-q 32 -o 4096 -w randwrite" \
            "rw50-128k-qd8|-q 8 -o 131072 -w rw -M 50" \
            "rw50-256k-qd8|-q 8 -o 262144 -w rw -M 50"; do
            name=${c%%|*} opts=${c#*|}
            log=$LOGS/perf-$name-$label-$dlabel
            # shellcheck disable=SC2086
            spdk_perf "$log.out" "$log.err" "$trid" $opts $dg -t "$SECS"
            rc=$?
            iops=$(perf_total "$log.out" 1)
            if ((rc == 0)) && [[ -n $iops ]] && awk -v i="$iops" 'BEGIN { exit !(i > 0) }' &&
                [[ -z $(spdk_errors "$log.out" "$log.err") ]]; then
                pass "perf $name ($label, $dlabel): $iops IOPS, $(perf_total "$log.out" 2) MiB/s"
            else
                fail "perf $name ($label, $dlabel): rc $rc; $(spdk_errors "$log.out" "$log.err" | head -1) (log $log.*)"
            fi
        done
    done
done

if ! proc_alive "$TPID"; then
    fail "our target exited during the run (log $LOGS/target.log)"
elif grep -q -i -E 'panic|error' "$LOGS/target.log"; then
    fail "our target logged errors: $(grep -i -m1 -E 'panic|error' "$LOGS/target.log")"
else
    pass "our target alive, no errors logged"
fi
stop_target
echo "$PASSED passed, $FAILED failed (logs in $LOGS)"
((FAILED == 0))
