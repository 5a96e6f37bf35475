// gntdev argument encodings, byte offsets written out from Linux include/uapi/xen/gntdev.h.
import { describe, expect, it } from "vitest";
import { encodeGrantCopySegments, encodeMapGrantRef } from "./gntdev-device.js";

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

describe("gntdev encodings", () => {
  it("MAP_GRANT_REF: count at 0, refs {domid, ref} from 16", () => {
    const b = encodeMapGrantRef(7, [100, 101, 102]);
    expect(b.byteLength).toBe(16 + 3 * 8);
    const v = dv(b);
    expect(v.getUint32(0, true)).toBe(3);
    expect([0, 1, 2].map((i) => [v.getUint32(16 + i * 8, true), v.getUint32(20 + i * 8, true)])).toEqual([
      [7, 100], [7, 101], [7, 102],
    ]);
    // one ref still fills the ioctl's encoded size (24)
    expect(encodeMapGrantRef(7, [1]).byteLength).toBe(24);
  });

  it("GRANT_COPY segments: union sides at 0 and 8, len 16, flags 18, status 20", () => {
    const local = new Uint8Array(64);
    const b = encodeGrantCopySegments(
      [
        { source: { ref: 9, offset: 128, domid: 7 }, dest: { local }, len: 64 },
        { source: { local }, dest: { ref: 10, offset: 0, domid: 7 }, len: 32 },
      ],
      () => 0x7f0000001000n,
    );
    const v = dv(b);
    expect(b.byteLength).toBe(48);
    expect([v.getUint32(0, true), v.getUint16(4, true), v.getUint16(6, true)]).toEqual([9, 128, 7]);
    expect(v.getBigUint64(8, true)).toBe(0x7f0000001000n);
    expect([v.getUint16(16, true), v.getUint16(18, true)]).toEqual([64, 1]); // GNTCOPY_source_gref
    expect(v.getBigUint64(24, true)).toBe(0x7f0000001000n);
    expect([v.getUint32(32, true), v.getUint16(36, true), v.getUint16(38, true)]).toEqual([10, 0, 7]);
    expect([v.getUint16(40, true), v.getUint16(42, true)]).toEqual([32, 2]); // GNTCOPY_dest_gref
  });

  it("rejects segments that cross the granted page or overrun the local buffer", () => {
    const local = new Uint8Array(16);
    expect(() => encodeGrantCopySegments([{ source: { ref: 1, offset: 4090, domid: 1 }, dest: { local: new Uint8Array(16) }, len: 16 }], () => 0n)).toThrow(RangeError);
    expect(() => encodeGrantCopySegments([{ source: { ref: 1, offset: 0, domid: 1 }, dest: { local }, len: 32 }], () => 0n)).toThrow(RangeError);
  });
});
