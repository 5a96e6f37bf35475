import { describe, expect, it } from "vitest";
import { defineStruct, u8, u16, u32, u64, i32, bits, bytes } from "./struct.js";

// xen/include/public/hvm/ioreq.h: struct ioreq (the bit fields share byte 30)
const IoReq = defineStruct("ioreq", { size: 32, align: 8 }, {
  addr: u64(0), data: u64(8), count: u32(16), size: u32(20), vp_eport: u32(24), _pad0: u16(28),
  state: bits(30, 0, 4), data_is_ptr: bits(30, 4, 1), dir: bits(30, 5, 1), df: bits(30, 6, 1), type: u8(31),
});

describe("defineStruct", () => {
  it("round-trips values, bit fields included", () => {
    const v = { addr: 0x2000_0100n, data: 0xffff_ffff_ffff_ffffn, count: 1, size: 4, vp_eport: 9, _pad0: 0,
      state: 1, data_is_ptr: 0, dir: 1, df: 0, type: 0 };
    const b = IoReq.encode(v);
    expect(b[30]).toBe(0b0010_0001);
    expect(IoReq.decode(b)).toEqual(v);
    expect(IoReq.offsetOf("vp_eport")).toBe(24);
  });

  it("writes only the given fields", () => {
    const b = IoReq.encode({ count: 5, state: 3 });
    const view = new DataView(b.buffer);
    IoReq.write(view, 0, { state: 2 });
    expect(IoReq.read(view).count).toBe(5);
    expect(IoReq.read(view).state).toBe(2);
  });

  it("rejects values that do not fit", () => {
    expect(() => IoReq.encode({ state: 16 })).toThrow(RangeError);
    expect(() => IoReq.encode({ count: -1 })).toThrow(RangeError);
    expect(() => IoReq.encode({ addr: -1n })).toThrow(RangeError);
    // @ts-expect-error deliberately unknown
    expect(() => IoReq.encode({ nope: 1 })).toThrow(TypeError);
  });

  it("rejects overlapping, misaligned and oversized layouts at declaration", () => {
    expect(() => defineStruct("a", { size: 8 }, { x: u32(0), y: u32(2) })).toThrow(/not aligned|overlaps/);
    expect(() => defineStruct("b", { size: 8 }, { x: u64(0), y: u8(3) })).toThrow(/overlaps/);
    expect(() => defineStruct("c", { size: 8 }, { x: u64(4) })).toThrow(/outside|aligned/);
    expect(() => defineStruct("d", { size: 4, align: 4 }, { p: bits(0, 0, 4), q: bits(0, 2, 4) })).toThrow(/overlap/);
    // packed structs allow unaligned fields (vhost-user)
    expect(defineStruct("e", { size: 12, packed: true }, { a: u32(0), b: u64(4) }).size).toBe(12);
  });

  it("reads signed fields and byte arrays", () => {
    const S = defineStruct("s", { size: 16, align: 4 }, { n: i32(0), name: bytes(4, 12) });
    const b = S.encode({ n: -2, name: new TextEncoder().encode("virtio") });
    const v = S.decode(b);
    expect(v.n).toBe(-2);
    expect(new TextDecoder().decode(v.name.subarray(0, 6))).toBe("virtio");
    expect(() => S.read(new DataView(new ArrayBuffer(8)))).toThrow(RangeError);
  });
});
