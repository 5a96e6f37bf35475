# Shared settings of the real-Xen rig. Sourced by prepare.sh, stage-project.sh and run.sh.
# Everything large lives in the cache directory; the repository holds only these scripts.

XEN_RIG_CACHE=${XEN_RIG_CACHE:-$HOME/.cache/xen-vhost-rig}
RIG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$RIG_DIR/.." && pwd)

# Debian 12 (bookworm) is the only source of binaries: Xen 4.17 tools, libraries and hypervisor config,
# the 6.1 kernel, busybox. The hypervisor is rebuilt from Debian's source package with the IOREQ server
# (Debian's arm64 build lacks CONFIG_IOREQ_SERVER, which needs CONFIG_EXPERT on Arm in 4.17).
# bookworm-security publishes 4.17.7 binaries but its source files are not on every mirror, hence the
# pinned bookworm-main source version; the 4.17 stable ABI lets the 4.17.7 tools drive it.
XEN_SRC_VERSION=${XEN_SRC_VERSION:-4.17.5+72-g01140da4e8-1}
# The kernel ABI (6.1.0-N-arm64): empty picks the newest one the apt lists know (old ABIs leave the archive).
KERNEL_ABI=${KERNEL_ABI:-}
# Node for dom0: the official arm64 binary, as published on the npm registry.
NODE_ARM64_VERSION=${NODE_ARM64_VERSION:-20.20.2}

XEN_ARM64_DEBS="xen-hypervisor-4.17-arm64 xen-utils-4.17 xen-utils-common xenstore-utils
  libxenmisc4.17 libxencall1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenstore4 libxentoollog1
  libxendevicemodel1 libxenhypfs1 libxentoolcore1 libyajl2 libncurses6 libtinfo6 libext2fs2 libfdt1 libuuid1
  zlib1g libc6 libgcc-s1 libstdc++6 libcom-err2 libblkid1 busybox-static"

# qemu-storage-daemon for the "shadow-blk" scenario (a stock vhost-user-blk backend with no XEN_MMAP) and the
# shared libraries it needs beyond what XEN_ARM64_DEBS already brings (the closure of its DT_NEEDED entries;
# build-base.sh copies only the files that closure names into dom0, not whole packages).
QSD_ARM64_DEBS="qemu-system-common libglib2.0-0 libpcre2-8-0 libffi8 libgnutls30 libp11-kit0 libidn2-0
  libunistring2 libtasn1-6 libnettle8 libhogweed6 libgmp10 liburing2 libaio1 libfuse3-3 libnuma1 libzstd1"

HOST_PACKAGES="qemu-system-arm qemu-user-static gcc-aarch64-linux-gnu g++-aarch64-linux-gnu make bison flex
  python3 bc kmod cpio xz-utils dpkg-dev"

rig_log() { echo "[xen-rig $(date +%T)] $*" >&2; }
rig_die() { echo "[xen-rig] error: $*" >&2; exit 1; }
