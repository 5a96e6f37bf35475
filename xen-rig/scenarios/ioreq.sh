#!/bin/sh
# Scenario "ioreq": the device-model path of the bridge, end to end on real Xen, using only the project's
# packages. A domU with a virtio-mmio slot (Xen 4.17 "disk" trick: libxl's backend state acked in
# xenstore, the guest's DT gets virtio@2000000, 0x200 bytes, SPI 33 edge) is created paused; ioreq-dm.mjs
# (@xen-vhost/xen-sys + vmm-sys-util) creates an IOREQ server for the slot's MMIO window, maps the ioreq
# page, binds each vCPU's event channel on Node's loop and answers the guest's register accesses with a
# minimal virtio-mmio register file (magic, version 2, device id 0x1234 that no driver claims, a status
# register). The guest's virtio_mmio probe traps into Xen, reaches Node as ioreqs, and the guest then
# lists a virtio device with id 0x1234: every hop of the trap -> IOREQ -> event channel -> FdWatcher ->
# response -> notify path worked.
#@packages @xen-vhost/xen-sys
#@expect RIG: backend /local/domain/0/backend/virtio_disk/
#@expect DOMU: dt virtio@2000000 compatible=virtio,mmio reg=00000000020000000000000000000200 interrupts=000000000000000100000f01 dma-coherent
#@expect RIG: ioreq-dm ready
#@expect RIG: ioreq R off=0x000 size=4 -> 0x74726976
#@expect RIG: ioreq R off=0x008 size=4 -> 0x1234
#@expect DOMU: virtio_mmio loaded
#@expect DOMU: virtio virtio0 device=0x1234
#@expect RIG: ok ioreq-dm
. ./lib/domu.sh

virtio_slot_setup || { echo "RIG: FAIL losetup"; exit 1; }
virtio_backend_ack 400
xl create -p /guest/domu-virtio.cfg 'name="ioreq"' 'extra="console=hvc0 rdinit=/init domu.virtio=probe"' >/tmp/xl-ioreq.log 2>&1 \
  || { echo "RIG: FAIL xl create"; cat /tmp/xl-ioreq.log; exit 1; }
d=$(xl domid ioreq)
rm -f /tmp/ioreq-dm.ready
node ioreq-dm.mjs "$d" 0x2000000 0x200 /tmp/ioreq-dm.ready & dm=$!
i=0; until [ -f /tmp/ioreq-dm.ready ] || [ $i -ge 600 ] || ! kill -0 $dm 2>/dev/null; do sleep 0.2; i=$((i + 1)); done
[ -f /tmp/ioreq-dm.ready ] || { echo "RIG: FAIL device model did not come up"; xl destroy ioreq; exit 1; }
xl unpause ioreq
domu_wait ioreq 240; domu_console ioreq
wait $dm; rc=$?
wait
exit $rc
