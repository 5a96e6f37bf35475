import { describe, expect, it } from "vitest";
import { MessageReader, encodeMessage, formatPermission, parsePermission, splitStrings, strings } from "./wire.js";

describe("xenstore wire", () => {
  it("header is {type, req_id, tx_id, len} little-endian, payload follows", () => {
    const b = encodeMessage({ type: 2, reqId: 0x11223344, txId: 5, payload: strings("/a") });
    expect([...b.subarray(0, 16)]).toEqual([2, 0, 0, 0, 0x44, 0x33, 0x22, 0x11, 5, 0, 0, 0, 3, 0, 0, 0]);
    expect(new TextDecoder().decode(b.subarray(16))).toBe("/a\0");
  });

  it("reassembles messages from byte-at-a-time and merged chunks", () => {
    const a = encodeMessage({ type: 2, reqId: 1, txId: 0, payload: strings("x") });
    const b = encodeMessage({ type: 15, reqId: 0, txId: 0, payload: strings("/p", "tok") });
    const r = new MessageReader();
    const all = new Uint8Array([...a, ...b]);
    const out = [];
    for (let i = 0; i < all.length; i++) out.push(...r.push(all.subarray(i, i + 1)));
    expect(out.map((m) => [m.type, m.reqId, splitStrings(m.payload)])).toEqual([[2, 1, ["x"]], [15, 0, ["/p", "tok"]]]);
    expect(r.push(all).length).toBe(2);
    expect(r.pending).toBe(0);
    r.push(b.subarray(0, 20));
    expect(r.pending).toBe(20);
  });

  it("rejects oversize payloads both ways", () => {
    expect(() => encodeMessage({ type: 11, reqId: 1, txId: 0, payload: new Uint8Array(4097) })).toThrow(/E2BIG/);
    const h = new Uint8Array(16);
    new DataView(h.buffer).setUint32(12, 4097, true);
    expect(() => new MessageReader().push(h)).toThrow(/E2BIG/);
  });

  it("permissions round-trip", () => {
    expect(parsePermission("b12")).toEqual({ perm: "both", domid: 12 });
    expect(formatPermission({ perm: "read", domid: 3 })).toBe("r3");
    expect(() => parsePermission("x1")).toThrow(RangeError);
  });
});
