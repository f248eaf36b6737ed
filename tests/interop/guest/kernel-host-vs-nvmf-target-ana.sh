#!/bin/sh
# kernel-host-vs-nvmf-target-ana.sh -- guest script (trixie track, kernel 6.12
# with native NVMe multipath): the Linux kernel host against OUR target with
# ANA (Asymmetric Namespace Access, NVMe Base 2.0 §8.1).
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target-ana.sh
#
# Part 1, one target on two ports: `nvmf target --config` with listen
# 127.0.0.1:4420 and :4421, one subsystem, nsid 1 = a 64 MiB file.  The kernel
# host connects both -> one multipath head with two paths, both optimized
# (id-ctrl CMIC/ANACAP, the ANA log page through nvme-cli).  A background
# dd write/read-back/cmp loop runs on the head; the ANA group of the port that
# carries the I/O is set inaccessible by editing the config and SIGHUP (live):
# the kernel must see the ANA Change notice (path state inaccessible) and the
# I/O must continue on the other path only, without an error; then restore.
# Part 2, an HA pair: two target processes serve the same file as the same
# subsystem, one port each, with disjoint CNTLID ranges (1-99, 100-199).  The
# host connects both; the loop runs; the process that carries the I/O is
# killed with SIGKILL mid-writes: the I/O must continue on the other target.
# In both parts every read-back must equal what was written and the backing
# file must hold the last data.
#
# ---------------------------------------------------------------------------
# ASSUMPTIONS about `nvmf` (docs/target.md "ANA multipath"):
#   nvmf target --config FILE   (SIGHUP re-reads FILE; [[ana_state]] tables
#     port/group/state set the ANA state of a group on a listen port; unlisted
#     = optimized; a namespace's ana_group defaults to 1; a subsystem's
#     cntlid_min/cntlid_max bound the CNTLIDs it hands out);
#   the namespace's NGUID/UUID derive from the subsystem NQN and NSID, so two
#   processes with the same NQN describe it identically.
#   nvmf target ... --control-socket PATH; nvmf ana-state --control-socket PATH
#     --port ADDR:PORT --group N [--state STATE] (sets / prints one state;
#     prints "ADDR:PORT group N: STATE" when asked; exit != 0 on an error)
#   run.sh checks `nvmf target --help` for --config --ana-state --cntlid-range
#   --control-socket and `nvmf ana-state --help` for --control-socket --port --group --state.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh   # st_connect, st_disconnect, _st_mpaths, _st_sectors, _st_wait_state, _st_wait_iter

NVMF=${NVMF_BIN:-/extra/nvmf}
S=nqn.2024-01.io.nvmf-rs:ana
T=ana
FILE=/tmp/ana-ns1.img
LOG=/tmp/nvmf-target-ana.log
PIDS=""

say() { echo "=== $*"; }

# start_target CFG PORT...: start `nvmf target --config CFG`, wait for its ports; echo the pid
start_target() {
    _c=$1; shift
    echo "--- start: $NVMF target --config $_c" >>$LOG
    sed 's/^/    cfg: /' "$_c" >>$LOG
    "$NVMF" target --config "$_c" ${CTL:+--control-socket $CTL} >>$LOG 2>&1 &
    _p=$!
    PIDS="$PIDS $_p"
    for _port in "$@"; do
        _w=0
        while [ $_w -lt 200 ] && ! listening $_port; do kill -0 $_p 2>/dev/null || break; _w=$((_w+1)); sleep 0.1; done
        listening $_port || { fail "$T: nvmf target --config $_c not listening on $_port"; tail -n 20 $LOG | sed 's/^/    target: /'; return 1; }
    done
    pass "$T: nvmf target (pid $_p) listening on $*"
    START_PID=$_p
}

stop_target() { nvmevm_stop_target "$T" "$1" "target $1"; }   # PID: SIGTERM, must exit 0

# connect_two: both paths, one head with two paths; sets ST_DEV, PA, PB (path sysfs dirs)
connect_two() {
    _what=$1
    st_connect $T "$1 path A via 127.0.0.1:4420" $S -t tcp -a 127.0.0.1 -s 4420 || return 1
    st_connect $T "$1 path B via 127.0.0.1:4421" $S -t tcp -a 127.0.0.1 -s 4421 || return 1
    _paths=$(_st_mpaths $S 1 | tr '\n' ' ')
    nvme list-subsys 2>&1 | _st_log
    set -- $_paths
    if [ $# -eq 2 ]; then pass "$T: $_what native multipath: one head $ST_DEV, 2 paths ($(for p in $_paths; do basename $p; done | tr '\n' ' '))"
    else fail "$T: $ST_DEV has $# paths ('$_paths')"; return 1; fi
    PA="" PB=""
    for _p in $_paths; do
        case "$(cat $(dirname $_p)/address 2>/dev/null)" in
            *trsvcid=4420*) PA=$_p ;; *trsvcid=4421*) PB=$_p ;;
        esac
    done
    [ -n "$PA" ] && [ -n "$PB" ] || { fail "$T: cannot tell the paths apart ($_paths)"; return 1; }
    CA=$(basename $(dirname $PA)) CB=$(basename $(dirname $PB))
    if _st_wait_state $PA optimized 50 && _st_wait_state $PB optimized 50; then
        pass "$T: both paths optimized (A=${PA##*/} on $CA, B=${PB##*/} on $CB)"
    else
        fail "$T: paths not optimized: A=$(cat $PA/ana_state) B=$(cat $PB/ana_state)"; return 1
    fi
}

# loop_start: the write/read-back/cmp loop on the head (4 MiB blocks, 8 slots)
loop_start() {
    rm -f /tmp/ana.stop /tmp/ana.fail /tmp/ana.iter /tmp/ana.err
    (   _i=0
        while [ ! -e /tmp/ana.stop ] && [ $_i -lt 600 ]; do
            _i=$((_i+1)); _o=$(( (_i % 8) * 4 ))
            dd if=/dev/urandom of=/tmp/ana.pat bs=1M count=4 2>/dev/null
            dd if=/tmp/ana.pat of=$ST_DEV bs=1M count=4 seek=$_o oflag=direct conv=fsync 2>>/tmp/ana.err || echo "write $_i" >>/tmp/ana.fail
            dd if=$ST_DEV of=/tmp/ana.rb bs=1M count=4 skip=$_o iflag=direct 2>>/tmp/ana.err || echo "read $_i" >>/tmp/ana.fail
            cmp -s /tmp/ana.pat /tmp/ana.rb || echo "cmp $_i" >>/tmp/ana.fail
            echo $_i >/tmp/ana.iter
        done ) &
    LPID=$!
}

# loop_stop WHAT: stop the loop, every iteration must have passed, the file must hold the last data
loop_stop() {
    _st_wait_iter $(( $(cat /tmp/ana.iter 2>/dev/null || echo 0) + 1 )) 300
    touch /tmp/ana.stop; wait $LPID
    _n=$(cat /tmp/ana.iter 2>/dev/null || echo 0)
    if [ ! -s /tmp/ana.fail ] && [ "$_n" -ge 4 ]; then
        pass "$T: $1: $_n x 4MiB dd write/read-back/cmp iterations, all identical, no I/O error"
    else
        fail "$T: $1: $_n iterations, failures: $(cat /tmp/ana.fail 2>/dev/null | tr '\n' ' ') $(tail -n2 /tmp/ana.err 2>/dev/null)"
    fi
    _o=$(( (_n % 8) * 4 ))
    dd if=$FILE of=/tmp/ana.rb bs=1M count=4 skip=$_o 2>/dev/null
    cmp -s /tmp/ana.pat /tmp/ana.rb && pass "$T: $1: the backing file holds the last data" ||
        fail "$T: $1: the backing file differs from the last write"
}

# carrier: which path carries the loop's I/O now; sets ACT/OTH (path dirs), APORT/OPORT
carrier() {
    _a0=$(_st_sectors $PA) _b0=$(_st_sectors $PB) _i0=$(cat /tmp/ana.iter 2>/dev/null || echo 0)
    _st_wait_iter $((_i0 + 2)) 300 || fail "$T: the I/O loop does not progress"
    _a1=$(_st_sectors $PA) _b1=$(_st_sectors $PB)
    if [ $((_a1 - _a0)) -ge $((_b1 - _b0)) ]; then ACT=$PA OTH=$PB APORT=4420 OPORT=4421
    else ACT=$PB OTH=$PA APORT=4421 OPORT=4420; fi
    echo "    I/O: path A +$(( (_a1-_a0)/2048 )) MiB, path B +$(( (_b1-_b0)/2048 )) MiB -> carried by $APORT"
}

# moved WHAT: after a failover, I/O continues on OTH only
moved() {
    # (one iteration first: requests in flight at the change complete or fail over)
    _st_wait_iter $(( $(cat /tmp/ana.iter) + 1 )) 900
    _a2=$(_st_sectors $ACT) _b2=$(_st_sectors $OTH) _i2=$(cat /tmp/ana.iter)
    if _st_wait_iter $((_i2 + 3)) 900; then
        _a3=$(_st_sectors $ACT) _b3=$(_st_sectors $OTH)
        if [ $((_b3 - _b2)) -gt 0 ] && [ $((_a3 - _a2)) -eq 0 ]; then
            pass "$T: $1: I/O continued on the other path only: ${OTH##*/} ($OPORT) +$(( (_b3-_b2)/2048 )) MiB, ${ACT##*/} ($APORT) +0"
        else
            fail "$T: $1: I/O after the change: ${ACT##*/} +$((_a3-_a2)) sectors, ${OTH##*/} +$((_b3-_b2)) sectors"
        fi
    else
        fail "$T: $1: I/O stalled (iteration $(cat /tmp/ana.iter))"
    fi
}

# ---------------------------------------------------------------------- main --
say "kernel host (nvme-cli $(nvme version 2>/dev/null | sed -n 's/^nvme version \([^ ]*\).*/\1/p'), $(uname -r)) vs nvmf target with ANA"
[ -x "$NVMF" ] || { fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; }
if [ "$(cat /sys/module/nvme_core/parameters/multipath 2>/dev/null)" != Y ]; then
    fail "$T: nvme_core.multipath is not enabled in this kernel"; exit 1
fi
rm -f $LOG $FILE
truncate -s 64M $FILE

say "part 1: one target, two ports, ANA state flipped live (config + SIGHUP)"
CFG=/tmp/ana.toml
CTL=/tmp/ana.sock
nvmevm_ana_cfg $CFG "$S" "$FILE" 1 99 4420=optimized 4421=optimized
start_target $CFG 4420 4421 || exit 1
TPID=$START_PID
if connect_two "one target:"; then
    nvme id-ctrl /dev/$CA 2>&1 | grep -E '^(cmic|anatt|anacap|anagrpmax|nanagrpid|mnan|nn|oaes|cntlid) ' | _st_log
    _cmic=$(nvme id-ctrl /dev/$CA 2>/dev/null | sed -n 's/^cmic *: *//p')
    _anacap=$(nvme id-ctrl /dev/$CA 2>/dev/null | sed -n 's/^anacap *: *//p')
    [ $(( _cmic & 0x0b )) -eq 11 ] && [ $(( _anacap & 0x1f )) -eq 31 ] &&
        pass "$T: id-ctrl: cmic $_cmic (multi-port, multi-controller, ANA), anacap $_anacap" ||
        fail "$T: id-ctrl: cmic '$_cmic' anacap '$_anacap'"
    _ca=$(cat /sys/class/nvme/$CA/cntlid) _cb=$(cat /sys/class/nvme/$CB/cntlid)
    [ "$_ca" != "$_cb" ] && pass "$T: CNTLIDs $_ca and $_cb" || fail "$T: both controllers have CNTLID $_ca"
    nvme ana-log /dev/$CA >/tmp/ana.log 2>&1; _st_log /tmp/ana.log
    grep -qi 'optimized' /tmp/ana.log && grep -qiE 'nsid|namespace' /tmp/ana.log &&
        pass "$T: nvme ana-log through $CA: group 1 optimized, its namespace listed" || fail "$T: nvme ana-log: $(head -c 300 /tmp/ana.log)"

    loop_start
    carrier
    _t0=$(uptime_s)
    if [ $APORT = 4420 ]; then nvmevm_ana_cfg $CFG "$S" "$FILE" 1 99 4420=inaccessible 4421=optimized
    else nvmevm_ana_cfg $CFG "$S" "$FILE" 1 99 4420=optimized 4421=inaccessible; fi
    kill -HUP $TPID
    if _st_wait_state $ACT inaccessible 100; then
        pass "$T: SIGHUP with 127.0.0.1:$APORT group 1 inaccessible -> host path ${ACT##*/} inaccessible after $(awk -v a=$_t0 -v b=$(uptime_s) 'BEGIN{printf "%.1f", b-a}') s (ANA Change notice + log 0Ch)"
    else
        fail "$T: host path ${ACT##*/} still '$(cat $ACT/ana_state)' 10 s after the reload"
    fi
    grep -q 'ANA state changed' $LOG && pass "$T: the target logged the change: $(grep 'ANA state changed' $LOG | tail -n1 | sed 's/.*ANA state changed/ANA state changed/')" ||
        fail "$T: no 'ANA state changed' in the target log"
    _oc=$(basename $(dirname $OTH))
    nvme ana-log /dev/$(basename $(dirname $ACT)) >/tmp/ana.log 2>&1; _st_log /tmp/ana.log
    grep -qi 'inaccessible' /tmp/ana.log && pass "$T: nvme ana-log through the failed-over controller says inaccessible" ||
        fail "$T: nvme ana-log after the change: $(head -c 300 /tmp/ana.log)"
    moved "inaccessible"
    nvmevm_ana_cfg $CFG "$S" "$FILE" 1 99 4420=optimized 4421=optimized
    kill -HUP $TPID
    _st_wait_state $ACT optimized 100 && pass "$T: restored: path ${ACT##*/} optimized again" ||
        fail "$T: path ${ACT##*/} still '$(cat $ACT/ana_state)' after the restore"
    # the control socket: non-optimized (serves I/O; the host prefers the optimized path)
    _out=$("$NVMF" ana-state --control-socket $CTL --port 127.0.0.1:$APORT --group 1 --state non-optimized 2>&1)
    echo "    nvmf ana-state ... --state non-optimized: $_out"
    _st_wait_state $ACT non-optimized 100 && pass "$T: nvmf ana-state (control socket) -> path ${ACT##*/} non-optimized" ||
        fail "$T: path ${ACT##*/} '$(cat $ACT/ana_state)' after nvmf ana-state non-optimized ($_out)"
    _out=$("$NVMF" ana-state --control-socket $CTL --port 127.0.0.1:$APORT --group 1 2>&1)
    [ "$_out" = "127.0.0.1:$APORT group 1: non-optimized" ] && pass "$T: nvmf ana-state reads back: $_out" ||
        fail "$T: nvmf ana-state read back '$_out'"
    "$NVMF" ana-state --control-socket $CTL --port 127.0.0.1:9999 --group 1 --state optimized >/tmp/.ana.out 2>&1 &&
        fail "$T: nvmf ana-state accepted a port the target does not listen on" ||
        pass "$T: nvmf ana-state refuses an unknown port: $(tail -n1 /tmp/.ana.out)"
    loop_stop "one target, across inaccessible / optimized / non-optimized"
fi
nvme disconnect -n $S >/tmp/.st.disc 2>&1
grep -q 'disconnected 2 controller' /tmp/.st.disc && pass "$T: $(cat /tmp/.st.disc)" || fail "$T: disconnect: $(cat /tmp/.st.disc)"
stop_target $TPID

CTL=
say "part 2: an HA pair (two processes, same subsystem and file), one killed mid-writes"
nvmevm_ana_cfg /tmp/ana-a.toml "$S" "$FILE" 1 99 4420=optimized
nvmevm_ana_cfg /tmp/ana-b.toml "$S" "$FILE" 100 199 4421=optimized
start_target /tmp/ana-a.toml 4420 || exit 1
TA=$START_PID
start_target /tmp/ana-b.toml 4421 || exit 1
TB=$START_PID
if connect_two "HA pair:"; then
    _ca=$(cat /sys/class/nvme/$CA/cntlid) _cb=$(cat /sys/class/nvme/$CB/cntlid)
    [ "$_ca" -ge 1 ] && [ "$_ca" -le 99 ] && [ "$_cb" -ge 100 ] && [ "$_cb" -le 199 ] &&
        pass "$T: HA pair: CNTLID $_ca from target A (1-99), $_cb from target B (100-199)" ||
        fail "$T: HA pair: CNTLIDs $_ca / $_cb outside the configured ranges"
    loop_start
    carrier
    if [ $APORT = 4420 ]; then VICTIM=$TA SURVIVOR=$TB; else VICTIM=$TB SURVIVOR=$TA; fi
    kill -9 $VICTIM; wait $VICTIM 2>/dev/null
    pass "$T: HA pair: SIGKILL to the target on $APORT (pid $VICTIM) mid-writes"
    moved "HA pair, target on $APORT killed"
    loop_stop "HA pair across the kill"
    kill -0 $SURVIVOR 2>/dev/null && pass "$T: the surviving target still runs" || fail "$T: the surviving target died"
fi
nvme disconnect -n $S >/tmp/.st.disc 2>&1
grep -q 'disconnected 2 controller' /tmp/.st.disc && pass "$T: $(cat /tmp/.st.disc)" || fail "$T: disconnect: $(cat /tmp/.st.disc)"
[ -n "${SURVIVOR:-}" ] && stop_target $SURVIVOR
for _p in $PIDS; do kill -9 $_p 2>/dev/null; done

if [ -s $LOG ]; then
    echo "--- target log (last 40 lines of $LOG)"
    tail -n 40 $LOG | sed 's/^/    target: /'
    grep -qi 'panicked' $LOG && fail "$T: the target log has a panic"
    grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $LOG
fi
dmesg | grep -iE 'nvme' | grep -iE 'ana|fail|error|path' | tail -n 20 | sed 's/^/    dmesg: /'
exit 0
