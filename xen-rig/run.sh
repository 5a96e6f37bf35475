#!/bin/bash
# The real-Xen test tier: boots Xen 4.17 (IOREQ-enabled) + a Linux dom0 under qemu-system-aarch64 (TCG),
# runs scenarios inside dom0, powers off, and asserts the scenarios' markers on the host.
#
#   xen-rig/run.sh [--boot-each] [--no-prepare] [--shell] [scenario...]
#
# Scenarios are xen-rig/scenarios/<name>.sh (default: all of them, in one boot). Each declares
#   #@packages <workspace package>...   what stage-project.sh builds and stages for it
#   #@expect <text>                     a line fragment that must appear in its part of the serial log
#   #@timeout <seconds>                 its time limit inside dom0 (default 200; sized for a busy host)
# and passes when all its #@expect fragments appear, it exits 0 and no "RIG: FAIL" line was printed.
# --boot-each boots once per scenario (isolation at ~15 s per boot); --shell leaves a dom0 shell on the
# terminal after the scenarios (interactive; no timeout). Exit status: 0 when every scenario passed.
# Environment: XEN_RIG_CACHE (cache dir), XEN_RIG_BOOT_TIMEOUT (seconds per boot, default 120 + the scenarios'
# limits: generous, a busy 2-core host slows TCG 3-4x; when set, the scenarios share it equally), XEN_RIG_NO_BUILD=1 (use existing dist/), XEN_RIG_XEN (hypervisor image), XEN_RIG_QEMU_ARGS.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
C=$XEN_RIG_CACHE
T_START=$(date +%s.%N)
boot_each=""; prepare=1; shell=""; scenarios=()
# scenarios/<name>.sh, except the host-side build steps scenarios/<name>-build.sh (stage-project.sh runs those)
all_scenarios() { (cd "$RIG_DIR/scenarios" && ls ./*.sh | sed 's|^\./||; s/\.sh$//' | grep -v -- '-build$'); }
for a in "$@"; do case $a in
  --boot-each) boot_each=1;;
  --no-prepare) prepare="";;
  --shell) shell=1;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
  -*) rig_die "unknown option $a";;
  *) { [ -f "$RIG_DIR/scenarios/$a.sh" ] && [ "${a%-build}" = "$a" ]; } || rig_die "no scenario $a (have: $(all_scenarios | tr '\n' ' '))"
     scenarios+=("$a");;
esac; done
if [ ${#scenarios[@]} -eq 0 ]; then
  mapfile -t scenarios < <(all_scenarios)
fi

mkdir -p "$C"
exec 9>"$C/.lock"
flock -n 9 || { rig_log "waiting for another run.sh on $C"; flock 9; }

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ------------------------------------------------------------------ prepare and stage
[ -n "$prepare" ] && "$RIG_DIR/prepare.sh"
[ -f "$C/dom0-base.cpio.gz" ] || rig_die "$C is not prepared (run xen-rig/prepare.sh)"
mapfile -t pkgs < <(for s in "${scenarios[@]}"; do sed -n 's/^#@packages //p' "$RIG_DIR/scenarios/$s.sh"; done | tr ' ' '\n' | sed '/^$/d' | sort -u)
XEN_RIG_SCENARIOS="${scenarios[*]}" "$RIG_DIR/stage-project.sh" "${pkgs[@]}"

# ------------------------------------------------------------------ initramfs overlays
O=$C/overlay
rm -rf "$O/guest" "$O/init"; mkdir -p "$O/guest" "$C/boot"
# domU: the cached base (busybox + virtio modules) plus our /init as a second archive
rm -rf "$C/domu-overlay"; mkdir -p "$C/domu-overlay"; install -m755 "$RIG_DIR/image/domu-init" "$C/domu-overlay/init"
(cd "$C/domu-overlay" && echo ./init | cpio -o -H newc --quiet | gzip -1) > "$C/boot/domu-overlay.cpio.gz"
cat "$C/domu-base.cpio.gz" "$C/boot/domu-overlay.cpio.gz" > "$O/guest/initrd"
cp "$RIG_DIR"/image/domu-*.cfg "$O/guest/"
install -m755 "$RIG_DIR/image/dom0-init" "$O/init"
(cd "$O" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$C/boot/dom0-overlay.cpio.gz"
cat "$C/dom0-base.cpio.gz" "$C/boot/dom0-overlay.cpio.gz" > "$C/boot/dom0-initrd.img"
rig_log "initramfs ready ($(du -h "$C/boot/dom0-overlay.cpio.gz" | cut -f1) overlay) after $(elapsed "$T_START") s"

# ------------------------------------------------------------------ boot
XEN=${XEN_RIG_XEN:-$C/xen-ioreq}
KERNEL=$C/kernel/boot/vmlinuz-$(cat "$C/kernel-abi")
mkdir -p "$C/logs"

# boot LOG SCENARIO...: one QEMU run; the serial log (Xen + dom0 console) goes to LOG, markers to stderr
boot() {
  local log=$1; shift
  # Each scenario runs under its own limit inside dom0 (#@timeout, default 200 s), so a hung one is killed
  # there (its rc is 143) and the rest still run; dom0's /init reads "name:seconds" from rig.scenarios.
  local s t sum=0 list=""
  local per=""
  if [ -n "${XEN_RIG_BOOT_TIMEOUT:-}" ]; then per=$(( (XEN_RIG_BOOT_TIMEOUT - 90) / $# )); [ $per -ge 60 ] || per=60; fi
  for s in "$@"; do
    t=${per:-$(sed -n 's/^#@timeout \([0-9][0-9]*\).*/\1/p' "$RIG_DIR/scenarios/$s.sh" | head -1)}
    t=${t:-200}; sum=$((sum + t)); list+="${list:++}$s:$t"
  done
  local limit=${XEN_RIG_BOOT_TIMEOUT:-$((120 + sum))}
  local t0; t0=$(date +%s.%N)
  local qemu=(qemu-system-aarch64 -machine virt,virtualization=on,gic-version=3 -cpu cortex-a57 -smp 2 -m 2048
    -nographic -no-reboot -kernel "$XEN"
    -append "dom0_mem=1024M dom0_max_vcpus=2 loglvl=all guest_loglvl=all console=dtuart"
    -device "guest-loader,addr=0x49000000,kernel=$KERNEL,bootargs=console=hvc0 earlycon=xen rdinit=/init rig.scenarios=$list${shell:+ rig.shell}"
    -device "guest-loader,addr=0x52000000,initrd=$C/boot/dom0-initrd.img")
  # shellcheck disable=SC2206
  qemu+=(${XEN_RIG_QEMU_ARGS:-})
  rig_log "booting for: $*  (log $log, limit ${limit}s)"
  if [ -n "$shell" ]; then "${qemu[@]}" | tee "$log"; return 0; fi
  set +e
  timeout --foreground -k 5 "$limit" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\r$//' | tee "$log" \
    | grep --line-buffered -E '^(RIG|DOMU):|Panic|FATAL' | sed -u 's/^/  | /' >&2
  local rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 124 ] && echo "RIG-HOST: qemu timed out after ${limit}s" >> "$log"
  [ "$rc" = 0 ] || echo "RIG-HOST: qemu exit status $rc" >> "$log"
  rig_log "boot finished in $(elapsed "$t0") s (qemu rc=$rc)"
}

# check LOG SCENARIO...: host-side assertions; prints a verdict per scenario, returns non-zero on any failure
check() {
  local log=$1; shift; local bad=0 s
  if ! grep -q '^RIG: dom0 ready' "$log"; then
    echo "FAIL: dom0 never became ready. Last lines of $log:"; tail -40 "$log" | sed 's/^/    /'; return 1
  fi
  for s in "$@"; do
    local section missing=() why=()
    section=$(awk -v b="RIG: scenario $s begin" -v e="RIG: scenario $s rc=" 'index($0, b) == 1 {on = 1} on {print} on && index($0, e) == 1 {exit}' "$log")
    grep -q "^RIG: scenario $s rc=0" <<<"$section" || why+=("exit status: $(grep -o "^RIG: scenario $s rc=[0-9]*" <<<"$section" | sed 's/.*rc=//' || true)")
    [ -n "$(grep -o "^RIG: scenario $s rc=[0-9]*" <<<"$section" || true)" ] || why=("did not finish")
    while IFS= read -r m; do grep -qF -- "$m" <<<"$section" || missing+=("$m"); done < <(sed -n 's/^#@expect //p' "$RIG_DIR/scenarios/$s.sh")
    local fails; fails=$(grep '^RIG: FAIL' <<<"$section" || true)
    if [ ${#missing[@]} -eq 0 ] && [ ${#why[@]} -eq 0 ] && [ -z "$fails" ]; then
      echo "PASS: $s ($(grep -c '^RIG: ok' <<<"$section") ok markers)"
    else
      bad=1
      echo "FAIL: $s ${why[*]:-}"
      for m in "${missing[@]}"; do echo "    missing marker: $m"; done
      [ -n "$fails" ] && sed 's/^/    /' <<<"$fails"
      echo "    --- last lines of the scenario's log:"
      if [ -n "$section" ]; then tail -40 <<<"$section" | sed 's/^/    /'; else tail -40 "$log" | sed 's/^/    /'; fi
    fi
  done
  grep -q '^RIG: all scenarios done' "$log" || { echo "FAIL: dom0 did not finish the scenario list"; bad=1; }
  grep -E 'Panic on CPU|Xen BUG|FATAL PAGE FAULT' "$log" | sed 's/^/FAIL: Xen: /' | grep . && bad=1
  return $bad
}

stamp=$(date +%Y%m%d-%H%M%S)
status=0; verdicts=""
if [ -n "$boot_each" ]; then
  for s in "${scenarios[@]}"; do
    log=$C/logs/$stamp-$s.log; boot "$log" "$s"
    v=$(check "$log" "$s") || status=1; verdicts+="$v"$'\n'
  done
else
  log=$C/logs/$stamp.log; boot "$log" "${scenarios[@]}"
  [ -n "$shell" ] && exit 0
  verdicts=$(check "$log" "${scenarios[@]}") || status=1
fi
ln -sfn "$(basename "$log")" "$C/logs/latest.log"
echo "$verdicts" | sed '/^$/d'
rig_log "total $(elapsed "$T_START") s; logs in $C/logs"
exit $status
