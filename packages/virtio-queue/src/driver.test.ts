// The driver checked against the spec's byte layout directly (not through the device side), so a bug shared
// by both sides cannot hide.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { DriverQueue } from "./driver.js";
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY } from "./defs.js";
import { DATA, MIB, RAM, kindOf } from "../test/helpers.js";

let leaks: { check(): string[] };
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

function desc(mem: GuestMemory, table: bigint, i: number) {
  const b = mem.read(table + BigInt(i * 16), 16);
  const v = new DataView(b.buffer);
  return { addr: v.getBigUint64(0, true), len: v.getUint32(8, true), flags: v.getUint16(12, true), next: v.getUint16(14, true) };
}

describe("DriverQueue layout", () => {
  it("places the parts with the spec's alignment and sizes", () => {
    const l = DriverQueue.layout(0x1001, 256, { indirectMaxEntries: 8 });
    expect(l.descTable).toBe(0x1010n);
    expect(l.availRing).toBe(0x1010n + 4096n);
    expect(l.usedRing).toBe(0x1010n + 4096n + 6n + 512n + 2n); // 6 + 2*256 rounded up to 4
    expect(l.indirectTable! % 16n).toBe(0n);
    expect(l.end).toBe(l.indirectTable! + 256n * 8n * 16n);
  });

  it("rejects bad sizes and parts outside guest memory", () => {
    using mem = GuestMemory.fromRanges(RAM);
    expect(kindOf(() => DriverQueue.create(mem, 0, 100))).toBe("InvalidConfig");
    expect(kindOf(() => DriverQueue.create(mem, 0, 65536))).toBe("InvalidConfig");
    expect(kindOf(() => DriverQueue.create(mem, 2 * 1024 * 1024 - 64, 256))).toBe("InvalidConfig");
    expect(kindOf(() => new DriverQueue(mem, { size: 8, descTable: 8, availRing: 0x1000, usedRing: 0x2000 }))).toBe("InvalidConfig");
    expect(kindOf(() => new DriverQueue(mem, { size: 8, descTable: 0, availRing: 0x1001, usedRing: 0x2000 }))).toBe("InvalidConfig");
    expect(kindOf(() => new DriverQueue(mem, { size: 8, descTable: 0, availRing: 0x1000, usedRing: 0x2002 }))).toBe("InvalidConfig");
  });
});

describe("DriverQueue posting", () => {
  it("writes a direct chain, the avail entry and the index as the spec lays them out", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const d = DriverQueue.create<string>(mem, 0x1000, 8);
    const head = d.add({ readable: [{ addr: DATA, len: 16 }], writable: [{ addr: DATA + 0x100, len: 32 }, { addr: DATA + 0x200, len: 1 }] }, { token: "t" });
    const a = d.availRing.value;
    expect(mem.load16(a + 2n)).toBe(1); // avail.idx
    expect(mem.load16(a + 4n)).toBe(head); // avail.ring[0]
    const d0 = desc(mem, d.descTable.value, head);
    expect(d0).toEqual({ addr: BigInt(DATA), len: 16, flags: VIRTQ_DESC_F_NEXT, next: d0.next });
    const d1 = desc(mem, d.descTable.value, d0.next);
    expect(d1.flags).toBe(VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE);
    expect(d1.len).toBe(32);
    const d2 = desc(mem, d.descTable.value, d1.next);
    expect(d2).toMatchObject({ addr: BigInt(DATA + 0x200), len: 1, flags: VIRTQ_DESC_F_WRITE });
    expect(d.numFree).toBe(5);
    expect(d.inFlight).toBe(1);
  });

  it("writes an indirect chain as one ring descriptor pointing at a table", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const d = DriverQueue.create(mem, 0x1000, 8, { indirectMaxEntries: 4 });
    const head = d.add({ readable: [{ addr: DATA, len: 8 }], writable: [{ addr: DATA + 8, len: 8 }] }, { indirect: true });
    const top = desc(mem, d.descTable.value, head);
    expect(top.flags).toBe(VIRTQ_DESC_F_INDIRECT);
    expect(top.len).toBe(32);
    expect(desc(mem, top.addr, 0)).toEqual({ addr: BigInt(DATA), len: 8, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    expect(desc(mem, top.addr, 1)).toEqual({ addr: BigInt(DATA + 8), len: 8, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    expect(d.numFree).toBe(7);
    expect(kindOf(() => d.add({ readable: Array(5).fill({ addr: DATA, len: 1 }) }, { indirect: true }))).toBe("InvalidArgument");
  });

  it("batches: entries become visible only at publish()", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const d = DriverQueue.create(mem, 0x1000, 8);
    d.add({ readable: [{ addr: DATA, len: 1 }] }, { publish: false });
    d.add({ readable: [{ addr: DATA, len: 1 }] }, { publish: false });
    expect(mem.load16(d.availRing.value + 2n)).toBe(0);
    d.publish();
    expect(mem.load16(d.availRing.value + 2n)).toBe(2);
  });

  it("runs out of descriptors with QueueFull and rejects bad chains without posting", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const d = DriverQueue.create(mem, 0x1000, 4);
    expect(kindOf(() => d.add({}))).toBe("InvalidArgument");
    expect(kindOf(() => d.add({ readable: [{ addr: DATA, len: -1 }] }))).toBe("InvalidArgument");
    expect(kindOf(() => d.add({ readable: [{ addr: 3 * 1024 * 1024, len: 1 }] }))).toBe("OutOfBounds");
    expect(kindOf(() => d.add({ readable: [{ addr: DATA, len: 1 }] }, { indirect: true }))).toBe("InvalidIndirect");
    d.add({ readable: Array(3).fill({ addr: DATA, len: 1 }) });
    expect(kindOf(() => d.add({ readable: Array(2).fill({ addr: DATA, len: 1 }) }))).toBe("QueueFull");
    d.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(d.numFree).toBe(0);
    expect(mem.load16(d.availRing.value + 2n)).toBe(2);
  });
});

describe("DriverQueue harvesting and notification", () => {
  function deviceReturns(mem: GuestMemory, d: DriverQueue, usedIdx: number, id: number, len: number): void {
    const slot = d.usedRing.value + 4n + 8n * BigInt(usedIdx % d.size);
    mem.store32(slot, id);
    mem.store32(slot + 4n, len);
    mem.store16(d.usedRing.value + 2n, (usedIdx + 1) & 0xffff);
  }

  it("harvests used elements, returns descriptors to the free list, validates device values", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const d = DriverQueue.create<number>(mem, 0x1000, 4);
    const h = d.add({ writable: [{ addr: DATA, len: 64 }, { addr: DATA + 64, len: 64 }] }, { token: 42 });
    expect(d.getUsed()).toBeUndefined();
    deviceReturns(mem, d, 0, h, 100);
    expect(d.hasUsed()).toBe(true);
    expect(d.harvest()).toEqual([{ id: h, len: 100, token: 42 }]);
    expect(d.numFree).toBe(4);
    // an id that is not in flight
    deviceReturns(mem, d, 1, 3, 0);
    expect(kindOf(() => d.getUsed())).toBe("InvalidIndex");
    expect(d.getUsed()).toBeUndefined(); // skipped, not stuck
    // a used idx far ahead
    mem.store16(d.usedRing.value + 2n, 200);
    expect(kindOf(() => d.getUsed())).toBe("InvalidUsedIdx");
  });

  it("needsNotification follows VIRTQ_USED_F_NO_NOTIFY without EVENT_IDX", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const d = DriverQueue.create(mem, 0x1000, 4);
    d.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(d.needsNotification()).toBe(true);
    mem.store16(d.usedRing.value, VIRTQ_USED_F_NO_NOTIFY);
    d.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(d.needsNotification()).toBe(false);
    d.disableInterrupts();
    expect(mem.load16(d.availRing.value)).toBe(VIRTQ_AVAIL_F_NO_INTERRUPT);
    expect(d.enableInterrupts()).toBe(false);
    expect(mem.load16(d.availRing.value)).toBe(0);
  });

  it("needsNotification follows avail_event with EVENT_IDX", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const d = DriverQueue.create(mem, 0x1000, 8, { eventIdx: true });
    const availEvent = d.usedRing.value + 4n + 8n * 8n;
    mem.store16(availEvent, 0); // device wants a kick when entry 0 is published
    d.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(d.needsNotification()).toBe(true);
    d.add({ readable: [{ addr: DATA, len: 1 }] }); // idx 1 -> 2, event still 0: already passed
    expect(d.needsNotification()).toBe(false);
    mem.store16(availEvent, 3); // wake me when idx goes past 3
    d.add({ readable: [{ addr: DATA, len: 1 }] }); // 2 -> 3
    expect(d.needsNotification()).toBe(false);
    d.add({ readable: [{ addr: DATA, len: 1 }] }); // 3 -> 4
    expect(d.needsNotification()).toBe(true);
    // the driver's used_event follows harvesting; disable pushes it far away
    const usedEvent = d.availRing.value + 4n + 2n * 8n;
    d.disableInterrupts();
    expect(mem.load16(usedEvent)).toBe(0x8000);
    d.enableInterrupts();
    expect(mem.load16(usedEvent)).toBe(0);
  });
});

describe("DriverQueue hot path", () => {
  function deviceReturns(mem: GuestMemory, d: DriverQueue, usedIdx: number, id: number, len: number): void {
    const slot = d.usedRing.value + 4n + 8n * BigInt(usedIdx % d.size);
    mem.store32(slot, id);
    mem.store32(slot + 4n, len);
    mem.store16(d.usedRing.value + 2n, (usedIdx + 1) & 0xffff);
  }
  const ringBytes = (mem: GuestMemory, d: DriverQueue) => [
    mem.read(d.descTable.value, 16 * d.size),
    mem.read(d.availRing.value, 6 + 2 * d.size),
  ];

  it("getUsedInto fills a reused slot, reuses freed descriptors and keeps tokens per head", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const d = DriverQueue.create<string>(mem, 0x1000, 4);
    const out = { id: -1, len: -1, token: undefined as string | undefined };
    const chain = { readable: [{ addr: DATA, len: 16 }], writable: [{ addr: DATA + 0x100, len: 32 }] };
    for (let i = 0; i < 10; i++) {
      const a = d.add(chain, { token: `a${i}` });
      const b = d.add({ writable: [{ addr: DATA + 0x200, len: 1 }] }, { token: `b${i}` });
      expect(d.numFree).toBe(1);
      expect(d.getUsedInto(out)).toBe(false);
      deviceReturns(mem, d, 2 * i, b, 1); // out of order
      deviceReturns(mem, d, 2 * i + 1, a, 48);
      expect(d.getUsedInto(out)).toBe(true);
      expect(out).toEqual({ id: b, len: 1, token: `b${i}` });
      expect(d.getUsedInto(out)).toBe(true);
      expect(out).toEqual({ id: a, len: 48, token: `a${i}` });
      expect([d.numFree, d.inFlight]).toEqual([4, 0]);
      // the same head returned twice is refused (its chain is no longer in flight)
    }
    deviceReturns(mem, d, 20, 0, 0);
    expect(kindOf(() => d.getUsedInto(out))).toBe("InvalidIndex");
  });

  it("writes the same bytes in place as through GuestMemory (rings straddling two regions)", () => {
    using mem = GuestMemory.fromRanges(RAM);
    // one queue inside a region (in-place views), one whose descriptor table crosses the 1 MiB boundary
    const inPlace = DriverQueue.create<number>(mem, 0x1000, 16, { indirectMaxEntries: 4, eventIdx: true });
    const straddle = DriverQueue.create<number>(mem, 0x10_0000 - 0x80, 16, { indirectMaxEntries: 4, eventIdx: true });
    const hi = 0x4_0000_0000; // addresses are only written, not checked against memory, when len is 0
    for (const d of [inPlace, straddle]) {
      d.add({ readable: [{ addr: 4 * MIB, len: 8 }, { addr: hi, len: 0 }], writable: [{ addr: 4 * MIB + 8, len: 100 }] }, { token: 1 });
      d.add({ readable: [{ addr: DATA, len: 8 }], writable: [{ addr: 4n * BigInt(MIB), len: 8 }] }, { token: 2, indirect: true });
      d.disableInterrupts();
    }
    const [dA, aA] = ringBytes(mem, inPlace);
    const [dB, aB] = ringBytes(mem, straddle);
    // indirect tables live at different addresses: compare everything but the indirect descriptor's address
    const top = (b: Uint8Array) => new DataView(b.buffer).getBigUint64(16 * 3, true);
    expect([top(dA!), top(dB!)]).toEqual([DriverQueue.layout(0x1000, 16, { indirectMaxEntries: 4 }).indirectTable! + 3n * 4n * 16n, DriverQueue.layout(0x10_0000 - 0x80, 16, { indirectMaxEntries: 4 }).indirectTable! + 3n * 4n * 16n]);
    dA!.fill(0, 48, 56);
    dB!.fill(0, 48, 56);
    expect(dB).toEqual(dA);
    expect(aB).toEqual(aA);
    expect(new DataView(dA!.buffer).getBigUint64(16, true)).toBe(BigInt(hi));
  });

  it("keeps used_event out of the device's reach while interrupts are off (EVENT_IDX)", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const d = DriverQueue.create<number>(mem, 0x1000, 8, { eventIdx: true });
    const usedEvent = d.availRing.value + 4n + 2n * 8n;
    d.disableInterrupts();
    expect(d.interruptsDisabled).toBe(true);
    const out = { id: 0, len: 0, token: undefined as number | undefined };
    // 40,000 completions: a used_event set once would be crossed after 32,768 of them
    let interrupts = 0;
    for (let i = 0; i < 40_000; i++) {
      const h = d.add({ writable: [{ addr: DATA, len: 4 }] }, { token: i });
      const old = i & 0xffff;
      deviceReturns(mem, d, old, h, 4);
      const ev = mem.load16(usedEvent);
      // vring_need_event(used_event, new, old): the device would interrupt
      if (((old + 1 - ev - 1) & 0xffff) < 1) interrupts++;
      if (!d.getUsedInto(out) || out.token !== i) throw new Error(`completion ${i} not harvested`);
    }
    expect(interrupts).toBe(0);
    expect(d.enableInterrupts()).toBe(false);
    expect(mem.load16(usedEvent)).toBe(40_000);
  });
});
