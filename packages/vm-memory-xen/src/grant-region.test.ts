// The grant region's mapping cache and descriptions, with a recording grant device (test/recording-grant-
// device.ts: it records map/unmap calls and refuses listed references; it does not share data between runs).
// Grant data paths against a simulated guest are in test/sim.test.ts.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemoryError } from "@xen-vhost/vm-memory";
import { memfdCreate } from "@xen-vhost/vmm-sys-util";
import { RecordingTransport } from "@xen-vhost/xen-sys/testing";
import { RecordingGrantDevice } from "../test/recording-grant-device.js";
import { XenMemoryError } from "./error.js";
import { grantAddress } from "./grant-address.js";
import { SYNTHETIC_USER_ADDR_BASE, XenGrantRegion, type GrantRegionOptions } from "./grant-region.js";
import type { MappingFdProvider } from "./region-fd.js";

const fdProvider: MappingFdProvider = { openMappingFd: (kind) => memfdCreate(`fake-${kind}`) };

function region(options: GrantRegionOptions = {}, firstRef = 100, pages = 64) {
  const dev = new RecordingGrantDevice();
  const r = XenGrantRegion.forRefs(undefined, 4, firstRef, pages, { device: dev, fdProvider, ...options });
  return { dev, r };
}

function errOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  return undefined;
}

let leaks: ReturnType<typeof fdLeakCheck>;
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

describe("XenGrantRegion (NO_ADVANCE_MAP)", () => {
  it("sits at its grant DMA address and maps nothing up front", () => {
    const { dev, r } = region();
    expect(r.guestBase.value).toBe(grantAddress(100));
    expect(r.size).toBe(64 * 4096);
    expect(r.mapping).toBeUndefined();
    expect(dev.maps).toEqual([]);
    r.close();
  });

  it("maps exactly the references an access touches, once; later accesses inside the run hit the cache", () => {
    const { dev, r } = region();
    const v = r.borrow(4096 * 3 + 4000, 200); // pages 3 and 4 -> refs 103, 104
    expect(dev.maps).toEqual([{ domid: 4, refs: [103, 104], readOnly: false }]);
    expect(v.bytes.length).toBe(200);
    v.bytes.fill(1);
    v.release();
    v.release(); // idempotent
    const w = r.borrow(4096 * 4 + 8, 8);
    expect(w.bytes[0]).toBe(1); // same run, same memory
    expect(w.atomics.load8(w.atomicsOffset)).toBe(1);
    w.release();
    expect(dev.maps).toHaveLength(1);
    expect(r.stats).toMatchObject({ hits: 1, misses: 1, maps: 1, unmaps: 0, runs: 1, pages: 2 });
    r.close();
    expect(dev.unmaps).toHaveLength(1);
  });

  it("evicts the least recently used idle run beyond maxRuns", () => {
    const { dev, r } = region({ cache: { maxRuns: 2 } });
    const touch = (page: number) => r.borrow(page * 4096, 1).release();
    touch(0);
    touch(1);
    touch(0); // 0 is now most recent
    touch(2); // evicts page 1's run
    expect(dev.unmaps).toEqual([{ index: 4096n, count: 1 }]);
    touch(0);
    expect(r.stats.misses).toBe(3);
    touch(1); // mapped again, evicts page 2 (LRU)
    expect(r.stats.misses).toBe(4);
    expect(dev.unmaps.map((u) => u.index)).toEqual([4096n, 8192n]);
    r.close();
    expect(dev.live).toBe(0);
  });

  it("bounds pages too, and never unmaps a run still borrowed", () => {
    const { dev, r } = region({ cache: { maxRuns: 100, maxPages: 4 } });
    const held = r.borrow(0, 4 * 4096); // 4 pages, in use
    r.borrow(10 * 4096, 1).release(); // over the page bound: the idle run goes at once, the held one stays
    expect(dev.live).toBe(1);
    expect(held.bytes.length).toBe(4 * 4096);
    held.release();
    expect(r.stats.pages).toBe(4);
    r.close();
  });

  it("maxRuns 0 is strict map -> use -> unmap", () => {
    const { dev, r } = region({ cache: { maxRuns: 0 } });
    const v = r.borrow(0, 16);
    expect(dev.live).toBe(1);
    v.release();
    expect(dev.live).toBe(0);
    r.borrow(0, 16).release();
    expect(dev.maps).toHaveLength(2);
    r.close();
  });

  it("flush() unmaps idle runs now and borrowed ones on release", () => {
    const { dev, r } = region();
    r.borrow(0, 1).release();
    const held = r.borrow(8192, 1);
    r.flush();
    expect(dev.live).toBe(1);
    const again = r.borrow(8192, 1); // a flushed run is not reused: a fresh mapping
    expect(dev.live).toBe(2);
    held.release();
    expect(dev.live).toBe(1);
    again.release();
    r.close();
    expect(dev.live).toBe(0);
  });

  it("a reference the guest did not grant: MapFailed with a GrantMapFailed cause naming it; nothing stays mapped", () => {
    const { dev, r } = region();
    dev.refuse.add(105);
    const e = errOf(() => r.borrow(4 * 4096, 2 * 4096)) as GuestMemoryError;
    expect(e).toBeInstanceOf(GuestMemoryError);
    expect(e.kind).toBe("MapFailed");
    expect(e.address).toBe(grantAddress(104));
    const cause = e.cause as XenMemoryError;
    expect(cause).toBeInstanceOf(XenMemoryError);
    expect(cause.kind).toBe("GrantMapFailed");
    expect(cause.grantRef).toBe(104);
    expect(cause.code).toBe("EFAULT");
    expect(cause.message).toContain("grant references 104..105");
    expect(dev.live).toBe(0);
    r.close();
  });

  it("refuses ranges past its end and use after close; views read as length 0 after close", () => {
    const { r } = region({}, 0, 2);
    expect((errOf(() => r.borrow(4096, 4097)) as GuestMemoryError).kind).toBe("OutOfBounds");
    expect((errOf(() => r.borrow(-1, 1)) as GuestMemoryError).kind).toBe("OutOfBounds");
    expect((errOf(() => r.borrow(0.5, 1)) as GuestMemoryError).kind).toBe("OutOfBounds");
    const v = r.borrow(0, 8);
    r.close();
    r.close();
    expect(v.bytes.length).toBe(0);
    expect(() => v.release()).not.toThrow();
    expect((errOf(() => r.borrow(0, 1)) as GuestMemoryError).kind).toBe("Closed");
  });

  it("refuses reference ranges outside grant_ref_t and non-grant bases", () => {
    const dev = new RecordingGrantDevice();
    expect(() => XenGrantRegion.forRefs(undefined, 1, 0xffff_ffff, 2, { device: dev })).toThrow(RangeError);
    expect(() => XenGrantRegion.forRefs(undefined, 1, 0, 0, { device: dev })).toThrow(RangeError);
    expect((errOf(() => XenGrantRegion.create(undefined, 1, 0x4000_0000n, 4096, { device: dev })) as XenMemoryError).kind).toBe("NotAGrantAddress");
    expect(() => XenGrantRegion.create(undefined, 1, grantAddress(1) + 8n, 4096, { device: dev })).toThrow(RangeError);
    expect(() => XenGrantRegion.forRefs(undefined, 1, 0, 1)).toThrow(TypeError);
  });

  it("opens its own grant device through the transport when none is shared, and closes it", () => {
    const dev = new RecordingGrantDevice();
    const t = new RecordingTransport({ respond: { openGrantDevice: () => dev } });
    const r = XenGrantRegion.create(t, 3, grantAddress(8), 4096, { fdProvider });
    r.borrow(0, 4).release();
    r.close();
    expect(dev.closed).toBe(true);
  });
});

describe("advance-mapped grant region", () => {
  it("maps all references at creation and exposes a mapping", () => {
    const { dev, r } = region({ advanceMap: true }, 200, 3);
    expect(dev.maps).toEqual([{ domid: 4, refs: [200, 201, 202], readOnly: false }]);
    expect(r.mapping?.bytes.length).toBe(3 * 4096);
    r.borrow(4096, 8).release();
    r.flush();
    expect(dev.live).toBe(1);
    r.close();
    expect(dev.live).toBe(0);
  });

  it("fails creation with GrantMapFailed when a reference is not granted", () => {
    const dev = new RecordingGrantDevice();
    dev.refuse.add(201);
    const e = errOf(() => XenGrantRegion.forRefs(undefined, 4, 200, 3, { device: dev, advanceMap: true })) as XenMemoryError;
    expect(e.kind).toBe("GrantMapFailed");
    expect(e.grantRef).toBe(200);
  });
});

describe("vhost-user description of a grant region", () => {
  it("NO_ADVANCE_MAP: GRANT|0x8 by default, a gntdev fd, a synthetic non-overlapping user address", () => {
    const opened: string[] = [];
    const dev = new RecordingGrantDevice();
    const prov: MappingFdProvider = { openMappingFd: (k, d) => (opened.push(`${k}:${d}`), memfdCreate("g")) };
    using a = XenGrantRegion.forRefs(undefined, 4, 0, 16, { device: dev, fdProvider: prov });
    using b = XenGrantRegion.forRefs(undefined, 4, 16, 16, { device: dev, fdProvider: prov, noAdvanceMapEncoding: "spec" });
    const da = a.vhostUserDescription();
    const db = b.vhostUserDescription();
    expect(da).toMatchObject({ guest_phys_addr: 0x8000_0000_0000_0000n, memory_size: 65536n, mmap_offset: 0n, xen: { flags: 0xa, domid: 4 } });
    expect(db.xen).toEqual({ flags: 0x102, domid: 4 });
    expect(da.userspace_addr).toBe(SYNTHETIC_USER_ADDR_BASE);
    expect(db.userspace_addr).toBe(SYNTHETIC_USER_ADDR_BASE + 16n * 4096n);
    expect(da.userspace_addr + da.memory_size).toBeLessThanOrEqual(db.userspace_addr);
    expect(opened).toEqual(["gntdev:4", "gntdev:4"]);
  });

  it("advance-mapped: GRANT without NO_ADVANCE_MAP and the real mapping address", () => {
    const { r } = region({ advanceMap: true }, 0, 1);
    const d = r.vhostUserDescription();
    expect(d.xen).toEqual({ flags: 0x2, domid: 4 });
    expect(d.userspace_addr).toBeLessThan(SYNTHETIC_USER_ADDR_BASE);
    r.close();
  });
});

describe("grant regions in vm-memory's own GuestMemory (regions above 2^53 supported)", () => {
  it("are reachable at their grant addresses without XenGuestMemory", async () => {
    const { GuestMemory } = await import("@xen-vhost/vm-memory");
    const dev = new RecordingGrantDevice();
    using mem = new GuestMemory([XenGrantRegion.forRefs(undefined, 4, 0x100, 4, { device: dev, fdProvider })]);
    mem.write(grantAddress(0x101) + 8n, new Uint8Array([1, 2, 3]));
    expect(Array.from(mem.read(grantAddress(0x101) + 8n, 3))).toEqual([1, 2, 3]);
    expect(dev.maps[0]!.refs).toEqual([0x101]);
    expect((errOf(() => mem.read(grantAddress(0x104), 1)) as GuestMemoryError).kind).toBe("InvalidGuestAddress");
    expect(mem.vhostUserRegions()[0]!.guest_phys_addr).toBe(grantAddress(0x100));
  });
});
