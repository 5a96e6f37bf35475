#!/bin/sh
# Scenario "bridge-i2c-gpio": the rest of the seed's flow. vhost-device-i2c (a simulated adapter with the
# DS1338 RTC at 0x20) and vhost-device-gpio (a simulated chip: led0, led1, button) run in dom0 with the
# vm-memory-xen region mapper (XEN_MMAP); one domU gets two virtio-mmio slots (4.17 "disk" trick twice:
# 0x2000000/SPI 33 and 0x2000200/SPI 34). A 4.17 virtio_disk entry carries no device type, so the bridge
# is given the two slots statically (--config with domid, mmioBase, irq and name per device) once the
# paused domain exists; the shell plays libxl's xenbus states. The guest loads i2c-virtio and gpio-virtio,
# reads the RTC's time registers through /dev/i2c-N (I2C_RDWR) and writes/reads its RAM (SMBus), drives
# two GPIO lines and reads them back and reads the button line, which dom0 pressed through the backend's
# --sim-stdin. The RTC time the guest decoded must be dom0's UTC time (the simulated RTC follows it).
#@packages xen-vhost-master vhost-device-i2c vhost-device-gpio @xen-vhost/vm-memory-xen
#@expect RIG: bridge-i2c-gpio backends listening
#@expect RIG: bridge-i2c-gpio bridge running with 2 devices
#@expect DOMU: dt virtio@2000200 compatible=virtio,mmio
#@expect DOMU: virtio virtio0 device=0x0022 driver=i2c_virtio
#@expect DOMU: virtio virtio1 device=0x0029 driver=gpio_virtio
#@expect DOMU: i2c rtc ram read 0x5a
#@expect DOMU: gpio line 0 out 1 -> 1, out 0 -> 0
#@expect DOMU: gpio line 1 out 1 -> 1, out 0 -> 0
#@expect DOMU: gpio line 2 in -> 1
#@expect RIG: ok bridge-i2c-gpio rtc time
#@expect RIG: ok bridge-i2c-gpio teardown
. ./lib/domu.sh
M=/opt/xen-vhost/node_modules
MAPPER=$M/@xen-vhost/vm-memory-xen/dist/index.js
virtio_slot_setup 2 || { echo "RIG: FAIL losetup"; exit 1; }
rm -f /tmp/i2c.sock0 /tmp/gpio.sock0 /tmp/gpio.in; mkfifo /tmp/gpio.in
node "$M/vhost-device-i2c/dist/main.js" -s /tmp/i2c.sock -l sim:rtc@0x20 --xen-mapper "$MAPPER" >/tmp/i2c.log 2>&1 & i2c=$!
node "$M/vhost-device-gpio/dist/main.js" -s /tmp/gpio.sock -l sim=led0,led1,button --sim-stdin --xen-mapper "$MAPPER" </tmp/gpio.in >/tmp/gpio.log 2>&1 & gpio=$!
exec 3>/tmp/gpio.in      # the backend's stdin stays open while the scenario runs
i=0; until { [ -S /tmp/i2c.sock0 ] && [ -S /tmp/gpio.sock0 ]; } || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
[ -S /tmp/i2c.sock0 ] && [ -S /tmp/gpio.sock0 ] || { echo "RIG: FAIL backends did not listen"; cat /tmp/i2c.log /tmp/gpio.log; exit 1; }
echo "RIG: bridge-i2c-gpio backends listening"
echo "0 button 1" >&3     # press the simulated button before the guest looks
virtio_backend_ack 400
xl create -p /guest/domu-virtio2.cfg 'name="bi2c"' 'extra="console=hvc0 rdinit=/init domu.virtio=probe domu.test=i2c,gpio"' >/tmp/xl-bi2c.log 2>&1 \
  || { echo "RIG: FAIL xl create"; cat /tmp/xl-bi2c.log; exit 1; }
d=$(xl domid bi2c)
cat >/tmp/bridge.json <<EOJ
{ "devices": [
  { "name": "i2c",  "domid": $d, "mmioBase": "0x2000000", "irq": 33, "socket": "/tmp/i2c.sock0" },
  { "name": "gpio", "domid": $d, "mmioBase": "0x2000200", "irq": 34, "socket": "/tmp/gpio.sock0" } ] }
EOJ
node "$M/xen-vhost-master/dist/main.js" --config /tmp/bridge.json --log-level debug >/tmp/bridge.log 2>&1 & br=$!
i=0; until grep -q '"msg":"running"' /tmp/bridge.log || [ $i -ge 400 ] || ! kill -0 $br 2>/dev/null; do sleep 0.2; i=$((i + 1)); done
n=$(grep -c 'device ready for the guest' /tmp/bridge.log)
[ "$n" = 2 ] && echo "RIG: bridge-i2c-gpio bridge running with 2 devices" \
  || { echo "RIG: FAIL bridge ready with $n devices"; grep -v '"level":"debug"' /tmp/bridge.log | cut -c1-300 | tail -20; xl destroy bi2c; exit 1; }
t0=$(date -u +%s)
xl unpause bi2c
domu_wait bi2c 180; domu_console bi2c
# The RTC time the guest read must be dom0's clock (UTC) while the guest ran, within a minute either side.
t=$(tr -d '\r' < /var/log/xen/console/guest-bi2c.log | sed -n 's/^DOMU: i2c rtc time \(.*\)$/\1/p')
ts=$(date -u -d "$t" +%s 2>/dev/null)
if [ -n "$ts" ] && [ "$ts" -ge $((t0 - 60)) ] && [ "$ts" -le $(($(date -u +%s) + 60)) ]; then echo "RIG: ok bridge-i2c-gpio rtc time $t UTC (dom0 clock $(date -u -d @"$t0" '+%Y-%m-%d %H:%M:%S') at unpause)"
else echo "RIG: FAIL bridge-i2c-gpio rtc time '$t' is not dom0's $(date -u -d @"$t0" '+%Y-%m-%d %H:%M:%S')"; fi
grep -v '"level":"debug"' /tmp/bridge.log | cut -c1-300 | sed 's/^/RIG: bridge: /' | tail -20
kill -TERM $br; wait $br; rc=$?
grep -q '"msg":"stopped"' /tmp/bridge.log && [ $rc = 0 ] && echo "RIG: ok bridge-i2c-gpio teardown" || echo "RIG: FAIL bridge exit $rc"
exec 3>&-
kill $i2c $gpio 2>/dev/null; wait
exit 0
