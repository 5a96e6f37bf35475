// The device side of a split virtqueue: rust-vmm virtio-queue queue.rs `Queue` (virtio 1.2 2.7). A device
// (or a vhost-user backend) configures size/addresses/ready from the transport, pops available chains,
// returns them through the used ring and decides whether to interrupt the driver.
//
// Everything in the rings is guest-controlled. Each chain is walked and validated completely before it is
// returned: index ranges, loops, lengths against guest memory, indirect tables, readable-before-writable
// order. A malformed chain is consumed (the queue moves past it, so one bad entry cannot wedge the queue)
// and reported as a VirtqueueError carrying its `head`, which the device should return used with len 0.
import { GuestAddress, GuestMemoryError, type GuestAddressLike, type GuestMemory } from "@xen-vhost/vm-memory";
import { DescriptorChain } from "./chain.js";
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
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  availEventOffset,
  availRingSize,
  descTableSize,
  isPowerOfTwo,
  usedEventOffset,
  usedRingSize,
  vringNeedEvent,
} from "./defs.js";
import { Descriptor } from "./descriptor.js";
import { VirtqueueError } from "./error.js";
import { GuestPart, addrAdd } from "./guest-part.js";

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

/** The parts' addresses as plain numbers, available once the configuration is validated. */
interface Rings {
  readonly size: number;
  readonly desc: GuestPart;
  readonly avail: GuestPart;
  readonly used: GuestPart;
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
  /** Generation-stamped visit marks for loop detection: no allocation per chain. */
  #visited = new Uint32Array(0);
  #generation = 0;
  readonly #scratch = new Uint8Array(16);
  readonly #scratchView = new DataView(this.#scratch.buffer);

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
    const rings = {
      size,
      desc: part("descriptor table", this.#descTable, descTableSize(size), DESC_TABLE_ALIGN),
      avail: part("avail ring", this.#availRing, availRingSize(size), AVAIL_RING_ALIGN),
      used: part("used ring", this.#usedRing, usedRingSize(size), USED_RING_ALIGN),
    };
    this.#rings = rings;
    return rings;
  }

  /** The driver's avail idx (one aligned 16-bit load). @throws VirtqueueError `InvalidConfig`. */
  availIdx(): number {
    const r = this.#config();
    try {
      return this.#mem.load16(r.avail.addr(AVAIL_IDX));
    } catch (e) {
      guestErr(e, "avail idx");
    }
  }

  /** The used idx as published in the ring. */
  usedIdx(): number {
    const r = this.#config();
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
    let head: number;
    try {
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
    return this.#walk(r, head);
  }

  #mark(idx: number): boolean {
    if (this.#visited[idx] === this.#generation) return false;
    this.#visited[idx] = this.#generation;
    return true;
  }

  #newGeneration(entries: number): void {
    if (this.#visited.length < entries) this.#visited = new Uint32Array(Math.max(entries, this.#visited.length * 2));
    this.#generation = (this.#generation + 1) >>> 0;
    if (this.#generation === 0) {
      this.#visited.fill(0);
      this.#generation = 1;
    }
  }

  #readDesc(at: number | bigint, head: number): Descriptor {
    try {
      this.#mem.readInto(at, this.#scratch);
    } catch (e) {
      guestErr(e, `descriptor at 0x${at.toString(16)}`, head);
    }
    const v = this.#scratchView;
    return new Descriptor(v.getBigUint64(0, true), v.getUint32(8, true), v.getUint16(12, true), v.getUint16(14, true));
  }

  #inMemory(addr: bigint, len: number, head: number): boolean {
    try {
      return this.#mem.checkRange(addr, len);
    } catch (e) {
      guestErr(e, "descriptor buffer", head);
    }
  }

  #walk(r: Rings, head: number): DescriptorChain {
    const fail = (kind: ConstructorParameters<typeof VirtqueueError>[0], msg: string): never => {
      throw new VirtqueueError(kind, `chain ${head}: ${msg}`, { head });
    };
    if (head >= r.size) fail("InvalidIndex", `head index ${head} outside a ${r.size}-entry table`);
    const maxLen = this.#maxChainOption ?? Math.max(r.size, 1024);
    const descs: Descriptor[] = [];
    let table = r.desc;
    let entries = r.size;
    let idx = head;
    let indirect = false;
    let seenWrite = false;
    this.#newGeneration(entries);
    for (;;) {
      if (idx >= entries) fail("InvalidIndex", `next index ${idx} outside a ${entries}-entry ${indirect ? "indirect " : ""}table`);
      if (!this.#mark(idx)) fail("DescriptorLoop", `descriptor ${idx} visited twice`);
      const d = this.#readDesc(table.addr(idx * 16), head);
      if ((d.flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // virtio 1.2 2.7.5.3.1: one table per descriptor, no nesting, INDIRECT and NEXT not both.
        if (indirect) fail("InvalidIndirect", "indirect descriptor inside an indirect table");
        if (!this.#indirect) fail("InvalidIndirect", "indirect descriptor but VIRTIO_RING_F_INDIRECT_DESC not negotiated");
        if ((d.flags & VIRTQ_DESC_F_NEXT) !== 0) fail("InvalidIndirect", "indirect descriptor with VIRTQ_DESC_F_NEXT");
        if (d.len === 0 || d.len % 16 !== 0) fail("InvalidIndirect", `indirect table length ${d.len} is not a positive multiple of 16`);
        const n = d.len / 16;
        if (n > 65536) fail("InvalidIndirect", `indirect table of ${n} entries (next is 16-bit)`);
        if (descs.length + n > maxLen) fail("ChainTooLong", `indirect table of ${n} descriptors exceeds ${maxLen}`);
        if (!this.#inMemory(d.addr, d.len, head)) fail("OutOfBounds", `indirect table 0x${d.addr.toString(16)} (+${d.len}) outside guest memory`);
        table = new GuestPart(d.addr, d.len);
        entries = n;
        idx = 0;
        indirect = true;
        this.#newGeneration(entries);
        continue;
      }
      if ((d.flags & VIRTQ_DESC_F_WRITE) !== 0) seenWrite = true;
      else if (seenWrite) fail("ReadAfterWrite", `device-readable descriptor ${idx} after a device-writable one`);
      if (d.len > 0 && !this.#inMemory(d.addr, d.len, head))
        fail("OutOfBounds", `buffer 0x${d.addr.toString(16)} (+${d.len}) of descriptor ${idx} outside guest memory`);
      descs.push(d);
      if (descs.length > maxLen) fail("ChainTooLong", `more than ${maxLen} descriptors`);
      if ((d.flags & VIRTQ_DESC_F_NEXT) === 0) break;
      idx = d.next;
    }
    return new DescriptorChain(this.#mem, head, descs, indirect);
  }

  /**
   * Returns a chain to the driver: writes the used element, then (after a fence) the used idx with one
   * aligned 16-bit store. With `publish: false`, call `publishUsed()` after a batch.
   * @throws VirtqueueError `InvalidIndex` for a head outside the table, `InvalidConfig`.
   */
  addUsed(head: number, len: number, options: { publish?: boolean } = {}): void {
    const r = this.#config();
    if (!Number.isInteger(head) || head < 0 || head >= r.size)
      throw new VirtqueueError("InvalidIndex", `used id ${head} outside a ${r.size}-entry table`);
    if (!Number.isInteger(len) || len < 0 || len > 0xffffffff) throw new RangeError(`used len ${len} is not a u32`);
    const slot = r.used.addr(USED_RING + 8 * (this.#nextUsed & (r.size - 1)));
    try {
      this.#mem.store32(slot, head);
      this.#mem.store32(addrAdd(slot, 4), len);
    } catch (e) {
      guestErr(e, "used ring");
    }
    this.#nextUsed = (this.#nextUsed + 1) & 0xffff;
    if (options.publish ?? true) this.publishUsed();
  }

  /** Publishes `nextUsed` as the used idx (fence, then one aligned 16-bit store). */
  publishUsed(): void {
    const r = this.#config();
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
    try {
      this.#mem.store16(r.used.addr(USED_FLAGS), VIRTQ_USED_F_NO_NOTIFY);
    } catch (e) {
      guestErr(e, "used ring");
    }
  }
}
