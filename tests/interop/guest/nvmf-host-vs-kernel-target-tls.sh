#!/bin/sh
# nvmf-host-vs-kernel-target-tls.sh -- guest script (trixie track): OUR host
# (`nvmf discover`, `nvmf io-check` with --tls) against the Linux kernel nvmet
# target on a TLS 1.3-required port, tlshd serving the target's handshakes.
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/nvmf-host-vs-kernel-target-tls.sh
#
# Self-test with the KERNEL host (nvme discover/connect --tls + dd + cmp) in our
# host's place (no nvmf binary needed):
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --env NVMF_HOST_MODE=kernel \
#       --script tests/interop/guest/nvmf-host-vs-kernel-target-tls.sh
#
# nvmet: subsystem S (any host, nsid 1 = 64 MiB file), port 1 tcp
# 127.0.0.1:4420 addr_tsas=tls1.3 addr_treq=required; tlshd -s; configured PSK K
# from `nvme gen-tls-key --hostnqn H --subsysnqn S --insert` (and inserted for
# the discovery NQN with `nvme check-tls-key --keydata=K --insert`), which is
# what nvmet's handshake (tlshd) looks up by the host's PSK identity.  Checks:
#   * discovery with --tls lists S;
#   * write + read-back + compare of 4 MiB with --tls (and the data in nvmet's
#     backing file), tlshd logs the target-side handshakes;
#   * refused (non-zero exit, no hang): without --tls; (our host only) with a
#     PSK from another configured key.
#
# ---------------------------------------------------------------------------
# ASSUMPTIONS about `nvmf` (the contract of issue "Secure channels"):
#   nvmf discover -t tcp -a 127.0.0.1 -s 4420 -q HOSTNQN --tls --tls-key KEY
#   nvmf io-check -t tcp -a 127.0.0.1 -s 4420 -n NQN -q HOSTNQN --nsid 1 --bytes 4M
#                 --tls --tls-key NVMeTLSkey-1:01:...: [--pattern-out FILE]
#     * --tls: every queue (admin and I/O; discovery too) starts with a TLS 1.3
#       handshake (PSK, TLS_AES_128_GCM_SHA256) before the ICReq;
#     * --tls-key: the configured PSK (interchange format); the host derives
#       the retained PSK with its host NQN and offers identity "NVMe0R01
#       <hostnqn> <subnqn>" (version 0, which nvmet 6.12 / tlshd look up; for
#       SHA-384 keys NVMe0R02) -- the subnqn being the discovery NQN for discover;
#     * exit 0 only on success; non-zero within 120 s when refused (no --tls on
#       a TLS-required port; a PSK nvmet does not have);
#     * discover prints each entry's subsystem NQN.
#   run.sh checks `nvmf io-check --help` for -t -a -s -n -q --nsid --bytes
#   --pattern-out --tls --tls-key and `nvmf discover --help` for -t -a -s -q --tls --tls-key.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_subsys st_port st_link st_cleanup st_connect st_refused st_io ...

MODE=${NVMF_HOST_MODE:-nvmf}            # nvmf (ours) | kernel (nvme-cli in our host's place)
NVMF=${NVMF_BIN:-/extra/nvmf}
S=${NVMF_TLS_NQN:-nqn.2024-01.io.nvmf-rs:tls-host}
DISC=nqn.2014-08.org.nvmexpress.discovery
ADDR=127.0.0.1
PORT=4420
BYTES=4M
MB=4
T=tls-host
TLSHD_LOG=/tmp/tlshd-host.log
nvmevm_hostnqn
H=$(cat /etc/nvme/hostnqn)

say() { echo "=== $*"; }
tlshd_ok() { grep -c -i 'handshake with .* was successful' $TLSHD_LOG 2>/dev/null || true; }
key_serial() { keyctl show %:.nvme 2>/dev/null | grep -F "psk: $1" | awk '{print $1}' | head -n1; }

# nvmf_run TIMEOUT VERB ARGS...: our CLI, output in /tmp/tlsh.out, rc in NR
nvmf_run() {
    nr_t=$1; shift
    echo "+ nvmf $*"
    timeout "$nr_t" "$NVMF" "$@" >/tmp/tlsh.out 2>&1; NR=$?
    sed 's/^/    /' /tmp/tlsh.out
}

# refused DESC ARGS...: io-check (or nvme connect) must fail, not hang
refused() {
    rf_d=$1; shift
    if [ "$MODE" = kernel ]; then st_refused $T "$rf_d" "$S" -t tcp -a $ADDR -s $PORT -q "$H" "$@"; return; fi
    nvmf_run 120 io-check -t tcp -a $ADDR -s $PORT -n "$S" -q "$H" --nsid 1 --bytes 4k "$@"
    if [ $NR -eq 0 ]; then fail "$T: $rf_d: NOT refused (exit 0)"
    elif [ $NR -eq 124 ] || [ $NR -eq 143 ]; then fail "$T: $rf_d: hung (timeout 120 s)"
    else pass "$T: $rf_d: refused (rc=$NR): $(grep -v '^$' /tmp/tlsh.out | tail -n1 | head -c 200)"; fi
}

# ---------------------------------------------------------------------- main --
say "$MODE host vs kernel nvmet with TLS ($S on $ADDR:$PORT, host $H)"
st_need $T nvme tlshd keyctl || exit 1
if [ "$MODE" = nvmf ]; then
    [ -x "$NVMF" ] || { fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; }
    "$NVMF" --version 2>&1 | sed 's/^/    /'
fi
if ! { st_subsys "$S" 64 1 && st_port 1 tcp $ADDR $PORT tls1.3 required && st_link "$S" 1; }; then
    fail "$T: nvmet subsystem + TLS port"; dmesg | tail -n 3 | _st_log; st_cleanup "$S"; exit 1
fi
pass "$T: nvmet port 1 $ADDR:$PORT addr_tsas=$(cat $NVMET_CFS/ports/1/addr_tsas) addr_treq=$(cat $NVMET_CFS/ports/1/addr_treq)"

[ -s /etc/tlshd.conf ] || printf '[debug]\nloglevel=0\ntls=0\nnl=0\n[authenticate]\n[authenticate.client]\n[authenticate.server]\n' >/etc/tlshd.conf
rm -f $TLSHD_LOG
tlshd -s >$TLSHD_LOG 2>&1 &
TLSHD_PID=$!
sleep 1
kill -0 $TLSHD_PID 2>/dev/null && pass "$T: tlshd running (pid $TLSHD_PID)" || { fail "$T: tlshd exited: $(cat $TLSHD_LOG)"; st_cleanup "$S"; exit 1; }

nvme gen-tls-key --hostnqn="$H" --subsysnqn="$S" --insert >/tmp/tlsh-key.out 2>&1; k_rc=$?
_st_log /tmp/tlsh-key.out
K=$(grep -o '^NVMeTLSkey-1:0[12]:[^ ]*:$' /tmp/tlsh-key.out | head -n1)
nvme check-tls-key --keydata="$K" --hostnqn="$H" --subsysnqn="$DISC" --insert 2>&1 | _st_log
keyctl show %:.nvme 2>&1 | _st_log
if [ $k_rc -eq 0 ] && [ -n "$K" ] && [ -n "$(key_serial "NVMe0R01 $H $S")" ]; then
    pass "$T: configured PSK $K; retained PSK 'NVMe0R01 H S' in .nvme for nvmet's handshake"
else
    fail "$T: nvme gen-tls-key --insert (rc=$k_rc, key '$K')"; kill $TLSHD_PID; st_cleanup "$S"; exit 1
fi

say "discovery with TLS"
if [ "$MODE" = kernel ]; then
    timeout 120 nvme discover -t tcp -a $ADDR -s $PORT -q "$H" --tls >/tmp/tlsh.out 2>&1; NR=$?
    _st_log /tmp/tlsh.out
    DESC="nvme discover --tls"
else
    nvmf_run 120 discover -t tcp -a $ADDR -s $PORT -q "$H" --tls --tls-key "$K" --tls-compat
    DESC="nvmf discover --tls --tls-key"
fi
[ $NR -eq 0 ] && grep -q "$S" /tmp/tlsh.out && pass "$T: $DESC lists $S" || fail "$T: $DESC (rc=$NR) does not list $S"

say "I/O with TLS"
HS0=$(tlshd_ok)
dd if=/dev/zero of="$ST_FILE" bs=1M count=$MB conv=notrunc 2>/dev/null
if [ "$MODE" = kernel ]; then
    if st_connect $T "nvme connect --tls" "$S" -t tcp -a $ADDR -s $PORT -q "$H" --tls; then
        st_io "$T --tls" "$ST_DEV" $MB "$ST_FILE"
        st_disconnect "$T --tls" "$S"
    fi
else
    rm -f /tmp/tlsh-pattern.out
    nvmf_run 180 io-check -t tcp -a $ADDR -s $PORT -n "$S" -q "$H" --nsid 1 --bytes $BYTES --tls --tls-key "$K" --tls-compat \
        --pattern-out /tmp/tlsh-pattern.out
    if [ $NR -eq 0 ]; then
        pass "$T: nvmf io-check --tls --tls-key: $BYTES written and read back"
        # our host hands each session to the kernel's TLS record layer (kTLS)
        kt=$(grep -c 'TLS record layer: kernel TLS' /tmp/tlsh.out)
        [ "$kt" -ge 2 ] && pass "$T: our host's $kt queues ran on kernel TLS (log)" ||
            fail "$T: our host's queues on kernel TLS: $kt (want >= 2): $(grep 'TLS record layer' /tmp/tlsh.out | head -n 2)"
        dd if="$ST_FILE" of=/tmp/tlsh-backing bs=1M count=$MB 2>/dev/null
        [ -s /tmp/tlsh-pattern.out ] && cmp -s /tmp/tlsh-pattern.out /tmp/tlsh-backing &&
            pass "$T: nvmet's backing file holds the pattern our host wrote" ||
            fail "$T: nvmet's backing file differs from the pattern"
        rm -f /tmp/tlsh-backing /tmp/tlsh-pattern.out
    else
        fail "$T: nvmf io-check --tls --tls-key rc=$NR"
    fi
fi
HS1=$(tlshd_ok)
[ "$HS1" -gt "$HS0" ] && pass "$T: tlshd: $((HS1 - HS0)) successful handshake(s) during the I/O check" ||
    { fail "$T: tlshd logged no successful handshake during the I/O check"; _st_log $TLSHD_LOG; }

say "must be refused"
refused "no --tls on the TLS-required port"
if [ "$MODE" = nvmf ]; then
    K2=$(nvme gen-tls-key --hostnqn="$H" --subsysnqn="$S" 2>/dev/null | grep -o '^NVMeTLSkey-1:0[12]:[^ ]*:$' | head -n1)
    refused "--tls with a PSK from another configured key" --tls --tls-key "$K2"
else
    skip "$T: wrong-PSK case (kernel mode: host and target share the .nvme keyring)"
fi
dmesg | grep -iE 'nvmet|tls|handshake' | tail -n 8 | sed 's/^/    dmesg: /'

kill $TLSHD_PID 2>/dev/null; wait $TLSHD_PID 2>/dev/null
echo "--- tlshd log (last 20 lines)"; tail -n 20 $TLSHD_LOG | _st_log
for k in $(keyctl show %:.nvme 2>/dev/null | grep -F "$H" | awk '{print $1}'); do keyctl unlink "$k" %:.nvme >/dev/null 2>&1; done
st_cleanup "$S"
exit 0
