#!/bin/sh
# Scenario "monitor": apps/xen-monitor (the stub-domain monitor demo) on real Xen. It runs in dom0 polling
# sysctl getdomaininfolist while this script drives xl: create a domU, pause, unpause, destroy it, then a
# second domU that powers itself off and is preserved (on_poweroff="preserve"), so Xen reports it shut down
# with SHUTDOWN_poweroff. Each change must reach Xen's console through the monitor's console_io writes,
# i.e. the serial log the host checks: the "xen-monitor: ..." markers below are written only by the
# hypercall (this script never prints that prefix; the monitor's stdout is JSON and stays in a file, and is
# checked here separately). `--once` must agree with `xl list` (name, id, memory, vCPUs, p/s/c/d state).
#@packages xen-monitor
#@expect RIG: monitor running
#@expect xen-monitor: Domain-0 present (domain 0)
#@expect xen-monitor: monu created (domain
#@expect xen-monitor: monu paused (domain
#@expect xen-monitor: monu unpaused (domain
#@expect xen-monitor: monu destroyed (domain
#@expect xen-monitor: monp created (domain
#@expect xen-monitor: monp shut down: poweroff (domain
#@expect xen-monitor: monp destroyed (domain
#@expect RIG: ok monitor once agrees with xl list
#@expect RIG: ok monitor stdout
#@expect RIG: ok monitor stopped
. ./lib/domu.sh
MON=/opt/xen-vhost/node_modules/xen-monitor/dist/main.js
OUT=/tmp/monitor.jsonl; ERR=/tmp/monitor.err
fails=0
fail() { echo "RIG: FAIL monitor $*"; fails=$((fails + 1)); }

# count FRAGMENT NAME: lines of the monitor's JSON stdout about domain NAME containing FRAGMENT.
count() { grep -F "\"name\":\"$2\"" $OUT | grep -F -c "$1"; }
# wait_event FRAGMENT NAME SECONDS [BEFORE]: until there are more than BEFORE (default 0) such lines.
wait_event() {
  n=$(($3 * 5)); i=0
  while [ $i -lt $n ]; do
    [ "$(count "$1" "$2")" -gt "${4:-0}" ] && return 0
    sleep 0.2; i=$((i + 1))
  done
  return 1
}

node "$MON" --json --interval 0.5 >$OUT 2>$ERR & mon=$!
i=0; until grep -q '"type":"present","domid":0' $OUT 2>/dev/null || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
grep -q '"type":"present","domid":0' $OUT || { echo "RIG: FAIL monitor did not start"; cat $ERR; kill $mon; exit 1; }
echo "RIG: monitor running (pid $mon, first poll after $(awk '{print $1}' /proc/uptime)s uptime)"

# ---- create, pause, unpause, destroy ----------------------------------------------------------------------
xl create /guest/domu-plain.cfg 'name="monu"' 'extra="console=hvc0 rdinit=/init domu.hold=300"' >/tmp/xl-monu.log 2>&1 \
  || { fail "xl create"; cat /tmp/xl-monu.log; }
i=0; until grep -q '^DOMU: up' /var/log/xen/console/guest-monu.log 2>/dev/null || [ $i -ge 600 ]; do sleep 0.2; i=$((i + 1)); done
domu_console monu
wait_event '"type":"created"' monu 30 || fail "no created event for monu"

node "$MON" --once >/tmp/once.txt 2>/tmp/once.err; once_rc=$?
xl list >/tmp/xl-list.txt
sed 's/^/RIG: once: /' /tmp/once.txt; sed 's/^/RIG: xl:   /' /tmp/xl-list.txt
# Name, ID, Mem, VCPUs must be equal; of the State letters, p s c d must be (r/b is a sample of a moving
# target: dom0 runs xl and the monitor, the domU wakes when it likes). Time(s) moves on between the two.
cols() { awk 'NR > 1 { print $1, $2, $3, $4, substr($5, 3, 4) }' "$1"; }
if [ $once_rc = 0 ] && [ "$(head -1 /tmp/once.txt)" = "$(head -1 /tmp/xl-list.txt)" ] && [ "$(cols /tmp/once.txt)" = "$(cols /tmp/xl-list.txt)" ]; then
  echo "RIG: ok monitor once agrees with xl list ($(($(wc -l </tmp/once.txt) - 1)) domains)"
else
  fail "--once (rc $once_rc) differs from xl list: $(cat /tmp/once.err)"
fi

# xl create itself unpauses the domain it built paused: count only what comes after each command.
c=$(count '"to":"paused"' monu); xl pause monu
wait_event '"to":"paused"' monu 20 "$c" || fail "no paused event for monu"
c=$(count '"from":"paused"' monu); xl unpause monu
wait_event '"from":"paused"' monu 20 "$c" || fail "no unpaused event for monu"
xl destroy monu
wait_event '"type":"destroyed"' monu 20 || fail "no destroyed event for monu"

# ---- a guest that powers off and is kept: Xen reports it shut down, code SHUTDOWN_poweroff ------------------
xl create /guest/domu-plain.cfg 'name="monp"' 'on_poweroff="preserve"' 'extra="console=hvc0 rdinit=/init"' >/tmp/xl-monp.log 2>&1 \
  || { fail "xl create monp"; cat /tmp/xl-monp.log; }
wait_event '"type":"shutdown"' monp 240 || fail "no shutdown event for monp"
domu_console monp
xl list | sed 's/^/RIG: xl:   /'
xl destroy monp
wait_event '"type":"destroyed"' monp 20 || fail "no destroyed event for monp"

kill -TERM $mon; wait $mon; rc=$?
[ $rc = 0 ] && echo "RIG: ok monitor stopped (SIGTERM, exit 0)" || fail "exit status $rc after SIGTERM"
# The same changes on stdout, as JSON (reported here in RIG: lines without the console prefix).
types=$(grep -F -e '"name":"monu"' -e '"name":"monp"' $OUT | sed -n 's/.*"type":"\([a-z]*\)","domid":[0-9]*,"name":"\(mon[up]\)".*/\2:\1/p' | tr '\n' ' ')
echo "RIG: monitor stdout events: $types"
case "$types" in
  *monu:created*monu:state*monu:state*monu:destroyed*monp:created*monp:shutdown*monp:destroyed*)
    echo "RIG: ok monitor stdout ($(wc -l <$OUT) JSON lines)";;
  *) fail "stdout events out of order: $types";;
esac
[ -s $ERR ] && { echo "RIG: monitor stderr:"; sed 's/^/RIG:   /' $ERR; }
[ $fails = 0 ]
