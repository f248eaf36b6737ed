#!/bin/sh
# kernel-host-vs-nvmf-target-metrics.sh -- guest script: the Linux kernel
# NVMe/TCP host against OUR target with its metrics endpoint, read by
# `nvmf stats` (docs/target.md "Metrics").
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target-metrics.sh
#
# What it does: `nvmf target --memory 64M --block-size 4096 --metrics
# 127.0.0.1:9100`; `nvme connect`; after the host's own probing, 256 O_DIRECT
# reads of 4 KiB and 128 O_DIRECT writes of 4 KiB with dd; `nvmf stats -o
# json` before and after: the target counted (at least, the kernel may read on
# its own meanwhile) those reads, writes and bytes, and a latency; an `nvme
# read` past the end of the namespace fails and is counted as an error; the
# subsystem counts the connects and one controller; the table form names the
# subsystem; `wget` of a wrong path gets 404 (when busybox has wget).
#
# ASSUMPTIONS about `nvmf` (run.sh checks `nvmf target --help` for
# --listen --memory --subnqn --block-size --metrics and `nvmf stats --help`
# for --metrics --interval -o):
#   nvmf target ... --metrics ADDR:PORT serves GET /metrics;
#   nvmf stats --metrics ADDR:PORT -o json prints "reads": N, "writes": N,
#   "read_bytes", "written_bytes", "errors", "latency_mean_us" per namespace,
#   one key per line.
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_connect st_disconnect

NVMF=${NVMF_BIN:-/extra/nvmf}
S=nqn.2024-01.io.nvmf-rs:metrics
ADDR=127.0.0.1
PORT=4420
MPORT=9100
T=metrics
TARGET_LOG=/tmp/nvmf-target-metrics.log
TARGET_PID=

say() { echo "=== $*"; }

# jnum FILE KEY: the (first) number after "KEY": in FILE, as an integer
jnum() { sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p" "$1" | head -n1 | cut -d. -f1; }

# jsub FILE KEY: KEY of subsystem $S in `nvmf stats -o json` output
jsub() { sed -n "/\"$S\": {/,/}/p" "$1" >"$1.sub"; jnum "$1.sub" "$2"; }

stats_json() { "$NVMF" stats --metrics "$ADDR:$MPORT" -o json >"$1" 2>&1; }

say "kernel host vs nvmf target: metrics"
[ -x "$NVMF" ] || { fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; }
nvmevm_hostnqn
rm -f $TARGET_LOG
"$NVMF" target --listen "$ADDR:$PORT" --memory 64M --block-size 4096 --subnqn "$S" \
    --metrics "$ADDR:$MPORT" >$TARGET_LOG 2>&1 &
TARGET_PID=$!
w=0; while [ $w -lt 200 ] && ! { listening $PORT && listening $MPORT; }; do kill -0 $TARGET_PID 2>/dev/null || break; w=$((w+1)); sleep 0.1; done
listening $MPORT && pass "$T: nvmf target listening, metrics on $MPORT (pid $TARGET_PID)" || { fail "$T: nvmf target not listening"; cat $TARGET_LOG; exit 1; }

if stats_json /tmp/.m.0 && [ "$(jnum /tmp/.m.0 reads)" = 0 ]; then
    pass "$T: nvmf stats before any host: namespace 1 with 0 reads"
else
    fail "$T: nvmf stats before any host: $(cat /tmp/.m.0)"
fi

if st_connect $T "connect" "$S" -t tcp -a $ADDR -s $PORT; then
    dev=$ST_DEV
    sleep 3    # let udev and the partition scan finish their reads
    stats_json /tmp/.m.1
    r1=$(jnum /tmp/.m.1 reads) w1=$(jnum /tmp/.m.1 writes) rb1=$(jnum /tmp/.m.1 read_bytes) wb1=$(jnum /tmp/.m.1 written_bytes)
    e1=$(jnum /tmp/.m.1 errors)
    echo "    after connect: reads $r1 writes $w1 read_bytes $rb1 written_bytes $wb1 errors $e1"
    [ "${r1:-0}" -gt 0 ] && pass "$T: the host's own probing reads are counted ($r1)" || fail "$T: no reads counted after connect"

    dd if="$dev" of=/dev/null bs=4096 count=256 iflag=direct 2>/dev/null
    dd if=/dev/urandom of=/tmp/.m.pat bs=4096 count=128 2>/dev/null
    dd if=/tmp/.m.pat of="$dev" bs=4096 count=128 seek=1024 oflag=direct 2>/dev/null
    stats_json /tmp/.m.2
    r2=$(jnum /tmp/.m.2 reads) w2=$(jnum /tmp/.m.2 writes) rb2=$(jnum /tmp/.m.2 read_bytes) wb2=$(jnum /tmp/.m.2 written_bytes)
    mean=$(jnum /tmp/.m.2 latency_mean_us)
    dr=$((r2 - r1)) dw=$((w2 - w1)) drb=$((rb2 - rb1)) dwb=$((wb2 - wb1))
    echo "    after dd: +$dr reads (+$drb bytes), +$dw writes (+$dwb bytes), mean latency ${mean} us"
    # The kernel host sends each 4 KiB O_DIRECT request as one command; it may
    # read a little on its own meanwhile, never less.
    [ $dr -ge 256 ] && [ $dr -le 320 ] && pass "$T: 256 reads of 4 KiB counted (+$dr)" || fail "$T: reads +$dr, want 256..320"
    [ $drb -eq $((dr * 4096)) ] && pass "$T: read bytes +$drb = reads x 4096" || fail "$T: read bytes +$drb for +$dr reads"
    [ $dw -ge 128 ] && [ $dw -le 160 ] && pass "$T: 128 writes of 4 KiB counted (+$dw)" || fail "$T: writes +$dw, want 128..160"
    [ $dwb -ge $((128 * 4096)) ] && pass "$T: written bytes +$dwb" || fail "$T: written bytes +$dwb"
    [ -n "$mean" ] && pass "$T: a mean latency ($mean us)" || fail "$T: no latency in $(cat /tmp/.m.2)"

    nsze=$(nvme id-ns "$dev" 2>/dev/null | sed -n 's/^nsze[[:space:]]*:[[:space:]]*\([^[:space:]]*\).*/\1/p')
    nsze=$((nsze))
    echo "+ (must fail) nvme read $dev -s $nsze -c 0 -z 4096"
    if nvme read "$dev" -s "$nsze" -c 0 -z 4096 -d /dev/null >/tmp/.m.rd 2>&1; then
        fail "$T: a read past the end ($nsze) succeeded"
    else
        sed 's/^/    /' /tmp/.m.rd
        stats_json /tmp/.m.3
        e3=$(jnum /tmp/.m.3 errors)
        [ "$e3" -ge $((e1 + 1)) ] && pass "$T: the read past the end is counted as an error ($e1 -> $e3)" || fail "$T: errors $e1 -> $e3"
    fi
    con=$(jsub /tmp/.m.2 connects_accepted) ctl=$(jsub /tmp/.m.2 controllers)
    [ "${con:-0}" -ge 2 ] && [ "$ctl" = 1 ] && pass "$T: subsystem: $con connects, $ctl controller" || fail "$T: connects '$con' controllers '$ctl'"

    "$NVMF" stats --metrics "$ADDR:$MPORT" >/tmp/.m.table 2>&1
    sed 's/^/    /' /tmp/.m.table
    grep -q "^$S  *1 " /tmp/.m.table && pass "$T: the table has a row for $S namespace 1" || fail "$T: no table row"
    st_disconnect $T "$S"
fi

if command -v wget >/dev/null 2>&1; then
    if wget -q -O /tmp/.m.404 "http://$ADDR:$MPORT/nothing" 2>/tmp/.m.404e; then
        fail "$T: GET /nothing succeeded"
    else
        grep -q 404 /tmp/.m.404e && pass "$T: GET /nothing: 404" || fail "$T: GET /nothing: $(cat /tmp/.m.404e)"
    fi
else
    skip "$T: no wget in the guest for the 404 check"
fi

nvmevm_stop_target "$T" "$TARGET_PID"
grep -qi 'panicked' $TARGET_LOG && fail "$T: the target log has a panic"
grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $TARGET_LOG
exit 0
