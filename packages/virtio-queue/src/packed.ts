// Packed virtqueues (virtio 1.2 section 2.8), both sides, modelled on Linux drivers/virtio/virtio_ring.c
// (packed part) and QEMU hw/virtio/virtio.c (virtqueue_packed_pop). One ring of descriptors that the
// driver makes available and the device overwrites with used entries; ownership is signalled by the
// AVAIL/USED flag bits against each side's wrap counter. The head descriptor's flags are the "index":
// they are written last, after a fence, with one aligned 16-bit store, and read first with one load.
import { GuestAddress, GuestMemoryError, type GuestAddressLike, type GuestMemory } from "@xen-vhost/vm-memory";
import { defineStruct, u16, u32, u64 } from "@xen-vhost/vmm-sys-util";
import { DescriptorChain } from "./chain.js";
import { MAX_QUEUE_SIZE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, vringNeedEvent } from "./defs.js";
import { Descriptor } from "./descriptor.js";
import type { AddOptions, ChainSpec, UsedElement } from "./driver.js";
import { VirtqueueError } from "./error.js";
import { GuestPart, addrAdd } from "./guest-part.js";

/** virtio_ring.h: VRING_PACKED_DESC_F_AVAIL (bit 7). */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** virtio_ring.h: VRING_PACKED_DESC_F_USED (bit 15). */
export const VIRTQ_DESC_F_USED = 1 << 15;
/** virtio_ring.h: VRING_PACKED_EVENT_FLAG_ENABLE / _DISABLE / _DESC (virtio 1.2 2.8.10). */
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
export const RING_EVENT_FLAGS_DESC = 2;

/** virtio 1.2 2.8.13: struct pvirtq_desc { le64 addr; le32 len; le16 id; le16 flags; } */
export const PvirtqDesc = defineStruct("pvirtq_desc", { size: 16, align: 16 }, { addr: u64(0), len: u32(8), id: u16(12), flags: u16(14) });
/** virtio 1.2 2.8.14: struct pvirtq_event_suppress { le16 desc (off_wrap); le16 flags; } */
export const PvirtqEventSuppress = defineStruct("pvirtq_event_suppress", { size: 4, align: 4 }, { desc: u16(0), flags: u16(2) });

const DESC_LEN = 8;
const DESC_ID = 12;
const DESC_FLAGS = 14;
const EVENT_OFF_WRAP = 0;
const EVENT_FLAGS = 2;
/** virtio 1.2 2.8.10.1 table: descriptor ring 16, event suppression areas 4. */
export const PACKED_RING_ALIGN = 16;
export const EVENT_SUPPRESS_ALIGN = 4;

function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE)
    throw new VirtqueueError("InvalidConfig", `packed queue size ${size} outside 1..${MAX_QUEUE_SIZE}`);
}

function checkPart(mem: GuestMemory, name: string, addr: GuestAddress, len: number, align: number): GuestPart {
  if (!addr.isAligned(align)) throw new VirtqueueError("InvalidConfig", `${name} ${addr.toString()} is not ${align}-byte aligned`);
  let ok: boolean;
  try {
    ok = mem.checkRange(addr, len);
  } catch (e) {
    if (e instanceof GuestMemoryError) throw new VirtqueueError("GuestMemory", `${name}: ${e.message}`, { cause: e });
    throw e;
  }
  if (!ok) throw new VirtqueueError("InvalidConfig", `${name} ${addr.toString()} (+${len}) is outside guest memory`);
  return new GuestPart(addr.value, len);
}

function guestErr(e: unknown, what: string): never {
  if (e instanceof GuestMemoryError) throw new VirtqueueError("GuestMemory", `${what}: ${e.message}`, { cause: e });
  throw e;
}

/** Whether `flags` mark a descriptor available for a reader whose wrap counter is `wrap` (2.8.1). */
function isAvail(flags: number, wrap: number): boolean {
  return ((flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0) === wrap && ((flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0) !== wrap;
}

/** Whether `flags` mark a descriptor used for a reader whose used wrap counter is `wrap`. */
function isUsed(flags: number, wrap: number): boolean {
  const a = (flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0;
  const u = (flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0;
  return a === u && u === wrap;
}

/** Linux vring_packed_need_event / QEMU: event off_wrap against a position that moved from old to new. */
function packedNeedEvent(offWrap: number, wrap: number, size: number, newIdx: number, old: number): boolean {
  let off = offWrap & 0x7fff;
  if (offWrap >>> 15 !== wrap) off -= size;
  return vringNeedEvent(off & 0xffff, newIdx, old & 0xffff);
}

export interface PackedQueueLayout {
  descRing: bigint;
  driverEvent: bigint;
  deviceEvent: bigint;
  indirectTable: bigint | undefined;
  end: bigint;
}

export interface PackedDriverConfig {
  /** 1..32768 (need not be a power of two). */
  size: number;
  descRing: GuestAddressLike;
  /** Driver event suppression area (written by the driver). */
  driverEvent: GuestAddressLike;
  /** Device event suppression area (written by the device). */
  deviceEvent: GuestAddressLike;
  /** VIRTIO_RING_F_EVENT_IDX negotiated. */
  eventIdx?: boolean;
  /** Indirect tables: one slot of `maxEntries` descriptors per buffer id. */
  indirect?: { table: GuestAddressLike; maxEntries: number };
}

interface PackedInFlight<T> {
  readonly slots: number;
  readonly token: T | undefined;
}

/** The driver side of a packed virtqueue. */
export class PackedDriverQueue<T = unknown> {
  readonly size: number;
  readonly descRing: GuestAddress;
  readonly driverEvent: GuestAddress;
  readonly deviceEvent: GuestAddress;
  readonly eventIdx: boolean;
  readonly indirectMaxEntries: number;
  readonly #mem: GuestMemory;
  readonly #ring: GuestPart;
  readonly #drv: GuestPart;
  readonly #dev: GuestPart;
  readonly #indirect: GuestPart | undefined;
  #nextAvail = 0;
  #availWrap = 1;
  #lastUsed = 0;
  #usedWrap = 1;
  #numFree: number;
  /** Free buffer ids (a stack). */
  readonly #freeIds: Uint16Array;
  #freeIdCount: number;
  readonly #inFlight: (PackedInFlight<T> | undefined)[];
  /** Slots made available since the last needsNotification() (Linux num_added). */
  #numAdded = 0;
  #interruptsDisabled = false;
  readonly #scratch = new Uint8Array(14);
  readonly #view = new DataView(this.#scratch.buffer);

  /**
   * Takes over the ring (zeroing descriptor flags is the caller's job, or use `create`).
   * @throws VirtqueueError `InvalidConfig`.
   */
  constructor(mem: GuestMemory, config: PackedDriverConfig) {
    checkSize(config.size);
    this.#mem = mem;
    this.size = config.size;
    this.eventIdx = config.eventIdx ?? false;
    this.descRing = GuestAddress.from(config.descRing);
    this.driverEvent = GuestAddress.from(config.driverEvent);
    this.deviceEvent = GuestAddress.from(config.deviceEvent);
    this.#ring = checkPart(mem, "descriptor ring", this.descRing, 16 * this.size, PACKED_RING_ALIGN);
    this.#drv = checkPart(mem, "driver event area", this.driverEvent, 4, EVENT_SUPPRESS_ALIGN);
    this.#dev = checkPart(mem, "device event area", this.deviceEvent, 4, EVENT_SUPPRESS_ALIGN);
    if (config.indirect) {
      const { maxEntries } = config.indirect;
      if (!Number.isInteger(maxEntries) || maxEntries < 1 || maxEntries > 65536)
        throw new VirtqueueError("InvalidConfig", `indirect maxEntries ${maxEntries} outside 1..65536`);
      this.indirectMaxEntries = maxEntries;
      this.#indirect = checkPart(mem, "indirect tables", GuestAddress.from(config.indirect.table), this.size * maxEntries * 16, 16);
    } else {
      this.indirectMaxEntries = 0;
      this.#indirect = undefined;
    }
    this.#numFree = this.size;
    this.#freeIds = new Uint16Array(this.size);
    for (let i = 0; i < this.size; i++) this.#freeIds[i] = this.size - 1 - i;
    this.#freeIdCount = this.size;
    this.#inFlight = new Array<PackedInFlight<T> | undefined>(this.size).fill(undefined);
    mem.store16(this.#drv.addr(EVENT_FLAGS), RING_EVENT_FLAGS_ENABLE);
  }

  /** Where `create` puts each part, from `base` rounded up to 16. */
  static layout(base: GuestAddressLike, size: number, options: { indirectMaxEntries?: number } = {}): PackedQueueLayout {
    const b = (GuestAddress.from(base).value + 15n) & ~15n;
    const driverEvent = b + BigInt(16 * size);
    const deviceEvent = driverEvent + 4n;
    let end = deviceEvent + 4n;
    let indirectTable: bigint | undefined;
    const n = options.indirectMaxEntries ?? 0;
    if (n > 0) {
      indirectTable = (end + 15n) & ~15n;
      end = indirectTable + BigInt(size * n * 16);
    }
    return { descRing: b, driverEvent, deviceEvent, indirectTable, end };
  }

  /** Lays the queue out at `base`, zeroes it and returns the driver. */
  static create<T = unknown>(
    mem: GuestMemory,
    base: GuestAddressLike,
    size: number,
    options: { eventIdx?: boolean; indirectMaxEntries?: number } = {},
  ): PackedDriverQueue<T> {
    checkSize(size);
    const l = PackedDriverQueue.layout(base, size, options);
    try {
      mem.fill(l.descRing, Number(l.end - l.descRing), 0);
    } catch (e) {
      if (e instanceof GuestMemoryError) throw new VirtqueueError("InvalidConfig", `packed queue outside guest memory`, { cause: e });
      throw e;
    }
    const config: PackedDriverConfig = { size, descRing: l.descRing, driverEvent: l.driverEvent, deviceEvent: l.deviceEvent };
    if (options.eventIdx !== undefined) config.eventIdx = options.eventIdx;
    if (l.indirectTable !== undefined) config.indirect = { table: l.indirectTable, maxEntries: options.indirectMaxEntries ?? 0 };
    return new PackedDriverQueue<T>(mem, config);
  }

  /** Free ring slots. */
  get numFree(): number {
    return this.#numFree;
  }

  #writeBody(at: number | bigint, addr: bigint, len: number, id: number): void {
    const v = this.#view;
    v.setBigUint64(0, addr, true);
    v.setUint32(8, len, true);
    v.setUint16(12, id, true);
    this.#mem.write(at, this.#scratch);
  }

  /**
   * Posts a chain and returns its buffer id. The head's flags are stored last (after a fence), so the
   * device never sees a partly written chain.
   * @throws VirtqueueError `QueueFull`, `InvalidArgument`, `InvalidIndirect`, `OutOfBounds`.
   */
  add(chain: ChainSpec, options: AddOptions<T> = {}): number {
    const bufs: { addr: bigint; len: number; flags: number }[] = [];
    for (const [list, flags] of [
      [chain.readable ?? [], 0],
      [chain.writable ?? [], VIRTQ_DESC_F_WRITE],
    ] as const) {
      for (const b of list) {
        if (!Number.isInteger(b.len) || b.len < 0 || b.len > 0xffffffff)
          throw new VirtqueueError("InvalidArgument", `buffer length ${b.len} is not a u32`);
        const addr = GuestAddress.from(b.addr);
        if (b.len > 0 && !this.#mem.checkRange(addr, b.len))
          throw new VirtqueueError("OutOfBounds", `buffer ${addr.toString()} (+${b.len}) is outside guest memory`);
        bufs.push({ addr: addr.value, len: b.len, flags });
      }
    }
    const n = bufs.length;
    if (n === 0) throw new VirtqueueError("InvalidArgument", "a chain needs at least one buffer");
    const indirect = options.indirect ?? false;
    if (indirect) {
      if (!this.#indirect) throw new VirtqueueError("InvalidIndirect", "no indirect table area configured");
      if (n > this.indirectMaxEntries) throw new VirtqueueError("InvalidArgument", `${n} buffers exceed the indirect table size ${this.indirectMaxEntries}`);
    }
    const slots = indirect ? 1 : n;
    if (this.#numFree < slots || this.#freeIdCount === 0) throw new VirtqueueError("QueueFull", `${slots} slots needed, ${this.#numFree} free`);
    const id = this.#freeIds[--this.#freeIdCount]!;
    const area = this.#indirect;
    const tableAddr = area && indirect ? area.addr(id * this.indirectMaxEntries * 16) : 0;
    const ringBufs = indirect ? [{ addr: BigInt(tableAddr), len: n * 16, flags: VIRTQ_DESC_F_INDIRECT }] : bufs;
    if (indirect) {
      // virtio 1.2 2.8.19: the table's descriptors are consecutive; NEXT is not used inside it.
      for (let i = 0; i < n; i++) {
        const b = bufs[i]!;
        this.#writeBody(addrAdd(tableAddr, i * 16), b.addr, b.len, id);
        this.#mem.store16(addrAdd(tableAddr, i * 16 + DESC_FLAGS), b.flags);
      }
    }
    const head = this.#nextAvail;
    let headFlags = 0;
    for (let i = 0; i < slots; i++) {
      const b = ringBufs[i]!;
      const at = this.#ring.addr(this.#nextAvail * 16);
      const wrapBits = this.#availWrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
      const flags = b.flags | (i < slots - 1 ? VIRTQ_DESC_F_NEXT : 0) | wrapBits;
      this.#writeBody(at, b.addr, b.len, id);
      if (i === 0) headFlags = flags;
      else this.#mem.store16(addrAdd(at, DESC_FLAGS), flags);
      if (++this.#nextAvail === this.size) {
        this.#nextAvail = 0;
        this.#availWrap ^= 1;
      }
    }
    this.#mem.fence();
    this.#mem.store16(this.#ring.addr(head * 16 + DESC_FLAGS), headFlags);
    this.#numFree -= slots;
    this.#numAdded += slots;
    this.#inFlight[id] = { slots, token: options.token };
    return id;
  }

  /** Whether the device wants a kick for what was added since the last call (2.8.10). */
  needsNotification(): boolean {
    this.#mem.fence();
    const added = this.#numAdded;
    this.#numAdded = 0;
    const flags = this.#mem.load16(this.#dev.addr(EVENT_FLAGS)) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;
    const newIdx = this.#nextAvail;
    return packedNeedEvent(this.#mem.load16(this.#dev.addr(EVENT_OFF_WRAP)), this.#availWrap, this.size, newIdx, newIdx - added);
  }

  /** Whether a used entry is waiting. */
  hasUsed(): boolean {
    return isUsed(this.#mem.load16(this.#ring.addr(this.#lastUsed * 16 + DESC_FLAGS)), this.#usedWrap);
  }

  /**
   * The next used element, or undefined.
   * @throws VirtqueueError `InvalidIndex` if the device returned an id that is not in flight (the ring is then
   *   out of step with the device: reset the queue).
   */
  getUsed(): UsedElement<T> | undefined {
    const mem = this.#mem;
    const at = this.#ring.addr(this.#lastUsed * 16);
    if (!isUsed(mem.load16(addrAdd(at, DESC_FLAGS)), this.#usedWrap)) return undefined;
    mem.fence();
    const id = mem.load16(addrAdd(at, DESC_ID));
    const len = mem.load32(addrAdd(at, DESC_LEN));
    const f = id < this.size ? this.#inFlight[id] : undefined;
    if (!f) throw new VirtqueueError("InvalidIndex", `device returned buffer id ${id}, which is not in flight`);
    this.#inFlight[id] = undefined;
    this.#freeIds[this.#freeIdCount++] = id;
    this.#numFree += f.slots;
    this.#lastUsed += f.slots;
    if (this.#lastUsed >= this.size) {
      this.#lastUsed -= this.size;
      this.#usedWrap ^= 1;
    }
    if (this.eventIdx && !this.#interruptsDisabled) mem.store16(this.#drv.addr(EVENT_OFF_WRAP), this.#lastUsed | (this.#usedWrap << 15));
    return { id, len, token: f.token };
  }

  harvest(max = Infinity): UsedElement<T>[] {
    const out: UsedElement<T>[] = [];
    while (out.length < max) {
      const u = this.getUsed();
      if (!u) break;
      out.push(u);
    }
    return out;
  }

  disableInterrupts(): void {
    this.#interruptsDisabled = true;
    this.#mem.store16(this.#drv.addr(EVENT_FLAGS), RING_EVENT_FLAGS_DISABLE);
  }

  /** Re-enables interrupts (at the next used entry with EVENT_IDX); returns whether entries are pending. */
  enableInterrupts(): boolean {
    this.#interruptsDisabled = false;
    if (this.eventIdx) {
      this.#mem.store16(this.#drv.addr(EVENT_OFF_WRAP), this.#lastUsed | (this.#usedWrap << 15));
      this.#mem.store16(this.#drv.addr(EVENT_FLAGS), RING_EVENT_FLAGS_DESC);
    } else {
      this.#mem.store16(this.#drv.addr(EVENT_FLAGS), RING_EVENT_FLAGS_ENABLE);
    }
    this.#mem.fence();
    return this.hasUsed();
  }
}

/** A chain popped from a packed ring: `head` is the buffer id; `slots` ring slots it occupied. */
export class PackedDescriptorChain extends DescriptorChain {
  readonly slots: number;
  constructor(mem: GuestMemory, id: number, descriptors: readonly Descriptor[], indirect: boolean, slots: number) {
    super(mem, id, descriptors, indirect);
    this.slots = slots;
  }
}

export interface PackedQueueOptions {
  maxSize?: number;
  /** Most descriptors per chain, indirect entries included (default max(size, 1024)). */
  maxChainLength?: number;
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated (default true). */
  indirect?: boolean;
}

interface PackedRings {
  readonly size: number;
  readonly ring: GuestPart;
  readonly drv: GuestPart;
  readonly dev: GuestPart;
}

/**
 * The device side of a packed virtqueue. A malformed chain whose extent is known is returned used with
 * len 0 by `pop()` itself (in a packed ring the used position depends on the chain's slot count), then
 * reported; `ChainTooLong` with no end in sight leaves the queue needing a reset.
 */
export class PackedQueue {
  readonly maxSize: number;
  #mem: GuestMemory;
  #size: number;
  #ready = false;
  #descRing = new GuestAddress(0);
  #driverEvent = new GuestAddress(0);
  #deviceEvent = new GuestAddress(0);
  #eventIdx = false;
  #indirect: boolean;
  readonly #maxChain: number | undefined;
  #nextAvail = 0;
  #availWrap = 1;
  #nextUsed = 0;
  #usedWrap = 1;
  /** Slots used since the last needsNotification(). */
  #usedSinceSignal = 0;
  #rings: PackedRings | undefined;
  readonly #scratch = new Uint8Array(16);
  readonly #view = new DataView(this.#scratch.buffer);

  constructor(mem: GuestMemory, options: PackedQueueOptions = {}) {
    const maxSize = options.maxSize ?? MAX_QUEUE_SIZE;
    if (!Number.isInteger(maxSize) || maxSize < 1 || maxSize > MAX_QUEUE_SIZE) throw new RangeError(`maxSize ${maxSize} outside 1..${MAX_QUEUE_SIZE}`);
    this.maxSize = maxSize;
    this.#size = maxSize;
    this.#mem = mem;
    this.#indirect = options.indirect ?? true;
    this.#maxChain = options.maxChainLength;
  }

  get memory(): GuestMemory {
    return this.#mem;
  }
  set memory(m: GuestMemory) {
    this.#mem = m;
    this.#rings = undefined;
  }
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
  get descRing(): GuestAddress {
    return this.#descRing;
  }
  set descRing(a: GuestAddressLike) {
    this.#descRing = GuestAddress.from(a);
    this.#rings = undefined;
  }
  get driverEvent(): GuestAddress {
    return this.#driverEvent;
  }
  set driverEvent(a: GuestAddressLike) {
    this.#driverEvent = GuestAddress.from(a);
    this.#rings = undefined;
  }
  get deviceEvent(): GuestAddress {
    return this.#deviceEvent;
  }
  set deviceEvent(a: GuestAddressLike) {
    this.#deviceEvent = GuestAddress.from(a);
    this.#rings = undefined;
  }
  get eventIdx(): boolean {
    return this.#eventIdx;
  }
  set eventIdx(on: boolean) {
    this.#eventIdx = on;
  }
  get indirect(): boolean {
    return this.#indirect;
  }
  set indirect(on: boolean) {
    this.#indirect = on;
  }

  /** Next avail slot with the wrap counter in bit 15 (the vhost-user VRING_BASE encoding for packed rings). */
  get nextAvail(): number {
    return this.#nextAvail | (this.#availWrap << 15);
  }
  set nextAvail(v: number) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`${v} is not a u16`);
    this.#nextAvail = v & 0x7fff;
    this.#availWrap = v >>> 15;
  }
  /** Next used slot with the used wrap counter in bit 15. */
  get nextUsed(): number {
    return this.#nextUsed | (this.#usedWrap << 15);
  }
  set nextUsed(v: number) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`${v} is not a u16`);
    this.#nextUsed = v & 0x7fff;
    this.#usedWrap = v >>> 15;
    this.#usedSinceSignal = 0;
  }

  reset(): void {
    this.#ready = false;
    this.#size = this.maxSize;
    this.#descRing = this.#driverEvent = this.#deviceEvent = new GuestAddress(0);
    this.#eventIdx = false;
    this.#nextAvail = this.#nextUsed = 0;
    this.#availWrap = this.#usedWrap = 1;
    this.#usedSinceSignal = 0;
    this.#rings = undefined;
  }

  /** @throws VirtqueueError `InvalidConfig`. */
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

  #config(): PackedRings {
    if (this.#rings) return this.#rings;
    if (!this.#ready) throw new VirtqueueError("InvalidConfig", "queue is not ready");
    const size = this.#size;
    if (size < 1 || size > this.maxSize) throw new VirtqueueError("InvalidConfig", `queue size ${size} outside 1..${this.maxSize}`);
    if (this.#nextAvail >= size || this.#nextUsed >= size)
      throw new VirtqueueError("InvalidConfig", `ring position ${this.#nextAvail}/${this.#nextUsed} outside a ${size}-entry ring`);
    const mem = this.#mem;
    this.#rings = {
      size,
      ring: checkPart(mem, "descriptor ring", this.#descRing, 16 * size, PACKED_RING_ALIGN),
      drv: checkPart(mem, "driver event area", this.#driverEvent, 4, EVENT_SUPPRESS_ALIGN),
      dev: checkPart(mem, "device event area", this.#deviceEvent, 4, EVENT_SUPPRESS_ALIGN),
    };
    return this.#rings;
  }

  #read(at: number | bigint): { addr: bigint; len: number; id: number; flags: number } {
    try {
      this.#mem.readInto(at, this.#scratch);
    } catch (e) {
      guestErr(e, "descriptor");
    }
    const v = this.#view;
    return { addr: v.getBigUint64(0, true), len: v.getUint32(8, true), id: v.getUint16(12, true), flags: v.getUint16(14, true) };
  }

  /** Whether the driver made a chain available at the current position. */
  hasAvailable(): boolean {
    const r = this.#config();
    try {
      return isAvail(this.#mem.load16(r.ring.addr(this.#nextAvail * 16 + DESC_FLAGS)), this.#availWrap);
    } catch (e) {
      guestErr(e, "descriptor ring");
    }
  }

  /**
   * The next available chain, validated, or undefined.
   * @throws VirtqueueError (`head` = buffer id) `ChainTooLong` (queue needs a reset), `InvalidIndirect`,
   *   `ReadAfterWrite`, `OutOfBounds` (these were already returned used with len 0), `InvalidConfig`,
   *   `GuestMemory`.
   */
  pop(): PackedDescriptorChain | undefined {
    const r = this.#config();
    const mem = this.#mem;
    const first = r.ring.addr(this.#nextAvail * 16);
    let headFlags: number;
    try {
      headFlags = mem.load16(addrAdd(first, DESC_FLAGS));
    } catch (e) {
      guestErr(e, "descriptor ring");
    }
    if (!isAvail(headFlags, this.#availWrap)) return undefined;
    mem.fence();
    // Phase 1: the chain's extent in the ring (NEXT flags through consecutive slots).
    const raw: { addr: bigint; len: number; id: number; flags: number }[] = [];
    let pos = this.#nextAvail;
    for (;;) {
      const d = this.#read(r.ring.addr(pos * 16));
      raw.push(d);
      if (++pos === r.size) pos = 0;
      if ((d.flags & VIRTQ_DESC_F_NEXT) === 0) break;
      if (raw.length >= r.size)
        throw new VirtqueueError("ChainTooLong", `chain at slot ${this.#nextAvail} does not end within the ${r.size}-entry ring`, { head: d.id });
    }
    const slots = raw.length;
    const id = raw[slots - 1]!.id;
    // The chain is consumed whatever its contents.
    this.#nextAvail += slots;
    if (this.#nextAvail >= r.size) {
      this.#nextAvail -= r.size;
      this.#availWrap ^= 1;
    }
    try {
      const { descs, indirect } = this.#validate(r, raw, id);
      return new PackedDescriptorChain(mem, id, descs, indirect, slots);
    } catch (e) {
      if (e instanceof VirtqueueError && e.kind !== "GuestMemory") this.addUsed({ head: id, slots }, 0);
      throw e;
    }
  }

  #validate(r: PackedRings, raw: { addr: bigint; len: number; flags: number }[], id: number): { descs: Descriptor[]; indirect: boolean } {
    const fail = (kind: ConstructorParameters<typeof VirtqueueError>[0], msg: string): never => {
      throw new VirtqueueError(kind, `buffer ${id}: ${msg}`, { head: id });
    };
    const maxLen = this.#maxChain ?? Math.max(r.size, 1024);
    const descs: Descriptor[] = [];
    let seenWrite = false;
    let indirect = false;
    const take = (addr: bigint, len: number, flags: number): void => {
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) seenWrite = true;
      else if (seenWrite) fail("ReadAfterWrite", "device-readable descriptor after a device-writable one");
      let ok = len === 0;
      if (!ok) {
        try {
          ok = this.#mem.checkRange(addr, len);
        } catch (e) {
          guestErr(e, "descriptor buffer");
        }
      }
      if (!ok) fail("OutOfBounds", `buffer 0x${addr.toString(16)} (+${len}) outside guest memory`);
      descs.push(new Descriptor(addr, len, flags, 0));
      if (descs.length > maxLen) fail("ChainTooLong", `more than ${maxLen} descriptors`);
    };
    for (const d of raw) {
      if ((d.flags & VIRTQ_DESC_F_INDIRECT) === 0) {
        take(d.addr, d.len, d.flags & ~(VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED));
        continue;
      }
      // virtio 1.2 2.8.19: an indirect descriptor is alone (no NEXT), its table has no nested indirect.
      if (!this.#indirect) fail("InvalidIndirect", "indirect descriptor but VIRTIO_RING_F_INDIRECT_DESC not negotiated");
      if (raw.length !== 1) fail("InvalidIndirect", "indirect descriptor chained with others");
      if (d.len === 0 || d.len % 16 !== 0) fail("InvalidIndirect", `indirect table length ${d.len} is not a positive multiple of 16`);
      const n = d.len / 16;
      if (n > maxLen) fail("ChainTooLong", `indirect table of ${n} descriptors exceeds ${maxLen}`);
      let ok: boolean;
      try {
        ok = this.#mem.checkRange(d.addr, d.len);
      } catch (e) {
        guestErr(e, "indirect table");
      }
      if (!ok) fail("OutOfBounds", `indirect table 0x${d.addr.toString(16)} (+${d.len}) outside guest memory`);
      indirect = true;
      const table = new GuestPart(d.addr, d.len);
      for (let i = 0; i < n; i++) {
        const e = this.#read(table.addr(i * 16));
        if ((e.flags & VIRTQ_DESC_F_INDIRECT) !== 0) fail("InvalidIndirect", "indirect descriptor inside an indirect table");
        take(e.addr, e.len, e.flags & (VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT));
      }
    }
    return { descs, indirect };
  }

  /**
   * Returns a chain: writes id and len at the used position, then (after a fence) the flags with both
   * AVAIL and USED equal to the used wrap counter, in one aligned 16-bit store.
   */
  addUsed(chain: { readonly head: number; readonly slots: number }, len: number): void {
    const r = this.#config();
    if (!Number.isInteger(chain.head) || chain.head < 0 || chain.head > 0xffff)
      throw new VirtqueueError("InvalidIndex", `buffer id ${chain.head} is not a u16`);
    if (!Number.isInteger(chain.slots) || chain.slots < 1 || chain.slots > r.size)
      throw new VirtqueueError("InvalidArgument", `slot count ${chain.slots} outside 1..${r.size}`);
    if (!Number.isInteger(len) || len < 0 || len > 0xffffffff) throw new RangeError(`used len ${len} is not a u32`);
    const at = r.ring.addr(this.#nextUsed * 16);
    try {
      this.#mem.store32(addrAdd(at, DESC_LEN), len);
      this.#mem.store16(addrAdd(at, DESC_ID), chain.head);
      this.#mem.fence();
      this.#mem.store16(addrAdd(at, DESC_FLAGS), this.#usedWrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0);
    } catch (e) {
      guestErr(e, "descriptor ring");
    }
    this.#nextUsed += chain.slots;
    this.#usedSinceSignal += chain.slots;
    if (this.#nextUsed >= r.size) {
      this.#nextUsed -= r.size;
      this.#usedWrap ^= 1;
    }
  }

  /** Whether the driver wants an interrupt for the entries used since the last call (2.8.10). */
  needsNotification(): boolean {
    const r = this.#config();
    try {
      this.#mem.fence();
      const used = this.#usedSinceSignal;
      this.#usedSinceSignal = 0;
      const flags = this.#mem.load16(r.drv.addr(EVENT_FLAGS)) & 3;
      if (flags === RING_EVENT_FLAGS_DISABLE) return false;
      if (flags !== RING_EVENT_FLAGS_DESC || !this.#eventIdx) return true;
      return packedNeedEvent(this.#mem.load16(r.drv.addr(EVENT_OFF_WRAP)), this.#usedWrap, r.size, this.#nextUsed, this.#nextUsed - used);
    } catch (e) {
      guestErr(e, "driver event area");
    }
  }

  /** Asks for kicks (at the next avail position with EVENT_IDX); returns whether a chain is already available. */
  enableNotification(): boolean {
    const r = this.#config();
    try {
      if (this.#eventIdx) {
        this.#mem.store16(r.dev.addr(EVENT_OFF_WRAP), this.#nextAvail | (this.#availWrap << 15));
        this.#mem.store16(r.dev.addr(EVENT_FLAGS), RING_EVENT_FLAGS_DESC);
      } else {
        this.#mem.store16(r.dev.addr(EVENT_FLAGS), RING_EVENT_FLAGS_ENABLE);
      }
      this.#mem.fence();
    } catch (e) {
      guestErr(e, "device event area");
    }
    return this.hasAvailable();
  }

  disableNotification(): void {
    const r = this.#config();
    try {
      this.#mem.store16(r.dev.addr(EVENT_FLAGS), RING_EVENT_FLAGS_DISABLE);
    } catch (e) {
      guestErr(e, "device event area");
    }
  }
}
