// Issue 5's real-Xen checks of @xen-vhost/vm-memory-xen: node memory.mjs <domid>
// The guest's rig-mem.ko wrote a known pattern into two pages, granted the first to dom0 and published
// "<gfn> <granted ref> <ungranted ref>" at /local/domain/<domid>/data/rig-mem. Here:
//   1. XenForeignRegion maps the two frames (privcmd MMAPBATCH_V2) and reads the pattern back;
//   2. XenGrantRegion maps the granted reference (gntdev) and reads the first page's pattern;
//   3. the reference the guest reserved but never granted is refused with XenMemoryError GrantMapFailed;
//   4. on-demand grant map/unmap rate (a cache of 0 runs: every borrow maps, every release unmaps) next
//      to the rate of cached borrows.
import { Xen, XenStore } from "@xen-vhost/xen-sys";
import { XenForeignRegion, XenGrantRegion, XenMemoryError } from "@xen-vhost/vm-memory-xen";

const domid = Number(process.argv[2]);
const PAGE = 4096;
const expected = new Uint8Array(2 * PAGE).map((_, i) => ((i * 7 + 0x5a) & 0xff) ^ (i >= PAGE ? 0xff : 0));
const ok = (what) => console.log(`RIG: ok memory ${what}`);
const fail = (what) => console.log(`RIG: FAIL memory ${what}`);
const firstDiff = (a, b) => a.findIndex((x, i) => x !== b[i]);

const xen = Xen.open();
const xs = await XenStore.open();
let published;
for (let i = 0; i < 900 && !published; i++) {
  published = await xs.tryRead(`/local/domain/${domid}/data/rig-mem`);
  if (!published) await new Promise((r) => setTimeout(r, 200));
}
xs.close();
if (!published) {
  fail("the guest never published data/rig-mem");
  process.exit(1);
}
const [gfnHex, grantedText, ungrantedText] = published.trim().split(/\s+/);
const gfn = BigInt(`0x${gfnHex}`), granted = Number(grantedText), ungranted = Number(ungrantedText);
console.log(`RIG: memory guest published gfn 0x${gfn.toString(16)} (gpa 0x${(gfn << 12n).toString(16)}), granted ref ${granted}, ungranted ref ${ungranted}`);

// 1. Foreign mapping of the guest's frames.
// (Node 20 has no `using`: try/finally.)
const region = XenForeignRegion.map(xen.transport, domid, gfn << 12n, 2 * PAGE, { readOnly: true });
try {
  const d = firstDiff(region.mapping.bytes, expected);
  d < 0 ? ok(`foreign mapping of gpa 0x${(gfn << 12n).toString(16)} reads the guest's pattern (2 pages)`) : fail(`foreign mapping differs at byte ${d}`);
} finally {
  region.close();
}

// 2. The granted page through gntdev.
const grant = XenGrantRegion.forRefs(xen.transport, domid, granted, 1, { advanceMap: true, readOnly: true });
try {
  const d = firstDiff(grant.mapping.bytes, expected.subarray(0, PAGE));
  d < 0 ? ok(`grant mapping of ref ${granted} reads the guest's pattern`) : fail(`grant mapping differs at byte ${d}`);
} finally {
  grant.close();
}

// 3. A reference the guest never granted.
try {
  XenGrantRegion.forRefs(xen.transport, domid, ungranted, 1, { advanceMap: true, readOnly: true }).close();
  fail(`ungranted ref ${ungranted} was mapped`);
} catch (e) {
  if (e instanceof XenMemoryError && e.kind === "GrantMapFailed" && e.grantRef === ungranted)
    ok(`ungranted ref ${ungranted} refused: XenMemoryError ${e.kind} (${e.code ?? "no errno"}): ${e.message}`);
  else fail(`ungranted ref: unexpected ${e?.name} ${e?.kind ?? ""} ${e?.message}`);
}

// 4. On-demand map/unmap rate, and cached borrows for comparison.
{
  const N = 2000;
  const onDemand = XenGrantRegion.forRefs(xen.transport, domid, granted, 1, { readOnly: true, cache: { maxRuns: 0 } });
  let sum = 0;
  let t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const v = onDemand.borrow(0, PAGE);
    sum += v.bytes[i % PAGE];
    v.release();
  }
  const mapNs = Number(process.hrtime.bigint() - t) / N;
  const maps = onDemand.stats.maps;
  onDemand.close();
  const cached = XenGrantRegion.forRefs(xen.transport, domid, granted, 1, { readOnly: true });
  t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) {
    const v = cached.borrow(0, PAGE);
    sum += v.bytes[i % PAGE];
    v.release();
  }
  const hitNs = Number(process.hrtime.bigint() - t) / N;
  cached.close();
  maps === N ? ok(`grant map/unmap rate: ${Math.round(1e9 / mapNs)} map+unmap/s (${(mapNs / 1000).toFixed(1)} us each, ${maps} IOCTL_GNTDEV_MAP_GRANT_REF), cached borrow ${(hitNs / 1000).toFixed(2)} us (${(mapNs / hitNs).toFixed(0)}x); under TCG, checksum ${sum}`)
    : fail(`on-demand region mapped ${maps} times for ${N} borrows`);
}
xen.close();
