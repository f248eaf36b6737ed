#!/bin/bash
# run-vm.sh -- nvmf-rs interop harness (adapted from the team's linux-nvme-vm).
# Boots Debian's own kernel (linux-image-amd64) under QEMU with a
# small busybox + nvme-cli + e2fsprogs initramfs and test the Linux NVMe/TCP target (nvmet)
# and host (nvme-tcp) against each other on the guest's loopback, optionally
# running extra programs / a script from the host inside the guest.
#
# usage: run-vm.sh [--extra FILE]... [--script GUEST_SCRIPT] [options]   (see --help)
#
# The guest has NO network device (-nodefaults -nic none); all NVMe/TCP traffic
# stays on the guest's 127.0.0.1.  Exit status = the guest's status
# (0 all PASS, 1 some FAIL), 124 on timeout, 125 if the guest never reported.
#
# Tracks (--kernel): stable / backports boot Debian bookworm's kernel with a
# busybox + host-nvme-cli initramfs; trixie boots Debian 13's kernel with a
# cached debootstrap'ed trixie userland (nvme-cli 2.13, tlshd, keyctl, fio,
# tcpdump, rdma-core) as the initramfs and can run kernel<->kernel self-tests
# (--selftest).  The security suites (auth, tls) of run.sh use it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${NVMEVM_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/nvmf-rs-vm}
BASE_FORMAT=4          # bump when the content of the base initramfs changes

usage() {
    cat <<'EOF'
usage: run-vm.sh [--extra FILE]... [--script GUEST_SCRIPT] [options]

  --extra FILE        copy FILE into the guest as /extra/<name> (repeatable; /extra is on
                      PATH; shared libraries of dynamically linked ELF files are copied too)
  --script FILE       guest shell script, copied to /extra/<name> and run with sh after the
                      built-in steps; its exit code counts as a PASS/FAIL (repeatable: the
                      scripts run one after the other, in the order given).  It may
                      ". /lib/nvme-vm/lib.sh" for pass/fail/check and nvmet helpers.
  --env NAME=VALUE    export NAME=VALUE to /init and the guest script (repeatable)
  --share DIR         also export host DIR read-write via virtio-9p, mounted at /mnt/host
                      (guest scripts copy files back with nvmevm_copy_out FILE)
  --tcpdump           copy the host's tcpdump (and its libraries) into the guest as
                      /extra/tcpdump (installed with apt-get if missing)
  --capture DIR       capture all NVMe/TCP traffic on the guest's lo (tcp port 4420-4430)
                      for the whole run into DIR/capture.pcap on the host; implies
                      --tcpdump and --share DIR
  --with-fio          add fio (Debian's package + the libraries it needs, fetched with
                      apt-get download and unpacked with dpkg -x into the cache; nothing
                      is installed on the host) to the guest as /usr/bin/fio
  --no-target         do not configure the kernel nvmet target (frees 127.0.0.1:4420 for a
                      userspace target); implies --no-builtin-test
  --no-builtin-test   configure the nvmet target but skip the nvme-cli loopback test
  --no-ublk           skip the ublk_drv / /dev/ublk-control check
  --shell             interactive busybox shell on the console before power-off
  --kernel TRACK      stable (default: bookworm linux-image-amd64, 6.1.x),
                      backports (bookworm-backports linux-image-amd64, 6.12.x, has ublk) or
                      trixie (Debian 13 linux-image-amd64 6.12.x AND a Debian 13 userland:
                      nvme-cli 2.13, tlshd, keyctl, fio, tcpdump, iproute2/rdma, rdma-core;
                      built once with debootstrap into the cache and booted as the initramfs)
  --selftest LIST     built-in kernel<->kernel self-tests (guest-selftest.sh), comma
                      separated: auth,tls,ana,rdma,ublk,fio, or all, or none (default: none;
                      a test whose tools or kernel features are missing reports SKIP)
  --accel A           auto (default: kvm if a probe boot works, else tcg), kvm, tcg
  --cpu MODEL         QEMU -cpu model (default: host with kvm, max with tcg)
  --mem MB            guest memory (default 2048)
  --smp N             guest CPUs (default: host CPUs, max 4)
  --timeout SEC       kill QEMU after SEC seconds (default 900)
  --append ARGS       extra kernel command line arguments
  --verbose-kernel    show kernel messages on the console (loglevel=7)
  --bzimage           boot the compressed vmlinuz via SeaBIOS instead of the extracted
                      vmlinux via PVH (PVH saves ~6 s of in-guest decompression under TCG)
  --rebuild           rebuild the cached base initramfs
  --no-install        do not apt-get install missing packages
  -h, --help          this text

Cache (kernel .deb, extracted kernel, base initramfs, trixie userland and apt lists,
console logs): $NVMEVM_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/nvmf-rs-vm).
runs/last-console.log is the latest console.
EOF
}

log() { echo "run-vm: $*" >&2; }
die() { echo "run-vm: ERROR: $*" >&2; exit 125; }

EXTRAS=() ENVS=() SCRIPTS=() SHARE="" CAPTURE=0 TCPDUMP=0 TARGET=1 BUILTIN=1 UBLK=1 SHELL_MODE=0
TRACK=stable ACCEL=auto MEM=2048 SMP=$(( $(nproc) > 4 ? 4 : $(nproc) )) TIMEOUT=900
APPEND="" LOGLEVEL=4 REBUILD=0 INSTALL=1 CPU_MODEL="" BZIMAGE=0 WITH_FIO=0 SELFTESTS=none
ALL_SELFTESTS="auth tls ana rdma ublk fio"
while [ $# -gt 0 ]; do
    case "$1" in
        --extra) EXTRAS+=("$2"); shift 2 ;;
        --extra=*) EXTRAS+=("${1#*=}"); shift ;;
        --script) SCRIPTS+=("$2"); shift 2 ;;
        --script=*) SCRIPTS+=("${1#*=}"); shift ;;
        --share) SHARE=$2; shift 2 ;;
        --env) ENVS+=("$2"); shift 2 ;;
        --tcpdump) TCPDUMP=1; shift ;;
        --with-fio) WITH_FIO=1; shift ;;
        --capture) SHARE=$2; CAPTURE=1; TCPDUMP=1; shift 2 ;;
        --no-target) TARGET=0; BUILTIN=0; shift ;;
        --no-builtin-test) BUILTIN=0; shift ;;
        --no-ublk) UBLK=0; shift ;;
        --shell) SHELL_MODE=1; shift ;;
        --kernel) TRACK=$2; shift 2 ;;
        --kernel=*) TRACK=${1#*=}; shift ;;
        --selftest|--selftests) SELFTESTS=$2; shift 2 ;;
        --selftest=*|--selftests=*) SELFTESTS=${1#*=}; shift ;;
        --accel) ACCEL=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --cpu) CPU_MODEL=$2; shift 2 ;;
        --smp) SMP=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --append) APPEND=$2; shift 2 ;;
        --verbose-kernel) LOGLEVEL=7; shift ;;
        --bzimage) BZIMAGE=1; shift ;;
        --rebuild) REBUILD=1; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
for kv in "${ENVS[@]}"; do
    [[ "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants NAME=VALUE, got: $kv"
done
case "$TRACK" in stable|backports|trixie) ;; *) die "--kernel must be stable, backports or trixie" ;; esac
# self-test list -> space separated, validated
if [ "$SELFTESTS" = all ]; then SELFTESTS=$ALL_SELFTESTS
elif [ "$SELFTESTS" = none ]; then SELFTESTS=""
else
    _st=""
    for t in ${SELFTESTS//,/ }; do
        case " $ALL_SELFTESTS " in *" $t "*) _st+="$t " ;; *) die "--selftest: unknown test '$t' (known: ${ALL_SELFTESTS// /,}, all, none)" ;; esac
    done
    SELFTESTS=$_st
fi
SELFTESTS=$(echo $SELFTESTS)
case "$ACCEL" in auto|kvm|tcg) ;; *) die "--accel must be auto, kvm or tcg" ;; esac
for f in "${EXTRAS[@]}" "${SCRIPTS[@]}"; do [ -f "$f" ] || die "no such file: $f"; done
[ -z "$SHARE" ] || [ $CAPTURE = 0 ] || mkdir -p "$SHARE"
[ -z "$SHARE" ] || [ -d "$SHARE" ] || die "no such directory: $SHARE"
[ -z "$SHARE" ] || SHARE=$(cd "$SHARE" && pwd)

mkdir -p "$CACHE"/{debs,kernels,initramfs,runs}
[ "$TRACK" = trixie ] && mkdir -p "$CACHE/userland"

# ----------------------------------------------------------------- packages --
APT_UPDATED=0
apt_update() { [ $APT_UPDATED = 1 ] || { log "apt-get update"; apt-get update -qq; APT_UPDATED=1; }; }
apt_install() {
    [ $INSTALL = 1 ] || die "missing packages: $* (run without --no-install)"
    apt_update
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

# the Debian archive address that this machine's own apt source already names
archive_uri() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    [ -n "$uri" ] || uri=$(awk '/^deb / && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$uri" ] || die "cannot find the Debian archive address in the apt sources"
    echo "$uri"
}

# trixie package lists, private to the cache: the system's apt configuration is
# not touched.  TAPT = the apt-get/apt-cache options that select them.
TAPT_DIR=$CACHE/apt-trixie
TAPT=(-o "Dir::Etc::sourcelist=$TAPT_DIR/sources.list" -o Dir::Etc::sourceparts=-
      -o "Dir::State::Lists=$TAPT_DIR/lists" -o "Dir::Cache=$TAPT_DIR/cache")
trixie_apt_update() {   # $1=force: update even when lists are present
    mkdir -p "$TAPT_DIR"/{lists/partial,cache/archives/partial}
    local src
    src="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(archive_uri) trixie main"
    [ "$(cat "$TAPT_DIR/sources.list" 2>/dev/null)" = "$src" ] || { echo "$src" >"$TAPT_DIR/sources.list"; set -- force; }
    if [ "${1:-}" = force ] || ! ls "$TAPT_DIR"/lists/*_Packages* >/dev/null 2>&1; then
        log "apt-get update of the trixie package lists in $TAPT_DIR"
        apt-get "${TAPT[@]}" update -qq 2>&1 | { grep -v unsandboxed >&2 || true; }
    fi
}

ensure_backports_source() {
    if ! grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        [ $INSTALL = 1 ] || die "bookworm-backports apt source missing"
        log "adding /etc/apt/sources.list.d/bookworm-backports.sources (default pin 100: nothing is upgraded from it unless asked)"
        # reuse the archive address that this machine's own Debian source already names
        local uri
        uri=$(archive_uri)
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$uri" \
            >/etc/apt/sources.list.d/bookworm-backports.sources
        APT_UPDATED=0
    fi
}

ensure_packages() {
    local need=()
    pkg_installed busybox-static || need+=(busybox-static)
    pkg_installed nvme-cli || need+=(nvme-cli)
    pkg_installed cpio || need+=(cpio)
    pkg_installed kmod || need+=(kmod)
    pkg_installed xz-utils || need+=(xz-utils)
    pkg_installed zstd || need+=(zstd)
    pkg_installed e2fsprogs || need+=(e2fsprogs)          # mke2fs/e2fsck for the guest
    pkg_installed iproute2 || need+=(iproute2)            # ip (netns, veth) + tc (netem) for the guest
    # (trixie: the guest's tcpdump comes from the trixie userland; debootstrap builds it)
    [ $TCPDUMP = 0 ] || [ "$TRACK" = trixie ] || pkg_installed tcpdump || need+=(tcpdump)
    [ "$TRACK" = trixie ] && ! command -v debootstrap >/dev/null && need+=(debootstrap)
    [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
    if ! command -v qemu-system-x86_64 >/dev/null; then
        # qemu-utils 10.x from bookworm-backports (if installed) Breaks
        # qemu-system-common << 8.0, so bookworm's 7.2 would remove it:
        # take the whole qemu-system set from backports in that case.
        local qv
        qv=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
        if [ -n "$qv" ] && dpkg --compare-versions "$qv" ge 1:8; then
            ensure_backports_source
            apt_install qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
                qemu-system-data/bookworm-backports seabios/bookworm-backports
        else
            apt_install qemu-system-x86
        fi
    fi
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 still missing"
}

# ------------------------------------------------------------------- kernel --
# Sets KV, KDIR (extracted package root), VMLINUZ, KCONFIG.
ensure_kernel() {
    local meta=linux-image-amd64 pkg="" deb apt=(apt-cache) aptget=(apt-get)
    [ "$TRACK" = backports ] && { ensure_backports_source; apt_update; meta=linux-image-amd64/bookworm-backports; }
    if [ "$TRACK" = trixie ]; then
        trixie_apt_update; apt=(apt-cache "${TAPT[@]}"); aptget=(apt-get "${TAPT[@]}")
    fi
    pkg=$("${apt[@]}" depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}') || true
    if [ -z "$pkg" ]; then
        if [ "$TRACK" = trixie ]; then trixie_apt_update force; else apt_update; fi
        pkg=$("${apt[@]}" depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}') || true
    fi
    if [ -z "$pkg" ]; then   # offline: newest cached kernel of this track
        local pat='6.1.0-*'
        [ "$TRACK" = backports ] && pat='6.1[2-9]*+deb12-*'
        [ "$TRACK" = trixie ] && pat='*+deb13-*'
        KV=$(cd "$CACHE/kernels" && ls -d $pat 2>/dev/null | sort -V | tail -n1) || true
        [ -n "$KV" ] || die "cannot resolve $meta and nothing cached"
        log "apt metadata unavailable; using cached kernel $KV"
    else
        KV=${pkg#linux-image-}
    fi
    KDIR=$CACHE/kernels/$KV/root
    if [ ! -e "$CACHE/kernels/$KV/.extracted" ]; then
        deb=$(ls "$CACHE"/debs/"$pkg"_*.deb 2>/dev/null | tail -n1) || true
        if [ -z "$deb" ]; then
            log "downloading $pkg (apt-get download; nothing is installed on the host)"
            (cd "$CACHE/debs" && "${aptget[@]}" download "$pkg" 2>&1 | { grep -v unsandboxed >&2 || true; }) || die "apt-get download $pkg failed"
            deb=$(ls "$CACHE"/debs/"$pkg"_*.deb | tail -n1)
        fi
        log "extracting $deb with dpkg -x into $KDIR"
        rm -rf "$CACHE/kernels/$KV"; mkdir -p "$KDIR"
        dpkg -x "$deb" "$KDIR"
        # trixie kernels ship /usr/lib/modules; bookworm's depmod/modprobe -d want <root>/lib/modules
        [ -d "$KDIR/usr/lib/modules" ] && [ ! -e "$KDIR/lib" ] && ln -s usr/lib "$KDIR/lib"
        depmod -b "$KDIR" "$KV"
        touch "$CACHE/kernels/$KV/.extracted"
    fi
    VMLINUZ=$KDIR/boot/vmlinuz-$KV
    KCONFIG=$KDIR/boot/config-$KV
    [ -f "$VMLINUZ" ] || die "missing $VMLINUZ"
    BOOT_KERNEL=$VMLINUZ
    # Under TCG, decompressing the bzImage in the guest takes ~6 s.  Debian
    # kernels have CONFIG_PVH=y, so decompress vmlinux once on the host and let
    # QEMU boot the ELF directly through its PVH entry point.
    if [ $BZIMAGE = 0 ] && grep -q '^CONFIG_PVH=y' "$KCONFIG"; then
        local vml=$CACHE/kernels/$KV/vmlinux
        [ -s "$vml" ] || extract_vmlinux "$VMLINUZ" "$vml" || true
        [ -s "$vml" ] && BOOT_KERNEL=$vml
    fi
}

# extract_vmlinux BZIMAGE OUT: find the compressed payload (xz, zstd or gzip)
# and decompress it; succeed only if the result is an ELF file.
extract_vmlinux() {
    local in=$1 out=$2 magic off tool
    for magic in xz zstd gzip; do
        case $magic in
            xz)   off=$(LC_ALL=C grep -abo $'\xfd7zXZ\x00' "$in" | head -n1 | cut -d: -f1); tool=(xz -dcq --single-stream) ;;
            zstd) off=$(LC_ALL=C grep -abo $'\x28\xb5\x2f\xfd' "$in" | head -n1 | cut -d: -f1); tool=(zstd -dcq) ;;
            gzip) off=$(LC_ALL=C grep -abo $'\x1f\x8b\x08' "$in" | head -n1 | cut -d: -f1); tool=(gzip -dcq) ;;
        esac
        [ -n "$off" ] || continue
        tail -c +$((off + 1)) "$in" | "${tool[@]}" >"$out.tmp" 2>/dev/null || true
        if [ "$(head -c4 "$out.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            mv "$out.tmp" "$out"; log "extracted uncompressed $out ($magic) for PVH direct boot"; return 0
        fi
    done
    rm -f "$out.tmp"; log "could not extract vmlinux from $in; booting the bzImage"; return 1
}

# --------------------------------------------------------------------- fio --
# --with-fio: Debian's fio and the shared libraries it needs that the host does
# not have (gluster, rbd/rados, nbd, pmem, ...: fio links them all), fetched with
# apt-get download and unpacked with dpkg -x into $CACHE/fio/<version>/root.
# Only packages whose libraries are missing are fetched: starting from fio, the
# Depends of what was fetched so far that are not installed on the host, until
# ldd finds every library.  Sets FIO_ROOT.
fio_libpath() {   # every directory under FIO_ROOT that holds a shared library
    find "$FIO_ROOT" -name '*.so*' \( -type f -o -type l \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -
}
fio_ldd() { LD_LIBRARY_PATH=$(fio_libpath) ldd "$FIO_ROOT/usr/bin/fio"; }
fio_missing_libs() { fio_ldd 2>/dev/null | awk '/not found/{print $1}' | sort -u | paste -sd' ' -; }

ensure_fio() {
    local ver dir p deb d round missing got=() want=(fio) next=()
    ver=$(apt-cache policy fio 2>/dev/null | awk '/Candidate:/{print $2; exit}') || true
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
        apt_update
        ver=$(apt-cache policy fio 2>/dev/null | awk '/Candidate:/{print $2; exit}') || true
    fi
    if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then   # offline: newest cached fio
        dir=$(ls -d "$CACHE"/fio/*/.ready 2>/dev/null | sort -V | tail -n1) || true
        [ -n "$dir" ] || die "cannot resolve the fio package and nothing cached"
        FIO_ROOT=$(dirname "$dir")/root; log "apt metadata unavailable; using cached $FIO_ROOT"; return
    fi
    dir=$CACHE/fio/${ver//:/%3a}; FIO_ROOT=$dir/root
    [ -e "$dir/.ready" ] && return
    log "fetching fio $ver and the libraries it needs (apt-get download + dpkg -x into $FIO_ROOT; nothing is installed on the host)"
    rm -rf "$dir"; mkdir -p "$FIO_ROOT"
    for round in 1 2 3 4 5 6 7 8; do
        for p in "${want[@]}"; do
            deb=$(ls "$CACHE"/debs/"${p}"_*.deb 2>/dev/null | tail -n1) || true
            if [ -z "$deb" ]; then
                (cd "$CACHE/debs" && apt-get download "$p" 2>&1 | { grep -v unsandboxed >&2 || true; }) || die "apt-get download $p failed"
                deb=$(ls "$CACHE"/debs/"${p}"_*.deb 2>/dev/null | tail -n1) || true
                [ -n "$deb" ] || die "apt-get download $p gave no .deb"
            fi
            dpkg -x "$deb" "$FIO_ROOT"
            got+=("$p")
        done
        [ -x "$FIO_ROOT/usr/bin/fio" ] || die "no usr/bin/fio in the fio package"
        missing=$(fio_missing_libs)
        [ -z "$missing" ] && break
        # the next round: library packages that what we have depends on and the
        # host lacks (alternatives and virtual packages are not followed)
        next=()
        for p in "${got[@]}"; do
            for d in $(apt-cache depends "$p" 2>/dev/null | awk '$1=="Depends:" && $2 !~ /^</ {print $2}'); do
                d=${d%%:*}
                case "$d" in lib*) ;; *) continue ;; esac
                pkg_installed "$d" && continue
                case " ${got[*]} ${next[*]} " in *" $d "*) continue ;; esac
                next+=("$d")
            done
        done
        [ ${#next[@]} -gt 0 ] || die "fio: libraries not found and no package left to fetch: $missing"
        log "fio still misses: $missing; fetching ${next[*]}"
        want=("${next[@]}")
    done
    missing=$(fio_missing_libs)
    [ -z "$missing" ] || die "fio: libraries still not found: $missing"
    touch "$dir/.ready"
    log "fio $ver ready ($(du -sh "$FIO_ROOT" | cut -f1) unpacked, packages: ${got[*]})"
}

# copy fio and every library ldd lists (from the host or FIO_ROOT, at its guest
# path) into root $1
copy_fio() {
    local rr=$1 lib dest
    mkdir -p "$rr/usr/bin"
    install -m 755 "$FIO_ROOT/usr/bin/fio" "$rr/usr/bin/fio"
    for lib in $(fio_ldd | awk '/=> \//{print $3} /^\t\//{print $1}'); do
        dest=${lib#"$FIO_ROOT"}
        [ -e "$rr$dest" ] && continue
        mkdir -p "$rr$(dirname "$dest")"
        cp -L "$lib" "$rr$dest"
    done
}

# --------------------------------------------------------------- initramfs --
# copy the shared libraries (and ELF interpreter) of ELF file $1 into root $2.
# With a guest userland root $3 (trixie track), libraries that it already has
# are not copied (the guest's newer glibc etc. must win), and the rest go to
# /usr/lib... (its /lib and /lib64 are symlinks into /usr).
copy_libs() {
    local f=$1 root=$2 have=${3:-} lib dst
    [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ] || return 0
    ldd "$f" >/dev/null 2>&1 || return 0      # static or not ours
    for lib in $(ldd "$f" | awk '/=> \//{print $3} /^\t\//{print $1}'); do
        dst=$lib
        if [ -n "$have" ]; then
            [ -e "$have$lib" ] || [ -e "$have/usr/lib/x86_64-linux-gnu/$(basename "$lib")" ] && continue
            case "$lib" in /lib/*|/lib64/*) dst=/usr$lib ;; esac
        fi
        [ -e "$root$dst" ] && continue
        mkdir -p "$root$(dirname "$dst")"
        cp -L "$lib" "$root$dst"
    done
}

MODULES_WANTED="configfs nvme-core nvme-fabrics nvme-tcp nvmet nvmet-tcp null_blk loop ublk_drv
 crc32c-intel crc32c_generic libcrc32c virtio_pci 9pnet_virtio 9p ext4 xfs nbd sch_netem veth"
# trixie track, in addition: TLS, DH-HMAC-CHAP, soft-RoCE + NVMe/RDMA (those built in
# as =y, e.g. hmac, sha256/512, dh with the RFC 7919 ffdhe groups, are reported and skipped)
MODULES_TRIXIE="nvme-keyring nvme-auth tls gcm ghash-generic ghash-clmulni-intel aesni-intel
 sha256-ssse3 sha512-ssse3 hmac sha256_generic sha512_generic dh_generic dummy rdma_rxe ib_uverbs
 rdma_ucm rdma_cm nvme-rdma nvmet-rdma nvme-loop nvmet-loop inet_diag tcp_diag crc32_generic crc32-pclmul"
# (rdma_rxe needs the "crc32" shash for its ICRC: without crc32_generic/crc32-pclmul
#  'rdma link add' fails with ENOENT)

# trixie userland: debootstrap --variant=minbase --include=...  (bump TRIXIE_FORMAT
# when the list or the build steps change: the cached root is then rebuilt).
# tcpdump: for --capture / --tcpdump on this track (the host's bookworm tcpdump is
# not copied in).
TRIXIE_FORMAT=1
# bump when the trixie base initramfs is built differently from the same root
# (2: busybox applet links, listed in a chroot)
TRIXIE_BASE_REV=2
TRIXIE_PKGS="nvme-cli ktls-utils keyutils fio e2fsprogs iproute2 rdma-core ibverbs-providers
 ibverbs-utils rdmacm-utils kmod util-linux coreutils busybox procps tcpdump"
# left out of the initramfs copy of that root (docs, locales, apt state, the python3
# that fio pulls in only for its plotting scripts, udev's hwdb)
TRIXIE_EXCLUDE="./usr/share/doc ./usr/share/man ./usr/share/info ./usr/share/locale
 ./usr/share/lintian ./var/cache/apt ./var/lib/apt/lists ./usr/lib/python3 ./usr/lib/python3.*
 ./usr/bin/python3* ./usr/lib/udev/hwdb.bin ./usr/lib/udev/hwdb.d ./proc ./sys ./dev ./run ./tmp"

# ensure_userland: $ULROOT = cached trixie root, built once with debootstrap
ensure_userland() {
    local d=$CACHE/userland/trixie stamp want
    ULROOT=$d/root
    want="format=$TRIXIE_FORMAT packages=$(echo $TRIXIE_PKGS)"
    stamp=$(cat "$d/.complete" 2>/dev/null || true)
    [ "$stamp" = "$want" ] && return
    [ $INSTALL = 1 ] || die "trixie userland missing in $d (run without --no-install)"
    command -v debootstrap >/dev/null || die "debootstrap missing (scripts/install-deps.sh)"
    local tmp=$CACHE/userland/trixie.tmp.$$ uri
    uri=$(archive_uri)
    log "building the trixie userland with debootstrap (once; about 1-2 min): $tmp"
    rm -rf "$tmp"
    if ! debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
            --include="$(echo $TRIXIE_PKGS | tr ' ' ,)" trixie "$tmp" "$uri" >"$tmp.log" 2>&1; then
        tail -n 20 "$tmp.log" >&2
        for m in proc sys; do mountpoint -q "$tmp/$m" && umount -l "$tmp/$m"; done
        die "debootstrap failed (log: $tmp.log)"
    fi
    for m in proc sys dev/pts dev; do mountpoint -q "$tmp/$m" && umount -l "$tmp/$m"; done
    rm -f "$tmp"/var/cache/apt/archives/*.deb
    rm -rf "$d"; mkdir -p "$d"; mv "$tmp" "$ULROOT"; mv "$tmp.log" "$d/debootstrap.log"
    echo "$want" >"$d/.complete"
    log "trixie userland: $(du -sh "$ULROOT" | cut -f1) in $ULROOT"
}

build_base() {
    BASE=$CACHE/initramfs/base-$KV-v$BASE_FORMAT.cpio
    # trixie: the name carries a hash of the module and exclude lists, so editing them rebuilds it
    [ "$TRACK" = trixie ] && BASE=$CACHE/initramfs/base-$KV-trixie-v$BASE_FORMAT.$TRIXIE_FORMAT-$(echo "$MODULES_WANTED $MODULES_TRIXIE $TRIXIE_EXCLUDE $TRIXIE_BASE_REV" | md5sum | cut -c1-8).cpio
    if [ -f "$BASE" ] && [ $REBUILD = 0 ] && { [ "$TRACK" != trixie ] || [ "$BASE" -nt "$ULROOT/../.complete" ]; }; then return; fi
    local st=$CACHE/initramfs/staging-$KV.$$ m f rel applet
    log "building base initramfs $BASE"
    rm -rf "$st"; mkdir -p "$st"
    if [ "$TRACK" = trixie ]; then
        # the cached debootstrap root, minus docs/locales/apt state; its /bin /sbin
        # /lib /lib64 are symlinks into /usr (merged /usr), which every later
        # archive must respect (see build_initrd).  It has e2fsprogs, iproute2
        # (ip, tc, ss), tcpdump, fio, nvme-cli 2.13, tlshd, keyctl of its own.
        local ex=()
        for f in $TRIXIE_EXCLUDE; do ex+=(--exclude="$f"); done
        tar -C "$ULROOT" "${ex[@]}" -cf - . | tar -C "$st" -xpf -
        mkdir -p "$st"/{proc,sys,dev,run,tmp,mnt/host,extra,usr/lib/nvme-vm,etc/nvme}
        chmod 1777 "$st/tmp"
        rm -f "$st/etc/nvme/hostnqn" "$st/etc/nvme/hostid"   # a fresh pair per boot (guest-lib.sh)
        # busybox only for what trixie's own tools do not cover (poweroff -f,
        # cttyhack, netstat, ...); Debian's binaries win.  trixie's busybox needs
        # glibc 2.38 and cannot run on a bookworm host directly: list its applets
        # in a chroot (or through its own ld.so)
        local applets
        applets=$(chroot "$st" /usr/bin/busybox --list 2>/dev/null ||
                  "$st/usr/lib64/ld-linux-x86-64.so.2" --library-path "$st/usr/lib/x86_64-linux-gnu" "$st/usr/bin/busybox" --list 2>/dev/null) || true
        [ -n "$applets" ] || die "cannot list the applets of the trixie busybox"
        for applet in $applets; do
            [ -e "$st/usr/bin/$applet" ] || [ -e "$st/usr/sbin/$applet" ] || ln -s busybox "$st/usr/bin/$applet"
        done
    else
        (cd "$st" && mkdir -p bin sbin usr/bin usr/sbin lib lib64 etc/nvme proc sys dev tmp run root mnt/host extra lib/nvme-vm)
        cp /bin/busybox "$st/bin/busybox"
        for applet in $("$st/bin/busybox" --list); do
            [ -e "$st/bin/$applet" ] || ln -s busybox "$st/bin/$applet"
        done
        cp /usr/sbin/nvme "$st/usr/sbin/nvme"
        copy_libs /usr/sbin/nvme "$st"
        # e2fsprogs: busybox's mke2fs only makes ext2; the guest scripts need ext4
        # (these come before busybox's /bin in PATH)
        for f in mke2fs e2fsck; do
            cp /usr/sbin/$f "$st/usr/sbin/$f"
            copy_libs /usr/sbin/$f "$st"
        done
        for f in mkfs.ext4 mkfs.ext3 mkfs.ext2; do ln -sf mke2fs "$st/usr/sbin/$f"; done
        for f in fsck.ext4 fsck.ext3 fsck.ext2; do ln -sf e2fsck "$st/usr/sbin/$f"; done
        [ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$st/etc/mke2fs.conf"
        # iproute2: busybox's ip has no netns / veth and there is no busybox tc;
        # guest/netfault.sh needs both (ip netns needs /var/run/netns)
        for f in ip tc; do
            cp /usr/sbin/$f "$st/usr/sbin/$f"
            copy_libs /usr/sbin/$f "$st"
        done
        mkdir -p "$st/var"; ln -sfn ../run "$st/var/run"
    fi
    # kernel modules: the dependency closure of MODULES_WANTED, decompressed
    local mods=() missing=() builtin=() wanted=$MODULES_WANTED
    [ "$TRACK" = trixie ] && wanted="$wanted $MODULES_TRIXIE"
    for m in $wanted; do
        local dep
        dep=$(modprobe -d "$KDIR" -S "$KV" --show-depends "$m" 2>/dev/null) || true
        case "$dep" in "builtin "*) builtin+=("$m"); continue ;; esac
        dep=$(echo "$dep" | awk '$1=="insmod"{print $2}')
        if [ -z "$dep" ]; then missing+=("$m"); continue; fi
        mods+=($dep)
    done
    [ ${#missing[@]} -eq 0 ] || log "modules not available as .ko in $KV (builtin or not built): ${missing[*]}"
    [ ${#builtin[@]} -eq 0 ] || log "built into $KV: ${builtin[*]}"
    for f in $(printf '%s\n' "${mods[@]}" | sort -u); do
        rel=${f#$KDIR}
        mkdir -p "$st$(dirname "$rel")"
        case "$f" in
            *.ko.xz) xz -dc "$f" >"$st${rel%.xz}" ;;
            *.ko.zst) zstd -qdc "$f" >"$st${rel%.zst}" ;;
            *.ko.gz) gzip -dc "$f" >"$st${rel%.gz}" ;;
            *) cp "$f" "$st$rel" ;;
        esac
    done
    for f in modules.builtin modules.builtin.modinfo modules.order; do
        [ -f "$KDIR/lib/modules/$KV/$f" ] && cp "$KDIR/lib/modules/$KV/$f" "$st/lib/modules/$KV/"
    done
    depmod -b "$st" "$KV"
    if [ "$TRACK" != trixie ]; then
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$st/etc/passwd"
        printf 'root:x:0:\n' >"$st/etc/group"
    fi
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$st/etc/hosts"
    printf 'export PS1="nvme-vm:\\w# "\nexport PATH=/extra:/usr/sbin:/usr/bin:/sbin:/bin\n' >"$st/etc/profile"
    (cd "$st" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$BASE.tmp.$$"
    [ "$TRACK" = trixie ] && rm -f "$CACHE/initramfs/base-$KV-trixie-"*.cpio   # older lists' builds
    mv "$BASE.tmp.$$" "$BASE"
    log "base initramfs: $(du -h "$BASE" | cut -f1) ($(find "$st/lib/modules/" -name '*.ko' | wc -l) modules)"
    rm -rf "$st"
}

# build the per-run archive (init, config, extras) and concatenate it to BASE
# -> $1.  $2 = mode (test|probe)
build_initrd() {
    local out=$1 mode=$2 rr f name ublk_cfg libdir=lib/nvme-vm have=""
    # trixie: /lib is a symlink to usr/lib in the base archive.  The kernel's
    # cpio unpacker replaces an existing path whose type differs, so a "lib"
    # directory entry here would delete that symlink: use the /usr paths.
    [ "$TRACK" = trixie ] && { libdir=usr/lib/nvme-vm; have=$ULROOT; }
    rr=$(mktemp -d "$CACHE/runs/root.XXXXXX"); chmod 755 "$rr"
    mkdir -p "$rr/$libdir" "$rr/etc" "$rr/extra"
    install -m 755 "$HERE/guest-init.sh" "$rr/init"
    install -m 644 "$HERE/guest-lib.sh" "$rr/$libdir/lib.sh"
    install -m 644 "$HERE/guest-selftest.sh" "$rr/$libdir/selftest.sh"
    local script_guest=""
    for f in "${EXTRAS[@]}" "${SCRIPTS[@]}"; do
        name=$(basename "$f")
        cp -L "$f" "$rr/extra/$name"
        [ -x "$f" ] && chmod 755 "$rr/extra/$name"
        copy_libs "$f" "$rr" "$have"
    done
    for f in "${SCRIPTS[@]}"; do script_guest+="${script_guest:+ }/extra/$(basename "$f")"; done
    [ $WITH_FIO = 1 ] && [ "$mode" = test ] && [ "$TRACK" != trixie ] && copy_fio "$rr"
    ublk_cfg=$(sed -n 's/^CONFIG_BLK_DEV_UBLK=\(.\)$/\1/p' "$KCONFIG"); ublk_cfg=${ublk_cfg:-n}
    cat >"$rr/etc/nvme-vm.conf" <<EOF
NVMEVM_MODE=$mode
NVMEVM_TARGET=$TARGET
NVMEVM_BUILTIN=$BUILTIN
NVMEVM_UBLK=$UBLK
NVMEVM_UBLK_CONFIG=$ublk_cfg
NVMEVM_SCRIPT="$script_guest"
NVMEVM_SHARE=$([ -n "$SHARE" ] && echo 1 || echo 0)
NVMEVM_SHELL=$SHELL_MODE
NVMEVM_CAPTURE=$CAPTURE
NVMEVM_TRACK=$TRACK
NVMEVM_SELFTESTS="$SELFTESTS"
EOF
    local kv
    for kv in "${ENVS[@]}"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}" >>"$rr/etc/nvme-vm.conf"
    done
    (cd "$rr" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$out.run"
    cat "$BASE" "$out.run" >"$out"
    rm -rf "$rr" "$out.run"
}

# -------------------------------------------------------------------- qemu --
# run_qemu ACCEL INITRD LOG TIMEOUT  -> sets QEMU_RC, BOOT_S (host wall time to the
# guest's "init started" line, or empty)
run_qemu() {
    local accel=$1 initrd=$2 logf=$3 tmo=$4 cpu=max
    [ "$accel" = kvm ] && cpu=host
    [ -n "$CPU_MODEL" ] && cpu=$CPU_MODEL
    local cmd=(qemu-system-x86_64 -nodefaults -no-reboot -display none -nic none
        -machine q35 -accel "$accel" -cpu "$cpu" -m "$MEM" -smp "$SMP"
        -kernel "$BOOT_KERNEL" -initrd "$initrd"
        -append "console=ttyS0 panic=-1 loglevel=$LOGLEVEL rdinit=/init $APPEND"
        -serial stdio)
    [ -n "$SHARE" ] && cmd+=(-virtfs "local,path=$SHARE,mount_tag=hostshare,security_model=none,id=hostshare")
    echo "run-vm: ${cmd[*]}" >"$logf"
    log "starting: ${cmd[*]}"
    local t0=$EPOCHREALTIME marker=$logf.boot
    rm -f "$marker"
    set +e
    if [ $SHELL_MODE = 1 ]; then
        timeout -k 10 "$tmo" "${cmd[@]}" 2>&1 | tee -a "$logf"
        QEMU_RC=${PIPESTATUS[0]}
    else
        # (the group's stderr goes to /dev/null only to hide bash's "Aborted" job
        # notice; QEMU's own stderr is merged into the pipe and logged)
        { timeout -k 10 "$tmo" "${cmd[@]}" </dev/null 2>&1 | while IFS= read -r line; do
            line=${line%$'\r'}
            printf '%s\n' "$line"
            printf '%s\n' "$line" >>"$logf"
            case "$line" in *"NVMEVM: init started"*)
                [ -e "$marker" ] || elapsed "$t0" >"$marker" ;; esac
          done
          QEMU_RC=${PIPESTATUS[0]}; } 2>/dev/null
    fi
    set -e
    TOTAL_S=$(elapsed "$t0")
    BOOT_S=$(cat "$marker" 2>/dev/null || true); rm -f "$marker"
}

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f\n", b-a}'; }
guest_status() { sed -n 's/.*NVMEVM-EXIT-STATUS=\([0-9]*\).*/\1/p' "$1" | tail -n1; }

probe_accel() {   # prints kvm or tcg; cached per host kernel + guest kernel
    local pf=$CACHE/accel-probe-$KV key="$(uname -r) $KV $(qemu-system-x86_64 --version | head -n1)"
    if [ -f "$pf" ] && [ "$(sed -n 2p "$pf")" = "$key" ]; then
        log "accelerator (cached probe in $pf): $(head -n1 "$pf")"
        ACCEL=$(head -n1 "$pf"); return
    fi
    if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then ACCEL=tcg; printf 'tcg\n%s\nno usable /dev/kvm\n' "$key" >"$pf"; return; fi
    log "probing -accel kvm with a minimal boot (timeout 30s; result cached in $pf)"
    local img=$CACHE/runs/probe.$$.initrd plog=$CACHE/runs/probe-kvm-$KV.log
    build_initrd "$img" probe
    run_qemu kvm "$img" "$plog" 30 >/dev/null
    rm -f "$img"
    if [ "$(guest_status "$plog")" = 0 ]; then
        ACCEL=kvm; log "kvm probe booted to init in ${BOOT_S}s"
    else
        ACCEL=tcg
        log "kvm probe failed (qemu rc=$QEMU_RC); falling back to tcg. Last lines of $plog:"
        tail -n 5 "$plog" | sed 's/^/    /' >&2
    fi
    { echo $ACCEL; echo "$key"; tail -n 5 "$plog"; } >"$pf"
}

# -------------------------------------------------------------------- main --
ensure_packages
if [ $TCPDUMP = 1 ] && [ "$TRACK" != trixie ]; then   # (trixie: the userland has tcpdump)
    command -v tcpdump >/dev/null || die "tcpdump missing"
    EXTRAS+=("$(command -v tcpdump)")
fi
ensure_kernel
log "kernel $KV (booting $BOOT_KERNEL)"
# (trixie: fio 3.39 is part of the userland)
[ $WITH_FIO = 0 ] || [ "$TRACK" = trixie ] || ensure_fio
[ "$TRACK" = trixie ] && ensure_userland
build_base
[ "$ACCEL" = auto ] && probe_accel

stamp=$(date +%Y%m%d-%H%M%S)
LOGF=$CACHE/runs/$stamp-$$-$ACCEL-console.log
INITRD=$CACHE/runs/$stamp-$$.initrd
build_initrd "$INITRD" test
run_qemu "$ACCEL" "$INITRD" "$LOGF" "$TIMEOUT"
rm -f "$INITRD"
ln -sfn "$(basename "$LOGF")" "$CACHE/runs/last-console.log"

st=$(guest_status "$LOGF")
echo "run-vm: accel=$ACCEL kernel=$KV boot-to-init=${BOOT_S:-?}s total=${TOTAL_S}s qemu_rc=$QEMU_RC console_log=$LOGF track=$TRACK${SELFTESTS:+ selftests=${SELFTESTS// /,}}"
if [ -n "$st" ]; then
    [ "$st" = 0 ] && echo "run-vm: PASS (guest exit status 0)" || echo "run-vm: FAIL (guest exit status $st)"
    exit "$st"
elif [ "$QEMU_RC" = 124 ] || [ "$QEMU_RC" = 137 ]; then
    echo "run-vm: FAIL (timeout after ${TIMEOUT}s, no guest status)"; exit 124
else
    echo "run-vm: FAIL (guest did not report a status; qemu rc=$QEMU_RC; kernel panic or early init failure?)"; exit 125
fi
