// Rings, indirect tables and buffers above 2^53: Xen grant DMA addresses set bit 63 (Linux
// XEN_GRANT_DMA_ADDR_OFF), so a virtio device under Xen grant mappings sees exactly these.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { DriverQueue, PackedDriverQueue, PackedQueue, Queue, VirtqDesc } from "../src/index.js";
import { kindOf } from "./helpers.js";

const G = 1n << 63n;
const MIB = 1024 * 1024;

let leaks: { check(): string[] };
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

describe("queues at grant addresses (bit 63)", () => {
  for (const indirect of [false, true]) {
    it(`split ring round trip, rings and buffers above 2^63 (${indirect ? "indirect" : "direct"})`, () => {
      using mem = GuestMemory.fromRanges([
        [0, MIB],
        [G, MIB],
      ]);
      const driver = DriverQueue.create<number>(mem, G + 0x1000n, 16, { eventIdx: true, indirectMaxEntries: 4 });
      expect(driver.descTable.value > G).toBe(true);
      const q = new Queue(mem);
      q.size = 16;
      q.descTable = driver.descTable;
      q.availRing = driver.availRing;
      q.usedRing = driver.usedRing;
      q.eventIdx = true;
      q.ready = true;
      const req = G + 0x8_0000n;
      for (let i = 0; i < 40; i++) {
        mem.write(req, Uint8Array.of(i, 1, 2, 3));
        const head = driver.add({ readable: [{ addr: req, len: 4 }], writable: [{ addr: req + 0x100n, len: 4 }, { addr: 0x100, len: 4 }] }, { token: i, indirect });
        expect(driver.needsNotification()).toBe(i === 0);
        q.enableNotification();
        const c = q.pop()!;
        expect(c.head).toBe(head);
        expect(c.indirect).toBe(indirect);
        expect(c.descriptors.map((d) => d.addr)).toEqual([req, req + 0x100n, 0x100n]);
        expect(c.readAll()).toEqual(Uint8Array.of(i, 1, 2, 3));
        q.addUsed(c.head, c.writeAll(Uint8Array.of(9, 8, 7, 6, 5, 4, 3, 2)));
        q.needsNotification();
        expect(driver.harvest()).toEqual([{ id: head, len: 8, token: i }]);
        expect(mem.read(req + 0x100n, 4)).toEqual(Uint8Array.of(9, 8, 7, 6));
        expect(mem.read(0x100, 4)).toEqual(Uint8Array.of(5, 4, 3, 2));
      }
    });
  }

  it("packed ring round trip above 2^63", () => {
    using mem = GuestMemory.fromRanges([[G, MIB]]);
    const driver = PackedDriverQueue.create<number>(mem, G, 8, { indirectMaxEntries: 4 });
    const q = new PackedQueue(mem);
    q.size = 8;
    q.descRing = driver.descRing;
    q.driverEvent = driver.driverEvent;
    q.deviceEvent = driver.deviceEvent;
    q.ready = true;
    for (let i = 0; i < 30; i++) {
      const id = driver.add({ readable: [{ addr: G + 0x4_0000n, len: 8 }], writable: [{ addr: G + 0x5_0000n, len: 8 }] }, { token: i, indirect: i % 2 === 1 });
      const c = q.pop()!;
      expect(c.head).toBe(id);
      q.addUsed(c, c.writeAll(new Uint8Array(8).fill(i)));
      expect(driver.harvest()).toEqual([{ id, len: 8, token: i }]);
    }
  });

  it("hostile descriptors near the top of the address space are OutOfBounds, never a wrap", () => {
    using mem = GuestMemory.fromRanges([[2n ** 64n - BigInt(MIB), MIB]]);
    const driver = DriverQueue.create(mem, 2n ** 64n - BigInt(MIB), 8);
    const q = new Queue(mem);
    q.size = 8;
    q.descTable = driver.descTable;
    q.availRing = driver.availRing;
    q.usedRing = driver.usedRing;
    q.ready = true;
    mem.writeObj(driver.descTable.value, VirtqDesc, { addr: 2n ** 64n - 16n, len: 32, flags: 0, next: 0 });
    const a = driver.availRing.value;
    mem.store16(a + 4n, 0);
    mem.store16(a + 2n, 1);
    expect(kindOf(() => q.pop())).toBe("OutOfBounds");
    mem.writeObj(driver.descTable.value, VirtqDesc, { addr: 2n ** 64n - 16n, len: 16, flags: 0, next: 0 });
    mem.store16(a + 6n, 0);
    mem.store16(a + 2n, 2);
    expect(q.pop()?.readableLength).toBe(16);
  });
});
