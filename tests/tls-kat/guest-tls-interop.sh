#!/bin/sh
# Guest script (run-vm.sh --kernel trixie --selftest none --extra target/release/nvmf
# --script): NVMe/TCP TLS between nvmf-rs and the Linux 6.12 kernel (tlshd).
#  A. kernel host (nvme connect --tls, key in .nvme via nvme check-tls-key --insert)
#     -> nvmf target --tls --tls-key K --tls-compat; dd/cmp
#  B. nvmf io-check --tls-key K --tls-compat -> kernel nvmet port addr_tsas=tls1.3
#     addr_treq=required
. /lib/nvme-vm/lib.sh
KEY=NVMeTLSkey-1:01:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+KfiaR:
H=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-0000000000aa
mkdir -p /etc/nvme; echo "$H" >/etc/nvme/hostnqn
S=nqn.2024-01.io.nvmf-rs:tls
CFS=/sys/kernel/config/nvmet
echo "TLS host NQN $H"
[ -s /etc/tlshd.conf ] || printf '[debug]\nloglevel=0\ntls=0\nnl=0\n[authenticate]\n[authenticate.client]\n[authenticate.server]\n' >/etc/tlshd.conf
tlshd -s >/tmp/tlshd.log 2>&1 &
sleep 1
keyctl newring .nvme @u >/dev/null 2>&1 || true
out=$(nvme check-tls-key --keydata=$KEY --hostnqn="$H" --subsysnqn=$S --identity=0 --insert 2>&1); echo "TLS insert: $out"
# discovery over TLS needs a key for the discovery NQN too
D=nqn.2014-08.org.nvmexpress.discovery
out=$(nvme check-tls-key --keydata=$KEY --hostnqn="$H" --subsysnqn=$D --identity=0 --insert 2>&1); echo "TLS insert (discovery): $out"
keyctl show %:.nvme 2>&1 | sed 's/^/    /'

# ---- A: our target, kernel host
nvmf target --listen 127.0.0.1:4430 --subnqn $S --memory 64M --tls --tls-key $KEY --tls-compat >/tmp/tgt.log 2>&1 &
TP=$!
sleep 1
check "A: nvme discover --tls (our TLS port)" nvme discover -t tcp -a 127.0.0.1 -s 4430 --hostnqn="$H" --tls
if nvme connect -t tcp -a 127.0.0.1 -s 4430 -n $S --hostnqn="$H" 2>&1 | sed 's/^/    /'; [ -n "$(nvmevm_ctrl_dev $S 2>/dev/null)" ]; then
    fail "A: plain connect to the TLS port succeeded"; nvme disconnect -n $S >/dev/null 2>&1
else pass "A: plain connect to our TLS-required port refused"; fi
if check "A: nvme connect --tls to nvmf target" nvme connect -t tcp -a 127.0.0.1 -s 4430 -n $S --hostnqn="$H" --tls; then
    dev=$(nvmevm_wait_ns_dev $S 1) && pass "A: ns1 = $dev"
    c=$(nvmevm_ctrl_dev $S); echo "    tls_key: $(cat /sys/class/nvme/${c#/dev/}/tls_key 2>&1)"
    dd if=/dev/urandom of=/tmp/a.src bs=1M count=16 2>/dev/null
    check "A: dd write 16 MiB" dd if=/tmp/a.src of=$dev bs=1M count=16 oflag=direct
    check "A: dd read 16 MiB" dd if=$dev of=/tmp/a.dst bs=1M count=16 iflag=direct
    check "A: cmp" cmp /tmp/a.src /tmp/a.dst
    check "A: disconnect" nvme disconnect -n $S
fi
kill $TP; sleep 0.3
echo "--- target log"; sed 's/^/    /' /tmp/tgt.log | tail -n 15

# ---- B: kernel nvmet TLS port, our host
S2=nqn.2024-01.io.test:tls2
mkdir $CFS/subsystems/$S2 && echo 1 >$CFS/subsystems/$S2/attr_allow_any_host
truncate -s 64M /tmp/b.img
mkdir $CFS/subsystems/$S2/namespaces/1 && echo -n /tmp/b.img >$CFS/subsystems/$S2/namespaces/1/device_path && echo 1 >$CFS/subsystems/$S2/namespaces/1/buffered_io && echo 1 >$CFS/subsystems/$S2/namespaces/1/enable
P=$CFS/ports/7; mkdir $P
echo -n tcp >$P/addr_trtype; echo -n ipv4 >$P/addr_adrfam; echo -n 127.0.0.1 >$P/addr_traddr; echo -n 4423 >$P/addr_trsvcid
echo -n tls1.3 >$P/addr_tsas; echo -n required >$P/addr_treq
ln -s $CFS/subsystems/$S2 $P/subsystems/$S2 && pass "B: nvmet TLS port 4423 tsas=$(cat $P/addr_tsas) treq=$(cat $P/addr_treq)"
out=$(nvme check-tls-key --keydata=$KEY --hostnqn="$H" --subsysnqn=$S2 --identity=0 --insert 2>&1); echo "TLS insert: $out"
check "B: nvmf io-check --tls-key against kernel nvmet" nvmf io-check -t tcp -a 127.0.0.1 -s 4423 -n $S2 -q "$H" --tls-key $KEY --tls-compat --bytes 16M
if nvmf io-check -t tcp -a 127.0.0.1 -s 4423 -n $S2 -q "$H" --bytes 1M >/tmp/b.plain 2>&1; then fail "B: plain io-check to nvmet TLS port succeeded"; else pass "B: plain io-check refused: $(tail -n1 /tmp/b.plain)"; fi
if nvmf io-check -t tcp -a 127.0.0.1 -s 4423 -n $S2 -q "$H" --tls-key $KEY --bytes 1M >/tmp/b.spec 2>&1; then echo "    B: spec derivation also accepted"; else echo "    B: spec derivation refused (expected with a key from nvme-cli 2.13): $(tail -n1 /tmp/b.spec)"; fi
check "B: nvmf discover --tls against kernel nvmet" nvmf discover -t tcp -a 127.0.0.1 -s 4423 -q "$H" --tls --tls-key $KEY --tls-compat
echo "--- tlshd log"; grep -i "handshake" /tmp/tlshd.log | tail -n 8 | sed 's/^/    /'
exit 0
