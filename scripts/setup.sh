#!/usr/bin/env bash
# One-step set-up on a fresh Debian/Ubuntu machine with Node 20+ (run as root, or with sudo available).
#   scripts/setup.sh           what the demo and the bridge need: build tools, pnpm, the workspace, and
#                              qemu-storage-daemon (the stock backend the demo's virtio-blk disk uses)
#   scripts/setup.sh --test    also what the test suite needs: Xen and kernel headers for the ABI tests
#                              (x86_64 and an arm64 cross compiler), and real vhost-user backends
#                              (qemu-storage-daemon, virtiofsd, vhost-user-gpu, DPDK) to test the front-end against
# Idempotent; only Debian's repositories and the npm registry are used.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
for a in "$@"; do
  case "$a" in
  --test) want_test=1 ;;
  -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
  *) echo "setup.sh: unknown option $a (try --help)" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

pkgs=(build-essential python3 make
  qemu-system-common               # qemu-storage-daemon (and virtiofsd): the demo's stock vhost-user-blk backend
)
if [ "$want_test" = 1 ]; then
  pkgs+=(
    libxen-dev linux-libc-dev      # xen-sys ABI test: Xen public headers + privcmd/gntdev/evtchn uapi
    gcc-aarch64-linux-gnu          # the same ABI test for arm64 (compile-only)
    qemu-system-gui                # vhost-user-gpu (/usr/lib/qemu/vhost-user-gpu; runs headless)
    dpdk dpdk-dev dpdk-doc pkg-config  # DPDK testpmd (net_vhost) and the examples/vhost_blk source it builds
  )
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

# pnpm, the version package.json pins (corepack needs network keys this environment lacks).
want_pnpm=$(node -p 'require("./package.json").packageManager.split("@")[1]')
if [ "$(pnpm --version 2>/dev/null || true)" != "$want_pnpm" ]; then
  $SUDO npm install -g --no-fund --no-audit "pnpm@$want_pnpm"
fi

export TURBO_TELEMETRY_DISABLED=1
pnpm install --frozen-lockfile
