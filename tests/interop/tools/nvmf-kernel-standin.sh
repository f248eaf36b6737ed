#!/bin/sh
# tests/interop/tools/nvmf-kernel-standin.sh -- a STAND-IN for the `nvmf` CLI
# (NOT the project's binary, never what CI tests): it implements the "Secure
# channels" contract flags of the auth/tls guest scripts with the guest kernel
# (nvmet for `target`, nvme-cli + dd for `io-check`/`discover`), so the scripts'
# nvmf-mode paths (target start/stop, SIGTERM exit 0, "authentication failed"
# log line, io-check exit codes, --pattern-out) can be exercised before the
# Rust side exists:
#
#   NVMF_BIN=$PWD/tests/interop/tools/nvmf-kernel-standin.sh tests/interop/run.sh auth tls
#
# Known limits: host and "target" share one .nvme keyring, so the two
# wrong-PSK cases of the tls suite FAIL with it (NOT refused); for TLS the
# stand-in target learns the host NQN from the guest's /etc/nvme/hostnqn.
CFS=/sys/kernel/config/nvmet
verb=${1:-}; shift 2>/dev/null
case "$verb" in
--version) echo "nvmf stand-in 0"; exit 0 ;;
target)
    case " $* " in *" --help "*) echo "  --listen --memory --subnqn --host --tls --tls-key --tls-compat --file"; exit 0 ;; esac
    L= M= S= TLS=0 K= HOSTS=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --listen) L=$2; shift 2 ;; --memory) M=$2; shift 2 ;; --subnqn) S=$2; shift 2 ;;
            --host) HOSTS="$HOSTS
$2"; shift 2 ;;
            --tls) TLS=1; shift ;; --tls-key) K=$2; shift 2 ;; --tls-compat) shift ;;
            *) echo "stand-in: unknown $1" >&2; exit 2 ;;
        esac
    done
    A=${L%:*} P=${L##*:}
    F=/tmp/standin-ns.img; truncate -s ${M%M}M $F
    sd=$CFS/subsystems/$S
    mkdir $sd || exit 1
    any=1; [ -n "$HOSTS" ] && any=0
    echo $any >$sd/attr_allow_any_host
    mkdir $sd/namespaces/1; echo -n $F >$sd/namespaces/1/device_path; echo 1 >$sd/namespaces/1/buffered_io; echo 1 >$sd/namespaces/1/enable
    echo "$HOSTS" | while IFS= read -r spec; do
        [ -n "$spec" ] || continue
        h=${spec%%,*}; hd=$CFS/hosts/$h
        mkdir $hd 2>/dev/null
        rest=${spec#*,}
        IFS=,; for kv in $rest; do
            case $kv in
                dhchap-secret=*) echo -n "${kv#*=}" >$hd/dhchap_key ;;
                dhchap-ctrl-secret=*) echo -n "${kv#*=}" >$hd/dhchap_ctrl_key ;;
                dhchap-hash=*) echo -n "hmac(${kv#*=})" >$hd/dhchap_hash ;;
                dhchap-dhgroup=*) echo -n "${kv#*=}" >$hd/dhchap_dhgroup ;;
            esac
        done; unset IFS
        ln -s $hd $sd/allowed_hosts/$h
    done
    pd=$CFS/ports/7; mkdir $pd
    echo -n tcp >$pd/addr_trtype; echo -n ipv4 >$pd/addr_adrfam; echo -n $A >$pd/addr_traddr; echo -n $P >$pd/addr_trsvcid
    if [ $TLS = 1 ]; then
        echo -n tls1.3 >$pd/addr_tsas; echo -n required >$pd/addr_treq
        H=$(cat /etc/nvme/hostnqn)
        nvme check-tls-key --keydata="$K" --hostnqn="$H" --subsysnqn="$S" --insert >&2
        nvme check-tls-key --keydata="$K" --hostnqn="$H" --subsysnqn=nqn.2014-08.org.nvmexpress.discovery --insert >&2
    fi
    ln -s $sd $pd/subsystems/$S
    echo "stand-in target: $S on $L (tls=$TLS)" >&2
    n0=$(dmesg | wc -l)
    ( while :; do
        dmesg | tail -n +$((n0+1)) | grep -E 'nvmet: .*(mismatch|failure)' | sed 's/^/authentication failed: /' >&2
        n0=$(dmesg | wc -l); sleep 0.3
      done ) &
    WP=$!
    stop() {
        kill $WP 2>/dev/null
        rm -f $pd/subsystems/$S; rmdir $pd
        for l in $sd/allowed_hosts/*; do [ -L "$l" ] && { h=$(basename $l); rm -f $l; rmdir $CFS/hosts/$h 2>/dev/null; }; done
        echo 0 >$sd/namespaces/1/enable; rmdir $sd/namespaces/1; rmdir $sd
        echo "stand-in target: stopped" >&2
        exit 0
    }
    trap stop TERM INT
    while :; do sleep 1 & wait $!; done ;;
io-check|discover)
    case " $* " in *" --help "*) echo "  -t -a -s -n -q -o -g -G -i --nsid --bytes --pattern-out --dhchap-secret --dhchap-ctrl-secret --tls --tls-key --tls-compat --offset"; exit 0 ;; esac
    A= P= S= H= B=4M PO= OPTS=""
    while [ $# -gt 0 ]; do
        case "$1" in
            -t) shift 2 ;; -a) A=$2; shift 2 ;; -s) P=$2; shift 2 ;; -n) S=$2; shift 2 ;; -q) H=$2; shift 2 ;;
            --nsid) shift 2 ;; --bytes) B=$2; shift 2 ;; --pattern-out) PO=$2; shift 2 ;;
            --dhchap-secret) OPTS="$OPTS --dhchap-secret=$2"; shift 2 ;;
            --dhchap-ctrl-secret) OPTS="$OPTS --dhchap-ctrl-secret=$2"; shift 2 ;;
            --tls) OPTS="$OPTS --tls"; shift ;; --tls-key) shift 2 ;; --tls-compat) shift ;;
            *) echo "stand-in: unknown $1" >&2; exit 2 ;;
        esac
    done
    if [ "$verb" = discover ]; then exec nvme discover -t tcp -a $A -s $P -q $H $OPTS; fi
    nvme connect -t tcp -a $A -s $P -n $S -q $H $OPTS || exit 1
    . /lib/nvme-vm/lib.sh
    dev=$(nvmevm_wait_ns_dev $S 1) || { nvme disconnect -n $S; exit 1; }
    mb=${B%M}; [ "$B" = 4k ] && mb=1
    dd if=/dev/urandom of=/tmp/standin.pat bs=1M count=$mb 2>/dev/null
    dd if=/tmp/standin.pat of=$dev bs=1M count=$mb oflag=direct conv=fsync 2>/dev/null &&
        dd if=$dev of=/tmp/standin.rb bs=1M count=$mb iflag=direct 2>/dev/null && cmp /tmp/standin.pat /tmp/standin.rb; rc=$?
    [ -n "$PO" ] && cp /tmp/standin.pat "$PO"
    nvme disconnect -n $S >/dev/null
    echo "stand-in io-check: rc=$rc"
    exit $rc ;;
*) echo "stand-in: no verb $verb" >&2; exit 2 ;;
esac
