#!/bin/sh
# Scenario "xensys": @xen-vhost/xen-sys on real Xen 4.17 arm64 (sysctl/domctl with version probing,
# console_io, dm_op ioreq server + ioreq pages + MMAP_RESOURCE, evtchn on the loop, foreign mapping with
# per-page errors, gntdev map + grant copy of the domU's xenstore ring grant, XenStore over the socket and
# /dev/xen/xenbus). Copy this file and xensys.mjs into xen-rig/scenarios/ to run it: xen-rig/run.sh xensys
#@packages @xen-vhost/xen-sys
#@expect RIG: ok xen-sys
. ./lib/domu.sh
xl create -p /guest/domu-plain.cfg >/tmp/xl-xs.log 2>&1 || { echo "RIG: FAIL xl create"; cat /tmp/xl-xs.log; exit 1; }
d=$(xl domid plain)
echo "RIG: domU plain is $d (paused)"
DOMU=$d node xensys.mjs; rc=$?
xl destroy plain 2>/dev/null
exit $rc
