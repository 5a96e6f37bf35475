#!/bin/sh
# Scenario "xen-sys": @xen-vhost/xen-sys against Xen's own tools, with a plain domU running.
#  - domains: Xen.listDomains() (sysctl getdomaininfolist) and getDomainInfo() (domctl) against `xl list -v`
#    (domids, memory, vCPUs, UUIDs, state flags; names through XenStore when xen-sys has its client);
#  - XEN_SYSCTL_physinfo against `xl info`; dm_op nr_vcpus against xl;
#  - console_io: a line written by Xen.consoleWrite() must reach the Xen console, i.e. the serial log
#    the host checks. The script never prints that marker itself, so finding it proves the hypercall;
#  - XenStore over the xenstored socket and over /dev/xen/xenbus: names, directory, read/write both ways,
#    permissions, a watch fired by xenstore-write, a transaction, 64 requests in flight, errors, rm.
#@packages @xen-vhost/xen-sys
#@expect RIG: ok xen-sys domain list
#@expect RIG: ok xen-sys getdomaininfo
#@expect RIG: ok xen-sys physinfo
#@expect RIG: ok xen-sys ioreq server
#@expect RIG: ok xen-sys foreign map
#@expect RIG: ok console_io
#@expect RIG: ok xen-sys xenstore socket
#@expect RIG: ok xen-sys xenstore xenbus
#@expect RIG: ok xen-sys
. ./lib/domu.sh

xl create /guest/domu-plain.cfg 'name="xsys"' 'extra="console=hvc0 rdinit=/init domu.hold=300"' >/tmp/xl-xsys.log 2>&1 \
  || { echo "RIG: FAIL xl create"; cat /tmp/xl-xsys.log; exit 1; }
i=0; until grep -q '^DOMU: up' /var/log/xen/console/guest-xsys.log 2>/dev/null || [ $i -ge 300 ]; do sleep 0.2; i=$((i + 1)); done
domu_console xsys
xl list -v > /tmp/xl-list.txt; xl info > /tmp/xl-info.txt
cat /tmp/xl-list.txt
node xen-sys.mjs /tmp/xl-list.txt /tmp/xl-info.txt xsys; rc=$?
xl destroy xsys
exit $rc
