#!/bin/sh
# nvmf-host-multipath.sh -- guest script (trixie track): OUR host's block
# devices over several paths (`nvmf connect --block` to two addresses of one
# subsystem gives one /dev/ublkbN (or /dev/nbdN) with two paths), against OUR target.
#
#   tests/interop/run.sh mpath
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/nvmf-host-multipath.sh
#
# Part 1, one target on two ports (127.0.0.1:4420 and :4421, --control-socket):
#   * connect --block to both -> one block device, `nvmf list` shows it with
#     two paths, both live and ANA optimized;
#   * round-robin: a short fio randread spreads its commands over both paths
#     (command counts per path from `nvmf list`);
#   * fio randrw 4k QD8 with crc32c verify on the device; mid-run the port of
#     path A goes ANA inaccessible (`nvmf ana-state`): `nvmf list` shows it,
#     path A gets no more commands while path B does; back to optimized; fio
#     ends with no error and its verification passes.
# Part 2, an HA pair (two `nvmf target` processes on one file, CNTLIDs 1-99
# and 100-199), --iopolicy queue-depth, ctrl-loss-tmo 5 s:
#   * one device, policy queue-depth; fio randrw crc32c verify; mid-run target
#     A is killed (SIGKILL): fio ends with no error and verify passes; `nvmf
#     list` shows path A not live (then lost) while B carries the I/O;
#   * `nvmf disconnect -d` of path A's controller keeps the device (I/O still
#     works), of path B's removes it.
# Part 3, the kernel's nvmet target on both ports (configfs, ANA group 1):
#   one device; fio randrw crc32c verify; mid-run port 1's ANA group goes
#   inaccessible (nvmf list shows it), then the subsystem is unlinked from
#   port 1 (nvmet deletes those controllers; reconnects are refused): fio ends
#   with no error and verify passes.
#
# ASSUMPTIONS about `nvmf`: `connect ... --block [--iopolicy P]` prints
# "device: nvmeN"; `list` prints, after the controllers, a table headed
# "Block device" with one row per path: ... ADDRESS ANA-STATE COMMANDS
# FAILOVERS STATE...; `target --config --control-socket`, `ana-state
# --control-socket --port --group --state`, `disconnect -d`.
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_need _st_log st_subsys st_port st_link st_cleanup

NVMF=${NVMF_BIN:-/extra/nvmf}
T=mpath
S=nqn.2024-01.io.nvmf-rs:mpath
FILE=/tmp/mpath-ns1.img
LOG=/tmp/nvmf-target-mpath.log
DAEMON_LOG=/run/nvmf/host-daemon.log
APORT=4420 BPORT=4421
CTL=
PIDS=""

say() { echo "=== $* (uptime $(uptime_s)s)"; }

# start_target CFG PORT...: sets START_PID
start_target() {
    _c=$1; shift
    echo "--- start: $NVMF target --config $_c" >>$LOG
    "$NVMF" target --config "$_c" ${CTL:+--control-socket $CTL} >>$LOG 2>&1 &
    _p=$!
    PIDS="$PIDS $_p"
    for _port in "$@"; do
        _w=0
        while [ $_w -lt 200 ] && ! listening $_port; do kill -0 $_p 2>/dev/null || break; _w=$((_w+1)); sleep 0.1; done
        listening $_port || { fail "$T: nvmf target --config $_c not listening on $_port"; tail -n 20 $LOG | _st_log; return 1; }
    done
    pass "$T: nvmf target (pid $_p) listening on $*"
    START_PID=$_p
}

stop_target() { nvmevm_stop_target "$T" "$1" "target $1"; }   # PID: SIGTERM, must exit 0

# connect PORT [flags]: prints the controller name
connect() {
    _p=$1; shift
    timeout 120 $NVMF connect -t tcp -a 127.0.0.1 -s $_p -n $S -l 5 -c 1 --block "$@" 2>/tmp/mp.conn | sed -n 's/^device: //p'
}

# the block devices `nvmf list` shows
# attached DEV: the device is served (NBD: a server pid in sysfs; ublk: the
# disk exists, it goes away with its server)
attached() {
    case $1 in
        /dev/nbd*) [ -e /sys/block/${1#/dev/}/pid ] ;;
        *) [ -e /sys/block/${1#/dev/}/size ] ;;
    esac
}
devices() { $NVMF list 2>/dev/null | awk '/^Block device/{b=1;next} b && $1 ~ /^\/dev\/(nbd|ublkb)[0-9]/ {print $1}'; }
# path PORT N: field N after the address in the path row of PORT (1 ANA state,
# 2 commands, 3 failovers, 4 the first word of the link state)
path() { $NVMF list 2>/dev/null | awk -v a="127.0.0.1:$1" -v n="$2" '/^Block device/{b=1;next} b { for (i=1;i<=NF;i++) if ($i==a) print $(i+n) }' | head -n1; }
show_list() { $NVMF list 2>&1 | sed -n '/^Block device/,$p' | _st_log; }
# wait_path PORT N VALUE [TENTHS]
wait_path() {
    _w=0; while [ $_w -lt ${4:-200} ] && [ "$(path $1 $2)" != "$3" ]; do sleep 0.1; _w=$((_w+1)); done
    [ "$(path $1 $2)" = "$3" ]
}

# fio_start DEV SECONDS: randrw 4k QD8 with crc32c verify, in the background
fio_start() {
    rm -f /tmp/mp.fio /tmp/mp.fio.rc
    ( fio --name=mp --filename="$1" --direct=1 --ioengine=libaio --iodepth=8 \
        --rw=randrw --rwmixread=50 --bs=4k --size=32M --time_based=1 --runtime=$2 \
        --verify=crc32c --verify_backlog=256 --verify_fatal=1 \
        --output-format=terse --terse-version=3 >/tmp/mp.fio 2>&1; echo $? >/tmp/mp.fio.rc ) &
    FIOPID=$!
}
# fio_check LABEL: waits for fio; pass when rc 0, err 0, reads and writes done
fio_check() {
    _w=0; while [ $_w -lt 1800 ] && [ ! -s /tmp/mp.fio.rc ]; do sleep 0.1; _w=$((_w+1)); done
    wait $FIOPID 2>/dev/null
    _rc=$(cat /tmp/mp.fio.rc 2>/dev/null)
    _ln=$(grep '^3;' /tmp/mp.fio | head -n1)
    _err=$(echo "$_ln" | cut -d';' -f5) _rkb=$(echo "$_ln" | cut -d';' -f6) _wkb=$(echo "$_ln" | cut -d';' -f47)
    if [ "$_rc" = 0 ] && [ "${_err:-x}" = 0 ] && [ "${_rkb:-0}" -gt 0 ] && [ "${_wkb:-0}" -gt 0 ]; then
        pass "$T $1: fio randrw 4k QD8 crc32c-verify: no I/O error, verify passed (read $((_rkb/1024)) MiB, write $((_wkb/1024)) MiB)"
    else
        fail "$T $1: fio rc=$_rc err=$_err read_kb=$_rkb write_kb=$_wkb"; tail -n 20 /tmp/mp.fio | _st_log
    fi
}

st_need $T fio blockdev || exit 0
[ -x "$NVMF" ] || { fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; }
check "$T: modprobe nbd" modprobe nbd || exit 0
mkdir -p /run/nvmf
rm -f $FILE

# ------------------------------------------------- part 1: two ports ----
say "part 1: one target on ports $APORT and $BPORT, the host connects --block to both"
CTL=/tmp/mpath.ctl
nvmevm_ana_cfg /tmp/mp.toml "$S" "$FILE" 1 65519 $APORT=optimized $BPORT=optimized
start_target /tmp/mp.toml $APORT $BPORT || exit 1
TPID=$START_PID
CA=$(connect $APORT) CB=$(connect $BPORT)
if [ -n "$CA" ] && [ -n "$CB" ]; then
    pass "$T: nvmf connect --block to both ports: $CA, $CB"
else
    fail "$T: connect: '$CA' '$CB': $(tail -n 2 /tmp/mp.conn)"; exit 1
fi
show_list
DEV=$(devices)
if [ "$(echo "$DEV" | wc -w)" = 1 ] && [ -b "$DEV" ]; then
    pass "$T: one block device for both paths: $DEV ($(blockdev --getsize64 $DEV) bytes)"
else
    fail "$T: block devices '$DEV' (one expected)"; exit 1
fi
[ "$(path $APORT 1)" = optimized ] && [ "$(path $BPORT 1)" = optimized ] &&
    [ "$(path $APORT 4)" = live ] && [ "$(path $BPORT 4)" = live ] &&
    pass "$T: nvmf list: both paths live and ANA optimized" ||
    fail "$T: path states: A $(path $APORT 4)/$(path $APORT 1), B $(path $BPORT 4)/$(path $BPORT 1)"

say "round-robin"
a0=$(path $APORT 2) b0=$(path $BPORT 2)
fio --name=rr --filename=$DEV --direct=1 --ioengine=libaio --iodepth=8 --rw=randread --bs=4k \
    --size=32M --time_based=1 --runtime=3 --output-format=terse >/dev/null 2>&1
da=$(( $(path $APORT 2) - a0 )) db=$(( $(path $BPORT 2) - b0 ))
if [ $da -gt 0 ] && [ $db -gt 0 ] && [ $((da * 4)) -ge $((da + db)) ] && [ $((db * 4)) -ge $((da + db)) ]; then
    pass "$T: round-robin spreads the commands over both paths: $da via $APORT, $db via $BPORT"
else
    fail "$T: round-robin: $da commands via $APORT, $db via $BPORT"
fi

say "fio with verify; port $APORT goes inaccessible mid-run"
fio_start $DEV 30
sleep 6
_out=$("$NVMF" ana-state --control-socket $CTL --port 127.0.0.1:$APORT --group 1 --state inaccessible 2>&1)
echo "    nvmf ana-state --port 127.0.0.1:$APORT --state inaccessible: $_out"
if wait_path $APORT 1 inaccessible; then
    pass "$T: nvmf list shows path $APORT inaccessible (ANA Change notice, log 0Ch)"
    sleep 1
    a1=$(path $APORT 2) b1=$(path $BPORT 2)
    sleep 5
    a2=$(path $APORT 2) b2=$(path $BPORT 2)
    [ "$a2" = "$a1" ] && [ "$b2" -gt "$b1" ] &&
        pass "$T: no commands to the inaccessible path ($a1 -> $a2), path $BPORT carries on ($b1 -> $b2)" ||
        fail "$T: while $APORT is inaccessible: A $a1 -> $a2, B $b1 -> $b2"
else
    fail "$T: path $APORT is '$(path $APORT 1)', not inaccessible"
fi
show_list
"$NVMF" ana-state --control-socket $CTL --port 127.0.0.1:$APORT --group 1 --state optimized >/dev/null 2>&1
wait_path $APORT 1 optimized && pass "$T: path $APORT optimized again" || fail "$T: path $APORT is '$(path $APORT 1)' after going back to optimized"
fio_check "part 1 (ANA inaccessible mid-run)"
echo "    failovers: $APORT $(path $APORT 3), $BPORT $(path $BPORT 3)"
$NVMF disconnect -n $S >/tmp/mp.disc 2>&1
_w=0; while [ $_w -lt 50 ] && attached $DEV; do sleep 0.1; _w=$((_w+1)); done
! attached $DEV && pass "$T: disconnect -n removes $DEV" || fail "$T: $DEV still attached after disconnect -n"
stop_target $TPID
CTL=

# ---------------------------------------------- part 2: an HA pair ------
say "part 2: two target processes on one file, the host connects --block --iopolicy queue-depth"
nvmevm_ana_cfg /tmp/mp-a.toml "$S" "$FILE" 1 99 $APORT=optimized
nvmevm_ana_cfg /tmp/mp-b.toml "$S" "$FILE" 100 199 $BPORT=optimized
start_target /tmp/mp-a.toml $APORT || exit 1
TA=$START_PID
start_target /tmp/mp-b.toml $BPORT || exit 1
TB=$START_PID
CA=$(connect $APORT --iopolicy queue-depth) CB=$(connect $BPORT --iopolicy queue-depth)
[ -n "$CA" ] && [ -n "$CB" ] && pass "$T: HA pair: connected $CA, $CB" || { fail "$T: HA connect: $(tail -n 2 /tmp/mp.conn)"; exit 1; }
show_list
DEV=$(devices)
[ "$(echo "$DEV" | wc -w)" = 1 ] && [ -b "$DEV" ] && pass "$T: HA pair: one block device $DEV" || { fail "$T: HA pair: devices '$DEV'"; exit 1; }
$NVMF list 2>/dev/null | grep -q "queue-depth" && pass "$T: nvmf list shows iopolicy queue-depth" || fail "$T: no queue-depth in nvmf list"

fio_start $DEV 30
sleep 8
a1=$(path $APORT 2) b1=$(path $BPORT 2)
[ "${a1:-0}" -gt 0 ] && [ "${b1:-0}" -gt 0 ] && pass "$T: both paths carry I/O before the kill ($a1, $b1 commands)" ||
    fail "$T: commands before the kill: A $a1, B $b1"
kill -9 $TA; wait $TA 2>/dev/null
pass "$T: target A (port $APORT) killed (SIGKILL) mid-fio"
_w=0; while [ $_w -lt 100 ] && [ "$(path $APORT 4)" = live ]; do sleep 0.1; _w=$((_w+1)); done
[ "$(path $APORT 4)" != live ] && pass "$T: nvmf list: path $APORT is $(path $APORT 4) after the kill" ||
    fail "$T: path $APORT still live after the kill"
show_list
fio_check "part 2 (target A killed mid-run)"
wait_path $APORT 4 lost: 300 && pass "$T: path $APORT lost after ctrl-loss-tmo" || fail "$T: path $APORT is '$(path $APORT 4)', not lost"
echo "    failovers: $APORT $(path $APORT 3), $BPORT $(path $BPORT 3)"
show_list

say "disconnecting path A keeps the device; path B removes it"
check "$T: nvmf disconnect -d $CA" $NVMF disconnect -d $CA
if attached $DEV && [ "$(devices)" = "$DEV" ] && [ -z "$(path $APORT 1)" ]; then
    pass "$T: $DEV stays, with the one path left"
else
    fail "$T: after disconnecting $CA: devices '$(devices)', path A '$(path $APORT 1)'"
fi
dd if=/dev/urandom of=/tmp/mp.pat bs=1M count=4 2>/dev/null
dd if=/tmp/mp.pat of=$DEV bs=1M count=4 oflag=direct 2>/dev/null &&
    dd if=$DEV bs=1M count=4 iflag=direct 2>/dev/null | cmp -s - /tmp/mp.pat &&
    pass "$T: 4 MiB written and read back through $DEV on the remaining path" || fail "$T: I/O on $DEV after removing path A"
dd if=$FILE bs=1M count=4 2>/dev/null | cmp -s - /tmp/mp.pat && pass "$T: and in the target's backing file" ||
    fail "$T: the backing file does not hold the data"
check "$T: nvmf disconnect -d $CB" $NVMF disconnect -d $CB
_w=0; while [ $_w -lt 50 ] && attached $DEV; do sleep 0.1; _w=$((_w+1)); done
! attached $DEV && [ -z "$(devices)" ] && pass "$T: disconnecting the last path removes $DEV" ||
    fail "$T: $DEV still attached after its last path went"
stop_target $TB

# ------------------------------------ part 3: the kernel's nvmet target ----
say "part 3: nvmet, one subsystem on ports $APORT and $BPORT (configfs ana_groups)"
KS=nqn.2024-01.io.nvmf-rs:mpath-kernel
S=$KS
if [ ! -d "$NVMET_CFS" ]; then
    skip "$T nvmet: no nvmet configfs"
elif st_subsys $KS 64 1 && st_port 1 tcp 127.0.0.1 $APORT && st_port 2 tcp 127.0.0.1 $BPORT &&
     st_link $KS 1 && st_link $KS 2; then
    if [ ! -e $NVMET_CFS/ports/1/ana_groups/1/ana_state ]; then
        skip "$T nvmet: no ANA groups in this nvmet"
    else
        CA=$(connect $APORT) CB=$(connect $BPORT)
        [ -n "$CA" ] && [ -n "$CB" ] && pass "$T nvmet: connected $CA, $CB" || fail "$T nvmet: connect: $(tail -n 2 /tmp/mp.conn)"
        show_list
        DEV=$(devices)
        if [ "$(echo "$DEV" | wc -w)" = 1 ] && [ -b "$DEV" ] && [ "$(path $APORT 1)" = optimized ] && [ "$(path $BPORT 1)" = optimized ]; then
            pass "$T nvmet: one block device $DEV over both ports, both ANA optimized"
            fio_start $DEV 25
            sleep 6
            echo inaccessible >$NVMET_CFS/ports/1/ana_groups/1/ana_state
            wait_path $APORT 1 inaccessible && pass "$T nvmet: port $APORT inaccessible (nvmet configfs) -> nvmf list shows it" ||
                fail "$T nvmet: path $APORT is '$(path $APORT 1)' after nvmet set it inaccessible"
            sleep 3
            rm -f $NVMET_CFS/ports/1/subsystems/$KS
            pass "$T nvmet: subsystem unlinked from port $APORT mid-fio (its controllers deleted)"
            _w=0; while [ $_w -lt 100 ] && [ "$(path $APORT 4)" = live ]; do sleep 0.1; _w=$((_w+1)); done
            [ "$(path $APORT 4)" != live ] && pass "$T nvmet: path $APORT is $(path $APORT 4) after the unlink" ||
                fail "$T nvmet: path $APORT still live after the unlink"
            fio_check "nvmet (ANA inaccessible, then the port dropped)"
            echo "    failovers: $APORT $(path $APORT 3), $BPORT $(path $BPORT 3)"
            show_list
        else
            fail "$T nvmet: devices '$DEV', paths $(path $APORT 1) / $(path $BPORT 1)"
        fi
        $NVMF disconnect -n $KS >/dev/null 2>&1
        _w=0; while [ $_w -lt 50 ] && [ -n "$(devices)" ]; do sleep 0.1; _w=$((_w+1)); done
        [ -z "$(devices)" ] && pass "$T nvmet: disconnect -n removes the device" || fail "$T nvmet: device left after disconnect -n"
    fi
else
    fail "$T nvmet: subsystem/port setup"
fi
st_cleanup $KS

$NVMF disconnect-all >/dev/null 2>&1
echo "--- daemon log (last 40 lines)"; tail -n 40 $DAEMON_LOG 2>/dev/null | sed 's/^/    daemon: /'
grep -qi 'panicked' $DAEMON_LOG 2>/dev/null && fail "$T: the host daemon log has a panic"
grep -qi 'panicked' $LOG 2>/dev/null && fail "$T: the target log has a panic"
if grep -q ' /mnt/host 9p' /proc/mounts; then
    nvmevm_copy_out $LOG
    [ -f $DAEMON_LOG ] && nvmevm_copy_out $DAEMON_LOG
fi
dmesg | grep -iE 'nbd|blk_update|I/O error' | tail -n 15 | sed 's/^/    dmesg: /'
exit 0
