// Property tests: random well-formed chains survive a round trip exactly; random garbage in the rings never
// makes the device throw anything but VirtqueueError, and every chain it accepts lies in guest memory.
import { describe, expect } from "vitest";
import { fc, test } from "@fast-check/vitest";
import { VirtqueueError, VirtqDesc } from "../src/index.js";
import { DATA, MIB, setup } from "./helpers.js";

const chainArb = fc.record({
  readable: fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 4 }),
  writable: fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 4 }),
  indirect: fc.boolean(),
  seed: fc.integer({ min: 0, max: 255 }),
});

describe("properties", () => {
  test.prop([fc.array(chainArb, { minLength: 1, maxLength: 40 }), fc.boolean(), fc.integer({ min: 0, max: 0xffff })], { numRuns: 60 })(
    "random chains survive a round trip",
    (chains, eventIdx, startIndex) => {
      using s = setup<number>(16, { eventIdx, startIndex, indirectMaxEntries: 8 });
      let next = DATA;
      const alloc = (len: number) => {
        // wrap around before the hole; one chain at a time is in flight, so reuse cannot clobber it
        if (next + len + 8 > 2 * MIB) next = DATA;
        const a = next;
        next += len + 8;
        return a;
      };
      let done = 0;
      for (const [i, c] of chains.entries()) {
        if (c.readable.length + c.writable.length === 0) continue;
        const readable = c.readable.map((len, j) => {
          const addr = alloc(len);
          s.mem.write(addr, Uint8Array.from({ length: len }, (_, k) => (k + j + c.seed) & 0xff));
          return { addr, len };
        });
        const writable = c.writable.map((len) => ({ addr: alloc(len), len }));
        const indirect = c.indirect && readable.length + writable.length <= 8;
        if (!indirect && s.driver.numFree < readable.length + writable.length) {
          expect(() => s.driver.add({ readable, writable })).toThrow(VirtqueueError);
          continue;
        }
        const head = s.driver.add({ readable, writable }, { token: i, indirect });
        const chain = s.queue.pop()!;
        expect(chain.head).toBe(head);
        expect(chain.descriptors.map((d) => [Number(d.addr), d.len, d.isWriteOnly])).toEqual([
          ...readable.map((b) => [b.addr, b.len, false]),
          ...writable.map((b) => [b.addr, b.len, true]),
        ]);
        const expected = new Uint8Array(chain.readableLength);
        let at = 0;
        for (const [j, b] of readable.entries()) {
          for (let k = 0; k < b.len; k++) expected[at + k] = (k + j + c.seed) & 0xff;
          at += b.len;
        }
        expect(chain.readAll()).toEqual(expected);
        const written = chain.writeAll(new Uint8Array(chain.writableLength).fill(c.seed));
        s.queue.addUsed(chain.head, written);
        const used = s.driver.harvest();
        expect(used).toEqual([{ id: head, len: chain.writableLength, token: i }]);
        for (const b of writable) expect(s.mem.read(b.addr, b.len).every((x) => x === c.seed)).toBe(true);
        done++;
      }
      expect(s.driver.numFree).toBe(16);
      expect(s.queue.nextUsed).toBe((startIndex + done) & 0xffff);
    },
    60_000, // generous: CI machines are shared
  );

  // Addresses biased towards the interesting places: inside RAM, at region edges, in the hole, beyond, huge.
  const addrArb = fc.oneof(
    fc.integer({ min: 0, max: 5 * MIB }).map(BigInt),
    fc.constantFrom(0n, BigInt(MIB - 8), BigInt(2 * MIB - 8), BigInt(3 * MIB), BigInt(5 * MIB - 16), BigInt(DATA)),
    fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }),
  );
  const descArb = fc.record({
    addr: addrArb,
    len: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.constantFrom(16, 32, 48, 0xffff_ffff, 1025 * 16), fc.nat({ max: 0xffff_ffff })),
    flags: fc.integer({ min: 0, max: 0xffff }).map((f) => (f & 0x10 ? f : f & 7)),
    next: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 0xffff })),
  });

  test.prop(
    [
      fc.array(descArb, { minLength: 16, maxLength: 16 }),
      fc.array(descArb, { minLength: 8, maxLength: 8 }),
      fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 16, maxLength: 16 }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.boolean(),
    ],
    { numRuns: 300 },
  )("garbage rings only ever produce VirtqueueError and in-bounds chains", (table, indirectTable, ring, availIdx, indirectOn) => {
    using s = setup(16, { indirect: indirectOn });
    const dt = s.queue.descTable.value;
    table.forEach((d, i) => s.mem.writeObj(dt + BigInt(16 * i), VirtqDesc, d));
    // a plausible indirect table at DATA, so garbage chains do reach indirect walking
    indirectTable.forEach((d, i) => s.mem.writeObj(BigInt(DATA + 16 * i), VirtqDesc, d));
    const av = s.queue.availRing.value;
    ring.forEach((h, i) => s.mem.store16(av + 4n + 2n * BigInt(i), h));
    s.mem.store16(av + 2n, availIdx);
    for (let i = 0; i < 20; i++) {
      let chain;
      try {
        chain = s.queue.pop();
      } catch (e) {
        expect(e).toBeInstanceOf(VirtqueueError);
        if (!(e instanceof VirtqueueError)) throw e;
        if (e.kind === "InvalidAvailIdx") break;
        expect(e.head).toBeTypeOf("number");
        continue;
      }
      if (!chain) break;
      expect(chain.descriptors.length).toBeGreaterThan(0);
      let seenWrite = false;
      for (const d of chain.descriptors) {
        if (d.len > 0) expect(s.mem.checkRange(d.addr, d.len)).toBe(true);
        if (d.isWriteOnly) seenWrite = true;
        else expect(seenWrite).toBe(false);
      }
      // copying through the chain stays in bounds too
      chain.readAll();
      chain.writeAll(new Uint8Array(Math.min(chain.writableLength, 4096)));
      s.queue.addUsed(chain.head, 0);
    }
  }, 60_000);
});
