import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Queue } from "./queue.js";
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  VirtqDesc,
} from "./defs.js";
import { DATA, RAM, errOf, kindOf, setup, type Setup } from "../test/helpers.js";

let leaks: { check(): string[] };
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

const N = VIRTQ_DESC_F_NEXT;
const W = VIRTQ_DESC_F_WRITE;
const I = VIRTQ_DESC_F_INDIRECT;

/** Writes raw descriptors (as a hostile driver would) into a table. */
function writeDescs(s: Setup, table: bigint | number, descs: [addr: number | bigint, len: number, flags: number, next: number][]): void {
  descs.forEach(([addr, len, flags, next], i) =>
    s.mem.writeObj(BigInt(table) + BigInt(i * 16), VirtqDesc, { addr: BigInt(addr), len, flags, next }),
  );
}

/** Publishes `head` in the avail ring by hand. */
function postHead(s: Setup, head: number): void {
  const a = s.queue.availRing.value;
  const idx = s.mem.load16(a + 2n);
  s.mem.store16(a + 4n + 2n * BigInt(idx % s.queue.size), head);
  s.mem.store16(a + 2n, (idx + 1) & 0xffff);
}

describe("Queue configuration", () => {
  it("validates size, alignment, ready and placement", () => {
    using mem = GuestMemory.fromRanges(RAM);
    const q = new Queue(mem, { maxSize: 256 });
    expect(q.isValid()).toBe(false); // not ready
    q.size = 16;
    q.descTable = 0x1000;
    q.availRing = 0x2000;
    q.usedRing = 0x3000;
    expect(kindOf(() => q.validate())).toBe("InvalidConfig");
    q.ready = true;
    expect(q.isValid()).toBe(true);
    for (const [set, undo] of [
      [() => (q.size = 24), () => (q.size = 16)],
      [() => (q.size = 512), () => (q.size = 16)],
      [() => (q.size = 0), () => (q.size = 16)],
      [() => (q.descTable = 0x1008), () => (q.descTable = 0x1000)],
      [() => (q.availRing = 0x2001), () => (q.availRing = 0x2000)],
      [() => (q.usedRing = 0x3002), () => (q.usedRing = 0x3000)],
      [() => (q.usedRing = 2 * 1024 * 1024 - 16), () => (q.usedRing = 0x3000)],
      [() => (q.descTable = 2n ** 62n), () => (q.descTable = 0x1000)],
    ] as const) {
      set();
      expect(q.isValid()).toBe(false);
      expect(kindOf(() => q.pop())).toBe("InvalidConfig");
      undo();
      expect(q.isValid()).toBe(true);
    }
    expect(() => (q.size = 70000)).toThrow(RangeError);
    expect(() => (q.nextAvail = 0x10000)).toThrow(RangeError);
    expect(() => new Queue(mem, { maxSize: 100 })).toThrow(RangeError);
  });

  it("nextAvail/nextUsed get/set and reset (vhost-user GET/SET_VRING_BASE)", () => {
    using s = setup(8);
    s.queue.nextAvail = 5;
    s.queue.nextUsed = 7;
    expect([s.queue.nextAvail, s.queue.nextUsed]).toEqual([5, 7]);
    s.queue.reset();
    expect([s.queue.nextAvail, s.queue.nextUsed, s.queue.ready, s.queue.size]).toEqual([0, 0, false, 32768]);
  });

  it("follows a memory replacement and refuses closed memory with a typed error", () => {
    using s = setup(8);
    s.driver.add({ readable: [{ addr: DATA, len: 4 }] });
    const other = GuestMemory.fromRanges([[0, 4096]]);
    s.queue.memory = other;
    expect(kindOf(() => s.queue.pop())).toBe("InvalidConfig"); // rings not inside the new memory
    other.close();
    s.queue.memory = s.mem;
    expect(s.queue.pop()?.readableLength).toBe(4);
    s.mem.close();
    expect(kindOf(() => s.queue.pop())).toBe("GuestMemory");
    s.queue.memory = s.mem;
    expect(kindOf(() => s.queue.pop())).toBe("GuestMemory"); // revalidation reads closed memory
  });
});

describe("malformed chains: every error kind", () => {
  it("InvalidIndex: head outside the table", () => {
    using s = setup(8);
    postHead(s, 8);
    const e = errOf(() => s.queue.pop());
    expect(e?.kind).toBe("InvalidIndex");
    expect(e?.head).toBe(8);
    expect(s.queue.pop()).toBeUndefined(); // consumed, not stuck
  });

  it("InvalidIndex: next outside the table (direct and indirect)", () => {
    using s = setup(8);
    writeDescs(s, s.queue.descTable.value, [[DATA, 4, N, 9]]);
    postHead(s, 0);
    expect(kindOf(() => s.queue.pop())).toBe("InvalidIndex");
    const table = DATA + 0x1000;
    writeDescs(s, table, [[DATA, 4, N, 2], [DATA, 4, 0, 0]]);
    writeDescs(s, s.queue.descTable.value, [[table, 32, I, 0]]);
    postHead(s, 0);
    expect(kindOf(() => s.queue.pop())).toBe("InvalidIndex");
  });

  it("DescriptorLoop: a chain that comes back (direct and in an indirect table)", () => {
    using s = setup(8);
    writeDescs(s, s.queue.descTable.value, [[DATA, 4, N, 1], [DATA, 4, N, 2], [DATA, 4, N, 0]]);
    postHead(s, 0);
    expect(kindOf(() => s.queue.pop())).toBe("DescriptorLoop");
    writeDescs(s, s.queue.descTable.value, [[DATA, 4, N, 0]]);
    postHead(s, 0);
    expect(kindOf(() => s.queue.pop())).toBe("DescriptorLoop");
    const table = DATA + 0x1000;
    writeDescs(s, table, [[DATA, 4, N, 1], [DATA, 4, N, 0]]);
    writeDescs(s, s.queue.descTable.value, [[table, 32, I, 0]]);
    postHead(s, 0);
    expect(kindOf(() => s.queue.pop())).toBe("DescriptorLoop");
  });

  it("ChainTooLong: an indirect table longer than the limit, or a direct chain over maxChainLength", () => {
    using s = setup(8);
    const table = DATA + 0x1000;
    writeDescs(s, s.queue.descTable.value, [[table, 1025 * 16, I, 0]]);
    postHead(s, 0);
    expect(kindOf(() => s.queue.pop())).toBe("ChainTooLong");
    using t = setup(8, { maxChainLength: 2 });
    writeDescs(t, t.queue.descTable.value, [[DATA, 1, N, 1], [DATA, 1, N, 2], [DATA, 1, 0, 0]]);
    postHead(t, 0);
    expect(kindOf(() => t.queue.pop())).toBe("ChainTooLong");
  });

  it("InvalidIndirect: bad length, nested, with NEXT, or not negotiated", () => {
    using s = setup(8);
    const table = DATA + 0x1000;
    const dt = s.queue.descTable.value;
    for (const bad of [
      [[table, 0, I, 0]],
      [[table, 24, I, 0]],
      [[table, 16, I | N, 1], [DATA, 1, 0, 0]],
    ] as [number, number, number, number][][]) {
      writeDescs(s, dt, bad);
      postHead(s, 0);
      expect(kindOf(() => s.queue.pop())).toBe("InvalidIndirect");
    }
    writeDescs(s, table, [[table + 0x100, 16, I, 0]]);
    writeDescs(s, dt, [[table, 16, I, 0]]);
    postHead(s, 0);
    expect(kindOf(() => s.queue.pop())).toBe("InvalidIndirect");
    s.queue.indirect = false;
    writeDescs(s, table, [[DATA, 1, 0, 0]]);
    postHead(s, 0);
    expect(kindOf(() => s.queue.pop())).toBe("InvalidIndirect");
    s.queue.indirect = true;
    postHead(s, 0);
    expect(s.queue.pop()?.indirect).toBe(true);
  });

  it("ReadAfterWrite: a readable buffer after a writable one", () => {
    using s = setup(8);
    writeDescs(s, s.queue.descTable.value, [[DATA, 4, N | W, 1], [DATA, 4, 0, 0]]);
    postHead(s, 0);
    expect(kindOf(() => s.queue.pop())).toBe("ReadAfterWrite");
  });

  it("OutOfBounds: buffers or tables outside guest memory, in a hole, or wrapping 2^64", () => {
    using s = setup(8);
    const dt = s.queue.descTable.value;
    for (const [addr, len] of [
      [3 * 1024 * 1024, 1], // the hole
      [2 * 1024 * 1024 - 4, 8], // runs into the hole
      [5 * 1024 * 1024, 1], // past the end
      [0xffff_ffff_ffff_fff0n, 0x20], // wraps
      [2n ** 60n, 16],
    ] as [number | bigint, number][]) {
      writeDescs(s, dt, [[addr, len, 0, 0]]);
      postHead(s, 0);
      expect(kindOf(() => s.queue.pop())).toBe("OutOfBounds");
      writeDescs(s, dt, [[addr, len * 16, I, 0]]);
      postHead(s, 0);
      expect(kindOf(() => s.queue.pop())).toBe("OutOfBounds");
    }
    // a zero-length buffer anywhere is harmless
    writeDescs(s, dt, [[2n ** 63n, 0, 0, 0]]);
    postHead(s, 0);
    expect(s.queue.pop()?.descriptors).toHaveLength(1);
    // adjacent regions together are fine
    writeDescs(s, dt, [[1024 * 1024 - 8, 16, 0, 0]]);
    postHead(s, 0);
    expect(s.queue.pop()?.readableLength).toBe(16);
  });

  it("InvalidAvailIdx: the driver's index jumps beyond the queue size (nothing consumed)", () => {
    using s = setup(8);
    s.mem.store16(s.queue.availRing.value + 2n, 9);
    expect(kindOf(() => s.queue.pop())).toBe("InvalidAvailIdx");
    expect(s.queue.nextAvail).toBe(0);
  });

  it("addUsed rejects an id outside the table", () => {
    using s = setup(8);
    expect(kindOf(() => s.queue.addUsed(8, 0))).toBe("InvalidIndex");
    expect(() => s.queue.addUsed(0, -1)).toThrow(RangeError);
  });
});

describe("device notification state", () => {
  it("without EVENT_IDX: NO_INTERRUPT and NO_NOTIFY flags", () => {
    using s = setup(8);
    const h = s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
    s.queue.pop();
    s.queue.addUsed(h, 0);
    expect(s.queue.needsNotification()).toBe(true);
    s.mem.store16(s.queue.availRing.value, VIRTQ_AVAIL_F_NO_INTERRUPT);
    expect(s.queue.needsNotification()).toBe(false);
    s.queue.disableNotification();
    expect(s.mem.load16(s.queue.usedRing.value)).toBe(VIRTQ_USED_F_NO_NOTIFY);
    expect(s.driver.needsNotification()).toBe(false);
    expect(s.queue.enableNotification()).toBe(false);
    expect(s.mem.load16(s.queue.usedRing.value)).toBe(0);
    s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(s.driver.needsNotification()).toBe(true);
    s.queue.disableNotification();
    expect(s.queue.enableNotification()).toBe(true); // a chain is pending
  });

  it("with EVENT_IDX: used_event decides interrupts, avail_event decides kicks", () => {
    using s = setup(8, { eventIdx: true });
    const usedEvent = s.queue.availRing.value + 4n + 16n;
    const availEvent = s.queue.usedRing.value + 4n + 64n;
    // first check always notifies
    const h1 = s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(s.queue.enableNotification()).toBe(true);
    expect(s.mem.load16(availEvent)).toBe(0);
    s.queue.pop();
    s.queue.addUsed(h1, 0);
    expect(s.queue.needsNotification()).toBe(true);
    // driver asks to be interrupted only once used idx passes 3
    s.mem.store16(usedEvent, 3);
    for (let i = 0; i < 3; i++) {
      const h = s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
      s.queue.pop();
      s.queue.addUsed(h, 0);
      expect(s.queue.needsNotification()).toBe(i === 2); // used idx 2, 3, 4: passes 3 at 4
    }
    // device asks for a kick at the next entry
    s.queue.enableNotification();
    expect(s.mem.load16(availEvent)).toBe(4);
    s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(s.driver.needsNotification()).toBe(true);
    s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(s.driver.needsNotification()).toBe(false);
  });
});
