import { describe, expect, it } from "vitest";
import { fc, test } from "@fast-check/vitest";
import { XenMemoryError } from "./error.js";
import { XEN_GRANT_DMA_ADDR_OFF, grantAddress, grantRefOf, isGrantAddress } from "./grant-address.js";

describe("grant DMA addresses (1 << 63 | gref << 12)", () => {
  it("encodes like Linux grant_to_dma", () => {
    expect(grantAddress(0)).toBe(0x8000_0000_0000_0000n);
    expect(grantAddress(0x123)).toBe(0x8000_0000_0012_3000n);
    expect(grantAddress(0xffff_ffff)).toBe(0x8000_0fff_ffff_f000n);
    expect(() => grantAddress(-1)).toThrow(RangeError);
    expect(() => grantAddress(2 ** 32)).toThrow(RangeError);
  });

  it("decodes reference and page offset", () => {
    expect(grantRefOf(0x8000_0000_0012_3abcn)).toEqual({ gref: 0x123, offset: 0xabc });
    expect(isGrantAddress(0x8000_0000_0000_0000n)).toBe(true);
    expect(isGrantAddress(0x7fff_ffff_ffff_ffffn)).toBe(false);
  });

  it("refuses addresses without bit 63 and references beyond u32", () => {
    const kind = (a: bigint) => {
      try {
        grantRefOf(a);
      } catch (e) {
        return e instanceof XenMemoryError ? e.kind : String(e);
      }
      return "none";
    };
    expect(kind(0x4000_0000n)).toBe("NotAGrantAddress");
    expect(kind(XEN_GRANT_DMA_ADDR_OFF | (1n << 44n))).toBe("NotAGrantAddress");
    expect(kind(0x1_0000_0000_0000_0000n)).toBe("NotAGrantAddress");
  });

  test.prop([fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: 0, max: 4095 })])("round trips", (gref, off) => {
    expect(grantRefOf(grantAddress(gref) + BigInt(off))).toEqual({ gref, offset: off });
  });
});
