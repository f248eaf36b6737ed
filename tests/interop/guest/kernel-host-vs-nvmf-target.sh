#!/bin/sh
# kernel-host-vs-nvmf-target.sh -- guest script: the Linux kernel NVMe/TCP host
# (nvme-tcp + nvme-cli 2.3) against OUR target (`nvmf target`).
#
#   tests/interop/run-vm.sh --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target.sh
#
# Self-test of this script against the kernel nvmet target instead of ours
# (no nvmf binary needed; proves the script itself is right):
#
#   tests/interop/run-vm.sh --no-target --env NVMF_TARGET_MODE=kernel \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target.sh
#
# What it does: discovery; connect plain, with -g -G (digests), with -i 2, each
# time list / id-ctrl / id-ns / smart-log / get-log, a 16 MiB O_DIRECT
# write + read-back + cmp on both namespaces (and against the target's
# backing file); ext4 mkfs / mount / checksums / umount / reconnect / verify;
# blkdiscard; then a SIGKILL of the target with the kernel host connected
# (ctrl-loss-tmo 60 s), a restart, and a read-back after the reconnect.
#
# ---------------------------------------------------------------------------
# ASSUMPTIONS about the `nvmf` CLI (adjust here when the CLI settles):
#   nvmf target --listen ADDR:PORT --memory SIZE --file PATH,size=SIZE --subnqn NQN
#     * runs in the foreground until killed (SIGTERM = clean stop);
#     * namespaces get NSIDs in command-line order: --memory = nsid 1,
#       --file = nsid 2 (MEM_NSID / FILE_NSID below);
#     * SIZE accepts a "256M" suffix (MiB); --file creates or extends PATH to
#       size= (we pre-create it with truncate anyway);
#     * the file namespace maps LBA 0 to byte 0 of PATH (no header), so the
#       backing file can be compared with what the host wrote;
#     * tmpfs refuses O_DIRECT: the target falls back to buffered I/O;
#     * serves the discovery subsystem on the same listener;
#     * any host NQN is allowed.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh

MODE=${NVMF_TARGET_MODE:-nvmf}          # nvmf (ours) | kernel (nvmet self-test)
NVMF=${NVMF_BIN:-/extra/nvmf}
NQN=${NVMF_NQN:-nqn.2024-01.io.nvmf-rs:test}
ADDR=${NVMF_ADDR:-127.0.0.1}
PORT=${NVMF_PORT:-4420}
MEM_NSID=1
FILE_NSID=2
NS_FILE=/tmp/ns2.img
NS_SIZE=256M
MB=16                                   # MiB per dd data check
TARGET_LOG=/tmp/nvmf-target.log
TARGET_PID=
TMO="timeout 120"                       # busybox timeout for nvme-cli calls

say() { echo "=== $*"; }

# ------------------------------------------------------------------ target --
wait_listen() {   # wait up to 20 s until something listens on PORT
    _w=0
    while [ $_w -lt 200 ]; do
        netstat -ltn 2>/dev/null | grep -qE "[:.]$PORT[[:space:]]" && return 0
        if [ "$MODE" = nvmf ] && ! kill -0 "$TARGET_PID" 2>/dev/null; then return 1; fi
        _w=$((_w+1)); sleep 0.1
    done
    return 1
}

target_start() {   # $1 = first|restart
    if [ "$MODE" = kernel ]; then
        if [ "$1" = first ]; then
            truncate -s $NS_SIZE $NS_FILE
            nvmevm_target_setup "$NQN" "$ADDR" "$PORT" || return 1
            # nsid 2: the file on tmpfs (buffered) instead of null_blk
            _ns=$NVMET_CFS/subsystems/$NQN/namespaces/$FILE_NSID
            [ -d $_ns ] || mkdir $_ns
            echo 0 >$_ns/enable
            echo -n $NS_FILE >$_ns/device_path
            echo 1 >$_ns/buffered_io
            echo 1 >$_ns/enable || return 1
        else
            ln -s $NVMET_CFS/subsystems/$NQN $NVMET_CFS/ports/1/subsystems/$NQN || return 1
        fi
        return 0
    fi
    if [ ! -x "$NVMF" ]; then fail "no $NVMF in the guest (run-vm.sh --extra target/release/nvmf)"; return 1; fi
    [ -f $NS_FILE ] || truncate -s $NS_SIZE $NS_FILE
    # The restarted target polls and uses cubic (the tuning flags of
    # docs/target.md), so the kernel host's reconnect and read-back also cover
    # that path.
    _tune=""
    [ "$1" = restart ] && _tune="--busy-poll-us 50 --busy-poll-batch 0 --tcp-congestion cubic"
    echo "--- $1 start: $NVMF target --listen $ADDR:$PORT --memory $NS_SIZE --file $NS_FILE,size=$NS_SIZE --subnqn $NQN $_tune" >>$TARGET_LOG
    # shellcheck disable=SC2086
    "$NVMF" target --listen "$ADDR:$PORT" --memory $NS_SIZE --file "$NS_FILE,size=$NS_SIZE" \
        --subnqn "$NQN" $_tune >>$TARGET_LOG 2>&1 &
    TARGET_PID=$!
    if wait_listen; then
        pass "nvmf target listening on $ADDR:$PORT (pid $TARGET_PID, $1)"
    else
        fail "nvmf target not listening on $ADDR:$PORT ($1)"
        tail -n 30 $TARGET_LOG | sed 's/^/    target: /'
        return 1
    fi
}

target_kill9() {
    if [ "$MODE" = kernel ]; then
        # closest kernel equivalent: drop the subsystem from the port (nvmet
        # tears down the controllers, the host starts reconnecting)
        rm -f $NVMET_CFS/ports/1/subsystems/$NQN
    else
        kill -9 "$TARGET_PID" && wait "$TARGET_PID" 2>/dev/null
        echo "--- killed with SIGKILL" >>$TARGET_LOG
        TARGET_PID=
    fi
}

target_stop() {
    [ "$MODE" = kernel ] && return 0
    [ -n "$TARGET_PID" ] || return 0
    kill "$TARGET_PID" 2>/dev/null
    _w=0
    while [ $_w -lt 50 ] && kill -0 "$TARGET_PID" 2>/dev/null; do _w=$((_w+1)); sleep 0.1; done
    if kill -0 "$TARGET_PID" 2>/dev/null; then
        fail "nvmf target did not exit within 5 s of SIGTERM"; kill -9 "$TARGET_PID"
    else
        wait "$TARGET_PID"; _rc=$?
        [ $_rc -eq 0 ] && pass "nvmf target exited 0 on SIGTERM" || fail "nvmf target exit status $_rc on SIGTERM"
    fi
    TARGET_PID=
}

# ------------------------------------------------------------------- host --
CTRL= DEV1= DEV2=
host_connect() {   # $1 = description, rest = extra nvme connect options
    hc_desc=$1; shift
    check "nvme connect $hc_desc" $TMO nvme connect -t tcp -n "$NQN" -a "$ADDR" -s "$PORT" "$@" || return 1
    CTRL=$(nvmevm_ctrl_dev "$NQN")
    DEV1=$(nvmevm_wait_ns_dev "$NQN" $MEM_NSID)
    DEV2=$(nvmevm_wait_ns_dev "$NQN" $FILE_NSID)
    if [ -n "$CTRL" ] && [ -n "$DEV1" ] && [ -n "$DEV2" ]; then
        pass "$hc_desc: controller $CTRL, nsid $MEM_NSID = $DEV1, nsid $FILE_NSID = $DEV2"
    else
        fail "$hc_desc: devices missing (ctrl='$CTRL' nsid$MEM_NSID='$DEV1' nsid$FILE_NSID='$DEV2')"
        ls -l /dev/nvme* 2>&1 | sed 's/^/    /'
        return 1
    fi
    echo "    state=$(cat /sys/class/nvme/$(basename $CTRL)/state 2>/dev/null)" \
        "queue_count=$(cat /sys/class/nvme/$(basename $CTRL)/queue_count 2>/dev/null)" \
        "address=$(cat /sys/class/nvme/$(basename $CTRL)/address 2>/dev/null)"
}

host_disconnect() {   # $1 = description
    $TMO nvme disconnect -n "$NQN" >/tmp/disc.out 2>&1; _rc=$?
    sed 's/^/    /' /tmp/disc.out
    if [ $_rc -eq 0 ] && grep -q 'disconnected 1 controller' /tmp/disc.out; then
        pass "nvme disconnect ($1)"
    else
        fail "nvme disconnect ($1) rc=$_rc"
    fi
    _w=0
    while [ $_w -lt 50 ] && nvmevm_ctrl_dev "$NQN" >/dev/null; do _w=$((_w+1)); sleep 0.1; done
    nvmevm_ctrl_dev "$NQN" >/dev/null && fail "controller still present after disconnect ($1)"
    CTRL= DEV1= DEV2=
}

ctrl_state() { cat /sys/class/nvme/$(basename "$1")/state 2>/dev/null; }

# dd_check DEV LABEL: write MB MiB of /tmp/pattern with O_DIRECT, read back, cmp
dd_check() {
    dc_dev=$1; dc_l=$2
    check "$dc_l: dd write ${MB}MiB to $dc_dev (oflag=direct)" \
        dd if=/tmp/pattern of=$dc_dev bs=1M count=$MB oflag=direct conv=fsync || return 1
    rm -f /tmp/readback
    check "$dc_l: dd read ${MB}MiB from $dc_dev (iflag=direct)" \
        dd if=$dc_dev of=/tmp/readback bs=1M count=$MB iflag=direct || return 1
    if cmp /tmp/pattern /tmp/readback; then pass "$dc_l: read-back of $dc_dev identical"; else fail "$dc_l: read-back of $dc_dev differs"; return 1; fi
}

backing_check() {   # the file namespace's backing file holds the pattern
    dd if=$NS_FILE of=/tmp/backing bs=1M count=$MB 2>/dev/null
    if cmp /tmp/pattern /tmp/backing; then pass "$1: backing file $NS_FILE holds the written data"; else fail "$1: backing file $NS_FILE differs from the written data"; fi
    rm -f /tmp/backing
}

# admin + I/O checks on a connected controller
exercise() {   # $1 = label
    ex_l=$1
    check "$ex_l: nvme list" nvme list
    grep -q "$(basename $DEV1)" /tmp/.check.out && pass "$ex_l: nvme list shows $DEV1" || fail "$ex_l: nvme list does not show $DEV1"
    if check "$ex_l: nvme id-ctrl $CTRL" $TMO nvme id-ctrl $CTRL; then
        grep -E '^(vid|sn|mn|fr|mdts|cntlid|ver|nn|sqes|cqes|maxcmd|ioccsz|iorcsz|subnqn|cntrltype|oncs|vwc|sgls) ' /tmp/.check.out | sed 's/^/    | /'
        grep -q "^subnqn *: *$NQN\$" /tmp/.check.out && pass "$ex_l: id-ctrl subnqn = $NQN" || fail "$ex_l: id-ctrl subnqn is not $NQN"
    fi
    for ex_d in $DEV1 $DEV2; do
        if check "$ex_l: nvme id-ns $ex_d" $TMO nvme id-ns $ex_d; then
            ex_nsze=$(sed -n 's/^nsze *: *//p' /tmp/.check.out)
            [ -n "$ex_nsze" ] && [ "$ex_nsze" != 0 ] && pass "$ex_l: $ex_d nsze=$ex_nsze" || fail "$ex_l: $ex_d nsze='$ex_nsze'"
        fi
    done
    check "$ex_l: nvme smart-log $CTRL" $TMO nvme smart-log $CTRL
    check "$ex_l: nvme get-log $CTRL --log-id=1 --log-len=64 (error information)" \
        $TMO nvme get-log $CTRL --log-id=1 --log-len=64
    dd_check $DEV1 "$ex_l nsid$MEM_NSID(memory)"
    dd_check $DEV2 "$ex_l nsid$FILE_NSID(file)" && backing_check "$ex_l"
}

# --------------------------------------------------------------------- main --
say "kernel host vs ${MODE} target ($NQN on $ADDR:$PORT)"
rm -f $NS_FILE $TARGET_LOG
modprobe ext4 2>/dev/null
dd if=/dev/urandom of=/tmp/pattern bs=1M count=$MB 2>/dev/null
target_start first || { nvmevm_copy_out $TARGET_LOG 2>/dev/null; exit 1; }

say "discovery"
$TMO nvme discover -t tcp -a "$ADDR" -s "$PORT" >/tmp/discover.out 2>&1; _rc=$?
sed 's/^/    /' /tmp/discover.out
if [ $_rc -eq 0 ] && grep -q "subnqn: *$NQN\$" /tmp/discover.out; then
    pass "nvme discover lists $NQN"
else
    fail "nvme discover (rc=$_rc) does not list $NQN"
fi
check "nvme discover -o json" $TMO nvme discover -t tcp -a "$ADDR" -s "$PORT" -o json &&
    { grep -q "\"$NQN\"" /tmp/.check.out && pass "discover json has $NQN" || fail "discover json lacks $NQN"; }

for variant in plain digests ioq2; do
    case $variant in
        plain) opts= ;;
        digests) opts="-g -G" ;;
        ioq2) opts="-i 2" ;;
    esac
    say "connect $variant ($opts)"
    if host_connect "$variant${opts:+ ($opts)}" $opts; then
        if [ $variant = ioq2 ]; then
            _qc=$(cat /sys/class/nvme/$(basename $CTRL)/queue_count 2>/dev/null)
            [ "$_qc" = 3 ] && pass "-i 2: queue_count=3 (admin + 2 I/O)" || fail "-i 2: queue_count='$_qc', want 3"
        fi
        exercise $variant
    fi
    host_disconnect $variant
done

say "ext4 on nsid $MEM_NSID: mkfs, files, checksums, reconnect, verify"
if host_connect "fs"; then
    mkdir -p /mnt/t
    if check "mkfs.ext4 $DEV1" mkfs.ext4 -F -q $DEV1 && check "mount $DEV1" mount -t ext4 $DEV1 /mnt/t; then
        mkdir -p /mnt/t/dir
        dd if=/dev/urandom of=/mnt/t/a.bin bs=1M count=4 2>/dev/null
        dd if=/dev/urandom of=/mnt/t/b.bin bs=4k count=37 2>/dev/null
        i=0; while [ $i -lt 50 ]; do echo "file $i $(cat /proc/sys/kernel/random/uuid)" >/mnt/t/dir/f$i; i=$((i+1)); done
        sync
        (cd /mnt/t && find . -type f | sort | xargs sha256sum) >/tmp/sums
        echo "    $(wc -l </tmp/sums) files checksummed"
        check "umount" umount /mnt/t
        host_disconnect "fs"
        if host_connect "fs reconnect"; then
            if check "mount $DEV1 again" mount -t ext4 $DEV1 /mnt/t; then
                check "checksums match after reconnect" sh -c 'cd /mnt/t && sha256sum -c /tmp/sums'
                check "umount" umount /mnt/t
                check "fsck.ext4 -n $DEV1 clean" fsck.ext4 -n -f $DEV1
            fi
            _dmax=$(cat /sys/block/$(basename $DEV1)/queue/discard_max_bytes 2>/dev/null)
            if [ "${_dmax:-0}" = 0 ]; then
                skip "blkdiscard: $DEV1 has discard_max_bytes=0 (target does not advertise DSM deallocate)"
            else
                check "blkdiscard $DEV1 (discard_max_bytes=$_dmax)" blkdiscard $DEV1
                check "blkdiscard $DEV2 first 16 MiB" blkdiscard -o 0 -l 16777216 $DEV2
            fi
        fi
    fi
    host_disconnect "fs"
fi

say "SIGKILL the target with the kernel host connected (-l 60 -c 1), restart, read back"
if host_connect "kill-restart (-l 60 -c 1)" -l 60 -c 1; then
    dd if=/dev/urandom of=/tmp/pattern bs=1M count=$MB 2>/dev/null
    if check "dd write ${MB}MiB to $DEV2 (oflag=direct conv=fsync)" \
            dd if=/tmp/pattern of=$DEV2 bs=1M count=$MB oflag=direct conv=fsync; then
        _c=$CTRL
        target_kill9
        # the host notices the loss (state leaves "live")
        _w=0; while [ $_w -lt 100 ] && [ "$(ctrl_state $_c)" = live ]; do _w=$((_w+1)); sleep 0.1; done
        _s=$(ctrl_state $_c)
        [ "$_s" != live ] && pass "host noticed the target loss (state=$_s)" || fail "controller still live 10 s after the target was killed"
        sleep 2
        backing_check "after SIGKILL"
        if target_start restart; then
            _w=0; while [ $_w -lt 600 ] && [ "$(ctrl_state $_c)" != live ]; do _w=$((_w+1)); sleep 0.1; done
            _s=$(ctrl_state $_c)
            if [ "$_s" = live ]; then
                pass "host reconnected after the target restart ($(awk "BEGIN{print $_w/10}") s)"
                DEV2=$(nvmevm_wait_ns_dev "$NQN" $FILE_NSID)
                rm -f /tmp/readback
                check "dd read ${MB}MiB from $DEV2 after reconnect (iflag=direct)" \
                    dd if=$DEV2 of=/tmp/readback bs=1M count=$MB iflag=direct &&
                if cmp /tmp/pattern /tmp/readback; then pass "data written before SIGKILL reads back identical"; else fail "data written before SIGKILL differs after restart"; fi
            else
                fail "host did not reconnect within 60 s (state=$_s)"
                dmesg | grep -iE 'nvme' | tail -n 15 | sed 's/^/    dmesg: /'
            fi
        fi
    fi
    host_disconnect "kill-restart"
fi

target_stop
rm -f /tmp/pattern /tmp/readback
if [ -s $TARGET_LOG ]; then
    echo "--- target log (last 40 lines of $TARGET_LOG)"
    tail -n 40 $TARGET_LOG | sed 's/^/    target: /'
fi
grep -q ' /mnt/host 9p' /proc/mounts && [ -s $TARGET_LOG ] && nvmevm_copy_out $TARGET_LOG
dmesg | grep -iE 'nvme|nvmet' | tail -n 20 | sed 's/^/    dmesg: /'
exit 0
