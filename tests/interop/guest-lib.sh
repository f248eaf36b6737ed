# guest-lib.sh -- helper functions for the nvmf-rs interop (linux-nvme-vm) guest.
# Installed as /lib/nvme-vm/lib.sh inside the initramfs.  Sourced by /init and
# usable from user scripts:   . /lib/nvme-vm/lib.sh
#
# Results are appended to /run/nvmevm-results, so PASS/FAIL lines printed by a
# user script (a child process) count in the final summary too.

NVMEVM_NQN=${NVMEVM_NQN:-nqn.2024-01.io.test:sub1}
NVMEVM_ADDR=${NVMEVM_ADDR:-127.0.0.1}
NVMEVM_PORT=${NVMEVM_PORT:-4420}
NVMEVM_NS_FILE=${NVMEVM_NS_FILE:-/tmp/nvmet-ns1.img}
NVMEVM_NS_SIZE_MB=${NVMEVM_NS_SIZE_MB:-256}
NVMET_CFS=/sys/kernel/config/nvmet
export NVMEVM_NQN NVMEVM_ADDR NVMEVM_PORT NVMEVM_NS_FILE

NVMEVM_RESULTS=/run/nvmevm-results

pass() { echo "PASS: $*"; echo "PASS $*" >>$NVMEVM_RESULTS; }
fail() { echo "FAIL: $*"; echo "FAIL $*" >>$NVMEVM_RESULTS; }
skip() { echo "SKIP: $*"; echo "SKIP $*" >>$NVMEVM_RESULTS; }

# check "description" cmd args...   -- run, show output indented, PASS/FAIL on rc
check() {
    _d=$1; shift
    echo "+ $*"
    "$@" >/tmp/.check.out 2>&1
    _rc=$?
    sed 's/^/    /' /tmp/.check.out
    if [ $_rc -eq 0 ]; then pass "$_d"; else fail "$_d (rc=$_rc)"; fi
    return $_rc
}

uptime_s() { cut -d' ' -f1 /proc/uptime; }
# listening PORT: something listens on TCP PORT (any address)
listening() { ss -ltn 2>/dev/null | grep -qE "[:.]$1[[:space:]]"; }

# nvmevm_stop_target TEST PID [NAME]: SIGTERM the target PID (called NAME in the
# result lines, "nvmf target" by default); PASS if it exits 0 within 5 s, FAIL
# (and SIGKILL) otherwise
nvmevm_stop_target() {
    _name=${3:-nvmf target}
    kill "$2" 2>/dev/null
    _w=0; while [ $_w -lt 50 ] && kill -0 "$2" 2>/dev/null; do _w=$((_w+1)); sleep 0.1; done
    if kill -0 "$2" 2>/dev/null; then
        fail "$1: $_name did not exit within 5 s of SIGTERM"; kill -9 "$2"; wait "$2" 2>/dev/null
    else
        wait "$2"; _rc=$?
        [ $_rc -eq 0 ] && pass "$1: $_name exited 0 on SIGTERM" || fail "$1: $_name exit status $_rc on SIGTERM"
    fi
    return 0
}

# nvmevm_start_rdma_target TEST LOG ADDR:PORT ARGS...: `nvmf target --listen
# rdma://ADDR:PORT ARGS...` in the background ($NVMF; its RUST_LOG is
# $TARGET_RUST_LOG, default info), TARGET_PID set; PASS once its log says it serves that address,
# else FAIL with the log and return 1 (an RDMA port has no TCP socket for
# `listening` to see)
nvmevm_start_rdma_target() {
    _t=$1 _log=$2 _at=$3; shift 3
    RUST_LOG=${TARGET_RUST_LOG:-info} "$NVMF" target --listen "rdma://$_at" "$@" >"$_log" 2>&1 &
    TARGET_PID=$!
    _w=0; while [ $_w -lt 200 ] && ! grep -q 'serving on' "$_log"; do kill -0 $TARGET_PID 2>/dev/null || break; _w=$((_w+1)); sleep 0.1; done
    if grep -q "serving on.*rdma://$_at" "$_log"; then
        pass "$_t: nvmf target serving rdma://$_at (pid $TARGET_PID)"
    else
        fail "$_t: nvmf target not serving RDMA"; sed 's/^/    /' "$_log"; return 1
    fi
}

# nvmevm_ana_cfg FILE NQN NSFILE CNTLID_MIN CNTLID_MAX PORT=STATE...: an nvmf
# target config listening on each PORT of 127.0.0.1, subsystem NQN with one
# 64 MiB file namespace NSFILE in ANA group 1, in STATE on each PORT; written
# whole (a reload by SIGHUP never reads half a file)
nvmevm_ana_cfg() {
    _f=$1 _nqn=$2 _ns=$3 _lo=$4 _hi=$5; shift 5
    _l=""
    for _ps in "$@"; do _l="$_l${_l:+, }\"127.0.0.1:${_ps%%=*}\""; done
    {
        echo "listen = [$_l]"
        for _ps in "$@"; do
            printf '[[ana_state]]\nport = "127.0.0.1:%s"\ngroup = 1\nstate = "%s"\n' "${_ps%%=*}" "${_ps#*=}"
        done
        printf '[[subsystem]]\nnqn = "%s"\ncntlid_min = %s\ncntlid_max = %s\n' "$_nqn" "$_lo" "$_hi"
        printf '[[subsystem.namespace]]\nfile = "%s"\nsize = "64M"\nana_group = 1\n' "$_ns"
    } >"$_f.tmp" && mv "$_f.tmp" "$_f"
}

# rate MB T0 -- print throughput of MB MiB moved since uptime T0
rate() { awk -v mb="$1" -v a="$2" -v b="$(uptime_s)" 'BEGIN{d=b-a; if(d<=0)d=0.01; printf "    -> %d MiB in %.2fs = %.1f MiB/s\n", mb, d, mb/d}'; }

# ---------------------------------------------------------------- modules ----
nvmevm_modprobe() {   # modprobe with a PASS/FAIL line
    if modprobe "$@" 2>/tmp/.modprobe.err; then
        pass "modprobe $*"
    else
        fail "modprobe $*: $(cat /tmp/.modprobe.err)"
        return 1
    fi
}

nvmevm_load_modules() {
    echo "NVMEVM: ===== loading kernel modules ====="
    nvmevm_modprobe configfs
    grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs configfs /sys/kernel/config
    if grep -q ' /sys/kernel/config configfs' /proc/mounts; then pass "configfs mounted at /sys/kernel/config"; else fail "configfs mount"; fi
    for m in nvme-core nvme-fabrics nvme-tcp nvmet nvmet-tcp loop; do
        nvmevm_modprobe $m
    done
    # null_blk: one 1 GiB device, not memory backed (reads return zeroes, writes are dropped)
    nvmevm_modprobe null_blk nr_devices=1 gb=1
    # CRC32C for optional header/data digests (soft dependency, load if present)
    modprobe crc32c-intel 2>/dev/null || modprobe crc32c_generic 2>/dev/null || true
    [ "${NVMEVM_TRACK:-}" = trixie ] && nvmevm_load_modules_trixie
    echo "  loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
}

# trixie track: TLS, DH-HMAC-CHAP and RDMA pieces.  Load what exists; a module
# that is built in (modules.builtin) counts as present; dummy/rxe links are set
# up by the rdma self-test (or nvmevm_rxe_setup), not here.
NVMEVM_TRIXIE_MODULES="nvme-keyring nvme-auth tls gcm ghash-generic ghash-clmulni-intel aesni-intel
 sha256-ssse3 sha512-ssse3 hmac sha256_generic sha512_generic dh_generic inet_diag tcp_diag
 crc32_generic crc32-pclmul ib_core rdma_cm ib_uverbs rdma_ucm rdma_rxe nvme-rdma nvmet-rdma"
nvmevm_load_modules_trixie() {
    _ok="" _bi="" _bad=""
    for m in $NVMEVM_TRIXIE_MODULES; do
        if modprobe $m 2>/tmp/.modprobe.err; then _ok="$_ok $m"
        elif grep -q "/$(echo $m | tr - _)\.ko\$\|/$m\.ko\$" /lib/modules/$(uname -r)/modules.builtin 2>/dev/null; then _bi="$_bi $m"
        else _bad="$_bad $m($(head -c 80 /tmp/.modprobe.err))"; fi
    done
    pass "trixie modules loaded:$_ok${_bi:+ (built in:$_bi)}"
    [ -z "$_bad" ] || fail "trixie modules not loadable:$_bad"
}

nvmevm_mount_share() {
    for m in virtio_pci 9pnet_virtio 9p; do modprobe $m 2>/dev/null; done
    if mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 hostshare /mnt/host; then
        pass "9p share mounted at /mnt/host"
        export PATH=$PATH:/mnt/host
    else
        fail "9p share mount"
    fi
}

# hostnqn/hostid for nvme-cli (random per boot), unless already there
nvmevm_hostnqn() {
    mkdir -p /etc/nvme
    if [ ! -s /etc/nvme/hostnqn ]; then
        _uuid=$(cat /proc/sys/kernel/random/uuid)
        echo "nqn.2014-08.org.nvmexpress:uuid:$_uuid" >/etc/nvme/hostnqn
        echo "$_uuid" >/etc/nvme/hostid
    fi
}

# nvmevm_copy_out FILE [NAME]: copy a guest file to the host through the 9p share
# (run-vm.sh --share DIR or --capture DIR): it lands as DIR/NAME (default: basename).
nvmevm_copy_out() {
    _src=$1; _name=${2:-$(basename "$1")}
    if ! grep -q ' /mnt/host 9p' /proc/mounts; then
        skip "copy $_src to the host: no 9p share (run-vm.sh --share DIR)"; return 1
    fi
    if cp "$_src" "/mnt/host/$_name" && sync; then
        pass "copied $_src to the host share as $_name ($(wc -c <"$_src") bytes)"
    else
        fail "copy $_src to the host share"; return 1
    fi
}

# nvmevm_capture_start FILE [FILTER...]: tcpdump on lo (default filter: tcp
# portrange 4420-4430) into FILE; needs /extra/tcpdump (run-vm.sh --tcpdump) or,
# on the trixie track, the userland's own /usr/bin/tcpdump.
# nvmevm_capture_stop stops it (and waits for the file to be flushed).
nvmevm_capture_start() {
    _cf=$1; shift
    [ $# -gt 0 ] || set -- tcp portrange 4420-4430
    _td=/extra/tcpdump
    [ -x $_td ] || _td=$(command -v tcpdump 2>/dev/null)
    if [ -z "$_td" ] || [ ! -x "$_td" ]; then skip "capture: no tcpdump in the guest (run-vm.sh --tcpdump)"; return 1; fi
    $_td -Z root -U -n -i lo -s 0 -w "$_cf" "$@" 2>/tmp/tcpdump.err &
    NVMEVM_CAPTURE_PID=$!
    echo $NVMEVM_CAPTURE_PID >/run/nvmevm-capture.pid
    # wait until tcpdump is listening (it prints "listening on lo" to stderr)
    _w=0
    while [ $_w -lt 50 ] && ! grep -q 'listening on' /tmp/tcpdump.err 2>/dev/null; do
        kill -0 $NVMEVM_CAPTURE_PID 2>/dev/null || break
        _w=$((_w+1)); sleep 0.1
    done
    if kill -0 $NVMEVM_CAPTURE_PID 2>/dev/null; then
        pass "tcpdump capturing on lo ($*) into $_cf"
    else
        fail "tcpdump did not start: $(cat /tmp/tcpdump.err)"; return 1
    fi
}

nvmevm_capture_stop() {
    _p=$(cat /run/nvmevm-capture.pid 2>/dev/null) || return 0
    kill "$_p" 2>/dev/null
    _w=0
    while [ $_w -lt 50 ] && kill -0 "$_p" 2>/dev/null; do _w=$((_w+1)); sleep 0.1; done
    rm -f /run/nvmevm-capture.pid
    sed 's/^/    tcpdump: /' /tmp/tcpdump.err 2>/dev/null
}

# ---------------------------------------------------------- nvmet target ----
# nvmevm_target_setup [NQN] [ADDR] [PORT]
#   subsystem NQN (allow_any_host=1)
#     nsid 1: file $NVMEVM_NS_FILE on tmpfs (buffered_io=1, tmpfs has no O_DIRECT)
#     nsid 2: /dev/nullb0 (null_blk) if present
#   port 1: tcp ipv4 ADDR:PORT.  The kernel discovery subsystem
#   (nqn.2014-08.org.nvmexpress.discovery) is served on every nvmet port.
nvmevm_target_setup() {
    _nqn=${1:-$NVMEVM_NQN}; _addr=${2:-$NVMEVM_ADDR}; _port=${3:-$NVMEVM_PORT}
    echo "NVMEVM: ===== configuring kernel nvmet target $_nqn on tcp $_addr:$_port ====="
    _s=$NVMET_CFS/subsystems/$_nqn
    (
        set -e
        mkdir $_s
        echo 1 >$_s/attr_allow_any_host
        [ -e $_s/attr_model ] && echo -n "linux-nvme-vm nvmet" >$_s/attr_model
        echo -n nvmevm0001 >$_s/attr_serial
        truncate -s ${NVMEVM_NS_SIZE_MB}M $NVMEVM_NS_FILE
        mkdir $_s/namespaces/1
        echo -n $NVMEVM_NS_FILE >$_s/namespaces/1/device_path
        echo 1 >$_s/namespaces/1/buffered_io
        echo 1 >$_s/namespaces/1/enable
        if [ -b /dev/nullb0 ]; then
            mkdir $_s/namespaces/2
            echo -n /dev/nullb0 >$_s/namespaces/2/device_path
            echo 1 >$_s/namespaces/2/enable
        fi
        mkdir $NVMET_CFS/ports/1
        echo -n tcp >$NVMET_CFS/ports/1/addr_trtype
        echo -n ipv4 >$NVMET_CFS/ports/1/addr_adrfam
        echo -n $_addr >$NVMET_CFS/ports/1/addr_traddr
        echo -n $_port >$NVMET_CFS/ports/1/addr_trsvcid
        ln -s $_s $NVMET_CFS/ports/1/subsystems/$_nqn
    )
    _rc=$?
    if [ $_rc -eq 0 ]; then
        pass "nvmet target configured ($_nqn, tcp $_addr:$_port, ns1=file ${NVMEVM_NS_SIZE_MB}MiB$([ -b /dev/nullb0 ] && echo ', ns2=/dev/nullb0'))"
    else
        fail "nvmet target configuration"
        return 1
    fi
    # is the port listening?  (busybox netstat)
    netstat -ltn 2>/dev/null | grep -E "[:.]$_port " | sed 's/^/    /'
    dmesg | grep -E 'nvmet' | tail -n 5 | sed 's/^/    dmesg: /'
}

nvmevm_target_teardown() {
    _nqn=${1:-$NVMEVM_NQN}
    rm -f $NVMET_CFS/ports/1/subsystems/$_nqn 2>/dev/null
    rmdir $NVMET_CFS/ports/1 2>/dev/null
    for n in $NVMET_CFS/subsystems/$_nqn/namespaces/*; do
        [ -d "$n" ] || continue
        echo 0 >$n/enable; rmdir $n
    done
    rmdir $NVMET_CFS/subsystems/$_nqn 2>/dev/null
    if [ -e $NVMET_CFS/subsystems/$_nqn ]; then fail "nvmet target teardown"; return 1; fi
    pass "nvmet target removed ($_nqn)"
}

# block device (e.g. /dev/nvme0n1) of namespace NSID (default 1) of the
# subsystem NQN connected on this host; prints nothing and fails if none.
# NB: the "nY" in nvmeXnY is an instance number, NOT the NSID (6.12 scans
# namespaces asynchronously and nsid 2 may well become nvme0n1), so match the
# "nsid" sysfs attribute.
nvmevm_ns_dev() {
    _nqn=$1; _nsid=${2:-1}
    # native NVMe multipath (Debian default): head disks under the nvme-subsystem device;
    # nvme_core.multipath=0: disks directly under the controller
    for s in /sys/class/nvme-subsystem/nvme-subsys* /sys/class/nvme/nvme*; do
        [ -e "$s/subsysnqn" ] && [ "$(cat $s/subsysnqn)" = "$_nqn" ] || continue
        for b in $s/nvme*n*; do
            [ -e "$b/dev" ] && [ -e "$b/nsid" ] || continue
            case "$(basename $b)" in *c*n*) continue ;; esac   # hidden multipath path device
            [ "$(cat $b/nsid)" = "$_nsid" ] && { echo /dev/$(basename $b); return 0; }
        done
    done
    return 1
}

# nvmevm_wait_ns_dev NQN NSID [TENTHS]: like nvmevm_ns_dev, waiting up to TENTHS/10 s (default 10 s)
nvmevm_wait_ns_dev() {
    _w=0
    while [ $_w -lt ${3:-100} ]; do
        nvmevm_ns_dev "$1" "$2" && return 0
        _w=$((_w+1)); sleep 0.1
    done
    return 1
}

nvmevm_ctrl_dev() {
    for c in /sys/class/nvme/nvme*; do
        [ -e "$c/subsysnqn" ] && [ "$(cat $c/subsysnqn)" = "$1" ] && { echo /dev/$(basename $c); return 0; }
    done
    return 1
}

# ------------------------------------------- built-in nvme-cli loopback test
nvmevm_builtin_test() {
    _nqn=$NVMEVM_NQN
    echo "NVMEVM: ===== nvme-cli (kernel host) -> kernel nvmet target over tcp $NVMEVM_ADDR:$NVMEVM_PORT ====="
    nvmevm_hostnqn
    echo "  hostnqn: $(cat /etc/nvme/hostnqn)"
    nvme version 2>&1 | sed 's/^/  /'

    echo "--- nvme discover"
    nvme discover -t tcp -a $NVMEVM_ADDR -s $NVMEVM_PORT >/tmp/discover.out 2>&1
    _rc=$?
    sed 's/^/    /' /tmp/discover.out
    if [ $_rc -eq 0 ] && grep -q "subnqn: *$_nqn" /tmp/discover.out; then
        pass "nvme discover lists $_nqn"
    else
        fail "nvme discover (rc=$_rc)"
    fi

    echo "--- nvme connect"
    check "nvme connect -t tcp -n $_nqn -a $NVMEVM_ADDR -s $NVMEVM_PORT" \
        nvme connect -t tcp -n $_nqn -a $NVMEVM_ADDR -s $NVMEVM_PORT
    _dev=$(nvmevm_wait_ns_dev $_nqn 1)
    _ctrl=$(nvmevm_ctrl_dev $_nqn)
    if [ -n "$_dev" ]; then pass "namespace nsid 1 (file) is block device $_dev (controller $_ctrl)"; else fail "no namespace block device after connect"; ls -l /dev/nvme* /sys/class/nvme-subsystem/* /sys/class/nvme/* 2>&1 | sed 's/^/    /'; return 1; fi
    _dev2=; [ -b /dev/nullb0 ] && _dev2=$(nvmevm_wait_ns_dev $_nqn 2) && pass "namespace nsid 2 (null_blk) is block device $_dev2"

    echo "--- nvme list"
    check "nvme list" nvme list
    grep -q "$(basename $_dev)" /tmp/.check.out && pass "nvme list shows $_dev" || fail "nvme list does not show $_dev"
    echo "--- nvme list-subsys"
    nvme list-subsys 2>&1 | sed 's/^/    /'

    echo "--- nvme id-ctrl $_ctrl (key fields)"
    if nvme id-ctrl $_ctrl >/tmp/idctrl.out 2>&1; then
        grep -E '^(vid|ssvid|sn|mn|fr|rab|ieee|cntlid|ver|mdts|nn|sqes|cqes|maxcmd|ioccsz|iorcsz|subnqn|cntrltype|oacs|oncs|vwc|sgls) ' /tmp/idctrl.out | sed 's/^/    /'
        grep -q "^subnqn *: *$_nqn" /tmp/idctrl.out && pass "nvme id-ctrl subnqn = $_nqn" || fail "nvme id-ctrl subnqn mismatch"
    else
        sed 's/^/    /' /tmp/idctrl.out; fail "nvme id-ctrl"
    fi
    echo "--- nvme id-ns $_dev (key fields)"
    nvme id-ns $_dev 2>&1 | grep -E '^(nsze|ncap|nuse|nlbaf|flbas|lbaf  0|nguid|eui64) ' | sed 's/^/    /'

    echo "--- dd write/read-back through $_dev"
    _mb=16
    dd if=/dev/urandom of=/tmp/pattern bs=1M count=$_mb 2>/dev/null
    _t=$(uptime_s)
    check "dd write ${_mb}MiB to $_dev (O_DIRECT)" dd if=/tmp/pattern of=$_dev bs=1M count=$_mb oflag=direct conv=fsync
    rate $_mb $_t
    sync; echo 3 >/proc/sys/vm/drop_caches
    _t=$(uptime_s)
    check "dd read ${_mb}MiB back from $_dev (O_DIRECT)" dd if=$_dev of=/tmp/readback bs=1M count=$_mb iflag=direct
    rate $_mb $_t
    if cmp /tmp/pattern /tmp/readback; then pass "read-back data identical ($(md5sum </tmp/pattern | cut -d' ' -f1))"; else fail "read-back data differs"; fi
    # the data must have landed in the target's backing file too
    dd if=$NVMEVM_NS_FILE of=/tmp/backing bs=1M count=$_mb 2>/dev/null
    if cmp /tmp/pattern /tmp/backing; then pass "target backing file $NVMEVM_NS_FILE holds the written data"; else fail "target backing file content differs"; fi
    rm -f /tmp/pattern /tmp/readback /tmp/backing
    if [ -n "$_dev2" ] && [ -b "$_dev2" ]; then
        _t=$(uptime_s)
        check "dd read 256MiB from null_blk namespace $_dev2" dd if=$_dev2 of=/dev/null bs=1M count=256 iflag=direct
        rate 256 $_t
    fi

    echo "--- nvme disconnect"
    nvme disconnect -n $_nqn >/tmp/disc.out 2>&1; _rc=$?
    sed 's/^/    /' /tmp/disc.out
    if [ $_rc -eq 0 ] && grep -q 'disconnected 1 controller' /tmp/disc.out; then pass "nvme disconnect -n $_nqn"; else fail "nvme disconnect (rc=$_rc)"; fi
    sleep 0.5
    if [ -b "$_dev" ] || nvmevm_ctrl_dev $_nqn >/dev/null; then fail "controller/namespace still present after disconnect"; else pass "$_dev gone after disconnect"; fi
}

nvmevm_ublk_check() {
    echo "NVMEVM: ===== ublk ====="
    # NVMEVM_UBLK_CONFIG is CONFIG_BLK_DEV_UBLK of the booted kernel (m, y or n),
    # read from /boot/config-* on the host by run-vm.sh.
    if modprobe ublk_drv 2>/tmp/.ublk.err; then
        pass "modprobe ublk_drv"
        if [ -c /dev/ublk-control ]; then pass "/dev/ublk-control present: $(ls -l /dev/ublk-control)"; else fail "/dev/ublk-control missing"; fi
    elif [ "${NVMEVM_UBLK_CONFIG:-?}" = n ]; then
        skip "ublk_drv: not built in kernel $(uname -r) (CONFIG_BLK_DEV_UBLK is not set); modprobe says: $(cat /tmp/.ublk.err); use run-vm.sh --kernel backports"
    else
        fail "modprobe ublk_drv: $(cat /tmp/.ublk.err)"
    fi
}

nvmevm_finish() {
    _np=$(grep -c '^PASS' $NVMEVM_RESULTS 2>/dev/null); _nf=$(grep -c '^FAIL' $NVMEVM_RESULTS 2>/dev/null)
    _ns=$(grep -c '^SKIP' $NVMEVM_RESULTS 2>/dev/null)
    echo "NVMEVM: ===== summary: ${_np:-0} passed, ${_nf:-0} failed, ${_ns:-0} skipped ====="
    grep '^FAIL' $NVMEVM_RESULTS 2>/dev/null | sed 's/^FAIL /  FAILED: /'
    _st=0; [ "${_nf:-0}" -gt 0 ] && _st=1
    [ -z "$(cat $NVMEVM_RESULTS 2>/dev/null)" ] && _st=2
    echo "NVMEVM: guest uptime $(cut -d' ' -f1 /proc/uptime)s"
    echo "NVMEVM-EXIT-STATUS=$_st"
    sync
    poweroff -f
}
