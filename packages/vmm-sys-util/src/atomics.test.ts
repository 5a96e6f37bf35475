import { describe, expect, it } from "vitest";
import { AtomicAccess, fence } from "./atomics.js";
import { MemoryMapping } from "./mmap.js";

describe("AtomicAccess", () => {
  it("loads and stores every width on a mapping, little-endian", () => {
    using m = new MemoryMapping(4096);
    const a = new AtomicAccess(m.buffer);
    a.store16(2, 0xbeef);
    a.store32(4, 0xdeadbeef);
    a.store64(8, 0x0102030405060708n);
    a.store8(1, 0x7f);
    fence();
    const b = new Uint8Array(m.buffer);
    expect([...b.subarray(0, 16)]).toEqual([0, 0x7f, 0xef, 0xbe, 0xef, 0xbe, 0xad, 0xde, 8, 7, 6, 5, 4, 3, 2, 1]);
    expect(a.load16(2)).toBe(0xbeef);
    expect(a.load32(4)).toBe(0xdeadbeef);
    expect(a.load64(8)).toBe(0x0102030405060708n);
    expect(a.compareExchange8(1, 0x7f, 2)).toBe(0x7f);
    expect(a.load8(1)).toBe(2);
  });

  it("rejects unaligned and out-of-range offsets", () => {
    using m = new MemoryMapping(4096);
    const a = new AtomicAccess(m.buffer, 8, 64);
    expect(() => a.load16(1)).toThrow(/not 2-byte aligned/);
    expect(() => a.store32(62, 0)).toThrow(RangeError);
    expect(() => a.load64(64)).toThrow(RangeError);
    expect(() => new AtomicAccess(m.buffer, 4)).toThrow(RangeError);
  });

  it("a view over an unmapped buffer fails safely instead of crashing", () => {
    const m = new MemoryMapping(4096);
    const a = new AtomicAccess(m.buffer);
    m.close();
    expect(() => a.load16(0)).toThrow(RangeError);
  });
});
