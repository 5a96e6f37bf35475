import { describe, expect, it } from "vitest";
import { fc, test as fcTest } from "@fast-check/vitest";
import { ExtentPool, type Extent } from "./pool.js";

describe("ExtentPool", () => {
  it("allocates aligned extents, refuses when full, coalesces on free", () => {
    const p = new ExtentPool(4096, 512);
    const a = p.alloc(100)!;
    const b = p.alloc(1000)!;
    expect(a).toEqual({ offset: 0, len: 512 });
    expect(b).toEqual({ offset: 512, len: 1024 });
    expect(p.alloc(4096)).toBeUndefined();
    p.free(a);
    p.free(b);
    expect(p.used).toBe(0);
    expect(p.largestFree).toBe(4096);
  });

  it("rejects freeing an extent that overlaps free space", () => {
    const p = new ExtentPool(4096, 512);
    const a = p.alloc(512)!;
    p.free(a);
    expect(() => p.free({ offset: 0, len: 1024 })).toThrow(RangeError);
  });

  fcTest.prop([fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 5000 })), { maxLength: 200 })])(
    "random alloc/free: extents never overlap, never leave the pool, accounting adds up",
    (ops) => {
      const p = new ExtentPool(64 << 10, 512);
      const live: Extent[] = [];
      for (const [alloc, n] of ops) {
        if (alloc || live.length === 0) {
          const e = p.alloc(n);
          if (e) {
            expect(e.offset % 512).toBe(0);
            expect(e.len).toBeGreaterThanOrEqual(n);
            expect(e.offset + e.len).toBeLessThanOrEqual(p.size);
            for (const o of live) expect(e.offset + e.len <= o.offset || o.offset + o.len <= e.offset).toBe(true);
            live.push(e);
          } else expect(p.largestFree).toBeLessThan(Math.max(512, Math.ceil(n / 512) * 512));
        } else p.free(live.splice(n % live.length, 1)[0]!);
        expect(p.used).toBe(live.reduce((s, e) => s + e.len, 0));
      }
      for (const e of live) p.free(e);
      expect(p.largestFree).toBe(p.size);
    },
  );
});
