// Encodings of every DM_OP the package builds, checked against byte offsets written out from dm_op.h (not
// through the same layout objects, so a wrong table fails here as well as in the ABI test).
import { describe, expect, it } from "vitest";
import { dmOps, dmOpName, decodeDmOp } from "./dm-op.js";
import { XenDmOpCreateIoreqServer, XEN_DMOP_IO_RANGE, XEN_DMOP_PCI_SBDF } from "./abi/dm-op.js";

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

describe("dm_op encodings", () => {
  it("create_ioreq_server: op 1, handle_bufioreq at 8, id OUT at 12", () => {
    const b = dmOps.createIoreqServer("ATOMIC");
    expect(b.byteLength).toBe(32);
    expect(dv(b).getUint32(0, true)).toBe(1);
    expect(b[8]).toBe(2);
    dv(b).setUint16(12, 7, true);
    expect(decodeDmOp(XenDmOpCreateIoreqServer, b).id).toBe(7);
    expect(dmOpName(b)).toBe("create_ioreq_server");
  });

  it("get_ioreq_server_info: op 2, id at 8, flags no_gfns at 10", () => {
    const b = dmOps.getIoreqServerInfo(3);
    expect([dv(b).getUint32(0, true), dv(b).getUint16(8, true), dv(b).getUint16(10, true)]).toEqual([2, 3, 1]);
    expect(dv(dmOps.getIoreqServerInfo(3, false)).getUint16(10, true)).toBe(0);
  });

  it("map/unmap io range: op 3/4, id 8, type 12, start 16, end 24 (inclusive)", () => {
    for (const [b, op] of [
      [dmOps.mapIoRange(5, XEN_DMOP_IO_RANGE.MEMORY, 0x2000000n, 0x20001ffn), 3],
      [dmOps.unmapIoRange(5, XEN_DMOP_IO_RANGE.MEMORY, 0x2000000n, 0x20001ffn), 4],
    ] as const) {
      const v = dv(b);
      expect([v.getUint32(0, true), v.getUint16(8, true), v.getUint32(12, true)]).toEqual([op, 5, 1]);
      expect([v.getBigUint64(16, true), v.getBigUint64(24, true)]).toEqual([0x2000000n, 0x20001ffn]);
    }
    expect(() => dmOps.mapIoRange(5, XEN_DMOP_IO_RANGE.MEMORY, 2n, 1n)).toThrow(RangeError);
    expect(() => dmOps.mapIoRange(0x10000, XEN_DMOP_IO_RANGE.MEMORY, 1n, 2n)).toThrow(RangeError);
  });

  it("set_ioreq_server_state: op 5, id 8, enabled 10", () => {
    const b = dmOps.setIoreqServerState(9, true);
    expect([dv(b).getUint32(0, true), dv(b).getUint16(8, true), b[10]]).toEqual([5, 9, 1]);
    expect(dmOps.setIoreqServerState(9, false)[10]).toBe(0);
  });

  it("destroy_ioreq_server: op 6, id 8", () => {
    const b = dmOps.destroyIoreqServer(4);
    expect([dv(b).getUint32(0, true), dv(b).getUint16(8, true)]).toEqual([6, 4]);
  });

  it("set_irq_level (Arm): op 19, irq 8, level 12", () => {
    const b = dmOps.setIrqLevel(33, 1);
    expect([dv(b).getUint32(0, true), dv(b).getUint32(8, true), b[12]]).toEqual([19, 33, 1]);
  });

  it("set_isa_irq_level (x86): op 9, isa_irq 8, level 9", () => {
    const b = dmOps.setIsaIrqLevel(5, 1);
    expect([dv(b).getUint32(0, true), b[8], b[9]]).toEqual([9, 5, 1]);
    expect(() => dmOps.setIsaIrqLevel(16, 1)).toThrow(RangeError);
  });

  it("set_pci_intx_level (x86): op 8, domain 8, bus 10, device 11, intx 12, level 13", () => {
    const b = dmOps.setPciIntxLevel({ segment: 1, bus: 2, device: 3 }, 1, 1);
    expect([dv(b).getUint32(0, true), dv(b).getUint16(8, true), b[10], b[11], b[12], b[13]]).toEqual([8, 1, 2, 3, 1, 1]);
    expect(() => dmOps.setPciIntxLevel({ segment: 0, bus: 0, device: 32 }, 0, 1)).toThrow(RangeError);
  });

  it("set_pci_link_route, inject_msi, remote_shutdown, nr_vcpus", () => {
    const l = dmOps.setPciLinkRoute(2, 11);
    expect([dv(l).getUint32(0, true), l[8], l[9]]).toEqual([10, 2, 11]);
    const m = dmOps.injectMsi(0xfee00000n, 0x4041);
    expect([dv(m).getUint32(0, true), dv(m).getUint32(8, true), dv(m).getBigUint64(16, true)]).toEqual([14, 0x4041, 0xfee00000n]);
    const s = dmOps.remoteShutdown(3);
    expect([dv(s).getUint32(0, true), dv(s).getUint32(8, true)]).toEqual([16, 3]);
    expect(dv(dmOps.nrVcpus()).getUint32(0, true)).toBe(20);
  });

  it("modified_memory and track_dirty_vram carry a second buffer", () => {
    const [b0, b1] = dmOps.modifiedMemory([{ firstPfn: 0x40000n, nr: 3 }, { firstPfn: 0x50000n, nr: 1 }]);
    expect([dv(b0).getUint32(0, true), dv(b0).getUint32(8, true)]).toEqual([11, 2]);
    expect(b1.byteLength).toBe(32);
    expect([dv(b1).getUint32(0, true), dv(b1).getBigUint64(8, true), dv(b1).getUint32(16, true), dv(b1).getBigUint64(24, true)]).toEqual([
      3, 0x40000n, 1, 0x50000n,
    ]);
    const [t0, t1] = dmOps.trackDirtyVram(0xa0n, 20);
    expect([dv(t0).getUint32(0, true), dv(t0).getUint32(8, true), dv(t0).getBigUint64(16, true), t1.byteLength]).toEqual([7, 20, 0xa0n, 3]);
  });

  it("XEN_DMOP_PCI_SBDF packs seg/bus/dev/fn", () => {
    expect(XEN_DMOP_PCI_SBDF(0, 0, 3, 0)).toBe(0x18n);
    expect(XEN_DMOP_PCI_SBDF(0x1234, 0x56, 0x1f, 7)).toBe(0x123456ffn);
  });
});
