import { describe, expect, it } from "vitest";
import { checkIoeventfdOptions, checkIrqfdOptions, type IoeventfdOptions, type IrqfdOptions } from "./notifier.js";

describe("checkIoeventfdOptions", () => {
  it("applies defaults", () => {
    expect(checkIoeventfdOptions({ addr: 0x1000n, len: 4 })).toEqual({ addr: 0x1000n, len: 4, datamatch: undefined, space: "mmio" });
    expect(checkIoeventfdOptions({ addr: 0x3f0n, len: 1, space: "pio", datamatch: 0xffn })).toEqual({
      addr: 0x3f0n,
      len: 1,
      datamatch: 0xffn,
      space: "pio",
    });
    expect(checkIoeventfdOptions({ addr: 0n, len: 8, datamatch: 0xffff_ffff_ffff_ffffn }).datamatch).toBe(0xffff_ffff_ffff_ffffn);
  });

  it.each<[string, unknown]>([
    ["number address", { addr: 0x1000, len: 4 }],
    ["negative address", { addr: -1n, len: 4 }],
    ["address over u64", { addr: 1n << 64n, len: 4 }],
    ["len 3", { addr: 0n, len: 3 }],
    ["len 16", { addr: 0n, len: 16 }],
    ["unknown space", { addr: 0n, len: 4, space: "cfg" }],
    ["port over 0xffff", { addr: 0x10000n, len: 1, space: "pio" }],
    ["pio any-length", { addr: 0x10n, len: 0, space: "pio" }],
    ["datamatch with any-length", { addr: 0n, len: 0, datamatch: 1n }],
    ["datamatch wider than len", { addr: 0n, len: 2, datamatch: 0x10000n }],
    ["negative datamatch", { addr: 0n, len: 4, datamatch: -1n }],
  ])("rejects %s with a RangeError before any syscall", (_name, options) => {
    expect(() => checkIoeventfdOptions(options as IoeventfdOptions)).toThrow(RangeError);
  });

  it("rejects a non-object", () => {
    expect(() => checkIoeventfdOptions(null as unknown as IoeventfdOptions)).toThrow(TypeError);
  });
});

describe("checkIrqfdOptions", () => {
  it("defaults to edge", () => {
    expect(checkIrqfdOptions({ line: 5 })).toEqual({ line: 5, trigger: "edge" });
    expect(checkIrqfdOptions({ line: 40, trigger: "level", onResample: () => {} })).toEqual({ line: 40, trigger: "level" });
  });

  it.each<[string, unknown, ErrorConstructor]>([
    ["negative line", { line: -1 }, RangeError],
    ["fractional line", { line: 1.5 }, RangeError],
    ["unknown trigger", { line: 1, trigger: "rising" }, RangeError],
    ["onResample on an edge line", { line: 1, onResample: () => {} }, RangeError],
    ["onResample not a function", { line: 1, trigger: "level", onResample: 1 }, TypeError],
  ])("rejects %s", (_name, options, type) => {
    expect(() => checkIrqfdOptions(options as IrqfdOptions)).toThrow(type);
  });
});
