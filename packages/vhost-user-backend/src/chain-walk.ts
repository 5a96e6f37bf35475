// A descriptor chain by its head index, for resubmitting inflight requests after a reconnect (vhost-user.rst
// "Inflight I/O tracking"): those heads come from the inflight area, not from the avail ring, so
// virtio-queue's `Queue.pop()` cannot produce them and its walker is private. The validation is the same as
// Queue's (virtio 1.2 2.7.5): indices inside the table, no loops, at most one indirect table and no nesting,
// readable buffers before writable ones, every buffer inside guest memory.
// TODO(virtio-queue): drop this file once Queue exposes its walker (a `chainAt(head)`).
import type { GuestMemory } from "@xen-vhost/vm-memory";
import {
  Descriptor, DescriptorChain, VirtqueueError, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, type VirtqueueErrorKind,
} from "@xen-vhost/virtio-queue";

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
  const fail = (kind: VirtqueueErrorKind, msg: string, cause?: unknown): never => {
    throw new VirtqueueError(kind, `chain ${head}: ${msg}`, cause === undefined ? { head } : { head, cause });
  };
  if (!Number.isInteger(head) || head < 0 || head >= size) fail("InvalidIndex", `head index ${head} outside a ${size}-entry table`);
  const maxLen = options.maxChainLength ?? Math.max(size, 1024);
  const scratch = new Uint8Array(16);
  const view = new DataView(scratch.buffer);
  const read = (addr: bigint): Descriptor => {
    try {
      mem.readInto(addr, scratch);
    } catch (e) {
      fail("GuestMemory", `descriptor at 0x${addr.toString(16)}: ${(e as Error).message}`, e);
    }
    return new Descriptor(view.getBigUint64(0, true), view.getUint32(8, true), view.getUint16(12, true), view.getUint16(14, true));
  };
  const inMemory = (addr: bigint, len: number): boolean => {
    try {
      return mem.checkRange(addr, len);
    } catch (e) {
      return fail("GuestMemory", `buffer 0x${addr.toString(16)} (+${len}): ${(e as Error).message}`, e);
    }
  };
  const descs: Descriptor[] = [];
  let table = descTable;
  let entries = size;
  let idx = head;
  let indirect = false;
  let seenWrite = false;
  let visited = new Set<number>();
  for (;;) {
    if (idx >= entries) fail("InvalidIndex", `next index ${idx} outside a ${entries}-entry ${indirect ? "indirect " : ""}table`);
    if (visited.has(idx)) fail("DescriptorLoop", `descriptor ${idx} visited twice`);
    visited.add(idx);
    const d = read(table + BigInt(idx * 16));
    if ((d.flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
      if (indirect) fail("InvalidIndirect", "indirect descriptor inside an indirect table");
      if (!options.indirect) fail("InvalidIndirect", "indirect descriptor but VIRTIO_RING_F_INDIRECT_DESC not negotiated");
      if ((d.flags & VIRTQ_DESC_F_NEXT) !== 0) fail("InvalidIndirect", "indirect descriptor with VIRTQ_DESC_F_NEXT");
      if (d.len === 0 || d.len % 16 !== 0) fail("InvalidIndirect", `indirect table length ${d.len} is not a positive multiple of 16`);
      const n = d.len / 16;
      if (descs.length + n > maxLen) fail("ChainTooLong", `indirect table of ${n} descriptors exceeds ${maxLen}`);
      if (!inMemory(d.addr, d.len)) fail("OutOfBounds", `indirect table 0x${d.addr.toString(16)} (+${d.len}) outside guest memory`);
      table = d.addr;
      entries = n;
      idx = 0;
      indirect = true;
      visited = new Set();
      continue;
    }
    if ((d.flags & VIRTQ_DESC_F_WRITE) !== 0) seenWrite = true;
    else if (seenWrite) fail("ReadAfterWrite", `device-readable descriptor ${idx} after a device-writable one`);
    if (d.len > 0 && !inMemory(d.addr, d.len)) fail("OutOfBounds", `buffer 0x${d.addr.toString(16)} (+${d.len}) of descriptor ${idx} outside guest memory`);
    descs.push(d);
    if (descs.length > maxLen) fail("ChainTooLong", `more than ${maxLen} descriptors`);
    if ((d.flags & VIRTQ_DESC_F_NEXT) === 0) break;
    idx = d.next;
  }
  return new DescriptorChain(mem, head, descs, indirect);
}
