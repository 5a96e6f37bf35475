#!/bin/sh
# Scenario "rng-perf": the guest's /dev/hwrng throughput through the TypeScript device model next to a C one,
# in the same QEMU run (issue 12). Two domUs one after the other in the 4.17 virtio slot (0x2000000, SPI 33),
# each reading KIB KiB of /dev/hwrng once (domu.test=rngbench):
#   C   rng-cdm (raw privcmd/evtchn syscalls, guest RAM through MMAPBATCH_V2, getrandom, set_irq_level)
#   TS  dm-rng.mjs (ioreq-eventfd + vm-memory-xen + virtio-mmio + virtio-queue on Node's loop; its served-bytes
#       log goes to /dev/null, which still costs it a hex conversion and a write per request)
# Linux's hw_random core asks virtio_rng for at most a cache line (64 bytes on arm64) per request, so this
# is a requests-per-second figure (each request: a QueueNotify trap, an interrupt, InterruptStatus read and
# InterruptACK write), not a bandwidth one; bytes/requests below come from the models' own counters.
# Under TCG only the ratio means anything.
#@packages @xen-vhost/xen-sys @xen-vhost/ioreq-eventfd @xen-vhost/vm-memory-xen @xen-vhost/virtio-mmio @xen-vhost/virtio-queue
#@expect RIG: ok rng-perf c
#@expect RIG: ok rng-perf ts
#@expect RIG: ok rng throughput TS/C
#@timeout 300
. ./lib/domu.sh
KIB=32
bin=$(pwd)/perf-bin
[ -x "$bin/rng-cdm" ] || { echo "RIG: FAIL rng-perf: perf-bin/rng-cdm was not built (scenarios/perf-build.sh on the host)"; exit 1; }
virtio_slot_setup || { echo "RIG: FAIL losetup"; exit 1; }
w=/tmp/rng-perf; rm -rf $w; mkdir -p $w

# wait_console NAME PATTERN SECONDS
wait_console() {
  i=0; until tr -d '\r' < /var/log/xen/console/guest-$1.log 2>/dev/null | grep -q "$2" || [ $i -ge $(($3 * 5)) ]; do sleep 0.2; i=$((i + 1)); done
}

# run_one KIND NAME: one domU served by that model; leaves "<ms> <bytes>" in $w/KIND.
run_one() {
  kind=$1; name=$2
  virtio_backend_ack 200
  xl create -p /guest/domu-virtio.cfg "name=\"$name\"" \
    "extra=\"console=hvc0 rdinit=/init domu.virtio=probe domu.test=rngbench domu.rngkib=$KIB\"" >$w/xl-$name.log 2>&1 \
    || { echo "RIG: FAIL rng-perf $kind xl create"; cat $w/xl-$name.log; return 1; }
  d=$(xl domid $name)
  if [ $kind = c ]; then "$bin/rng-cdm" "$d" 0x2000000 33 128 $w/ready-$kind > $w/dm-$kind.log 2>&1 & dm=$!
  else node dm-rng.mjs "$d" 0x2000000 33 $w/ready-$kind /dev/null > $w/dm-$kind.log 2>&1 & dm=$!; fi
  i=0; until [ -f $w/ready-$kind ] || [ $i -ge 600 ] || ! kill -0 $dm 2>/dev/null; do sleep 0.2; i=$((i + 1)); done
  [ -f $w/ready-$kind ] || { echo "RIG: FAIL rng-perf $kind device model did not come up"; cat $w/dm-$kind.log; xl destroy $name; wait $dm; return 1; }
  t0=$(up)
  xl unpause $name
  # rng-cdm runs until told: stop it once the guest has its figure (it holds the guest's RAM, so the
  # domain could not finish dying before); dm-rng.mjs lets go by itself when the domain is dying.
  wait_console $name '^DOMU: done' 150
  [ $kind = c ] && kill -TERM $dm 2>/dev/null
  domu_wait $name 60; domu_console $name | grep -E 'rngbench|virtio0|hwrng'
  wait $dm; rc=$?
  cat $w/dm-$kind.log
  [ $rc = 0 ] || { echo "RIG: FAIL rng-perf $kind device model exit status $rc"; return 1; }
  line=$(tr -d '\r' < /var/log/xen/console/guest-$name.log | sed -n 's/^DOMU: rngbench \([0-9]*\) bytes in \([0-9]*\) ms.*/\2 \1/p')
  set -- $line
  [ "${2:-0}" = $((KIB * 1024)) ] && [ "${1:-0}" -gt 0 ] || { echo "RIG: FAIL rng-perf $kind: no rngbench figure ('$line')"; return 1; }
  req=$(sed -n 's/.*served \([0-9]*\) bytes in \([0-9]*\) requests.*/\1 \2/p' $w/dm-$kind.log)
  echo "$1 $2 $req" > $w/$kind
  echo "RIG: ok rng-perf $kind $2 bytes in $1 ms; model served $(echo $req | cut -d' ' -f1) bytes in $(echo $req | cut -d' ' -f2) requests; domU $(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }') s"
}
run_one c rngc || exit 1
run_one ts rngts || exit 1
read cms cb cserved creq < $w/c
read tms tb tserved treq < $w/ts
awk -v cms="$cms" -v tms="$tms" -v cb="$cb" -v cs="$cserved" -v cr="$creq" -v ts="$tserved" -v tr="$treq" 'BEGIN {
  printf "RIG: ok rng throughput TS/C %.2fx (TS %.1f KiB/s, C %.1f KiB/s; time TS/C %.2fx; %.0f / %.0f bytes per request (TS / C), i.e. ~%.0f vs ~%.0f requests/s in the timed read; %d KiB each, TCG: ratio only)\n",
    cms / tms, cb / 1024 / (tms / 1000), cb / 1024 / (cms / 1000), tms / cms, ts / tr, cs / cr, cb / (ts / tr) / (tms / 1000), cb / (cs / cr) / (cms / 1000), cb / 1024 }'
wait
