#!/bin/sh
# Scenario "domu": the guest side later scenarios build on.
#  1. a plain domU boots from /guest (Debian's kernel + our initramfs), loads the virtio modules including
#     the out-of-tree virtio-i2c/virtio-gpio ones (no devices to bind: this checks they match the kernel),
#     and powers itself off;
#  2. a domU with a virtio-mmio slot (Xen 4.17's "disk, specification=virtio" entry): created paused,
#     backend state acked in xenstore, unpaused; the guest sees the DT node libxl made for it
#     (reg 0x2000000 size 0x200, SPI 33 = GIC SPI 1 edge-rising). Nothing serves the slot here, so the
#     guest does not probe it (an access would fault without a device model: "domu.virtio=probe" is for
#     the scenarios that run one).
#@packages
#@expect RIG: ok domu-plain
#@expect DOMU: up
#@expect DOMU: insmod i2c-virtio.ko ok
#@expect DOMU: insmod gpio-virtio.ko ok
#@expect RIG: backend /local/domain/0/backend/virtio_disk/
#@expect DOMU: dt virtio@2000000 compatible=virtio,mmio reg=00000000020000000000000000000200 interrupts=000000000000000100000f01
#@expect RIG: ok domu-virtio-slot
. ./lib/domu.sh

t0=$(up)
xl create /guest/domu-plain.cfg 'extra="console=hvc0 rdinit=/init domu.virtio=probe"' >/tmp/xl-plain.log 2>&1 || { echo "RIG: FAIL xl create plain"; cat /tmp/xl-plain.log; exit 1; }
echo "RIG: plain created in $(awk "BEGIN{print $(up) - $t0}") s"
xl list
domu_wait plain 60 && domu_console plain && grep -q '^DOMU: done' /var/log/xen/console/guest-plain.log \
  && echo "RIG: ok domu-plain ($(awk "BEGIN{print $(up) - $t0}") s from create to gone)"

t0=$(up)
virtio_slot_setup || { echo "RIG: FAIL losetup"; exit 1; }
virtio_backend_ack 60
xl create -p /guest/domu-virtio.cfg >/tmp/xl-virtio.log 2>&1 || { echo "RIG: FAIL xl create virtio"; cat /tmp/xl-virtio.log; exit 1; }
d=$(xl domid virtio)
echo "RIG: virtio domain $d created paused in $(awk "BEGIN{print $(up) - $t0}") s"
xenstore-ls -f /local/domain/0/backend/virtio_disk/$d | sed 's/^/  xs: /'
xl unpause virtio
domu_wait virtio 60 && domu_console virtio && grep -q '^DOMU: dt virtio@2000000' /var/log/xen/console/guest-virtio.log \
  && echo "RIG: ok domu-virtio-slot ($(awk "BEGIN{print $(up) - $t0}") s from create to gone)"
wait
