#!/bin/sh
# Host-side build step of the "perf" and "rng-perf" scenarios: cross-compiles the guest workload and the C device models
# (static arm64, no libraries beyond libc) into scenarios/perf-bin/, which stage-project.sh copies into dom0
# with the rest of scenarios/. perf.sh skips (and says so) when they are missing.
#   xen-rig/scenarios/perf-build.sh          (needs gcc-aarch64-linux-gnu and libxen-dev's public headers)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$here/perf-bin
mkdir -p "$out"
cc=${CC_ARM64:-aarch64-linux-gnu-gcc}
# The Xen public headers are arch-neutral (arch-arm.h by __aarch64__) and live in /usr/include; searched
# last so no x86 libc header shadows the cross sysroot's.
for p in perf-guest perf-cdm rng-cdm; do
  if [ ! -x "$out/$p" ] || [ "$here/$p.c" -nt "$out/$p" ] || [ "$here/cdm.h" -nt "$out/$p" ]; then
    "$cc" -static -O2 -Wall -Wextra -Werror -idirafter /usr/include -o "$out/$p" "$here/$p.c"
    aarch64-linux-gnu-strip "$out/$p" 2>/dev/null || true
  fi
done
echo "perf-build: $(ls "$out" | tr '\n' ' ')"
