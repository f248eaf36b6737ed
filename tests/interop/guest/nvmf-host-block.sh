#!/bin/sh
# nvmf-host-block.sh -- guest script (trixie track): OUR host exposes remote
# namespaces as local block devices (`nvmf connect --block`: the kernel's ublk
# driver by default, NBD with --block-kind nbd), against the kernel's nvmet
# target and against OUR target.
#
#   tests/interop/run.sh block
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/nvmf-host-block.sh
#
# Checks:
#   * nvmet (file namespace, 128 MiB): `nvmf connect --block-kind nbd` ->
#     `nvmf list` names /dev/nbdN; its size and logical block size are the namespace's;
#     mkfs.ext4, mount, 8 MiB of files, sha256sum, umount, mount, checksums,
#     fsck -n; fio randrw 4k QD8 with crc32c verify on the raw device;
#     the same 4k randread/randwrite QD8 fio on /dev/nbdN and on the kernel
#     nvme-tcp host's /dev/nvmeXnY against the same subsystem (a FIGURE line;
#     TCG: a ratio only); `nvmf disconnect` removes the device; then
#     `--block-kind ublk` on the same subsystem: /dev/ublkbN, the same fio
#     (a FIGURE line: ublk vs NBD vs the kernel host), one ublk queue per I/O
#     queue (sysfs mq), disconnect;
#   * our target (file namespace, 4096-byte blocks), plain `--block` (auto:
#     ublk, as this kernel has ublk_drv) with one I/O queue (-i 1: one ublk
#     queue; nvmet's device has one per CPU): the same device checks,
#     blkdiscard (trim) and blkdiscard -z (write zeroes) read back zeroes;
#     then a 24 MiB O_DIRECT write through the device while the target is
#     killed (SIGKILL) and restarted 3 s later: the write completes without an I/O error (it waits for the reconnect),
#     the data reads back through the device and is in the target's backing
#     file;
#
#   * then a reload of our target (SIGHUP, config file): namespace 1 grows to
#     128 MiB -> the device grows (ublk on 6.12, without UBLK_F_UPDATE_SIZE: the
#     daemon removes and re-adds it at the new size; `nvmf list` names it), keeps
#     its data and takes writes in the new part; namespace 2 added -> a second
#     device appears and takes I/O; namespace 2 removed -> that device goes away;
#   * then ext4 on the device while a writer makes 40 files, each fsync'd: the
#     target is SIGKILLed and restarted mid-way; no write fails, every
#     acknowledged file keeps its sha256, fsck -n is clean, the files survive a
#     remount; disconnect removes the device.
#
# ASSUMPTIONS about `nvmf`: `connect -t -a -s -n --block [--block-kind K]`
# (root), `list` shows "nvmeXnY (/dev/nbdN)" or "nvmeXnY (/dev/ublkbN)",
# `disconnect -n NQN`; `target --config` with SIGHUP
# reload.  run.sh checks `nvmf connect --help` for --block.
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_subsys st_port st_link st_cleanup st_need _st_log

NVMF=${NVMF_BIN:-/extra/nvmf}
T=block
ADDR=127.0.0.1
KPORT=4420 OPORT=4421
KNQN=nqn.2024-01.io.nvmf-rs:blk-kernel
ONQN=nqn.2024-01.io.nvmf-rs:blk-ours
OFILE=/tmp/blk-ours.img
TARGET_LOG=/tmp/nvmf-target-block.log
DAEMON_LOG=/run/nvmf/host-daemon.log
TARGET_PID=
MNT=/mnt/blk

say() { echo "=== $* (uptime $(uptime_s)s)"; }

# dev_of CTRL NSID: the block device `nvmf list` shows for namespace NSID of
# controller CTRL (a line "nvme0n1 (/dev/nbd0) ..." or "nvme0n1 (/dev/ublkb0) ...")
dev_of() { $NVMF list 2>/dev/null | grep "^${1}n${2} (" | grep -oE '/dev/(nbd|ublkb)[0-9]+' | head -n1; }
# attached DEV: the device is there with a server behind it (NBD: a pid in
# sysfs; ublk: the disk exists only while its server runs)
attached() {
    case $1 in
        /dev/nbd*) [ -e /sys/block/${1#/dev/}/pid ] ;;
        *) [ -e /sys/block/${1#/dev/} ] ;;
    esac
}
# connect_block LABEL PORT NQN [flags]: sets CTRL
connect_block() {
    _l=$1 _p=$2 _n=$3; shift 3
    echo "+ nvmf connect -t tcp -a $ADDR -s $_p -n $_n $* --block"
    CTRL=$(timeout 120 $NVMF connect -t tcp -a $ADDR -s $_p -n "$_n" "$@" --block 2>/tmp/blk.conn | sed -n 's/^device: //p')
    if [ -n "$CTRL" ]; then pass "$T $_l: nvmf connect --block $*: $CTRL"; else fail "$T $_l: nvmf connect --block: $(tail -n 2 /tmp/blk.conn)"; return 1; fi
}

CONF=/tmp/blk-ours.toml
# write_conf SIZE [EXTRA_NAMESPACE_TOML]
write_conf() {
    cat >$CONF <<EOF
listen = ["$ADDR:$OPORT"]
[[subsystem]]
nqn = "$ONQN"
[[subsystem.namespace]]
nsid = 1
file = "$OFILE"
size = "$1"
block_size = 4096
${2:-}
EOF
}

our_target_start() {
    $NVMF target --config $CONF >>$TARGET_LOG 2>&1 &
    TARGET_PID=$!
    _w=0; while [ $_w -lt 200 ] && ! listening $OPORT; do sleep 0.1; _w=$((_w+1)); done
    listening $OPORT
}

# device_checks LABEL EXPECT_BYTES EXPECT_BS -> sets DEV (namespace 1 of $CTRL)
device_checks() {
    _l=$1 _bytes=$2 _bs=$3
    DEV=$(dev_of "$CTRL" 1)
    if [ -z "$DEV" ] || [ ! -b "$DEV" ]; then
        fail "$T $_l: nvmf list names no block device for ${CTRL}n1"; $NVMF list 2>&1 | _st_log; return 1
    fi
    pass "$T $_l: nvmf list: $($NVMF list 2>/dev/null | grep "^${CTRL}n1 " | awk '{print $1, $2}')"
    _sz=$(blockdev --getsize64 "$DEV") _ss=$(blockdev --getss "$DEV")
    [ "$_sz" = "$_bytes" ] && [ "$_ss" = "$_bs" ] &&
        pass "$T $_l: $DEV is $_sz bytes with $_ss-byte logical blocks, as the namespace" ||
        fail "$T $_l: $DEV is $_sz bytes / $_ss-byte blocks, not $_bytes / $_bs"
    # a filesystem, files, checksums across a remount, fsck
    mkdir -p $MNT
    check "$T $_l: mkfs.ext4 $DEV" mkfs.ext4 -q -F "$DEV" || return 1
    check "$T $_l: mount $DEV" mount "$DEV" $MNT || return 1
    for i in 1 2 3 4; do dd if=/dev/urandom of=$MNT/f$i bs=1M count=2 2>/dev/null; done
    (cd $MNT && sha256sum f1 f2 f3 f4) >/tmp/blk.sums
    sync
    check "$T $_l: umount" umount $MNT
    check "$T $_l: mount again" mount "$DEV" $MNT &&
        check "$T $_l: 4 files (8 MiB) keep their sha256 across the remount" sh -c "cd $MNT && sha256sum -c /tmp/blk.sums"
    umount $MNT 2>/dev/null
    check "$T $_l: fsck.ext4 -n $DEV" fsck.ext4 -n -f "$DEV"
    # fio with verification on the raw device
    if command -v fio >/dev/null; then
        fio --name=blk --filename="$DEV" --direct=1 --ioengine=libaio --iodepth=8 \
            --rw=randrw --rwmixread=50 --bs=4k --size=32M --time_based=1 --runtime=5 \
            --verify=crc32c --verify_backlog=256 --verify_fatal=1 \
            --output-format=terse --terse-version=3 >/tmp/blk.fio 2>&1; _rc=$?
        _ln=$(grep '^3;' /tmp/blk.fio | head -n1)
        _err=$(echo "$_ln" | cut -d';' -f5) _rkb=$(echo "$_ln" | cut -d';' -f6) _wkb=$(echo "$_ln" | cut -d';' -f47)
        if [ $_rc -eq 0 ] && [ "${_err:-x}" = 0 ] && [ "${_rkb:-0}" -gt 0 ] && [ "${_wkb:-0}" -gt 0 ]; then
            pass "$T $_l: fio 5 s randrw 4k QD8 crc32c-verify on $DEV: read $((_rkb/1024)) MiB, write $((_wkb/1024)) MiB, err=0"
        else
            fail "$T $_l: fio rc=$_rc err=$_err read_kb=$_rkb write_kb=$_wkb"; tail -n 20 /tmp/blk.fio | _st_log
        fi
    else
        skip "$T $_l: no fio in this guest"
    fi
}

# fio_iops DEV RW: IOPS of 5 s of 4k QD8 (terse field 8 = read IOPS, 49 = write IOPS)
fio_iops() {
    fio --name=cmp --filename="$1" --direct=1 --ioengine=libaio --iodepth=8 --rw=$2 --bs=4k \
        --size=32M --time_based=1 --runtime=5 --output-format=terse --terse-version=3 2>/dev/null |
        grep '^3;' | cut -d';' -f$([ "$2" = randread ] && echo 8 || echo 49)
}

# The figure the issue asks for: our block device against the kernel's own
# nvme-tcp host device, same target (nvmet), same guest. TCG: a ratio only.
compare_with_kernel_host() {
    command -v fio >/dev/null || { skip "$T nvmet: no fio for the comparison"; return 0; }
    if ! timeout 60 nvme connect -t tcp -a $ADDR -s $KPORT -n $KNQN >/dev/null 2>&1 ||
       ! KDEV=$(nvmevm_wait_ns_dev $KNQN 1); then
        fail "$T nvmet: the kernel host could not connect for the comparison"; return 0
    fi
    for rw in randread randwrite; do
        _o=$(fio_iops "$DEV" $rw) _k=$(fio_iops "$KDEV" $rw)
        echo "FIGURE: $T 4k $rw QD8 5 s (TCG guest, nvmet): $DEV (nvmf --block, NBD) ${_o:-?} IOPS, $KDEV (kernel nvme-tcp) ${_k:-?} IOPS"
        eval "NBD_$rw=\${_o:-0} KERN_$rw=\${_k:-0}"
        [ "${_o:-0}" -gt 0 ] && pass "$T nvmet: 4k $rw QD8: $DEV ${_o} IOPS vs the kernel host's $KDEV ${_k:-?} IOPS (ratio $(awk -v a="${_o:-0}" -v b="${_k:-0}" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "?" }'))" ||
            fail "$T nvmet: fio $rw on $DEV gave no IOPS"
    done
    nvme disconnect -n $KNQN >/dev/null 2>&1
    return 0
}

# mq_count DEV: the block device's hardware queues (ublk: its ublk queues)
mq_count() { ls -d /sys/block/${1#/dev/}/mq/[0-9]* 2>/dev/null | wc -l; }

# ratio A B: A/B with two decimals, ? when B is 0
ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "?" }'; }

# disconnect_checks LABEL NQN DEV
disconnect_checks() {
    check "$T $1: nvmf disconnect -n $2" $NVMF disconnect -n "$2"
    _w=0; while [ $_w -lt 50 ] && attached "$3"; do sleep 0.1; _w=$((_w+1)); done
    if ! attached "$3" && { [ ! -e /sys/block/${3#/dev/} ] || [ "$(cat /sys/block/${3#/dev/}/size)" = 0 ]; }; then
        pass "$T $1: $3 detached (no server; gone or size 0)"
    else
        fail "$T $1: $3 still attached after disconnect"
    fi
    [ -z "$($NVMF list 2>/dev/null | grep "^${CTRL}n")" ] && pass "$T $1: nvmf list no longer shows it" ||
        fail "$T $1: nvmf list still shows $CTRL"
}

# fs_kill_checks LABEL: ext4 on $DEV; a writer makes files one after another,
# each fsync'd (dd conv=fsync) and recorded as acknowledged only when dd
# returns; the target is SIGKILLed after 2 s and restarted 3 s later. Checked:
# the writer sees no error, every acknowledged file has its checksum, fsck is
# clean after umount, and the files survive a remount.
fs_kill_checks() {
    _l=$1
    say "filesystem on $DEV: SIGKILL and restart the target while files are written and fsync'd"
    mkdir -p $MNT
    check "$T $_l: mkfs.ext4 $DEV" mkfs.ext4 -q -F "$DEV" || return 1
    check "$T $_l: mount $DEV" mount "$DEV" $MNT || return 1
    rm -f /tmp/blk.acked /tmp/blk.wrc
    (
        i=0
        while [ $i -lt 40 ]; do
            i=$((i+1))
            dd if=/tmp/blk.pat of=$MNT/w$i bs=256k count=2 skip=$((i % 40)) conv=fsync 2>/dev/null || { echo "w$i" >/tmp/blk.wrc; exit 1; }
            echo "$(sha256sum <$MNT/w$i | cut -d' ' -f1)  w$i" >>/tmp/blk.acked
            sleep 0.1
        done
        echo 0 >/tmp/blk.wrc
    ) &
    _wp=$!
    sleep 2
    _before=$(wc -l </tmp/blk.acked 2>/dev/null || echo 0)
    kill -9 $TARGET_PID; wait $TARGET_PID 2>/dev/null
    pass "$T $_l: target killed (SIGKILL) with $_before files acknowledged and more being written"
    sleep 3
    our_target_start && pass "$T $_l: target restarted" || fail "$T $_l: target did not restart"
    _w=0; while [ $_w -lt 900 ] && [ ! -s /tmp/blk.wrc ]; do sleep 0.2; _w=$((_w+1)); done
    wait $_wp 2>/dev/null
    [ "$(cat /tmp/blk.wrc 2>/dev/null)" = 0 ] &&
        pass "$T $_l: all 40 files written and fsync'd without an error across the restart" ||
        fail "$T $_l: the writer failed at $(cat /tmp/blk.wrc 2>/dev/null)"
    _n=$(wc -l </tmp/blk.acked)
    check "$T $_l: all $_n acknowledged files have their sha256 (read through the page cache)" sh -c "cd $MNT && sha256sum -c --quiet /tmp/blk.acked"
    check "$T $_l: umount" umount $MNT
    check "$T $_l: fsck.ext4 -n -f: the filesystem is consistent" fsck.ext4 -n -f "$DEV"
    check "$T $_l: mount again" mount "$DEV" $MNT &&
        check "$T $_l: the $_n acknowledged files keep their sha256 after the remount (read from the target)" sh -c "cd $MNT && sha256sum -c --quiet /tmp/blk.acked"
    umount $MNT 2>/dev/null
}

st_need $T nvme mkfs.ext4 blockdev || exit 0
check "$T: modprobe nbd" modprobe nbd || exit 0
check "$T: modprobe ublk_drv (/dev/ublk-control)" sh -c 'modprobe ublk_drv && [ -c /dev/ublk-control ]' || exit 0
mkdir -p /run/nvmf

# ---------------------------------------------------------------- nvmet ----
say "the kernel's nvmet target, file namespace of 128 MiB"
if st_subsys $KNQN 128 1 && st_port 1 tcp $ADDR $KPORT && st_link $KNQN 1; then
    pass "$T nvmet: subsystem on $ADDR:$KPORT"
    if connect_block nvmet $KPORT $KNQN --block-kind nbd; then
        # (nvmet's file namespaces on tmpfs have 4096-byte blocks: the file's i_blkbits)
        device_checks nvmet $((128 << 20)) 4096 && compare_with_kernel_host && disconnect_checks nvmet $KNQN "$DEV"
    fi
    say "the same subsystem through ublk (--block-kind ublk)"
    if connect_block nvmet-ublk $KPORT $KNQN --block-kind ublk; then
        DEV=$(dev_of "$CTRL" 1)
        case $DEV in
            /dev/ublkb*) pass "$T nvmet-ublk: nvmf list names $DEV" ;;
            *) fail "$T nvmet-ublk: nvmf list names '$DEV', not a /dev/ublkbN"; $NVMF list 2>&1 | _st_log ;;
        esac
        # one ublk queue per I/O queue: the host asks for one I/O queue per CPU
        _q=$(mq_count "$DEV")
        [ "$_q" = "$(nproc)" ] && pass "$T nvmet-ublk: $DEV has $_q queues, one per I/O queue (default: one per CPU)" ||
            fail "$T nvmet-ublk: $DEV has $_q queues, not $(nproc)"
        if [ -b "$DEV" ] && command -v fio >/dev/null; then
            _sz=$(blockdev --getsize64 "$DEV") _ss=$(blockdev --getss "$DEV")
            [ "$_sz" = $((128 << 20)) ] && [ "$_ss" = 4096 ] &&
                pass "$T nvmet-ublk: $DEV is $_sz bytes with $_ss-byte logical blocks" ||
                fail "$T nvmet-ublk: $DEV is $_sz bytes / $_ss-byte blocks"
            for rw in randread randwrite; do
                _u=$(fio_iops "$DEV" $rw)
                eval "_n=\${NBD_$rw:-0} _k=\${KERN_$rw:-0}"
                echo "FIGURE: $T 4k $rw QD8 5 s (TCG guest, nvmet, same subsystem): ublk $DEV ${_u:-?} IOPS, NBD ${_n} IOPS, kernel nvme-tcp ${_k} IOPS; ublk/kernel $(ratio "$_u" "$_k"), NBD/kernel $(ratio "$_n" "$_k"), ublk/NBD $(ratio "$_u" "$_n")"
                [ "${_u:-0}" -gt 0 ] && pass "$T nvmet-ublk: 4k $rw QD8 on $DEV: ${_u} IOPS (ublk/NBD $(ratio "$_u" "$_n"))" ||
                    fail "$T nvmet-ublk: fio $rw on $DEV gave no IOPS"
            done
        fi
        disconnect_checks nvmet-ublk $KNQN "$DEV"
    fi
else
    fail "$T nvmet: subsystem setup"
fi
st_cleanup $KNQN

# ---------------------------------------------------------- our target ----
say "our target, file namespace of 96 MiB with 4096-byte blocks"
rm -f $OFILE
write_conf 96M
if our_target_start; then
    pass "$T ours: target listening on $ADDR:$OPORT"
    if connect_block ours $OPORT $ONQN -l 60 -c 1 -i 1 && device_checks ours $((96 << 20)) 4096; then
        case $DEV in
            /dev/ublkb*) pass "$T ours: plain --block chose ublk ($DEV)" ;;
            *) fail "$T ours: plain --block chose $DEV, not ublk, on a kernel with ublk_drv" ;;
        esac
        _q=$(mq_count "$DEV")
        [ "$_q" = 1 ] && pass "$T ours: -i 1: $DEV has 1 queue, as the controller has 1 I/O queue" ||
            fail "$T ours: -i 1: $DEV has $_q queues, not 1"
        # trim: blkdiscard, then the range reads back as zeroes
        dd if=/dev/urandom of="$DEV" bs=1M count=1 seek=80 oflag=direct 2>/dev/null
        if check "$T ours: blkdiscard 1 MiB" blkdiscard -f -o $((80 << 20)) -l $((1 << 20)) "$DEV"; then
            _nz=$(dd if="$DEV" bs=1M count=1 skip=80 iflag=direct 2>/dev/null | tr -d '\0' | wc -c)
            [ "$_nz" = 0 ] && pass "$T ours: the discarded range reads back as zeroes" ||
                fail "$T ours: the discarded range has $_nz non-zero bytes"
        fi
        # write zeroes (BLKZEROOUT: the block layer's REQ_OP_WRITE_ZEROES, NVMe Write Zeroes)
        dd if=/dev/urandom of="$DEV" bs=1M count=1 seek=82 oflag=direct 2>/dev/null
        if check "$T ours: blkdiscard -z (write zeroes) 1 MiB" blkdiscard -f -z -o $((82 << 20)) -l $((1 << 20)) "$DEV"; then
            _nz=$(dd if="$DEV" bs=1M count=1 skip=82 iflag=direct 2>/dev/null | tr -d '\0' | wc -c)
            [ "$_nz" = 0 ] && pass "$T ours: the zeroed range reads back as zeroes" ||
                fail "$T ours: the zeroed range has $_nz non-zero bytes"
        fi

        say "SIGKILL and restart the target during a 24 MiB write through $DEV"
        dd if=/dev/urandom of=/tmp/blk.pat bs=1M count=24 2>/dev/null
        t0=$(uptime_s)
        ( dd if=/tmp/blk.pat of="$DEV" bs=1M count=24 oflag=direct conv=fsync 2>/tmp/blk.dd; echo $? >/tmp/blk.dd.rc ) &
        DDPID=$!
        sleep 1
        kill -9 $TARGET_PID; wait $TARGET_PID 2>/dev/null
        pass "$T ours: target killed (SIGKILL) during the write"
        sleep 3
        if our_target_start; then
            pass "$T ours: target restarted"
        else
            fail "$T ours: target did not restart"
        fi
        _w=0; while [ $_w -lt 900 ] && [ ! -s /tmp/blk.dd.rc ]; do sleep 0.2; _w=$((_w+1)); done
        wait $DDPID 2>/dev/null
        if [ "$(cat /tmp/blk.dd.rc 2>/dev/null)" = 0 ]; then
            pass "$T ours: the write through $DEV completed without an I/O error across the restart ($(rate 24 $t0 | sed 's/^ *-> //'))"
        else
            fail "$T ours: the write failed: $(tail -n 2 /tmp/blk.dd)"
        fi
        dd if="$DEV" of=/tmp/blk.rb bs=1M count=24 iflag=direct 2>/dev/null
        cmp -s /tmp/blk.pat /tmp/blk.rb && pass "$T ours: 24 MiB read back through $DEV identical" ||
            fail "$T ours: data read back through $DEV differs"
        dd if=$OFILE of=/tmp/blk.rb bs=1M count=24 2>/dev/null
        cmp -s /tmp/blk.pat /tmp/blk.rb && pass "$T ours: and in the target's backing file" ||
            fail "$T ours: the target's backing file does not hold the data"
        grep -q 'reconnected' $DAEMON_LOG 2>/dev/null && pass "$T ours: the host daemon logged the reconnect" ||
            fail "$T ours: no reconnect in the daemon's log"

        say "reload: namespace 1 grows to 128 MiB, namespace 2 (memory) is added"
        write_conf 128M "$(printf '[[subsystem.namespace]]\nnsid = 2\nmemory = "32M"\nblock_size = 4096')"
        kill -HUP $TARGET_PID
        # (ublk without live resize: the device is made again, maybe under another name)
        _w=0; while [ $_w -lt 100 ] && [ "$(blockdev --getsize64 "$(dev_of "$CTRL" 1)" 2>/dev/null)" != $((128 << 20)) ]; do sleep 0.2; _w=$((_w+1)); done
        _old=$DEV DEV=$(dev_of "$CTRL" 1)
        [ -n "$DEV" ] && [ "$(blockdev --getsize64 "$DEV")" = $((128 << 20)) ] &&
            pass "$T ours: $DEV grew to 128 MiB with the namespace" ||
            fail "$T ours: ${DEV:-no device} is $(blockdev --getsize64 "$DEV" 2>/dev/null) bytes after the resize, not $((128 << 20))"
        [ "$_old" = "$DEV" ] || echo "    ($_old was removed and made again as $DEV at the new size)"
        dd if="$DEV" of=/tmp/blk.rb bs=1M count=24 iflag=direct 2>/dev/null
        cmp -s /tmp/blk.pat /tmp/blk.rb && pass "$T ours: the data is still there after the resize" ||
            fail "$T ours: data changed by the resize"
        dd if=/tmp/blk.pat of="$DEV" bs=1M count=1 seek=120 oflag=direct 2>/dev/null &&
            pass "$T ours: a write in the grown part succeeds" || fail "$T ours: a write in the grown part failed"
        _w=0; DEV2=
        while [ $_w -lt 100 ] && [ -z "$DEV2" ]; do
            DEV2=$(dev_of "$CTRL" 2); sleep 0.2; _w=$((_w+1))
        done
        if [ -n "$DEV2" ] && [ "$(blockdev --getsize64 "$DEV2")" = $((32 << 20)) ]; then
            pass "$T ours: the added namespace 2 appeared as $DEV2 (32 MiB)"
            dd if=/tmp/blk.pat of="$DEV2" bs=1M count=4 oflag=direct 2>/dev/null &&
                dd if="$DEV2" bs=1M count=4 iflag=direct 2>/dev/null | cmp -s - /tmp/blk.pat -n $((4 << 20)) &&
                pass "$T ours: 4 MiB written and read back on $DEV2" || fail "$T ours: I/O on $DEV2 failed"
            say "reload: namespace 2 removed"
            write_conf 128M
            kill -HUP $TARGET_PID
            _w=0; while [ $_w -lt 100 ] && attached "$DEV2"; do sleep 0.2; _w=$((_w+1)); done
            ! attached "$DEV2" && pass "$T ours: $DEV2 went away with namespace 2" ||
                fail "$T ours: $DEV2 is still attached after namespace 2 was removed"
        else
            fail "$T ours: namespace 2 did not appear as a block device (list: $($NVMF list 2>&1 | grep "^$CTRL" | tr '\n' ' '))"
        fi
        fs_kill_checks ours
        disconnect_checks ours $ONQN "$DEV"
    fi
    kill -TERM $TARGET_PID 2>/dev/null; wait $TARGET_PID 2>/dev/null
else
    fail "$T ours: target not listening on $OPORT"
fi

$NVMF disconnect-all >/dev/null 2>&1
echo "--- daemon log (last 30 lines)"; tail -n 30 $DAEMON_LOG 2>/dev/null | sed 's/^/    daemon: /'
grep -qi 'panicked' $DAEMON_LOG 2>/dev/null && fail "$T: the host daemon log has a panic"
grep -qi 'panicked' $TARGET_LOG 2>/dev/null && fail "$T: the target log has a panic"
if grep -q ' /mnt/host 9p' /proc/mounts; then
    nvmevm_copy_out $TARGET_LOG
    [ -f $DAEMON_LOG ] && nvmevm_copy_out $DAEMON_LOG
fi
dmesg | grep -iE 'nbd|ublk|blk_update|I/O error' | tail -n 15 | sed 's/^/    dmesg: /'
exit 0
