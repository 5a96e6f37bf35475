// The inflight area (INFLIGHT_SHMFD, vhost-user.rst "Inflight I/O tracking"): shared memory the back-end
// allocates on GET_INFLIGHT_FD and records its in-flight descriptors in, which the front-end keeps across a
// back-end crash and hands to the next process with SET_INFLIGHT_FD. The front-end only carries it; this view
// lets it (and tests) look inside: the ring's used index and which heads the back-end still owes.
// Split-ring layout, one region of mmap_size / num_queues bytes per queue: QEMU subprojects/libvhost-user/
// libvhost-user.h (QueueRegionSplit, DescStateSplit) and DPDK lib/vhost/rte_vhost.h (rte_vhost_inflight_info_split,
// rte_vhost_inflight_desc_split) agree on it.
import { MemoryMapping, defineStruct, u16, u64, u8, type StructValue } from "@xen-vhost/vmm-sys-util";
import { VhostUserError } from "@xen-vhost/vhost-user-protocol";

/** libvhost-user.h: typedef struct QueueRegionSplit { u64 features; u16 version, desc_num, last_batch_head, used_idx; DescStateSplit desc[]; }. */
export const QueueRegionSplit = defineStruct("QueueRegionSplit", { size: 16, align: 8 }, {
  features: u64(0), version: u16(8), desc_num: u16(10), last_batch_head: u16(12), used_idx: u16(14),
});
/** libvhost-user.h: typedef struct DescStateSplit { u8 inflight; u8 padding[5]; u16 next; u64 counter; }. */
export const DescStateSplit = defineStruct("DescStateSplit", { size: 16, align: 8 }, {
  inflight: u8(0), next: u16(6), counter: u64(8),
});
export type QueueRegionSplit = StructValue<typeof QueueRegionSplit>;
export type DescStateSplit = StructValue<typeof DescStateSplit>;

/** What GET_INFLIGHT_FD returned (struct VhostUserInflight plus the fd). */
export interface InflightArea {
  /** The shared memory fd. */
  fd: number;
  mmapSize: bigint;
  mmapOffset: bigint;
  numQueues: number;
  queueSize: number;
}

/** A read-only look at an inflight area (its own mapping; the fd stays with its owner). */
export class InflightRegion implements Disposable {
  readonly #map: MemoryMapping;
  readonly #view: DataView;
  /** Bytes per queue: mmap_size / num_queues (each queue's region is 64-byte aligned by the back-end). */
  readonly perQueue: number;
  readonly numQueues: number;
  readonly queueSize: number;

  /** Maps `area` (MAP_SHARED, read-only use). */
  constructor(area: InflightArea) {
    if (area.numQueues < 1 || area.mmapSize === 0n) throw new VhostUserError("InvalidParam", "an inflight area of 0 queues or 0 bytes");
    const size = Number(area.mmapSize);
    const per = Math.floor(size / area.numQueues);
    if (per < QueueRegionSplit.size + area.queueSize * DescStateSplit.size)
      throw new VhostUserError("InvalidParam", `inflight area of ${size} bytes is too small for ${area.numQueues} queue(s) of ${area.queueSize}`);
    this.#map = new MemoryMapping(size, { fd: area.fd, offset: area.mmapOffset });
    this.#view = new DataView(this.#map.buffer);
    this.perQueue = per;
    this.numQueues = area.numQueues;
    this.queueSize = area.queueSize;
  }

  #check(q: number): number {
    if (!Number.isInteger(q) || q < 0 || q >= this.numQueues) throw new VhostUserError("InvalidParam", `queue ${q} outside 0..${this.numQueues - 1}`);
    return q * this.perQueue;
  }

  /** Queue `q`'s header (version 0 means the back-end never initialised it). */
  queue(q: number): QueueRegionSplit {
    return QueueRegionSplit.read(this.#view, this.#check(q));
  }

  /** The used index the back-end last published on queue `q`: where a fresh back-end resumes (SET_VRING_BASE). */
  usedIdx(q: number): number {
    // one aligned 16-bit load: the back-end may be writing it
    return new Uint16Array(this.#map.buffer, this.#check(q) + 14, 1)[0]!;
  }

  /** Descriptor state `i` of queue `q`. */
  desc(q: number, i: number): DescStateSplit {
    if (!Number.isInteger(i) || i < 0 || i >= this.queueSize) throw new VhostUserError("InvalidParam", `descriptor ${i} outside 0..${this.queueSize - 1}`);
    return DescStateSplit.read(this.#view, this.#check(q) + QueueRegionSplit.size + i * DescStateSplit.size);
  }

  /** Heads the back-end took but has not completed, in the order it took them (counter): what it must resubmit. */
  inflightHeads(q: number): number[] {
    const out: { head: number; counter: bigint }[] = [];
    for (let i = 0; i < this.queueSize; i++) {
      const d = this.desc(q, i);
      if (d.inflight) out.push({ head: i, counter: d.counter });
    }
    return out.sort((a, b) => (a.counter < b.counter ? -1 : a.counter > b.counter ? 1 : 0)).map((e) => e.head);
  }

  get closed(): boolean {
    return this.#map.closed;
  }

  close(): void {
    this.#map.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
