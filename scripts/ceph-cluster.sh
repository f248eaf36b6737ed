#!/usr/bin/env bash
# ceph-cluster.sh start|stop|status DIR [PORT]: a single-node Ceph cluster on
# loopback for the RBD backend's tests: one monitor, one manager, one OSD on
# memstore (RAM, 2 GiB), no authentication (loopback only), no systemd; every
# file (configuration, monitor store, logs, sockets, pids) under DIR.
# `start` prints the path of ceph.conf; clients use it with CEPH_CONF=DIR/ceph.conf.
# Needs Debian's ceph-mon, ceph-osd, ceph-mgr and ceph-common (scripts/install-deps.sh).
set -euo pipefail
cmd=${1:?usage: ceph-cluster.sh start|stop|status DIR [PORT]}
dir=${2:?usage: ceph-cluster.sh start|stop|status DIR [PORT]}
port=${3:-3300}
conf=$dir/ceph.conf
log() { echo "ceph-cluster: $*" >&2; }

stop() {
    for p in "$dir"/run/*.pid; do
        [ -f "$p" ] || continue
        kill "$(cat "$p")" 2>/dev/null || true
    done
    for p in "$dir"/run/*.pid; do
        [ -f "$p" ] || continue
        for _ in $(seq 50); do kill -0 "$(cat "$p")" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$(cat "$p")" 2>/dev/null || true
        rm -f "$p"
    done
}

case $cmd in
stop) stop; exit 0 ;;
status) exec ceph -c "$conf" -s ;;
start) ;;
*) echo "usage: ceph-cluster.sh start|stop|status DIR [PORT]" >&2; exit 2 ;;
esac

for t in ceph-mon ceph-osd ceph-mgr ceph rbd monmaptool; do
    command -v $t >/dev/null || { log "$t is missing: run scripts/install-deps.sh (Debian's ceph-mon ceph-osd ceph-mgr ceph-common)"; exit 1; }
done
stop
rm -rf "$dir"; mkdir -p "$dir"/{mon.a,osd.0,mgr.x,run,log}
fsid=$(cat /proc/sys/kernel/random/uuid)
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = memstore
memstore device bytes = 2147483648
osd data = $dir/osd.\$id
mon data = $dir/mon.\$id
mgr data = $dir/mgr.\$id
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
keyring = /dev/null
ms bind ipv6 = false
public addr = 127.0.0.1
CONF
monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap"
ceph-mon -c "$conf" -i a
log "monitor up on 127.0.0.1:$port"
uuid=$(cat /proc/sys/kernel/random/uuid)
id=$(timeout 60 ceph -c "$conf" osd new "$uuid")
ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$uuid" 2>>"$dir/log/osd-mkfs.log"
ceph-osd -c "$conf" -i "$id"
ceph-mgr -c "$conf" -i x
for _ in $(seq 120); do
    ceph -c "$conf" osd stat 2>/dev/null | grep -q "1 up" && break
    sleep 0.5
done
ceph -c "$conf" osd stat | grep -q "1 up" || { log "the OSD did not come up"; tail -n 20 "$dir/log/osd.$id.log" >&2; exit 1; }
ceph -c "$conf" osd pool create rbd 16 >/dev/null 2>&1
ceph -c "$conf" osd pool set rbd size 1 --yes-i-really-mean-it >/dev/null 2>&1 || true
timeout 60 rbd -c "$conf" pool init rbd
log "osd.$id up, pool rbd ready"
echo "$conf"
