#!/bin/sh
# Scenario "dm-rng": a device model written only with the project's packages, no vhost-user
# (dm-rng.mjs: @xen-vhost/ioreq-eventfd's IoreqServer and XenNotifier, @xen-vhost/vm-memory-xen's foreign
# mapping of the guest's RAM, @xen-vhost/virtio-mmio's register file, @xen-vhost/virtio-queue's device side)
# serves virtio-rng in a domU's 4.17 virtio slot. The Linux guest binds virtio_rng and reads /dev/hwrng;
# the bytes it printed must be bytes the device model handed out.
#@packages @xen-vhost/xen-sys @xen-vhost/ioreq-eventfd @xen-vhost/vm-memory-xen @xen-vhost/virtio-mmio @xen-vhost/virtio-queue
#@expect RIG: dm-rng ready
#@expect DOMU: virtio_mmio loaded
#@expect DOMU: virtio virtio0 device=0x0004 driver=virtio_rng
#@expect DOMU: hwrng virtio_rng.0:
#@expect RIG: ok dm-rng served
#@expect RIG: ok dm-rng guest bytes came from the device model
. ./lib/domu.sh
virtio_slot_setup || { echo "RIG: FAIL losetup"; exit 1; }
virtio_backend_ack 400
xl create -p /guest/domu-virtio.cfg 'name="dmrng"' 'extra="console=hvc0 rdinit=/init domu.virtio=probe"' >/tmp/xl-dmrng.log 2>&1 \
  || { echo "RIG: FAIL xl create"; cat /tmp/xl-dmrng.log; exit 1; }
d=$(xl domid dmrng)
rm -f /tmp/dm-rng.ready
node dm-rng.mjs "$d" 0x2000000 33 /tmp/dm-rng.ready /tmp/dm-rng.served & dm=$!
i=0; until [ -f /tmp/dm-rng.ready ] || [ $i -ge 600 ] || ! kill -0 $dm 2>/dev/null; do sleep 0.2; i=$((i + 1)); done
[ -f /tmp/dm-rng.ready ] || { echo "RIG: FAIL device model did not come up"; xl destroy dmrng; wait; exit 1; }
t0=$(up)
xl unpause dmrng
domu_wait dmrng 120; domu_console dmrng
wait $dm; rc=$?
echo "RIG: dm-rng guest ran $(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }') s"
seen=$(tr -d '\r' < /var/log/xen/console/guest-dmrng.log | sed -n 's/^DOMU: hwrng virtio_rng.0: \([0-9a-f]*\).*/\1/p')
if [ -n "$seen" ] && grep -q "$seen" /tmp/dm-rng.served; then echo "RIG: ok dm-rng guest bytes came from the device model ($seen)"
else echo "RIG: FAIL dm-rng the guest read '$seen', not in the $(wc -c < /tmp/dm-rng.served) hex digits served"; fi
wait
exit $rc
