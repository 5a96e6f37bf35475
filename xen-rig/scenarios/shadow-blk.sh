#!/bin/sh
# Scenario "shadow-blk" (issue 12, scenario 4): a stock vhost-user backend that knows nothing of Xen serves a
# real Xen guest. Debian's arm64 qemu-storage-daemon exports a small raw image as vhost-user-blk; it offers no
# XEN_MMAP, so xen-vhost-master (discovery mode, --shadow auto) gives it memfd shadow memory and shadow rings
# and copies between them and the guest's foreign-mapped rings. The 4.17 `disk` slot is what libxl makes
# anyway; the bridge serves it as virtio-blk. The Linux guest binds virtio_blk, reads sectors whose content
# dom0 wrote (md5 and the leading text of each, compared here with the image file), writes a sector of its
# own and reads it back; dom0 then finds the guest's sector in the image file qsd wrote it to.
#@packages xen-vhost-master
#@expect RIG: shadow-blk backend listening
#@expect RIG: shadow-blk bridge running
#@expect DOMU: virtio virtio0 device=0x0002 driver=virtio_blk
#@expect RIG: ok shadow-blk shadow rings
#@expect RIG: ok shadow-blk capacity 8192 sectors
#@expect RIG: ok shadow-blk read 5 sectors
#@expect RIG: ok shadow-blk guest write reached the image
#@expect RIG: ok shadow-blk xenbus states
#@expect RIG: ok shadow-blk teardown
. ./lib/domu.sh
M=/opt/xen-vhost/node_modules
IMG=/tmp/shadow-blk.img
SOCK=/tmp/qsd-blk.sock
SECTORS=8192
READ="0 1 100 2048 8191"       # 100 is left zero
WRITE=4000
virtio_slot_setup || { echo "RIG: FAIL losetup"; exit 1; }

# The image: 4 MiB of zeros, and at each known sector 16 records of 32 bytes naming it.
dd if=/dev/zero of=$IMG bs=512 count=$SECTORS 2>/dev/null
for s in $READ; do
  [ "$s" = 100 ] && continue
  i=0; : > /tmp/rec; while [ $i -lt 16 ]; do printf 'xv-sector-%08d-known-%02d....\n' "$s" $i >> /tmp/rec; i=$((i + 1)); done
  dd if=/tmp/rec of=$IMG bs=512 seek="$s" count=1 conv=notrunc 2>/dev/null
done
sector() { dd if=$IMG bs=512 skip="$1" count=1 2>/dev/null; }

rm -f $SOCK
qemu-storage-daemon \
  --blockdev driver=file,node-name=file0,filename=$IMG,cache.direct=off \
  --blockdev driver=raw,node-name=disk0,file=file0 \
  --export type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=$SOCK,writable=on,num-queues=1 \
  >/tmp/qsd.log 2>&1 & qsd=$!
i=0; until [ -S $SOCK ] || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
[ -S $SOCK ] || { echo "RIG: FAIL qemu-storage-daemon did not listen"; sed 's/^/RIG: qsd: /' /tmp/qsd.log; kill $qsd; exit 1; }
echo "RIG: shadow-blk backend listening ($(qemu-storage-daemon --version | head -1))"

echo "{ \"devices\": [ { \"name\": \"blk\", \"socket\": \"$SOCK\", \"shadow\": \"auto\" } ] }" >/tmp/bridge-blk.json
node "$M/xen-vhost-master/dist/main.js" --config /tmp/bridge-blk.json --log-level debug >/tmp/bridge-blk.log 2>&1 & br=$!
i=0; until grep -q '"msg":"running"' /tmp/bridge-blk.log || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
grep -q '"msg":"running"' /tmp/bridge-blk.log || { echo "RIG: FAIL bridge did not start"; tail -20 /tmp/bridge-blk.log; kill $br $qsd; exit 1; }
echo "RIG: shadow-blk bridge running"

# The backend's xenbus state as the toolstack sees it, every change, until the guest is gone: the bridge
# must say InitWait (2) before libxl's ~10 s wait ends and Connected (4) once the guest's driver found it.
rm -f /tmp/sblk-states /tmp/sblk-stop
( last=""
  while [ ! -f /tmp/sblk-stop ]; do
    v=$(xenstore-ls -f /local/domain/0/backend/virtio_disk 2>/dev/null | sed -n 's|.*/state = "*\([0-9]*\)"*$|\1|p' | head -1)
    [ -n "$v" ] && [ "$v" != "$last" ] && { echo "$v" >> /tmp/sblk-states; last=$v; }
    sleep 0.1
  done ) & poll=$!
t0=$(up)
xl create -p /guest/domu-virtio.cfg 'name="sblk"' \
  "extra=\"console=hvc0 rdinit=/init domu.virtio=probe domu.test=blk domu.blkread=$(echo $READ | tr ' ' ,) domu.blkwrite=$WRITE\"" \
  >/tmp/xl-sblk.log 2>&1 \
  || { echo "RIG: FAIL xl create"; cat /tmp/xl-sblk.log; grep -v '"level":"debug"' /tmp/bridge-blk.log | tail -20; kill $br $qsd; exit 1; }
i=0; until grep -q 'device ready for the guest' /tmp/bridge-blk.log || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
echo "RIG: shadow-blk device served $(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }') s after xl create"
xl unpause sblk
domu_wait sblk 240; domu_console sblk > /tmp/sblk.out; cat /tmp/sblk.out
touch /tmp/sblk-stop; wait $poll

# What the guest saw, against the image.
grep -q '"msg":"shadow rings started"' /tmp/bridge-blk.log && echo "RIG: ok shadow-blk shadow rings (qsd has no XEN_MMAP)" \
  || echo "RIG: FAIL shadow-blk: the bridge never started shadow rings"
n=$(sed -n 's/^DOMU: blk vda sectors=\([0-9]*\).*/\1/p' /tmp/sblk.out)
[ "$n" = $SECTORS ] && echo "RIG: ok shadow-blk capacity $n sectors" || echo "RIG: FAIL shadow-blk capacity: guest saw '${n}', image has $SECTORS"
ok=0
for s in $READ; do
  want=$(sector "$s" | md5sum | cut -d' ' -f1)
  line=$(grep "^DOMU: blk read sector $s md5=" /tmp/sblk.out)
  got=$(echo "$line" | sed -n 's/.* md5=\([0-9a-f]*\).*/\1/p')
  if [ -n "$got" ] && [ "$got" = "$want" ]; then ok=$((ok + 1))
  else echo "RIG: FAIL shadow-blk sector $s: guest md5 '${got}', image $want ($line)"; fi
done
grep -q "^DOMU: blk read sector 2048 md5=[0-9a-f]* head=xv-sector-00002048" /tmp/sblk.out \
  || echo "RIG: FAIL shadow-blk: sector 2048's text is not what dom0 wrote"
[ $ok = 5 ] && echo "RIG: ok shadow-blk read 5 sectors: content equals the image (md5 each; sector 2048 reads 'xv-sector-00002048')"
wl=$(grep "^DOMU: blk wrote sector $WRITE md5=" /tmp/sblk.out)
wmd5=$(echo "$wl" | sed -n 's/.* md5=\([0-9a-f]*\) .*/\1/p'); rb=$(echo "$wl" | sed -n 's/.* readback=\([0-9a-f]*\).*/\1/p')
img=$(sector $WRITE | md5sum | cut -d' ' -f1)
if [ -n "$wmd5" ] && [ "$wmd5" = "$rb" ] && [ "$wmd5" = "$img" ]; then
  echo "RIG: ok shadow-blk guest write reached the image (sector $WRITE md5 $img: '$(sector $WRITE | head -c 29)')"
else
  echo "RIG: FAIL shadow-blk write: guest wrote $wmd5, read back $rb, image has $img"
fi

states=$(tr '\n' ' ' < /tmp/sblk-states)
case " $states" in
  *" 2 "*"4 "*) echo "RIG: ok shadow-blk xenbus states seen: $states(InitWait while the bridge set up and libxl waited, Connected once the guest's driver found the device, then the toolstack's Closing/Closed)";;
  *) echo "RIG: FAIL shadow-blk xenbus states seen: $states(want InitWait, then Connected)";;
esac

grep -v '"level":"debug"' /tmp/bridge-blk.log | cut -c1-300 | sed 's/^/RIG: bridge: /' | tail -25
kill -TERM $br; wait $br; rc=$?
grep -q '"msg":"stopped"' /tmp/bridge-blk.log && [ $rc = 0 ] && echo "RIG: ok shadow-blk teardown" || echo "RIG: FAIL bridge exit $rc"
kill $qsd 2>/dev/null; wait
exit 0
