#!/bin/sh
# kernel-hosts-resv.sh -- guest script (trixie track): NVMe reservations from
# TWO Linux kernel hosts (two `nvme connect` with their own --hostnqn and
# --hostid, i.e. two controllers of one subsystem) against OUR target.
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/kernel-hosts-resv.sh
#
# Self-test against the kernel nvmet target (namespace resv_enable=1; nvmet has
# reservations since Linux 6.13, so on a kernel without the attribute this
# mode SKIPs):
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --env NVMF_TARGET_MODE=kernel \
#       --script tests/interop/guest/kernel-hosts-resv.sh
#
# Steps: A and B `nvme resv-register` (keys 0xaa, 0xbb); A `nvme resv-acquire`
# Write Exclusive; a write from B must fail with Reservation Conflict, a read
# from B and a write from A succeed; `nvme resv-report --eds -o json` lists both
# registrants (their 128-bit host IDs, A holding, rtype 1); A releases; then B
# writes. A wrong key must be refused. Finally both unregister, disconnect.
#
# Each host's commands go through its own controller's character device
# (/dev/nvmeX, with -n 1): with native multipath (Debian's default) the two
# controllers share one block device, so the block device cannot say which
# host a write comes from. I/O uses `nvme io-passthru` on that device (the
# kernel allows NVME_IOCTL_IO_CMD there while the controller has one namespace).
#
# ---------------------------------------------------------------------------
# ASSUMPTIONS about `nvmf`:
#   nvmf target --listen 127.0.0.1:4420 --file /tmp/resv-ns1.img,size=64M --subnqn NQN
#     * --file = nsid 1 (reservations, RESCAP all types, ONCS bit 5);
#     * runs in the foreground; SIGTERM: exit 0 within 5 s;
#   run.sh checks `nvmf target --help` for --listen --file --subnqn.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_subsys st_port st_link st_cleanup

MODE=${NVMF_TARGET_MODE:-nvmf}          # nvmf (ours) | kernel (nvmet self-test)
NVMF=${NVMF_BIN:-/extra/nvmf}
S=${NVMF_RESV_NQN:-nqn.2024-01.io.nvmf-rs:resv}
ADDR=127.0.0.1
PORT=4420
T=resv
TARGET_LOG=/tmp/nvmf-target-resv.log
TARGET_PID=
IA=0000000a-0000-4000-8000-0000000000aa
IB=0000000b-0000-4000-8000-0000000000bb
HA=nqn.2014-08.org.nvmexpress:uuid:$IA
HB=nqn.2014-08.org.nvmexpress:uuid:$IB

listening() { ss -ltn 2>/dev/null | grep -qE "[:.]$PORT[[:space:]]"; }

# ------------------------------------------------------------------ target --
target_start() {
    if [ "$MODE" = kernel ]; then
        st_subsys "$S" 64 1 || { fail "$T: nvmet subsystem"; return 1; }
        _n=$NVMET_CFS/subsystems/$S/namespaces/1
        if [ ! -e "$_n/resv_enable" ]; then
            skip "$T: nvmet of kernel $(uname -r) has no reservations (namespaces/N/resv_enable, Linux 6.13+)"
            st_cleanup "$S"; return 2
        fi
        echo 0 >"$_n/enable" && echo 1 >"$_n/resv_enable" && echo 1 >"$_n/enable" ||
            { fail "$T: nvmet resv_enable"; return 1; }
        st_port 1 tcp $ADDR $PORT && st_link "$S" 1 || { fail "$T: nvmet port"; return 1; }
        pass "$T: nvmet subsystem with resv_enable=1"
        return 0
    fi
    truncate -s 64M /tmp/resv-ns1.img
    "$NVMF" target --listen "$ADDR:$PORT" --file /tmp/resv-ns1.img,size=64M --subnqn "$S" >>$TARGET_LOG 2>&1 &
    TARGET_PID=$!
    _w=0
    while [ $_w -lt 200 ] && ! listening; do
        kill -0 $TARGET_PID 2>/dev/null || break
        _w=$((_w+1)); sleep 0.1
    done
    if listening; then pass "$T: nvmf target listening (pid $TARGET_PID)"; return 0; fi
    fail "$T: nvmf target not listening"; tail -n 20 $TARGET_LOG | sed 's/^/    target: /'
    return 1
}

target_stop() {
    if [ "$MODE" = kernel ]; then st_cleanup "$S"; return 0; fi
    [ -n "$TARGET_PID" ] || return 0
    nvmevm_stop_target "$T" "$TARGET_PID"
    if grep -q panicked $TARGET_LOG; then fail "$T: the target panicked"; grep -A3 panicked $TARGET_LOG | sed 's/^/    /'; fi
    nvmevm_copy_out $TARGET_LOG nvmf-target.log 2>/dev/null
}

# ctrl_of HOSTNQN: /dev/nvmeX of the controller of S that HOSTNQN created
ctrl_of() {
    for c in /sys/class/nvme/nvme*; do
        [ "$(cat $c/subsysnqn 2>/dev/null)" = "$S" ] && [ "$(cat $c/hostnqn 2>/dev/null)" = "$1" ] &&
            { echo /dev/$(basename $c); return 0; }
    done
    return 1
}

# run DESC CMD...: PASS if CMD succeeds
run() {
    _d=$1; shift
    echo "+ $*"
    if "$@" >/tmp/.resv.out 2>&1; then pass "$T: $_d"; sed 's/^/    /' /tmp/.resv.out | head -n 5; return 0; fi
    fail "$T: $_d (rc $?)"; sed 's/^/    /' /tmp/.resv.out | head -n 10; return 1
}

# conflict DESC CMD...: PASS if CMD fails with Reservation Conflict
conflict() {
    _d=$1; shift
    echo "+ (must conflict) $*"
    if "$@" >/tmp/.resv.out 2>&1; then fail "$T: $_d succeeded"; sed 's/^/    /' /tmp/.resv.out | head -n 5; return 1; fi
    if grep -qi 'reservation.conflict' /tmp/.resv.out; then
        pass "$T: $_d: $(grep -i -m1 'reservation.conflict' /tmp/.resv.out)"
    else
        fail "$T: $_d failed, but not with Reservation Conflict"; sed 's/^/    /' /tmp/.resv.out | head -n 10
    fi
}

# write DEV FILL / read DEV: one 512-byte block at LBA 8 of nsid 1
blk_write() { dd if=/dev/zero bs=512 count=1 2>/dev/null | tr '\0' "$2" >/tmp/.resv.blk
    nvme io-passthru "$1" --opcode=0x01 --namespace-id=1 --data-len=512 --write \
        --input-file=/tmp/.resv.blk --cdw10=8 --cdw11=0 --cdw12=0; }
blk_read() { nvme io-passthru "$1" --opcode=0x02 --namespace-id=1 --data-len=512 --read \
        --cdw10=8 --cdw11=0 --cdw12=0 --raw-binary >/tmp/.resv.rd; }

# ------------------------------------------------------------------- main --
echo "=== reservations, two kernel hosts -> $MODE target; $(nvme version 2>/dev/null | head -n1)"
target_start; rc=$?
if [ $rc = 2 ]; then exit 0; fi
if [ $rc != 0 ]; then target_stop; exit 0; fi

for h in "$HA $IA" "$HB $IB"; do
    set -- $h
    run "connect as $1" nvme connect -t tcp -a $ADDR -s $PORT -n "$S" --hostnqn="$1" --hostid="$2"
done
_w=0; while [ $_w -lt 100 ] && ! { ctrl_of "$HA" && ctrl_of "$HB"; } >/dev/null; do _w=$((_w+1)); sleep 0.1; done
CA=$(ctrl_of "$HA"); CB=$(ctrl_of "$HB")
if [ -z "$CA" ] || [ -z "$CB" ] || [ "$CA" = "$CB" ]; then
    fail "$T: two controllers of $S (A=$CA B=$CB)"; target_stop; exit 0
fi
pass "$T: host A is $CA ($(cat /sys/class/nvme/${CA#/dev/}/hostid)), host B is $CB ($(cat /sys/class/nvme/${CB#/dev/}/hostid))"
sleep 1   # the namespace scan

ONCS=$(nvme id-ctrl "$CA" 2>/dev/null | sed -n 's/^oncs *: *//p')
RESCAP=$(nvme id-ns "$CA" -n 1 2>/dev/null | sed -n 's/^rescap *: *//p')
echo "    oncs=$ONCS rescap=$RESCAP"
[ $(( ${ONCS:-0} & 0x20 )) -ne 0 ] && pass "$T: ONCS advertises reservations ($ONCS)" || fail "$T: ONCS bit 5 not set ($ONCS)"
[ $(( ${RESCAP:-0} & 0x7e )) -eq $((0x7e)) ] && pass "$T: RESCAP has all six types ($RESCAP)" || fail "$T: RESCAP $RESCAP"

run "A resv-register key 0xaa" nvme resv-register "$CA" -n 1 --nrkey=0xaa --rrega=0
run "B resv-register key 0xbb" nvme resv-register "$CB" -n 1 --nrkey=0xbb --rrega=0
conflict "A resv-acquire with a wrong key" nvme resv-acquire "$CA" -n 1 --crkey=0xab --rtype=1 --racqa=0
run "A resv-acquire Write Exclusive" nvme resv-acquire "$CA" -n 1 --crkey=0xaa --rtype=1 --racqa=0
conflict "B write while A holds Write Exclusive" blk_write "$CB" B
run "B read while A holds Write Exclusive" blk_read "$CB"
run "A (holder) write" blk_write "$CA" A

echo "+ nvme resv-report $CB -n 1 --eds -o json"
if nvme resv-report "$CB" -n 1 --eds -o json >/tmp/.resv.json 2>&1; then
    sed 's/^/    /' /tmp/.resv.json | head -n 40
    XA=$(echo $IA | tr -d -); XB=$(echo $IB | tr -d -)
    if grep -q "$XA" /tmp/.resv.json && grep -q "$XB" /tmp/.resv.json; then
        pass "$T: resv-report lists both hosts' 128-bit host IDs"
    else
        fail "$T: resv-report does not list $XA and $XB"
    fi
    grep -qE '"rtype" *: *1\b' /tmp/.resv.json && pass "$T: resv-report rtype 1 (Write Exclusive)" ||
        fail "$T: resv-report rtype is not 1"
    grep -qE '"regctl" *: *2\b' /tmp/.resv.json && pass "$T: resv-report regctl 2" || fail "$T: resv-report regctl is not 2"
else
    fail "$T: nvme resv-report --eds -o json"; sed 's/^/    /' /tmp/.resv.json | head
fi

run "A resv-release" nvme resv-release "$CA" -n 1 --crkey=0xaa --rtype=1 --rrela=0
run "B write after the release" blk_write "$CB" b
run "A resv-register unregister" nvme resv-register "$CA" -n 1 --crkey=0xaa --rrega=1
run "B resv-register unregister" nvme resv-register "$CB" -n 1 --crkey=0xbb --rrega=1
if nvme resv-report "$CB" -n 1 --eds -o json 2>/dev/null | grep -qE '"regctl" *: *0\b'; then
    pass "$T: no registrants left"
else
    fail "$T: registrants left after both unregistered"
fi

run "disconnect both hosts" nvme disconnect -n "$S"
target_stop
exit 0
