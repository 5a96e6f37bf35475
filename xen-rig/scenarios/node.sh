#!/bin/sh
# Scenario "node": the project's own native layer on real Xen. vmm-sys-util's addon (cross-built for
# arm64) loads under arm64 Node in dom0, opens the Xen device nodes through its open(), reports a missing
# node as SysError ENOENT, runs an EventFd ping-pong through two FdWatchers on Node's loop, and does an
# event-channel round trip over /dev/xen/evtchn (two loopback-bound ports, raw ioctls) with the FdWatcher
# as the only wake-up source.
#@packages @xen-vhost/vmm-sys-util
#@expect RIG: ok open /dev/xen/privcmd
#@expect RIG: ok open /dev/xen/evtchn
#@expect RIG: ok open /dev/xen/gntdev
#@expect RIG: ok open-missing ENOENT
#@expect RIG: ok eventfd-pingpong
#@expect RIG: ok evtchn-loopback
#@expect RIG: ok node-addon
t0=$(cut -d' ' -f1 /proc/uptime)
node -e 0
echo "RIG: node start $t0 -> $(cut -d' ' -f1 /proc/uptime)s"
exec node node-addon.mjs
