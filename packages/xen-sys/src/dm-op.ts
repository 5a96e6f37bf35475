// DM_OP payloads (xen/include/public/hvm/dm_op.h), encoded above the transport: each function returns the
// `struct xen_dm_op` bytes for buffer 0 (plus extra buffers where the op has them) and, for ops with OUT
// fields, a decoder for the same bytes after the call.
import {
  HVM_IOREQSRV_BUFIOREQ, XEN_DMOP, XEN_DM_OP_PAYLOAD_OFFSET, XenDmOp, XenDmOpCreateIoreqServer,
  XenDmOpDestroyIoreqServer, XenDmOpGetIoreqServerInfo, XenDmOpInjectMsi, XenDmOpIoreqServerRange,
  XenDmOpModifiedMemory, XenDmOpModifiedMemoryExtent, XenDmOpNrVcpus, XenDmOpRemoteShutdown,
  XenDmOpSetIoreqServerState, XenDmOpSetIrqLevel, XenDmOpSetIsaIrqLevel, XenDmOpSetPciIntxLevel,
  XenDmOpSetPciLinkRoute, XenDmOpTrackDirtyVram, XEN_DMOP_IO_RANGE, XEN_DMOP_no_gfns, type XenDmOpIoRangeType,
  type XenDmOpName,
} from "./abi/dm-op.js";
import type { StructLayout, FieldSpec, StructValue } from "@xen-vhost/vmm-sys-util";

/** A `struct xen_dm_op` with `op` set and the payload written into the union. */
export function encodeDmOp<F extends Record<string, FieldSpec>>(
  op: XenDmOpName,
  payload: StructLayout<F>,
  value: Partial<StructValue<StructLayout<F>>>,
): Uint8Array {
  const buf = XenDmOp.encode({ op: XEN_DMOP[op] });
  payload.write(new DataView(buf.buffer), XEN_DM_OP_PAYLOAD_OFFSET, value);
  return buf;
}

/** Reads the payload union of a `struct xen_dm_op` (after the call, for OUT fields). */
export function decodeDmOp<F extends Record<string, FieldSpec>>(payload: StructLayout<F>, buf: Uint8Array): StructValue<StructLayout<F>> {
  return payload.read(new DataView(buf.buffer, buf.byteOffset, buf.byteLength), XEN_DM_OP_PAYLOAD_OFFSET);
}

/** The op number and name of a `struct xen_dm_op` (for simulators and logs). */
export function dmOpName(buf: Uint8Array): XenDmOpName | undefined {
  const op = XenDmOp.decode(buf).op;
  return (Object.keys(XEN_DMOP) as XenDmOpName[]).find((k) => XEN_DMOP[k] === op);
}

export type BufIoreqMode = keyof typeof HVM_IOREQSRV_BUFIOREQ;
const u16 = (v: number, what: string): void => {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`${what} ${v} out of u16 range`);
};
const u8 = (v: number, what: string): void => {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`${what} ${v} out of u8 range`);
};

export const dmOps = {
  /** XEN_DMOP_create_ioreq_server; read `id` with decodeDmOp(XenDmOpCreateIoreqServer, buf). */
  createIoreqServer(bufioreq: BufIoreqMode = "OFF"): Uint8Array {
    return encodeDmOp("create_ioreq_server", XenDmOpCreateIoreqServer, { handle_bufioreq: HVM_IOREQSRV_BUFIOREQ[bufioreq] });
  },
  /** XEN_DMOP_get_ioreq_server_info; `noGfns` asks only for the port (use MMAP_RESOURCE for the pages). */
  getIoreqServerInfo(id: number, noGfns = true): Uint8Array {
    u16(id, "ioreq server id");
    return encodeDmOp("get_ioreq_server_info", XenDmOpGetIoreqServerInfo, { id, flags: noGfns ? XEN_DMOP_no_gfns : 0 });
  },
  /** XEN_DMOP_map_io_range_to_ioreq_server: [start, end] inclusive. */
  mapIoRange(id: number, type: XenDmOpIoRangeType, start: bigint, end: bigint): Uint8Array {
    return ioRange("map_io_range_to_ioreq_server", id, type, start, end);
  },
  /** XEN_DMOP_unmap_io_range_from_ioreq_server. */
  unmapIoRange(id: number, type: XenDmOpIoRangeType, start: bigint, end: bigint): Uint8Array {
    return ioRange("unmap_io_range_from_ioreq_server", id, type, start, end);
  },
  /** XEN_DMOP_set_ioreq_server_state. */
  setIoreqServerState(id: number, enabled: boolean): Uint8Array {
    u16(id, "ioreq server id");
    return encodeDmOp("set_ioreq_server_state", XenDmOpSetIoreqServerState, { id, enabled: enabled ? 1 : 0 });
  },
  /** XEN_DMOP_destroy_ioreq_server. */
  destroyIoreqServer(id: number): Uint8Array {
    u16(id, "ioreq server id");
    return encodeDmOp("destroy_ioreq_server", XenDmOpDestroyIoreqServer, { id });
  },
  /** XEN_DMOP_set_irq_level (Arm, SPIs only). */
  setIrqLevel(irq: number, level: 0 | 1): Uint8Array {
    if (!Number.isInteger(irq) || irq < 0 || irq > 0xffffffff) throw new RangeError(`irq ${irq} out of u32 range`);
    return encodeDmOp("set_irq_level", XenDmOpSetIrqLevel, { irq, level });
  },
  /** XEN_DMOP_set_isa_irq_level (x86). */
  setIsaIrqLevel(isaIrq: number, level: 0 | 1): Uint8Array {
    if (!Number.isInteger(isaIrq) || isaIrq < 0 || isaIrq > 15) throw new RangeError(`ISA irq ${isaIrq} must be 0..15`);
    return encodeDmOp("set_isa_irq_level", XenDmOpSetIsaIrqLevel, { isa_irq: isaIrq, level });
  },
  /** XEN_DMOP_set_pci_intx_level (x86): intx 0..3 = INTA..INTD. */
  setPciIntxLevel(sbdf: { segment: number; bus: number; device: number }, intx: number, level: 0 | 1): Uint8Array {
    u16(sbdf.segment, "PCI segment");
    u8(sbdf.bus, "PCI bus");
    if (!Number.isInteger(sbdf.device) || sbdf.device < 0 || sbdf.device > 31) throw new RangeError(`PCI device ${sbdf.device} must be 0..31`);
    if (!Number.isInteger(intx) || intx < 0 || intx > 3) throw new RangeError(`intx ${intx} must be 0..3`);
    return encodeDmOp("set_pci_intx_level", XenDmOpSetPciIntxLevel, {
      domain: sbdf.segment, bus: sbdf.bus, device: sbdf.device, intx, level,
    });
  },
  /** XEN_DMOP_set_pci_link_route (x86). */
  setPciLinkRoute(link: number, isaIrq: number): Uint8Array {
    u8(link, "link");
    u8(isaIrq, "ISA irq");
    return encodeDmOp("set_pci_link_route", XenDmOpSetPciLinkRoute, { link, isa_irq: isaIrq });
  },
  /** XEN_DMOP_inject_msi (x86). */
  injectMsi(addr: bigint, data: number): Uint8Array {
    return encodeDmOp("inject_msi", XenDmOpInjectMsi, { addr, data });
  },
  /** XEN_DMOP_track_dirty_vram: buffer 1 receives the dirty bitmap (nr bits). */
  trackDirtyVram(firstPfn: bigint, nr: number): [Uint8Array, Uint8Array] {
    return [encodeDmOp("track_dirty_vram", XenDmOpTrackDirtyVram, { first_pfn: firstPfn, nr }), new Uint8Array(Math.ceil(nr / 8))];
  },
  /** XEN_DMOP_modified_memory: buffer 1 holds the extents. */
  modifiedMemory(extents: readonly { firstPfn: bigint; nr: number }[]): [Uint8Array, Uint8Array] {
    const buf1 = new Uint8Array(extents.length * XenDmOpModifiedMemoryExtent.size);
    const view = new DataView(buf1.buffer);
    extents.forEach((e, i) => XenDmOpModifiedMemoryExtent.write(view, i * XenDmOpModifiedMemoryExtent.size, { first_pfn: e.firstPfn, nr: e.nr }));
    return [encodeDmOp("modified_memory", XenDmOpModifiedMemory, { nr_extents: extents.length }), buf1];
  },
  /** XEN_DMOP_remote_shutdown (SHUTDOWN_* reason). */
  remoteShutdown(reason: number): Uint8Array {
    return encodeDmOp("remote_shutdown", XenDmOpRemoteShutdown, { reason });
  },
  /** XEN_DMOP_nr_vcpus; read `vcpus` with decodeDmOp(XenDmOpNrVcpus, buf). */
  nrVcpus(): Uint8Array {
    return encodeDmOp("nr_vcpus", XenDmOpNrVcpus, {});
  },
} as const;

function ioRange(
  op: "map_io_range_to_ioreq_server" | "unmap_io_range_from_ioreq_server",
  id: number,
  type: XenDmOpIoRangeType,
  start: bigint,
  end: bigint,
): Uint8Array {
  u16(id, "ioreq server id");
  if (!Object.values(XEN_DMOP_IO_RANGE).includes(type)) throw new RangeError(`io range type ${String(type)}`);
  if (start > end) throw new RangeError(`io range start 0x${start.toString(16)} > end 0x${end.toString(16)}`);
  return encodeDmOp(op, XenDmOpIoreqServerRange, { id, type, start, end });
}
