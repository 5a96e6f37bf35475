// privcmd ioctl argument encodings, byte offsets written out from Linux include/uapi/xen/privcmd.h.
import { describe, expect, it } from "vitest";
import { dmOpArg, hypercallArg, ioeventfdArg, irqfdArg, mmapResourceArg, mmapbatchV2Arg, restrictArg, type AddressOf } from "./privcmd-args.js";

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
/** Fake addresses: a distinct number per object, plus the view's offset (so subarrays are visible). */
function fakeAddresses(): AddressOf {
  const ids = new Map<ArrayBufferLike, bigint>();
  return (v) => {
    const buf = v instanceof ArrayBuffer ? v : v.buffer;
    if (!ids.has(buf)) ids.set(buf, BigInt(ids.size + 1) << 32n);
    return ids.get(buf)! + BigInt(v instanceof ArrayBuffer ? 0 : v.byteOffset);
  };
}

describe("privcmd ioctl arguments", () => {
  it("HYPERCALL: op at 0, arg[i] at 8 + 8i", () => {
    const v = dv(hypercallArg(35, [0x1000n, 2n]));
    expect([v.getBigUint64(0, true), v.getBigUint64(8, true), v.getBigUint64(16, true), v.getBigUint64(40, true)]).toEqual([35n, 0x1000n, 2n, 0n]);
    expect(() => hypercallArg(1, [1n, 2n, 3n, 4n, 5n, 6n])).toThrow(RangeError);
  });

  it("DM_OP: dom 0, num 2, ubufs 8 → a table of {uptr, size}", () => {
    const addr = fakeAddresses();
    const b0 = new Uint8Array(32);
    const b1 = new Uint8Array(16);
    const { arg, table } = dmOpArg(7, [b0, b1], addr);
    const v = dv(arg);
    expect([v.getUint16(0, true), v.getUint16(2, true), v.getBigUint64(8, true)]).toEqual([7, 2, addr(table)]);
    const t = dv(table);
    expect([t.getBigUint64(0, true), t.getBigUint64(8, true), t.getBigUint64(16, true), t.getBigUint64(24, true)]).toEqual([
      addr(b0), 32n, addr(b1), 16n,
    ]);
  });

  it("MMAPBATCH_V2: num 0, dom 4, addr 8 (+ first page), arr 16, err 24 point at the sub-ranges", () => {
    const addr = fakeAddresses();
    const gfns = BigUint64Array.of(1n, 2n, 3n);
    const err = new Int32Array(3);
    const v = dv(mmapbatchV2Arg(7, 0x7f0000000000n, gfns, err, 2, 1, addr));
    expect([v.getUint32(0, true), v.getUint16(4, true), v.getBigUint64(8, true)]).toEqual([1, 7, 0x7f0000002000n]);
    expect([v.getBigUint64(16, true), v.getBigUint64(24, true)]).toEqual([addr(gfns) + 16n, addr(err) + 8n]);
  });

  it("MMAP_RESOURCE: dom 0, type 4, id 8, idx 12, num 16, addr 24; the size query has num = addr = 0", () => {
    const v = dv(mmapResourceArg(7, 0, 5, 1, 2, 0x7f0000000000n));
    expect([v.getUint16(0, true), v.getUint32(4, true), v.getUint32(8, true), v.getUint32(12, true)]).toEqual([7, 0, 5, 1]);
    expect([v.getBigUint64(16, true), v.getBigUint64(24, true)]).toEqual([2n, 0x7f0000000000n]);
    const q = dv(mmapResourceArg(7, 0, 5, 0, 0, 0n));
    expect([q.getBigUint64(16, true), q.getBigUint64(24, true)]).toEqual([0n, 0n]);
  });

  it("RESTRICT: a bare u16 domid", () => {
    expect([...restrictArg(0x1234)]).toEqual([0x34, 0x12]);
  });

  it("IRQFD: dm_op 0, size 8, fd 12, flags 16, dom 20", () => {
    const addr = fakeAddresses();
    const dmOp = new Uint8Array(32);
    const v = dv(irqfdArg({ domid: 7, eventFd: 12, dmOp, deassign: true }, addr));
    expect([v.getBigUint64(0, true), v.getUint32(8, true), v.getUint32(12, true), v.getUint32(16, true), v.getUint16(20, true)]).toEqual([
      addr(dmOp), 32, 12, 1, 7,
    ]);
  });

  it("IOEVENTFD: ioreq 0, ports 8, addr 16, addr_len 24, event_fd 28, vcpus 32, vq 36, flags 40, dom 44", () => {
    const addr = fakeAddresses();
    const ioreq = new ArrayBuffer(4096);
    const ports = Uint32Array.of(3, 4);
    const v = dv(ioeventfdArg({ domid: 7, ioreq, ports, addr: 0x2000000n, addrLen: 4, eventFd: 9, vq: 1 }, addr));
    expect([v.getBigUint64(0, true), v.getBigUint64(8, true), v.getBigUint64(16, true)]).toEqual([addr(ioreq), addr(ports), 0x2000000n]);
    expect([24, 28, 32, 36, 40].map((o) => v.getUint32(o, true))).toEqual([4, 9, 2, 1, 0]);
    expect(v.getUint16(44, true)).toBe(7);
  });
});
