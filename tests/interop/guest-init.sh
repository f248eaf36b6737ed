#!/bin/sh
# guest-init.sh -- PID 1 (/init) of the nvmf-rs interop (linux-nvme-vm) initramfs.
#
# Runs inside the QEMU guest (Debian kernel + busybox-static + nvme-cli).
# Copied into the per-run initramfs as /init by run-vm.sh; not meant to run
# on the host.  Everything network-related uses the guest's own loopback
# (127.0.0.1); the guest has no NIC at all.
#
# Settings come from /etc/nvme-vm.conf (written by run-vm.sh):
#   NVMEVM_MODE=test|probe     probe: only print the boot marker and power off
#   NVMEVM_TARGET=1|0          configure the kernel nvmet target (configfs)
#   NVMEVM_BUILTIN=1|0         run the built-in nvme-cli loopback test
#   NVMEVM_UBLK=1|0            try to load ublk_drv and look for /dev/ublk-control
#   NVMEVM_SCRIPT="/extra/..." user script(s) to run after the built-in steps (space
#                              separated, run in order)
#   NVMEVM_SHARE=1|0           mount the 9p share "hostshare" at /mnt/host
#   NVMEVM_SHELL=1|0           drop to an interactive shell before powering off
#   NVMEVM_CAPTURE=1|0         tcpdump lo tcp ports 4420-4430 for the whole run, copied
#                              to /mnt/host/capture.pcap at the end
#   NVMEVM_TRACK=stable|backports|trixie   (trixie: Debian 13 userland, extra modules)
#   NVMEVM_SELFTESTS="auth tls ..."  built-in self-tests (/lib/nvme-vm/selftest.sh)
# Shared helper functions live in /lib/nvme-vm/lib.sh (also usable by
# user scripts: ". /lib/nvme-vm/lib.sh").

export PATH=/extra:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /tmp /run /mnt/host
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777,size=50% tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
[ -e /dev/console ] || mknod /dev/console c 5 1
exec </dev/console >/dev/console 2>&1

echo "NVMEVM: init started, kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"

. /etc/nvme-vm.conf
. /lib/nvme-vm/lib.sh

if [ "${NVMEVM_MODE:-test}" = probe ]; then
    echo "NVMEVM-EXIT-STATUS=0"
    poweroff -f
fi

hostname nvme-vm
ip link set lo up
ip addr show lo | sed 's/^/  /'
dmesg -n 4 2>/dev/null   # keep the kernel quiet on the console; 'dmesg' still has everything

nvmevm_load_modules
[ "${NVMEVM_SHARE:-0}" = 1 ] && nvmevm_mount_share
nvmevm_hostnqn
[ "${NVMEVM_CAPTURE:-0}" = 1 ] && nvmevm_capture_start /tmp/capture.pcap
[ "${NVMEVM_TARGET:-1}" = 1 ] && nvmevm_target_setup
[ "${NVMEVM_BUILTIN:-1}" = 1 ] && nvmevm_builtin_test
case " ${NVMEVM_SELFTESTS:-} " in
    *" ublk "*) ;;                      # the ublk self-test covers it
    *) [ "${NVMEVM_UBLK:-1}" = 1 ] && nvmevm_ublk_check ;;
esac
if [ -n "${NVMEVM_SELFTESTS:-}" ]; then
    . /lib/nvme-vm/selftest.sh
    nvmevm_selftests $NVMEVM_SELFTESTS
fi

for _script in ${NVMEVM_SCRIPT:-}; do
    echo "NVMEVM: ===== running user script $_script ====="
    chmod +x "$_script" 2>/dev/null
    (cd /extra && sh "$_script")
    rc=$?
    if [ $rc -eq 0 ]; then pass "user script $_script"; else fail "user script $_script (rc=$rc)"; fi
done

if [ "${NVMEVM_SHELL:-0}" = 1 ]; then
    echo "NVMEVM: interactive shell; 'exit' powers the guest off"
    setsid cttyhack sh -l
fi

if [ "${NVMEVM_CAPTURE:-0}" = 1 ]; then
    nvmevm_capture_stop
    nvmevm_copy_out /tmp/capture.pcap
fi

nvmevm_finish
