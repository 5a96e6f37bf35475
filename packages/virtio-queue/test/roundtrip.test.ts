// Both sides against each other through real memfd-backed guest memory: the driver posts, the device pops,
// copies, returns used entries, the driver harvests.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { DATA, MIB, setup } from "./helpers.js";

let leaks: { check(): string[] };
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  expect(leaks.check()).toEqual([]);
});

const enc = new TextEncoder();
const dec = new TextDecoder();

describe("driver <-> device round trip", () => {
  for (const indirect of [false, true]) {
    it(`request/response chain (${indirect ? "indirect" : "direct"})`, () => {
      using s = setup<string>(16, { indirectMaxEntries: 8 });
      const req = enc.encode("GET /hello");
      s.mem.write(DATA, req.subarray(0, 4));
      s.mem.write(4 * MIB, req.subarray(4)); // second buffer in another region
      const head = s.driver.add(
        {
          readable: [
            { addr: DATA, len: 4 },
            { addr: 4 * MIB, len: req.length - 4 },
          ],
          writable: [
            { addr: DATA + 0x1000, len: 5 },
            { addr: DATA + 0x2000, len: 64 },
          ],
        },
        { token: "req-1", indirect },
      );
      expect(s.driver.needsNotification()).toBe(true);
      const chain = s.queue.pop()!;
      expect(chain.head).toBe(head);
      expect(chain.indirect).toBe(indirect);
      expect(chain.readable.map((d) => d.len)).toEqual([4, req.length - 4]);
      expect(chain.writableLength).toBe(69);
      expect(dec.decode(chain.readAll())).toBe("GET /hello");
      const n = chain.writeAll(enc.encode("200 OK: hello world"));
      expect(n).toBe(19);
      s.queue.addUsed(chain.head, n);
      expect(s.queue.pop()).toBeUndefined();
      expect(s.queue.needsNotification()).toBe(true);
      const used = s.driver.harvest();
      expect(used).toEqual([{ id: head, len: 19, token: "req-1" }]);
      expect(dec.decode(s.mem.read(DATA + 0x1000, 5)) + dec.decode(s.mem.read(DATA + 0x2000, 14))).toBe("200 OK: hello world");
      expect(s.driver.numFree).toBe(16);
    });
  }

  it("out-of-order completion and free-list reuse", () => {
    using s = setup<number>(4);
    const heads = [0, 1, 2, 3].map((i) => s.driver.add({ writable: [{ addr: DATA + i * 16, len: 16 }] }, { token: i }));
    expect(s.driver.numFree).toBe(0);
    const chains = [0, 1, 2, 3].map(() => s.queue.pop()!);
    expect(chains.map((c) => c.head)).toEqual(heads);
    for (const c of [...chains].reverse()) s.queue.addUsed(c.head, 1);
    expect(s.driver.harvest().map((u) => u.token)).toEqual([3, 2, 1, 0]);
    expect(s.driver.numFree).toBe(4);
    // a 4-descriptor chain fits again after the free list was rebuilt in reverse
    s.driver.add({ readable: [1, 2, 3, 4].map((i) => ({ addr: DATA, len: i })) });
    expect(s.queue.pop()!.descriptors.map((d) => d.len)).toEqual([1, 2, 3, 4]);
  });

  for (const eventIdx of [false, true]) {
    it(`16-bit index wrap-around from a start index (eventIdx=${eventIdx})`, () => {
      using s = setup<number>(8, { startIndex: 0xfffa, eventIdx });
      let harvested = 0;
      for (let i = 0; i < 40; i++) {
        s.driver.add({ readable: [{ addr: DATA, len: 4 }] }, { token: i });
        const c = s.queue.pop()!;
        s.queue.addUsed(c.head, i);
        const [u] = s.driver.harvest();
        expect(u).toMatchObject({ token: i, len: i });
        harvested++;
      }
      expect(harvested).toBe(40);
      expect(s.queue.nextAvail).toBe((0xfffa + 40) & 0xffff);
      expect(s.driver.lastUsed).toBe((0xfffa + 40) & 0xffff);
      expect(s.queue.usedIdx()).toBe((0xfffa + 40) & 0xffff);
    });
  }

  it("wraps naturally past 65536 entries with batches", () => {
    using s = setup<number>(256, { eventIdx: true });
    let sent = 0;
    let got = 0;
    let kicks = 0;
    let irqs = 0;
    while (got < 70_000) {
      for (let i = 0; i < 32; i++) s.driver.add({ readable: [{ addr: DATA, len: 8 }], writable: [{ addr: DATA + 8, len: 8 }] }, { token: sent++, publish: false });
      if (s.driver.needsNotification()) kicks++;
      for (;;) {
        const c = s.queue.pop();
        if (!c) break;
        s.queue.addUsed(c.head, 8, { publish: false });
      }
      s.queue.publishUsed();
      if (s.queue.needsNotification()) irqs++;
      for (const u of s.driver.harvest()) expect(u.token).toBe(got++);
      s.queue.enableNotification();
    }
    expect(s.driver.numFree).toBe(256);
    expect(kicks).toBeGreaterThan(0);
    expect(irqs).toBeGreaterThan(0);
  }, 60_000);

  it("notification suppression end to end without EVENT_IDX", () => {
    using s = setup(8);
    s.queue.disableNotification();
    s.driver.add({ readable: [{ addr: DATA, len: 1 }] });
    expect(s.driver.needsNotification()).toBe(false);
    const c = s.queue.pop()!;
    s.driver.disableInterrupts();
    s.queue.addUsed(c.head, 0);
    expect(s.queue.needsNotification()).toBe(false);
    expect(s.driver.enableInterrupts()).toBe(true); // entry already there: harvest without waiting
    expect(s.driver.harvest()).toHaveLength(1);
  });
});
