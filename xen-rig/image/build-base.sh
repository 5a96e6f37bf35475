#!/bin/bash
# Builds the two cached base initramfs archives from the unpacked Debian packages (run by prepare.sh, which
# rebuilds them when this file or its inputs change):
#   $C/dom0-base.cpio.gz  busybox, glibc and the Xen 4.17 userspace from the debs, the Xen driver modules,
#                         loop, node (arm64), qemu-storage-daemon (arm64) with the libraries it needs, the
#                         domU kernel as /guest/Image
#   $C/domu-base.cpio.gz  busybox, virtio modules (+ the out-of-tree i2c-virtio/gpio-virtio in /lib/modules/extra,
#                         which domu-init loads, and the rig's rig-mem.ko in /lib/modules/rig, loaded on request)
# run.sh appends a small per-run archive to each (/init, scenarios, staged project): the kernel unpacks
# concatenated cpio archives in order.
# env: C (cache dir), KERNEL_ABI
set -euo pipefail
: "${C:?}" "${KERNEL_ABI:?}"
kmods=$C/kernel/lib/modules/$KERNEL_ABI
# install_modules ROOT MODULE...: each module with its dependencies, plus the modprobe indexes
install_modules() {
  local root=$1; shift
  for m in "$@"; do
    modprobe -d "$C/kernel" -S "$KERNEL_ABI" --show-depends "$m" | awk '$1 == "insmod" {print $2}' | while read -r f; do
      install -D -m644 "$f" "$root${f#"$C/kernel"}"; done
  done
  cp "$kmods"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$KERNEL_ABI/" 2>/dev/null || true
  depmod -b "$root" "$KERNEL_ABI"
}
base_tree() {
  local r=$1
  rm -rf "$r"; mkdir -p "$r"/{bin,sbin,dev,proc,sys,tmp,run,etc,root,mnt,lib,usr/bin,usr/sbin,usr/lib,var/run,var/log}
  cp "$C/stage/bin/busybox" "$r/bin/busybox"
  for a in $(qemu-aarch64-static "$C/stage/bin/busybox" --list); do [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$r/etc/passwd"; printf 'root:x:0:\n' > "$r/etc/group"
}
# domU: busybox, virtio drivers (the out-of-tree ones under /lib/modules/extra), nothing of Xen's userspace.
U=$C/domu-root; base_tree "$U"
install_modules "$U" virtio_mmio virtio-rng virtio_blk i2c-dev
mkdir -p "$U/lib/modules/extra" "$U/lib/modules/rig"
cp "$C"/vmod/i2c-virtio.ko "$C"/vmod/gpio-virtio.ko "$U/lib/modules/extra/"; cp "$C"/vmod/rig-mem.ko "$U/lib/modules/rig/"
(cd "$U" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$C/domu-base.cpio.gz"
rm -rf "$U"
# dom0: glibc and the Xen userspace from the debs, the Xen driver modules, node, the domU kernel.
R=$C/dom0-root; base_tree "$R"
cp -a "$C"/stage/lib/. "$R/lib/"
cp -a "$C/stage/usr/lib/aarch64-linux-gnu" "$C/stage/usr/lib/xen-4.17" "$R/usr/lib/"
cp -a "$C/stage/etc/xen" "$R/etc/"
for b in xl xenstored xenconsoled xen-init-dom0 xenconsole; do ln -sf /usr/lib/xen-4.17/bin/$b "$R/usr/sbin/$b"; done
cp -a "$C"/stage/usr/bin/xenstore* "$R/usr/bin/"
install_modules "$R" xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc loop
# qemu-storage-daemon: the binary and the libraries of its DT_NEEDED closure that dom0 does not have yet
# (glibc, zlib come from the Xen debs above), each under its soname. A library missing from both trees
# fails the build here rather than at the scenario's first exec.
install -D -m755 "$C/qsd/usr/bin/qemu-storage-daemon" "$R/usr/bin/qemu-storage-daemon"
needed() { aarch64-linux-gnu-readelf -d "$1" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'; }
todo=("$R/usr/bin/qemu-storage-daemon"); seen=" "
while [ ${#todo[@]} -gt 0 ]; do
  f=${todo[0]}; todo=("${todo[@]:1}")
  for l in $(needed "$f"); do
    case $seen in *" $l "*) continue;; esac
    seen="$seen$l "
    have=""; for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu lib; do [ -e "$R/$d/$l" ] && have=$R/$d/$l; done
    if [ -z "$have" ]; then
      src=""; for d in lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu; do [ -e "$C/qsd/$d/$l" ] && src=$C/qsd/$d/$l; done
      [ -n "$src" ] || { echo "build-base: qemu-storage-daemon needs $l, found in no arm64 package (lib.sh QSD_ARM64_DEBS)" >&2; exit 1; }
      have=$R/usr/lib/aarch64-linux-gnu/$l; cp -L "$src" "$have"
    fi
    todo+=("$have")
  done
done
qemu-aarch64-static -L "$R" "$R/usr/bin/qemu-storage-daemon" --version | grep -q '^qemu-storage-daemon version' \
  || { echo "build-base: the arm64 qemu-storage-daemon does not start under qemu-aarch64-static" >&2; exit 1; }
mkdir -p "$R/usr/local/bin" "$R/guest"; cp "$C/node/node" "$R/usr/local/bin/node"
cp "$C/kernel/boot/vmlinuz-$KERNEL_ABI" "$R/guest/Image"     # an uncompressed arm64 Image
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$C/dom0-base.cpio.gz.tmp"
mv "$C/dom0-base.cpio.gz.tmp" "$C/dom0-base.cpio.gz"
rm -rf "$R"
