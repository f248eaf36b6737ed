#!/bin/sh
# Guest script (run-vm.sh --kernel trixie --no-target --script): prints nvme-cli /
# libnvme derived TLS PSKs for fixed configured keys, as known answers for
# crates/proto/src/tls/psk.rs.
. /lib/nvme-vm/lib.sh
H=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001
S=nqn.2024-01.io.test:tls
echo "KAT nvme version: $(nvme version | tr '\n' ' ')"
keyctl newring .nvme @u >/dev/null 2>&1 || true
for spec in "1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" \
            "2:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f"; do
  h=${spec%%:*}; sec=${spec#*:}
  key=$(nvme gen-tls-key --secret=$sec --hmac=$h --hostnqn=$H --subsysnqn=$S 2>&1 | grep -o 'NVMeTLSkey-1:[^ ]*' | head -n1)
  echo "KAT configured hmac=$h secret=$sec key=$key"
  for id in 0 1; do
    out=$(nvme check-tls-key --keydata=$key --hostnqn=$H --subsysnqn=$S --identity=$id --insert 2>&1)
    echo "KAT check hmac=$h identity=$id: $out"
    kid=$(echo "$out" | grep -o 'key [0-9a-f]*' | awk '{print $2}')
    echo "KAT tlspsk hmac=$h identity=$id hex=$(keyctl pipe $((0x$kid)) 2>&1 | od -An -tx1 -v | tr -d ' \n')"
    rm -f /tmp/kf; nvme check-tls-key --keydata=$key --hostnqn=$H --subsysnqn=$S --identity=$id --keyfile=/tmp/kf >/dev/null 2>&1
    echo "KAT keyfile hmac=$h identity=$id: $(cat /tmp/kf 2>&1)"
  done
done
keyctl show %:.nvme 2>&1 | sed 's/^/KAT keyring: /'
for k in $(keyctl rlist %:.nvme 2>/dev/null); do
  echo "KAT key $k desc=$(keyctl rdescribe $k 2>&1)"
  echo "KAT key $k hex=$(keyctl pipe $k 2>&1 | od -An -tx1 -v | tr -d ' \n')"
done
exit 0
