#!/bin/sh
# kernel-host-vs-nvmf-target-auth.sh -- guest script (trixie track): the Linux
# kernel NVMe/TCP host (nvme-cli 2.13) against OUR target (`nvmf target`) with
# NVMe in-band authentication (DH-HMAC-CHAP).
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target-auth.sh
#
# Self-test against the kernel nvmet target, configured with the same keys
# (hosts/<hostnqn>/dhchap_*, allowed_hosts, attr_allow_any_host=0) instead of
# ours (no nvmf binary needed; proves this script now):
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --env NVMF_TARGET_MODE=kernel \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target-auth.sh
#
# Cases (keys from `nvme gen-dhchap-key`; a host key is transformed with the
# host NQN, a controller key with the subsystem NQN, as nvme-cli and the kernel
# do); for each: connect, dmesg must say what was negotiated ("qid 0:
# authenticated with hash H dhgroup G", and "qid 0: controller authenticated"
# when bidirectional), 8 MiB O_DIRECT dd write + read-back + cmp, disconnect:
#   A  hmac(sha256) ffdhe2048 bidirectional   host key --hmac=1, ctrl key --hmac=1
#   B  hmac(sha384) null      unidirectional  host key --hmac=2
#   C  hmac(sha512) ffdhe2048 unidirectional  host key --hmac=0 (untransformed)
#   D  hmac(sha512) null      bidirectional   host key --hmac=3, ctrl key --hmac=0
# Then, against D's configuration, must be REFUSED (connect fails, no
# controller): a wrong host key; the right host key with a wrong controller
# key; no key at all; another host NQN (with a key of its own).  Finally the
# right keys must connect again (a refusal must not wedge the target).
#
# ---------------------------------------------------------------------------
# ASSUMPTIONS about `nvmf` (the contract of issue "Secure channels"):
#   nvmf target --listen 127.0.0.1:4420 --memory 64M --subnqn NQN \
#       --host "HOSTNQN,dhchap-secret=DHHC-1:..:..:[,dhchap-ctrl-secret=DHHC-1:..:..:]
#               [,dhchap-hash=sha256|sha384|sha512][,dhchap-dhgroup=null|ffdhe2048|...]"
#     * --host is repeatable; when any --host is given, only those host NQNs
#       may connect (others are refused at Connect);
#     * dhchap-secret given: the host must authenticate (AUTHREQ in the Connect
#       response); dhchap-ctrl-secret given: the target also answers the host's
#       challenge (bidirectional); the controller key is transformed with the
#       SUBSYSTEM NQN (kernel/nvme-cli convention), the host key with the host NQN;
#     * dhchap-hash / dhchap-dhgroup: the only hash / DH group the target
#       selects (the kernel host offers all of them; dmesg names the choice);
#     * --memory = nsid 1; runs in the foreground; SIGTERM: exit 0 within 5 s;
#       listening within 20 s of the start;
#     * logs to stderr; on an authentication failure (wrong host key) it logs
#       a line containing "authentication failed" (and the reason);
#   run.sh checks `nvmf target --help` for --listen --memory --subnqn --host.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_connect st_refused st_disconnect st_io (PASS/FAIL "auth: ...")

MODE=${NVMF_TARGET_MODE:-nvmf}          # nvmf (ours) | kernel (nvmet self-test)
NVMF=${NVMF_BIN:-/extra/nvmf}
S=${NVMF_AUTH_NQN:-nqn.2024-01.io.nvmf-rs:auth}
ADDR=127.0.0.1
PORT=4420
MB=8
T=auth                                  # prefix of the PASS/FAIL lines
TARGET_LOG=/tmp/nvmf-target-auth.log
TARGET_PID=
nvmevm_hostnqn
H=$(cat /etc/nvme/hostnqn)
HD=$NVMET_CFS/hosts/$H
NS_FILE=/tmp/auth-ns1.img

say() { echo "=== $*"; }

# (ss: the trixie userland has iproute2 and no netstat, not even as a busybox applet)
listening() { ss -ltn 2>/dev/null | grep -qE "[:.]$PORT[[:space:]]"; }

# ------------------------------------------------------------------ target --
# nvmf mode: (re)start our target with one --host entry.
# kernel mode: nvmet subsystem S (nsid 1 = 64 MiB file), port 1, host entry
# hosts/H re-created for every configuration (so that a key left over from the
# previous case cannot linger), linked in allowed_hosts, attr_allow_any_host=0.
# target_config HASH DHGROUP HOSTKEY [CTRLKEY]
target_config() {
    tc_hash=$1 tc_grp=$2 tc_hk=$3 tc_ck=${4:-}
    if [ "$MODE" = kernel ]; then
        if [ ! -d "$NVMET_CFS/subsystems/$S" ]; then
            st_subsys "$S" 64 0 && st_port 1 tcp $ADDR $PORT && st_link "$S" 1 ||
                { fail "$T: nvmet subsystem/port setup"; return 1; }
            NS_FILE=$ST_FILE
        fi
        rm -f "$NVMET_CFS/subsystems/$S/allowed_hosts/$H"
        [ -d "$HD" ] && rmdir "$HD"
        mkdir "$HD" && ln -s "$HD" "$NVMET_CFS/subsystems/$S/allowed_hosts/$H" || { fail "$T: nvmet host entry"; return 1; }
        [ -e "$HD/dhchap_key" ] || { fail "$T: nvmet has no dhchap_key (CONFIG_NVME_TARGET_AUTH)"; return 1; }
        echo -n "$tc_hk" >"$HD/dhchap_key" || { fail "$T: nvmet refuses dhchap_key $tc_hk"; return 1; }
        [ -z "$tc_ck" ] || echo -n "$tc_ck" >"$HD/dhchap_ctrl_key" || { fail "$T: nvmet refuses dhchap_ctrl_key"; return 1; }
        echo -n "$tc_hash" >"$HD/dhchap_hash" && echo -n "$tc_grp" >"$HD/dhchap_dhgroup" &&
            [ "$(cat "$HD/dhchap_hash")" = "$tc_hash" ] && [ "$(cat "$HD/dhchap_dhgroup")" = "$tc_grp" ] ||
            { fail "$T: nvmet rejects hash $tc_hash / dhgroup $tc_grp"; return 1; }
        pass "$T: nvmet configured: host $H, hash $tc_hash, dhgroup $tc_grp, $([ -n "$tc_ck" ] && echo bidirectional || echo unidirectional)"
        return 0
    fi
    target_stop
    tc_h=${tc_hash#hmac(}; tc_h=${tc_h%)}
    tc_spec="$H,dhchap-secret=$tc_hk${tc_ck:+,dhchap-ctrl-secret=$tc_ck},dhchap-hash=$tc_h,dhchap-dhgroup=$tc_grp"
    echo "--- start: $NVMF target --listen $ADDR:$PORT --memory 64M --subnqn $S --host \"$tc_spec\"" >>$TARGET_LOG
    "$NVMF" target --listen "$ADDR:$PORT" --memory 64M --subnqn "$S" --host "$tc_spec" >>$TARGET_LOG 2>&1 &
    TARGET_PID=$!
    tc_w=0
    while [ $tc_w -lt 200 ] && ! listening; do
        kill -0 $TARGET_PID 2>/dev/null || break
        tc_w=$((tc_w+1)); sleep 0.1
    done
    if listening && kill -0 $TARGET_PID 2>/dev/null; then
        pass "$T: nvmf target listening (pid $TARGET_PID): --host with hash $tc_h, dhgroup $tc_grp, $([ -n "$tc_ck" ] && echo bidirectional || echo unidirectional)"
    else
        fail "$T: nvmf target --host ... not listening on $ADDR:$PORT"
        tail -n 20 $TARGET_LOG | sed 's/^/    target: /'
        kill -9 $TARGET_PID 2>/dev/null; wait $TARGET_PID 2>/dev/null
        TARGET_PID=; return 1
    fi
}

target_stop() {
    [ "$MODE" = kernel ] && return 0
    [ -n "$TARGET_PID" ] || return 0
    nvmevm_stop_target "$T" "$TARGET_PID"
    TARGET_PID=
    # the port must be free before the next start
    ts_w=0; while [ $ts_w -lt 50 ] && listening; do ts_w=$((ts_w+1)); sleep 0.1; done
}

target_teardown() {
    if [ "$MODE" = kernel ]; then
        st_cleanup "$S"
        [ -d "$HD" ] && rmdir "$HD"
    else
        target_stop
    fi
}

# authfail_count: lines of our target's log that report an authentication failure
authfail_count() { grep -ci 'authentication failed' $TARGET_LOG 2>/dev/null || true; }

# --------------------------------------------------------------------- cases --
# run_case NAME HASH DHGROUP HOST_HMAC [CTRL_HMAC]: fresh keys, configure the
# target, connect, check dmesg, dd/cmp, disconnect.  Leaves the keys in HK/CK.
run_case() {
    rc_name=$1 rc_hash=$2 rc_grp=$3
    HK=$(nvme gen-dhchap-key --hmac=$4 --nqn="$H") CK=""
    [ -z "${5:-}" ] || CK=$(nvme gen-dhchap-key --hmac=$5 --nqn="$S")
    case "$HK" in DHHC-1:0$4:*) ;; *) fail "$T: nvme gen-dhchap-key --hmac=$4 gave '$HK'"; return 1 ;; esac
    [ -z "${5:-}" ] || case "$CK" in DHHC-1:0$5:*) ;; *) fail "$T: nvme gen-dhchap-key --hmac=$5 gave '$CK'"; return 1 ;; esac
    rc_dir=$([ -n "$CK" ] && echo bidirectional || echo unidirectional)
    say "case $rc_name: $rc_hash $rc_grp $rc_dir (host key $HK${CK:+, ctrl key $CK})"
    target_config "$rc_hash" "$rc_grp" "$HK" "$CK" || return 1
    _st_dmesg_mark
    if st_connect $T "$rc_name $rc_hash/$rc_grp $rc_dir" "$S" -t tcp -a $ADDR -s $PORT -q "$H" \
            --dhchap-secret="$HK" ${CK:+--dhchap-ctrl-secret="$CK"}; then
        _st_dmesg_new | grep -iE 'authenticat' | sed 's/^/    dmesg: /'
        if _st_dmesg_new | grep -q "qid 0: authenticated with hash $rc_hash dhgroup $rc_grp"; then
            pass "$T: $rc_name: kernel host negotiated hash $rc_hash dhgroup $rc_grp"
        else
            fail "$T: $rc_name: no 'qid 0: authenticated with hash $rc_hash dhgroup $rc_grp' in dmesg"
        fi
        if [ -n "$CK" ]; then
            _st_dmesg_new | grep -q "qid 0: controller authenticated" &&
                pass "$T: $rc_name: the controller authenticated itself to the host (bidirectional)" ||
                fail "$T: $rc_name: no 'qid 0: controller authenticated' in dmesg"
        fi
        st_io "$T $rc_name" "$ST_DEV" $MB $([ "$MODE" = kernel ] && echo "$NS_FILE")
        st_disconnect "$T $rc_name" "$S"
    fi
}

# ---------------------------------------------------------------------- main --
say "kernel host (nvme-cli $(nvme version 2>/dev/null | sed -n 's/^nvme version \([^ ]*\).*/\1/p')) vs $MODE target with DH-HMAC-CHAP ($S on $ADDR:$PORT, host $H)"
case "$(nvme gen-dhchap-key --nqn=nqn.x:probe 2>/dev/null)" in DHHC-1:*) ;;
    *) fail "$T: this nvme-cli has no gen-dhchap-key (use run-vm.sh --kernel trixie)"; exit 1 ;; esac
if [ "$MODE" = nvmf ] && [ ! -x "$NVMF" ]; then fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; fi
rm -f $TARGET_LOG

run_case A "hmac(sha256)" ffdhe2048 1 1
run_case B "hmac(sha384)" null 2
run_case C "hmac(sha512)" ffdhe2048 0
run_case D "hmac(sha512)" null 3 0 || { target_teardown; exit 1; }

say "must be refused (target configured as in case D: $HK / $CK)"
BAD_HK=$(nvme gen-dhchap-key --hmac=3 --nqn="$H")
BAD_CK=$(nvme gen-dhchap-key --hmac=0 --nqn="$S")
af0=$(authfail_count)
st_refused $T "wrong host key" "$S" -t tcp -a $ADDR -s $PORT -q "$H" --dhchap-secret="$BAD_HK" --dhchap-ctrl-secret="$CK"
if [ "$MODE" = nvmf ]; then
    af1=$(authfail_count)
    [ "$af1" -gt "$af0" ] && pass "$T: target logged the failure: $(grep -i 'authentication failed' $TARGET_LOG | tail -n1)" ||
        fail "$T: no 'authentication failed' line in the target log after the wrong host key"
else
    dmesg | grep -E 'nvmet: .*(mismatch|failure)' | tail -n 2 | sed 's/^/    dmesg: /'
fi
st_refused $T "right host key, wrong controller key" "$S" -t tcp -a $ADDR -s $PORT -q "$H" --dhchap-secret="$HK" --dhchap-ctrl-secret="$BAD_CK"
st_refused $T "no key at all" "$S" -t tcp -a $ADDR -s $PORT -q "$H"
OTHER_H=nqn.2014-08.org.nvmexpress:uuid:$(cat /proc/sys/kernel/random/uuid)
OTHER_K=$(nvme gen-dhchap-key --hmac=1 --nqn="$OTHER_H")
st_refused $T "a host NQN that is not configured" "$S" -t tcp -a $ADDR -s $PORT -q "$OTHER_H" \
    --hostid="${OTHER_H##*:}" --dhchap-secret="$OTHER_K"

say "the right keys still connect after the refusals"
_st_dmesg_mark
if st_connect $T "D again after the refusals" "$S" -t tcp -a $ADDR -s $PORT -q "$H" --dhchap-secret="$HK" --dhchap-ctrl-secret="$CK"; then
    _st_dmesg_new | grep -q "qid 0: authenticated with hash hmac(sha512) dhgroup null" &&
        pass "$T: D again: authenticated with hash hmac(sha512) dhgroup null" || fail "$T: D again: not authenticated as configured"
    st_io "$T D again" "$ST_DEV" 4
    st_disconnect "$T D again" "$S"
fi

target_teardown
if [ -s $TARGET_LOG ]; then
    echo "--- target log (last 40 lines of $TARGET_LOG)"
    tail -n 40 $TARGET_LOG | sed 's/^/    target: /'
    grep -qi 'panicked' $TARGET_LOG && fail "$T: the target log has a panic"
    grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $TARGET_LOG
fi
dmesg | grep -iE 'nvme|nvmet' | grep -iE 'auth|fail|error' | tail -n 20 | sed 's/^/    dmesg: /'
exit 0
