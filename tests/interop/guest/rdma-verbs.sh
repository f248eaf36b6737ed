#!/bin/sh
# rdma-verbs.sh -- guest script (trixie track): nvmf-rdma, the project's rdma-core
# binding (crates/rdma), does a real round trip over soft-RoCE.
#
#   tests/interop/run.sh rdmaverbs
#   cargo build --release -p nvmf-rdma --example rdma-pingpong
#   tests/interop/run-vm.sh --kernel trixie --no-target \
#       --extra target/release/examples/rdma-pingpong --script tests/interop/guest/rdma-verbs.sh
#
# Steps:
#   1. rdma_rxe, rdma_ucm, ib_uverbs; dummy0 10.99.0.1/24 with rxe0 on it
#      (nvmevm_rxe_setup, as the rdma self-test does); rxe0 ACTIVE.
#   2. rdma-pingpong server on 10.99.0.1:7471, then the client: rdma-core is
#      dlopen'ed from the guest's userland (libibverbs.so.1, librdmacm.so.1, the
#      rxe provider); a connect to a port nobody listens on fails typed; the
#      client's next connect is rejected with private data;
#      then two connections each exchange connect/accept private data, three
#      SEND ping/pongs, 2000 SENDs in chains of 8 with credits back, buffer descriptors (address, length, rkey) in SENDs,
#      RDMA WRITE (chained with a SEND in one post) and RDMA READ both ways, every
#      byte checked; the client binds a type 2 memory window, the server READs
#      through it and sends a SEND with Invalidate of its rkey, which the client's
#      receive completion must report; disconnect seen by both (round 1: the client
#      disconnects; round 2: the server, after checking that a READ through the
#      invalidated rkey fails with a remote access error); the server checks that
#      the second connection leaves no more fds/mappings than the first.
#   Each PASS:/FAIL: line the two programs print becomes a guest PASS/FAIL line.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # nvmevm_rxe_setup, ST_RDMA_ADDR

T=rdmaverbs
PP=${RDMA_PINGPONG_BIN:-/extra/rdma-pingpong}
PORT=7471
ADDR=$ST_RDMA_ADDR

[ -x "$PP" ] || { fail "$T: no $PP"; exit 1; }
for m in rdma_rxe rdma_ucm ib_uverbs; do
    modprobe $m 2>/tmp/.rv.mod || { fail "$T: modprobe $m: $(cat /tmp/.rv.mod)"; exit 1; }
done
if ! nvmevm_rxe_setup >/tmp/.rv.rxe 2>&1; then fail "$T: rxe0 on dummy0: $(cat /tmp/.rv.rxe)"; exit 1; fi
if rdma link show rxe0/1 2>/dev/null | grep -q 'state ACTIVE'; then
    pass "$T: rxe0 on dummy0 ($ADDR) is ACTIVE"
else
    fail "$T: rxe0 not ACTIVE: $(rdma link show 2>&1)"; exit 1
fi
ls -l /usr/lib/x86_64-linux-gnu/libibverbs.so.1 /usr/lib/x86_64-linux-gnu/librdmacm.so.1 2>&1 | sed 's/^/    /'
ldd "$PP" 2>/dev/null | grep -q 'ibverbs\|rdmacm' && fail "$T: $PP links rdma-core at load time (it must dlopen it)"

report() {   # report WHO LOG: the program's PASS:/FAIL: lines as guest results
    sed 's/^/    /' "$2"
    grep -a '^PASS: ' "$2" | while IFS= read -r l; do pass "$T: ${l#PASS: }"; done
    grep -a '^FAIL: ' "$2" | while IFS= read -r l; do fail "$T: ${l#FAIL: }"; done
}

RUST_BACKTRACE=1 timeout 120 "$PP" server $ADDR:$PORT 2 >/tmp/rv.server.log 2>&1 &
SPID=$!
w=0; while [ $w -lt 100 ] && ! grep -q 'listening' /tmp/rv.server.log; do
    kill -0 $SPID 2>/dev/null || break; w=$((w+1)); sleep 0.1
done
grep -q 'listening' /tmp/rv.server.log && pass "$T: server listening on $ADDR:$PORT" ||
    fail "$T: server did not listen: $(cat /tmp/rv.server.log)"
RUST_BACKTRACE=1 timeout 120 "$PP" client $ADDR:$PORT 2 >/tmp/rv.client.log 2>&1; crc=$?
wait $SPID; src=$?
echo "--- server"; report server /tmp/rv.server.log
echo "--- client"; report client /tmp/rv.client.log
[ $src -eq 0 ] && pass "$T: server exited 0" || fail "$T: server exit status $src"
[ $crc -eq 0 ] && pass "$T: client exited 0" || fail "$T: client exit status $crc"
np=$(grep -ac '^PASS: ' /tmp/rv.server.log /tmp/rv.client.log | awk -F: '{s+=$2} END{print s}')
[ "${np:-0}" -ge 64 ] && pass "$T: $np checks passed in the two programs" || fail "$T: only ${np:-0} checks passed"
grep -qi 'panicked' /tmp/rv.server.log /tmp/rv.client.log && fail "$T: a program panicked"
rdma link delete rxe0 >/dev/null 2>&1
exit 0
