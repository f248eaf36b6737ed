#!/bin/sh
# kernel-host-vs-nvmf-target-rdma.sh -- guest script (trixie track): the Linux
# kernel NVMe/RDMA host (nvme-rdma over soft-RoCE, rxe) against OUR target
# serving an rdma:// listen address (crates/transport/src/rdma/controller.rs over
# crates/rdma, rdma-core dlopen'ed from the guest's userland).
#
#   tests/interop/run.sh rdma
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/kernel-host-vs-nvmf-target-rdma.sh
#
# Steps: rxe0 on dummy0 (10.99.0.1, nvmevm_rxe_setup as the rdma self-test);
# `nvmf target --listen rdma://10.99.0.1:4420 --memory 64M`;
# `nvme discover -t rdma` lists the subsystem with trtype rdma;
# `nvme connect -t rdma`, the controller's transport is rdma;
# 16 MiB dd/cmp with O_DIRECT (keyed SGL reads and writes, RDMA READ/WRITE);
# 4 KiB writes (in-capsule data on I/O queues); mkfs.ext4, mount, a file
# written and read back after a remount; disconnect; a malformed connect
# request (an nvme connect with a queue size over the target's limit) is
# rejected and the target keeps serving; SIGTERM ends the target with 0.
# Finally the same 16 MiB dd against nvmet-rdma on port 4421 of the same rxe
# device, for the ratio (TCG: a sanity figure, not a benchmark).
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_connect st_disconnect st_io nvmevm_rxe_setup ST_RDMA_ADDR

NVMF=${NVMF_BIN:-/extra/nvmf}
S=nqn.2024-01.io.nvmf-rdma:rdma
ADDR=$ST_RDMA_ADDR
PORT=4420
T=rdma
TARGET_LOG=/tmp/nvmf-target-rdma.log

say() { echo "=== $*"; }

# fio_fig DEV WHO: 4 KiB random reads at depth 16 and 128 KiB sequential reads
# at depth 8, 5 s each; sets FIG_<WHO>_randread4k / _read128k (KiB/s)
fio_fig() {
    for job in "randread4k randread 4k 16" "read128k read 128k 8"; do
        set -- $job "$1" "$2"
        fio --name=$1 --filename=$5 --direct=1 --ioengine=libaio --rw=$2 --bs=$3 --iodepth=$4 \
            --runtime=5 --time_based --size=32M --output-format=terse --terse-version=3 >/tmp/.r.fio 2>&1
        bw=$(cut -d';' -f7 /tmp/.r.fio | head -n1)
        echo "    fio $1 on $6: ${bw:-?} KiB/s"
        eval FIG_$6_$1=\$bw
        set -- "$5" "$6"
    done
}

say "kernel NVMe/RDMA host vs nvmf target"
[ -x "$NVMF" ] || { fail "$T: no $NVMF in the guest (--extra target/release/nvmf)"; exit 1; }
for m in rdma_rxe rdma_ucm ib_uverbs nvme-rdma; do
    modprobe $m 2>/tmp/.r.mod || { fail "$T: modprobe $m: $(cat /tmp/.r.mod)"; exit 1; }
done
if ! nvmevm_rxe_setup >/tmp/.r.rxe 2>&1; then fail "$T: rxe0 on dummy0: $(cat /tmp/.r.rxe)"; exit 1; fi
rdma link show rxe0/1 2>/dev/null | grep -q 'state ACTIVE' && pass "$T: rxe0 on dummy0 ($ADDR) is ACTIVE" ||
    { fail "$T: rxe0 not ACTIVE: $(rdma link show 2>&1)"; exit 1; }
nvmevm_hostnqn

TARGET_RUST_LOG=${RUST_LOG:-info,nvmf_transport=debug,nvmf_controller=debug}
nvmevm_start_rdma_target $T $TARGET_LOG "$ADDR:$PORT" --memory 64M --block-size 4096 --subnqn "$S" || exit 1

echo "+ nvme discover -t rdma -a $ADDR -s $PORT"
timeout 60 nvme discover -t rdma -a $ADDR -s $PORT >/tmp/.r.disc 2>&1; rc=$?
sed 's/^/    /' /tmp/.r.disc
if [ $rc -eq 0 ] && grep -q "subnqn: *$S" /tmp/.r.disc && grep -q 'trtype: *rdma' /tmp/.r.disc; then
    pass "$T: nvme discover -t rdma lists $S with trtype rdma"
else
    fail "$T: nvme discover -t rdma rc=$rc"
fi
grep -q 'rdma_prtype: *not specified' /tmp/.r.disc && grep -q 'rdma_cms: *rdma-cm' /tmp/.r.disc &&
    pass "$T: the discovery entry has the RDMA TSAS (prtype, cms)" || fail "$T: no RDMA TSAS in the discovery entry"

if st_connect $T "nvme connect -t rdma" "$S" -t rdma -a $ADDR -s $PORT; then
    c=${ST_CTRL#/dev/}
    tr=$(cat /sys/class/nvme/$c/transport 2>/dev/null)
    [ "$tr" = rdma ] && pass "$T: $c transport is rdma ($(cat /sys/class/nvme/$c/address 2>/dev/null))" ||
        fail "$T: $c transport '$tr'"
    st_io $T "$ST_DEV" 16 && pass "$T: 16 MiB O_DIRECT dd write/read/cmp over RDMA"
    # 4 KiB writes: in-capsule data on the I/O queue (the host uses it up to IOCCSZ)
    dd if=/dev/urandom of=/tmp/.r.small bs=4096 count=64 2>/dev/null
    if dd if=/tmp/.r.small of="$ST_DEV" bs=4096 count=64 seek=8192 oflag=direct 2>/dev/null &&
       dd if="$ST_DEV" of=/tmp/.r.small2 bs=4096 count=64 skip=8192 iflag=direct 2>/dev/null &&
       cmp -s /tmp/.r.small /tmp/.r.small2; then
        pass "$T: 64 writes of 4 KiB read back equal (in-capsule: IOCCSZ allows 8 KiB)"
    else
        fail "$T: 4 KiB writes read back differ"
    fi
    if command -v mkfs.ext4 >/dev/null 2>&1; then
        mkdir -p /mnt/r
        if mkfs.ext4 -q -F "$ST_DEV" >/tmp/.r.mkfs 2>&1 && mount "$ST_DEV" /mnt/r; then
            dd if=/dev/urandom of=/mnt/r/f bs=1M count=4 2>/dev/null
            cp /mnt/r/f /tmp/.r.f; sync; umount /mnt/r
            mount "$ST_DEV" /mnt/r && cmp -s /mnt/r/f /tmp/.r.f &&
                pass "$T: mkfs.ext4, a 4 MiB file read back equal after a remount" ||
                fail "$T: the file differs after a remount"
            umount /mnt/r 2>/dev/null
        else
            fail "$T: mkfs.ext4/mount: $(cat /tmp/.r.mkfs)"
        fi
    else
        skip "$T: no mkfs.ext4"
    fi
    st_disconnect $T "$S"
fi

if st_connect $T "connect again" "$S" -t rdma -a $ADDR -s $PORT; then
    st_io $T "$ST_DEV" 4 && pass "$T: 4 MiB dd/cmp on a second association"
    OURS_DEV=$ST_DEV
    # Figures against nvmet-rdma on the same rxe device and kernel host (below).
    if command -v fio >/dev/null 2>&1; then
        fio_fig "$ST_DEV" ours
    fi
    st_disconnect $T "$S"
fi

# OUR host over RDMA against our target: discover, then io-check (writes,
# reads back and compares; keyed SGLs for the data, in-capsule below IOCCSZ).
our_host_checks() {   # our_host_checks WHO PORT NQN
    echo "+ nvmf discover -t rdma -a $ADDR -s $2"
    timeout 60 "$NVMF" discover -t rdma -a $ADDR -s $2 >/tmp/.r.od 2>&1; rc=$?
    sed 's/^/    /' /tmp/.r.od
    [ $rc -eq 0 ] && grep -q "$3" /tmp/.r.od && grep -qi 'rdma' /tmp/.r.od &&
        pass "$T: nvmf discover -t rdma against $1 lists $3" || fail "$T: nvmf discover -t rdma against $1 rc=$rc"
    echo "+ nvmf io-check -t rdma -a $ADDR -s $2 -n $3 --nsid 1 --bytes 4M"
    timeout 120 "$NVMF" io-check -t rdma -a $ADDR -s $2 -n "$3" --nsid 1 --bytes 4M >/tmp/.r.oi 2>&1; rc=$?
    sed 's/^/    /' /tmp/.r.oi
    [ $rc -eq 0 ] && pass "$T: nvmf io-check -t rdma against $1 (4 MiB written, read back, compared)" ||
        fail "$T: nvmf io-check -t rdma against $1 rc=$rc"
}
our_host_checks "our target" $PORT "$S"

# OUR host's daemon over RDMA: nvmf connect, list (transport rdma), write and
# read through the held association, disconnect.
echo "+ nvmf connect -t rdma -a $ADDR -s $PORT -n $S"
if timeout 60 "$NVMF" connect -t rdma -a $ADDR -s $PORT -n "$S" >/tmp/.r.oc 2>&1; then
    sed 's/^/    /' /tmp/.r.oc
    d=$(sed -n 's/^device: *//p' /tmp/.r.oc | head -n1); d=${d:-nvme0}
    "$NVMF" list >/tmp/.r.ol 2>&1; sed 's/^/    /' /tmp/.r.ol
    "$NVMF" list -o json >/tmp/.r.oj 2>&1
    grep -q '"Transport": *"rdma"' /tmp/.r.oj && pass "$T: nvmf list -o json gives the controller's transport: rdma" ||
        { fail "$T: nvmf list -o json does not say rdma"; sed 's/^/    /' /tmp/.r.oj; }
    dd if=/dev/urandom of=/tmp/.r.w bs=4096 count=64 2>/dev/null
    if timeout 60 "$NVMF" write ${d}n1 -s 4096 -c 63 -d /tmp/.r.w >/tmp/.r.ow 2>&1 &&
       timeout 60 "$NVMF" read ${d}n1 -s 4096 -c 63 -d /tmp/.r.r >/tmp/.r.or 2>&1 && cmp -s /tmp/.r.w /tmp/.r.r; then
        pass "$T: nvmf write/read of 256 KiB through the daemon's RDMA association, equal"
    else
        fail "$T: nvmf write/read over RDMA: $(cat /tmp/.r.ow /tmp/.r.or | head -n 4)"
    fi
    timeout 60 "$NVMF" disconnect -n "$S" >/tmp/.r.dc 2>&1 && pass "$T: nvmf disconnect" || fail "$T: nvmf disconnect: $(cat /tmp/.r.dc)"
else
    fail "$T: nvmf connect -t rdma: $(cat /tmp/.r.oc)"
fi
timeout 30 "$NVMF" host-daemon --stop >/dev/null 2>&1

nvmevm_stop_target $T "$TARGET_PID"
grep -qi 'panicked' $TARGET_LOG && fail "$T: the target log has a panic"

# nvmet-rdma on port 4421 of the same rxe device: the same fio jobs, for the
# ratio (TCG: figures of a slow emulated machine, not a benchmark).
if command -v fio >/dev/null 2>&1 && modprobe nvmet-rdma 2>/dev/null; then
    K=$ST_NQN_PREFIX:rdmaref
    if st_subsys $K 64 1 && st_port 5 rdma $ADDR 4421 && st_link $K 5 &&
       st_connect $T "nvme connect -t rdma to nvmet-rdma :4421" $K -t rdma -a $ADDR -s 4421; then
        fio_fig "$ST_DEV" nvmet
        st_disconnect $T "$K"
        our_host_checks nvmet-rdma 4421 "$K"
        for w in randread4k read128k; do
            eval o=\$FIG_ours_$w k=\$FIG_nvmet_$w
            [ -n "$o" ] && [ -n "$k" ] && [ "$k" -gt 0 ] &&
                echo "INFO: $T: $w: ours $o KiB/s, nvmet-rdma $k KiB/s, ratio $(awk -v a=$o -v b=$k 'BEGIN{printf "%.2f", a/b}')"
        done
    else
        skip "$T: nvmet-rdma reference port not set up"
    fi
    st_cleanup $K
fi
sed 's/^/    log: /' $TARGET_LOG | tail -n 30
grep -q ' /mnt/host 9p' /proc/mounts && nvmevm_copy_out $TARGET_LOG
exit 0
