// The driver side of a split virtqueue (virtio 1.2 2.7.13 "Supplying Buffers to The Device", 2.7.14
// "Receiving Used Buffers From The Device"), modelled on Linux drivers/virtio/virtio_ring.c (split part).
// rust-vmm ships a mock driver (virtio-queue mock.rs) for tests; this one is a real, reusable driver: tests,
// a simulated guest and a shadow-mode bridge all post buffers through it.
//
// The driver keeps its own bookkeeping (free list, in-flight chains) outside guest memory, so a device that
// scribbles on the descriptor table cannot corrupt the free list; every value read back from the device
// (used idx, used ids) is validated.
import { GuestAddress, GuestMemoryError, type GuestAddressLike, type GuestMemory } from "@xen-vhost/vm-memory";
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
import { VirtqueueError } from "./error.js";
import { GuestPart, addrAdd } from "./guest-part.js";
import { inPlace } from "./in-place.js";

/** A guest buffer: `len` bytes at guest physical address `addr`. */
export interface BufferSpec {
  readonly addr: GuestAddressLike;
  readonly len: number;
}

/** A chain: device-readable buffers first, then device-writable ones (virtio 1.2 2.7.4.2). */
export interface ChainSpec {
  readonly readable?: readonly BufferSpec[];
  readonly writable?: readonly BufferSpec[];
}

/** A reusable holder `getUsedInto` fills (so a hot loop harvests without allocating). */
export interface UsedSlot<T> {
  id: number;
  len: number;
  token: T | undefined;
}

/** An entry harvested from the used ring. */
export interface UsedElement<T> {
  /** Head descriptor index of the chain. */
  readonly id: number;
  /** Bytes the device says it wrote into the writable buffers. */
  readonly len: number;
  /** The token given to `add`. */
  readonly token: T | undefined;
}

export interface DriverQueueConfig {
  /** Queue size (power of two, <= 32768). */
  size: number;
  descTable: GuestAddressLike;
  availRing: GuestAddressLike;
  usedRing: GuestAddressLike;
  /** VIRTIO_RING_F_EVENT_IDX negotiated: use used_event/avail_event instead of the flags. */
  eventIdx?: boolean;
  /**
   * Guest memory for indirect tables: `size` slots of `maxEntries` descriptors, one slot per head index
   * (so no allocator is needed). Without it, `add(..., { indirect: true })` is an error.
   */
  indirect?: { table: GuestAddressLike; maxEntries: number };
  /** Initial avail/used index (e.g. to resume a ring, or to test 16-bit wrap-around). Default 0. */
  startIndex?: number;
}

export interface AddOptions<T> {
  /** Returned with the used element. */
  token?: T;
  /** Put the buffers in an indirect table (one ring descriptor). */
  indirect?: boolean;
  /** Publish the new avail idx now (default true); otherwise call `publish()` after a batch. */
  publish?: boolean;
}

export interface CreateOptions {
  eventIdx?: boolean;
  /** Reserve indirect tables of this many entries per head (0 or absent: no indirect support). */
  indirectMaxEntries?: number;
  startIndex?: number;
}

/**
 * In-place views of the parts when each lies inside one region mapped up front (memfd, Xen foreign mappings),
 * as the device side's Queue keeps them: descriptors written through a DataView, indices with Atomics.
 */
interface DriverViews {
  readonly desc: DataView;
  /** struct virtq_avail as u16s: [0] flags, [1] idx, [2 + i] ring[i], [2 + size] used_event. */
  readonly avail: Uint16Array;
  /** struct virtq_used as u16s: [0] flags, [1] idx, [2 + 4 * size] avail_event. */
  readonly used16: Uint16Array;
  /** struct virtq_used as u32s: ring[i].id at [1 + 2 * i], ring[i].len at [2 + 2 * i]. */
  readonly used32: Uint32Array;
  /** The indirect tables, if configured and mapped in place. */
  readonly indirect: DataView | undefined;
}

const EMPTY: readonly BufferSpec[] = [];
const TWO_32 = 0x1_0000_0000;
const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);

function alignUp(n: bigint, a: number): bigint {
  const m = BigInt(a) - 1n;
  return (n + m) & ~m;
}

/** Where `create` puts each part for a queue of `size` entries starting at a 16-byte aligned base. */
export interface QueueLayout {
  descTable: bigint;
  availRing: bigint;
  usedRing: bigint;
  indirectTable: bigint | undefined;
  /** One past the last byte used. */
  end: bigint;
}

/** The driver side of a split virtqueue in guest memory. */
export class DriverQueue<T = unknown> {
  readonly size: number;
  readonly descTable: GuestAddress;
  readonly availRing: GuestAddress;
  readonly usedRing: GuestAddress;
  readonly eventIdx: boolean;
  readonly indirectMaxEntries: number;
  readonly #mem: GuestMemory;
  readonly #desc: GuestPart;
  readonly #avail: GuestPart;
  readonly #used: GuestPart;
  readonly #indirect: GuestPart | undefined;
  /**
   * Free descriptor list, kept outside guest memory. A chain is allocated as a run of this list, so while it
   * is in flight its links are the chain's own `next` links (Linux virtio_ring does the same with desc.next):
   * releasing it splices the run back without any per-chain allocation.
   */
  readonly #freeNext: Uint16Array;
  #freeHead = 0;
  #numFree: number;
  /** Ring descriptors held by the chain headed at i (0: not in flight). */
  readonly #chainLen: Uint16Array;
  readonly #tokens: (T | undefined)[];
  #views: DriverViews | undefined;
  // add()'s address split (no allocation): the low and high 32 bits of the last address converted.
  #lo = 0;
  #hi = 0;
  /** Shadow of avail.idx: entries added (published or not). */
  #availIdx: number;
  /** avail.idx as last published. */
  #publishedIdx: number;
  /** avail idx at the last needsNotification() (Linux: num_added bookkeeping). */
  #kickedIdx: number;
  #lastUsed: number;
  #interruptsDisabled = false;
  readonly #scratch = new Uint8Array(16);
  readonly #scratchView = new DataView(this.#scratch.buffer);

  /**
   * Takes over the rings at the given addresses and initializes the driver-owned fields (avail flags/idx,
   * used_event) and the used idx to `startIndex`.
   * @throws VirtqueueError `InvalidConfig` for a bad size, misaligned parts or parts outside guest memory.
   */
  constructor(mem: GuestMemory, config: DriverQueueConfig) {
    const { size } = config;
    if (!isPowerOfTwo(size) || size > MAX_QUEUE_SIZE)
      throw new VirtqueueError("InvalidConfig", `queue size ${size} is not a power of two <= ${MAX_QUEUE_SIZE}`);
    this.#mem = mem;
    this.size = size;
    this.eventIdx = config.eventIdx ?? false;
    this.descTable = GuestAddress.from(config.descTable);
    this.availRing = GuestAddress.from(config.availRing);
    this.usedRing = GuestAddress.from(config.usedRing);
    const part = (name: string, addr: GuestAddress, len: number, align: number): GuestPart => {
      if (!addr.isAligned(align)) throw new VirtqueueError("InvalidConfig", `${name} ${addr.toString()} is not ${align}-byte aligned`);
      if (!mem.checkRange(addr, len))
        throw new VirtqueueError("InvalidConfig", `${name} ${addr.toString()} (+${len}) is outside guest memory`);
      return new GuestPart(addr.value, len);
    };
    this.#desc = part("descriptor table", this.descTable, descTableSize(size), DESC_TABLE_ALIGN);
    this.#avail = part("avail ring", this.availRing, availRingSize(size), AVAIL_RING_ALIGN);
    this.#used = part("used ring", this.usedRing, usedRingSize(size), USED_RING_ALIGN);
    if (config.indirect) {
      const { maxEntries } = config.indirect;
      if (!Number.isInteger(maxEntries) || maxEntries < 1 || maxEntries > 65536)
        throw new VirtqueueError("InvalidConfig", `indirect maxEntries ${maxEntries} outside 1..65536`);
      this.indirectMaxEntries = maxEntries;
      this.#indirect = part("indirect tables", GuestAddress.from(config.indirect.table), size * maxEntries * 16, DESC_TABLE_ALIGN);
    } else {
      this.indirectMaxEntries = 0;
      this.#indirect = undefined;
    }
    this.#freeNext = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.#freeNext[i] = (i + 1) & 0xffff;
    this.#numFree = size;
    this.#chainLen = new Uint16Array(size);
    this.#tokens = new Array<T | undefined>(size).fill(undefined);
    const start = config.startIndex ?? 0;
    if (!Number.isInteger(start) || start < 0 || start > 0xffff) throw new RangeError(`startIndex ${start} outside 0..65535`);
    this.#availIdx = this.#publishedIdx = this.#kickedIdx = this.#lastUsed = start;
    mem.store16(this.#avail.addr(AVAIL_FLAGS), 0);
    mem.store16(this.#avail.addr(usedEventOffset(size)), start);
    mem.store16(this.#used.addr(USED_FLAGS), 0);
    mem.store16(this.#used.addr(USED_IDX), start);
    mem.store16(this.#used.addr(availEventOffset(size)), start);
    mem.fence();
    mem.store16(this.#avail.addr(AVAIL_IDX), start);
    this.#views = this.#makeViews(config.indirect === undefined ? undefined : GuestAddress.from(config.indirect.table));
  }

  #makeViews(indirectTable: GuestAddress | undefined): DriverViews | undefined {
    const mem = this.#mem;
    const size = this.size;
    const d = inPlace(mem, this.descTable, descTableSize(size), 1);
    const a = inPlace(mem, this.availRing, availRingSize(size), 2);
    const u = inPlace(mem, this.usedRing, usedRingSize(size), 4);
    if (!d || !a || !u) return undefined;
    const i = indirectTable === undefined ? undefined : inPlace(mem, indirectTable, size * this.indirectMaxEntries * 16, 1);
    return {
      desc: new DataView(d.buffer, d.byteOffset, d.byteLength),
      avail: new Uint16Array(a.buffer, a.byteOffset, a.byteLength >>> 1),
      used16: new Uint16Array(u.buffer, u.byteOffset, u.byteLength >>> 1),
      used32: new Uint32Array(u.buffer, u.byteOffset, u.byteLength >>> 2),
      indirect: i === undefined ? undefined : new DataView(i.buffer, i.byteOffset, i.byteLength),
    };
  }

  /** The in-place views while they are usable (dropped for good once the memory is closed or unmapped). */
  #v(): DriverViews | undefined {
    const v = this.#views;
    if (v === undefined) return undefined;
    if (!this.#mem.closed && v.desc.byteLength !== 0 && v.avail.length !== 0 && v.used16.length !== 0) return v;
    this.#views = undefined;
    return undefined;
  }

  /** Where `create` places the parts, starting at `base` (rounded up to 16). */
  static layout(base: GuestAddressLike, size: number, options: { indirectMaxEntries?: number } = {}): QueueLayout {
    const b = alignUp(GuestAddress.from(base).value, DESC_TABLE_ALIGN);
    const descTable = b;
    const availRing = alignUp(descTable + BigInt(descTableSize(size)), AVAIL_RING_ALIGN);
    const usedRing = alignUp(availRing + BigInt(availRingSize(size)), USED_RING_ALIGN);
    let end = usedRing + BigInt(usedRingSize(size));
    let indirectTable: bigint | undefined;
    const n = options.indirectMaxEntries ?? 0;
    if (n > 0) {
      indirectTable = alignUp(end, DESC_TABLE_ALIGN);
      end = indirectTable + BigInt(size * n * 16);
    }
    return { descTable, availRing, usedRing, indirectTable, end };
  }

  /** Lays the queue out at `base`, zeroes it and returns the driver (see `layout`). */
  static create<T = unknown>(mem: GuestMemory, base: GuestAddressLike, size: number, options: CreateOptions = {}): DriverQueue<T> {
    if (!isPowerOfTwo(size) || size > MAX_QUEUE_SIZE)
      throw new VirtqueueError("InvalidConfig", `queue size ${size} is not a power of two <= ${MAX_QUEUE_SIZE}`);
    const l = DriverQueue.layout(base, size, options);
    const start = l.descTable;
    try {
      mem.fill(start, Number(l.end - start), 0);
    } catch (e) {
      if (e instanceof GuestMemoryError)
        throw new VirtqueueError("InvalidConfig", `queue at ${GuestAddress.from(start).toString()} is outside guest memory`, { cause: e });
      throw e;
    }
    const config: DriverQueueConfig = { size, descTable: l.descTable, availRing: l.availRing, usedRing: l.usedRing };
    if (options.eventIdx !== undefined) config.eventIdx = options.eventIdx;
    if (options.startIndex !== undefined) config.startIndex = options.startIndex;
    if (l.indirectTable !== undefined) config.indirect = { table: l.indirectTable, maxEntries: options.indirectMaxEntries ?? 0 };
    return new DriverQueue<T>(mem, config);
  }

  /** Free descriptors. */
  get numFree(): number {
    return this.#numFree;
  }

  /** Chains added and not yet harvested. */
  get inFlight(): number {
    let n = 0;
    for (const l of this.#chainLen) if (l !== 0) n++;
    return n;
  }

  /** The driver's avail idx (including unpublished entries). */
  get availIdx(): number {
    return this.#availIdx;
  }

  /** The next used ring entry the driver will read. */
  get lastUsed(): number {
    return this.#lastUsed;
  }

  /** Splits `addr` into #lo/#hi (u32 halves) without allocating. @throws RangeError outside 0..2^64-1. */
  #split(addr: GuestAddressLike): void {
    if (typeof addr === "number") {
      if (!(addr >= 0 && addr <= Number.MAX_SAFE_INTEGER && Math.floor(addr) === addr))
        throw new RangeError(`guest address ${addr} is not a non-negative safe integer`);
      this.#lo = addr % TWO_32;
      this.#hi = Math.floor(addr / TWO_32);
      return;
    }
    const v = GuestAddress.from(addr).value;
    if (v <= MAX_SAFE_BIG) return this.#split(Number(v));
    this.#lo = Number(v & 0xffff_ffffn);
    this.#hi = Number(v >> 32n);
  }

  /** Writes one descriptor (address from #lo/#hi) at byte `off` of `view`, or through GuestMemory at `at`. */
  #writeDesc(view: DataView | undefined, off: number, at: number | bigint, len: number, flags: number, next: number): void {
    const v = view ?? this.#scratchView;
    const o = view === undefined ? 0 : off;
    v.setUint32(o, this.#lo, true);
    v.setUint32(o + 4, this.#hi, true);
    v.setUint32(o + 8, len, true);
    v.setUint16(o + 12, flags, true);
    v.setUint16(o + 14, next, true);
    if (view === undefined) this.#mem.write(at, this.#scratch);
  }

  #checkBuffer(b: BufferSpec): void {
    if (!Number.isInteger(b.len) || b.len < 0 || b.len > 0xffffffff) throw new VirtqueueError("InvalidArgument", `buffer length ${b.len} is not a u32`);
    if (b.len > 0 && !this.#mem.checkRange(b.addr, b.len))
      throw new VirtqueueError("OutOfBounds", `buffer ${GuestAddress.from(b.addr).toString()} (+${b.len}) is outside guest memory`);
    if (b.len === 0) this.#split(b.addr); // validates the address as GuestAddress.from would
  }

  /**
   * Posts a chain (readable buffers, then writable ones) and returns its head index. Allocates nothing:
   * a hot loop can keep its `ChainSpec`s and reuse them.
   * @throws VirtqueueError `QueueFull` without enough free descriptors, `InvalidArgument` for an empty chain,
   *   a bad length or an indirect chain the indirect area cannot hold; `OutOfBounds` if a buffer is outside
   *   guest memory (nothing is posted then).
   */
  add(chain: ChainSpec, options?: AddOptions<T>): number {
    const rd = chain.readable ?? EMPTY;
    const wr = chain.writable ?? EMPTY;
    const nr = rd.length;
    const n = nr + wr.length;
    for (let i = 0; i < nr; i++) this.#checkBuffer(rd[i]!);
    for (let i = nr; i < n; i++) this.#checkBuffer(wr[i - nr]!);
    if (n === 0) throw new VirtqueueError("InvalidArgument", "a chain needs at least one buffer");
    const views = this.#v();
    let head: number;
    if (options?.indirect) {
      const area = this.#indirect;
      if (!area) throw new VirtqueueError("InvalidIndirect", "no indirect table area configured");
      if (n > this.indirectMaxEntries)
        throw new VirtqueueError("InvalidArgument", `${n} buffers exceed the indirect table size ${this.indirectMaxEntries}`);
      if (this.#numFree < 1) throw new VirtqueueError("QueueFull", "no free descriptor");
      head = this.#freeHead;
      this.#take(1);
      const tableOff = head * this.indirectMaxEntries * 16;
      const table = area.addr(tableOff);
      const iv = views?.indirect;
      for (let i = 0; i < n; i++) {
        const b = i < nr ? rd[i]! : wr[i - nr]!;
        this.#split(b.addr);
        const more = i < n - 1;
        this.#writeDesc(iv, tableOff + i * 16, iv === undefined ? addrAdd(table, i * 16) : 0, b.len, (i < nr ? 0 : VIRTQ_DESC_F_WRITE) | (more ? VIRTQ_DESC_F_NEXT : 0), more ? i + 1 : 0);
      }
      this.#split(table);
      this.#writeDesc(views?.desc, head * 16, views === undefined ? this.#desc.addr(head * 16) : 0, n * 16, VIRTQ_DESC_F_INDIRECT, 0);
      this.#chainLen[head] = 1;
    } else {
      if (this.#numFree < n) throw new VirtqueueError("QueueFull", `${n} descriptors needed, ${this.#numFree} free`);
      head = this.#freeHead;
      let d = head;
      for (let i = 0; i < n; i++) {
        const b = i < nr ? rd[i]! : wr[i - nr]!;
        const more = i < n - 1;
        const next = this.#freeNext[d]!;
        this.#split(b.addr);
        this.#writeDesc(views?.desc, d * 16, views === undefined ? this.#desc.addr(d * 16) : 0, b.len, (i < nr ? 0 : VIRTQ_DESC_F_WRITE) | (more ? VIRTQ_DESC_F_NEXT : 0), more ? next : 0);
        d = next;
      }
      this.#freeHead = d;
      this.#numFree -= n;
      this.#chainLen[head] = n;
    }
    this.#tokens[head] = options?.token;
    const slot = this.#availIdx & (this.size - 1);
    if (views !== undefined) Atomics.store(views.avail, 2 + slot, head);
    else this.#mem.store16(this.#avail.addr(AVAIL_RING + 2 * slot), head);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    if (options?.publish ?? true) this.publish();
    return head;
  }

  /** Takes `n` descriptors off the free list (a run starting at #freeHead, linked by #freeNext). */
  #take(n: number): void {
    let d = this.#freeHead;
    for (let i = 0; i < n; i++) d = this.#freeNext[d]!;
    this.#freeHead = d;
    this.#numFree -= n;
  }

  /** Returns the chain headed at `head` (`n` descriptors linked by #freeNext) to the free list. */
  #release(head: number, n: number): void {
    let last = head;
    for (let i = 1; i < n; i++) last = this.#freeNext[last]!;
    this.#freeNext[last] = this.#freeHead;
    this.#freeHead = head;
    this.#numFree += n;
  }

  /**
   * Makes the added chains visible: a fence (descriptors and ring entries before the index), then one
   * aligned 16-bit store of avail.idx, so a busy-polling device never sees half an index.
   */
  publish(): void {
    if (this.#publishedIdx === this.#availIdx) return;
    const v = this.#v();
    // In place, the index store is itself the barrier: Atomics.store is sequentially consistent (V8: xchg on
    // x86-64, stlr on arm64), so the descriptor and ring stores before it are visible first. Through
    // GuestMemory, an explicit fence.
    if (v !== undefined) Atomics.store(v.avail, 1, this.#availIdx);
    else {
      this.#mem.fence();
      this.#mem.store16(this.#avail.addr(AVAIL_IDX), this.#availIdx);
    }
    this.#publishedIdx = this.#availIdx;
  }

  /**
   * Whether the device wants a kick for what was published since the last call (virtio 1.2 2.7.13.4:
   * avail_event with EVENT_IDX, otherwise VIRTQ_USED_F_NO_NOTIFY). Publishes pending entries first.
   */
  needsNotification(): boolean {
    this.publish();
    const v = this.#v();
    // The avail idx store, then the device's suppression field: a store-load order. In place both are
    // seq_cst Atomics (x86-64 xchg then mov; arm64 stlr then ldar, which is not reordered before the stlr).
    if (v === undefined) this.#mem.fence();
    const old = this.#kickedIdx;
    const now = this.#publishedIdx;
    this.#kickedIdx = now;
    if (this.eventIdx) {
      const event = v !== undefined ? Atomics.load(v.used16, 2 + 4 * this.size) : this.#mem.load16(this.#used.addr(availEventOffset(this.size)));
      return vringNeedEvent(event, now, old);
    }
    const flags = v !== undefined ? Atomics.load(v.used16, 0) : this.#mem.load16(this.#used.addr(USED_FLAGS));
    return (flags & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  #usedIdx(): number {
    const v = this.#v();
    return v !== undefined ? Atomics.load(v.used16, 1) : this.#mem.load16(this.#used.addr(USED_IDX));
  }

  /** Whether the device has returned entries not yet harvested (one aligned 16-bit load: cheap to spin on). */
  hasUsed(): boolean {
    return this.#usedIdx() !== this.#lastUsed;
  }

  /**
   * Harvests the next used element into `out` (no allocation); false if there is none. Its descriptors
   * return to the free list.
   * @throws VirtqueueError as `getUsed`.
   */
  getUsedInto(out: UsedSlot<T>): boolean {
    const usedIdx = this.#usedIdx();
    if (usedIdx === this.#lastUsed) return false;
    if (((usedIdx - this.#lastUsed) & 0xffff) > this.size)
      throw new VirtqueueError("InvalidUsedIdx", `used idx ${usedIdx} is more than ${this.size} past ${this.#lastUsed}`);
    // The element is written before the index: read it only after seeing the index (in place, the index
    // load is an acquire: Atomics.load is mov on x86-64, ldar on arm64).
    const mem = this.#mem;
    const v = this.#v();
    if (v === undefined) mem.fence();
    const at = this.#lastUsed & (this.size - 1);
    let id: number;
    let len: number;
    if (v !== undefined) {
      id = Atomics.load(v.used32, 1 + 2 * at);
      len = Atomics.load(v.used32, 2 + 2 * at);
    } else {
      const slot = this.#used.addr(USED_RING + 8 * at);
      id = mem.load32(slot);
      len = mem.load32(addrAdd(slot, 4));
    }
    this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    // With EVENT_IDX, used_event follows harvesting; while interrupts are off it stays half the index space
    // ahead, refreshed here so the device's used idx can never reach it (no stray interrupt after 32k entries).
    if (this.eventIdx) this.#storeUsedEvent(this.#interruptsDisabled ? (this.#lastUsed + 0x8000) & 0xffff : this.#lastUsed);
    const n = id < this.size ? this.#chainLen[id]! : 0;
    if (n === 0) throw new VirtqueueError("InvalidIndex", `device returned id ${id}, which is not an in-flight chain head`);
    this.#chainLen[id] = 0;
    out.id = id;
    out.len = len;
    out.token = this.#tokens[id];
    this.#tokens[id] = undefined;
    this.#release(id, n);
    return true;
  }

  readonly #slot: UsedSlot<T> = { id: 0, len: 0, token: undefined };

  /**
   * The next used element, or undefined. Its descriptors return to the free list.
   * @throws VirtqueueError `InvalidUsedIdx` if the device's used idx ran ahead by more than the queue size,
   *   `InvalidIndex` if the device returned an id that is not an in-flight head (the entry is skipped).
   */
  getUsed(): UsedElement<T> | undefined {
    const s = this.#slot;
    if (!this.getUsedInto(s)) return undefined;
    const u = { id: s.id, len: s.len, token: s.token };
    s.token = undefined;
    return u;
  }

  /** Every used element available now (at most `max`). */
  harvest(max = Infinity): UsedElement<T>[] {
    const out: UsedElement<T>[] = [];
    while (out.length < max) {
      const u = this.getUsed();
      if (!u) break;
      out.push(u);
    }
    return out;
  }

  #storeUsedEvent(value: number): void {
    const v = this.#v();
    if (v !== undefined) Atomics.store(v.avail, 2 + this.size, value);
    else this.#mem.store16(this.#avail.addr(usedEventOffset(this.size)), value);
  }

  #storeAvailFlags(value: number): void {
    const v = this.#v();
    if (v !== undefined) Atomics.store(v.avail, 0, value);
    else this.#mem.store16(this.#avail.addr(AVAIL_FLAGS), value);
  }

  /** Whether `disableInterrupts` is in effect. */
  get interruptsDisabled(): boolean {
    return this.#interruptsDisabled;
  }

  /**
   * Asks the device not to interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT, or with EVENT_IDX a used_event half the
   * index space ahead, kept there by every harvest). A polling driver does this once and then finds
   * completions with `hasUsed`/`getUsedInto`; a device that honours it never writes the call eventfd.
   */
  disableInterrupts(): void {
    this.#interruptsDisabled = true;
    if (this.eventIdx) this.#storeUsedEvent((this.#lastUsed + 0x8000) & 0xffff);
    else this.#storeAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
  }

  /**
   * Asks for interrupts again (used_event = next entry, or clears the flag) and returns whether used entries
   * are already pending (the device may have added them before seeing the request: harvest them now).
   */
  enableInterrupts(): boolean {
    this.#interruptsDisabled = false;
    if (this.eventIdx) this.#storeUsedEvent(this.#lastUsed);
    else this.#storeAvailFlags(0);
    // store then load: seq_cst Atomics in place, a fence through GuestMemory
    if (this.#v() === undefined) this.#mem.fence();
    return this.hasUsed();
  }
}
