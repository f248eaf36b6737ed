#!/bin/sh
# kernel-host-vs-nvmf-target-tls.sh -- guest script (trixie track): the Linux
# kernel NVMe/TCP host (nvme-cli 2.13, kernel TLS through tlshd) against OUR
# target (`nvmf target --tls`) with NVMe/TCP TLS 1.3 and a PSK.
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target-tls.sh
#
# Self-test against the kernel nvmet target instead (port with addr_tsas=tls1.3
# addr_treq=required; tlshd serves both handshakes; one .nvme keyring):
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --env NVMF_TARGET_MODE=kernel \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target-tls.sh
#
# What it does: tlshd (the kernel's TLS handshake upcall daemon); a configured
# PSK K = `nvme gen-tls-key --hostnqn H --subsysnqn S --insert` (identity
# version 0: the retained PSK "NVMe0R01 H S" goes into the .nvme keyring), and
# the same K inserted for the discovery NQN (`nvme check-tls-key --keydata=K
# --insert`); the target started with K.  Checks:
#   * `nvme discover --tls` lists S with treq "required" and sectype tls13;
#   * a plain (non-TLS) `nvme connect` to the port is refused;
#   * `nvme connect --tls` connects; tlshd logs successful handshakes; `ss -tnie`
#     shows the host's sockets to the port with `tcp-ulp-tls`; 8 MiB O_DIRECT
#     dd write + read-back + cmp; disconnect;
#   * identity version 1 (NVMe/TCP 2.0: "NVMe1R01 H S <PSK digest>"; `nvme
#     check-tls-key --keydata=K --identity=1 --insert`), connect with that key
#     (--tls-key=<serial>): connects, sysfs tls_key is that key, dd/cmp;
#   * (our target only: host and target do not share a keyring) a host PSK
#     from another configured key must be refused;
#   * (our target only) kernel TLS: while the kernel host is connected, `ss
#     -tnie` shows tcp-ulp-tls on OUR target's sockets too and the target logs
#     "TLS record layer: kernel TLS"; then OUR host (`nvmf io-check --tls`, 32 MiB
#     written and read back) against OUR target with the ULP on both ends.
#
# ---------------------------------------------------------------------------
# ASSUMPTIONS about `nvmf` (the contract of issue "Secure channels"):
#   nvmf target --listen 127.0.0.1:4420 --memory 64M --subnqn NQN --tls \
#       --tls-key NVMeTLSkey-1:01:...:
#     * --tls: the port requires TLS 1.3 (TSAS sectype TLS 1.3, TREQ required
#       in the discovery log entries); a connection that does not start with a
#       TLS ClientHello (a plain ICReq) is refused (closed, or the Connect fails);
#     * --tls-key: the configured PSK in nvme-cli's interchange format
#       (NVMeTLSkey-1:01: = SHA-256, :02: = SHA-384); the target derives the
#       retained PSK of each host from it and the host NQN (HKDF-Expand-Label
#       "HostNQN"), and accepts the TLS PSK identities "NVMe0R0x <hostnqn>
#       <subnqn>" (version 0) and "NVMe1R0x <hostnqn> <subnqn> <digest>"
#       (version 1, TLS PSK derived with "nvme-tls-psk") for the subsystem NQN
#       and for the discovery NQN nqn.2014-08.org.nvmexpress.discovery;
#       ciphersuite TLS_AES_128_GCM_SHA256 (the kernel/tlshd default);
#     * serves the discovery subsystem on the same (TLS) listener;
#     * --memory = nsid 1; SIGTERM: exit 0 within 5 s; listening within 20 s;
#   run.sh checks `nvmf target --help` for --listen --memory --subnqn --tls --tls-key --tls-compat.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_subsys st_port st_link st_cleanup st_connect st_refused st_io ...

MODE=${NVMF_TARGET_MODE:-nvmf}          # nvmf (ours) | kernel (nvmet self-test)
NVMF=${NVMF_BIN:-/extra/nvmf}
S=${NVMF_TLS_NQN:-nqn.2024-01.io.nvmf-rs:tls}
DISC=nqn.2014-08.org.nvmexpress.discovery
ADDR=127.0.0.1
PORT=4420
MB=8
T=tls
TARGET_LOG=/tmp/nvmf-target-tls.log
TLSHD_LOG=/tmp/tlshd.log
TARGET_PID= TLSHD_PID=
nvmevm_hostnqn
H=$(cat /etc/nvme/hostnqn)
NS_FILE=

say() { echo "=== $*"; }
# (ss: the trixie userland has iproute2 and no netstat, not even as a busybox applet)
listening() { ss -ltn 2>/dev/null | grep -qE "[:.]$PORT[[:space:]]"; }
tlshd_ok() { grep -c -i 'handshake with .* was successful' $TLSHD_LOG 2>/dev/null || true; }
# key serial (decimal) in .nvme whose description starts with $1
key_serial() { keyctl show %:.nvme 2>/dev/null | grep -F "psk: $1" | awk '{print $1}' | head -n1; }

target_start() {   # $1 = configured key
    if [ "$MODE" = kernel ]; then
        st_subsys "$S" 64 1 && st_port 1 tcp $ADDR $PORT tls1.3 required && st_link "$S" 1 ||
            { fail "$T: nvmet subsystem + TLS port (addr_tsas=tls1.3 addr_treq=required)"; dmesg | tail -n 3 | _st_log; return 1; }
        NS_FILE=$ST_FILE
        pass "$T: nvmet port 1 $ADDR:$PORT addr_tsas=$(cat $NVMET_CFS/ports/1/addr_tsas) addr_treq=$(cat $NVMET_CFS/ports/1/addr_treq)"
        return 0
    fi
    # --tls-compat: Debian 13's nvme-cli 2.13 (libnvme 1.13) derives the retained
    # and TLS PSKs with the HKDF label layout of libnvme <= 1.15, so the keys it
    # inserts for identity 0 match only that derivation (docs/target.md).
    echo "--- start: $NVMF target --listen $ADDR:$PORT --memory 64M --subnqn $S --tls --tls-key $1 --tls-compat" >>$TARGET_LOG
    "$NVMF" target --listen "$ADDR:$PORT" --memory 64M --subnqn "$S" --tls --tls-key "$1" --tls-compat >>$TARGET_LOG 2>&1 &
    TARGET_PID=$!
    ts_w=0
    while [ $ts_w -lt 200 ] && ! listening; do kill -0 $TARGET_PID 2>/dev/null || break; ts_w=$((ts_w+1)); sleep 0.1; done
    if listening && kill -0 $TARGET_PID 2>/dev/null; then pass "$T: nvmf target --tls --tls-key listening on $ADDR:$PORT (pid $TARGET_PID)"
    else fail "$T: nvmf target --tls not listening"; tail -n 20 $TARGET_LOG | sed 's/^/    target: /'
        kill -9 $TARGET_PID 2>/dev/null; wait $TARGET_PID 2>/dev/null; TARGET_PID=; return 1; fi
}

target_stop() {
    if [ "$MODE" = kernel ]; then st_cleanup "$S"; return 0; fi
    [ -n "$TARGET_PID" ] || return 0
    nvmevm_stop_target "$T" "$TARGET_PID"
    TARGET_PID=
}

# tls_connected DESC: checks on a connected --tls controller (ST_CTRL, ST_DEV)
tls_connected() {
    tc_d=$1
    tc_n=$(tlshd_ok)
    [ "$tc_n" -gt "$HS0" ] && pass "$T: $tc_d: tlshd: $((tc_n - HS0)) more successful handshake(s)" ||
        { fail "$T: $tc_d: tlshd logged no new successful handshake"; _st_log $TLSHD_LOG; }
    HS0=$tc_n
    ss -tnie dst $ADDR:$PORT 2>/dev/null >/tmp/tls-ss.out
    _st_log /tmp/tls-ss.out
    tc_u=$(grep -c 'tcp-ulp-tls' /tmp/tls-ss.out)
    tc_q=$(cat /sys/class/nvme/${ST_CTRL#/dev/}/queue_count 2>/dev/null)
    [ "$tc_u" -ge 2 ] && pass "$T: $tc_d: $tc_u host sockets to $ADDR:$PORT use the kernel TLS ULP (queue_count=$tc_q)" ||
        fail "$T: $tc_d: ss shows $tc_u host sockets with tcp-ulp-tls (queue_count=$tc_q)"
    if [ "$MODE" = nvmf ]; then
        # OUR end: the target's sockets (local port $PORT) run the kernel's TLS
        # record layer too (nvmf-rs hands the session to kTLS after its handshake)
        ss -tnie src $ADDR:$PORT 2>/dev/null >/tmp/tls-ss-target.out
        tc_t=$(grep -c 'tcp-ulp-tls' /tmp/tls-ss-target.out)
        tc_l=$(grep -c 'TLS record layer: kernel TLS' $TARGET_LOG)
        [ "$tc_t" -ge 2 ] && [ "$tc_l" -gt "${KTLS0:-0}" ] &&
            pass "$T: $tc_d: $tc_t of OUR target's sockets on $ADDR:$PORT use the kernel TLS ULP; target log: $((tc_l - ${KTLS0:-0})) more connection(s) on kernel TLS" ||
            { fail "$T: $tc_d: our target's sockets with tcp-ulp-tls: $tc_t; new 'kernel TLS' log lines: $((tc_l - ${KTLS0:-0}))"
              _st_log /tmp/tls-ss-target.out; grep 'TLS record layer' $TARGET_LOG | tail -n 4 | _st_log; }
        KTLS0=$tc_l
    fi
    TLS_KEY_SYSFS=$(cat /sys/class/nvme/${ST_CTRL#/dev/}/tls_key 2>/dev/null)
    echo "    sysfs tls_key of ${ST_CTRL#/dev/}: $TLS_KEY_SYSFS"
    st_io "$T $tc_d" "$ST_DEV" $MB $NS_FILE
}

# ---------------------------------------------------------------------- main --
say "kernel host vs $MODE target with TLS ($S on $ADDR:$PORT, host $H)"
st_need $T nvme tlshd keyctl ss || exit 1
if [ "$MODE" = nvmf ] && [ ! -x "$NVMF" ]; then fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; fi
rm -f $TARGET_LOG $TLSHD_LOG

[ -s /etc/tlshd.conf ] || printf '[debug]\nloglevel=0\ntls=0\nnl=0\n[authenticate]\n[authenticate.client]\n[authenticate.server]\n' >/etc/tlshd.conf
tlshd -s >$TLSHD_LOG 2>&1 &
TLSHD_PID=$!
sleep 1
kill -0 $TLSHD_PID 2>/dev/null && pass "$T: tlshd running (pid $TLSHD_PID)" || { fail "$T: tlshd exited: $(cat $TLSHD_LOG)"; exit 1; }
HS0=0

say "configured PSK"
nvme gen-tls-key --hostnqn="$H" --subsysnqn="$S" --insert >/tmp/tls-key.out 2>&1; k_rc=$?
_st_log /tmp/tls-key.out
K=$(grep -o '^NVMeTLSkey-1:0[12]:[^ ]*:$' /tmp/tls-key.out | head -n1)
nvme check-tls-key --keydata="$K" --hostnqn="$H" --subsysnqn="$DISC" --insert 2>&1 | _st_log
keyctl show %:.nvme 2>&1 | _st_log
K0=$(key_serial "NVMe0R01 $H $S")
if [ $k_rc -eq 0 ] && [ -n "$K" ] && [ -n "$K0" ] && [ -n "$(key_serial "NVMe0R01 $H $DISC")" ]; then
    pass "$T: configured PSK $K; retained PSKs 'NVMe0R01 $H S' ($K0) and '... $DISC' in .nvme"
else
    fail "$T: nvme gen-tls-key/check-tls-key --insert (rc=$k_rc, key '$K', serial '$K0')"; kill $TLSHD_PID; exit 1
fi

target_start "$K" || { kill $TLSHD_PID; exit 1; }

say "discovery over TLS"
timeout 120 nvme discover -t tcp -a $ADDR -s $PORT -q "$H" --tls >/tmp/tls-disc.out 2>&1; d_rc=$?
_st_log /tmp/tls-disc.out
if [ $d_rc -eq 0 ] && grep -q "subnqn: *$S\$" /tmp/tls-disc.out; then
    pass "$T: nvme discover --tls lists $S"
    # the entry of S: treq must say required, sectype tls13
    awk -v s="$S" 'function fl() { if (m) printf "%s", e; e = ""; m = 0 }
        /^=====Discovery Log Entry/ { fl() } { e = e $0 "\n" } $0 ~ "^subnqn: *"s"$" { m = 1 } END { fl() }' \
        /tmp/tls-disc.out >/tmp/tls-disc.ent
    grep -q '^treq: *required' /tmp/tls-disc.ent && pass "$T: discovery log entry of $S: treq required" ||
        fail "$T: discovery log entry of $S: treq is '$(sed -n 's/^treq: *//p' /tmp/tls-disc.ent)'"
    grep -qi 'sectype: *tls13' /tmp/tls-disc.ent && pass "$T: discovery log entry of $S: sectype tls13" ||
        fail "$T: discovery log entry of $S: sectype is '$(sed -n 's/^sectype: *//p' /tmp/tls-disc.ent)'"
else
    fail "$T: nvme discover --tls (rc=$d_rc) does not list $S"
fi
timeout 60 nvme discover -t tcp -a $ADDR -s $PORT -q "$H" >/tmp/tls-disc.out 2>&1
echo "    (for information) plain nvme discover on the TLS port: rc=$?: $(head -n 3 /tmp/tls-disc.out | tr '\n' ' ')"

say "plain connect must be refused"
st_refused $T "plain (non-TLS) connect to the TLS-required port" "$S" -t tcp -a $ADDR -s $PORT -q "$H"

say "nvme connect --tls (identity 0)"
HS0=$(tlshd_ok)
if st_connect $T "nvme connect --tls" "$S" -t tcp -a $ADDR -s $PORT -q "$H" --tls; then
    tls_connected "identity 0"
    st_disconnect "$T identity 0" "$S"
fi

say "PSK identity version 1 (NVMe1R01 ... <digest>)"
nvme check-tls-key --keydata="$K" --hostnqn="$H" --subsysnqn="$S" --identity=1 --insert >/tmp/tls-key1.out 2>&1; k1_rc=$?
_st_log /tmp/tls-key1.out
K1=$(key_serial "NVMe1R01 $H $S ")
if [ $k1_rc -ne 0 ] || [ -z "$K1" ]; then
    fail "$T: nvme check-tls-key --identity=1 --insert (rc=$k1_rc, no 'NVMe1R01 $H $S' key)"
else
    pass "$T: identity 1 key in .nvme: $(keyctl show %:.nvme | grep -F "NVMe1R01 $H $S" | sed 's/.*psk: //') ($K1)"
    HS0=$(tlshd_ok)
    # the key by its serial: nvme-cli 2.13 has --tls_key=<id> (legacy, a number)
    # and --tls-key=<id or interchange key>; try the first, then the second
    K1OPT="--tls_key=$K1"
    echo "+ nvme connect -n $S ... --tls $K1OPT"
    timeout 120 nvme connect -n "$S" -t tcp -a $ADDR -s $PORT -q "$H" --tls $K1OPT >/tmp/tls-k1.out 2>&1 || {
        _st_log /tmp/tls-k1.out; K1OPT="--tls-key=$K1"; nvme disconnect -n "$S" >/dev/null 2>&1; }
    [ "$K1OPT" = "--tls_key=$K1" ] && nvme disconnect -n "$S" >/dev/null 2>&1
    sleep 0.5
    HS0=$(tlshd_ok)
    if st_connect $T "nvme connect --tls $K1OPT (identity 1)" "$S" -t tcp -a $ADDR -s $PORT -q "$H" --tls $K1OPT; then
        tls_connected "identity 1"
        [ "$(printf '%d' "0x$TLS_KEY_SYSFS" 2>/dev/null)" = "$K1" ] &&
            pass "$T: identity 1: the controller uses key $K1 (sysfs tls_key $TLS_KEY_SYSFS)" ||
            fail "$T: identity 1: sysfs tls_key is '$TLS_KEY_SYSFS', not $K1"
        st_disconnect "$T identity 1" "$S"
    fi
    keyctl unlink "$K1" %:.nvme >/dev/null 2>&1
fi

if [ "$MODE" = nvmf ]; then
    say "OUR host against OUR target, kernel TLS on both ends"
    # io-check of 32 MiB in the background; meanwhile ss must show the TLS ULP
    # on both ends of its connections (host: dst port, target: src port), and
    # both logs must say the queues run on kernel TLS.
    KTLS0=$(grep -c 'TLS record layer: kernel TLS' $TARGET_LOG)
    echo "+ nvmf io-check -t tcp -a $ADDR -s $PORT -n $S -q $H --nsid 1 --bytes 32M --tls --tls-key K --tls-compat"
    "$NVMF" io-check -t tcp -a $ADDR -s $PORT -n "$S" -q "$H" --nsid 1 --bytes 32M --tls --tls-key "$K" --tls-compat \
        >/tmp/tls-own.out 2>&1 &
    OWN_PID=$!
    ou_h=0 ou_t=0 ou_w=0
    while kill -0 $OWN_PID 2>/dev/null && [ $ou_w -lt 600 ]; do
        h=$(ss -tnie dst $ADDR:$PORT 2>/dev/null | grep -c 'tcp-ulp-tls')
        t=$(ss -tnie src $ADDR:$PORT 2>/dev/null | grep -c 'tcp-ulp-tls')
        [ "$h" -gt $ou_h ] && ou_h=$h
        [ "$t" -gt $ou_t ] && ou_t=$t
        ou_w=$((ou_w+1)); sleep 0.2
    done
    wait $OWN_PID; own_rc=$?
    sed 's/^/    /' /tmp/tls-own.out | tail -n 12
    [ $own_rc -eq 0 ] && pass "$T: our host -> our target over TLS: io-check 32 MiB written and read back" ||
        fail "$T: our host -> our target: io-check rc=$own_rc"
    [ $ou_h -ge 2 ] && [ $ou_t -ge 2 ] &&
        pass "$T: our host -> our target: ss showed tcp-ulp-tls on $ou_h host and $ou_t target sockets" ||
        fail "$T: our host -> our target: ss showed tcp-ulp-tls on $ou_h host and $ou_t target sockets (want >= 2 each)"
    own_h=$(grep -c 'TLS record layer: kernel TLS' /tmp/tls-own.out)
    own_t=$(( $(grep -c 'TLS record layer: kernel TLS' $TARGET_LOG) - KTLS0 ))
    [ "$own_h" -ge 2 ] && [ "$own_t" -ge 2 ] &&
        pass "$T: our host -> our target: logs: $own_h host and $own_t target connections on kernel TLS" ||
        { fail "$T: our host -> our target: connections on kernel TLS: host $own_h, target $own_t"
          grep 'TLS record layer' /tmp/tls-own.out $TARGET_LOG | tail -n 6 | _st_log; }

    say "a host PSK from another configured key must be refused"
    nvme gen-tls-key --hostnqn="$H" --subsysnqn="$S" --insert >/tmp/tls-key2.out 2>&1   # replaces "NVMe0R01 H S"
    _st_log /tmp/tls-key2.out
    st_refused $T "nvme connect --tls with a PSK from another configured key" "$S" -t tcp -a $ADDR -s $PORT -q "$H" --tls
    grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $TLSHD_LOG
else
    skip "$T: wrong-PSK case (kernel mode: host and target share the .nvme keyring)"
fi

target_stop
kill $TLSHD_PID 2>/dev/null; wait $TLSHD_PID 2>/dev/null
for k in $(keyctl show %:.nvme 2>/dev/null | grep -F "$H" | awk '{print $1}'); do keyctl unlink "$k" %:.nvme >/dev/null 2>&1; done
echo "--- tlshd log (last 20 lines)"; tail -n 20 $TLSHD_LOG | _st_log
if [ -s $TARGET_LOG ]; then
    echo "--- target log (last 40 lines of $TARGET_LOG)"
    tail -n 40 $TARGET_LOG | sed 's/^/    target: /'
    grep -qi 'panicked' $TARGET_LOG && fail "$T: the target log has a panic"
    grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $TARGET_LOG
fi
dmesg | grep -iE 'nvme|tls|handshake' | tail -n 20 | sed 's/^/    dmesg: /'
exit 0
