#!/bin/bash
# bench/build-spdk.sh -- build the SPDK v26.05 reference that bench/side-by-side.sh,
# bench/spdk-interop.sh and bench/ab-spdk.sh compare against, outside this repository.
#
# usage: bench/build-spdk.sh SPDK_GIT ISAL_GIT ISAL_CRYPTO_GIT OUT
#   SPDK_GIT          a git directory of github:spdk/spdk holding tag v26.05
#   ISAL_GIT          a git directory of github:intel/isa-l (commit c196241a, the v26.05 gitlink)
#   ISAL_CRYPTO_GIT   a git directory of github:intel/isa-l_crypto (commit 07d0b253)
#   OUT               where the tree goes (OUT/spdk); then SPDK_DIR=OUT/spdk
#
# The build follows the notes the team keeps (../shared/bench/spdk/BUILD-NOTES.md):
# Debian's DPDK 22.11 through pkg-config (so shared libraries: the bench scripts set
# LD_LIBRARY_PATH), no crypto, no tests, no examples, no optional transports; two
# local fixes for that DPDK (bench/spdk-local-fixes.patch); IPSEC_MB off. The
# submodules the build does not use (dpdk, intel-ipsec-mb, ...) stay empty.
# Installs the Debian packages the build needs (apt-get, as root). Takes about
# 25 minutes on two cores; nothing in CI runs it.
set -euo pipefail

if [[ $# -ne 4 ]]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
SPDK_GIT=$1 ISAL_GIT=$2 ISAL_CRYPTO_GIT=$3 OUT=$4
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=v26.05

for g in "$SPDK_GIT" "$ISAL_GIT" "$ISAL_CRYPTO_GIT"; do
    git --git-dir="$g" rev-parse --git-dir > /dev/null 2>&1 || {
        echo "build-spdk: $g is not a git directory (pass the repository's .git or bare directory)" >&2
        exit 2
    }
done
git --git-dir="$SPDK_GIT" rev-parse -q --verify "$TAG^{commit}" > /dev/null || {
    echo "build-spdk: $SPDK_GIT has no tag $TAG; fetch spdk/spdk with its tags" >&2
    exit 2
}
# The isa-l commits the tag pins, read from its tree rather than written here twice.
pin() { git --git-dir="$SPDK_GIT" ls-tree "$TAG" "$1" | awk '{print $3}'; }
ISAL_REV=$(pin isa-l) ISAL_CRYPTO_REV=$(pin isa-l-crypto)

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q gcc g++ make libaio-dev libssl-dev libjson-c-dev uuid-dev \
    libkeyutils-dev libncurses-dev python3-dev python3-venv python3-pip unzip libfuse3-dev \
    patchelf pkgconf nasm libnuma-dev autoconf automake libtool help2man libdpdk-dev \
    dpdk-dev meson ninja-build python3-pyelftools python3-tabulate python3-jinja2 \
    libcunit1-dev libarchive-dev > /dev/null

mkdir -p "$OUT"
TREE=$OUT/spdk
if [[ -x $TREE/build/bin/nvmf_tgt && -x $TREE/build/bin/spdk_nvme_perf ]]; then
    echo "build-spdk: $TREE is already built; SPDK_DIR=$TREE"
    exit 0
fi
rm -rf "$TREE"
mkdir -p "$TREE"
git --git-dir="$SPDK_GIT" archive "$TAG" | tar -x -C "$TREE"
git --git-dir="$ISAL_GIT" archive "$ISAL_REV" | tar -x -C "$TREE/isa-l"
git --git-dir="$ISAL_CRYPTO_GIT" archive "$ISAL_CRYPTO_REV" | tar -x -C "$TREE/isa-l-crypto"

cd "$TREE"
patch -p0 < "$HERE/spdk-local-fixes.patch"
./configure --with-dpdk --without-crypto --disable-tests --disable-unit-tests \
    --disable-examples --without-vhost --without-virtio --without-fio --without-xnvme \
    --without-vfio-user --without-ocf --without-fsdev --without-nvme-cuse --without-usdt \
    --without-idxd --without-iscsi-initiator --without-uring --without-rdma --without-sma \
    --without-avahi --without-rbd --without-daos --without-fc --without-ublk
sed -i 's/^CONFIG_IPSEC_MB?=y/CONFIG_IPSEC_MB?=n/' mk/config.mk
# Debian's python3 has the modules scripts/genrpc.py needs; a pyenv one may not.
PATH=/usr/bin:/bin:/usr/sbin:/sbin nice -n 10 make -j"$(nproc)"
for b in nvmf_tgt spdk_nvme_perf spdk_nvme_identify; do
    [[ -x build/bin/$b ]] || { echo "build-spdk: build/bin/$b was not built" >&2; exit 1; }
done
echo "build-spdk: done; SPDK_DIR=$TREE"
