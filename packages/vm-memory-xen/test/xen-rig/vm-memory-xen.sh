#!/bin/sh
# Scenario "vm-memory-xen" (for xen-rig/scenarios/, NOT YET RUN: copy this file and vm-memory-xen.mjs there):
# @xen-vhost/vm-memory-xen against real Xen 4.17 with a plain 128 MiB domU running:
#  - guest RAM layout from getdomaininfo page counts and from XenStore memory/static-max agree (RAM0, 128 MiB);
#  - the whole RAM foreign-mapped through privcmd (MMAPBATCH_V2) in chunks, read through XenGuestMemory;
#  - a frame past the end of RAM: ForeignMapFailed naming that frame;
#  - the vhost-user description's fd is a fresh /dev/xen/privcmd restricted to the domU;
#  - a grant reference the domU never granted: GrantMapFailed through the real gntdev.
#@packages @xen-vhost/vm-memory-xen
#@expect RIG: ok vm-memory-xen layout
#@expect RIG: ok vm-memory-xen foreign map
#@expect RIG: ok vm-memory-xen hole
#@expect RIG: ok vm-memory-xen description
#@expect RIG: ok vm-memory-xen ungranted
#@expect RIG: ok vm-memory-xen
. ./lib/domu.sh

xl create /guest/domu-plain.cfg 'name="vmx"' 'extra="console=hvc0 rdinit=/init domu.hold=300"' >/tmp/xl-vmx.log 2>&1 \
  || { echo "RIG: FAIL xl create"; cat /tmp/xl-vmx.log; exit 1; }
i=0; until grep -q '^DOMU: up' /var/log/xen/console/guest-vmx.log 2>/dev/null || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
domu_console vmx
node vm-memory-xen.mjs "$(xl domid vmx)"; rc=$?
xl destroy vmx
exit $rc
