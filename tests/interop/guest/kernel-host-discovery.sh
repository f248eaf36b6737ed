#!/bin/sh
# kernel-host-discovery.sh -- guest script (trixie track): discovery for
# operations, the Linux kernel NVMe/TCP host with nvme-cli 2.13 against OUR
# target (`nvmf target --config`, reloaded with SIGHUP).
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/kernel-host-discovery.sh
#
# Two targets: T1 (`--config`, 127.0.0.1:4420, subsystem A, a [[referral]] to
# 127.0.0.1:4430) and T2 (quick mode on 127.0.0.1:4430, subsystem C); both in
# --capture's port range (4420-4430), so the notices show on the wire.
#   - `nvme discover` at T1 lists the current discovery subsystem (subtype 3),
#     A (subtype 2) and the referral to T2 (subtype 1), also with -o json;
#   - `nvme connect-all` at T1 connects A and, following the referral, C;
#     it does not try to connect the current discovery subsystem;
#   - `nvme discover -p -k 5` keeps a persistent discovery controller (KATO 5 s);
#     `udevadm monitor --kernel` watches the uevents the kernel sends on a
#     Discovery Log Change notice (NVME_AEN=0x70f002, what nvme-cli's udev rule
#     70-nvmf-autoconnect.rules acts on; udevd does not run in the guest);
#   - the config gains subsystem B + SIGHUP: the notice arrives; then what the
#     udev rule runs (`nvme connect-all --device=nvmeX`, on the persistent
#     controller) connects B;
#   - the persistent controller stays live past 2 x KATO (keep-alive served);
#   - B removed from the config + SIGHUP: a second notice (the first was
#     unmasked by connect-all's log read); the referral removed: a third;
#   - both targets exit 0 on SIGTERM, no panic in their logs.
#
# Then our host against nvmet (port 4425, subsystem K1, a configfs referral to
# T2): `nvmf connect-all` connects K1 and, through the referral, C;
# `nvmf discover -p --foreground` reports K2 when it is linked to the port
# (nvmet's notice); `nvmf connect-all -p` leaves the discovery controller to the
# host daemon, which connects K3 when it is linked.
#
# ASSUMPTIONS about `nvmf` (run.sh checks `nvmf target --help` for
# --config --listen --memory --subnqn --referral, `nvmf discover --help` for -p --foreground -k
# and `nvmf connect-all --help` for -t -a -s -o):
#   nvmf target --config FILE       (SIGHUP reloads FILE; [[referral]] tables)
#   nvmf target --listen 127.0.0.1:4430 --memory 16M --subnqn NQN
. /lib/nvme-vm/lib.sh

NVMF=${NVMF_BIN:-/extra/nvmf}
T=disco
ADDR=127.0.0.1
P1=4420
P2=4430
A=nqn.2024-01.io.nvmf-rs:disco-a
B=nqn.2024-01.io.nvmf-rs:disco-b
C=nqn.2024-01.io.nvmf-rs:disco-c
DNQN=nqn.2014-08.org.nvmexpress.discovery
CFG=/tmp/disco.toml
LOG1=/tmp/nvmf-target-disco1.log
LOG2=/tmp/nvmf-target-disco2.log
UEV=/tmp/disco-uevents.log
PID1= PID2= MONPID=

say() { echo "=== $*"; }

# write_config WITH_B WITH_REFERRAL
write_config() {
    {
        echo "listen = [\"$ADDR:$P1\"]"
        if [ "$2" = 1 ]; then
            printf '\n[[referral]]\naddress = "%s"\nport = %s\ntransport = "tcp"\n' $ADDR $P2
        fi
        printf '\n[[subsystem]]\nnqn = "%s"\n[[subsystem.namespace]]\nmemory = "16M"\n' $A
        if [ "$1" = 1 ]; then
            printf '\n[[subsystem]]\nnqn = "%s"\n[[subsystem.namespace]]\nmemory = "16M"\n' $B
        fi
    } >$CFG
}

# start_target PIDVAR LOG PORT ARGS...
start_target() {
    _v=$1 _l=$2 _p=$3; shift 3
    "$NVMF" target "$@" >"$_l" 2>&1 &
    eval "$_v=$!"
    _w=0; while [ $_w -lt 200 ] && ! listening $_p; do _w=$((_w+1)); sleep 0.1; done
    listening $_p && pass "$T: nvmf target on $_p ($*)" || { fail "$T: nvmf target on $_p not listening"; cat "$_l"; return 1; }
}

# stop_target PID NAME
stop_target() { nvmevm_stop_target "$T" "$1" "$2"; }

# connected NQN: a live controller of NQN exists
connected() {
    for c in /sys/class/nvme/nvme*; do
        [ -e "$c/subsysnqn" ] && [ "$(cat $c/subsysnqn)" = "$1" ] && [ "$(cat $c/state)" = live ] && return 0
    done
    return 1
}

# wait_connected NQN TENTHS
wait_connected() {
    _w=0; while [ $_w -lt $2 ]; do connected "$1" && return 0; _w=$((_w+1)); sleep 0.1; done
    return 1
}

# aens: how many Discovery Log Change uevents were seen
aens() { _c=$(grep -c '^NVME_AEN=0x70f002' $UEV 2>/dev/null); echo "${_c:-0}"; }

# aen_devs: the device of each Discovery Log Change uevent
aen_devs() { awk -v RS= '/\nNVME_AEN=0x70f002\n/' $UEV | sed -n 's/^DEVNAME=//p'; }

# wait_aens N TENTHS: until N notices have been seen
wait_aens() {
    _w=0; while [ $_w -lt $2 ]; do [ "$(aens)" -ge "$1" ] && return 0; _w=$((_w+1)); sleep 0.1; done
    return 1
}

# reload DESC: SIGHUP T1, wait for its log line
reload() {
    _n=$(grep -c 'configuration reloaded' $LOG1)
    kill -HUP $PID1
    _w=0; while [ $_w -lt 100 ] && [ "$(grep -c 'configuration reloaded' $LOG1)" -le "$_n" ]; do _w=$((_w+1)); sleep 0.1; done
    if [ "$(grep -c 'configuration reloaded' $LOG1)" -gt "$_n" ]; then
        pass "$T: reload ($1): $(grep 'configuration reloaded' $LOG1 | tail -n1 | sed 's/.*INFO[^:]*: //' | cut -c1-200)"
    else
        fail "$T: reload ($1): no 'configuration reloaded' in the target log"; tail -n 5 $LOG1
    fi
}

# ---------------------------------------------------------------------- main --
say "kernel host (nvme-cli $(nvme version 2>/dev/null | sed -n 's/^nvme version \([^ ]*\).*/\1/p'), $(uname -r)) vs nvmf target: discovery"
[ -x "$NVMF" ] || { fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; }
nvmevm_hostnqn
rm -f $LOG1 $LOG2 $UEV
write_config 0 1
sed 's/^/    disco.toml: /' $CFG
start_target PID1 $LOG1 $P1 --config $CFG || exit 1
start_target PID2 $LOG2 $P2 --listen $ADDR:$P2 --memory 16M --subnqn $C || exit 1

say "nvme discover: current discovery subsystem, A, referral"
nvme discover -t tcp -a $ADDR -s $P1 >/tmp/.disco.txt 2>&1; rc=$?
sed 's/^/    /' /tmp/.disco.txt
[ $rc -eq 0 ] && pass "$T: nvme discover rc 0" || fail "$T: nvme discover rc=$rc"
grep -q "subtype: *current discovery subsystem" /tmp/.disco.txt &&
    pass "$T: the log has the current discovery subsystem entry" || fail "$T: no current discovery subsystem entry"
grep -q "subtype: *discovery subsystem referral" /tmp/.disco.txt && grep -qE "trsvcid: *$P2\b" /tmp/.disco.txt &&
    pass "$T: the log has the referral to $ADDR:$P2" || fail "$T: no referral entry to $P2"
grep -q "subnqn: *$A" /tmp/.disco.txt && pass "$T: the log lists $A" || fail "$T: $A missing"
nvme discover -t tcp -a $ADDR -s $P1 -o json >/tmp/.disco.json 2>&1
tr -d ' \n' </tmp/.disco.json >/tmp/.disco.flat
n=$(grep -o '"subtype":"[^"]*"' /tmp/.disco.flat | sort | uniq -c | tr '\n' ';')
echo "    json subtypes: $n"
if grep -q '"subtype":"currentdiscoverysubsystem"' /tmp/.disco.flat &&
   grep -q '"subtype":"discoverysubsystemreferral"' /tmp/.disco.flat &&
   grep -q '"subtype":"nvmesubsystem"' /tmp/.disco.flat; then
    pass "$T: nvme discover -o json: the three subtypes"
else
    fail "$T: nvme discover -o json subtypes: $n"
fi

say "nvme connect-all: A here, C through the referral"
nvme connect-all -t tcp -a $ADDR -s $P1 >/tmp/.disco.ca 2>&1; rc=$?
sed 's/^/    /' /tmp/.disco.ca
[ $rc -eq 0 ] && pass "$T: nvme connect-all rc 0" || fail "$T: nvme connect-all rc=$rc"
wait_connected $A 100 && pass "$T: connect-all connected $A" || fail "$T: $A not connected"
wait_connected $C 100 && pass "$T: connect-all followed the referral and connected $C" || fail "$T: $C (behind the referral) not connected"
nvme list-subsys 2>&1 | sed 's/^/    /'

say "nvme discover -p: a persistent discovery controller"
udevadm monitor --kernel --property --subsystem-match=nvme >$UEV 2>&1 &
MONPID=$!
sleep 1
nvme discover -p -k 5 -t tcp -a $ADDR -s $P1 >/tmp/.disco.p 2>&1; rc=$?
[ $rc -eq 0 ] && pass "$T: nvme discover -p rc 0" || { fail "$T: nvme discover -p rc=$rc"; cat /tmp/.disco.p; }
DCTRL=
for c in /sys/class/nvme/nvme*; do
    [ "$(cat $c/subsysnqn 2>/dev/null)" = $DNQN ] && [ "$(cat $c/address 2>/dev/null | grep -c "trsvcid=$P1")" = 1 ] && DCTRL=$(basename $c)
done
if [ -n "$DCTRL" ]; then
    pass "$T: persistent discovery controller $DCTRL ($(cat /sys/class/nvme/$DCTRL/address | tr '\n' ' '), state $(cat /sys/class/nvme/$DCTRL/state), kato $(cat /sys/class/nvme/$DCTRL/kato 2>/dev/null || echo ?))"
else
    fail "$T: no discovery controller left after nvme discover -p"
    ls -l /sys/class/nvme/ ; for c in /sys/class/nvme/nvme*; do echo "$c: $(cat $c/subsysnqn) $(cat $c/address)"; done
fi

sleep 1
[ "$(aens)" = 0 ] && pass "$T: no notice before any change" || fail "$T: $(aens) notice(s) before any change"

say "reload: subsystem B added"
write_config 1 1
reload "B added"
if wait_aens 1 200; then
    on=$(aen_devs | head -n1)
    [ "$on" = "/dev/$DCTRL" ] && pass "$T: the kernel got the Discovery Log Change notice (uevent NVME_AEN=0x70f002 on $on)" ||
        fail "$T: the notice came on '$on', not on the persistent discovery controller /dev/$DCTRL"
else
    fail "$T: no Discovery Log Change uevent within 20 s"; sed 's/^/    uevent: /' $UEV | tail -n 30
fi
if [ -n "$DCTRL" ]; then
    # what nvme-cli's udev rule runs on that uevent (nvmf-connect@.service)
    nvme connect-all --device=$DCTRL -t tcp -a $ADDR -s $P1 >/tmp/.disco.ca2 2>&1; rc=$?
    sed 's/^/    /' /tmp/.disco.ca2
    [ $rc -eq 0 ] && pass "$T: nvme connect-all --device=$DCTRL rc 0" || fail "$T: nvme connect-all --device=$DCTRL rc=$rc"
    wait_connected $B 100 && pass "$T: the new subsystem $B is connected" || fail "$T: $B not connected after the notice"
    [ "$(cat /sys/class/nvme/$DCTRL/state 2>/dev/null)" = live ] && pass "$T: $DCTRL still live after connect-all" ||
        fail "$T: $DCTRL state '$(cat /sys/class/nvme/$DCTRL/state 2>/dev/null)'"
    dev=$(nvmevm_wait_ns_dev $B 1 50) && dd if=/dev/urandom of=/tmp/.disco.pat bs=1M count=1 2>/dev/null &&
        dd if=/tmp/.disco.pat of=$dev bs=1M count=1 oflag=direct 2>/dev/null &&
        dd if=$dev of=/tmp/.disco.got bs=1M count=1 iflag=direct 2>/dev/null && cmp -s /tmp/.disco.pat /tmp/.disco.got &&
        pass "$T: 1 MiB written and read back on $B ($dev)" || fail "$T: I/O on $B ($dev)"

    say "keep-alive: $DCTRL past 2 x KATO"
    sleep 12
    [ "$(cat /sys/class/nvme/$DCTRL/state 2>/dev/null)" = live ] && pass "$T: $DCTRL live after 12 s (KATO 5 s: keep-alive served)" ||
        fail "$T: $DCTRL state '$(cat /sys/class/nvme/$DCTRL/state 2>/dev/null)' after 12 s"
    grep -i 'keep alive\|keep-alive\|kato' $LOG1 | grep -vi 'discovery = false' | tail -n 3 | sed 's/^/    target: /'

    say "reload: B removed, then the referral removed"
    nvme disconnect -n $B >/dev/null 2>&1
    write_config 0 1
    reload "B removed"
    wait_aens 2 200 && pass "$T: second notice (B removed)" || fail "$T: no second notice after B was removed (have $(aens))"
    nvme discover --device=$DCTRL -t tcp -a $ADDR -s $P1 >/tmp/.disco.d3 2>&1
    grep -q "subnqn: *$B" /tmp/.disco.d3 && fail "$T: B still in the log" || pass "$T: B gone from the log read on $DCTRL"
    write_config 0 0
    reload "referral removed"
    wait_aens 3 200 && pass "$T: third notice (referral removed)" || fail "$T: no third notice after the referral was removed (have $(aens))"
    nvme discover --device=$DCTRL -t tcp -a $ADDR -s $P1 >/tmp/.disco.d4 2>&1
    sed 's/^/    /' /tmp/.disco.d4
    grep -q "discovery subsystem referral" /tmp/.disco.d4 && fail "$T: the referral is still listed" ||
        pass "$T: the referral is gone from the log"
fi
kill $MONPID 2>/dev/null
n=$(aen_devs | grep -vc "^/dev/$DCTRL\$")
[ "$n" = 0 ] && pass "$T: every notice ($(aens)) came on the persistent discovery controller" ||
    fail "$T: $n notice(s) on other devices: $(aen_devs | tr '\n' ' ')"
echo "--- uevents with NVME_AEN"
grep -B8 '^NVME_AEN' $UEV | grep -E '^(ACTION|DEVPATH|NVME_AEN|NVME_TRADDR|NVME_TRSVCID)=' | sed 's/^/    /'

nvme disconnect-all >/dev/null 2>&1
sleep 1

# ------------------------------------------------ our host against nvmet --
say "our host against nvmet: nvmf connect-all follows nvmet's referral to T2; nvmf discover -p gets nvmet's notice"
K1=nqn.2024-01.io.nvmf-rs:disco-k1
K2=nqn.2024-01.io.nvmf-rs:disco-k2
NP=4425
if nvmevm_target_setup $K1 $ADDR $NP; then
    R=$NVMET_CFS/ports/1/referrals/t2
    if mkdir $R && echo -n tcp >$R/addr_trtype && echo -n ipv4 >$R/addr_adrfam &&
       echo -n $ADDR >$R/addr_traddr && echo -n $P2 >$R/addr_trsvcid && echo 1 >$R/enable; then
        pass "$T: nvmet port $NP refers to $ADDR:$P2 (configfs ports/1/referrals)"
    else
        fail "$T: nvmet referral setup"
    fi
    nvme discover -t tcp -a $ADDR -s $NP 2>&1 | grep -E '^(subtype|trsvcid|subnqn)' | paste - - - | sed 's/^/    nvmet log: /'
    "$NVMF" connect-all -t tcp -a $ADDR -s $NP -o json >/tmp/.ours.ca 2>/tmp/.ours.ca.err; rc=$?
    sed 's/^/    /' /tmp/.ours.ca /tmp/.ours.ca.err
    if [ $rc -eq 0 ] && grep -q "\"$K1\"" /tmp/.ours.ca && grep -q "\"$C\"" /tmp/.ours.ca; then
        pass "$T: nvmf connect-all connected $K1 (nvmet) and, through nvmet's referral, $C (T2)"
    else
        fail "$T: nvmf connect-all rc=$rc did not connect both $K1 and $C"
    fi
    "$NVMF" list 2>&1 | sed 's/^/    /'
    "$NVMF" disconnect-all >/dev/null 2>&1

    "$NVMF" discover -p --foreground -k 5 -t tcp -a $ADDR -s $NP >/tmp/.ours.p 2>&1 &
    PP=$!
    w=0; while [ $w -lt 200 ] && ! grep -q "subnqn: *$K1" /tmp/.ours.p; do w=$((w+1)); sleep 0.1; done
    grep -q "subnqn: *$K1" /tmp/.ours.p && pass "$T: nvmf discover -p read nvmet's log" || fail "$T: nvmf discover -p printed no log"
    S2=$NVMET_CFS/subsystems/$K2
    truncate -s 16M /tmp/k2.img
    if mkdir $S2 && echo 1 >$S2/attr_allow_any_host && mkdir $S2/namespaces/1 &&
       echo -n /tmp/k2.img >$S2/namespaces/1/device_path && echo 1 >$S2/namespaces/1/buffered_io &&
       echo 1 >$S2/namespaces/1/enable && ln -s $S2 $NVMET_CFS/ports/1/subsystems/$K2; then
        pass "$T: nvmet: $K2 linked to port $NP"
    else
        fail "$T: nvmet: adding $K2"
    fi
    w=0; while [ $w -lt 200 ] && ! grep -q "+ nvme subsystem $K2" /tmp/.ours.p; do w=$((w+1)); sleep 0.1; done
    if grep -q "+ nvme subsystem $K2" /tmp/.ours.p; then
        pass "$T: nvmf discover -p got nvmet's Discovery Log Change notice: $(grep 'discovery log changed' /tmp/.ours.p | head -n1)"
    else
        fail "$T: nvmf discover -p did not report $K2 within 20 s"
    fi
    sed 's/^/    nvmf discover -p: /' /tmp/.ours.p | grep -v '^ *nvmf discover -p: *$' | tail -n 12
    kill $PP 2>/dev/null; wait $PP 2>/dev/null

    # the host daemon holds the persistent discovery controller (connect-all -p)
    K3=nqn.2024-01.io.nvmf-rs:disco-k3
    "$NVMF" connect-all -p -k 5 -t tcp -a $ADDR -s $NP >/tmp/.ours.cap 2>&1; rc=$?
    sed 's/^/    /' /tmp/.ours.cap
    [ $rc -eq 0 ] && grep -q "now holds a persistent discovery controller" /tmp/.ours.cap &&
        pass "$T: nvmf connect-all -p: the host daemon holds the discovery controller" ||
        fail "$T: nvmf connect-all -p rc=$rc"
    S3=$NVMET_CFS/subsystems/$K3
    truncate -s 16M /tmp/k3.img
    mkdir $S3 && echo 1 >$S3/attr_allow_any_host && mkdir $S3/namespaces/1 &&
        echo -n /tmp/k3.img >$S3/namespaces/1/device_path && echo 1 >$S3/namespaces/1/buffered_io &&
        echo 1 >$S3/namespaces/1/enable && ln -s $S3 $NVMET_CFS/ports/1/subsystems/$K3 ||
        fail "$T: nvmet: adding $K3"
    w=0; while [ $w -lt 300 ] && ! "$NVMF" list -o json 2>/dev/null | grep -q "\"$K3\""; do w=$((w+1)); sleep 0.1; done
    if "$NVMF" list -o json 2>/dev/null | grep -q "\"$K3\""; then
        pass "$T: the host daemon connected $K3 after nvmet's notice"
    else
        fail "$T: the host daemon did not connect $K3 within 30 s"
        tail -n 20 /run/nvmf/host-daemon.log 2>/dev/null | sed 's/^/    daemon: /'
    fi
    "$NVMF" list 2>&1 | sed 's/^/    /'
    grep -E 'discovery|connect-all' /run/nvmf/host-daemon.log 2>/dev/null | tail -n 6 | sed 's/^/    daemon: /'
    "$NVMF" disconnect-all >/dev/null 2>&1
    rm -f $NVMET_CFS/ports/1/subsystems/$K3
    echo 0 >$S3/namespaces/1/enable; rmdir $S3/namespaces/1 $S3
    rm -f $NVMET_CFS/ports/1/subsystems/$K2
    echo 0 >$S2/namespaces/1/enable; rmdir $S2/namespaces/1 $S2
    rmdir $R
    nvmevm_target_teardown $K1
    "$NVMF" host-daemon --stop >/dev/null 2>&1
fi

stop_target $PID1 "target 1"
stop_target $PID2 "target 2"
for l in $LOG1 $LOG2; do
    echo "--- $l (last 15 lines)"; tail -n 15 $l | sed 's/^/    /'
    grep -qi 'panicked' $l && fail "$T: $l has a panic"
done
grep -q ' /mnt/host 9p' /proc/mounts && { nvmevm_copy_out $LOG1; nvmevm_copy_out $LOG2; nvmevm_copy_out $UEV; }
exit 0
