// rust-vmm vm-memory guest_memory.rs `GuestMemory` + `Bytes`: the guest's physical address space as a set of
// sorted, non-overlapping regions. Every access is bounds-checked over its whole range *before* a byte is
// touched, so a hostile address (a descriptor from the guest) gives a GuestMemoryError and never a partial
// write or an access outside the mappings.
//
// Regions may lie anywhere in the 64-bit guest address space (Xen grant DMA addresses have bit 63 set).
// Addresses below 2^53 -- all RAM on any CPU -- are looked up as doubles, so the hot path (a 4 KiB copy)
// pays no bigint arithmetic; addresses above take a bigint lookup. Either way an access is resolved to
// (region, offset in region) and region offsets are always doubles (a region is smaller than 2^53 bytes).
import { fence as sysFence, type FieldSpec, type StructLayout, type StructValue } from "@xen-vhost/vmm-sys-util";
import { GuestMemoryError, hex } from "./error.js";
import { GuestAddress, type GuestAddressLike } from "./guest-address.js";
import type { GuestMemoryRegion, RegionView } from "./guest-memory-region.js";
import { MmapRegion } from "./mmap-region.js";
import type { VhostUserRegionDescription } from "./vhost-user.js";

interface Entry {
  readonly region: GuestMemoryRegion;
  /** First byte (guest physical); exact only for low entries (the double fast path). */
  readonly base: number;
  /** One past the last byte; exact only for low entries. */
  readonly end: number;
  readonly baseBig: bigint;
  readonly endBig: bigint;
  readonly size: number;
  /** Position in the address-sorted entry list (to find the adjacent region). */
  readonly index: number;
}

const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);
const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** Returned by toNum for addresses >= 2^53 (they take the bigint lookup). */
const HIGH = -1;

/** The address as a double if it is below 2^53, else HIGH. @throws RangeError outside 0..2^64-1. */
function toNum(addr: GuestAddressLike): number {
  if (typeof addr === "number") {
    // `addr >= 0 && addr <= MAX_SAFE_INTEGER && integer`, cheapest form first (the hot path).
    if (addr >= 0 && addr <= Number.MAX_SAFE_INTEGER && Math.floor(addr) === addr) return addr;
    throw new RangeError(`guest address ${addr} is not a non-negative safe integer`);
  }
  const v = typeof addr === "bigint" ? addr : addr.value;
  if (v <= MAX_SAFE_BIG) {
    if (v < 0n) throw new RangeError(`guest address ${v} outside 0..2^64-1`);
    return Number(v);
  }
  if (v > U64_MAX) throw new RangeError(`guest address ${v} outside 0..2^64-1`);
  return HIGH;
}

/** 2^(8 * width): the first value that does not fit a store of `width` bytes. */
const LIMIT = [0, 0x100, 0x10000, 0, 0x1_0000_0000] as const;

function addrText(addr: GuestAddressLike): string {
  return hex(typeof addr === "number" ? addr : typeof addr === "bigint" ? addr : addr.value);
}

function addrBig(addr: GuestAddressLike): bigint {
  return typeof addr === "number" ? BigInt(addr) : typeof addr === "bigint" ? addr : addr.value;
}

function checkLength(len: number): void {
  if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`length ${len} is not a non-negative safe integer`);
}

/** One piece of a range that spans regions. */
interface Segment {
  readonly entry: Entry;
  readonly offset: number;
  readonly length: number;
}

export interface GuestMemoryOptions {
  /** Close the regions when the GuestMemory is closed (default true). */
  ownsRegions?: boolean;
}

export interface FromRangesOptions {
  /** Prefix of the memfd names (default "guest-ram"). */
  name?: string;
}

/** The guest's physical memory. Close it (or `using`) to unmap every region. */
export class GuestMemory implements Disposable {
  /** All regions, sorted by address. */
  readonly #entries: readonly Entry[];
  /** Regions entirely below 2^53 (double lookup). */
  readonly #low: readonly Entry[];
  /** Regions reaching 2^53 or above (bigint lookup). */
  readonly #high: readonly Entry[];
  readonly #ownsRegions: boolean;
  #last: Entry | undefined;
  #closed = false;
  /** Region offset found by the last #find() (a field rather than a tuple: no allocation per access). */
  #off = 0;

  /**
   * @throws GuestMemoryError `RegionOverlap` if two regions overlap, `Closed` if a region is already closed.
   */
  constructor(regions: Iterable<GuestMemoryRegion>, options: GuestMemoryOptions = {}) {
    const list: { region: GuestMemoryRegion; baseBig: bigint; endBig: bigint }[] = [];
    for (const region of regions) {
      if (region.closed) throw new GuestMemoryError("Closed", `region at ${region.guestBase.toString()} is closed`);
      const base = region.guestBase.value;
      const end = base + BigInt(region.size);
      if (!Number.isSafeInteger(region.size) || region.size <= 0 || end - 1n > U64_MAX)
        throw new GuestMemoryError("InvalidRegion", `region at ${hex(base)} (${region.size} bytes) is empty or ends above 2^64 - 1`, {
          address: base,
        });
      list.push({ region, baseBig: base, endBig: end });
    }
    list.sort((a, b) => (a.baseBig < b.baseBig ? -1 : a.baseBig > b.baseBig ? 1 : 0));
    const entries: Entry[] = list.map((r, index) => ({
      ...r,
      base: Number(r.baseBig),
      end: Number(r.endBig),
      size: r.region.size,
      index,
    }));
    for (let i = 1; i < entries.length; i++) {
      const prev = entries[i - 1]!;
      const cur = entries[i]!;
      if (cur.baseBig < prev.endBig)
        throw new GuestMemoryError(
          "RegionOverlap",
          `region ${hex(cur.baseBig)}..${hex(cur.endBig)} overlaps ${hex(prev.baseBig)}..${hex(prev.endBig)}`,
          { address: cur.baseBig },
        );
    }
    this.#entries = entries;
    this.#low = entries.filter((e) => e.endBig - 1n <= MAX_SAFE_BIG);
    this.#high = entries.filter((e) => e.endBig - 1n > MAX_SAFE_BIG);
    this.#ownsRegions = options.ownsRegions ?? true;
    this.#last = this.#low[0];
  }

  /**
   * Guest memory made of memfd-backed regions, one per `[base, size]` (rust-vmm `from_ranges`). If one fails,
   * the ones already created are closed.
   * @throws GuestMemoryError `RegionOverlap`, `MapFailed`, `InvalidRegion`.
   */
  static fromRanges(ranges: Iterable<readonly [GuestAddressLike, number]>, options: FromRangesOptions = {}): GuestMemory {
    const regions: MmapRegion[] = [];
    try {
      for (const [base, size] of ranges)
        regions.push(MmapRegion.memfd(base, size, { name: `${options.name ?? "guest-ram"}@${addrText(base)}` }));
      return new GuestMemory(regions);
    } catch (e) {
      for (const r of regions.reverse()) r.close();
      throw e;
    }
  }

  /** The regions, sorted by guest address. */
  get regions(): readonly GuestMemoryRegion[] {
    return this.#entries.map((e) => e.region);
  }

  get numRegions(): number {
    return this.#entries.length;
  }

  /** Sum of the region sizes. */
  get totalSize(): number {
    let n = 0;
    for (const e of this.#entries) n += e.size;
    return n;
  }

  /** The highest backed address (rust-vmm `last_addr`), or undefined without regions. */
  get lastAddr(): GuestAddress | undefined {
    const e = this.#entries[this.#entries.length - 1];
    return e ? new GuestAddress(e.endBig - 1n) : undefined;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #checkOpen(): void {
    if (this.#closed) throw new GuestMemoryError("Closed", "guest memory is closed");
  }

  /** The low entry containing `a` (< 2^53), or undefined (binary search, last-hit cache for the hot path). */
  #lookup(a: number): Entry | undefined {
    const last = this.#last;
    if (last !== undefined && a >= last.base && a < last.end) return last;
    if (a === HIGH) return undefined;
    const es = this.#low;
    let lo = 0;
    let hi = es.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const e = es[mid]!;
      if (a < e.base) hi = mid - 1;
      else if (a >= e.end) lo = mid + 1;
      else {
        this.#last = e;
        return e;
      }
    }
    return undefined;
  }

  /** The high entry containing `v`, or undefined. */
  #lookupHigh(v: bigint): Entry | undefined {
    const es = this.#high;
    let lo = 0;
    let hi = es.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const e = es[mid]!;
      if (v < e.baseBig) hi = mid - 1;
      else if (v >= e.endBig) lo = mid + 1;
      else return e;
    }
    return undefined;
  }

  /**
   * The entry containing `addr` (its double form `a`, or HIGH), with the region offset left in #off;
   * undefined if no region holds it.
   */
  #find(a: number, addr: GuestAddressLike): Entry | undefined {
    if (a !== HIGH) {
      const e = this.#lookup(a);
      if (e !== undefined) {
        this.#off = a - e.base;
        return e;
      }
      if (this.#high.length === 0) return undefined;
    }
    const v = addrBig(addr);
    const e = this.#lookupHigh(v);
    if (e !== undefined) this.#off = Number(v - e.baseBig);
    return e;
  }

  #locate(a: number, addr: GuestAddressLike): Entry {
    this.#checkOpen();
    const e = this.#find(a, addr);
    if (!e) throw new GuestMemoryError("InvalidGuestAddress", `no memory at guest address ${addrText(addr)}`, { address: addrBig(addr) });
    return e;
  }

  /** The region containing `addr`, if any. */
  findRegion(addr: GuestAddressLike): GuestMemoryRegion | undefined {
    this.#checkOpen();
    return this.#find(toNum(addr), addr)?.region;
  }

  /** Whether `addr` is backed by a region. */
  addressInRange(addr: GuestAddressLike): boolean {
    return this.findRegion(addr) !== undefined;
  }

  /** Whether all of `[addr, addr + len)` is backed (possibly by several adjacent regions). */
  checkRange(addr: GuestAddressLike, len: number): boolean {
    checkLength(len);
    this.#checkOpen();
    const a = toNum(addr);
    // Fast path: inside one region (no allocation).
    const e = this.#find(a, addr);
    if (e !== undefined && len <= e.size - this.#off) return true;
    try {
      this.#segments(a, len, addr);
      return true;
    } catch (e) {
      if (e instanceof GuestMemoryError) return false;
      throw e;
    }
  }

  /**
   * Splits `[a, a + len)` over adjacent regions. Throws before anything is accessed if any byte is unbacked.
   */
  #segments(a: number, len: number, addr: GuestAddressLike): Segment[] {
    const out: Segment[] = [];
    if ((a === HIGH || a + len - 1 > Number.MAX_SAFE_INTEGER) && addrBig(addr) + BigInt(len) - 1n > U64_MAX)
      throw new GuestMemoryError("Overflow", `${addrText(addr)} + ${len} overflows`, { address: addrBig(addr) });
    let e = this.#find(a, addr);
    if (!e) throw new GuestMemoryError("InvalidGuestAddress", `${len} bytes at ${addrText(addr)}: no memory there`, { address: addrBig(addr) });
    let off = this.#off;
    let left = len;
    for (;;) {
      const n = Math.min(left, e.size - off);
      out.push({ entry: e, offset: off, length: n });
      left -= n;
      if (left === 0) return out;
      // The rest must continue in the region that starts exactly where this one ends.
      const next: Entry | undefined = this.#entries[e.index + 1];
      if (next === undefined || next.baseBig !== e.endBig)
        throw new GuestMemoryError(
          "InvalidGuestAddress",
          `${len} bytes at ${addrText(addr)}: no memory at guest address ${hex(e.endBig)}`,
          { address: e.endBig },
        );
      e = next;
      off = 0;
    }
  }

  /**
   * Copies `dst.length` bytes from guest memory at `addr` into `dst`. The range may span adjacent regions.
   * @throws GuestMemoryError `InvalidGuestAddress` if any byte is unbacked (dst untouched), `Closed`.
   */
  readInto(addr: GuestAddressLike, dst: Uint8Array): void {
    const len = dst.length;
    if (len === 0) return;
    const a = toNum(addr);
    this.#checkOpen();
    const e = this.#find(a, addr);
    if (e !== undefined && len <= e.size - this.#off) {
      const m = e.region.mapping;
      if (m) {
        const off = this.#off;
        dst.set(m.bytes.subarray(off, off + len));
        return;
      }
    }
    this.#copyOut(a, addr, dst);
  }

  #copyOut(a: number, addr: GuestAddressLike, dst: Uint8Array): void {
    const views = this.#borrowAll(this.#segments(a, dst.length, addr));
    try {
      let at = 0;
      for (const v of views) {
        dst.set(v.bytes, at);
        at += v.bytes.length;
      }
    } finally {
      for (const v of views) v.release();
    }
  }

  /** Maps every segment first, so a failing on-demand mapping leaves nothing half-copied. */
  #borrowAll(segs: Segment[]): RegionView[] {
    const views: RegionView[] = [];
    try {
      for (const s of segs) views.push(s.entry.region.borrow(s.offset, s.length));
    } catch (e) {
      for (const v of views) v.release();
      throw e;
    }
    return views;
  }

  /**
   * A copy of `len` bytes at `addr`.
   * @throws GuestMemoryError `InvalidGuestAddress`, `Closed`.
   */
  read(addr: GuestAddressLike, len: number): Uint8Array {
    checkLength(len);
    if (len === 0) return new Uint8Array(0);
    // Check before allocating: a guest-supplied length must not make us allocate gigabytes first.
    const a = toNum(addr);
    this.#checkOpen();
    const e = this.#find(a, addr);
    if (e === undefined || len > e.size - this.#off) this.#segments(a, len, addr);
    const out = new Uint8Array(len);
    this.readInto(addr, out);
    return out;
  }

  /**
   * Writes all of `data` at `addr` (the range may span adjacent regions). The whole range is checked first:
   * on error nothing was written.
   * @throws GuestMemoryError `InvalidGuestAddress`, `Closed`.
   */
  write(addr: GuestAddressLike, data: Uint8Array): void {
    const len = data.length;
    if (len === 0) return;
    const a = toNum(addr);
    this.#checkOpen();
    const e = this.#find(a, addr);
    if (e !== undefined && len <= e.size - this.#off) {
      const m = e.region.mapping;
      if (m) {
        m.bytes.set(data, this.#off);
        return;
      }
    }
    const views = this.#borrowAll(this.#segments(a, len, addr));
    try {
      let at = 0;
      for (const v of views) {
        v.bytes.set(data.subarray(at, at + v.bytes.length));
        at += v.bytes.length;
      }
    } finally {
      for (const v of views) v.release();
    }
  }

  /** Fills `[addr, addr + len)` with `value` (checked first). */
  fill(addr: GuestAddressLike, len: number, value = 0): void {
    checkLength(len);
    if (len === 0) return;
    const views = this.#borrowAll(this.#segments(toNum(addr), len, addr));
    try {
      for (const v of views) v.bytes.fill(value);
    } finally {
      for (const v of views) v.release();
    }
  }

  /** Reads a struct (a vmm-sys-util `defineStruct` layout) at `addr`. */
  readObj<F extends Record<string, FieldSpec>>(addr: GuestAddressLike, layout: StructLayout<F>): StructValue<StructLayout<F>> {
    return layout.decode(this.read(addr, layout.size));
  }

  /**
   * Writes the given fields of a struct at `addr`; fields not given keep their current bytes. Values and the
   * range are validated before guest memory is written (not atomic against concurrent writers of the struct).
   */
  writeObj<F extends Record<string, FieldSpec>>(
    addr: GuestAddressLike,
    layout: StructLayout<F>,
    value: Partial<StructValue<StructLayout<F>>>,
  ): void {
    const buf = this.read(addr, layout.size);
    layout.write(new DataView(buf.buffer), 0, value);
    this.write(addr, buf);
  }

  /**
   * A zero-copy view of `[addr, addr + len)`, which must lie inside one region that is mapped up front.
   * The view reads as length 0 once the memory is closed.
   * @throws GuestMemoryError `InvalidGuestAddress`, `OutOfBounds` if the range crosses the region's end,
   *   `InvalidRegion` for a region mapped on demand (use `borrow`), `Closed`.
   */
  slice(addr: GuestAddressLike, len: number): Uint8Array {
    checkLength(len);
    const a = toNum(addr);
    const e = this.#locate(a, addr);
    const off = this.#off;
    if (len > e.size - off)
      throw new GuestMemoryError("OutOfBounds", `${len} bytes at ${addrText(addr)} cross the region end ${hex(e.endBig)}`, {
        address: addrBig(addr),
      });
    const m = e.region.mapping;
    if (!m)
      throw new GuestMemoryError("InvalidRegion", `region at ${hex(e.baseBig)} is mapped on demand: use borrow()`, { address: addrBig(addr) });
    return m.bytes.subarray(off, off + len);
  }

  /**
   * A view of `[addr, addr + len)` inside one region, for any kind of region (maps on demand if needed).
   * Release it (`using v = mem.borrow(...)`).
   * @throws GuestMemoryError `InvalidGuestAddress`, `OutOfBounds`, `MapFailed`, `Closed`.
   */
  borrow(addr: GuestAddressLike, len: number): RegionView {
    checkLength(len);
    const a = toNum(addr);
    const e = this.#locate(a, addr);
    const off = this.#off;
    if (len > e.size - off)
      throw new GuestMemoryError("OutOfBounds", `${len} bytes at ${addrText(addr)} cross the region end ${hex(e.endBig)}`, {
        address: addrBig(addr),
      });
    return e.region.borrow(off, len);
  }

  /** Runs `fn` with a view of `[addr, addr + len)` (one region), released afterwards. */
  withSlice<T>(addr: GuestAddressLike, len: number, fn: (bytes: Uint8Array) => T): T {
    const v = this.borrow(addr, len);
    try {
      return fn(v.bytes);
    } finally {
      v.release();
    }
  }

  /** Region offset of the last #atomicTarget() (a field rather than a tuple: no allocation per access). */
  #atomicOffset = 0;

  /** Entry for an aligned atomic access of `width` bytes; the region offset is left in #atomicOffset. */
  #atomicTarget(addr: GuestAddressLike, width: number): Entry {
    const a = toNum(addr);
    if (a === HIGH ? (addrBig(addr) & BigInt(width - 1)) !== 0n : a % width !== 0)
      throw new GuestMemoryError("Unaligned", `guest address ${addrText(addr)} is not ${width}-byte aligned`, { address: addrBig(addr) });
    const e = this.#locate(a, addr);
    const off = this.#off;
    if (off + width > e.size)
      throw new GuestMemoryError("OutOfBounds", `${width} bytes at ${addrText(addr)} cross the region end`, { address: addrBig(addr) });
    // A region whose base is not aligned like its mapping cannot do an aligned access at this address.
    if (off % width !== 0)
      throw new GuestMemoryError("Unaligned", `offset ${off} in region ${hex(e.baseBig)} is not ${width}-byte aligned`, { address: addrBig(addr) });
    this.#atomicOffset = off;
    return e;
  }

  #load(addr: GuestAddressLike, width: 1 | 2 | 4): number {
    const e = this.#atomicTarget(addr, width);
    const off = this.#atomicOffset;
    const m = e.region.mapping;
    if (m) return width === 2 ? m.atomics.load16(off) : width === 4 ? m.atomics.load32(off) : m.atomics.load8(off);
    const v = e.region.borrow(off, width);
    try {
      const o = v.atomicsOffset;
      return width === 2 ? v.atomics.load16(o) : width === 4 ? v.atomics.load32(o) : v.atomics.load8(o);
    } finally {
      v.release();
    }
  }

  #store(addr: GuestAddressLike, width: 1 | 2 | 4, value: number): void {
    if (!(value >= 0 && value < LIMIT[width] && Math.floor(value) === value))
      throw new RangeError(`value ${value} does not fit ${width * 8} bits`);
    const e = this.#atomicTarget(addr, width);
    const off = this.#atomicOffset;
    const m = e.region.mapping;
    if (m) {
      if (width === 2) m.atomics.store16(off, value);
      else if (width === 4) m.atomics.store32(off, value);
      else m.atomics.store8(off, value);
      return;
    }
    const v = e.region.borrow(off, width);
    try {
      const o = v.atomicsOffset;
      if (width === 2) v.atomics.store16(o, value);
      else if (width === 4) v.atomics.store32(o, value);
      else v.atomics.store8(o, value);
    } finally {
      v.release();
    }
  }

  /** Single-instruction byte load. */
  load8(addr: GuestAddressLike): number {
    return this.#load(addr, 1);
  }
  /** Single-instruction byte store. */
  store8(addr: GuestAddressLike, value: number): void {
    this.#store(addr, 1, value);
  }
  /**
   * Single-instruction aligned little-endian 16-bit load (virtqueue ring indices).
   * @throws GuestMemoryError `Unaligned`, `InvalidGuestAddress`, `OutOfBounds`, `Closed`.
   */
  load16(addr: GuestAddressLike): number {
    return this.#load(addr, 2);
  }
  /**
   * Single-instruction aligned 16-bit store: a concurrent reader (a busy-polling backend) never sees half of
   * it, unlike DataView/Buffer writes, which store byte by byte.
   * @throws GuestMemoryError `Unaligned`, `InvalidGuestAddress`, `OutOfBounds`, `Closed`; RangeError for a value
   *   outside 0..0xffff.
   */
  store16(addr: GuestAddressLike, value: number): void {
    this.#store(addr, 2, value);
  }
  /** Single-instruction aligned 32-bit load. */
  load32(addr: GuestAddressLike): number {
    return this.#load(addr, 4);
  }
  /** Single-instruction aligned 32-bit store. */
  store32(addr: GuestAddressLike, value: number): void {
    this.#store(addr, 4, value);
  }
  /** Single-instruction aligned 64-bit load. */
  load64(addr: GuestAddressLike): bigint {
    const e = this.#atomicTarget(addr, 8);
    const off = this.#atomicOffset;
    const m = e.region.mapping;
    if (m) return m.atomics.load64(off);
    const v = e.region.borrow(off, 8);
    try {
      return v.atomics.load64(v.atomicsOffset);
    } finally {
      v.release();
    }
  }
  /** Single-instruction aligned 64-bit store. */
  store64(addr: GuestAddressLike, value: bigint): void {
    if (typeof value !== "bigint" || value < 0n || value > 0xffff_ffff_ffff_ffffn) throw new RangeError(`value ${String(value)} does not fit 64 bits`);
    const e = this.#atomicTarget(addr, 8);
    const off = this.#atomicOffset;
    const m = e.region.mapping;
    if (m) {
      m.atomics.store64(off, value);
      return;
    }
    const v = e.region.borrow(off, 8);
    try {
      v.atomics.store64(v.atomicsOffset, value);
    } finally {
      v.release();
    }
  }

  /** A full memory barrier (orders ring writes before the index store that publishes them). */
  fence(): void {
    sysFence();
  }

  /**
   * The vhost-user description of every region, in address order, for SET_MEM_TABLE.
   * @throws GuestMemoryError `InvalidRegion` if a region has no fd to share, `Closed`.
   */
  vhostUserRegions(): VhostUserRegionDescription[] {
    this.#checkOpen();
    return this.#entries.map((e) => {
      const d = e.region.vhostUserDescription();
      if (!d)
        throw new GuestMemoryError("InvalidRegion", `region at ${hex(e.baseBig)} has no fd to share with a vhost-user backend`, {
          address: e.baseBig,
        });
      return d;
    });
  }

  /**
   * Guest memory over the regions a vhost-user front-end described (the backend side of SET_MEM_TABLE):
   * each fd is mapped shared at its `mmap_offset` and owned by the result (closed with it). If one mapping
   * fails, the ones made are closed; the fds stay the caller's then.
   * @throws GuestMemoryError `MapFailed`, `RegionOverlap`, `InvalidRegion`.
   */
  static fromVhostUserRegions(regions: readonly VhostUserRegionDescription[]): GuestMemory {
    const made: MmapRegion[] = [];
    try {
      for (const d of regions) {
        if (d.memory_size > MAX_SAFE_BIG)
          throw new GuestMemoryError("InvalidRegion", `region of ${d.memory_size} bytes is too large`, { address: d.guest_phys_addr });
        made.push(MmapRegion.fromFd(d.fd, d.guest_phys_addr, Number(d.memory_size), { fileOffset: d.mmap_offset }));
      }
      const mem = new GuestMemory(made);
      // Only now, with everything mapped, do the regions take the fds over.
      for (const r of made) r.adoptFd();
      return mem;
    } catch (e) {
      for (const r of made.reverse()) r.close();
      throw e;
    }
  }

  /** Closes the regions (if owned): every view becomes length 0. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#last = undefined;
    if (!this.#ownsRegions) return;
    let first: Error | undefined;
    for (const e of [...this.#entries].reverse()) {
      try {
        e.region.close();
      } catch (err) {
        first ??= err instanceof Error ? err : new Error(String(err));
      }
    }
    if (first) throw first;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
