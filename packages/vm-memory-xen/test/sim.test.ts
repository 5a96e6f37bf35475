// Against xen-sim: the same code paths as on real Xen (xen-sys's typed layer over a XenTransport; the
// simulator decodes the MMAPBATCH_V2 / gntdev requests and hands out the guest's real pages as memfd
// offsets). The simulated guest is attached in this process (xen-sim/guest) and writes its RAM and grant
// table directly, as a guest kernel would.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GuestMemory, GuestMemoryError } from "@xen-vhost/vm-memory";
import { Xen, XenStore } from "@xen-vhost/xen-sys";
import { startSimulator, type Simulator, type SimTransport } from "@xen-vhost/xen-sim";
import { Guest } from "@xen-vhost/xen-sim/guest";
import { Queue } from "@xen-vhost/virtio-queue";
import {
  XenForeignRegion, XenGrantCopyRegion, XenGrantRegion, XenGuestMemory, XenMemoryError, createXenRegionMapper, discoverGuestRam, grantAddress,
  guestMemoryFromLayout, readConfiguredRamBytes,
} from "../src/index.js";

const MiB = 1 << 20;
const RAM0 = 0x4000_0000;
let sim: Simulator;
let transport: SimTransport;
let xen: Xen;
let guest: Guest;

beforeAll(async () => {
  sim = await startSimulator({ domains: [{ domid: 1, ram: 16 * MiB, vcpus: 1 }] });
  transport = sim.connect();
  xen = Xen.open({ transport });
  guest = Guest.attach(sim.socketPath, 1);
});

afterAll(async () => {
  guest?.close();
  xen?.close();
  transport?.close();
  await sim?.close();
});

function err(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

const pattern = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

describe("foreign mapping of a simulated guest", () => {
  it("discovers the RAM (size from XenStore), maps it, and reads back what the guest wrote", async () => {
    guest.memory.write(RAM0 + 0x12345, pattern(5000, 1));
    guest.memory.write(RAM0 + 16 * MiB - 64, pattern(64, 2));
    const store = await XenStore.open({ socketPath: sim.xenstorePath!, transport: "socket" });
    let ram: bigint | undefined;
    try {
      ram = await readConfiguredRamBytes(store, 1);
    } finally {
      store.close();
    }
    expect(ram).toBe(BigInt(16 * MiB));
    const layout = discoverGuestRam(xen, 1, { ramBytes: ram! });
    expect(layout.banks).toEqual([{ base: BigInt(RAM0), size: BigInt(16 * MiB) }]);
    using mem = guestMemoryFromLayout(transport, layout, { maxRegionBytes: 4 * MiB });
    expect(mem.numRegions).toBe(4);
    expect(mem.read(RAM0 + 0x12345, 5000)).toEqual(pattern(5000, 1));
    expect(mem.read(RAM0 + 16 * MiB - 64, 64)).toEqual(pattern(64, 2));
    // Shared, not copied: the guest sees the bridge's writes, across the 4 MiB region boundary too.
    mem.write(RAM0 + 4 * MiB - 8, pattern(16, 3));
    expect(guest.memory.read(RAM0 + 4 * MiB - 8, 16)).toEqual(pattern(16, 3));
    guest.memory.store16(RAM0 + 0x100, 0xabcd);
    expect(mem.load16(RAM0 + 0x100)).toBe(0xabcd);
  });

  it("sizing from page counts alone gives the same RAM (the simulator reports tot = max = RAM, no libxl slack)", () => {
    const l = discoverGuestRam(xen, 1);
    expect(l.source).toBe("max_pages");
    expect(l.banks).toEqual([{ base: BigInt(RAM0), size: BigInt(16 * MiB) }]);
    expect(l.notes.join()).toContain("no libxl slack");
  });

  it("a frame outside the guest's RAM: ForeignMapFailed naming it, nothing left mapped", () => {
    const e = err(() => XenForeignRegion.map(transport, 1, RAM0 + 16 * MiB - 4096, 3 * 4096)) as XenMemoryError;
    expect(e).toBeInstanceOf(XenMemoryError);
    expect(e.kind).toBe("ForeignMapFailed");
    expect(e.gfn).toBe(BigInt((RAM0 + 16 * MiB) / 4096));
    expect(e.code).toBe("EINVAL");
  });

  it("a domain that does not exist", () => {
    const e = err(() => XenForeignRegion.map(transport, 9, RAM0, 4096)) as XenMemoryError;
    expect(e.kind).toBe("ForeignMapFailed");
    expect(e.code).toBe("ESRCH");
  });

  it("close unmaps: views read as length 0; twice is safe", () => {
    const r = XenForeignRegion.map(transport, 1, RAM0, 2 * 4096);
    const v = r.mapping.bytes;
    expect(v.length).toBe(8192);
    r.close();
    r.close();
    expect(v.length).toBe(0);
  });
});

describe("grant mapping of a simulated guest", () => {
  it("reads back the pattern through the grant address; writes reach the guest; an ungranted page is refused", () => {
    const gpa = BigInt(RAM0 + 0x20_0000 + 0x100);
    guest.memory.write(gpa, pattern(3 * 4096, 4));
    const { dma, refs } = guest.grants.grantRange(gpa, 3 * 4096, { domid: 0 });
    expect(refs.length).toBe(4); // 0x100 offset: the range touches 4 pages
    using g = XenGrantRegion.forRefs(transport, 1, 0, 512);
    using mem = new XenGuestMemory([g]);
    expect(mem.read(dma, 3 * 4096)).toEqual(pattern(3 * 4096, 4));
    mem.write(dma + 10n, pattern(8, 5));
    expect(guest.memory.read(gpa + 10n, 8)).toEqual(pattern(8, 5));
    const notGranted = refs[3]! + 1;
    const e = err(() => mem.read(grantAddress(notGranted), 4)) as GuestMemoryError;
    expect(e).toBeInstanceOf(GuestMemoryError);
    expect(e.kind).toBe("MapFailed");
    expect(e.address).toBe(grantAddress(notGranted));
    expect((e.cause as XenMemoryError).kind).toBe("GrantMapFailed");
    expect((e.cause as XenMemoryError).grantRef).toBe(notGranted);
    // The guest cannot end access while the cache holds the mapping; after flush() it can.
    expect(guest.grants.endAccess(refs[0]!)).toBe(false);
    g.flush();
    for (const r of refs) expect(guest.grants.endAccess(r)).toBe(true);
    expect(err(() => mem.read(dma, 4))).toBeInstanceOf(GuestMemoryError);
  });

  it("a read-only grant maps read-only and refuses a writable mapping", () => {
    const gpa = BigInt(RAM0 + 0x30_0000);
    guest.memory.write(gpa, pattern(64, 6));
    const { dma, refs } = guest.grants.grantRange(gpa, 64, { domid: 0, readOnly: true });
    using rw = new XenGuestMemory([XenGrantRegion.create(transport, 1, dma & ~0xfffn, 4096)]);
    expect((err(() => rw.read(dma, 4)) as GuestMemoryError).kind).toBe("MapFailed");
    using ro = new XenGuestMemory([XenGrantRegion.create(transport, 1, dma & ~0xfffn, 4096, { readOnly: true })]);
    expect(ro.read(dma, 64)).toEqual(pattern(64, 6));
    ro.close();
    expect(guest.grants.endAccess(refs[0]!)).toBe(true);
  });

  const granted = (plain: boolean) => {
    // Guest side, as a Linux guest with grant-dma-ops lays it out: a 4-entry split ring in one granted page
    // (desc at 0, avail at 64, used at 80) and two buffers in other granted pages.
    const ringGpa = BigInt(RAM0 + 0x40_0000);
    const reqGpa = BigInt(RAM0 + 0x41_0000);
    const respGpa = BigInt(RAM0 + 0x42_0000);
    const ring = guest.grants.grantRange(ringGpa, 4096, { domid: 0 }).dma;
    const req = guest.grants.grantRange(reqGpa, 16, { domid: 0 }).dma;
    const resp = guest.grants.grantRange(respGpa, 16, { domid: 0 }).dma;
    guest.memory.write(reqGpa, new TextEncoder().encode("hello, backend"));
    const desc = (i: number, addr: bigint, len: number, flags: number, next: number) => {
      const b = new DataView(new ArrayBuffer(16));
      b.setBigUint64(0, addr, true);
      b.setUint32(8, len, true);
      b.setUint16(12, flags, true);
      b.setUint16(14, next, true);
      guest.memory.write(ringGpa + BigInt(i * 16), new Uint8Array(b.buffer));
    };
    desc(0, req, 14, 1 /* NEXT */, 1);
    desc(1, resp, 16, 2 /* WRITE */, 0);
    guest.memory.store16(ringGpa + 64n + 4n, 0); // avail.ring[0] = head 0
    guest.memory.fence();
    guest.memory.store16(ringGpa + 64n + 2n, 1); // avail.idx = 1

    // Device side: virtio-queue, unchanged, over grant mappings.
    using g = XenGrantRegion.forRefs(transport, 1, 0, 512);
    // vm-memory and virtio-queue take addresses anywhere below 2^64: rings go in as grant addresses.
    using mem = plain ? new GuestMemory([g], { ownsRegions: false }) : new XenGuestMemory([g], { ownsRegions: false });
    const q = new Queue(mem);
    q.size = 4;
    q.descTable = ring;
    q.availRing = ring + 64n;
    q.usedRing = ring + 80n;
    q.ready = true;
    const chain = q.pop()!;
    expect(chain.readable[0]!.addr).toBe(req);
    expect(new TextDecoder().decode(mem.read(chain.readable[0]!.addr, chain.readable[0]!.len))).toBe("hello, backend");
    mem.write(chain.writable[0]!.addr, new TextEncoder().encode("hello, guest"));
    q.addUsed(chain.head, 12);
    expect(guest.memory.load16(ringGpa + 80n + 2n)).toBe(1); // used.idx
    expect(guest.memory.load32(ringGpa + 80n + 8n)).toBe(12); // used.ring[0].len
    expect(new TextDecoder().decode(guest.memory.read(respGpa, 12))).toBe("hello, guest");
  };

  it("virtio-queue pops a chain whose ring and buffers the guest granted, and its reply reaches the guest (XenGuestMemory)", () => {
    granted(false);
  });

  it("the same over vm-memory's plain GuestMemory", () => {
    granted(true);
  });
});

describe("grant access by copy (IOCTL_GNTDEV_GRANT_COPY) on a simulated guest", () => {
  for (const plain of [true, false]) {
    it(`reads and writes granted bytes without mapping them; the guest can revoke at once; ungranted refs are GrantCopyFailed (${plain ? "GuestMemory" : "XenGuestMemory"})`, () => {
      const gpa = BigInt(RAM0 + 0x50_0000 + 0xf00); // crosses a page boundary
      guest.memory.write(gpa, pattern(2 * 4096, 7));
      const { dma, refs } = guest.grants.grantRange(gpa, 2 * 4096, { domid: 0 });
      using g = XenGrantCopyRegion.forRefs(transport, 1, 0, 4096);
      using mem = plain ? new GuestMemory([g], { ownsRegions: false }) : new XenGuestMemory([g], { ownsRegions: false });
      expect(mem.read(dma, 2 * 4096)).toEqual(pattern(2 * 4096, 7));
      expect(g.stats).toMatchObject({ copiesIn: 1, bytesIn: 2 * 4096, copiesOut: 0 });
      // a write copies back exactly the bytes written (across the page boundary: two segments, one call)
      mem.write(dma + 0xfcn, pattern(8, 9));
      expect(guest.memory.read(gpa + 0xfcn, 8)).toEqual(pattern(8, 9));
      expect(guest.memory.read(gpa + 0xf8n, 4)).toEqual(pattern(2 * 4096, 7).subarray(0xf8, 0xfc));
      expect(g.stats).toMatchObject({ copiesOut: 1, bytesOut: 8 });
      // aligned atomics work on the copy and reach the guest on release
      mem.store32(dma + 0x100n, 0xdeadbeef);
      expect(guest.memory.load32(gpa + 0x100n)).toBe(0xdeadbeef);
      // nothing is mapped: the guest ends access right away
      for (const r of refs) expect(guest.grants.endAccess(r)).toBe(true);
      const e = err(() => mem.read(dma, 4)) as GuestMemoryError;
      expect(e).toBeInstanceOf(GuestMemoryError);
      expect(e.kind).toBe("MapFailed");
      expect((e.cause as XenMemoryError).kind).toBe("GrantCopyFailed");
      expect((e.cause as XenMemoryError).grantRef).toBe(refs[0]);
    });
  }

  it("a read-only grant reads by copy and refuses a copy back, so a write fails and leaves the guest's bytes", () => {
    const gpa = BigInt(RAM0 + 0x58_0000);
    guest.memory.write(gpa, pattern(64, 11));
    const { dma, refs } = guest.grants.grantRange(gpa, 64, { domid: 0, readOnly: true });
    using g = XenGrantCopyRegion.create(transport, 1, dma & ~0xfffn, 4096);
    using mem = new GuestMemory([g], { ownsRegions: false });
    expect(mem.read(dma, 64)).toEqual(pattern(64, 11));
    const e = err(() => mem.write(dma, Uint8Array.of(1, 2, 3))) as GuestMemoryError;
    expect((e.cause as XenMemoryError).kind).toBe("GrantCopyFailed");
    expect(guest.memory.read(gpa, 3)).toEqual(pattern(64, 11).subarray(0, 3));
    expect(guest.grants.endAccess(refs[0]!)).toBe(true);
  });

  it("createXenRegionMapper({ grantAccess: 'copy' }) serves NO_ADVANCE_MAP grant regions by copy and still maps advance-mapped ones", () => {
    const mapper = createXenRegionMapper({ transport, grantAccess: "copy" });
    const base = { guestPhysAddr: grantAddress(0), memorySize: 0x10000n, userAddr: 0n, mmapOffset: 0n, fd: -1, domid: 1, type: "grant" as const };
    const copy = mapper.map({ ...base, noAdvanceMap: true });
    expect(copy).toBeInstanceOf(XenGrantCopyRegion);
    copy.close();
    const gpa = BigInt(RAM0 + 0x60_0000);
    const { dma, refs } = guest.grants.grantRange(gpa, 4096, { domid: 0 });
    const mapped = mapper.map({ ...base, guestPhysAddr: dma, memorySize: 4096n, noAdvanceMap: false });
    expect(mapped).toBeInstanceOf(XenGrantRegion);
    mapped.close();
    expect(guest.grants.endAccess(refs[0]!)).toBe(true);
  });
});
