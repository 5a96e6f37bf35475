// Queue.chainAt / walkChain (a chain by head, outside the avail ring: vhost-user inflight resubmission), and
// the two ways Queue reads its rings: in place through views of a region mapped up front (the hot path),
// and through GuestMemory calls when a ring part straddles two regions. Both must produce the same chains
// and the same errors.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VirtqDesc, walkChain, type ChainSpec, type DescriptorChain } from "../src/index.js";
import { MIB, errOf, setup, type Setup } from "./helpers.js";

let leaks: { check(): string[] };
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

const BUF = 0x18_0000;
const blk: ChainSpec = {
  readable: [{ addr: BUF, len: 16 }],
  writable: [
    { addr: BUF + 0x1000, len: 4096 },
    { addr: BUF + 0x3000, len: 1 },
  ],
};
const plain = (c: DescriptorChain | undefined) => c && { head: c.head, indirect: c.indirect, descs: c.descriptors.map((d) => [d.addr, d.len, d.flags]) };

function roundTrip(s: Setup): unknown[] {
  const out: unknown[] = [];
  s.mem.write(BUF, Uint8Array.from({ length: 16 }, (_, i) => i));
  for (const indirect of [false, true, false, true]) {
    const head = s.driver.add(blk, { indirect });
    expect(s.queue.hasAvailable()).toBe(true);
    const c = s.queue.pop();
    expect(c?.head).toBe(head);
    expect(Array.from(c!.readAll())).toEqual(Array.from({ length: 16 }, (_, i) => i));
    s.queue.addUsed(c!.head, c!.writeAll(new Uint8Array(4097).fill(7)));
    expect(s.queue.usedIdx()).toBe(s.queue.nextUsed);
    out.push(plain(c), s.queue.needsNotification(), s.queue.enableNotification());
    s.queue.disableNotification();
    expect(s.driver.harvest()).toEqual([expect.objectContaining({ id: head, len: 4097 })]);
  }
  // a malformed chain: readable after writable, consumed and reported with its head
  const table = s.queue.descTable.value;
  s.mem.writeObj(table, VirtqDesc, { addr: BigInt(BUF), len: 4, flags: VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, next: 1 });
  s.mem.writeObj(table + 16n, VirtqDesc, { addr: BigInt(BUF), len: 4, flags: 0, next: 0 });
  const a = s.queue.availRing.value;
  const idx = s.mem.load16(a + 2n);
  s.mem.store16(a + 4n + 2n * BigInt(idx % s.queue.size), 0);
  s.mem.store16(a + 2n, (idx + 1) & 0xffff);
  const e = errOf(() => s.queue.pop());
  out.push(e?.kind, e?.head, s.queue.pop());
  return out;
}

describe("in-place ring views and the GuestMemory path", () => {
  it("rings straddling two regions give the same chains, used entries, notifications and errors", () => {
    using inPlace = setup(16, { eventIdx: true, indirectMaxEntries: 4 });
    using across = setup(16, { eventIdx: true, indirectMaxEntries: 4, ringBase: MIB - 0x80 }); // desc table crosses 1 MiB
    const a = roundTrip(inPlace);
    expect(a).toContain("ReadAfterWrite");
    expect(roundTrip(across)).toEqual(a);
  });

  it("a closed memory is reported as GuestMemory, not read through stale views", () => {
    using s = setup(8);
    s.driver.add(blk);
    expect(s.queue.hasAvailable()).toBe(true);
    s.mem.close();
    expect(errOf(() => s.queue.pop())?.kind).toBe("GuestMemory");
    expect(errOf(() => s.queue.addUsed(0, 0))?.kind).toBe("GuestMemory");
  });
});

describe("Queue.chainAt and walkChain", () => {
  it("walks a chain by head without consuming the avail ring", () => {
    using s = setup(8, { indirectMaxEntries: 4 });
    const h1 = s.driver.add(blk);
    const h2 = s.driver.add(blk, { indirect: true });
    const at1 = s.queue.chainAt(h1);
    const at2 = s.queue.chainAt(h2);
    expect(s.queue.nextAvail).toBe(0);
    expect(plain(at1)).toEqual(plain(s.queue.pop()));
    expect(plain(at2)).toEqual(plain(s.queue.pop()));
    expect(at2.indirect).toBe(true);
    expect(at1.writableLength).toBe(4097);
    // walkChain: the same walk for code without a configured Queue
    expect(plain(walkChain(s.mem, s.queue.descTable, 8, h2))).toEqual(plain(at2));
    expect(errOf(() => walkChain(s.mem, s.queue.descTable, 8, h2, { indirect: false }))?.kind).toBe("InvalidIndirect");
    expect(errOf(() => walkChain(s.mem, s.queue.descTable, 8, h1, { maxChainLength: 2 }))?.kind).toBe("ChainTooLong");
    expect(() => walkChain(s.mem, s.queue.descTable, 0, 0)).toThrow(RangeError);
  });

  it("rejects bad heads and malformed chains with errors carrying the head", () => {
    using s = setup(8);
    for (const head of [8, -1, 1.5, 0x10000]) {
      const e = errOf(() => s.queue.chainAt(head));
      expect(e?.kind).toBe("InvalidIndex");
      expect(e?.head).toBe(head);
    }
    const table = s.queue.descTable.value;
    s.mem.writeObj(table + 48n, VirtqDesc, { addr: BigInt(BUF), len: 4, flags: VIRTQ_DESC_F_NEXT, next: 3 });
    const e = errOf(() => s.queue.chainAt(3));
    expect([e?.kind, e?.head]).toEqual(["DescriptorLoop", 3]);
    s.mem.writeObj(table + 48n, VirtqDesc, { addr: BigInt(6 * MIB), len: 4, flags: 0, next: 0 });
    expect(errOf(() => s.queue.chainAt(3))?.kind).toBe("OutOfBounds");
    s.queue.ready = false;
    expect(errOf(() => s.queue.chainAt(3))?.kind).toBe("InvalidConfig");
  });
});
