// Packed virtqueues (virtio 1.2 2.8): both sides against each other over memfd-backed guest memory,
// hostile rings, wrap counters over many laps with a size that is not a power of two.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fc, test } from "@fast-check/vitest";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import {
  PackedDriverQueue,
  PackedQueue,
  PvirtqDesc,
  RING_EVENT_FLAGS_DISABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VirtqueueError,
  type PackedQueueOptions,
} from "../src/index.js";
import { DATA, MIB, RAM, errOf, kindOf } from "./helpers.js";

let leaks: { check(): string[] };
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

interface PackedSetup extends Disposable {
  mem: GuestMemory;
  driver: PackedDriverQueue<number>;
  queue: PackedQueue;
}

function setupPacked(size: number, options: { eventIdx?: boolean; indirectMaxEntries?: number } & PackedQueueOptions = {}): PackedSetup {
  const mem = GuestMemory.fromRanges(RAM);
  const driver = PackedDriverQueue.create<number>(mem, 0x1000, size, options);
  const qo: PackedQueueOptions = {};
  if (options.indirect !== undefined) qo.indirect = options.indirect;
  if (options.maxChainLength !== undefined) qo.maxChainLength = options.maxChainLength;
  const queue = new PackedQueue(mem, qo);
  queue.size = size;
  queue.descRing = driver.descRing;
  queue.driverEvent = driver.driverEvent;
  queue.deviceEvent = driver.deviceEvent;
  queue.eventIdx = options.eventIdx ?? false;
  queue.ready = true;
  return { mem, driver, queue, [Symbol.dispose]: () => mem.close() };
}

const AV = VIRTQ_DESC_F_AVAIL;

describe("packed ring", () => {
  it("lays the head out per spec and publishes it last", () => {
    using s = setupPacked(4);
    const id = s.driver.add({ readable: [{ addr: DATA, len: 8 }], writable: [{ addr: DATA + 8, len: 8 }] }, { token: 1 });
    const d0 = s.mem.readObj(s.driver.descRing.value, PvirtqDesc);
    const d1 = s.mem.readObj(s.driver.descRing.value + 16n, PvirtqDesc);
    expect(d0).toEqual({ addr: BigInt(DATA), len: 8, id, flags: AV | VIRTQ_DESC_F_NEXT });
    expect(d1).toEqual({ addr: BigInt(DATA + 8), len: 8, id, flags: AV | VIRTQ_DESC_F_WRITE });
    expect(s.driver.numFree).toBe(2);
  });

  for (const indirect of [false, true]) {
    it(`round trip over many laps of a 5-entry ring (${indirect ? "indirect" : "direct"})`, () => {
      using s = setupPacked(5, { indirectMaxEntries: 4 });
      for (let i = 0; i < 200; i++) {
        const n = 1 + (i % 3);
        s.mem.write(DATA, Uint8Array.of(i & 0xff));
        const readable = [{ addr: DATA, len: 1 }];
        const writable = Array.from({ length: n - 1 }, (_, k) => ({ addr: DATA + 16 * (k + 1), len: 4 }));
        const id = s.driver.add({ readable, writable }, { token: i, indirect });
        expect(s.driver.needsNotification()).toBe(true);
        const c = s.queue.pop()!;
        expect(c.head).toBe(id);
        expect(c.indirect).toBe(indirect);
        expect(c.slots).toBe(indirect ? 1 : n);
        expect(c.readAll()).toEqual(Uint8Array.of(i & 0xff));
        s.queue.addUsed(c, c.writeAll(new Uint8Array(c.writableLength).fill(7)));
        expect(s.queue.pop()).toBeUndefined();
        expect(s.queue.needsNotification()).toBe(true);
        expect(s.driver.harvest()).toEqual([{ id, len: 4 * (n - 1), token: i }]);
      }
      expect(s.driver.numFree).toBe(5);
    });
  }

  it("batches and out-of-order completion", () => {
    using s = setupPacked(6);
    const ids = [0, 1, 2].map((i) => s.driver.add({ writable: [{ addr: DATA, len: 1 }, { addr: DATA + 1, len: 1 }] }, { token: i }));
    expect(kindOf(() => s.driver.add({ readable: [{ addr: DATA, len: 1 }] }))).toBe("QueueFull");
    const chains = [0, 1, 2].map(() => s.queue.pop()!);
    expect(chains.map((c) => c.head)).toEqual(ids);
    for (const c of chains.reverse()) s.queue.addUsed(c, 2);
    expect(s.driver.harvest().map((u) => u.token)).toEqual([2, 1, 0]);
    expect(s.driver.numFree).toBe(6);
  });

  it("vhost-user ring base encoding: wrap counter in bit 15", () => {
    using s = setupPacked(4);
    expect(s.queue.nextAvail).toBe(0x8000);
    for (let i = 0; i < 5; i++) {
      s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
      s.queue.addUsed(s.queue.pop()!, 0);
      s.driver.harvest();
    }
    expect(s.queue.nextAvail).toBe(1); // lap 2: wrap counter 0
    expect(s.queue.nextUsed).toBe(1);
    s.queue.reset();
    expect(s.queue.nextAvail).toBe(0x8000);
  });

  it("notification suppression: flags and EVENT_IDX descriptors", () => {
    using s = setupPacked(8, { eventIdx: true });
    s.queue.disableNotification();
    s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(s.driver.needsNotification()).toBe(false);
    expect(s.queue.enableNotification()).toBe(true); // already one there
    s.queue.addUsed(s.queue.pop()!, 0);
    // device asks for a kick at its next position: the next add needs one, the one after not
    expect(s.queue.enableNotification()).toBe(false);
    s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(s.driver.needsNotification()).toBe(true);
    s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(s.driver.needsNotification()).toBe(false);
    // driver side: interrupts off, then on at the next used entry
    s.driver.disableInterrupts();
    expect(s.mem.load16(s.driver.driverEvent.value + 2n)).toBe(RING_EVENT_FLAGS_DISABLE);
    expect(s.queue.needsNotification()).toBe(false);
    expect(s.driver.enableInterrupts()).toBe(true);
    s.driver.harvest();
    s.queue.addUsed(s.queue.pop()!, 0);
    expect(s.queue.needsNotification()).toBe(true);
    s.queue.addUsed(s.queue.pop()!, 0);
    expect(s.queue.needsNotification()).toBe(false); // driver has not harvested: used_event not moved
    s.driver.harvest();
  });

  it("configuration checks", () => {
    using s = setupPacked(8);
    s.queue.descRing = 0x1008;
    expect(kindOf(() => s.queue.pop())).toBe("InvalidConfig");
    s.queue.descRing = s.driver.descRing;
    s.queue.driverEvent = 0x1002;
    expect(s.queue.isValid()).toBe(false);
    s.queue.driverEvent = s.driver.driverEvent;
    s.queue.size = 0;
    expect(s.queue.isValid()).toBe(false);
    s.queue.size = 8;
    expect(s.queue.isValid()).toBe(true);
    expect(kindOf(() => PackedDriverQueue.create(s.mem, 2 * MIB - 32, 8))).toBe("InvalidConfig");
  });
});

describe("packed ring: malformed chains", () => {
  function post(s: PackedSetup, descs: [addr: number | bigint, len: number, flags: number][], id = 0): void {
    // hostile driver writing slots from the device's current position on lap 1
    const base = s.queue.descRing.value;
    const start = s.queue.nextAvail & 0x7fff;
    descs.forEach(([addr, len, flags], i) =>
      s.mem.writeObj(base + BigInt(((start + i) % s.queue.size) * 16), PvirtqDesc, { addr: BigInt(addr), len, id, flags: flags | AV }),
    );
  }

  it("ReadAfterWrite, OutOfBounds and InvalidIndirect are returned used (len 0) and reported", () => {
    using s = setupPacked(8, { indirect: true });
    const cases: [string, [number | bigint, number, number][]][] = [
      ["ReadAfterWrite", [[DATA, 4, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE], [DATA, 4, 0]]],
      ["OutOfBounds", [[3 * MIB, 4, 0]]],
      ["OutOfBounds", [[0xffff_ffff_ffff_fff0n, 0x20, 0]]],
      ["InvalidIndirect", [[DATA, 24, VIRTQ_DESC_F_INDIRECT]]],
      ["InvalidIndirect", [[DATA, 4, VIRTQ_DESC_F_NEXT], [DATA, 16, VIRTQ_DESC_F_INDIRECT]]],
    ];
    for (const [kind, descs] of cases) {
      const before = s.queue.nextUsed;
      post(s, descs, 3);
      const e = errOf(() => s.queue.pop());
      expect(e?.kind).toBe(kind);
      expect(e?.head).toBe(3);
      // one used entry written, the position advanced by the chain's slots (no wrap within this test)
      expect(s.queue.nextUsed).toBe(before + descs.length);
    }
    // nested indirect
    s.mem.writeObj(BigInt(DATA), PvirtqDesc, { addr: BigInt(DATA), len: 16, id: 0, flags: VIRTQ_DESC_F_INDIRECT });
    post(s, [[DATA, 16, VIRTQ_DESC_F_INDIRECT]], 4);
    expect(kindOf(() => s.queue.pop())).toBe("InvalidIndirect");
  });

  it("ChainTooLong: a chain that never ends, or over maxChainLength", () => {
    using s = setupPacked(4);
    post(s, [[DATA, 1, VIRTQ_DESC_F_NEXT], [DATA, 1, VIRTQ_DESC_F_NEXT], [DATA, 1, VIRTQ_DESC_F_NEXT], [DATA, 1, VIRTQ_DESC_F_NEXT]]);
    expect(kindOf(() => s.queue.pop())).toBe("ChainTooLong");
    using t = setupPacked(8, { maxChainLength: 2 });
    post(t, [[DATA, 1, VIRTQ_DESC_F_NEXT], [DATA, 1, VIRTQ_DESC_F_NEXT], [DATA, 1, 0]]);
    expect(kindOf(() => t.queue.pop())).toBe("ChainTooLong");
  });

  it("descriptors of the wrong lap are not available", () => {
    using s = setupPacked(4);
    s.mem.writeObj(s.queue.descRing.value, PvirtqDesc, { addr: BigInt(DATA), len: 1, id: 0, flags: VIRTQ_DESC_F_USED });
    expect(s.queue.pop()).toBeUndefined();
    s.mem.writeObj(s.queue.descRing.value, PvirtqDesc, { addr: BigInt(DATA), len: 1, id: 0, flags: AV | VIRTQ_DESC_F_USED });
    expect(s.queue.pop()).toBeUndefined();
  });
});

describe("packed ring: properties", () => {
  test.prop(
    [
      fc.integer({ min: 1, max: 9 }),
      fc.array(
        fc.record({ r: fc.integer({ min: 0, max: 3 }), w: fc.integer({ min: 0, max: 3 }), indirect: fc.boolean(), hold: fc.boolean() }),
        { minLength: 1, maxLength: 60 },
      ),
    ],
    { numRuns: 60 },
  )(
    "random chains on random ring sizes survive a round trip, in flight or not",
    (size, chains) => {
      using s = setupPacked(size, { indirectMaxEntries: 6, eventIdx: true });
      const held: { head: number; slots: number; token: number; writable: number }[] = [];
      const expected = new Map<number, number>();
      let token = 0;
      for (const c of chains) {
        const n = c.r + c.w;
        if (n === 0) continue;
        const readable = Array.from({ length: c.r }, (_, k) => ({ addr: DATA + k * 8, len: 8 }));
        const writable = Array.from({ length: c.w }, (_, k) => ({ addr: DATA + 0x100 + k * 8, len: 8 }));
        const slots = c.indirect ? 1 : n;
        if (s.driver.numFree < slots) {
          expect(kindOf(() => s.driver.add({ readable, writable }, { indirect: c.indirect }))).toBe("QueueFull");
        } else {
          const t = token++;
          s.driver.add({ readable, writable }, { indirect: c.indirect, token: t });
          const chain = s.queue.pop()!;
          expect(chain.slots).toBe(slots);
          expect(chain.readableLength).toBe(8 * c.r);
          expect(chain.writableLength).toBe(8 * c.w);
          held.push({ head: chain.head, slots: chain.slots, token: t, writable: chain.writableLength });
        }
        // return some (or all, when the ring is full) of what the device holds, oldest first
        while (held.length > 0 && (!c.hold || s.driver.numFree === 0)) {
          const h = held.shift()!;
          s.queue.addUsed(h, h.writable);
          expected.set(h.token, h.writable);
        }
        for (const u of s.driver.harvest()) {
          expect(expected.get(u.token!)).toBe(u.len);
          expected.delete(u.token!);
        }
      }
      for (const h of held) s.queue.addUsed(h, h.writable);
      s.driver.harvest();
      expect(s.driver.numFree).toBe(size);
      expect(s.queue.pop()).toBeUndefined();
    },
    60_000,
  );

  const descArb = fc.record({
    addr: fc.oneof(fc.integer({ min: 0, max: 5 * MIB }).map(BigInt), fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn })),
    len: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constantFrom(16, 32, 0xffff_ffff), fc.nat({ max: 0xffff_ffff })),
    id: fc.integer({ min: 0, max: 0xffff }),
    flags: fc.integer({ min: 0, max: 0xffff }),
  });
  test.prop([fc.array(descArb, { minLength: 8, maxLength: 8 }), fc.array(descArb, { minLength: 4, maxLength: 4 })], { numRuns: 200 })(
    "garbage rings only ever produce VirtqueueError and in-bounds chains",
    (ring, table) => {
      using s = setupPacked(8);
      ring.forEach((d, i) => s.mem.writeObj(s.queue.descRing.value + BigInt(16 * i), PvirtqDesc, d));
      table.forEach((d, i) => s.mem.writeObj(BigInt(DATA + 16 * i), PvirtqDesc, d));
      for (let i = 0; i < 20; i++) {
        let chain;
        try {
          chain = s.queue.pop();
        } catch (e) {
          if (!(e instanceof VirtqueueError)) throw e;
          if (e.kind === "ChainTooLong" && s.queue.nextUsed === 0x8000) break;
          continue;
        }
        if (!chain) break;
        for (const d of chain.descriptors) if (d.len > 0) expect(s.mem.checkRange(d.addr, d.len)).toBe(true);
        chain.readAll();
        s.queue.addUsed(chain, 0);
      }
    },
    60_000,
  );
});
