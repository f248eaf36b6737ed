#!/bin/bash
# tests/interop/run.sh -- Linux-kernel interop tests of nvmf-rs, in a QEMU guest.
#
# usage: tests/interop/run.sh [options] [SUITE...]
#
# suites:
#   selftest  the kernel host against the kernel nvmet target, driven by
#             guest/kernel-host-vs-nvmf-target.sh in NVMF_TARGET_MODE=kernel:
#             proves the harness, the guest kernel and the script itself
#             (needs no nvmf binary)
#   target    the kernel host (nvme-cli) against OUR target: `nvmf target`
#             (guest/kernel-host-vs-nvmf-target.sh)
#   host      OUR host (`nvmf discover`, `nvmf io-check`) against the kernel
#             nvmet target (guest/nvmf-host-vs-kernel-target.sh)
#   netfault  OUR target in a guest netns behind a veth pair with netem (delay,
#             jitter, loss, reordering) and a cut link, with the kernel host and
#             ours (io-check; connect + write/read through the host daemon)
#             (guest/netfault.sh)
#   authself  DH-HMAC-CHAP, kernel to kernel (trixie track): the two auth guest
#             scripts with the kernel host / nvmet in our place
#             (NVMF_TARGET_MODE=kernel, NVMF_HOST_MODE=kernel); needs no nvmf
#   auth      DH-HMAC-CHAP (trixie track): the kernel host against OUR target
#             (`nvmf target --host ...,dhchap-secret=...`) and OUR host
#             (`nvmf io-check --dhchap-secret ...`) against nvmet
#             (guest/kernel-host-vs-nvmf-target-auth.sh, guest/nvmf-host-vs-kernel-target-auth.sh)
#   tlsself   NVMe/TCP TLS 1.3 PSK, kernel to kernel (trixie track, tlshd)
#   tls       TLS (trixie track): the kernel host against OUR target
#             (`nvmf target --tls --tls-key`) and OUR host (`nvmf io-check --tls
#             --tls-key`) against nvmet (guest/kernel-host-vs-nvmf-target-tls.sh,
#             guest/nvmf-host-vs-kernel-target-tls.sh)
#   resv      reservations (trixie track): two kernel hosts (two `nvme connect`
#             with their own --hostnqn/--hostid) against OUR target: resv-register,
#             resv-acquire, conflicting write, resv-report, release
#             (guest/kernel-hosts-resv.sh)
#   block     OUR host's block devices (trixie track, `nvmf connect --block`, the
#             kernel's NBD driver) against nvmet and OUR target
#             (guest/nvmf-host-block.sh)
#   ana       ANA multipath (trixie track, native multipath): the kernel host
#             against OUR target on two ports, ANA state flipped live by
#             SIGHUP, then an HA pair of two targets with one killed mid-writes
#             (guest/kernel-host-vs-nvmf-target-ana.sh)
#   ioset     the kernel host (nvme-cli 2.13, trixie track) against OUR target:
#             nvme verify / copy / compare, checked with dd and cmp
#             (guest/kernel-host-vs-nvmf-target-ioset.sh)
#   nvmetcli  a kernel nvmet configuration saved in nvmetcli's format, imported
#             and served by OUR target (`nvmf import-nvmetcli`, `nvmf target
#             --import-nvmetcli`): same data, serial, UUID, hosts, ANA states
#             for the kernel host (guest/nvmetcli-import.sh)
#   disco     discovery (trixie track): the kernel host against OUR target:
#             current discovery entry, referrals followed by nvme connect-all,
#             nvme discover -p and the Discovery Log Change notice on a reload
#             (guest/kernel-host-discovery.sh)
#   rdmaverbs nvmf-rdma (crates/rdma, trixie track): the rdma-pingpong example
#             (cargo build --release -p nvmf-rdma --example rdma-pingpong) does
#             a real RDMA CM + verbs round trip over soft-RoCE (rxe0 on dummy0)
#   mpath     OUR host's multipath block devices (trixie track): `nvmf connect
#             --block` to two ports / an HA pair of OUR target -> one /dev/nbdN;
#             fio verify while a path goes ANA inaccessible / its target dies
#             (guest/nvmf-host-multipath.sh)
#   metrics   the kernel host against OUR target with --metrics, read by `nvmf stats`
#             (guest/kernel-host-vs-nvmf-target-metrics.sh)
#   rdma      NVMe/RDMA (trixie track, soft-RoCE rxe): the kernel nvme-rdma host
#             against OUR target on rdma://10.99.0.1:4420: discover, connect,
#             dd/cmp, in-capsule writes, mkfs; fio figures against nvmet-rdma
#             (guest/kernel-host-vs-nvmf-target-rdma.sh); then a bad NVMe/RDMA
#             host (examples/rdma-hostile, built here) on :4430 (guest/rdma-hostile.sh)
#   all       selftest target host netfault authself auth tlsself tls block resv ana ioset nvmetcli disco mpath metrics rdma rdmaverbs (default)
#
# options:
#   --no-build        do not run cargo build; use $NVMF_BIN or target/release/nvmf
#   --capture         tcpdump the NVMe/TCP traffic in the guest; the pcap lands in
#                     target/interop/<suite>/capture.pcap and is checked with tshark
#                     (check-capture.sh; --auth for auth/authself; check-capture-tls.sh
#                     for tls/tlsself: TLS 1.3 records only)
#   --require         a suite whose nvmf verbs are not implemented yet FAILs
#                     instead of being SKIPped (also: NVMF_INTEROP_REQUIRE=1)
#   -- ARGS...        passed to run-vm.sh (e.g. -- --kernel backports)
#
# The nvmf binary is built with `cargo build --release -p nvmf-cli`.  A suite
# is SKIPped (not failed) while the binary does not implement the verbs it
# uses, detected from `nvmf VERB --help` (the flags the guest scripts use must
# appear there); see README.md "What the guest scripts assume about nvmf".
#
# Output: one PASS/FAIL/SKIP line per suite, then "interop: N passed, N failed,
# N skipped".  Exit 1 if any suite failed.  On failure the guest's FAIL lines
# and the tail of the console log are printed.  Per-suite logs and files the
# guest copied out: target/interop/<suite>/.  A failed suite is run once more
# (NVMF_INTEROP_RETRIES=N for N more tries, 0 for none); a pass on a later try
# says so in its line, and every failed try's checks are listed in a digest
# printed before the last line and kept in target/interop/digest.txt.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=$ROOT/target/interop

BUILD=1 CAPTURE=0 REQUIRE=${NVMF_INTEROP_REQUIRE:-0}
SUITES=() VMARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0; shift ;;
        --capture) CAPTURE=1; shift ;;
        --require) REQUIRE=1; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; VMARGS=("$@"); break ;;
        selftest|target|host|netfault|auth|authself|tls|tlsself|block|resv|ana|ioset|nvmetcli|disco|mpath|metrics|rdma|rdmaverbs) SUITES+=("$1"); shift ;;
        all) SUITES+=(selftest target host netfault authself auth tlsself tls block resv ana ioset nvmetcli disco mpath metrics rdma rdmaverbs); shift ;;
        *) echo "run.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#SUITES[@]} -gt 0 ] || SUITES=(selftest target host netfault authself auth tlsself tls block resv ana ioset nvmetcli disco mpath metrics rdma rdmaverbs)

NVMF=${NVMF_BIN:-$ROOT/target/release/nvmf}
RETRIES=${NVMF_INTEROP_RETRIES:-1}
NPASS=0 NFAIL=0 NSKIP=0
RESULTS=() DIGEST=()
result() {   # result PASS|FAIL|SKIP SUITE MSG
    RESULTS+=("$1: interop $2: $3")
    echo "$1: interop $2: $3"
    case $1 in PASS) NPASS=$((NPASS+1)) ;; FAIL) NFAIL=$((NFAIL+1)) ;; SKIP) NSKIP=$((NSKIP+1)) ;; esac
}

need_nvmf() {
    local s
    for s in target host netfault auth tls block resv ana ioset nvmetcli disco mpath metrics rdma; do [[ " ${SUITES[*]} " == *" $s "* ]] && return 0; done
    return 1
}

BUILD_OK=1
if need_nvmf && [ $BUILD = 1 ] && [ -z "${NVMF_BIN:-}" ]; then
    echo "run.sh: cargo build --release -p nvmf-cli"
    t0=$SECONDS
    if ! (cd "$ROOT" && cargo build --release -p nvmf-cli); then
        BUILD_OK=0
        echo "run.sh: cargo build --release -p nvmf-cli FAILED"
    else
        echo "run.sh: built $NVMF in $((SECONDS - t0)) s"
    fi
fi
# suite rdma also runs the bad NVMe/RDMA host (crates/transport/examples/rdma-hostile.rs)
HOSTILE=$ROOT/target/release/examples/rdma-hostile HOSTILE_OK=1
if [[ " ${SUITES[*]} " == *" rdma "* ]] && [ $BUILD = 1 ]; then
    (cd "$ROOT" && cargo build --release -p nvmf-transport --example rdma-hostile) || HOSTILE_OK=0
fi

# implements VERB FLAG...: does `nvmf VERB --help` exist and mention every FLAG?
implements() {
    local verb=$1 help f; shift
    help=$("$NVMF" "$verb" --help 2>&1) || return 1
    # a flag counts when it stands alone: "  -t, --transport <T>" has -t but not -r
    for f in "$@"; do grep -qE -- "(^|[[:space:],[])$f([[:space:],=<]|\]|\$)" <<<"$help" || return 1; done
}

# The guest's failed checks of a suite's log, at most 8 lines, for the digest.
failed_checks() {   # failed_checks LOG
    grep -a '^FAIL' "$1" | head -n 8 | cut -c1-200
}

# attempt NAME DIR SCRIPT [run-vm.sh args...]: one run of a suite into DIR;
# sets ATTEMPT_RC and ATTEMPT_SUM (the guest's summary and the capture check)
attempt() {
    local name=$1 dir=$2 script=$3; shift 3
    local log=$dir/run-vm.log rc
    rm -rf "$dir"; mkdir -p "$dir"
    local args=(--no-target --no-ublk --script "$script")
    # (netfault's traffic is on a veth pair, not on lo where --capture listens;
    # rdmaverbs' is RoCE inside rxe0, no NVMe/TCP at all)
    if [ $CAPTURE = 1 ] && [ "$name" != selftest ] && [ "$name" != netfault ] && [ "$name" != rdmaverbs ] && [ "$name" != rdma ]; then args+=(--capture "$dir"); else args+=(--share "$dir"); fi
    echo "run.sh: [$name] $HERE/run-vm.sh ${args[*]} $* ${VMARGS[*]}  (log: $log)"
    "$HERE/run-vm.sh" "${args[@]}" "$@" "${VMARGS[@]}" >"$log" 2>&1 </dev/null
    rc=$?
    local sum
    sum=$(grep -a 'NVMEVM: ===== summary' "$log" | tail -n1 | sed 's/.*summary: \(.*\) =====.*/\1/')
    if [ $rc = 0 ] && [ -f "$dir/capture.pcap" ]; then
        # What went on the wire must decode cleanly (tshark, digests checked);
        # the auth suites' must hold Authentication Send/Receive; the TLS suites'
        # must be TLS 1.3 records (the NVMe/TCP inside is encrypted).
        local checker=("$HERE/check-capture.sh")
        case $name in
            auth|authself) checker+=(--auth) ;;
            tls|tlsself) checker=("$HERE/check-capture-tls.sh") ;;
        esac
        if ! "${checker[@]}" "$dir/capture.pcap" >"$dir/check-capture.log" 2>&1; then
            # (the capture is kept for a look: $dir/capture.pcap)
            rc=1; sum="capture check failed: $(head -c 300 "$dir/check-capture.log")"
        else
            sum="${sum:-guest passed}; $(grep -a '^check-capture' "$dir/check-capture.log" | paste -sd';' -)"
            rm -f "$dir/capture.pcap"
        fi
    fi
    ATTEMPT_RC=$rc ATTEMPT_SUM=$sum
}

# show_failure NAME DIR: the guest's FAIL lines and the console's tail
show_failure() {
    local name=$1 log=$2/run-vm.log console
    echo "----- [$name] failed checks:"
    grep -a '^FAIL' "$log" | sed 's/^/    /'
    console=$(sed -n 's/.*console_log=\([^ ]*\).*/\1/p' "$log" | tail -n1)
    [ -n "$console" ] && [ -f "$console" ] || console=$log
    echo "----- [$name] last 120 lines of $console:"
    tail -n 120 "$console" | sed 's/^/    | /'
    echo "----- [$name] end"
}

# run_suite NAME SCRIPT [run-vm.sh args...]  (more scripts: --script FILE in the args)
# A suite that fails is run once more (NVMF_INTEROP_RETRIES, default 1): the
# guest runs under TCG on a shared machine, and timing can fail a check once. A pass on a later try is a PASS
# whose line says so, and the digest (target/interop/digest.txt, printed last)
# names the checks the first try failed, so a flaky check is seen, not hidden.
run_suite() {
    local name=$1 script=$2; shift 2
    local dir=$OUT/$name t0=$SECONDS try=1 first=""
    rm -rf "$dir".try*
    while :; do
        attempt "$name" "$dir" "$script" "$@"
        [ "$ATTEMPT_RC" = 0 ] && break
        show_failure "$name" "$dir"
        [ $try -le "$RETRIES" ] || break
        first="try $try: run-vm.sh rc=$ATTEMPT_RC; ${ATTEMPT_SUM:-no guest summary}"
        DIGEST+=("interop $name, $first (log kept in $dir.try$try/)")
        while IFS= read -r l; do DIGEST+=("    $l"); done < <(failed_checks "$dir/run-vm.log")
        rm -rf "$dir.try$try"; mv "$dir" "$dir.try$try"
        try=$((try + 1))
        echo "run.sh: [$name] failed; running it again (try $try)"
    done
    local dt=$((SECONDS - t0))
    if [ "$ATTEMPT_RC" = 0 ]; then
        if [ -n "$first" ]; then
            result PASS "$name" "${ATTEMPT_SUM:-guest passed} (${dt}s); passed on try $try, failed before (see the digest)"
        else
            result PASS "$name" "${ATTEMPT_SUM:-guest passed} (${dt}s)"
        fi
    else
        result FAIL "$name" "run-vm.sh rc=$ATTEMPT_RC; ${ATTEMPT_SUM:-no guest summary} (${dt}s); log $dir/run-vm.log"
        DIGEST+=("interop $name FAILED, last try: run-vm.sh rc=$ATTEMPT_RC; ${ATTEMPT_SUM:-no guest summary}")
        while IFS= read -r l; do DIGEST+=("    $l"); done < <(failed_checks "$dir/run-vm.log")
    fi
}

# rdmaverbs: the nvmf-rdma example binary, built like the nvmf binary
PINGPONG=$ROOT/target/release/examples/rdma-pingpong
PINGPONG_OK=1
if [[ " ${SUITES[*]} " == *" rdmaverbs "* ]] && [ $BUILD = 1 ]; then
    echo "run.sh: cargo build --release -p nvmf-rdma --example rdma-pingpong"
    (cd "$ROOT" && cargo build --release -p nvmf-rdma --example rdma-pingpong) || PINGPONG_OK=0
fi

for s in "${SUITES[@]}"; do
    case $s in
        rdmaverbs)
            if [ $PINGPONG_OK = 0 ]; then result FAIL "$s" "cargo build --release -p nvmf-rdma --example rdma-pingpong failed"; continue; fi
            if [ ! -x "$PINGPONG" ]; then result FAIL "$s" "no $PINGPONG"; continue; fi
            run_suite "$s" "$HERE/guest/rdma-verbs.sh" --kernel trixie --extra "$PINGPONG" ;;
        selftest)
            run_suite selftest "$HERE/guest/kernel-host-vs-nvmf-target.sh" --env NVMF_TARGET_MODE=kernel ;;
        authself|tlsself)
            # the security scripts kernel to kernel: the kernel host / nvmet in
            # the place of ours (proves the scripts; needs no nvmf binary)
            sec=${s%self}
            run_suite "$s" "$HERE/guest/kernel-host-vs-nvmf-target-$sec.sh" \
                --script "$HERE/guest/nvmf-host-vs-kernel-target-$sec.sh" --kernel trixie \
                --env NVMF_TARGET_MODE=kernel --env NVMF_HOST_MODE=kernel ;;
        target|host|netfault|auth|tls|block|resv|ana|ioset|nvmetcli|disco|mpath|metrics|rdma)
            if [ $BUILD_OK = 0 ]; then result FAIL "$s" "cargo build --release -p nvmf-cli failed"; continue; fi
            if [ ! -x "$NVMF" ]; then
                if [ $REQUIRE = 1 ]; then result FAIL "$s" "no $NVMF"; else result SKIP "$s" "no $NVMF"; fi
                continue
            fi
            if [ $s = target ]; then
                verbs=("target --listen --memory --file --subnqn")
                script=$HERE/guest/kernel-host-vs-nvmf-target.sh
            elif [ $s = auth ]; then
                verbs=("target --listen --memory --subnqn --host"
                       "io-check -t -a -s -n -q --nsid --bytes --pattern-out --dhchap-secret --dhchap-ctrl-secret")
                script=$HERE/guest/kernel-host-vs-nvmf-target-auth.sh
            elif [ $s = tls ]; then
                verbs=("target --listen --memory --subnqn --tls --tls-key --tls-compat"
                       "io-check -t -a -s -n -q --nsid --bytes --pattern-out --tls --tls-key --tls-compat"
                       "discover -t -a -s -q --tls --tls-key --tls-compat")
                script=$HERE/guest/kernel-host-vs-nvmf-target-tls.sh
            elif [ $s = block ]; then
                verbs=("connect -t -a -s -n -i -l -c --block --block-kind" "list" "disconnect -n" "disconnect-all"
                       "target --config")
                script=$HERE/guest/nvmf-host-block.sh
            elif [ $s = resv ]; then
                verbs=("target --listen --file --subnqn")
                script=$HERE/guest/kernel-hosts-resv.sh
            elif [ $s = ana ]; then
                verbs=("target --config --ana-state --cntlid-range --control-socket"
                       "ana-state --control-socket --port --group --state")
                script=$HERE/guest/kernel-host-vs-nvmf-target-ana.sh
            elif [ $s = ioset ]; then
                verbs=("target --listen --memory --file --subnqn")
                script=$HERE/guest/kernel-host-vs-nvmf-target-ioset.sh
            elif [ $s = nvmetcli ]; then
                verbs=("import-nvmetcli -o" "target --import-nvmetcli")
                script=$HERE/guest/nvmetcli-import.sh
            elif [ $s = disco ]; then
                verbs=("target --config --listen --memory --subnqn --referral"
                       "discover -t -a -s -p --foreground -k" "connect-all -t -a -s -o")
                script=$HERE/guest/kernel-host-discovery.sh
            elif [ $s = mpath ]; then
                verbs=("connect -t -a -s -n -l -c --block --iopolicy" "list" "disconnect -n -d" "disconnect-all"
                       "target --config --control-socket"
                       "ana-state --control-socket --port --group --state")
                script=$HERE/guest/nvmf-host-multipath.sh
            elif [ $s = metrics ]; then
                verbs=("target --listen --memory --subnqn --block-size --metrics" "stats --metrics --interval -o")
                script=$HERE/guest/kernel-host-vs-nvmf-target-metrics.sh
            elif [ $s = rdma ]; then
                verbs=("target --listen --memory --subnqn --block-size" "discover -t -a -s" "io-check -t -a -s -n --nsid --bytes"
                       "connect -t -a -s -n" "list" "write -s -c -d" "read -s -c -d" "disconnect -n")
                script=$HERE/guest/kernel-host-vs-nvmf-target-rdma.sh
            elif [ $s = netfault ]; then
                verbs=("target --listen --file --subnqn" "io-check -t -a -s -n -i -g -G --bytes --offset"
                       "connect -t -a -s -n -l -c" "write -s -c -d" "read -s -c -d" "disconnect -n" "list")
                script=$HERE/guest/netfault.sh
            else
                verbs=("discover -t -a -s -o" "io-check -t -a -s -n -g -G -i --nsid --bytes" "check -t -a -s -n")
                script=$HERE/guest/nvmf-host-vs-kernel-target.sh
            fi
            missing=""
            for v in "${verbs[@]}"; do
                # shellcheck disable=SC2086
                implements $v || missing+="${missing:+; }nvmf $v"
            done
            if [ -n "$missing" ]; then
                if [ $REQUIRE = 1 ]; then
                    result FAIL "$s" "nvmf does not implement: $missing (per --help)"
                else
                    result SKIP "$s" "nvmf does not implement yet: $missing (per --help)"
                fi
                continue
            fi
            extra=()
            case $s in   # the security suites: both directions in one trixie guest
                auth|tls) extra=(--script "$HERE/guest/nvmf-host-vs-kernel-target-$s.sh" --kernel trixie) ;;
                block|resv|ana|ioset|nvmetcli|disco|mpath|metrics) extra=(--kernel trixie) ;;
                rdma) [ $HOSTILE_OK = 1 ] && [ -x "$HOSTILE" ] || { result FAIL rdma "no $HOSTILE (cargo build --release -p nvmf-transport --example rdma-hostile)"; continue; }
                      extra=(--script "$HERE/guest/rdma-hostile.sh" --kernel trixie --extra "$HOSTILE") ;;
            esac
            run_suite "$s" "$script" "${extra[@]}" --extra "$NVMF" --env "NVMF_BIN=/extra/$(basename "$NVMF")" ;;
    esac
done

echo "----- interop summary"
printf '%s\n' "${RESULTS[@]}"
mkdir -p "$OUT"
if [ ${#DIGEST[@]} -gt 0 ]; then
    printf '%s\n' "${DIGEST[@]}" > "$OUT/digest.txt"
    echo "----- interop digest (failed tries, also in $OUT/digest.txt)"
    printf '%s\n' "${DIGEST[@]}"
else
    rm -f "$OUT/digest.txt"
fi
echo "interop: $NPASS passed, $NFAIL failed, $NSKIP skipped"
[ $NFAIL = 0 ]
