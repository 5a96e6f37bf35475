# Helpers for dom0 scenarios that start domUs (sourced). The domU images are in /guest:
#   /guest/Image /guest/initrd (its /init is xen-rig/image/domu-init), /guest/domu-plain.cfg,
#   /guest/domu-virtio.cfg (one virtio-mmio slot at 0x2000000, SPI 33, via Xen 4.17's "disk" entry)
up() { cut -d' ' -f1 /proc/uptime; }

# domu_wait NAME SECONDS: wait until the domain has gone (domu-init powers off; on_poweroff=destroy).
# The deadline is on dom0's clock: each `xl domid` takes a noticeable fraction of a second under TCG.
domu_wait() {
  end=$(awk -v u="$(up)" -v s="$2" 'BEGIN { print int(u + s) }')
  while xl domid "$1" >/dev/null 2>&1 && [ "$(up | cut -d. -f1)" -lt "$end" ]; do sleep 0.2; done
  if xl domid "$1" >/dev/null 2>&1; then
    echo "RIG: FAIL domain $1 still running after $2 s; its console:"; FULL=1 domu_console "$1" | tail -60
    xl destroy "$1"; return 1
  fi
}

# domu_console NAME: the domain's DOMU: lines (its whole console with FULL=1) into our log.
domu_console() {
  f=/var/log/xen/console/guest-$1.log
  [ -f "$f" ] || { echo "RIG: FAIL no console log for $1"; return 1; }
  if [ -n "${FULL:-}" ]; then sed "s/^/[$1] /" "$f"; else tr -d '\r' < "$f" | grep '^DOMU:'; fi
}

# virtio_slot_setup [N]: the block devices (loop0..loopN-1, default 1) that xl's standalone virtio "disk"
# entries name (never opened by anyone: the device model decides what each slot is).
virtio_slot_setup() {
  k=0
  while [ $k -lt "${1:-1}" ]; do
    if ! losetup /dev/loop$k >/dev/null 2>&1; then
      dd if=/dev/zero of=/tmp/virtio-slot$k.img bs=1M count=1 2>/dev/null
      losetup /dev/loop$k /tmp/virtio-slot$k.img || return 1
    fi
    k=$((k + 1))
  done
}

# virtio_backend_ack [SECONDS]: in the background, play the xenstore part of a standalone backend for
# every virtio_disk backend entry: 1 (Initialising) -> 2 (InitWait) when it appears (libxl 4.17 waits ~10 s
# for this in "xl create" and fails the disk otherwise), 5 (Closing) -> 6 (Closed) at destroy (libxl waits
# ~10 s for that too). Ends when the entries are gone again, or after SECONDS (default 60).
# The bridge will do this itself; scenarios that run it must not call this.
virtio_backend_ack() {
  ( n=$((${1:-60} * 5)); i=0; seen=""
    while [ $i -lt $n ]; do
      paths=$(xenstore-ls -f /local/domain/0/backend/virtio_disk 2>/dev/null | sed -n 's|^\(.*\)/state = .*|\1|p')
      [ -n "$seen" ] && [ -z "$paths" ] && exit 0
      for p in $paths; do
        seen=1
        case $(xenstore-read "$p/state" 2>/dev/null) in
          1) xenstore-write "$p/state" 2 && echo "RIG: backend $p state 1 -> 2 (InitWait)";;
          5) xenstore-write "$p/state" 6 && echo "RIG: backend $p state 5 -> 6 (Closed)";;
        esac
      done
      sleep 0.2; i=$((i + 1))
    done
    [ -n "$seen" ] || echo "RIG: FAIL no virtio_disk backend appeared within ${1:-60} s" ) &
}
