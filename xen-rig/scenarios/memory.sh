#!/bin/sh
# Scenario "memory": vm-memory-xen against real Xen (issue 5). A plain domU loads rig-mem.ko, which writes
# a known pattern into two pages, grants the first to dom0, reserves a reference it never grants and
# publishes all three in its xenstore data/ directory; memory.mjs reads the pattern back through a foreign
# mapping (privcmd) and a grant mapping (gntdev), sees the ungranted reference refused with a typed error
# and prints the on-demand grant map/unmap rate.
#@packages @xen-vhost/xen-sys @xen-vhost/vm-memory-xen
#@expect DOMU: rig-mem loaded
#@expect RIG: ok memory foreign mapping
#@expect RIG: ok memory grant mapping of ref
#@expect RIG: ok memory ungranted ref
#@expect RIG: ok memory grant map/unmap rate
. ./lib/domu.sh
xl create /guest/domu-plain.cfg 'name="mem"' 'extra="console=hvc0 rdinit=/init domu.test=mem domu.hold=600"' >/tmp/xl-mem.log 2>&1 \
  || { echo "RIG: FAIL xl create"; cat /tmp/xl-mem.log; exit 1; }
node memory.mjs "$(xl domid mem)"; rc=$?
xl destroy mem; domu_console mem
exit $rc
