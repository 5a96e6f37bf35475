// Split virtqueue layout and constants: virtio 1.2 (virtio-v1.2-cs01) section 2.7 "Split Virtqueues",
// mirrored from linux/include/uapi/linux/virtio_ring.h. All fields are little-endian.
import { defineStruct, u16, u32, u64 } from "@xen-vhost/vmm-sys-util";

/** virtio_ring.h: VRING_DESC_F_NEXT — the buffer continues via `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** virtio_ring.h: VRING_DESC_F_WRITE — the buffer is device write-only (otherwise device read-only). */
export const VIRTQ_DESC_F_WRITE = 2;
/** virtio_ring.h: VRING_DESC_F_INDIRECT — the buffer holds a table of descriptors (2.7.5.3). */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** virtio_ring.h: VRING_AVAIL_F_NO_INTERRUPT — driver asks the device not to interrupt (no EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** virtio_ring.h: VRING_USED_F_NO_NOTIFY — device asks the driver not to kick (no EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** virtio_ring.h / virtio 1.2 6: VIRTIO_RING_F_INDIRECT_DESC feature bit. */
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
/** virtio_ring.h / virtio 1.2 6: VIRTIO_RING_F_EVENT_IDX feature bit. */
export const VIRTIO_RING_F_EVENT_IDX = 29;
/** virtio 1.2 2.7: the largest split queue size. */
export const MAX_QUEUE_SIZE = 32768;

/** virtio 1.2 2.7.5: struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; } */
export const VirtqDesc = defineStruct("virtq_desc", { size: 16, align: 16 }, {
  addr: u64(0),
  len: u32(8),
  flags: u16(12),
  next: u16(14),
});
/** virtio 1.2 2.7.8: struct virtq_used_elem { le32 id; le32 len; } */
export const VirtqUsedElem = defineStruct("virtq_used_elem", { size: 8, align: 4 }, { id: u32(0), len: u32(4) });

/** Alignment of each part (virtio 1.2 2.7, table "Virtqueue Part Alignment"). */
export const DESC_TABLE_ALIGN = 16;
export const AVAIL_RING_ALIGN = 2;
export const USED_RING_ALIGN = 4;

// struct virtq_avail { le16 flags; le16 idx; le16 ring[size]; le16 used_event; }   (2.7.6)
export const AVAIL_FLAGS = 0;
export const AVAIL_IDX = 2;
export const AVAIL_RING = 4;
// struct virtq_used { le16 flags; le16 idx; struct virtq_used_elem ring[size]; le16 avail_event; }   (2.7.8)
export const USED_FLAGS = 0;
export const USED_IDX = 2;
export const USED_RING = 4;

/** Byte size of each part for a queue of `size` entries (2.7, "Queue Size"), event fields included. */
export function descTableSize(size: number): number {
  return 16 * size;
}
export function availRingSize(size: number): number {
  return 6 + 2 * size;
}
export function usedRingSize(size: number): number {
  return 6 + 8 * size;
}
/** Offset of `used_event` in the avail ring. */
export function usedEventOffset(size: number): number {
  return AVAIL_RING + 2 * size;
}
/** Offset of `avail_event` in the used ring. */
export function availEventOffset(size: number): number {
  return USED_RING + 8 * size;
}

/**
 * virtio 1.2 2.7.10 / virtio_ring.h vring_need_event(): whether moving an index from `old` to `newIdx`
 * passed `eventIdx`, i.e. the other side asked to be notified. All arithmetic is mod 2^16.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, old: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}
