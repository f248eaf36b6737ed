#!/bin/sh
# kernel-host-vs-nvmf-target-ioset.sh -- guest script (trixie track): the Linux
# kernel NVMe/TCP host with nvme-cli 2.13 against OUR target (`nvmf target`):
# the NVM commands beyond read/write that nvme-cli sends as passthrough
# (Verify, Copy, Compare, Write Zeroes, Dataset Management), checked with dd/cmp.
#
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target-ioset.sh
#
# What it does, on both namespaces (nsid 1 = memory, nsid 2 = file):
#   - id-ctrl: ONCS has Compare, Dataset Management, Write Zeroes, Verify and Copy; FUSES has Compare and Write;
#     CTRATT has TBKAS; OCFS has format 0. id-ns: MSSRL / MCL / MSRC.
#   - 1 MiB of random data written with O_DIRECT dd at LBA 0;
#   - `nvme verify` of 2048 blocks (ok), of the last block (ok), past the end
#     (must fail);
#   - `nvme compare` of 4 KiB against the same data (ok) and against data with
#     one flipped byte (must fail, "COMPARE");
#   - `nvme copy` of two ranges (--slbs 0,100 --blocks 7,3: 8 + 4 blocks, 0's
#     based) to --sdlba 4096, read back with O_DIRECT dd and compared with the
#     source ranges (and, on nsid 2, with the target's backing file);
#   - `nvme copy` of a range longer than MSSRL: must fail, destination untouched.
#   - `nvme write-zeroes` of 8 blocks at LBA 200 and `nvme dsm --ad` of 8 blocks
#     at LBA 300: both read back (O_DIRECT) as zeroes, the blocks beside them
#     keep the pattern (on nsid 2 the backing file is checked too).
# nvme-cli cannot send a fused Compare and Write pair (its `compare` is a plain
# Compare), so fused operations are tested on loopback only
# (crates/controller/tests/ioset.rs).
#
# ASSUMPTIONS about `nvmf` (run.sh checks `nvmf target --help` for
# --listen --memory --file --subnqn):
#   nvmf target --listen 127.0.0.1:4420 --memory 64M --file PATH,size=64M --subnqn NQN
#     * --memory = nsid 1, --file = nsid 2, 512-byte blocks; LBA 0 = byte 0 of PATH;
#     * SIGTERM stops it with exit 0 within 5 s.
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_connect st_disconnect

NVMF=${NVMF_BIN:-/extra/nvmf}
S=nqn.2024-01.io.nvmf-rs:ioset
ADDR=127.0.0.1
PORT=4420
T=ioset
TARGET_LOG=/tmp/nvmf-target-ioset.log
NS2_FILE=/tmp/ioset-ns2.img
TARGET_PID=

say() { echo "=== $*"; }
listening() { ss -ltn 2>/dev/null | grep -qE "[:.]$PORT[[:space:]]"; }

# field DUMP NAME: the value of "NAME : VALUE" in an nvme-cli text dump
field() { sed -n "s/^$2[[:space:]]*:[[:space:]]*\([^[:space:]]*\).*/\1/p" "$1" | head -n1; }

# expect_rc WANT(0|fail) DESC CMD...: run an nvme-cli command, log its output
expect_rc() {
    er_want=$1 er_desc=$2; shift 2
    echo "+ $*"
    "$@" >/tmp/.ioset.out 2>&1; er_rc=$?
    sed 's/^/    /' /tmp/.ioset.out
    if [ "$er_want" = 0 ]; then
        [ $er_rc -eq 0 ] && { pass "$T: $er_desc"; return 0; }
        fail "$T: $er_desc: rc=$er_rc"; return 1
    fi
    [ $er_rc -ne 0 ] && { pass "$T: $er_desc: refused (rc=$er_rc: $(tr '\n' ' ' </tmp/.ioset.out | cut -c1-120))"; return 0; }
    fail "$T: $er_desc: NOT refused"; return 1
}

# blocks FILE SLBA N: N 512-byte blocks from LBA SLBA of FILE, to stdout
blocks() { dd if="$1" bs=512 skip="$2" count="$3" 2>/dev/null; }

# one namespace: ns_case NSID
ns_case() {
    nsid=$1
    dev=$(nvmevm_wait_ns_dev "$S" "$nsid" 50) || { fail "$T: nsid $nsid: no block device"; return 1; }
    say "nsid $nsid on $dev"
    nvme id-ns "$dev" -n "$nsid" >/tmp/.ioset.idns 2>&1
    nsze=$(field /tmp/.ioset.idns nsze)
    mssrl=$(field /tmp/.ioset.idns mssrl) mcl=$(field /tmp/.ioset.idns mcl) msrc=$(field /tmp/.ioset.idns msrc)
    nsze=$((nsze))
    if [ "$((mssrl))" = 2048 ] && [ "$((mcl))" = 8192 ] && [ "$((msrc))" = 127 ]; then
        pass "$T: nsid $nsid: id-ns mssrl $mssrl mcl $mcl msrc $msrc, nsze $nsze"
    else
        fail "$T: nsid $nsid: id-ns mssrl '$mssrl' mcl '$mcl' msrc '$msrc' (want 2048 8192 127)"
    fi
    dd if=/dev/urandom of=/tmp/.ioset.pat bs=1M count=1 2>/dev/null
    if dd if=/tmp/.ioset.pat of="$dev" bs=1M count=1 oflag=direct conv=fsync 2>/dev/null; then
        pass "$T: nsid $nsid: 1 MiB written at LBA 0 (O_DIRECT dd)"
    else
        fail "$T: nsid $nsid: dd write"; return 1
    fi

    expect_rc 0 "nsid $nsid: verify 2048 blocks at LBA 0" nvme verify "$dev" -s 0 -c 2047
    expect_rc 0 "nsid $nsid: verify the last block" nvme verify "$dev" -s $((nsze - 1)) -c 0
    expect_rc fail "nsid $nsid: verify past the end" nvme verify "$dev" -s $((nsze - 1)) -c 1

    blocks /tmp/.ioset.pat 16 8 >/tmp/.ioset.cmp
    expect_rc 0 "nsid $nsid: compare 8 blocks at LBA 16 with the same data" \
        nvme compare "$dev" -s 16 -c 7 -z 4096 -d /tmp/.ioset.cmp
    # flip one byte in the middle
    cp /tmp/.ioset.cmp /tmp/.ioset.bad
    b=$(dd if=/tmp/.ioset.bad bs=1 skip=2000 count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
    printf "$(printf '\\%03o' $(( (b + 1) % 256 )))" | dd of=/tmp/.ioset.bad bs=1 seek=2000 conv=notrunc 2>/dev/null
    if cmp -s /tmp/.ioset.cmp /tmp/.ioset.bad; then fail "$T: could not make a differing buffer"; fi
    if expect_rc fail "nvme compare with one byte changed" nvme compare "$dev" -s 16 -c 7 -z 4096 -d /tmp/.ioset.bad; then
        grep -qi 'compare' /tmp/.ioset.out && pass "$T: nsid $nsid: the miscompare is reported as a Compare Failure" ||
            fail "$T: nsid $nsid: miscompare status not a Compare Failure: $(cat /tmp/.ioset.out)"
    fi

    # copy LBAs 0-7 and 100-103 to 4096-4107
    expect_rc 0 "nsid $nsid: copy --slbs 0,100 --blocks 7,3 --sdlba 4096" \
        nvme copy "$dev" --sdlba=4096 --slbs=0,100 --blocks=7,3
    { blocks /tmp/.ioset.pat 0 8; blocks /tmp/.ioset.pat 100 4; } >/tmp/.ioset.want
    dd if="$dev" of=/tmp/.ioset.got bs=512 skip=4096 count=12 iflag=direct 2>/dev/null
    if cmp /tmp/.ioset.want /tmp/.ioset.got; then
        pass "$T: nsid $nsid: the copied blocks read back (O_DIRECT) equal the source ranges"
    else
        fail "$T: nsid $nsid: copied blocks differ from the source ranges"
    fi
    if [ "$nsid" = 2 ]; then
        blocks $NS2_FILE 4096 12 >/tmp/.ioset.file
        cmp /tmp/.ioset.want /tmp/.ioset.file && pass "$T: nsid 2: the target's backing file holds the copy" ||
            fail "$T: nsid 2: backing file differs from the copy"
    fi
    # a range longer than MSSRL (2048 blocks): refused, the destination keeps its data
    expect_rc fail "nsid $nsid: copy of 4096 blocks in one range (MSSRL 2048)" \
        nvme copy "$dev" --sdlba=4096 --slbs=0 --blocks=4095
    dd if="$dev" of=/tmp/.ioset.got bs=512 skip=4096 count=12 iflag=direct 2>/dev/null
    cmp -s /tmp/.ioset.want /tmp/.ioset.got && pass "$T: nsid $nsid: the refused copy wrote nothing" ||
        fail "$T: nsid $nsid: the refused copy changed the destination"

    # Write Zeroes of LBAs 200-207, Dataset Management deallocate of 300-307:
    # read back as zeroes (DLFEAT: deallocated blocks read as zeroes), the
    # blocks either side (199, 208, 299, 308) keep the pattern
    expect_rc 0 "nsid $nsid: write-zeroes -s 200 -c 7" nvme write-zeroes "$dev" -s 200 -c 7
    expect_rc 0 "nsid $nsid: dsm --ad -s 300 -b 8" nvme dsm "$dev" --ad -s 300 -b 8
    dd if=/dev/zero of=/tmp/.ioset.zero bs=512 count=8 2>/dev/null
    for z in 200 300; do
        { blocks /tmp/.ioset.pat $((z - 1)) 1; cat /tmp/.ioset.zero; blocks /tmp/.ioset.pat $((z + 8)) 1; } >/tmp/.ioset.want
        dd if="$dev" of=/tmp/.ioset.got bs=512 skip=$((z - 1)) count=10 iflag=direct 2>/dev/null
        if cmp /tmp/.ioset.want /tmp/.ioset.got; then
            pass "$T: nsid $nsid: LBAs $z-$((z + 7)) read back as zeroes, the blocks beside them unchanged"
        else
            fail "$T: nsid $nsid: LBAs $z-$((z + 7)) after write-zeroes/dsm differ from zeroes and the pattern"
        fi
        if [ "$nsid" = 2 ]; then
            blocks $NS2_FILE $((z - 1)) 10 >/tmp/.ioset.file
            cmp /tmp/.ioset.want /tmp/.ioset.file && pass "$T: nsid 2: the backing file holds zeroes at LBAs $z-$((z + 7))" ||
                fail "$T: nsid 2: the backing file differs at LBAs $z-$((z + 7))"
        fi
    done
}

# ---------------------------------------------------------------------- main --
say "kernel host (nvme-cli $(nvme version 2>/dev/null | sed -n 's/^nvme version \([^ ]*\).*/\1/p')) vs nvmf target: verify, copy, compare, write-zeroes, dsm"
[ -x "$NVMF" ] || { fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; }
for v in verify copy compare write-zeroes dsm; do
    echo "--- nvme $v --help (options used here)"
    nvme $v --help 2>&1 | grep -E -- '--(namespace-id|start-block|block-count|data-size|data|sdlba|slbs|blocks|ad)\b' | sed 's/^/    /'
done
nvmevm_hostnqn
rm -f $TARGET_LOG $NS2_FILE
truncate -s 64M $NS2_FILE
"$NVMF" target --listen "$ADDR:$PORT" --memory 64M --file "$NS2_FILE,size=64M" --subnqn "$S" >$TARGET_LOG 2>&1 &
TARGET_PID=$!
w=0; while [ $w -lt 200 ] && ! listening; do kill -0 $TARGET_PID 2>/dev/null || break; w=$((w+1)); sleep 0.1; done
listening && pass "$T: nvmf target listening (pid $TARGET_PID)" || { fail "$T: nvmf target not listening"; cat $TARGET_LOG; exit 1; }

if st_connect $T "connect" "$S" -t tcp -a $ADDR -s $PORT; then
    nvme id-ctrl "$ST_CTRL" >/tmp/.ioset.idctrl 2>&1
    oncs=$(field /tmp/.ioset.idctrl oncs) fuses=$(field /tmp/.ioset.idctrl fuses)
    ctratt=$(field /tmp/.ioset.idctrl ctratt) ocfs=$(field /tmp/.ioset.idctrl ocfs)
    echo "    id-ctrl: oncs $oncs fuses $fuses ctratt $ctratt ocfs $ocfs"
    [ $((oncs & 0x18d)) = $((0x18d)) ] && pass "$T: ONCS $oncs has Compare, Dataset Management, Write Zeroes, Verify and Copy" ||
        fail "$T: ONCS '$oncs' lacks Compare/DSM/Write Zeroes/Verify/Copy (0x18d)"
    [ $((fuses & 1)) = 1 ] && pass "$T: FUSES $fuses: Compare and Write" || fail "$T: FUSES '$fuses'"
    [ $((ctratt & 0x40)) = $((0x40)) ] && pass "$T: CTRATT $ctratt has TBKAS" || fail "$T: CTRATT '$ctratt' lacks TBKAS (0x40)"
    [ $((ocfs & 1)) = 1 ] && pass "$T: OCFS $ocfs: copy format 0" || fail "$T: OCFS '$ocfs'"
    ns_case 1
    ns_case 2
    st_disconnect $T "$S"
fi

nvmevm_stop_target "$T" "$TARGET_PID"
echo "--- target log (last 30 lines)"
tail -n 30 $TARGET_LOG | sed 's/^/    target: /'
grep -qi 'panicked' $TARGET_LOG && fail "$T: the target log has a panic"
grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $TARGET_LOG
exit 0
