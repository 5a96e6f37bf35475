// A descriptor chain by its head index, for resubmitting inflight requests after a reconnect (vhost-user.rst
// "Inflight I/O tracking"): those heads come from the inflight area, not from the avail ring, so
// `Queue.pop()` cannot produce them. The walk and its validation are virtio-queue's own (the one `Queue.pop()`
// and `Queue.chainAt()` use, virtio 1.2 2.7.5): this module only keeps the backend's exported name.
import type { GuestMemory } from "@xen-vhost/vm-memory";
import { walkChain as walkQueueChain, type DescriptorChain } from "@xen-vhost/virtio-queue";

export interface WalkOptions {
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
  /** Most descriptors in one chain (default max(size, 1024), as Queue). */
  maxChainLength?: number;
}

/**
 * The validated chain starting at descriptor `head` of the table at `descTable` (`size` entries).
 * @throws VirtqueueError carrying `head` (InvalidIndex, DescriptorLoop, ChainTooLong, InvalidIndirect,
 *   ReadAfterWrite, OutOfBounds, GuestMemory): return the head used with length 0.
 */
export function walkChain(mem: GuestMemory, descTable: bigint, size: number, head: number, options: WalkOptions): DescriptorChain {
  return walkQueueChain(mem, descTable, size, head, options);
}
