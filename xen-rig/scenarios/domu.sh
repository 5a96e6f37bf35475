#!/bin/sh
# Scenario "domu": the guest side later scenarios build on. A plain domU boots from /guest (Debian's
# kernel + our initramfs), loads the virtio modules including the out-of-tree virtio-i2c/virtio-gpio ones
# (no devices to bind: this checks they match the kernel), and powers itself off. The domU with a
# virtio-mmio slot is exercised by the "ioreq" scenario, which also serves the slot.
#@packages
#@expect DOMU: up
#@expect DOMU: virtio_mmio loaded
#@expect DOMU: insmod i2c-virtio.ko ok
#@expect DOMU: insmod gpio-virtio.ko ok
#@expect RIG: ok domu-plain
. ./lib/domu.sh

t0=$(up)
xl create /guest/domu-plain.cfg 'extra="console=hvc0 rdinit=/init domu.virtio=probe"' >/tmp/xl-plain.log 2>&1 \
  || { echo "RIG: FAIL xl create plain"; cat /tmp/xl-plain.log; exit 1; }
echo "RIG: plain created in $(awk "BEGIN{print $(up) - $t0}") s"
domu_wait plain 120 && domu_console plain && grep -q '^DOMU: done' /var/log/xen/console/guest-plain.log \
  && echo "RIG: ok domu-plain ($(awk "BEGIN{print $(up) - $t0}") s from create to gone)"
