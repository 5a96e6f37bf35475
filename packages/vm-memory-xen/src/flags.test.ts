import { describe, expect, it } from "vitest";
import { XenMmapFlag, parseXenMmapFlags, xenMmapFlags } from "./flags.js";

describe("xen_mmap_flags", () => {
  it("uses the vhost-user.rst / rust-vmm values", () => {
    expect(XenMmapFlag).toEqual({ UNIX: 0, FOREIGN: 1, GRANT: 2, NO_ADVANCE_MAP_RUST_VMM: 8, NO_ADVANCE_MAP_SPEC: 0x100 });
    expect(xenMmapFlags("foreign", false)).toBe(0x1);
    expect(xenMmapFlags("grant", false)).toBe(0x2);
  });

  it("sends NO_ADVANCE_MAP as 0x8 by default (what rust-vmm backends accept) and 0x100 when asked for the spec value", () => {
    expect(xenMmapFlags("grant", true)).toBe(0xa);
    expect(xenMmapFlags("grant", true, "rust-vmm")).toBe(0xa);
    expect(xenMmapFlags("grant", true, "spec")).toBe(0x102);
  });

  it("refuses NO_ADVANCE_MAP on a foreign region", () => {
    expect(() => xenMmapFlags("foreign", true)).toThrow(RangeError);
  });

  it("parses both encodings and rejects everything else", () => {
    expect(parseXenMmapFlags(0x0)).toEqual({ kind: "unix", noAdvanceMap: false });
    expect(parseXenMmapFlags(0x1)).toEqual({ kind: "foreign", noAdvanceMap: false });
    expect(parseXenMmapFlags(0x2)).toEqual({ kind: "grant", noAdvanceMap: false });
    expect(parseXenMmapFlags(0xa)).toEqual({ kind: "grant", noAdvanceMap: true });
    expect(parseXenMmapFlags(0x102)).toEqual({ kind: "grant", noAdvanceMap: true });
    for (const bad of [0x3, 0x4, 0x9, 0x101, 0x8, 0x100, 0x200, 0x80000002]) expect(() => parseXenMmapFlags(bad), `0x${bad.toString(16)}`).toThrow(RangeError);
  });
});
