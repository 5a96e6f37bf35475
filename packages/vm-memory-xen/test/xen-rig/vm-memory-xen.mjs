// Run by vm-memory-xen.sh in dom0: node vm-memory-xen.mjs <domid>. Prints "RIG: ok ..." / "RIG: FAIL ...".
import { Xen, XenStore } from "@xen-vhost/xen-sys";
import {
  XenForeignRegion, XenGrantRegion, XenGuestMemory, XenMemoryError, discoverGuestRam, guestMemoryFromLayout,
  readConfiguredRamBytes, grantAddress,
} from "@xen-vhost/vm-memory-xen";

const domid = Number(process.argv[2]);
let failures = 0;
const ok = (check, detail = "") => console.log(`RIG: ok vm-memory-xen ${check}${detail ? ` ${detail}` : ""}`);
const fail = (check, detail) => {
  failures++;
  console.log(`RIG: FAIL vm-memory-xen ${check}: ${detail instanceof Error ? `${detail.name}(${detail.kind ?? ""}): ${detail.message}` : detail}`);
};

const xen = Xen.open();
try {
  // ---- layout ------------------------------------------------------------------------------------------
  const byPages = discoverGuestRam(xen, domid);
  const store = await XenStore.open();
  const ramBytes = await readConfiguredRamBytes(store, domid);
  store.close();
  const byStore = discoverGuestRam(xen, domid, ramBytes ? { ramBytes } : {});
  const show = (l) => l.banks.map((b) => `0x${b.base.toString(16)}+0x${b.size.toString(16)}`).join(",");
  if (show(byPages) === show(byStore) && byPages.banks[0]?.base === 0x4000_0000n && byPages.ramBytes === 128n << 20n)
    ok("layout", `${show(byPages)} (${byPages.source}; static-max ${ramBytes}; notes ${JSON.stringify(byPages.notes)})`);
  else fail("layout", `pages ${show(byPages)} ${JSON.stringify(byPages.notes)}, xenstore ${show(byStore)}`);

  // ---- foreign map of all RAM --------------------------------------------------------------------------
  try {
    const t0 = process.hrtime.bigint();
    const mem = guestMemoryFromLayout(xen.transport, byStore, { maxRegionBytes: 32 << 20 });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    let nonzero = 0;
    const page = new Uint8Array(4096);
    for (let off = 0; off < Number(byStore.ramBytes); off += 1 << 20) {
      mem.readInto(0x4000_0000 + off, page);
      if (page.some((b) => b !== 0)) nonzero++;
    }
    ok("foreign map", `${mem.numRegions} regions in ${ms.toFixed(0)} ms; ${nonzero} of ${Number(byStore.ramBytes) >> 20} sampled MiB nonzero`);
    mem.close();
  } catch (e) {
    fail("foreign map", e);
  }

  // ---- a hole --------------------------------------------------------------------------------------------
  const end = 0x4000_0000n + byStore.ramBytes;
  try {
    XenForeignRegion.map(xen.transport, domid, end - 4096n, 2 * 4096).close();
    fail("hole", "mapping past the end of RAM succeeded");
  } catch (e) {
    if (e instanceof XenMemoryError && e.kind === "ForeignMapFailed" && e.gfn === end >> 12n) ok("hole", `${e.code}: ${e.message}`);
    else fail("hole", e);
  }

  // ---- description: a fresh privcmd fd restricted to the domU ----------------------------------------------
  try {
    const r = XenForeignRegion.map(xen.transport, domid, 0x4000_0000n, 4096);
    const d = r.vhostUserDescription();
    if (d.fd > 2 && d.xen?.flags === 1 && d.xen.domid === domid && d.mmap_offset === 0n) ok("description", `fd ${d.fd}, flags 0x1, domid ${domid}`);
    else fail("description", JSON.stringify(d, (_, v) => (typeof v === "bigint" ? `0x${v.toString(16)}` : v)));
    r.close();
  } catch (e) {
    fail("description", e);
  }

  // ---- an ungranted reference through the real gntdev ----------------------------------------------------
  try {
    const g = new XenGuestMemory([XenGrantRegion.forRefs(xen.transport, domid, 4096, 16)]);
    try {
      g.read(grantAddress(4100), 8);
      fail("ungranted", "read of an ungranted reference succeeded");
    } catch (e) {
      const c = e?.cause;
      if (e?.kind === "MapFailed" && c instanceof XenMemoryError && c.kind === "GrantMapFailed" && c.grantRef === 4100) ok("ungranted", c.message);
      else fail("ungranted", e);
    }
    g.close();
  } catch (e) {
    fail("ungranted", e);
  }
} finally {
  xen.close();
}
if (failures === 0) ok("");
process.exitCode = failures === 0 ? 0 : 1;
