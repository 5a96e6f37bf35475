#!/bin/sh
# Scenario "lifecycle": the bridge (discovery mode) and vhost-device-rng through a guest's life and their own.
#  1. destroy and recreate: domU lc1 reads /dev/hwrng and is destroyed while running (the bridge releases
#     the device on libxl's Closing); lc2, a new domain with the same slot, gets the device again.
#  2. backend crash: lc2 reads /dev/hwrng in a loop; the backend is killed with SIGKILL mid-loop and started
#     again; the bridge reconnects and replays the device state, and every read of the guest completes (a
#     request lost in the crash would block the guest's read forever, and lc2 would never finish).
#  3. bridge restart: lc3 is created paused and set up by bridge 1; bridge 1 gets SIGTERM (destroys its
#     ioreq server, puts the slot back to Initialising); bridge 2 finds the slot again and registers its own
#     ioreq server for the same MMIO range (Xen would refuse the range, EEXIST, had the old server leaked;
#     Xen hands out the lowest free server id, so it is bridge 1's id again); lc3 reads /dev/hwrng through it.
#@packages xen-vhost-master vhost-device-rng @xen-vhost/vm-memory-xen
#@timeout 600
#@expect RIG: ok lifecycle lc1 read hwrng
#@expect RIG: ok lifecycle recreate
#@expect RIG: ok lifecycle backend killed and restarted
#@expect RIG: ok lifecycle no lost request
#@expect RIG: ok lifecycle bridge restart
#@expect RIG: ok lifecycle lc3 read hwrng through the new bridge
. ./lib/domu.sh
M=/opt/xen-vhost/node_modules
con() { tr -d '\r' < "/var/log/xen/console/guest-$1.log" 2>/dev/null; }
# console_wait NAME REGEX SECONDS: until the domain's console shows a line matching REGEX
console_wait() {
  end=$(awk -v u="$(up)" -v s="$3" 'BEGIN { print int(u + s) }')
  until con "$1" | grep -q "$2"; do [ "$(up | cut -d. -f1)" -lt "$end" ] || return 1; sleep 0.5; done
}
# log_wait FILE REGEX COUNT SECONDS: until FILE has COUNT lines matching REGEX
log_wait() {
  end=$(awk -v u="$(up)" -v s="$4" 'BEGIN { print int(u + s) }')
  until [ "$(grep -c "$2" "$1")" -ge "$3" ]; do [ "$(up | cut -d. -f1)" -lt "$end" ] || return 1; sleep 0.2; done
}
start_backend() {
  node "$M/vhost-device-rng/dist/main.js" -s /tmp/rng.sock --xen-mapper "$M/@xen-vhost/vm-memory-xen/dist/index.js" >>/tmp/rng.log 2>&1 & rng=$!
  i=0; until [ -S /tmp/rng.sock0 ] || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
}
start_bridge() { # $1: log file
  node "$M/xen-vhost-master/dist/main.js" --config /tmp/bridge.json --log-level debug >"$1" 2>&1 & br=$!
  log_wait "$1" '"msg":"running"' 1 60 || { echo "RIG: FAIL bridge did not start"; tail -5 "$1"; return 1; }
}
bridge_problems() { grep -E '"level":"(warn|error)"' "$1" | cut -c1-260 | sed 's/^/RIG: bridge problem: /' | tail -6; }
bridge_tail() { grep -v '"level":"debug"' "$1" | cut -c1-260 | sed 's/^/RIG: bridge: /' | tail -"${2:-12}"; }
create() { # $1 name, $2 extra
  xl create -p /guest/domu-virtio.cfg "name=\"$1\"" "extra=\"console=hvc0 rdinit=/init domu.virtio=probe $2\"" >/tmp/xl-$1.log 2>&1 \
    || { echo "RIG: FAIL xl create $1"; cat /tmp/xl-$1.log; return 1; }
}

virtio_slot_setup || { echo "RIG: FAIL losetup"; exit 1; }
rm -f /tmp/rng.sock0 /tmp/rng.log
start_backend
echo '{ "devices": [ { "name": "rng", "socket": "/tmp/rng.sock0" } ] }' >/tmp/bridge.json
start_bridge /tmp/bridge1.log || exit 1

# ---- 1. destroy and recreate
create lc1 "domu.hold=600" || exit 1
d1=$(xl domid lc1)
log_wait /tmp/bridge1.log 'device ready for the guest' 1 60
xl unpause lc1
if console_wait lc1 '^DOMU: hwrng virtio_rng' 150; then echo "RIG: ok lifecycle lc1 read hwrng: $(con lc1 | grep '^DOMU: hwrng')"
else echo "RIG: FAIL lifecycle lc1 did not read hwrng"; domu_console lc1; bridge_problems /tmp/bridge1.log; fi
xl destroy lc1
log_wait /tmp/bridge1.log '"guest released"' 1 60 || echo "RIG: FAIL lifecycle bridge kept domain $d1"
create lc2 "domu.test=rngloop domu.rngsecs=25" || exit 1
d2=$(xl domid lc2)
log_wait /tmp/bridge1.log 'device ready for the guest' 2 60
xl unpause lc2
if console_wait lc2 '^DOMU: hwrng virtio_rng' 150; then echo "RIG: ok lifecycle recreate: domain $d1 destroyed, new domain $d2 got the device back: $(con lc2 | grep '^DOMU: hwrng')"
else echo "RIG: FAIL lifecycle recreated domain $d2 did not read hwrng"; fi

# ---- 2. backend crash mid-I/O
if console_wait lc2 '^DOMU: rngloop [0-9]* reads' 90; then
  before=$(con lc2 | sed -n 's/^DOMU: rngloop \([0-9]*\) reads.*/\1/p' | tail -1)
  kill -9 $rng; wait $rng 2>/dev/null
  echo "RIG: lifecycle backend killed (SIGKILL) after the guest's read $before"
  sleep 2
  start_backend
  if [ -S /tmp/rng.sock0 ] && log_wait /tmp/bridge1.log 'reconnected' 1 90; then echo "RIG: ok lifecycle backend killed and restarted; bridge: $(grep 'reconnected' /tmp/bridge1.log | grep -v '"level":"debug"' | tail -1 | cut -c1-200)"
  else echo "RIG: FAIL lifecycle no reconnect after the backend restart"; fi
else echo "RIG: FAIL lifecycle lc2 never started its read loop"; fi
domu_wait lc2 180; domu_console lc2
done_line=$(con lc2 | grep '^DOMU: rngloop done')
after=$(echo "$done_line" | sed -n 's/.*done: \([0-9]*\) reads.*/\1/p')
if [ -n "$after" ] && [ -n "$before" ] && [ "$after" -gt "$before" ] && ! con lc2 | grep -q 'rngloop short read'; then
  echo "RIG: ok lifecycle no lost request: the guest's reads all completed, $before before the kill, $after in all"
else echo "RIG: FAIL lifecycle guest reads: '$done_line' (before the kill: $before)"; fi

# ---- 3. bridge restart
create lc3 "" || exit 1
d3=$(xl domid lc3)
log_wait /tmp/bridge1.log 'device ready for the guest' 3 60
id1=$(grep '"ioreq server created"' /tmp/bridge1.log | grep "\"domid\":$d3," | sed -n 's/.*"id":\([0-9]*\).*/\1/p' | tail -1)
kill -TERM $br; wait $br; rc1=$?
start_bridge /tmp/bridge2.log || { xl destroy lc3; exit 1; }
if log_wait /tmp/bridge2.log 'device ready for the guest' 1 60; then
  id2=$(grep '"ioreq server created"' /tmp/bridge2.log | grep "\"domid\":$d3," | sed -n 's/.*"id":\([0-9]*\).*/\1/p' | tail -1)
  [ "$rc1" = 0 ] && [ -n "$id1" ] && [ "$id1" = "$id2" ] \
    && echo "RIG: ok lifecycle bridge restart: bridge 1 exited $rc1, bridge 2 registered ioreq server $id2 for domain $d3 (bridge 1's id: freed, not leaked)" \
    || echo "RIG: FAIL lifecycle bridge restart: exit $rc1, server ids '$id1' -> '$id2'"
else echo "RIG: FAIL lifecycle bridge 2 could not register domain $d3"; bridge_tail /tmp/bridge2.log; fi
xl unpause lc3
console_wait lc3 '^DOMU: done' 150; domu_wait lc3 20; domu_console lc3
con lc3 | grep -q '^DOMU: hwrng virtio_rng' && echo "RIG: ok lifecycle lc3 read hwrng through the new bridge" || { echo "RIG: FAIL lifecycle lc3 did not read hwrng"; bridge_problems /tmp/bridge2.log; }
bridge_tail /tmp/bridge1.log 14; bridge_tail /tmp/bridge2.log 6
kill -TERM $br; wait $br
kill $rng 2>/dev/null; wait
exit 0
