#!/bin/bash
# Stages the project for dom0: builds the workspace packages the scenarios need (turbo, x64 as usual),
# cross-builds vmm-sys-util's addon for arm64 in a copy of the package (so the workspace's own x64
# build/ is never touched), and lays out $XEN_RIG_CACHE/overlay/opt/xen-vhost with a flat node_modules
# plus the scenarios. run.sh packs the overlay into the second initramfs archive.
# Host-side build steps of scenarios (scenarios/<name>-build.sh, e.g. perf-build.sh cross-compiling the perf
# scenario's arm64 programs into the git-ignored perf-bin/) run before the scenarios are copied, so a fresh
# checkout runs every scenario.
#   stage-project.sh [package-name...]   default: the union of the scenarios' "#@packages" lines
#   XEN_RIG_NO_BUILD=1                   use the packages' existing dist/ (no turbo build)
#   XEN_RIG_SCENARIOS="a b"              run only these scenarios' build steps (run.sh sets it; default all)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
C=$XEN_RIG_CACHE
pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
  mapfile -t pkgs < <(sed -n 's/^#@packages //p' "$RIG_DIR"/scenarios/*.sh | tr ' ' '\n' | sed '/^$/d' | sort -u)
fi
[ ${#pkgs[@]} -gt 0 ] || pkgs=(@xen-vhost/vmm-sys-util)

if [ -z "${XEN_RIG_NO_BUILD:-}" ]; then
  rig_log "building ${pkgs[*]} (turbo)"
  filters=(); for p in "${pkgs[@]}"; do filters+=("--filter=$p..."); done
  mkdir -p "$C"
  (cd "$REPO_DIR" && pnpm -s turbo run build "${filters[@]}" --output-logs=errors-only > "$C/turbo-build.log" 2>&1) \
    || { cat "$C/turbo-build.log" >&2; rig_die "workspace build failed"; }
fi

# arm64 addon: a private copy of the native sources; its node_modules links to the workspace's (node-gyp).
# cp -a keeps mtimes, so make rebuilds only what changed.
src=$REPO_DIR/packages/vmm-sys-util
A=$C/addon/vmm-sys-util
mkdir -p "$A"
cp -a "$src/binding.gyp" "$src/package.json" "$src/native" "$src/scripts" "$A/"
ln -sfn "$src/node_modules" "$A/node_modules"
rig_log "cross-building the vmm-sys-util addon for arm64"
(cd "$A" && CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-gcc AR=aarch64-linux-gnu-ar \
   node scripts/build-native.mjs --arch=arm64 > "$C/addon-build.log" 2>&1) || { cat "$C/addon-build.log" >&2; rig_die "arm64 addon build failed"; }
addon=$A/build/Release/vmm_sys_util.node
file -L "$addon" | grep -q 'ARM aarch64' || rig_die "$addon is not an arm64 object: $(file -L "$addon")"

for b in "$RIG_DIR"/scenarios/*-build.sh; do
  [ -f "$b" ] || continue
  s=$(basename "$b" -build.sh)
  [ -z "${XEN_RIG_SCENARIOS+x}" ] || [[ " $XEN_RIG_SCENARIOS " == *" $s "* ]] || continue
  rig_log "host build step of scenario $s ($(basename "$b"))"
  sh "$b" > "$C/build-$s.log" 2>&1 || { cat "$C/build-$s.log" >&2; rig_die "$(basename "$b") failed"; }
done

O=$C/overlay/opt/xen-vhost
rm -rf "$O"; mkdir -p "$O"
node "$RIG_DIR/stage-project.mjs" "$O" "${pkgs[@]}" | sed 's/^/[xen-rig] /' >&2
install -D -m755 "$addon" "$O/node_modules/@xen-vhost/vmm-sys-util/build/Release/vmm_sys_util.node"
cp -a "$RIG_DIR/scenarios" "$O/scenarios"
rig_log "staged $(du -sh "$O" | cut -f1) into $O"
