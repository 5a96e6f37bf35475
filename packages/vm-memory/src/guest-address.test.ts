import { describe, expect, it } from "vitest";
import { GuestAddress } from "./guest-address.js";
import { GuestMemoryError } from "./error.js";

const MAX = 0xffff_ffff_ffff_ffffn;

function kindOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof GuestMemoryError ? e.kind : `not a GuestMemoryError: ${String(e)}`;
  }
  return undefined;
}

describe("GuestAddress", () => {
  it("holds 0..2^64-1 and rejects anything else as a bad argument", () => {
    expect(new GuestAddress(0).value).toBe(0n);
    expect(new GuestAddress(MAX).value).toBe(MAX);
    expect(() => new GuestAddress(-1)).toThrow(RangeError);
    expect(() => new GuestAddress(MAX + 1n)).toThrow(RangeError);
    expect(() => new GuestAddress(1.5)).toThrow(RangeError);
  });

  it("checked arithmetic throws Overflow instead of wrapping", () => {
    expect(new GuestAddress(0x1000).checkedAdd(0x10).value).toBe(0x1010n);
    expect(new GuestAddress(MAX - 1n).checkedAdd(1).value).toBe(MAX);
    expect(kindOf(() => new GuestAddress(MAX).checkedAdd(1))).toBe("Overflow");
    expect(kindOf(() => new GuestAddress(5).checkedSub(6))).toBe("Overflow");
    expect(kindOf(() => new GuestAddress(5).checkedAdd(-6))).toBe("Overflow");
    expect(new GuestAddress(5).checkedSub(5).value).toBe(0n);
  });

  it("offsetFrom, alignment and comparisons", () => {
    expect(new GuestAddress(0x3000).offsetFrom(0x1000)).toBe(0x2000n);
    expect(kindOf(() => new GuestAddress(0x1000).offsetFrom(0x3000))).toBe("Overflow");
    expect(new GuestAddress(0x1001).alignUp(0x1000).value).toBe(0x2000n);
    expect(new GuestAddress(0x2000).alignUp(0x1000).value).toBe(0x2000n);
    expect(kindOf(() => new GuestAddress(MAX).alignUp(16))).toBe("Overflow");
    expect(() => new GuestAddress(0).alignUp(3)).toThrow(RangeError);
    expect(new GuestAddress(0x40).isAligned(16)).toBe(true);
    expect(new GuestAddress(0x41).isAligned(2)).toBe(false);
    expect(new GuestAddress(7).compare(8)).toBe(-1);
    expect(new GuestAddress(8).equals(8n)).toBe(true);
    expect(new GuestAddress(0xabc).toString()).toBe("0xabc");
    expect(() => new GuestAddress(2n ** 60n).toNumber()).toThrow(RangeError);
    expect(GuestAddress.from(new GuestAddress(3)).value).toBe(3n);
  });
});
