#!/bin/sh
# nvmf-host-vs-kernel-target.sh -- guest script: OUR host (the `nvmf` CLI)
# against the Linux kernel nvmet target.
#
#   tests/interop/run-vm.sh --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/nvmf-host-vs-kernel-target.sh
#
# (--no-target so that run-vm.sh runs neither its own nvmet setup nor the
# nvme-cli built-in test; this script calls nvmevm_target_setup itself.)
#
# Kernel target (guest-lib.sh nvmevm_target_setup): subsystem $NQN,
# nsid 1 = 256 MiB file $NVMEVM_NS_FILE on tmpfs (buffered_io=1),
# nsid 2 = /dev/nullb0 (null_blk: writes dropped, reads return zeroes),
# tcp 127.0.0.1:4420; the discovery subsystem on the same port.
#
# Host daemon verbs: `nvmf connect -D`, `nvmf write/read/dsm/write-zeroes nvme0nN`
# (nvme-cli's flags), `nvmf list -o json` (Devices[].DevicePath, SectorSize),
# `nvmf disconnect-all`.
# ---------------------------------------------------------------------------
# ASSUMPTIONS about the `nvmf` CLI -- the verbs are still being designed; every
# invocation goes through the nvmf_* functions just below, so adjust there.
#
#   nvmf discover -t tcp -a ADDR -s PORT
#       exit 0; prints the discovery log; each entry's subsystem NQN appears
#       verbatim in the output (nvme-cli prints "subnqn: NQN").
#   nvmf discover -t tcp -a ADDR -s PORT -o json
#       exit 0; JSON on stdout, nvme-cli-like keys: records[].subnqn,
#       records[].traddr, records[].trsvcid ("subnqn" and the NQN string are
#       all this script greps for).
#   nvmf io-check -t tcp -a ADDR -s PORT -n NQN [-g] [-G] [-i N] --nsid NSID --bytes 16M
#                 [--pattern-out FILE]
#       connects (admin + I/O queues; -g/-G header/data digest; -i number of
#       I/O queues), writes --bytes of a pattern starting at LBA 0 of NSID,
#       reads it back, compares; exit 0 only if identical, non-zero on any
#       error or mismatch (connection refused, unknown NQN, ...).
#       --pattern-out FILE (optional): also write the bytes it wrote to FILE;
#       then this script compares them with the target's backing file.  If the
#       CLI rejects the option (clap usage error, exit 2), the script reruns
#       without it and SKIPs the backing-file comparison.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh

NVMF=${NVMF_BIN:-/extra/nvmf}
NQN=$NVMEVM_NQN                     # nqn.2024-01.io.test:sub1
ADDR=$NVMEVM_ADDR                   # 127.0.0.1
PORT=$NVMEVM_PORT                   # 4420
BYTES=16M
BYTES_N=16777216
TMO="timeout 300"

nvmf_discover()      { $TMO "$NVMF" discover -t tcp -a "$1" -s "$2"; }
nvmf_discover_json() { $TMO "$NVMF" discover -t tcp -a "$1" -s "$2" -o json; }
# nvmf_io_check NQN NSID [extra options...]
nvmf_io_check() {
    _nqn=$1; _nsid=$2; shift 2
    $TMO "$NVMF" io-check -t tcp -a "$ADDR" -s "$PORT" -n "$_nqn" --nsid "$_nsid" --bytes "$BYTES" "$@"
}
PATTERN_OPT=--pattern-out

say() { echo "=== $*"; }

if [ ! -x "$NVMF" ]; then
    fail "no $NVMF in the guest (run-vm.sh --extra target/release/nvmf)"
    exit 1
fi
"$NVMF" --version 2>&1 | sed 's/^/    /'

say "kernel nvmet target"
nvmevm_target_setup "$NQN" "$ADDR" "$PORT" || exit 1

say "discovery"
check "nvmf discover -t tcp -a $ADDR -s $PORT" nvmf_discover "$ADDR" "$PORT" &&
    { grep -q "$NQN" /tmp/.check.out && pass "nvmf discover lists $NQN" || fail "nvmf discover output lacks $NQN"; }
check "nvmf discover ... -o json" nvmf_discover_json "$ADDR" "$PORT" &&
    { grep -q '"subnqn"' /tmp/.check.out && grep -q "\"$NQN\"" /tmp/.check.out &&
        pass "nvmf discover json has \"subnqn\": \"$NQN\"" || fail "nvmf discover json lacks subnqn $NQN"; }

say "negative cases (must fail, and quickly)"
if timeout 60 "$NVMF" discover -t tcp -a "$ADDR" -s 4421 >/tmp/neg.out 2>&1; then
    fail "nvmf discover on a closed port exited 0"
else
    _rc=$?; [ $_rc = 143 ] || [ $_rc = 124 ] && fail "nvmf discover on a closed port hung (timeout)" ||
        pass "nvmf discover on a closed port fails (rc=$_rc): $(head -n1 /tmp/neg.out)"
fi
if timeout 120 "$NVMF" io-check -t tcp -a "$ADDR" -s "$PORT" -n nqn.2024-01.io.test:no-such-subsystem \
        --nsid 1 --bytes 4k >/tmp/neg.out 2>&1; then
    fail "nvmf io-check against an unknown subsystem NQN exited 0"
else
    _rc=$?; [ $_rc = 143 ] || [ $_rc = 124 ] && fail "nvmf io-check against an unknown NQN hung (timeout)" ||
        pass "nvmf io-check against an unknown NQN fails (rc=$_rc): $(head -n1 /tmp/neg.out)"
fi

# io_check LABEL [options]: io-check on nsid 1, then compare the target's
# backing file with the pattern (when the CLI can hand it out)
io_check() {
    ic_l=$1; shift
    rm -f /tmp/pattern.out
    # wipe the region so a no-op "write" cannot pass the backing-file check
    dd if=/dev/zero of="$NVMEVM_NS_FILE" bs=1M count=16 conv=notrunc 2>/dev/null
    echo "+ nvmf io-check $ic_l"
    nvmf_io_check "$NQN" 1 "$@" $PATTERN_OPT /tmp/pattern.out >/tmp/io.out 2>&1
    ic_rc=$?
    if [ $ic_rc = 2 ] && grep -qi -- "$PATTERN_OPT" /tmp/io.out; then
        echo "    ($PATTERN_OPT not accepted; rerunning without it)"
        sed 's/^/    /' /tmp/io.out
        nvmf_io_check "$NQN" 1 "$@" >/tmp/io.out 2>&1
        ic_rc=$?
    fi
    sed 's/^/    /' /tmp/io.out
    if [ $ic_rc = 0 ]; then pass "nvmf io-check $ic_l: $BYTES written and read back"; else fail "nvmf io-check $ic_l (rc=$ic_rc)"; return 1; fi
    if [ -s /tmp/pattern.out ]; then
        dd if="$NVMEVM_NS_FILE" of=/tmp/backing bs=1M count=16 2>/dev/null
        _n=$(wc -c </tmp/pattern.out)
        if [ "$_n" = $BYTES_N ] && cmp /tmp/pattern.out /tmp/backing; then
            pass "$ic_l: target backing file holds the pattern the host wrote"
        else
            fail "$ic_l: target backing file differs from the pattern ($_n bytes)"
        fi
        rm -f /tmp/backing
    else
        skip "$ic_l: exact backing-file comparison (io-check wrote no $PATTERN_OPT file)"
        # still: the write must have changed the zeroed region
        dd if="$NVMEVM_NS_FILE" of=/tmp/backing bs=1M count=16 2>/dev/null
        if cmp -s /tmp/backing /tmp/zero16; then
            fail "$ic_l: target backing file region still all zeroes after io-check"
        else
            pass "$ic_l: target backing file region was written"
        fi
        rm -f /tmp/backing
    fi
}

say "data checks (nsid 1, file-backed)"
dd if=/dev/zero of=/tmp/zero16 bs=1M count=16 2>/dev/null
io_check "plain"
io_check "digests (-g -G)" -g -G
io_check "2 I/O queues (-i 2)" -i 2
io_check "digests, 2 I/O queues (-g -G -i 2)" -g -G -i 2

say "host daemon verbs against nvmet: write, read, dsm --ad, write-zeroes"
# nsid 1 (a file on tmpfs: nvmet punches a hole for a deallocate) and nsid 2
# (null_blk: Write Zeroes succeeds, nothing to read back). nvmet's file
# namespace takes the file's block size (4096 on tmpfs): read it from `nvmf list`.
# Connected with -D (--disable-sqflow): nvmet then completes reads with
# C2HData SUCCESS and no response capsule, which our host must take as the
# completion (the read-back below depends on it).
if check "nvmf connect -D -n $NQN (host daemon, SQ flow control disabled)" $TMO "$NVMF" connect -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" -D; then
    "$NVMF" list -o json >/tmp/dv.list 2>&1
    bs=$(tr -d ' \n' </tmp/dv.list | sed -n 's/.*"DevicePath":"nvme0n1"[^}]*"SectorSize":\([0-9]*\).*/\1/p')
    [ -n "$bs" ] || bs=$(tr -d ' \n' </tmp/dv.list | sed -n 's/.*"SectorSize":\([0-9]*\)[^}]*"DevicePath":"nvme0n1".*/\1/p')
    echo "    nvme0n1 block size: '${bs:-?}'"
    if [ -n "$bs" ]; then
        dd if=/dev/urandom of=/tmp/dv.pat bs="$bs" count=32 2>/dev/null
        check "nvmf write of 32 blocks at LBA 512 (nsid 1)" $TMO "$NVMF" write nvme0n1 -s 512 -c 31 -d /tmp/dv.pat
        check "nvmf dsm --ad of LBAs 516-523" $TMO "$NVMF" dsm nvme0n1 -s 516 -b 8 --ad
        { dd if=/tmp/dv.pat bs="$bs" count=4; dd if=/dev/zero bs="$bs" count=8
          dd if=/tmp/dv.pat bs="$bs" skip=12 count=20; } >/tmp/dv.want 2>/dev/null
        $TMO "$NVMF" read nvme0n1 -s 512 -c 31 -d /tmp/dv.got >/tmp/dv.rd 2>&1
        if cmp /tmp/dv.want /tmp/dv.got; then
            pass "nvmf read after dsm --ad: LBAs 516-523 read as zeroes, the rest as written"
        else
            fail "nvmf read after dsm --ad differs: $(head -c 300 /tmp/dv.rd)"
        fi
        dd if="$NVMEVM_NS_FILE" bs="$bs" skip=512 count=32 of=/tmp/dv.file 2>/dev/null
        cmp -s /tmp/dv.want /tmp/dv.file && pass "nvmet's backing file holds the write and the hole" ||
            fail "nvmet's backing file differs from the write and dsm"
    else
        fail "no SectorSize for nvme0n1 in nvmf list -o json: $(head -c 300 /tmp/dv.list)"
    fi
    check "nvmf write-zeroes of 65536 blocks on nsid 2 (null_blk)" $TMO "$NVMF" write-zeroes nvme0n2 -s 0 -c 65535
    check "nvmf write-zeroes -s 0 -c 1 --deac on nsid 2" $TMO "$NVMF" write-zeroes nvme0n2 -s 0 -c 1 --deac
    $TMO "$NVMF" disconnect-all >/dev/null 2>&1
fi

say "conformance check (nvmf check) against nvmet"
# Every line is printed so that the CI log shows which rules nvmet meets.  PASS
# here: the check completes (its summary line, exit 0 or 1, no timeout), every
# rule in NVMET_MEETS is PASS, and every robustness rule leaves nvmet serving
# new connections.  Rules nvmet deviates on are listed in docs/check.md (table
# "rule / ours / nvmet") and are printed as notes, not failed.
NVMET_MEETS="tcp.icresp tcp.icresp.pfv tcp.icresp.cpda tcp.icresp.maxh2cdata
    tcp.icresp.dgst-unasked tcp.digest.valid disc.connect disc.enable disc.log.read
    disc.log.genctr disc.log.numrec disc.log.entries admin.connect admin.prop.cap
    admin.prop.vs admin.enable admin.identify admin.identify.cntlid
    admin.identify.subnqn admin.identify.ioccsz admin.identify.iorcsz
    admin.identify.sgls admin.identify.maxcmd admin.keep-alive admin.unknown-opcode
    io.connect io.identify-ns io.read io.write.in-capsule io.write.r2t
    connect.unknown-subnqn"
$TMO "$NVMF" check -t tcp -a "$ADDR" -s "$PORT" -n "$NQN" >/tmp/check.out 2>&1
_rc=$?
sed 's/^/    /' /tmp/check.out
if { [ $_rc = 0 ] || [ $_rc = 1 ]; } && grep -q '^summary: ' /tmp/check.out; then
    pass "nvmf check completed (rc=$_rc): $(grep '^summary: ' /tmp/check.out)"
else
    fail "nvmf check did not complete (rc=$_rc)"
fi
for _r in $NVMET_MEETS; do
    if grep -q "^PASS  $_r " /tmp/check.out; then
        pass "nvmf check: nvmet meets $_r"
    else
        fail "nvmf check: nvmet no longer meets $_r: $(grep "  $_r " /tmp/check.out | head -n1)"
    fi
done
_n=$(grep -c '^[A-Z]*  robust\.' /tmp/check.out)
_alive=$(grep '^[A-Z]*  robust\.' /tmp/check.out | grep -c 'a new connection then works')
if [ "$_n" -gt 0 ] && [ "$_n" = "$_alive" ]; then
    pass "nvmf check: nvmet survives all $_n malformed-PDU rules (a new connection works after each)"
else
    fail "nvmf check: nvmet stopped serving after a malformed PDU ($_alive of $_n)"
fi
grep -E '^(FAIL|INFO)  ' /tmp/check.out | sed 's/^/    nvmet deviation or option (docs\/check.md): /'

echo "--- target side"
dmesg | grep -iE 'nvmet' | tail -n 20 | sed 's/^/    dmesg: /'
nvmevm_target_teardown "$NQN"
exit 0
