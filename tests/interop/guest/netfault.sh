#!/bin/sh
# netfault.sh -- guest script: NVMe/TCP over a faulty network (netem delay,
# jitter, loss, reordering, and a cut link) between OUR target and two hosts:
# the Linux kernel host (nvme-cli) and ours (`nvmf io-check`, `nvmf connect`
# + `nvmf write/read` through the host daemon).
#
#   tests/interop/run.sh netfault
#   tests/interop/run-vm.sh --no-target --no-ublk --extra target/release/nvmf \
#       --script tests/interop/guest/netfault.sh
#
# Network (inside the guest only; QEMU has no NIC):
#   netns "tgt": veth-t 10.99.0.1/24, runs `nvmf target`
#   the guest's initial netns: veth-h 10.99.0.2/24, runs the hosts
# The host side stays in the initial namespace on purpose: the kernel's
# nvme-tcp opens the sockets of a *reconnect* from a kworker, i.e. in
# init_net, so a kernel host inside another netns could never reconnect after
# the link cut (the first connect, made by the nvme-cli process, would work).
#
# Faults: `tc qdisc replace dev veth-h root netem delay 20ms 5ms loss 2% reorder
# 10%` (host->target; NETFAULT_BOTH=1 also target->host), and `ip link set veth-h down`
# for CUT_S seconds while writes are in flight, then up again.
# Needs iproute2's ip and tc and the veth / sch_netem modules in the guest
# (run-vm.sh puts them in the base initramfs).
. /lib/nvme-vm/lib.sh

NVMF=${NVMF_BIN:-/extra/nvmf}
NQN=nqn.2024-01.io.nvmf-rs:nf
TADDR=10.99.0.1 HADDR=10.99.0.2 PORT=4420
HV=veth-h TV=veth-t
NETEM=${NETFAULT_NETEM:-delay 20ms 5ms loss 2% reorder 10%}
CUT_S=${NETFAULT_CUT_S:-5}
NS_FILE=/tmp/nf.img
TARGET_LOG=/tmp/nvmf-target.log
DAEMON_LOG=/run/nvmf/host-daemon.log
TMO="timeout 300"
TARGET_PID=

# busybox sh runs its own (netns-less) ip applet before looking at PATH
ip() { /usr/sbin/ip "$@"; }
tc() { /usr/sbin/tc "$@"; }
say() { echo "=== $* (uptime $(uptime_s)s)"; }
tgt() { /usr/sbin/ip netns exec tgt "$@"; }

netem_on() {
    check "netem on $HV: $NETEM" /usr/sbin/tc qdisc replace dev $HV root netem $NETEM
    # NETFAULT_BOTH=1: the target->host direction too (about twice as slow under TCG)
    [ "${NETFAULT_BOTH:-0}" = 1 ] && check "netem on $TV (netns tgt): $NETEM" tgt tc qdisc replace dev $TV root netem $NETEM
}
netem_off() {
    tc qdisc del dev $HV root 2>/dev/null
    tgt tc qdisc del dev $TV root 2>/dev/null
}
netem_stats() {
    tc -s qdisc show dev $HV | sed 's/^/    tc(host side): /'
    tgt tc -s qdisc show dev $TV | sed 's/^/    tc(target side): /'
}

setup_net() {
    modprobe veth && modprobe sch_netem || { fail "modprobe veth sch_netem"; return 1; }
    check "ip netns add tgt" /usr/sbin/ip netns add tgt || return 1
    check "veth pair $HV <-> $TV" /usr/sbin/ip link add $HV type veth peer name $TV || return 1
    ip link set $TV netns tgt &&
        ip addr add $HADDR/24 dev $HV && ip link set $HV up &&
        tgt ip link set lo up &&
        tgt ip addr add $TADDR/24 dev $TV && tgt ip link set $TV up
    [ $? = 0 ] || { fail "veth addresses"; return 1; }
    ip addr show $HV | sed 's/^/    /'
    tgt ip addr show $TV | sed 's/^/    /'
    check "ping $TADDR from the host side" ping -c 2 -W 5 $TADDR
}

target_start() {
    truncate -s 64M $NS_FILE
    echo "--- start: $NVMF target --listen $TADDR:$PORT --file $NS_FILE,size=64M --subnqn $NQN" >>$TARGET_LOG
    /usr/sbin/ip netns exec tgt "$NVMF" target --listen $TADDR:$PORT --file $NS_FILE,size=64M \
        --subnqn $NQN >>$TARGET_LOG 2>&1 &
    TARGET_PID=$!
    _w=0
    while [ $_w -lt 200 ]; do
        tgt netstat -ltn 2>/dev/null | grep -qE "$TADDR:$PORT[[:space:]]" && break
        kill -0 $TARGET_PID 2>/dev/null || break
        _w=$((_w+1)); sleep 0.1
    done
    if tgt netstat -ltn 2>/dev/null | grep -qE "$TADDR:$PORT[[:space:]]"; then
        pass "nvmf target listening on $TADDR:$PORT in netns tgt (pid $TARGET_PID)"
    else
        fail "nvmf target not listening on $TADDR:$PORT"; tail -n 30 $TARGET_LOG | sed 's/^/    target: /'
        return 1
    fi
}

ctrl_state() { cat /sys/class/nvme/$(basename "$1")/state 2>/dev/null; }

# cut_link PID: with PID (the writer) running, take the link down for CUT_S s;
# prints the kernel controller state at the end of the cut when $CUT_CTRL is set
cut_link() {
    _wp=$1
    if kill -0 $_wp 2>/dev/null; then pass "writer still running when the link goes down"; else
        echo "    NOTE: the writer finished before the link cut"; fi
    ip link set $HV down && pass "link $HV down for ${CUT_S}s" || fail "ip link set $HV down"
    sleep $CUT_S
    [ -n "${CUT_CTRL:-}" ] && echo "    kernel controller state at the end of the cut: $(ctrl_state $CUT_CTRL)"
    ip link set $HV up && pass "link $HV up again" || fail "ip link set $HV up"
}

# wait_pid PID SECONDS: wait for a background job, at most SECONDS (then kill it)
wait_pid() {
    _p=$1 _w=0
    while [ $_w -lt $(($2 * 10)) ] && kill -0 $_p 2>/dev/null; do _w=$((_w+1)); sleep 0.1; done
    if kill -0 $_p 2>/dev/null; then kill -9 $_p 2>/dev/null; wait $_p 2>/dev/null; return 124; fi
    wait $_p
}

backing_check() {   # $1 label, $2 pattern file, $3 offset in MiB
    dd if=$NS_FILE of=/tmp/backing bs=1M skip=${3:-0} count=$(($(wc -c <$2) / 1048576)) 2>/dev/null
    if cmp $2 /tmp/backing; then pass "$1: target backing file holds the data"; else fail "$1: target backing file differs"; fi
    rm -f /tmp/backing
}

# ----------------------------------------------------------- kernel host ----
kernel_host() {
    say "kernel host (nvme-cli) -> nvmf target over netem, then a ${CUT_S}s link cut"
    check "nvme connect -a $TADDR -l 60 -c 1" timeout 120 nvme connect -t tcp -a $TADDR -s $PORT -n $NQN -l 60 -c 1 || return 1
    CTRL=$(nvmevm_ctrl_dev $NQN); DEV=$(nvmevm_wait_ns_dev $NQN 1)
    if [ -z "$DEV" ]; then fail "kernel host: no namespace device"; nvme disconnect -n $NQN; return 1; fi
    pass "kernel host: $CTRL, nsid 1 = $DEV"
    netem_on

    dd if=/dev/urandom of=/tmp/p1 bs=1M count=16 2>/dev/null
    _t=$(uptime_s)
    check "kernel host: dd write 16MiB under netem (oflag=direct)" \
        $TMO dd if=/tmp/p1 of=$DEV bs=1M count=16 oflag=direct conv=fsync && rate 16 $_t
    rm -f /tmp/r1; _t=$(uptime_s)
    check "kernel host: dd read 16MiB under netem (iflag=direct)" \
        $TMO dd if=$DEV of=/tmp/r1 bs=1M count=16 iflag=direct && rate 16 $_t
    if cmp /tmp/p1 /tmp/r1; then pass "kernel host: netem read-back identical"; else fail "kernel host: netem read-back differs"; fi
    backing_check "kernel host netem" /tmp/p1 0

    # new data over the same 16 MiB
    dd if=/dev/urandom of=/tmp/p2 bs=1M count=16 2>/dev/null
    _t=$(uptime_s)
    dd if=/tmp/p2 of=$DEV bs=1M count=16 oflag=direct conv=fsync 2>/tmp/dd2.err &
    _dd=$!
    sleep 1
    CUT_CTRL=$CTRL cut_link $_dd
    wait_pid $_dd 300; _rc=$?
    sed 's/^/    /' /tmp/dd2.err
    [ $_rc = 0 ] && pass "kernel host: dd write 16MiB across the link cut (rc=0)" || fail "kernel host: dd write across the link cut rc=$_rc"
    rate 16 $_t
    _w=0; while [ $_w -lt 600 ] && [ "$(ctrl_state $CTRL)" != live ]; do _w=$((_w+1)); sleep 0.1; done
    [ "$(ctrl_state $CTRL)" = live ] && pass "kernel host: controller live after the cut" || fail "kernel host: controller state $(ctrl_state $CTRL) 60 s after the cut"
    rm -f /tmp/r2; _t=$(uptime_s)
    check "kernel host: dd read 16MiB back after the cut (iflag=direct)" \
        $TMO dd if=$DEV of=/tmp/r2 bs=1M count=16 iflag=direct && rate 16 $_t
    if cmp /tmp/p2 /tmp/r2; then pass "kernel host: data written across the link cut reads back identical"; else fail "kernel host: data written across the link cut differs"; fi
    backing_check "kernel host cut" /tmp/p2 0
    netem_stats
    netem_off
    dmesg | grep -iE 'nvme' | tail -n 12 | sed 's/^/    dmesg: /'
    timeout 60 nvme disconnect -n $NQN >/tmp/disc.out 2>&1; _rc=$?
    sed 's/^/    /' /tmp/disc.out
    [ $_rc = 0 ] && grep -q 'disconnected 1 controller' /tmp/disc.out && pass "kernel host: nvme disconnect" || fail "kernel host: nvme disconnect rc=$_rc"
    rm -f /tmp/p1 /tmp/r1 /tmp/r2 /tmp/p2
}

# -------------------------------------------------------------- our host ----
our_host() {
    say "our host: nvmf io-check over netem"
    netem_on
    _t=$(uptime_s)
    check "nvmf io-check --bytes 16M under netem" \
        $TMO "$NVMF" io-check -t tcp -a $TADDR -s $PORT -n $NQN --bytes 16M --offset 32M && rate 16 $_t
    check "nvmf io-check -i 1 -g -G --bytes 4M under netem" \
        $TMO "$NVMF" io-check -t tcp -a $TADDR -s $PORT -n $NQN -i 1 -g -G --bytes 4M --offset 48M

    say "our host: nvmf connect -l 60 -c 1 (host daemon), writes across a ${CUT_S}s link cut"
    check "nvmf connect -a $TADDR -l 60 -c 1" timeout 60 "$NVMF" connect -t tcp -a $TADDR -s $PORT -n $NQN -l 60 -c 1 || { netem_off; return 1; }
    _d=$(sed -n 's/^device: *//p' /tmp/.check.out | head -n1); _d=${_d:-nvme0}
    "$NVMF" list 2>&1 | sed 's/^/    /'
    # 8 writes of 1 MiB (2048 blocks of 512 bytes) from LBA 0, in the background
    dd if=/dev/urandom of=/tmp/p3 bs=1M count=8 2>/dev/null
    (
        i=0
        while [ $i -lt 8 ]; do
            dd if=/tmp/p3 of=/tmp/chunk.w bs=1M skip=$i count=1 2>/dev/null
            timeout 120 "$NVMF" write ${_d}n1 -s $((i * 2048)) -c 2047 -d /tmp/chunk.w 2>>/tmp/nvmfw.err || { echo "chunk $i failed" >>/tmp/nvmfw.err; exit 1; }
            i=$((i+1))
        done
    ) &
    _wp=$!
    _t=$(uptime_s)
    sleep 1
    CUT_CTRL= cut_link $_wp
    wait_pid $_wp 400; _rc=$?
    sort /tmp/nvmfw.err | uniq -c | sed 's/^/    /'
    [ $_rc = 0 ] && pass "our host: 8 x 1 MiB nvmf write across the link cut" || fail "our host: nvmf write across the link cut rc=$_rc"
    rate 8 $_t
    "$NVMF" list 2>&1 | sed 's/^/    /'
    rm -f /tmp/r3; _t=$(uptime_s)
    check "our host: nvmf read 8MiB back (-c 16383)" timeout 300 "$NVMF" read ${_d}n1 -s 0 -c 16383 -d /tmp/r3 && rate 8 $_t
    if cmp /tmp/p3 /tmp/r3; then pass "our host: data written across the link cut reads back identical"; else fail "our host: data written across the link cut differs"; fi
    backing_check "our host cut" /tmp/p3 0
    netem_stats
    netem_off
    check "nvmf disconnect -n $NQN" timeout 60 "$NVMF" disconnect -n $NQN
    timeout 30 "$NVMF" host-daemon --stop >/dev/null 2>&1
    if [ -s $DAEMON_LOG ]; then
        tail -n 30 $DAEMON_LOG | sed 's/^/    daemon: /'
        grep -qiE 'panicked|panic' $DAEMON_LOG && fail "host daemon log has a panic" || pass "host daemon log has no panic"
        grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $DAEMON_LOG
    fi
    rm -f /tmp/p3 /tmp/r3 /tmp/chunk.w
}

# --------------------------------------------------------------------- main --
say "network faults: nvmf target in netns tgt ($TADDR), hosts on $HADDR; netem '$NETEM', cut ${CUT_S}s"
[ -x "$NVMF" ] || { fail "no $NVMF in the guest"; exit 1; }
rm -f $NS_FILE $TARGET_LOG /tmp/nvmfw.err
setup_net || exit 1
target_start || { nvmevm_copy_out $TARGET_LOG 2>/dev/null; exit 1; }
kernel_host
our_host

if kill -0 $TARGET_PID 2>/dev/null; then pass "nvmf target still running after all faults"; else fail "nvmf target died"; fi
grep -qiE 'panicked|panic' $TARGET_LOG && fail "target log has a panic" || pass "target log has no panic"
kill $TARGET_PID 2>/dev/null
wait_pid $TARGET_PID 10; _rc=$?
[ $_rc = 0 ] && pass "nvmf target exited 0 on SIGTERM" || fail "nvmf target exit status $_rc on SIGTERM"
echo "--- target log (last 40 lines)"
tail -n 40 $TARGET_LOG | sed 's/^/    target: /'
grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $TARGET_LOG
exit 0
