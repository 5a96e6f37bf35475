// XenGuestMemory: grant DMA addresses (bit 63) reach grant regions through the fold window, nothing else
// does, and errors name the caller's addresses. Grant regions here use the recording grant device, which
// keeps data only within one mapped run, so each access below stays inside one page.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { fc, test } from "@fast-check/vitest";
import { GuestMemoryError, MmapRegion } from "@xen-vhost/vm-memory";
import { memfdCreate } from "@xen-vhost/vmm-sys-util";
import { RecordingTransport } from "@xen-vhost/xen-sys/testing";
import { DriverQueue, Queue } from "@xen-vhost/virtio-queue";
import { RecordingGrantDevice } from "../test/recording-grant-device.js";
import { XenForeignRegion } from "./foreign-region.js";
import { grantAddress } from "./grant-address.js";
import { XenGrantRegion } from "./grant-region.js";
import { GRANT_WINDOW_BASE, XenGuestMemory } from "./xen-guest-memory.js";

const fdProvider = { openMappingFd: () => memfdCreate("fake") };

function setup() {
  const dev = new RecordingGrantDevice();
  const t = new RecordingTransport();
  const ram = XenForeignRegion.map(t, 4, 0x4000_0000, 16 * 4096, { fdProvider });
  const g0 = XenGrantRegion.forRefs(undefined, 4, 0, 16, { device: dev, fdProvider });
  const g1 = XenGrantRegion.forRefs(undefined, 4, 16, 16, { device: dev, fdProvider });
  const mem = new XenGuestMemory([g1, ram, g0]);
  return { dev, mem, ram, g0, g1 };
}

function err(fn: () => unknown): GuestMemoryError {
  try {
    fn();
  } catch (e) {
    if (e instanceof GuestMemoryError) return e;
    throw e;
  }
  throw new Error("no error");
}

let leaks: ReturnType<typeof fdLeakCheck>;
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

describe("XenGuestMemory", () => {
  it("reads and writes grant addresses and ordinary RAM side by side", () => {
    const { mem } = setup();
    mem.write(grantAddress(3) + 0x10n, new Uint8Array([1, 2, 3]));
    expect(Array.from(mem.read(grantAddress(3) + 0x10n, 3))).toEqual([1, 2, 3]);
    mem.store32(grantAddress(20) + 8n, 0xdeadbeef);
    expect(mem.load32(grantAddress(20) + 8n)).toBe(0xdeadbeef);
    mem.store64(grantAddress(21), 0x0123_4567_89ab_cdefn);
    expect(mem.load64(grantAddress(21))).toBe(0x0123_4567_89ab_cdefn);
    mem.store8(grantAddress(22) + 1n, 0x5a);
    expect(mem.load8(grantAddress(22) + 1n)).toBe(0x5a);
    mem.store16(grantAddress(22) + 2n, 0x1234);
    expect(mem.load16(grantAddress(22) + 2n)).toBe(0x1234);
    mem.fill(grantAddress(23), 8, 0xee);
    expect(mem.withSlice(grantAddress(23), 8, (b) => Array.from(b))).toEqual(new Array(8).fill(0xee));
    mem.write(0x4000_0000, new Uint8Array([9]));
    expect(mem.read(0x4000_0000, 1)[0]).toBe(9);
    mem.close();
  });

  it("a read across two adjacent grant regions maps both runs before copying", () => {
    const { mem, dev } = setup();
    expect(mem.read(grantAddress(15) + 4000n, 200).length).toBe(200);
    expect(dev.maps.map((m) => m.refs)).toEqual([[15], [16]]);
    mem.close();
  });

  it("lists, finds and bounds regions by their real (grant) addresses", () => {
    const { mem, ram, g0, g1 } = setup();
    expect(mem.regions).toEqual([ram, g0, g1]);
    expect(mem.findRegion(grantAddress(17))).toBe(g1);
    expect(mem.findRegion(grantAddress(32))).toBeUndefined();
    expect(mem.addressInRange(grantAddress(0))).toBe(true);
    expect(mem.checkRange(grantAddress(0), 32 * 4096)).toBe(true);
    expect(mem.checkRange(grantAddress(0), 32 * 4096 + 1)).toBe(false);
    expect(mem.checkRange(0xffff_ffff_ffff_fff0n, 0x20)).toBe(false);
    expect(mem.lastAddr?.value).toBe(grantAddress(32) - 1n);
    expect(mem.vhostUserRegions().map((d) => d.guest_phys_addr)).toEqual([0x4000_0000n, grantAddress(0), grantAddress(16)]);
    mem.close();
  });

  it("the fold window names exactly the grant space: nothing else is reachable through it", () => {
    const { mem, dev } = setup();
    mem.write(grantAddress(3) + 0x10n, new Uint8Array([4, 5, 6]));
    expect(Array.from(mem.read(GRANT_WINDOW_BASE + 3 * 4096 + 0x10, 3))).toEqual([4, 5, 6]);
    expect(mem.windowAddress(grantAddress(3) + 0x10n)).toBe(GRANT_WINDOW_BASE + 3 * 4096 + 0x10);
    expect(mem.windowAddress(0x4000_0000n)).toBe(0x4000_0000);
    expect(() => mem.windowAddress(1n << 60n)).toThrow(RangeError);
    const maps = dev.maps.length;
    for (const a of [GRANT_WINDOW_BASE + 32 * 4096, 2 ** 53 - 8]) {
      const e = err(() => mem.read(a, 4));
      expect(e.kind).toBe("InvalidGuestAddress");
      expect(e.address).toBe(BigInt(a));
      expect(mem.addressInRange(a)).toBe(false);
    }
    expect(err(() => mem.read(1n << 60n, 4)).address).toBe(1n << 60n);
    expect(err(() => mem.read(grantAddress(0) + (1n << 52n), 4)).kind).toBe("InvalidGuestAddress");
    expect(dev.maps.length).toBe(maps);
    mem.close();
  });

  it("reports errors at the caller's grant address, and checks the whole range before mapping anything", () => {
    const { mem, dev } = setup();
    const e = err(() => mem.read(grantAddress(30), 3 * 4096));
    expect(e.kind).toBe("InvalidGuestAddress");
    expect(e.address).toBe(grantAddress(32));
    expect(e.message).toContain(grantAddress(30).toString(16));
    expect(e.message).not.toContain(GRANT_WINDOW_BASE.toString(16));
    expect(dev.maps).toEqual([]);
    const u = err(() => mem.load32(grantAddress(2) + 2n));
    expect(u.kind).toBe("Unaligned");
    expect(u.address).toBe(grantAddress(2) + 2n);
    expect(err(() => mem.read(0xffff_ffff_ffff_fff0n, 0x20)).kind).toBe("Overflow");
    expect(err(() => mem.slice(grantAddress(1), 4)).kind).toBe("InvalidRegion"); // mapped on demand: borrow instead
    expect(err(() => mem.borrow(grantAddress(15) + 4000n, 200)).kind).toBe("OutOfBounds");
    expect(err(() => mem.write(grantAddress(40), new Uint8Array(1))).kind).toBe("InvalidGuestAddress");
    mem.close();
    expect(err(() => mem.read(grantAddress(1), 1)).kind).toBe("Closed");
    expect(err(() => mem.read(GRANT_WINDOW_BASE, 1)).kind).toBe("Closed");
    expect(err(() => mem.read(1n << 62n, 1)).kind).toBe("Closed");
  });

  it("refuses ordinary regions reaching the fold window", () => {
    const r = MmapRegion.memfd(GRANT_WINDOW_BASE - 4096, 4096);
    expect(err(() => new XenGuestMemory([r])).kind).toBe("InvalidRegion");
    r.close();
  });

  it("carries a virtio queue whose rings and buffers are grant addresses", () => {
    const { mem } = setup();
    // Ring in grant ref 1 (one page: desc 8*16, avail 6+16, used 6+64), buffers in refs 2 and 3. virtio-queue
    // keeps ring addresses as doubles, so the rings are given at their window address (see README).
    const driver = DriverQueue.create<number>(mem, mem.windowAddress(grantAddress(1)), 8);
    const queue = new Queue(mem);
    queue.size = 8;
    queue.descTable = driver.descTable;
    queue.availRing = driver.availRing;
    queue.usedRing = driver.usedRing;
    queue.ready = true;
    mem.write(grantAddress(2), new TextEncoder().encode("req"));
    driver.add({ readable: [{ addr: grantAddress(2), len: 3 }], writable: [{ addr: grantAddress(3), len: 3 }] }, { token: 1 });
    const chain = queue.pop()!;
    expect(chain.readable[0]!.addr).toBe(grantAddress(2));
    expect(new TextDecoder().decode(mem.read(chain.readable[0]!.addr, 3))).toBe("req");
    mem.write(chain.writable[0]!.addr, new TextEncoder().encode("ack"));
    queue.addUsed(chain.head, 3);
    expect([...driver.harvest()].map((u) => u.token)).toEqual([1]);
    expect(new TextDecoder().decode(mem.read(grantAddress(3), 3))).toBe("ack");
    mem.close();
  });
});

describe("hostile addresses (property)", () => {
  const interesting = fc.oneof(
    fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }),
    fc.bigInt({ min: 0x3fff_f000n, max: 0x4001_1000n }), // around the foreign region
    fc.bigInt({ min: (1n << 52n) - 0x1000n, max: (1n << 53n) + 0x1000n }), // the fold window and its edges
    fc.bigInt({ min: (1n << 63n) - 0x1000n, max: (1n << 63n) + 0x22000n }), // around the grant regions
    fc.bigInt({ min: 0xffff_ffff_ffff_0000n, max: 0xffff_ffff_ffff_ffffn }),
  );
  const asArg = (a: bigint, asNumber: boolean) => (asNumber && a <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(a) : a);

  test.prop([interesting, fc.integer({ min: 0, max: 3 * 4096 }), fc.boolean(), fc.constantFrom("read", "write", "load16", "store32", "load64", "borrow", "check")], { numRuns: 1000 })(
    "only GuestMemoryError, never a partial write to RAM",
    (a, len, asNumber, op) => {
      const { mem, ram } = setup();
      try {
        const before = Buffer.from(ram.mapping.bytes.slice());
        const addr = asArg(a, asNumber);
        try {
          switch (op) {
            case "read": mem.read(addr, len); break;
            case "write": mem.write(addr, new Uint8Array(len).fill(0xab)); break;
            case "load16": mem.load16(addr); break;
            case "store32": mem.store32(addr, 0x01020304); break;
            case "load64": mem.load64(addr); break;
            case "borrow": mem.borrow(addr, len).release(); break;
            case "check": mem.checkRange(addr, len); break;
          }
        } catch (e) {
          expect(e).toBeInstanceOf(GuestMemoryError);
          // (Buffer.equals: vitest's deep equality on 64 KiB arrays is far too slow for a property test)
          expect(Buffer.from(ram.mapping.bytes).equals(before)).toBe(true);
        }
      } finally {
        mem.close();
      }
    },
  );
});
