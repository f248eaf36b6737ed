#!/bin/sh
# nvmf-host-vs-kernel-target-auth.sh -- guest script (trixie track): OUR host
# (`nvmf io-check`) against the Linux kernel nvmet target with NVMe in-band
# authentication (DH-HMAC-CHAP).
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/nvmf-host-vs-kernel-target-auth.sh
#
# Self-test with the KERNEL host (nvme connect + dd + cmp) in our host's place,
# same keys, same nvmet configuration (no nvmf binary needed):
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --env NVMF_HOST_MODE=kernel \
#       --script tests/interop/guest/nvmf-host-vs-kernel-target-auth.sh
#
# nvmet (as guest-selftest.sh's auth test): subsystem S (attr_allow_any_host=0,
# nsid 1 = 64 MiB file on tmpfs), port 1 tcp 127.0.0.1:4420,
# hosts/<hostnqn>/{dhchap_key,dhchap_ctrl_key,dhchap_hash,dhchap_dhgroup} (the
# host entry is re-created for every case), linked in allowed_hosts.  Cases:
#   A  hmac(sha256) ffdhe2048 bidirectional   host key --hmac=1, ctrl key --hmac=1
#   B  hmac(sha384) null      unidirectional  host key --hmac=2
#   C  hmac(sha512) ffdhe2048 unidirectional  host key --hmac=0
#   D  hmac(sha512) null      bidirectional   host key --hmac=3, ctrl key --hmac=0
# each: 4 MiB write + read-back + compare; nvmet must log "creating nvm
# controller .. for NQN <host> with DH-HMAC-CHAP"; the data must be in nvmet's
# backing file.  Against D's configuration must be REFUSED (non-zero exit, not a
# hang): a wrong host key; the right host key with a wrong controller key; no key.
#
# ---------------------------------------------------------------------------
# ASSUMPTIONS about `nvmf` (the contract of issue "Secure channels"):
#   nvmf io-check -t tcp -a 127.0.0.1 -s 4420 -n NQN -q HOSTNQN --nsid 1 --bytes 4M
#                 --dhchap-secret DHHC-1:..:..: [--dhchap-ctrl-secret DHHC-1:..:..:]
#                 --pattern-out FILE
#     * authenticates the admin queue AND every I/O queue (nvmet requires it
#       on each queue's Connect); with --dhchap-ctrl-secret it also
#       challenges the controller and fails if the controller's answer is wrong;
#       the controller key is transformed with the SUBSYSTEM NQN (as the kernel
#       and nvme-cli do), the host key with the host NQN;
#     * takes whatever hash / DH group nvmet selects (offers sha256, sha384,
#       sha512 and null, ffdhe2048..8192);
#     * exit 0 only if the data read back is identical; non-zero, within 120 s,
#       when refused (wrong key, wrong controller key, no key while the target
#       requires authentication);
#     * --pattern-out FILE writes the bytes it wrote (compared with nvmet's file).
#   run.sh checks `nvmf io-check --help` for -t -a -s -n -q --nsid --bytes
#   --pattern-out --dhchap-secret --dhchap-ctrl-secret.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_subsys st_port st_link st_cleanup st_connect st_refused st_io ...

MODE=${NVMF_HOST_MODE:-nvmf}            # nvmf (ours) | kernel (nvme-cli in our host's place)
NVMF=${NVMF_BIN:-/extra/nvmf}
S=${NVMF_AUTH_NQN:-nqn.2024-01.io.nvmf-rs:auth-host}
ADDR=127.0.0.1
PORT=4420
BYTES=4M
MB=4
T=auth-host
nvmevm_hostnqn
H=$(cat /etc/nvme/hostnqn)
HD=$NVMET_CFS/hosts/$H

say() { echo "=== $*"; }

# nvmet_config HASH DHGROUP HOSTKEY [CTRLKEY]
nvmet_config() {
    nc_hash=$1 nc_grp=$2 nc_hk=$3 nc_ck=${4:-}
    rm -f "$NVMET_CFS/subsystems/$S/allowed_hosts/$H"
    [ -d "$HD" ] && rmdir "$HD"
    mkdir "$HD" && ln -s "$HD" "$NVMET_CFS/subsystems/$S/allowed_hosts/$H" || { fail "$T: nvmet host entry"; return 1; }
    echo -n "$nc_hk" >"$HD/dhchap_key" || { fail "$T: nvmet refuses dhchap_key $nc_hk"; return 1; }
    [ -z "$nc_ck" ] || echo -n "$nc_ck" >"$HD/dhchap_ctrl_key" || { fail "$T: nvmet refuses dhchap_ctrl_key"; return 1; }
    echo -n "$nc_hash" >"$HD/dhchap_hash" && echo -n "$nc_grp" >"$HD/dhchap_dhgroup" &&
        [ "$(cat "$HD/dhchap_hash")" = "$nc_hash" ] && [ "$(cat "$HD/dhchap_dhgroup")" = "$nc_grp" ] ||
        { fail "$T: nvmet rejects hash $nc_hash / dhgroup $nc_grp"; return 1; }
    pass "$T: nvmet: host $H, hash $nc_hash, dhgroup $nc_grp, $([ -n "$nc_ck" ] && echo bidirectional || echo unidirectional)"
}

# host_io DESC KEY-OPTIONS...: our io-check (or the kernel host) writes, reads
# back and compares BYTES; then the data must be in nvmet's backing file
host_io() {
    hi_d=$1; shift
    dd if=/dev/zero of="$ST_FILE" bs=1M count=$MB conv=notrunc 2>/dev/null
    if [ "$MODE" = kernel ]; then
        st_connect $T "$hi_d" "$S" -t tcp -a $ADDR -s $PORT -q "$H" "$@" || return 1
        st_io "$T $hi_d" "$ST_DEV" $MB "$ST_FILE"
        st_disconnect "$T $hi_d" "$S"
        return 0
    fi
    rm -f /tmp/auth-pattern.out
    echo "+ nvmf io-check -n $S -q $H --nsid 1 --bytes $BYTES $*"
    timeout 120 "$NVMF" io-check -t tcp -a $ADDR -s $PORT -n "$S" -q "$H" --nsid 1 --bytes $BYTES \
        "$@" --pattern-out /tmp/auth-pattern.out >/tmp/auth-io.out 2>&1
    hi_rc=$?
    sed 's/^/    /' /tmp/auth-io.out
    if [ $hi_rc -ne 0 ]; then fail "$T: $hi_d: nvmf io-check rc=$hi_rc"; return 1; fi
    pass "$T: $hi_d: nvmf io-check wrote and read back $BYTES"
    dd if="$ST_FILE" of=/tmp/auth-backing bs=1M count=$MB 2>/dev/null
    if [ -s /tmp/auth-pattern.out ] && cmp -s /tmp/auth-pattern.out /tmp/auth-backing; then
        pass "$T: $hi_d: nvmet's backing file holds the pattern our host wrote"
    else
        fail "$T: $hi_d: nvmet's backing file differs from the pattern ($(wc -c </tmp/auth-pattern.out 2>/dev/null) bytes)"
    fi
    rm -f /tmp/auth-backing /tmp/auth-pattern.out
}

# host_refused DESC KEY-OPTIONS...
host_refused() {
    hr_d=$1; shift
    if [ "$MODE" = kernel ]; then
        st_refused $T "$hr_d" "$S" -t tcp -a $ADDR -s $PORT -q "$H" "$@"; return
    fi
    echo "+ (must fail) nvmf io-check -n $S -q $H $*"
    timeout 120 "$NVMF" io-check -t tcp -a $ADDR -s $PORT -n "$S" -q "$H" --nsid 1 --bytes 4k "$@" >/tmp/auth-io.out 2>&1
    hr_rc=$?
    sed 's/^/    /' /tmp/auth-io.out
    if [ $hr_rc -eq 0 ]; then fail "$T: $hr_d: NOT refused (io-check exit 0)"
    elif [ $hr_rc -eq 124 ] || [ $hr_rc -eq 143 ]; then fail "$T: $hr_d: io-check hung (timeout 120 s)"
    else pass "$T: $hr_d: refused (rc=$hr_rc): $(grep -v '^$' /tmp/auth-io.out | tail -n1 | head -c 200)"; fi
}

# run_case NAME HASH DHGROUP HOST_HMAC [CTRL_HMAC]  (keys left in HK / CK)
run_case() {
    rc_name=$1 rc_hash=$2 rc_grp=$3
    HK=$(nvme gen-dhchap-key --hmac=$4 --nqn="$H") CK=""
    [ -z "${5:-}" ] || CK=$(nvme gen-dhchap-key --hmac=$5 --nqn="$S")
    case "$HK" in DHHC-1:0$4:*) ;; *) fail "$T: nvme gen-dhchap-key --hmac=$4 gave '$HK'"; return 1 ;; esac
    rc_dir=$([ -n "$CK" ] && echo bidirectional || echo unidirectional)
    say "case $rc_name: $rc_hash $rc_grp $rc_dir (host key $HK${CK:+, ctrl key $CK})"
    nvmet_config "$rc_hash" "$rc_grp" "$HK" "$CK" || return 1
    _st_dmesg_mark
    host_io "$rc_name $rc_hash/$rc_grp $rc_dir" --dhchap-secret "$HK" ${CK:+--dhchap-ctrl-secret "$CK"} || return 1
    rc_n=$(_st_dmesg_new | grep -c "nvmet: creating nvm controller .* for subsystem $S for NQN $H with DH-HMAC-CHAP")
    [ "$rc_n" -ge 1 ] && pass "$T: $rc_name: nvmet created the controller with DH-HMAC-CHAP" ||
        fail "$T: $rc_name: no 'creating nvm controller ... with DH-HMAC-CHAP' in dmesg"
    [ "$MODE" = kernel ] && { _st_dmesg_new | grep -q "authenticated with hash $rc_hash dhgroup $rc_grp" &&
        pass "$T: $rc_name: kernel host negotiated $rc_hash / $rc_grp" || fail "$T: $rc_name: kernel host did not negotiate $rc_hash / $rc_grp"; }
    return 0
}

# ---------------------------------------------------------------------- main --
say "$MODE host vs kernel nvmet with DH-HMAC-CHAP ($S on $ADDR:$PORT, host $H)"
case "$(nvme gen-dhchap-key --nqn=nqn.x:probe 2>/dev/null)" in DHHC-1:*) ;;
    *) fail "$T: this nvme-cli has no gen-dhchap-key (use run-vm.sh --kernel trixie)"; exit 1 ;; esac
if [ "$MODE" = nvmf ]; then
    [ -x "$NVMF" ] || { fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; }
    "$NVMF" --version 2>&1 | sed 's/^/    /'
fi
st_subsys "$S" 64 0 && st_port 1 tcp $ADDR $PORT && st_link "$S" 1 || { fail "$T: nvmet subsystem/port setup"; st_cleanup "$S"; exit 1; }
mkdir "$HD" 2>/dev/null
[ -e "$HD/dhchap_key" ] || { fail "$T: nvmet has no dhchap_key (CONFIG_NVME_TARGET_AUTH)"; st_cleanup "$S"; rmdir "$HD"; exit 1; }
pass "$T: nvmet subsystem $S (attr_allow_any_host=$(cat $NVMET_CFS/subsystems/$S/attr_allow_any_host)) on tcp $ADDR:$PORT"

run_case A "hmac(sha256)" ffdhe2048 1 1
run_case B "hmac(sha384)" null 2
run_case C "hmac(sha512)" ffdhe2048 0
if run_case D "hmac(sha512)" null 3 0; then
    say "must be refused (nvmet configured as in case D)"
    BAD_HK=$(nvme gen-dhchap-key --hmac=3 --nqn="$H")
    BAD_CK=$(nvme gen-dhchap-key --hmac=0 --nqn="$S")
    host_refused "wrong host key" --dhchap-secret "$BAD_HK" --dhchap-ctrl-secret "$CK"
    host_refused "right host key, wrong controller key" --dhchap-secret "$HK" --dhchap-ctrl-secret "$BAD_CK"
    host_refused "no key while nvmet requires authentication"
    dmesg | grep -E 'nvmet: .*(mismatch|failure|failed)' | tail -n 4 | sed 's/^/    dmesg: /'
fi

st_cleanup "$S"
rm -f "$NVMET_CFS/subsystems/$S/allowed_hosts/$H" 2>/dev/null
[ -d "$HD" ] && rmdir "$HD"
exit 0
