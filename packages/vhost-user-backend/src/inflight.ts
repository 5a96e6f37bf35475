// Inflight I/O tracking (vhost-user.rst "Inflight I/O tracking", protocol feature INFLIGHT_SHMFD): a shared
// memory area, allocated by the back-end on GET_INFLIGHT_FD and kept by the front-end, in which the back-end
// records which descriptor chains it has taken from the avail ring and not yet returned. When a back-end
// restarts (crash, upgrade, reconnect) the front-end hands the area to the new one with SET_INFLIGHT_FD and
// the requests that were in flight are resubmitted, in the order they were first fetched, instead of being
// lost with the old process.
//
// Layout, split virtqueues (the spec's structs; QEMU contrib/libvhost-user VuVirtqInflight/VuDescStateSplit):
//   struct QueueRegionSplit { u64 features; u16 version; u16 desc_num; u16 last_batch_head; u16 used_idx;
//                             struct DescStateSplit desc[desc_num]; }
//   struct DescStateSplit   { u8 inflight; u8 padding[5]; u16 next; u64 counter; }
// one region per queue, back to back, each `mmap_size / num_queues` bytes (what QEMU's front-end and
// vhost-user-master assume when they read used_idx); we size them ALIGN_UP(16 + 16 * queue_size, 64) like
// libvhost-user's INFLIGHT_ALIGNMENT.
//
// Nothing reads the area while we write it (the next reader is a future back-end process), so the fields
// are plain aligned typed-array stores in the spec's order; a crash can stop the sequence anywhere, and the
// spec's recovery (used_idx vs the used ring's idx, the last-batch list) repairs the one step that matters.
import { fstatSync } from "node:fs";
import { MemoryMapping, defineStruct, ftruncate, memfdCreate, bytes, u16, u64, u8, close as closeFd } from "@xen-vhost/vmm-sys-util";
import { BackendError } from "./error.js";

/** vhost-user.rst: struct DescStateSplit. */
export const DescStateSplit = defineStruct("DescStateSplit", { size: 16, align: 8 }, {
  inflight: u8(0),
  padding: bytes(1, 5),
  next: u16(6),
  counter: u64(8),
});

/** vhost-user.rst: struct QueueRegionSplit without its flexible `desc[]` (which starts at byte 16). */
export const QueueRegionSplit = defineStruct("QueueRegionSplit", { size: 16, align: 8 }, {
  features: u64(0),
  version: u16(8),
  desc_num: u16(10),
  last_batch_head: u16(12),
  used_idx: u16(14),
});

/** The region version the spec defines ("the version of this region, 1 now"). */
export const INFLIGHT_VERSION = 1;
/** libvhost-user INFLIGHT_ALIGNMENT: each queue's region is a multiple of this. */
export const INFLIGHT_ALIGNMENT = 64;

/** Bytes of one queue's region for `queueSize` descriptors. */
export function inflightQueueRegionSize(queueSize: number): number {
  const raw = QueueRegionSplit.size + DescStateSplit.size * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

// u16 indices of the header fields, and byte/u16/u32 offsets inside a DescStateSplit
const H_VERSION = 4;
const H_DESC_NUM = 5;
const H_LAST_BATCH_HEAD = 6;
const H_USED_IDX = 7;
const DESC0 = QueueRegionSplit.size;

/** One queue's QueueRegionSplit inside the mapped area. */
export class InflightQueue {
  readonly #u8: Uint8Array;
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  /** Descriptor states the region has room for. */
  readonly capacity: number;
  /** The counter the next fetched chain gets (one per queue, as libvhost-user). */
  #counter = 0;

  constructor(buffer: ArrayBuffer, byteOffset: number, byteLength: number) {
    if (byteOffset % 8 !== 0 || byteLength % 8 !== 0) throw new RangeError(`inflight queue region ${byteOffset}+${byteLength} is not 8-byte aligned`);
    this.#u8 = new Uint8Array(buffer, byteOffset, byteLength);
    this.#u16 = new Uint16Array(buffer, byteOffset, byteLength / 2);
    this.#u32 = new Uint32Array(buffer, byteOffset, byteLength / 4);
    this.capacity = Math.min(0xffff, Math.floor((byteLength - DESC0) / DescStateSplit.size));
  }

  get version(): number {
    return this.#u16[H_VERSION]!;
  }
  get descNum(): number {
    return this.#u16[H_DESC_NUM]!;
  }
  get usedIdx(): number {
    return this.#u16[H_USED_IDX]!;
  }
  get lastBatchHead(): number {
    return this.#u16[H_LAST_BATCH_HEAD]!;
  }

  /** Whether descriptor `head` is marked in flight. */
  isInflight(head: number): boolean {
    return this.#u8[DESC0 + 16 * head] === 1;
  }

  /** The fetch counter recorded for `head`. */
  counterOf(head: number): number {
    const w = (DESC0 + 16 * head + 8) / 4;
    return this.#u32[w]! + this.#u32[w + 1]! * 0x1_0000_0000;
  }

  /**
   * Starts tracking a ring of `descNum` descriptors whose used idx is `usedIdx`: version 1, nothing in
   * flight. Recording the ring's used idx matters: a ring resumed at index N (after a migration, or a
   * front-end that set the area up late) must not look like N completions the area never saw.
   */
  initialise(descNum: number, usedIdx = 0): void {
    if (!Number.isInteger(descNum) || descNum < 1 || descNum > this.capacity)
      throw new RangeError(`inflight region for ${descNum} descriptors does not fit ${this.capacity}`);
    this.#u8.fill(0);
    this.#u16[H_VERSION] = INFLIGHT_VERSION;
    this.#u16[H_DESC_NUM] = descNum;
    this.#u16[H_USED_IDX] = usedIdx & 0xffff;
    this.#counter = 0;
  }

  /**
   * Device reset: nothing is in flight any more (the driver re-creates its rings). The region goes back to
   * version 0, so the next ring start initialises it from that ring.
   */
  clear(): void {
    this.#u8.fill(0);
    this.#counter = 0;
  }

  /**
   * Ring start ("When reconnecting"): repairs the last batch if the old back-end stopped between publishing
   * the used idx and recording it, and returns the heads still in flight in the order they were fetched.
   * A region never used (version 0: as allocated, after a reset, or zeroed by the front-end) is initialised
   * for this ring at its used idx and has nothing in flight (libvhost-user's vu_check_queue_inflights).
   * @throws BackendError InvalidVring if the region contradicts the ring (size, indices, batch list).
   */
  recover(ringSize: number, ringUsedIdx: number): number[] {
    if (this.version === 0) {
      if (ringSize > this.capacity) throw new BackendError("InvalidVring", `inflight region has room for ${this.capacity} descriptors, the ring has ${ringSize}`);
      this.initialise(ringSize, ringUsedIdx);
      return [];
    }
    if (this.version !== INFLIGHT_VERSION) throw new BackendError("InvalidVring", `inflight region version ${this.version}, expected ${INFLIGHT_VERSION}`);
    const descNum = this.descNum;
    if (descNum < ringSize || descNum > this.capacity)
      throw new BackendError("InvalidVring", `inflight region tracks ${descNum} descriptors (room for ${this.capacity}), the ring has ${ringSize}`);
    if (this.usedIdx !== ringUsedIdx) {
      const batch = (ringUsedIdx - this.usedIdx) & 0xffff;
      if (batch > descNum)
        throw new BackendError("InvalidVring", `inflight used_idx ${this.usedIdx} is ${batch} entries behind the used ring's ${ringUsedIdx}`);
      let h = this.lastBatchHead;
      for (let k = 0; k < batch; k++) {
        if (h >= descNum) throw new BackendError("InvalidVring", `inflight last-batch list reaches descriptor ${h} of ${descNum}`);
        this.#u8[DESC0 + 16 * h] = 0;
        h = this.#u16[(DESC0 + 16 * h + 6) / 2]!;
      }
      this.#u16[H_USED_IDX] = ringUsedIdx;
    }
    const heads: number[] = [];
    let max = -1;
    for (let i = 0; i < descNum; i++) {
      const flag = this.#u8[DESC0 + 16 * i]!;
      if (flag === 0) continue;
      if (flag !== 1 || i >= ringSize) throw new BackendError("InvalidVring", `inflight descriptor ${i} has state ${flag} in a ${ringSize}-entry ring`);
      heads.push(i);
      max = Math.max(max, this.counterOf(i));
    }
    heads.sort((a, b) => this.counterOf(a) - this.counterOf(b));
    this.#counter = max + 1;
    return heads;
  }

  /** A chain was fetched from the avail ring: counter, then the inflight flag. */
  fetched(head: number): void {
    const base = DESC0 + 16 * head;
    const w = (base + 8) / 4;
    const c = this.#counter++;
    this.#u32[w] = c % 0x1_0000_0000;
    this.#u32[w + 1] = Math.floor(c / 0x1_0000_0000);
    this.#u8[base] = 1;
  }

  /** Before the used element and idx are written: link `head` into the last batch. */
  beforeUsed(head: number): void {
    this.#u16[(DESC0 + 16 * head + 6) / 2] = this.#u16[H_LAST_BATCH_HEAD]!;
    this.#u16[H_LAST_BATCH_HEAD] = head;
  }

  /** After the used idx was published as `usedIdx`: the chain is no longer in flight. */
  afterUsed(head: number, usedIdx: number): void {
    this.#u8[DESC0 + 16 * head] = 0;
    this.#u16[H_USED_IDX] = usedIdx;
  }
}

/** What GET/SET_INFLIGHT_FD carry (the spec's "Inflight description"). */
export interface InflightDescription {
  mmapSize: bigint;
  mmapOffset: bigint;
  numQueues: number;
  queueSize: number;
}

/** The whole mapped area: one InflightQueue per virtqueue. */
export class InflightArea implements Disposable {
  readonly numQueues: number;
  readonly queueSize: number;
  readonly mmapSize: number;
  readonly #mapping: MemoryMapping;
  readonly #queues: InflightQueue[];

  private constructor(mapping: MemoryMapping, numQueues: number, queueSize: number, perQueue: number) {
    this.#mapping = mapping;
    this.numQueues = numQueues;
    this.queueSize = queueSize;
    this.mmapSize = mapping.length;
    // A new area stays zeroed (version 0) until each ring starts on it: libvhost-user does the same, and
    // the ring's used idx is only known then.
    this.#queues = Array.from({ length: numQueues }, (_, i) => new InflightQueue(mapping.buffer, i * perQueue, perQueue));
  }

  /**
   * GET_INFLIGHT_FD: a new zeroed area in a memfd. Returns the area and the fd to send (caller closes it).
   * @throws RangeError for counts outside 1..0xffff / 1..32768.
   */
  static allocate(numQueues: number, queueSize: number): { area: InflightArea; fd: number; description: InflightDescription } {
    checkCounts(numQueues, queueSize);
    const per = inflightQueueRegionSize(queueSize);
    const size = per * numQueues;
    const fd = memfdCreate("vhost-user-inflight");
    try {
      ftruncate(fd, size);
      const area = new InflightArea(new MemoryMapping(size, { fd }), numQueues, queueSize, per);
      return { area, fd, description: { mmapSize: BigInt(size), mmapOffset: 0n, numQueues, queueSize } };
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  /**
   * SET_INFLIGHT_FD: maps an area a front-end kept (borrowed fd: the caller closes it afterwards). The
   * file must hold the whole described range (a shorter file would fault on access).
   * @throws BackendError InvalidParam for a description that does not fit the file or the layout.
   */
  static fromFd(fd: number, d: InflightDescription): InflightArea {
    try {
      checkCounts(d.numQueues, d.queueSize);
    } catch (err) {
      throw new BackendError("InvalidParam", `SET_INFLIGHT_FD: ${(err as Error).message}`);
    }
    const per = d.mmapSize / BigInt(d.numQueues);
    if (d.mmapSize === 0n || d.mmapSize % BigInt(d.numQueues) !== 0n || per % 8n !== 0n || d.mmapSize > 1n << 31n)
      throw new BackendError("InvalidParam", `SET_INFLIGHT_FD: ${d.mmapSize} bytes for ${d.numQueues} queues of ${d.queueSize} is not a split-ring inflight area`);
    const perQueue = Number(per);
    if (perQueue < QueueRegionSplit.size + DescStateSplit.size * d.queueSize)
      throw new BackendError("InvalidParam", `SET_INFLIGHT_FD: ${perQueue} bytes per queue cannot track ${d.queueSize} descriptors`);
    let fileSize: bigint;
    try {
      fileSize = fstatSync(fd, { bigint: true }).size;
    } catch (err) {
      throw new BackendError("InvalidParam", `SET_INFLIGHT_FD: fd ${fd} cannot be examined: ${(err as Error).message}`, { cause: err });
    }
    if (d.mmapOffset + d.mmapSize > fileSize)
      throw new BackendError("InvalidParam", `SET_INFLIGHT_FD: ${d.mmapSize} bytes at offset ${d.mmapOffset} extend past the ${fileSize}-byte file`);
    let mapping: MemoryMapping;
    try {
      mapping = new MemoryMapping(Number(d.mmapSize), { fd, offset: d.mmapOffset });
    } catch (err) {
      throw new BackendError("InvalidParam", `SET_INFLIGHT_FD: mmap failed: ${(err as Error).message}`, { cause: err });
    }
    return new InflightArea(mapping, d.numQueues, d.queueSize, perQueue);
  }

  /** The region of queue `index`, if the area has one. */
  queue(index: number): InflightQueue | undefined {
    return this.#queues[index];
  }

  /** Device reset: nothing in flight on any queue. */
  clear(): void {
    for (const q of this.#queues) q.clear();
  }

  get closed(): boolean {
    return this.#mapping.closed;
  }

  /** Unmaps (the front-end keeps the memory alive through its fd). Idempotent. */
  close(): void {
    this.#mapping.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function checkCounts(numQueues: number, queueSize: number): void {
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 0xffff) throw new RangeError(`num_queues ${numQueues} must be 1..65535`);
  if (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 32768) throw new RangeError(`queue_size ${queueSize} must be 1..32768`);
}
