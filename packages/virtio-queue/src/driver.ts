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

interface InFlight<T> {
  readonly descs: readonly number[];
  readonly token: T | undefined;
}

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
  /** Free descriptor list, kept outside guest memory. */
  readonly #freeNext: Uint16Array;
  #freeHead = 0;
  #numFree: number;
  readonly #inFlight: (InFlight<T> | undefined)[];
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
    this.#inFlight = new Array<InFlight<T> | undefined>(size).fill(undefined);
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
    for (const f of this.#inFlight) if (f) n++;
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

  #writeDesc(at: number | bigint, addr: bigint, len: number, flags: number, next: number): void {
    const v = this.#scratchView;
    v.setBigUint64(0, addr, true);
    v.setUint32(8, len, true);
    v.setUint16(12, flags, true);
    v.setUint16(14, next, true);
    this.#mem.write(at, this.#scratch);
  }

  /**
   * Posts a chain (readable buffers, then writable ones) and returns its head index.
   * @throws VirtqueueError `QueueFull` without enough free descriptors, `InvalidArgument` for an empty chain,
   *   a bad length or an indirect chain the indirect area cannot hold; `OutOfBounds` if a buffer is outside
   *   guest memory (nothing is posted then).
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
    let head: number;
    let descs: number[];
    if (options.indirect) {
      const area = this.#indirect;
      if (!area) throw new VirtqueueError("InvalidIndirect", "no indirect table area configured");
      if (n > this.indirectMaxEntries)
        throw new VirtqueueError("InvalidArgument", `${n} buffers exceed the indirect table size ${this.indirectMaxEntries}`);
      if (this.#numFree < 1) throw new VirtqueueError("QueueFull", "no free descriptor");
      head = this.#allocate();
      descs = [head];
      const table = area.addr(head * this.indirectMaxEntries * 16);
      for (let i = 0; i < n; i++) {
        const b = bufs[i]!;
        this.#writeDesc(addrAdd(table, i * 16), b.addr, b.len, b.flags | (i < n - 1 ? VIRTQ_DESC_F_NEXT : 0), i < n - 1 ? i + 1 : 0);
      }
      this.#writeDesc(this.#desc.addr(head * 16), BigInt(table), n * 16, VIRTQ_DESC_F_INDIRECT, 0);
    } else {
      if (this.#numFree < n) throw new VirtqueueError("QueueFull", `${n} descriptors needed, ${this.#numFree} free`);
      descs = [];
      for (let i = 0; i < n; i++) descs.push(this.#allocate());
      head = descs[0]!;
      for (let i = 0; i < n; i++) {
        const b = bufs[i]!;
        const last = i === n - 1;
        this.#writeDesc(this.#desc.addr(descs[i]! * 16), b.addr, b.len, b.flags | (last ? 0 : VIRTQ_DESC_F_NEXT), last ? 0 : descs[i + 1]!);
      }
    }
    this.#inFlight[head] = { descs, token: options.token };
    this.#mem.store16(this.#avail.addr(AVAIL_RING + 2 * (this.#availIdx & (this.size - 1))), head);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    if (options.publish ?? true) this.publish();
    return head;
  }

  #allocate(): number {
    const d = this.#freeHead;
    this.#freeHead = this.#freeNext[d]!;
    this.#numFree--;
    return d;
  }

  #release(descs: readonly number[]): void {
    for (let i = descs.length - 1; i >= 0; i--) {
      const d = descs[i]!;
      this.#freeNext[d] = this.#freeHead;
      this.#freeHead = d;
      this.#numFree++;
    }
  }

  /**
   * Makes the added chains visible: a fence (descriptors and ring entries before the index), then one
   * aligned 16-bit store of avail.idx, so a busy-polling device never sees half an index.
   */
  publish(): void {
    if (this.#publishedIdx === this.#availIdx) return;
    this.#mem.fence();
    this.#mem.store16(this.#avail.addr(AVAIL_IDX), this.#availIdx);
    this.#publishedIdx = this.#availIdx;
  }

  /**
   * Whether the device wants a kick for what was published since the last call (virtio 1.2 2.7.13.4:
   * avail_event with EVENT_IDX, otherwise VIRTQ_USED_F_NO_NOTIFY). Publishes pending entries first.
   */
  needsNotification(): boolean {
    this.publish();
    this.#mem.fence();
    const old = this.#kickedIdx;
    const now = this.#publishedIdx;
    this.#kickedIdx = now;
    if (this.eventIdx) return vringNeedEvent(this.#mem.load16(this.#used.addr(availEventOffset(this.size))), now, old);
    return (this.#mem.load16(this.#used.addr(USED_FLAGS)) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** Whether the device has returned entries not yet harvested. */
  hasUsed(): boolean {
    return this.#mem.load16(this.#used.addr(USED_IDX)) !== this.#lastUsed;
  }

  /**
   * The next used element, or undefined. Its descriptors return to the free list.
   * @throws VirtqueueError `InvalidUsedIdx` if the device's used idx ran ahead by more than the queue size,
   *   `InvalidIndex` if the device returned an id that is not an in-flight head (the entry is skipped).
   */
  getUsed(): UsedElement<T> | undefined {
    const mem = this.#mem;
    const usedIdx = mem.load16(this.#used.addr(USED_IDX));
    if (usedIdx === this.#lastUsed) return undefined;
    if (((usedIdx - this.#lastUsed) & 0xffff) > this.size)
      throw new VirtqueueError("InvalidUsedIdx", `used idx ${usedIdx} is more than ${this.size} past ${this.#lastUsed}`);
    // The element is written before the index: read it only after seeing the index.
    mem.fence();
    const slot = this.#used.addr(USED_RING + 8 * (this.#lastUsed & (this.size - 1)));
    const id = mem.load32(slot);
    const len = mem.load32(addrAdd(slot, 4));
    this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    if (this.eventIdx && !this.#interruptsDisabled) mem.store16(this.#avail.addr(usedEventOffset(this.size)), this.#lastUsed);
    const f = id < this.size ? this.#inFlight[id] : undefined;
    if (!f) throw new VirtqueueError("InvalidIndex", `device returned id ${id}, which is not an in-flight chain head`);
    this.#inFlight[id] = undefined;
    this.#release(f.descs);
    return { id, len, token: f.token };
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

  /** Asks the device not to interrupt (VIRTQ_AVAIL_F_NO_INTERRUPT, or a far-away used_event with EVENT_IDX). */
  disableInterrupts(): void {
    this.#interruptsDisabled = true;
    if (this.eventIdx) this.#mem.store16(this.#avail.addr(usedEventOffset(this.size)), (this.#lastUsed + 0x8000) & 0xffff);
    else this.#mem.store16(this.#avail.addr(AVAIL_FLAGS), VIRTQ_AVAIL_F_NO_INTERRUPT);
  }

  /**
   * Asks for interrupts again (used_event = next entry, or clears the flag) and returns whether used entries
   * are already pending (the device may have added them before seeing the request: harvest them now).
   */
  enableInterrupts(): boolean {
    this.#interruptsDisabled = false;
    if (this.eventIdx) this.#mem.store16(this.#avail.addr(usedEventOffset(this.size)), this.#lastUsed);
    else this.#mem.store16(this.#avail.addr(AVAIL_FLAGS), 0);
    this.#mem.fence();
    return this.hasUsed();
  }
}
