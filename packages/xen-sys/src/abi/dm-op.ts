// xen/include/public/hvm/dm_op.h (Xen 4.17). Buffer 0 of every DM_OP is a `struct xen_dm_op`: op number,
// padding, then the op's payload in a union. Layouts are the same on x86_64 and arm64 (uint64_aligned_t).
import { defineStruct, u8, u16, u32, u64, bytes, type StructValue } from "@xen-vhost/vmm-sys-util";

/** `#define XEN_DMOP_*`: the op numbers. */
export const XEN_DMOP = {
  create_ioreq_server: 1,
  get_ioreq_server_info: 2,
  map_io_range_to_ioreq_server: 3,
  unmap_io_range_from_ioreq_server: 4,
  set_ioreq_server_state: 5,
  destroy_ioreq_server: 6,
  track_dirty_vram: 7,
  set_pci_intx_level: 8,
  set_isa_irq_level: 9,
  set_pci_link_route: 10,
  modified_memory: 11,
  set_mem_type: 12,
  inject_event: 13,
  inject_msi: 14,
  map_mem_type_to_ioreq_server: 15,
  remote_shutdown: 16,
  relocate_memory: 17,
  pin_memory_cacheattr: 18,
  set_irq_level: 19,
  nr_vcpus: 20,
} as const;
export type XenDmOpName = keyof typeof XEN_DMOP;

/* HVM_IOREQSRV_BUFIOREQ_OFF 0, _LEGACY 1, _ATOMIC 2 (public/hvm/hvm_op.h) */
export const HVM_IOREQSRV_BUFIOREQ = { OFF: 0, LEGACY: 1, ATOMIC: 2 } as const;
/* XEN_DMOP_IO_RANGE_PORT 0, _MEMORY 1, _PCI 2 */
export const XEN_DMOP_IO_RANGE = { PORT: 0, MEMORY: 1, PCI: 2 } as const;
export type XenDmOpIoRangeType = (typeof XEN_DMOP_IO_RANGE)[keyof typeof XEN_DMOP_IO_RANGE];
/* #define XEN_DMOP_no_gfns (1u << 0) */
export const XEN_DMOP_no_gfns = 1;
/* XEN_DMOP_IOREQ_MEM_ACCESS_READ (1u << 0), _WRITE (1u << 1) */
export const XEN_DMOP_IOREQ_MEM_ACCESS_READ = 1;
export const XEN_DMOP_IOREQ_MEM_ACCESS_WRITE = 2;

/**
 * `#define XEN_DMOP_PCI_SBDF(s,b,d,f)`: the range value of an XEN_DMOP_IO_RANGE_PCI range.
 */
export function XEN_DMOP_PCI_SBDF(s: number, b: number, d: number, f: number): bigint {
  return BigInt((((s & 0xffff) << 16) | ((b & 0xff) << 8) | ((d & 0x1f) << 3) | (f & 0x7)) >>> 0);
}

// struct xen_dm_op { uint32_t op; uint32_t pad; union { ... } u; };
export const XenDmOp = defineStruct("xen_dm_op", { size: 32, align: 8 }, {
  op: u32(0), pad: u32(4), u: bytes(8, 24),
});
/** Offset of the payload union in `struct xen_dm_op`. */
export const XEN_DM_OP_PAYLOAD_OFFSET = 8;

// struct xen_dm_op_create_ioreq_server { uint8_t handle_bufioreq; uint8_t pad[3]; ioservid_t id; /* OUT */ };
export const XenDmOpCreateIoreqServer = defineStruct("xen_dm_op_create_ioreq_server", { size: 6, align: 2 }, {
  handle_bufioreq: u8(0), pad: bytes(1, 3), id: u16(4),
});
// struct xen_dm_op_get_ioreq_server_info { ioservid_t id; uint16_t flags; evtchn_port_t bufioreq_port;
//   uint64_aligned_t ioreq_gfn; uint64_aligned_t bufioreq_gfn; };
export const XenDmOpGetIoreqServerInfo = defineStruct("xen_dm_op_get_ioreq_server_info", { size: 24, align: 8 }, {
  id: u16(0), flags: u16(2), bufioreq_port: u32(4), ioreq_gfn: u64(8), bufioreq_gfn: u64(16),
});
export type XenDmOpGetIoreqServerInfo = StructValue<typeof XenDmOpGetIoreqServerInfo>;
// struct xen_dm_op_ioreq_server_range { ioservid_t id; uint16_t pad; uint32_t type; uint64_aligned_t start, end; };
export const XenDmOpIoreqServerRange = defineStruct("xen_dm_op_ioreq_server_range", { size: 24, align: 8 }, {
  id: u16(0), pad: u16(2), type: u32(4), start: u64(8), end: u64(16),
});
// struct xen_dm_op_set_ioreq_server_state { ioservid_t id; uint8_t enabled; uint8_t pad; };
export const XenDmOpSetIoreqServerState = defineStruct("xen_dm_op_set_ioreq_server_state", { size: 4, align: 2 }, {
  id: u16(0), enabled: u8(2), pad: u8(3),
});
// struct xen_dm_op_destroy_ioreq_server { ioservid_t id; uint16_t pad; };
export const XenDmOpDestroyIoreqServer = defineStruct("xen_dm_op_destroy_ioreq_server", { size: 4, align: 2 }, {
  id: u16(0), pad: u16(2),
});
// struct xen_dm_op_track_dirty_vram { uint32_t nr; uint32_t pad; uint64_aligned_t first_pfn; };
export const XenDmOpTrackDirtyVram = defineStruct("xen_dm_op_track_dirty_vram", { size: 16, align: 8 }, {
  nr: u32(0), pad: u32(4), first_pfn: u64(8),
});
// struct xen_dm_op_set_pci_intx_level { uint16_t domain; uint8_t bus, device, intx; uint8_t level; };
export const XenDmOpSetPciIntxLevel = defineStruct("xen_dm_op_set_pci_intx_level", { size: 6, align: 2 }, {
  domain: u16(0), bus: u8(2), device: u8(3), intx: u8(4), level: u8(5),
});
// struct xen_dm_op_set_isa_irq_level { uint8_t isa_irq; uint8_t level; };
export const XenDmOpSetIsaIrqLevel = defineStruct("xen_dm_op_set_isa_irq_level", { size: 2, align: 1 }, {
  isa_irq: u8(0), level: u8(1),
});
// struct xen_dm_op_set_pci_link_route { uint8_t link; uint8_t isa_irq; };
export const XenDmOpSetPciLinkRoute = defineStruct("xen_dm_op_set_pci_link_route", { size: 2, align: 1 }, {
  link: u8(0), isa_irq: u8(1),
});
// struct xen_dm_op_modified_memory { uint32_t nr_extents; uint32_t opaque; };
export const XenDmOpModifiedMemory = defineStruct("xen_dm_op_modified_memory", { size: 8, align: 4 }, {
  nr_extents: u32(0), opaque: u32(4),
});
// struct xen_dm_op_modified_memory_extent { uint32_t nr; uint32_t pad; uint64_aligned_t first_pfn; };
export const XenDmOpModifiedMemoryExtent = defineStruct("xen_dm_op_modified_memory_extent", { size: 16, align: 8 }, {
  nr: u32(0), pad: u32(4), first_pfn: u64(8),
});
// struct xen_dm_op_set_mem_type { uint32_t nr; uint16_t mem_type; uint16_t pad; uint64_aligned_t first_pfn; };
export const XenDmOpSetMemType = defineStruct("xen_dm_op_set_mem_type", { size: 16, align: 8 }, {
  nr: u32(0), mem_type: u16(4), pad: u16(6), first_pfn: u64(8),
});
// struct xen_dm_op_inject_event { uint32_t vcpuid; uint8_t vector, type, insn_len, pad0; uint32_t error_code;
//   uint32_t pad1; uint64_aligned_t cr2; };
export const XenDmOpInjectEvent = defineStruct("xen_dm_op_inject_event", { size: 24, align: 8 }, {
  vcpuid: u32(0), vector: u8(4), type: u8(5), insn_len: u8(6), pad0: u8(7), error_code: u32(8), pad1: u32(12),
  cr2: u64(16),
});
// struct xen_dm_op_inject_msi { uint32_t data; uint32_t pad; uint64_aligned_t addr; };
export const XenDmOpInjectMsi = defineStruct("xen_dm_op_inject_msi", { size: 16, align: 8 }, {
  data: u32(0), pad: u32(4), addr: u64(8),
});
// struct xen_dm_op_map_mem_type_to_ioreq_server { ioservid_t id; uint16_t type; uint32_t flags; uint64_t opaque; };
export const XenDmOpMapMemTypeToIoreqServer = defineStruct("xen_dm_op_map_mem_type_to_ioreq_server", { size: 16, align: 8 }, {
  id: u16(0), type: u16(2), flags: u32(4), opaque: u64(8),
});
// struct xen_dm_op_remote_shutdown { uint32_t reason; };
export const XenDmOpRemoteShutdown = defineStruct("xen_dm_op_remote_shutdown", { size: 4, align: 4 }, {
  reason: u32(0),
});
// struct xen_dm_op_relocate_memory { uint32_t size; uint32_t pad; uint64_aligned_t src_gfn; uint64_aligned_t dst_gfn; };
export const XenDmOpRelocateMemory = defineStruct("xen_dm_op_relocate_memory", { size: 24, align: 8 }, {
  size: u32(0), pad: u32(4), src_gfn: u64(8), dst_gfn: u64(16),
});
// struct xen_dm_op_pin_memory_cacheattr { uint64_aligned_t start, end; uint32_t type; uint32_t pad; };
export const XenDmOpPinMemoryCacheattr = defineStruct("xen_dm_op_pin_memory_cacheattr", { size: 24, align: 8 }, {
  start: u64(0), end: u64(8), type: u32(16), pad: u32(20),
});
// struct xen_dm_op_set_irq_level { uint32_t irq; uint8_t level; uint8_t pad[3]; };   (Arm: SPIs only)
export const XenDmOpSetIrqLevel = defineStruct("xen_dm_op_set_irq_level", { size: 8, align: 4 }, {
  irq: u32(0), level: u8(4), pad: bytes(5, 3),
});
// struct xen_dm_op_nr_vcpus { uint32_t vcpus; /* OUT */ };
export const XenDmOpNrVcpus = defineStruct("xen_dm_op_nr_vcpus", { size: 4, align: 4 }, { vcpus: u32(0) });
