#!/bin/sh
# Scenario "perf": per-access latency of guest -> dom0 device model round trips on real Xen, the project's
# TypeScript path next to a C device model making the same raw syscalls, in one guest at the same time.
#   C       perf-cdm serves the window at 0x2000000: privcmd DM_OP/MMAP_RESOURCE ioctls, /dev/xen/evtchn
#           read/unmask/NOTIFY, an eventfd for doorbells (its own ioreq server)
#   TS      perf-dm.mjs serves the window at 0x2001000: IoreqServer + XenNotifier (@xen-vhost/ioreq-eventfd)
#           on Node's loop, the doorbell through XenNotifier's userspace relay (its own ioreq server)
#   guest   perf-guest (static arm64, in an extra initramfs layer of a plain domU) maps both windows through
#           /dev/mem and alternates between them access by access: N uncached 4-byte loads each (trap -> Xen
#           ioreq -> event channel -> dom0 model -> answer -> notify -> vCPU resumes) and N doorbell stores
#           to QueueNotify, timed with the virtual counter
# Interleaving puts both models under the same host load (TCG on a busy host swings per-access times by
# 10x between minutes); the verdict gives TS/C of the medians, of the 10th percentiles, and the median of the
# per-pair ratios. Absolute numbers under TCG mean little: ratios only.
# The two arm64 binaries come from the host-side build step scenarios/perf-build.sh (into perf-bin/), which
# stage-project.sh runs; without them the scenario says why and fails.
#@packages @xen-vhost/ioreq-eventfd
#@expect RIG: ok perf reads TS/C
#@expect RIG: ok perf kicks TS/C
. ./lib/domu.sh

N=500
BASE_C=0x2000000
BASE_TS=0x2001000
bin=$(pwd)/perf-bin
if [ ! -x "$bin/perf-guest" ] || [ ! -x "$bin/perf-cdm" ]; then
  echo "RIG: FAIL perf: perf-bin/perf-guest and perf-cdm were not built (stage-project.sh runs xen-rig/scenarios/perf-build.sh on the host)"
  exit 1
fi

# The guest: the rig's domU initramfs plus a layer with /perf-init and /perf-guest (the kernel unpacks
# concatenated archives in order).
w=/tmp/perf; rm -rf $w; mkdir -p $w/root
cp "$bin/perf-guest" $w/root/perf-guest
cat > $w/root/perf-init <<'EOF'
#!/bin/sh
export PATH=/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
n=$(sed -n 's/.*\bperf\.n=\([0-9]*\).*/\1/p' /proc/cmdline)
echo "DOMU: perf guest up at $(cut -d' ' -f1 /proc/uptime)s"
/perf-guest 0x2000000 "${n:-500}" || echo "DOMU: perf guest failed rc=$?"
echo "DOMU: done"
poweroff -f
EOF
chmod 755 $w/root/perf-init $w/root/perf-guest
(cd $w/root && printf 'perf-init\nperf-guest\n' | cpio -o -H newc 2>/dev/null | gzip -1) > $w/layer.cpio.gz
cat /guest/initrd $w/layer.cpio.gz > $w/initrd
cat > $w/perf.cfg <<EOF
name = "perf"
kernel = "/guest/Image"
ramdisk = "$w/initrd"
extra = "console=hvc0 rdinit=/perf-init perf.n=$N"
memory = 128
vcpus = 1
on_poweroff = "destroy"
on_crash = "destroy"
EOF

t0=$(up)
xl create -p $w/perf.cfg > $w/xl.log 2>&1 || { echo "RIG: FAIL perf xl create"; cat $w/xl.log; exit 1; }
d=$(xl domid perf)
"$bin/perf-cdm" "$d" $BASE_C 0x200 $w/ready-c & cdm=$!
node perf-dm.mjs "$d" $BASE_TS 0x200 $w/ready-ts & tsdm=$!
i=0; until { [ -f $w/ready-c ] && [ -f $w/ready-ts ]; } || [ $i -ge 600 ]; do sleep 0.2; i=$((i + 1)); done
if [ ! -f $w/ready-c ] || [ ! -f $w/ready-ts ]; then
  echo "RIG: FAIL perf device models did not come up"; xl destroy perf; kill $cdm $tsdm 2>/dev/null; wait; exit 1
fi
xl unpause perf
domu_wait perf 200; domu_console perf
# The models end on the guest's last writes, or on the domain going away.
i=0; while { kill -0 $cdm || kill -0 $tsdm; } 2>/dev/null && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
kill $cdm $tsdm 2>/dev/null
wait $cdm; rc_c=$?
wait $tsdm; rc_ts=$?
echo "RIG: perf guest and models done in $(awk "BEGIN{print $(up) - $t0}") s"
[ $rc_c = 0 ] || { echo "RIG: FAIL perf C device model exit status $rc_c"; exit 1; }
[ $rc_ts = 0 ] || { echo "RIG: FAIL perf TS device model exit status $rc_ts"; exit 1; }
log=/var/log/xen/console/guest-perf.log
tr -d '\r' < $log | grep '^DOMU: perf ' > $w/results
for k in "reads c" "reads ts" "kicks c" "kicks ts"; do
  grep -q "^DOMU: perf $k .* bad=0$" $w/results || { echo "RIG: FAIL perf: no $k figures or wrong values read"; exit 1; }
done
awk -v n="$N" '
  / perf (reads|kicks) (c|ts) / { k = $3 " " $4; for (i = 5; i <= NF; i++) { split($i, kv, "="); v[k, kv[1]] = kv[2] } }
  / perf ratio / { split($NF, kv, "="); pr[$4] = kv[2] / 1000 }
  END {
    for (m = 1; m <= 2; m++) {
      w = m == 1 ? "reads" : "kicks"
      c = v[w " c", "median_ns"]; t = v[w " ts", "median_ns"]; cp = v[w " c", "p10_ns"]; tp = v[w " ts", "p10_ns"]
      printf "RIG: ok perf %s TS/C median %.2fx, p10 %.2fx, per-pair median %.2fx (medians TS %.0f us, C %.0f us; p10 TS %.0f us, C %.0f us; %d interleaved accesses each, TCG)\n", w, t / c, tp / cp, pr[w], t / 1000, c / 1000, tp / 1000, cp / 1000, n
    }
  }' $w/results
