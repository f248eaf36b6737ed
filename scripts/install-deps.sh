#!/bin/bash
# scripts/install-deps.sh -- install (Debian, as root, apt-get) every system
# package the tests need, and only the ones that are missing.  Idempotent:
# a second run does nothing and needs no network.
#
#   qemu-system-x86 (+ -common/-data, seabios)   tests/interop (QEMU guest)
#   busybox-static nvme-cli cpio kmod xz-utils zstd e2fsprogs
#                                                 guest initramfs (tests/interop)
#   tcpdump                                       captures inside the guest
#   debootstrap                                   the trixie track's guest userland
#                                                 (tests/interop run-vm.sh --kernel trixie:
#                                                 the auth/tls suites), built once into
#                                                 $NVMEVM_CACHE
#   tshark                                        pcap decoding checks
#   iproute2                                      ip(8)
#   libssl-dev pkg-config                         building the openssl crate (the
#                                                 NVMe/TCP TLS channel, crates/transport)
#   libibverbs-dev librdmacm-dev                  rdma-core's headers: crates/rdma's layout
#                                                 test checks its hand-written declarations
#                                                 against them (the crate itself dlopens
#                                                 the libraries and links nothing)
#   ceph-mon ceph-osd ceph-mgr ceph-common librbd1
#                                                 the RBD backend's tests against a
#                                                 single-node cluster (scripts/ceph-cluster.sh)
#
# qemu: when qemu-utils >= 8 is already installed (this machine kind ships
# qemu-utils 10.x from bookworm-backports), bookworm's qemu-system-x86 7.2
# would remove it (qemu-utils Breaks qemu-system-common << 8.0), so the whole
# qemu-system set is taken from bookworm-backports then, as
# tests/interop/run-vm.sh does.  See tests/interop/README.md.
#
# Environment: NVMF_NO_INSTALL=1 only reports what is missing (exit 1 if any).
set -euo pipefail

log() { echo "install-deps: $*" >&2; }
die() { echo "install-deps: ERROR: $*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
MISSING_REPORTED=0

pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

apt_update() {
    [ $APT_UPDATED = 1 ] && return 0
    log "apt-get update"
    apt-get update -qq >&2
    APT_UPDATED=1
}

apt_install() {
    if [ "${NVMF_NO_INSTALL:-0}" = 1 ]; then
        log "missing: $*"; MISSING_REPORTED=1; return 0
    fi
    [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
    apt_update
    log "apt-get install $*"
    # -o Dpkg::Options: keep existing config files, never prompt
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >&2
}

ensure_backports_source() {
    if grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    [ "${NVMF_NO_INSTALL:-0}" = 1 ] && { log "missing: bookworm-backports apt source"; MISSING_REPORTED=1; return 0; }
    log "adding /etc/apt/sources.list.d/bookworm-backports.sources (default pin 100: nothing is upgraded from it unless asked)"
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '/^deb / && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$uri" ] || die "cannot find the Debian archive address in the apt sources"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
        >/etc/apt/sources.list.d/bookworm-backports.sources
    APT_UPDATED=0
}

command -v dpkg-query >/dev/null && command -v apt-get >/dev/null \
    || die "this script needs a Debian-based system (apt-get, dpkg-query)"

# --- plain packages -----------------------------------------------------------
need=()
for p in busybox-static nvme-cli cpio kmod xz-utils zstd e2fsprogs tcpdump iproute2 debootstrap libssl-dev pkg-config libibverbs-dev librdmacm-dev ceph-mon ceph-osd ceph-mgr ceph-common librbd1; do
    pkg_installed "$p" || need+=("$p")
done

# tshark: wireshark-common asks whether non-root users may capture; answer no
if ! pkg_installed tshark; then
    if [ "${NVMF_NO_INSTALL:-0}" != 1 ]; then
        pkg_installed debconf || die "debconf missing"
        echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
    fi
    need+=(tshark)
fi
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# --- qemu ---------------------------------------------------------------------
if ! command -v qemu-system-x86_64 >/dev/null; then
    qv=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [ -n "$qv" ] && pkg_installed qemu-utils && dpkg --compare-versions "$qv" ge 1:8; then
        log "qemu-utils $qv (>= 8) installed: taking qemu-system-x86 from bookworm-backports"
        ensure_backports_source
        apt_install qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
            qemu-system-data/bookworm-backports seabios/bookworm-backports
    else
        apt_install qemu-system-x86
    fi
fi

if [ "${NVMF_NO_INSTALL:-0}" = 1 ]; then
    [ $MISSING_REPORTED = 0 ] && log "all packages present" && exit 0
    exit 1
fi

# --- verify -------------------------------------------------------------------
for c in qemu-system-x86_64 nvme cpio depmod modprobe xz zstd mke2fs tcpdump tshark ip debootstrap; do
    command -v "$c" >/dev/null || die "$c still missing after install"
done
[ -x /bin/busybox ] || die "/bin/busybox missing"
log "ok: $(qemu-system-x86_64 --version | head -n1); $(nvme version | head -n1); $(tshark --version 2>/dev/null | head -n1)"
