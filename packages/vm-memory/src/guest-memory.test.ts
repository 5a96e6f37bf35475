import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { fc, test as fcTest } from "@fast-check/vitest";
import { fstatSync } from "node:fs";
import { addressOf, defineStruct, dup, mmap, munmap, u16, u32, u64 } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "./guest-memory.js";
import { MappedRegion } from "./guest-memory-region.js";
import { MmapRegion } from "./mmap-region.js";
import { GuestAddress } from "./guest-address.js";
import { GuestMemoryError } from "./error.js";
import { OnDemandRegion } from "../test/on-demand-region.js";

const PAGE = 4096;

function kindOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof GuestMemoryError ? e.kind : `not a GuestMemoryError: ${String(e)}`;
  }
  return undefined;
}

let leaks: { check(): string[] };
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

describe("GuestMemory construction", () => {
  it("sorts regions and finds them by binary search", () => {
    using mem = GuestMemory.fromRanges([
      [0x100000, PAGE * 4],
      [0, PAGE],
      [0x10000, PAGE * 2],
    ]);
    expect(mem.regions.map((r) => r.guestBase.value)).toEqual([0n, 0x10000n, 0x100000n]);
    expect(mem.numRegions).toBe(3);
    expect(mem.totalSize).toBe(PAGE * 7);
    expect(mem.lastAddr?.value).toBe(0x100000n + BigInt(PAGE * 4) - 1n);
    expect(mem.findRegion(0x10fff)?.guestBase.value).toBe(0x10000n);
    expect(mem.findRegion(0x12000)).toBeUndefined();
    expect(mem.findRegion(new GuestAddress(0x100000n))?.size).toBe(PAGE * 4);
    expect(mem.addressInRange(PAGE)).toBe(false);
    expect(mem.addressInRange(PAGE - 1)).toBe(true);
  });

  it("rejects overlapping regions and closes what it created", () => {
    expect(kindOf(() => GuestMemory.fromRanges([[0, PAGE * 2], [PAGE, PAGE]]))).toBe("RegionOverlap");
    const a = MmapRegion.memfd(0, PAGE * 2);
    const b = MmapRegion.memfd(PAGE * 2 - PAGE, PAGE);
    expect(kindOf(() => new GuestMemory([b, a]))).toBe("RegionOverlap");
    a.close();
    b.close();
    expect(kindOf(() => new GuestMemory([a]))).toBe("Closed");
  });

  it("rejects regions ending above 2^64 - 1 and bad sizes", () => {
    expect(kindOf(() => MmapRegion.memfd(2n ** 64n - BigInt(PAGE) + 1n, PAGE))).toBe("InvalidRegion");
    expect(() => MmapRegion.memfd(0, 100)).toThrow(RangeError);
  });
});

describe("GuestMemory access", () => {
  it("reads and writes within and across adjacent regions", () => {
    using mem = GuestMemory.fromRanges([
      [0, PAGE],
      [PAGE, PAGE],
    ]);
    const data = Uint8Array.from({ length: 100 }, (_, i) => i + 1);
    mem.write(10, data);
    expect(mem.read(10, 100)).toEqual(data);
    mem.write(PAGE - 50, data);
    expect(mem.read(PAGE - 50, 100)).toEqual(data);
    expect(mem.read(PAGE, 50)).toEqual(data.subarray(50));
    const into = new Uint8Array(100);
    mem.readInto(BigInt(PAGE - 50), into);
    expect(into).toEqual(data);
    expect(mem.read(0, 0).length).toBe(0);
    expect(mem.checkRange(0, PAGE * 2)).toBe(true);
    expect(mem.checkRange(1, PAGE * 2)).toBe(false);
  });

  it("checks the whole range before writing: a range into a hole writes nothing", () => {
    using mem = GuestMemory.fromRanges([
      [0, PAGE],
      [PAGE * 2, PAGE],
    ]);
    const err = (() => {
      try {
        mem.write(PAGE - 4, new Uint8Array(8).fill(0xff));
      } catch (e) {
        return e as GuestMemoryError;
      }
      return undefined;
    })();
    expect(err?.kind).toBe("InvalidGuestAddress");
    expect(err?.address).toBe(BigInt(PAGE));
    expect(mem.read(PAGE - 4, 4)).toEqual(new Uint8Array(4));
    expect(kindOf(() => mem.read(PAGE * 3, 1))).toBe("InvalidGuestAddress");
    expect(kindOf(() => mem.read(PAGE * 3 - 1, 2))).toBe("InvalidGuestAddress");
    expect(kindOf(() => mem.fill(PAGE - 1, 2, 7))).toBe("InvalidGuestAddress");
    expect(mem.read(PAGE - 1, 1)).toEqual(new Uint8Array(1));
  });

  it("addresses beyond 2^53 are unbacked; beyond 2^64 overflow", () => {
    using mem = GuestMemory.fromRanges([[0, PAGE]]);
    expect(kindOf(() => mem.read(2n ** 60n, 4))).toBe("InvalidGuestAddress");
    expect(kindOf(() => mem.read(0xffff_ffff_ffff_fff0n, 0x20))).toBe("Overflow");
    expect(kindOf(() => mem.load16(2n ** 63n))).toBe("InvalidGuestAddress");
    expect(() => mem.read(-1, 4)).toThrow(RangeError);
    expect(() => mem.read(2n ** 64n, 4)).toThrow(RangeError);
  });

  it("slices are zero-copy views that never cross a region end", () => {
    using mem = GuestMemory.fromRanges([
      [0, PAGE],
      [PAGE, PAGE],
    ]);
    const s = mem.slice(100, 16);
    s.fill(0xab);
    expect(mem.read(100, 16)).toEqual(new Uint8Array(16).fill(0xab));
    mem.write(104, Uint8Array.of(1));
    expect(s[4]).toBe(1);
    expect(kindOf(() => mem.slice(PAGE - 8, 16))).toBe("OutOfBounds");
    expect(kindOf(() => mem.slice(PAGE * 2, 1))).toBe("InvalidGuestAddress");
    expect(mem.withSlice(PAGE, 4, (b) => b.length)).toBe(4);
  });

  it("reads and writes structs with a defineStruct layout", () => {
    // virtio 1.2 section 2.7.5: struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }
    const Desc = defineStruct("virtq_desc", { size: 16 }, { addr: u64(0), len: u32(8), flags: u16(12), next: u16(14) });
    using mem = GuestMemory.fromRanges([[0, PAGE]]);
    mem.writeObj(0x40, Desc, { addr: 0x1234_5678_9abcn, len: 512, flags: 3, next: 7 });
    expect(mem.readObj(0x40, Desc)).toEqual({ addr: 0x1234_5678_9abcn, len: 512, flags: 3, next: 7 });
    mem.writeObj(0x40, Desc, { len: 9 });
    expect(mem.readObj(0x40, Desc).addr).toBe(0x1234_5678_9abcn);
    // a bad value is rejected before any byte is written
    expect(() => mem.writeObj(0x40, Desc, { addr: 1n, flags: 0x10000 })).toThrow(RangeError);
    expect(mem.readObj(0x40, Desc).addr).toBe(0x1234_5678_9abcn);
    expect(kindOf(() => mem.readObj(PAGE - 8, Desc))).toBe("InvalidGuestAddress");
  });
});

describe("regions anywhere in the 64-bit space (Xen grant DMA addresses set bit 63)", () => {
  const G = 1n << 63n;

  it("reads, writes, slices and atomics above 2^53, next to RAM below", () => {
    using mem = GuestMemory.fromRanges([
      [0, PAGE],
      [G, PAGE],
      [G + BigInt(PAGE), PAGE], // adjacent: copies may span both
      [2n ** 64n - BigInt(PAGE), PAGE], // the very top
      [2n ** 53n - BigInt(PAGE), PAGE * 2], // straddles 2^53
    ]);
    expect(mem.regions.map((r) => r.guestBase.value)).toEqual([0n, 2n ** 53n - BigInt(PAGE), G, G + BigInt(PAGE), 2n ** 64n - BigInt(PAGE)]);
    expect(mem.lastAddr?.value).toBe(2n ** 64n - 1n);
    const data = Uint8Array.from({ length: 64 }, (_, i) => i + 1);
    mem.write(G + BigInt(PAGE - 32), data);
    expect(mem.read(new GuestAddress(G + BigInt(PAGE - 32)), 64)).toEqual(data);
    expect(mem.read(G + BigInt(PAGE), 32)).toEqual(data.subarray(32));
    mem.store16(G + 2n, 0xbeef);
    expect(mem.load16(G + 2n)).toBe(0xbeef);
    mem.store64(2n ** 64n - 8n, 0x1122334455667788n);
    expect(mem.load64(2n ** 64n - 8n)).toBe(0x1122334455667788n);
    expect(mem.slice(G + 2n, 2)).toEqual(Uint8Array.of(0xef, 0xbe));
    expect(kindOf(() => mem.load16(G + 1n))).toBe("Unaligned");
    expect(kindOf(() => mem.slice(G + BigInt(PAGE - 1), 2))).toBe("OutOfBounds");
    expect(kindOf(() => mem.read(G + BigInt(PAGE * 2), 1))).toBe("InvalidGuestAddress");
    expect(kindOf(() => mem.read(G - 1n, 2))).toBe("InvalidGuestAddress");
    expect(kindOf(() => mem.read(2n ** 64n - 4n, 8))).toBe("Overflow");
    expect(mem.checkRange(G, PAGE * 2)).toBe(true);
    expect(mem.checkRange(G, PAGE * 2 + 1)).toBe(false);
    expect(mem.findRegion(G + 5n)?.guestBase.value).toBe(G);
    // the straddling region, through doubles below 2^53 and bigints above
    mem.write(2n ** 53n - 4n, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
    expect(mem.read(Number.MAX_SAFE_INTEGER - 3, 8)).toEqual(Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8));
    expect(mem.load32(2n ** 53n)).toBe(0x08070605);
    // ordinary RAM still takes the double path
    mem.write(16, data);
    expect(mem.read(16, 64)).toEqual(data);
    expect(mem.vhostUserRegions()[2]!.guest_phys_addr).toBe(G);
  });

  it("overlap checks work with bigint bases", () => {
    const a = MmapRegion.memfd(G, PAGE * 2);
    const b = MmapRegion.memfd(G + BigInt(PAGE), PAGE);
    expect(kindOf(() => new GuestMemory([a, b]))).toBe("RegionOverlap");
    a.close();
    b.close();
  });
});

describe("GuestMemory atomics", () => {
  it("aligned loads and stores of every width", () => {
    using mem = GuestMemory.fromRanges([[0x10000, PAGE]]);
    mem.store16(0x10002, 0xbeef);
    expect(mem.load16(0x10002)).toBe(0xbeef);
    expect(mem.read(0x10002, 2)).toEqual(Uint8Array.of(0xef, 0xbe));
    mem.store32(0x10004, 0xdeadbeef);
    expect(mem.load32(0x10004)).toBe(0xdeadbeef);
    mem.store64(0x10008, 0x0102030405060708n);
    expect(mem.load64(0x10008)).toBe(0x0102030405060708n);
    mem.store8(0x10001, 0x7f);
    expect(mem.load8(0x10001)).toBe(0x7f);
    mem.fence();
  });

  it("unaligned, out-of-range and bad values are typed errors", () => {
    using mem = GuestMemory.fromRanges([[0, PAGE]]);
    expect(kindOf(() => mem.load16(1))).toBe("Unaligned");
    expect(kindOf(() => mem.store32(2, 1))).toBe("Unaligned");
    expect(kindOf(() => mem.load64(4))).toBe("Unaligned");
    expect(kindOf(() => mem.load16(PAGE))).toBe("InvalidGuestAddress");
    expect(() => mem.store16(0, 0x10000)).toThrow(RangeError);
    expect(() => mem.store16(0, -1)).toThrow(RangeError);
    expect(() => mem.store64(0, -1n)).toThrow(RangeError);
  });

  it("refuses an access a region's odd base would make unaligned", () => {
    const buf = mmap(PAGE);
    using mem = new GuestMemory([new MappedRegion(0x1001, buf)]);
    expect(kindOf(() => mem.load16(0x1002))).toBe("Unaligned");
    expect(mem.load8(0x1002)).toBe(0);
  });
});

describe("MmapRegion sharing and lifetime", () => {
  it("a second mapping of the fd (what a backend does) sees the same bytes", () => {
    using mem = GuestMemory.fromRanges([
      [0, PAGE * 2],
      [0x100000, PAGE],
    ]);
    const descs = mem.vhostUserRegions();
    expect(descs).toHaveLength(2);
    const d = descs[1]!;
    expect(d.guest_phys_addr).toBe(0x100000n);
    expect(d.memory_size).toBe(BigInt(PAGE));
    expect(d.mmap_offset).toBe(0n);
    expect(d.xen).toBeUndefined();
    const r = mem.regions[1] as MmapRegion;
    expect(d.userspace_addr).toBe(r.userAddr);
    expect(r.userAddr).toBe(addressOf(mem.slice(0x100000, 1)));
    using backend = MmapRegion.fromFd(d.fd, 0, PAGE);
    mem.store32(0x100010, 0xcafef00d);
    expect(backend.mapping.atomics.load32(0x10)).toBe(0xcafef00d);
    backend.mapping.bytes[0x20] = 9;
    expect(mem.read(0x100020, 1)[0]).toBe(9);
  });

  it("close detaches views, is idempotent, and later use is Closed", () => {
    const mem = GuestMemory.fromRanges([[0, PAGE]]);
    const view = mem.slice(0, 64);
    const region = mem.regions[0]!;
    const staleAtomics = region.mapping!.atomics;
    mem.close();
    // a stale AtomicAccess over the detached buffer throws instead of touching unmapped memory
    expect(() => staleAtomics.load16(0)).toThrow();
    mem.close();
    expect(mem.closed).toBe(true);
    expect(region.closed).toBe(true);
    expect(view.length).toBe(0);
    expect(view[0]).toBeUndefined();
    expect(kindOf(() => mem.read(0, 1))).toBe("Closed");
    expect(kindOf(() => mem.load16(0))).toBe("Closed");
    expect(kindOf(() => mem.vhostUserRegions())).toBe("Closed");
    expect(kindOf(() => region.mapping)).toBe("Closed");
  });

  it("a region closed on its own makes accesses to it Closed", () => {
    const r = MmapRegion.memfd(0, PAGE);
    using mem = new GuestMemory([r], { ownsRegions: false });
    r.close();
    expect(kindOf(() => mem.write(0, Uint8Array.of(1)))).toBe("Closed");
  });

  it("using disposes memory and fds", () => {
    {
      using mem = GuestMemory.fromRanges([[0, PAGE]]);
      mem.write(0, Uint8Array.of(1));
    }
    // afterEach's fdLeakCheck proves the memfd was closed
  });

  it("fromFd leaves the fd to the caller unless it owns it", () => {
    const owner = MmapRegion.memfd(0, PAGE);
    const r = MmapRegion.fromFd(owner.fd, 0x1000, PAGE);
    r.close();
    expect(fstatSync(owner.fd).size).toBe(PAGE); // still open
    const fd2 = dup(owner.fd);
    const owning = MmapRegion.fromFd(fd2, 0, PAGE, { ownsFd: true });
    owning.close(); // closes fd2: the fd leak check after the test proves it
    owner.close();
    expect(kindOf(() => MmapRegion.fromFd(1_000_000, 0, PAGE))).toBe("MapFailed");
    expect(() => MmapRegion.fromFd(-1, 0, PAGE)).toThrow(RangeError);
    expect(() => MmapRegion.fromFd(owner.fd, 0, PAGE, { fileOffset: 100 })).toThrow(RangeError);
  });

  it("read checks the range before allocating (a hostile length cannot make it allocate)", () => {
    using mem = GuestMemory.fromRanges([[0, PAGE]]);
    expect(kindOf(() => mem.read(0, 2 ** 40))).toBe("InvalidGuestAddress");
  });

  it("memory without fds cannot be described for vhost-user", () => {
    const buf = mmap(PAGE);
    using mem = new GuestMemory([new MappedRegion(0, buf)]);
    expect(kindOf(() => mem.vhostUserRegions())).toBe("InvalidRegion");
    expect(() => munmap(buf)).not.toThrow();
  });
});

describe("regions mapped on demand (the grant-region shape)", () => {
  it("every access maps what it needs and unmaps it again", () => {
    const lazy = new OnDemandRegion(PAGE * 4, PAGE * 4);
    using mem = GuestMemory.fromRanges([[0, PAGE * 4]]);
    using all = new GuestMemory([...mem.regions, lazy], { ownsRegions: false });
    try {
      const data = Uint8Array.from({ length: PAGE + 10 }, (_, i) => i & 0xff);
      all.write(PAGE * 4 + 100, data);
      expect(all.read(PAGE * 4 + 100, data.length)).toEqual(data);
      // across the boundary from an up-front region into the on-demand one
      all.write(PAGE * 4 - 3, Uint8Array.of(1, 2, 3, 4, 5, 6));
      expect(all.read(PAGE * 4 - 3, 6)).toEqual(Uint8Array.of(1, 2, 3, 4, 5, 6));
      all.store16(PAGE * 5 + 2, 0x1234);
      expect(all.load16(PAGE * 5 + 2)).toBe(0x1234);
      all.store64(PAGE * 6, 5n);
      expect(all.load64(PAGE * 6)).toBe(5n);
      expect(kindOf(() => all.slice(PAGE * 4, 4))).toBe("InvalidRegion");
      {
        using v = all.borrow(PAGE * 4, 8);
        expect(v.bytes[0]).toBe(4);
        expect(lazy.live).toBe(1);
      }
      expect(all.withSlice(PAGE * 4 + 100, 2, (b) => [...b])).toEqual([0, 1]);
      expect(lazy.maps).toBeGreaterThan(5);
      expect(lazy.live).toBe(0);
      // a map failure in the second region of a spanning write leaves the first region untouched
      all.write(PAGE * 4 - 4, new Uint8Array(8));
      lazy.failNext = true;
      expect(kindOf(() => all.write(PAGE * 4 - 4, new Uint8Array(8).fill(0xee)))).toBe("MapFailed");
      expect(all.read(PAGE * 4 - 4, 8)).toEqual(new Uint8Array(8));
      expect(lazy.live).toBe(0);
    } finally {
      lazy.close();
    }
  });
});

describe("properties", () => {
  // [0, 2 pages) and [3 pages, 5 pages): a hole at page 2, nothing past page 5. Made once: creating memfds
  // per run is what makes a property test slow.
  let propMem: GuestMemory | undefined;
  beforeAll(() => {
    propMem = GuestMemory.fromRanges([
      [0, PAGE * 2],
      [PAGE * 3, PAGE],
      [PAGE * 4, PAGE],
    ]);
  });
  afterAll(() => propMem?.close());

  fcTest.prop([
    fc.array(
      fc.record({
        addr: fc.integer({ min: 0, max: PAGE * 6 }),
        // a generated fill byte and length: generating multi-KiB arrays element by element is slow
        len: fc.integer({ min: 0, max: PAGE + 64 }),
        fillByte: fc.integer({ min: 1, max: 255 }),
      }),
      { maxLength: 20 },
    ),
  ], { numRuns: 60 })("writes behave like a flat array with a hole, and failing writes change nothing", (ops) => {
    const mem = propMem!;
    mem.fill(0, PAGE * 2);
    mem.fill(PAGE * 3, PAGE * 2);
    const model = new Uint8Array(PAGE * 5);
    const backed = (a: number, n: number) => n === 0 || (a + n <= PAGE * 2) || (a >= PAGE * 3 && a + n <= PAGE * 5);
    for (const { addr, len, fillByte } of ops) {
      const data = Uint8Array.from({ length: len }, (_, i) => (i * 7 + fillByte) & 0xff);
      if (backed(addr, data.length)) {
        mem.write(addr, data);
        if (data.length > 0) model.set(data, addr);
      } else {
        expect(kindOf(() => mem.write(addr, data))).toBe("InvalidGuestAddress");
      }
    }
    expect(mem.read(0, PAGE * 2)).toEqual(model.subarray(0, PAGE * 2));
    expect(mem.read(PAGE * 3, PAGE * 2)).toEqual(model.subarray(PAGE * 3));
  }, 30_000);
});

describe("vhost-user helpers", () => {
  it("a backend maps the front-end's description; addresses translate both ways", async () => {
    const { guestToUserAddr, userToGuestAddr } = await import("./vhost-user.js");
    const { dup } = await import("@xen-vhost/vmm-sys-util");
    using front = GuestMemory.fromRanges([
      [0, PAGE * 2],
      [0x100000, PAGE],
    ]);
    const descs = front.vhostUserRegions();
    // the backend receives its own fds (SCM_RIGHTS duplicates them); dup stands in for that
    const received = descs.map((d) => ({ ...d, fd: dup(d.fd) }));
    using back = GuestMemory.fromVhostUserRegions(received);
    front.store32(0x100008, 0xabcdef01);
    expect(back.load32(0x100008)).toBe(0xabcdef01);
    const u = guestToUserAddr(descs, 0x100008n, 4);
    expect(u).toBe(descs[1]!.userspace_addr + 8n);
    expect(userToGuestAddr(descs, u)).toBe(0x100008n);
    expect(kindOf(() => guestToUserAddr(descs, PAGE * 2))).toBe("InvalidGuestAddress");
    expect(kindOf(() => guestToUserAddr(descs, PAGE * 2 - 2, 4))).toBe("InvalidGuestAddress");
    expect(kindOf(() => userToGuestAddr(descs, 0n))).toBe("InvalidGuestAddress");
    // afterEach's fd check proves the backend closed the received fds
  });

  it("a failing backend mapping closes what it mapped and leaves the fds to the caller", async () => {
    const { dup } = await import("@xen-vhost/vmm-sys-util");
    using front = GuestMemory.fromRanges([
      [0, PAGE],
      [PAGE, PAGE],
    ]);
    const received = front.vhostUserRegions().map((d) => ({ ...d, fd: dup(d.fd) }));
    // overlapping: both at guest 0
    const overlapping = [received[0]!, { ...received[1]!, guest_phys_addr: 0n }];
    expect(kindOf(() => GuestMemory.fromVhostUserRegions(overlapping))).toBe("RegionOverlap");
    // an fd that is not open: the first region was mapped, then unmapped again
    const badFd = [received[0]!, { ...received[1]!, fd: 1_000_000 }];
    expect(kindOf(() => GuestMemory.fromVhostUserRegions(badFd))).toBe("MapFailed");
    // the fds are still the caller's (and still valid)
    using again = GuestMemory.fromVhostUserRegions(received);
    expect(again.numRegions).toBe(2);
  });
});
