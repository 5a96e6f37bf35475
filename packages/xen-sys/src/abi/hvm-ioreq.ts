// xen/include/public/hvm/ioreq.h (Xen 4.17; the 32-byte layout). The shared ioreq page is an array of these,
// indexed by vCPU id, 128 per 4 KiB frame. Another agent (Xen, a vCPU) writes `state` concurrently: read and
// write the byte at IOREQ_STATE_OFFSET with single aligned accesses (AtomicAccess), never through DataView.
import { defineStruct, u16, u32, u64, u8, bits, bytes, type StructValue } from "@xen-vhost/vmm-sys-util";

// struct ioreq { uint64_t addr; uint64_t data; uint32_t count; uint32_t size; uint32_t vp_eport; uint16_t _pad0;
//   uint8_t state:4; uint8_t data_is_ptr:1; uint8_t dir:1; uint8_t df:1; uint8_t _pad1:1; uint8_t type; };
export const IoReq = defineStruct("ioreq", { size: 32, align: 8 }, {
  addr: u64(0), data: u64(8), count: u32(16), size: u32(20), vp_eport: u32(24), _pad0: u16(28),
  state: bits(30, 0, 4), data_is_ptr: bits(30, 4, 1), dir: bits(30, 5, 1), df: bits(30, 6, 1), _pad1: bits(30, 7, 1),
  type: u8(31),
});
export type IoReq = StructValue<typeof IoReq>;
/** Byte offset of the bit-field byte holding `state` (low nibble), for atomic access. */
export const IOREQ_STATE_OFFSET = 30;

// struct shared_iopage { struct ioreq vcpu_ioreq[1]; };  (really one element per vCPU)
export const SharedIopage = defineStruct("shared_iopage", { size: 32, align: 8 }, { vcpu_ioreq: bytes(0, 32) });
/** ioreq slots in one 4 KiB frame of the ioreq server resource. */
export const IOREQS_PER_PAGE = 4096 / IoReq.size;

// struct buf_ioreq { uint8_t type; uint8_t pad:1; uint8_t dir:1; uint8_t size:2; uint32_t addr:20; uint32_t data; };
// GCC packs all of it into the first 32-bit unit: type bits 0-7, pad 8, dir 9, size 10-11, addr 12-31.
export const BufIoreq = defineStruct("buf_ioreq", { size: 8, align: 4 }, {
  type: bits(0, 0, 8, 4), pad: bits(0, 8, 1, 4), dir: bits(0, 9, 1, 4), size: bits(0, 10, 2, 4), addr: bits(0, 12, 20, 4),
  data: u32(4),
});
export type BufIoreq = StructValue<typeof BufIoreq>;

/* #define IOREQ_BUFFER_SLOT_NUM 511 */
export const IOREQ_BUFFER_SLOT_NUM = 511;
// struct buffered_iopage { uint32_t read_pointer; uint32_t write_pointer; buf_ioreq_t buf_ioreq[511]; };
// (the tools view: outside __XEN__ the pointers are plain members, not the `ptrs` union)
export const BufferedIopage = defineStruct("buffered_iopage", { size: 4096, align: 4 }, {
  read_pointer: u32(0), write_pointer: u32(4), buf_ioreq: bytes(8, 8 * IOREQ_BUFFER_SLOT_NUM),
});

/* #define IOREQ_READ 1, IOREQ_WRITE 0 */
export const IOREQ_READ = 1;
export const IOREQ_WRITE = 0;
/* STATE_IOREQ_NONE 0, STATE_IOREQ_READY 1, STATE_IOREQ_INPROCESS 2, STATE_IORESP_READY 3 */
export const STATE_IOREQ_NONE = 0;
export const STATE_IOREQ_READY = 1;
export const STATE_IOREQ_INPROCESS = 2;
export const STATE_IORESP_READY = 3;
/* IOREQ_TYPE_PIO 0, _COPY 1 (mmio), _PCI_CONFIG 2, _TIMEOFFSET 7, _INVALIDATE 8 (mapcache) */
export const IOREQ_TYPE = { PIO: 0, COPY: 1, PCI_CONFIG: 2, TIMEOFFSET: 7, INVALIDATE: 8 } as const;

// xen/include/public/memory.h: XENMEM_resource_ioreq_server 0, XENMEM_resource_grant_table 1;
// frame 0 of an ioreq server resource is the buffered page, frame 1 + n the sync ioreq page n.
export const XENMEM_resource_ioreq_server = 0;
export const XENMEM_resource_grant_table = 1;
export const XENMEM_resource_ioreq_server_frame_bufioreq = 0;
/** `#define XENMEM_resource_ioreq_server_frame_ioreq(n) (1 + (n))` */
export const XENMEM_resource_ioreq_server_frame_ioreq = (n: number): number => 1 + n;
