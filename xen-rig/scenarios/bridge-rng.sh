#!/bin/sh
# Scenario "bridge-rng": the seed's flow on real Xen. The project's vhost-device-rng backend (with the
# vm-memory-xen region mapper, so it offers XEN_MMAP and maps guest RAM through privcmd itself) and
# xen-vhost-master in discovery mode run in dom0; `xl create` (4.17's virtio "disk" entry) makes a domU with
# a virtio-mmio slot; the bridge finds it in xenstore, answers libxl's InitWait, maps the guest's RAM,
# registers an IOREQ server and serves the slot as virtio-rng. The Linux guest binds virtio_rng and reads
# /dev/hwrng. SIGTERM then tears the bridge down. The bridge is started with the seed's own command line
# (`--socket-path <backend socket> --name <device>`, which means discovery for that device type).
#@packages xen-vhost-master vhost-device-rng @xen-vhost/vm-memory-xen
#@expect RIG: bridge-rng backend listening
#@expect RIG: bridge-rng bridge running
#@expect DOMU: virtio_mmio loaded
#@expect DOMU: virtio virtio0 device=0x0004 driver=virtio_rng
#@expect DOMU: hwrng virtio_rng.0:
#@expect RIG: ok bridge-rng teardown
. ./lib/domu.sh
M=/opt/xen-vhost/node_modules
virtio_slot_setup || { echo "RIG: FAIL losetup"; exit 1; }
rm -f /tmp/rng.sock0
node "$M/vhost-device-rng/dist/main.js" -s /tmp/rng.sock --xen-mapper "$M/@xen-vhost/vm-memory-xen/dist/index.js" >/tmp/rng.log 2>&1 & rng=$!
i=0; until [ -S /tmp/rng.sock0 ] || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
[ -S /tmp/rng.sock0 ] || { echo "RIG: FAIL backend did not listen"; cat /tmp/rng.log; exit 1; }
echo "RIG: bridge-rng backend listening"
node "$M/xen-vhost-master/dist/main.js" --socket-path /tmp/rng.sock0 --name rng --log-level debug >/tmp/bridge.log 2>&1 & br=$!
i=0; until grep -q '"msg":"running"' /tmp/bridge.log || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
grep -q '"msg":"running"' /tmp/bridge.log || { echo "RIG: FAIL bridge did not start"; cat /tmp/bridge.log; exit 1; }
echo "RIG: bridge-rng bridge running"
xl create -p /guest/domu-virtio.cfg 'name="brng"' 'extra="console=hvc0 rdinit=/init domu.virtio=probe"' >/tmp/xl-brng.log 2>&1 \
  || { echo "RIG: FAIL xl create"; cat /tmp/xl-brng.log; grep -v '"debug"' /tmp/bridge.log | tail -20; exit 1; }
i=0; until grep -q 'device ready for the guest' /tmp/bridge.log || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
xl unpause brng
domu_wait brng 240; domu_console brng
grep -v '"level":"debug"' /tmp/bridge.log | cut -c1-300 | sed 's/^/RIG: bridge: /' | tail -30
kill -TERM $br; wait $br; rc=$?
grep -q '"msg":"stopped"' /tmp/bridge.log && [ $rc = 0 ] && echo "RIG: ok bridge-rng teardown" || echo "RIG: FAIL bridge exit $rc"
kill $rng 2>/dev/null; wait
exit 0
