#!/bin/sh
# rdma-hostile.sh -- guest script (trixie track): a deliberately bad NVMe/RDMA
# host (crates/transport/examples/rdma-hostile.rs) against OUR target on
# rdma://10.99.0.1:4430 over soft-RoCE; the second script of suite `rdma`.
#
#   tests/interop/run.sh rdma
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --extra target/release/examples/rdma-hostile --script tests/interop/guest/rdma-hostile.sh
#
# The rule it checks: a bad connect request is rejected in the CM with the
# NVMe/RDMA reject status (NVMe-oF 1.1 §7.3.5.2), a bad capsule or a failed
# RDMA READ ends that queue pair (disconnect) and never the target; other hosts
# keep working. Steps: rxe0 on dummy0 (as the first script); our target with
# --memory 16M; rdma-hostile's cases (a valid Connect; RECFMT 1; an I/O queue
# with HSQSIZE 4095; HRQSIZE < HSQSIZE + 1; no / 4 bytes of private data; a
# 10-byte SEND; a Connect whose keyed SGL has a bogus rkey; the Connect data
# in the capsule on the admin queue; a Connect with in-capsule SGL1 and no
# data; a Connect with a plain Data Block SGL1; a valid Connect again), each
# of its PASS:/FAIL: lines a result here; the target logged the three queues
# it ended (short capsule, failed RDMA READ, failed RECV); it still runs and
# its log has no panic; the kernel host still connects (nvme connect -t
# rdma) and moves 1 MiB (dd/cmp); SIGTERM ends the target with 0.
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_connect st_disconnect st_io nvmevm_rxe_setup ST_RDMA_ADDR

NVMF=${NVMF_BIN:-/extra/nvmf}
HOSTILE=${RDMA_HOSTILE_BIN:-/extra/rdma-hostile}
S=nqn.2024-01.io.nvmf-rdma:hostile
ADDR=$ST_RDMA_ADDR
PORT=4430
T=rdma-hostile
TARGET_LOG=/tmp/nvmf-target-rdma-hostile.log

echo "=== hostile NVMe/RDMA host vs nvmf target"
[ -x "$NVMF" ] || { fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; }
[ -x "$HOSTILE" ] || { fail "$T: no $HOSTILE in the guest (--extra target/release/examples/rdma-hostile)"; exit 1; }
for m in rdma_rxe rdma_ucm ib_uverbs nvme-rdma; do
    modprobe $m 2>/tmp/.h.mod || { fail "$T: modprobe $m: $(cat /tmp/.h.mod)"; exit 1; }
done
if ! nvmevm_rxe_setup >/tmp/.h.rxe 2>&1; then fail "$T: rxe0 on dummy0: $(cat /tmp/.h.rxe)"; exit 1; fi
rdma link show rxe0/1 2>/dev/null | grep -q 'state ACTIVE' ||
    { fail "$T: rxe0 not ACTIVE: $(rdma link show 2>&1)"; exit 1; }
nvmevm_hostnqn

TARGET_RUST_LOG=${RUST_LOG:-info,nvmf_transport=debug}
nvmevm_start_rdma_target $T $TARGET_LOG "$ADDR:$PORT" --memory 16M --subnqn "$S" || exit 1

# The bad host. Each of its PASS:/FAIL: lines becomes a result; it must have
# printed all twelve cases and exited 0 exactly when none failed.
echo "+ rdma-hostile --addr $ADDR:$PORT --subnqn $S"
timeout 600 "$HOSTILE" --addr "$ADDR:$PORT" --subnqn "$S" --wait-secs 20 >/tmp/.h.out 2>&1; rc=$?
sed 's/^/    /' /tmp/.h.out
n=0
while IFS= read -r line; do
    case $line in
        "PASS: "*) pass "$T: ${line#PASS: }"; n=$((n+1)) ;;
        "FAIL: "*) fail "$T: ${line#FAIL: }"; n=$((n+1)) ;;
    esac
done </tmp/.h.out
nfail=$(grep -c '^FAIL: ' /tmp/.h.out)
if [ $n -eq 12 ] && { { [ $rc -eq 0 ] && [ $nfail -eq 0 ]; } || { [ $rc -eq 1 ] && [ $nfail -gt 0 ]; }; }; then
    pass "$T: rdma-hostile ran all 12 cases, exit $rc matches its $nfail FAIL line(s)"
else
    fail "$T: rdma-hostile exit $rc with $n case lines ($nfail FAIL), 12 expected"
fi

# The queues of cases e, f and i ended on the target's own decision (the
# sans-I/O queue's Terminated event), each with its reason in the log.
nterm=$(grep -c 'connection terminated' $TARGET_LOG)
if grep -q 'connection terminated: capsule of 10 bytes' $TARGET_LOG && [ "$nterm" -ge 3 ]; then
    pass "$T: the target logged $nterm queues it ended ($(grep -o 'connection terminated: [^=]*' $TARGET_LOG | sed 's/ peer$//' | paste -sd';' -))"
else
    fail "$T: the target logged $nterm ended queues (3 expected: short capsule, RDMA READ, RECV)"
fi
if kill -0 "$TARGET_PID" 2>/dev/null; then
    pass "$T: the target is still running after the bad hosts"
else
    fail "$T: the target is gone after the bad hosts"; sed 's/^/    log: /' $TARGET_LOG | tail -n 40; exit 1
fi
# Another host keeps working: the kernel NVMe/RDMA host, 1 MiB dd/cmp.
if st_connect $T "nvme connect -t rdma after the bad hosts" "$S" -t rdma -a $ADDR -s $PORT; then
    st_io $T "$ST_DEV" 1 && pass "$T: the kernel host moves 1 MiB (dd/cmp) after the bad hosts"
    st_disconnect $T "$S"
fi

nvmevm_stop_target $T "$TARGET_PID"
if grep -qi 'panicked' $TARGET_LOG; then fail "$T: the target log has a panic"
else pass "$T: no panic in the target log"; fi
sed 's/^/    log: /' $TARGET_LOG | tail -n 40
grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $TARGET_LOG
exit 0
