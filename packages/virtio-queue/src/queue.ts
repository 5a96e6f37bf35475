// The device side of a split virtqueue: rust-vmm virtio-queue queue.rs `Queue` (virtio 1.2 2.7). A device
// (or a vhost-user backend) configures size/addresses/ready from the transport, pops available chains,
// returns them through the used ring and decides whether to interrupt the driver.
//
// Everything in the rings is guest-controlled. Each chain is walked and validated completely before it is
// returned: index ranges, loops, lengths against guest memory, indirect tables, readable-before-writable
// order. A malformed chain is consumed (the queue moves past it, so one bad entry cannot wedge the queue)
// and reported as a VirtqueueError carrying its `head`, which the device should return used with len 0.
import { GuestAddress, GuestMemoryError, type GuestAddressLike, type GuestMemory } from "@xen-vhost/vm-memory";
import type { DescriptorChain } from "./chain.js";
import {
  AVAIL_FLAGS,
  AVAIL_IDX,
  AVAIL_RING,
  AVAIL_RING_ALIGN,
  DESC_TABLE_ALIGN,
  MAX_QUEUE_SIZE,
  USED_FLAGS,
  USED_IDX,
  USED_RING,
  USED_RING_ALIGN,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_USED_F_NO_NOTIFY,
  availEventOffset,
  availRingSize,
  descTableSize,
  isPowerOfTwo,
  usedEventOffset,
  usedRingSize,
  vringNeedEvent,
} from "./defs.js";
import { VirtqueueError } from "./error.js";
import { GuestPart, addrAdd } from "./guest-part.js";
import { inPlace } from "./in-place.js";
import { ChainWalker } from "./walk.js";

export interface QueueOptions {
  /** Largest size the device supports (default 32768). */
  maxSize?: number;
  /**
   * Most descriptors one chain may have, indirect entries included (default max(size, 1024): Linux lets
   * indirect chains exceed the queue size, QEMU and vhost cap them near 1024).
   */
  maxChainLength?: number;
  /** VIRTIO_RING_F_INDIRECT_DESC was negotiated (default true); otherwise indirect descriptors are errors. */
  indirect?: boolean;
}

/**
 * In-place views of the three parts, when each lies inside one region mapped up front (memfd, Xen foreign
 * mappings): the hot path then reads and writes the rings without a GuestMemory lookup per access. Index
 * fields go through Atomics (one aligned access each, as GuestMemory.load16/store16 do); used elements are
 * single aligned 32-bit stores published by the used idx store after a fence.
 */
interface RingViews {
  /** The descriptor table (`size * 16` bytes); `descBytes` is the same memory, to detect unmapping. */
  readonly desc: DataView;
  readonly descBytes: Uint8Array;
  /** struct virtq_avail as u16s: [0] flags, [1] idx, [2 + i] ring[i], [2 + size] used_event. */
  readonly avail: Uint16Array;
  /** struct virtq_used as u16s: [0] flags, [1] idx, [2 + 4 * size] avail_event. */
  readonly used16: Uint16Array;
  /** struct virtq_used as u32s: ring[i].id at [1 + 2 * i], ring[i].len at [2 + 2 * i]. */
  readonly used32: Uint32Array;
}

/** The parts' addresses as plain numbers, available once the configuration is validated. */
interface Rings {
  readonly size: number;
  readonly desc: GuestPart;
  readonly avail: GuestPart;
  readonly used: GuestPart;
  /** Dropped (for good) once the memory is closed or unmapped: the GuestMemory path then reports it. */
  views: RingViews | undefined;
}

function ringViews(mem: GuestMemory, desc: GuestAddress, avail: GuestAddress, used: GuestAddress, size: number): RingViews | undefined {
  const d = inPlace(mem, desc, descTableSize(size), 1);
  const a = inPlace(mem, avail, availRingSize(size), 2);
  const u = inPlace(mem, used, usedRingSize(size), 4);
  if (!d || !a || !u) return undefined;
  return {
    desc: new DataView(d.buffer, d.byteOffset, d.byteLength),
    descBytes: d,
    avail: new Uint16Array(a.buffer, a.byteOffset, a.byteLength >>> 1),
    used16: new Uint16Array(u.buffer, u.byteOffset, u.byteLength >>> 1),
    // the used ring's size is 6 + 8 * size: the last u32 slot ends before avail_event's padding
    used32: new Uint32Array(u.buffer, u.byteOffset, u.byteLength >>> 2),
  };
}

function guestErr(e: unknown, what: string, head?: number): never {
  if (e instanceof GuestMemoryError) {
    const opts = head === undefined ? { cause: e } : { cause: e, head };
    throw new VirtqueueError("GuestMemory", `${what}: ${e.message}`, opts);
  }
  throw e;
}

/** A split virtqueue, device side. */
export class Queue {
  readonly maxSize: number;
  #mem: GuestMemory;
  #size: number;
  #ready = false;
  #descTable = new GuestAddress(0);
  #availRing = new GuestAddress(0);
  #usedRing = new GuestAddress(0);
  #eventIdx = false;
  #indirect: boolean;
  readonly #maxChainOption: number | undefined;
  #nextAvail = 0;
  #nextUsed = 0;
  #signalledUsed: number | undefined;
  #rings: Rings | undefined;
  readonly #walker = new ChainWalker();

  constructor(mem: GuestMemory, options: QueueOptions = {}) {
    const maxSize = options.maxSize ?? MAX_QUEUE_SIZE;
    if (!isPowerOfTwo(maxSize) || maxSize > MAX_QUEUE_SIZE) throw new RangeError(`maxSize ${maxSize} is not a power of two <= ${MAX_QUEUE_SIZE}`);
    this.maxSize = maxSize;
    this.#size = maxSize;
    this.#mem = mem;
    this.#indirect = options.indirect ?? true;
    if (options.maxChainLength !== undefined && (!Number.isInteger(options.maxChainLength) || options.maxChainLength < 1))
      throw new RangeError(`maxChainLength ${options.maxChainLength} must be a positive integer`);
    this.#maxChainOption = options.maxChainLength;
  }

  /** The guest memory the rings live in; replace it on a new memory table (vhost-user SET_MEM_TABLE). */
  get memory(): GuestMemory {
    return this.#mem;
  }
  set memory(mem: GuestMemory) {
    this.#mem = mem;
    this.#rings = undefined;
  }

  /** Queue size as set by the driver (any u16 is accepted here; `isValid()` judges it). */
  get size(): number {
    return this.#size;
  }
  set size(n: number) {
    if (!Number.isInteger(n) || n < 0 || n > 0xffff) throw new RangeError(`queue size ${n} is not a u16`);
    this.#size = n;
    this.#rings = undefined;
  }

  get ready(): boolean {
    return this.#ready;
  }
  set ready(on: boolean) {
    this.#ready = on;
    this.#rings = undefined;
  }

  get descTable(): GuestAddress {
    return this.#descTable;
  }
  set descTable(addr: GuestAddressLike) {
    this.#descTable = GuestAddress.from(addr);
    this.#rings = undefined;
  }

  get availRing(): GuestAddress {
    return this.#availRing;
  }
  set availRing(addr: GuestAddressLike) {
    this.#availRing = GuestAddress.from(addr);
    this.#rings = undefined;
  }

  get usedRing(): GuestAddress {
    return this.#usedRing;
  }
  set usedRing(addr: GuestAddressLike) {
    this.#usedRing = GuestAddress.from(addr);
    this.#rings = undefined;
  }

  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  get eventIdx(): boolean {
    return this.#eventIdx;
  }
  set eventIdx(on: boolean) {
    this.#eventIdx = on;
    this.#signalledUsed = undefined;
  }

  /** VIRTIO_RING_F_INDIRECT_DESC negotiated. */
  get indirect(): boolean {
    return this.#indirect;
  }
  set indirect(on: boolean) {
    this.#indirect = on;
  }

  /** Index of the next avail ring entry to consume (vhost-user GET/SET_VRING_BASE). */
  get nextAvail(): number {
    return this.#nextAvail;
  }
  set nextAvail(v: number) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`index ${v} is not a u16`);
    this.#nextAvail = v;
  }

  /** Index of the next used ring entry to fill. */
  get nextUsed(): number {
    return this.#nextUsed;
  }
  set nextUsed(v: number) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`index ${v} is not a u16`);
    this.#nextUsed = v;
    this.#signalledUsed = undefined;
  }

  /** Back to the state after construction (virtio reset). */
  reset(): void {
    this.#ready = false;
    this.#size = this.maxSize;
    this.#descTable = this.#availRing = this.#usedRing = new GuestAddress(0);
    this.#eventIdx = false;
    this.#nextAvail = this.#nextUsed = 0;
    this.#signalledUsed = undefined;
    this.#rings = undefined;
  }

  /**
   * Checks the configuration (rust-vmm `is_valid`): ready, size a power of two <= maxSize, parts aligned
   * (virtio 1.2 2.7 table "Virtqueue Part Alignment") and inside guest memory.
   * @throws VirtqueueError `InvalidConfig` naming what is wrong.
   */
  validate(): void {
    this.#config();
  }

  isValid(): boolean {
    try {
      this.#config();
      return true;
    } catch (e) {
      if (e instanceof VirtqueueError) return false;
      throw e;
    }
  }

  #config(): Rings {
    if (this.#rings) return this.#rings;
    const size = this.#size;
    if (!this.#ready) throw new VirtqueueError("InvalidConfig", "queue is not ready");
    if (!isPowerOfTwo(size) || size > this.maxSize)
      throw new VirtqueueError("InvalidConfig", `queue size ${size} is not a power of two <= ${this.maxSize}`);
    const part = (name: string, addr: GuestAddress, len: number, align: number): GuestPart => {
      if (!addr.isAligned(align)) throw new VirtqueueError("InvalidConfig", `${name} ${addr.toString()} is not ${align}-byte aligned`);
      let ok: boolean;
      try {
        ok = this.#mem.checkRange(addr, len);
      } catch (e) {
        guestErr(e, name);
      }
      if (!ok) throw new VirtqueueError("InvalidConfig", `${name} ${addr.toString()} (+${len}) is outside guest memory`);
      return new GuestPart(addr.value, len);
    };
    const rings: Rings = {
      size,
      desc: part("descriptor table", this.#descTable, descTableSize(size), DESC_TABLE_ALIGN),
      avail: part("avail ring", this.#availRing, availRingSize(size), AVAIL_RING_ALIGN),
      used: part("used ring", this.#usedRing, usedRingSize(size), USED_RING_ALIGN),
      views: ringViews(this.#mem, this.#descTable, this.#availRing, this.#usedRing, size),
    };
    this.#rings = rings;
    return rings;
  }

  /** The in-place views while they are usable. */
  #views(r: Rings): RingViews | undefined {
    const v = r.views;
    if (v === undefined) return undefined;
    if (!this.#mem.closed && v.descBytes.length !== 0 && v.avail.length !== 0 && v.used16.length !== 0) return v;
    r.views = undefined;
    return undefined;
  }

  /** The driver's avail idx (one aligned 16-bit load). @throws VirtqueueError `InvalidConfig`. */
  availIdx(): number {
    const r = this.#config();
    const v = this.#views(r);
    if (v !== undefined) return Atomics.load(v.avail, 1);
    try {
      return this.#mem.load16(r.avail.addr(AVAIL_IDX));
    } catch (e) {
      guestErr(e, "avail idx");
    }
  }

  /** The used idx as published in the ring. */
  usedIdx(): number {
    const r = this.#config();
    const v = this.#views(r);
    if (v !== undefined) return Atomics.load(v.used16, 1);
    try {
      return this.#mem.load16(r.used.addr(USED_IDX));
    } catch (e) {
      guestErr(e, "used idx");
    }
  }

  /** Whether the driver has made chains available that were not popped yet. */
  hasAvailable(): boolean {
    return this.availIdx() !== this.#nextAvail;
  }

  /**
   * The next available chain, validated, or undefined if none. The queue moves past the chain even if it is
   * malformed; the error's `head` names it so the device can return it used (len 0).
   * @throws VirtqueueError `InvalidConfig`, `InvalidAvailIdx` (nothing consumed), `InvalidIndex`,
   *   `DescriptorLoop`, `ChainTooLong`, `InvalidIndirect`, `ReadAfterWrite`, `OutOfBounds`, `GuestMemory`.
   */
  pop(): DescriptorChain | undefined {
    const r = this.#config();
    const mem = this.#mem;
    const v = this.#views(r);
    let head: number;
    if (v !== undefined) {
      const availIdx = Atomics.load(v.avail, 1);
      const pending = (availIdx - this.#nextAvail) & 0xffff;
      if (pending === 0) return undefined;
      if (pending > r.size)
        throw new VirtqueueError("InvalidAvailIdx", `avail idx ${availIdx} is ${pending} entries past ${this.#nextAvail} (queue size ${r.size})`);
      // Ring entries and descriptors were written before the index: read them only after it.
      mem.fence();
      head = Atomics.load(v.avail, 2 + (this.#nextAvail & (r.size - 1)));
    } else try {
      const availIdx = mem.load16(r.avail.addr(AVAIL_IDX));
      const pending = (availIdx - this.#nextAvail) & 0xffff;
      if (pending === 0) return undefined;
      if (pending > r.size)
        throw new VirtqueueError("InvalidAvailIdx", `avail idx ${availIdx} is ${pending} entries past ${this.#nextAvail} (queue size ${r.size})`);
      // Ring entries and descriptors were written before the index: read them only after it.
      mem.fence();
      head = mem.load16(r.avail.addr(AVAIL_RING + 2 * (this.#nextAvail & (r.size - 1))));
    } catch (e) {
      guestErr(e, "avail ring");
    }
    this.#nextAvail = (this.#nextAvail + 1) & 0xffff;
    return this.#walker.walk(mem, r.desc, v?.desc, r.size, head, this.#indirect, this.#maxChainOption ?? Math.max(r.size, 1024));
  }

  /**
   * The validated chain starting at descriptor `head` of the table, without touching the avail ring or
   * `nextAvail`: for heads that come from elsewhere (vhost-user inflight resubmission after a reconnect,
   * vhost-user.rst "Inflight I/O tracking"). Same checks as `pop()`.
   * @throws VirtqueueError `InvalidConfig`, or one carrying `head`: `InvalidIndex`, `DescriptorLoop`,
   *   `ChainTooLong`, `InvalidIndirect`, `ReadAfterWrite`, `OutOfBounds`, `GuestMemory`.
   */
  chainAt(head: number): DescriptorChain {
    const r = this.#config();
    return this.#walker.walk(this.#mem, r.desc, this.#views(r)?.desc, r.size, head, this.#indirect, this.#maxChainOption ?? Math.max(r.size, 1024));
  }

  /**
   * Returns a chain to the driver: writes the used element, then (after a fence) the used idx with one
   * aligned 16-bit store. With `publish: false`, call `publishUsed()` after a batch.
   * @throws VirtqueueError `InvalidIndex` for a head outside the table, `InvalidConfig`.
   */
  addUsed(head: number, len: number, options?: { publish?: boolean }): void {
    const r = this.#config();
    if (!Number.isInteger(head) || head < 0 || head >= r.size)
      throw new VirtqueueError("InvalidIndex", `used id ${head} outside a ${r.size}-entry table`);
    if (!Number.isInteger(len) || len < 0 || len > 0xffffffff) throw new RangeError(`used len ${len} is not a u32`);
    const v = this.#views(r);
    if (v !== undefined) {
      const i = 1 + 2 * (this.#nextUsed & (r.size - 1));
      v.used32[i] = head;
      v.used32[i + 1] = len;
    } else {
      const slot = r.used.addr(USED_RING + 8 * (this.#nextUsed & (r.size - 1)));
      try {
        this.#mem.store32(slot, head);
        this.#mem.store32(addrAdd(slot, 4), len);
      } catch (e) {
        guestErr(e, "used ring");
      }
    }
    this.#nextUsed = (this.#nextUsed + 1) & 0xffff;
    if (options?.publish ?? true) this.publishUsed();
  }

  /** Publishes `nextUsed` as the used idx (fence, then one aligned 16-bit store). */
  publishUsed(): void {
    const r = this.#config();
    const v = this.#views(r);
    if (v !== undefined) {
      this.#mem.fence();
      Atomics.store(v.used16, 1, this.#nextUsed);
      return;
    }
    try {
      this.#mem.fence();
      this.#mem.store16(r.used.addr(USED_IDX), this.#nextUsed);
    } catch (e) {
      guestErr(e, "used idx");
    }
  }

  /**
   * Whether the driver should be interrupted for the used entries added since the last call (virtio 1.2
   * 2.7.10: used_event with EVENT_IDX, otherwise VIRTQ_AVAIL_F_NO_INTERRUPT).
   */
  needsNotification(): boolean {
    const r = this.#config();
    try {
      this.#mem.fence();
      const used = this.#nextUsed;
      const old = this.#signalledUsed;
      this.#signalledUsed = used;
      const v = this.#views(r);
      if (v !== undefined) {
        if (!this.#eventIdx) return (Atomics.load(v.avail, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
        return old === undefined || vringNeedEvent(Atomics.load(v.avail, 2 + r.size), used, old);
      }
      if (!this.#eventIdx) return (this.#mem.load16(r.avail.addr(AVAIL_FLAGS)) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
      if (old === undefined) return true;
      return vringNeedEvent(this.#mem.load16(r.avail.addr(usedEventOffset(r.size))), used, old);
    } catch (e) {
      guestErr(e, "avail ring");
    }
  }

  /**
   * Asks the driver for kicks (clears VIRTQ_USED_F_NO_NOTIFY, or sets avail_event = nextAvail) and returns
   * whether chains are already available (the driver may have added them before seeing the request).
   */
  enableNotification(): boolean {
    const r = this.#config();
    const v = this.#views(r);
    if (v !== undefined) {
      if (this.#eventIdx) Atomics.store(v.used16, 2 + 4 * r.size, this.#nextAvail);
      else Atomics.store(v.used16, 0, 0);
      this.#mem.fence();
      return Atomics.load(v.avail, 1) !== this.#nextAvail;
    }
    try {
      if (this.#eventIdx) this.#mem.store16(r.used.addr(availEventOffset(r.size)), this.#nextAvail);
      else this.#mem.store16(r.used.addr(USED_FLAGS), 0);
      this.#mem.fence();
      return this.#mem.load16(r.avail.addr(AVAIL_IDX)) !== this.#nextAvail;
    } catch (e) {
      guestErr(e, "used ring");
    }
  }

  /** Asks the driver not to kick (VIRTQ_USED_F_NO_NOTIFY; with EVENT_IDX the driver kicks only at avail_event). */
  disableNotification(): void {
    const r = this.#config();
    if (this.#eventIdx) return;
    const v = this.#views(r);
    if (v !== undefined) {
      Atomics.store(v.used16, 0, VIRTQ_USED_F_NO_NOTIFY);
      return;
    }
    try {
      this.#mem.store16(r.used.addr(USED_FLAGS), VIRTQ_USED_F_NO_NOTIFY);
    } catch (e) {
      guestErr(e, "used ring");
    }
  }
}
