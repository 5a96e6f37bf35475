// A GuestMemory that also holds grant regions. vm-memory's GuestMemory does its address arithmetic in
// doubles and so only accepts regions below 2^53, but grant DMA addresses have bit 63 set. Rather than fork
// the class, XenGuestMemory *folds* the grant space into an unused window below 2^53:
//
//     grant address 2^63 + x   <->   GRANT_WINDOW_BASE (2^52) + x      (x < 2^52; grefs only reach 2^44)
//
// Grant regions are handed to GuestMemory at their folded base through a thin adapter, and every public
// method translates its address first (one `typeof` test on the hot path of ordinary RAM addresses). The
// window is not RAM on any CPU (none has more than 52 physical address bits), so an address inside it can
// only ever name the same grant a guest could name by its grant address: no new reach. It is also what
// virtio-queue needs today, which keeps ring addresses as doubles: `windowAddress()` gives the folded
// number of a grant ring address. Errors on grant addresses are relabelled with the address the caller
// gave. It is a subclass, so virtio-queue (typed on GuestMemory) works over it unchanged. Copies that stay
// inside one grant region borrow from it directly instead of taking GuestMemory's general (multi-region,
// allocating) path: ring accesses are small and frequent.
//
// vm-memory has since gained regions above 2^53 (bigint lookup), so plain GuestMemory holds grant regions
// too, and virtio-queue keeps ring addresses as bigints; this class stays for the one-region fast path and
// windowAddress() (older virtio-queue builds). It can become a plain alias (see README, "Root changes").
import {
  GuestAddress, GuestMemory, GuestMemoryError, type GuestAddressLike, type GuestMemoryOptions, type GuestMemoryRegion,
  type RegionMapping, type RegionView, type VhostUserRegionDescription,
} from "@xen-vhost/vm-memory";
import type { FieldSpec, StructLayout, StructValue } from "@xen-vhost/vmm-sys-util";
import { hex } from "./error.js";
import { XEN_GRANT_DMA_ADDR_OFF } from "./grant-address.js";

/** Where the grant space (2^63 + x) is folded to: 2^52 + x. */
export const GRANT_WINDOW_BASE = 2 ** 52;
const WINDOW_BIG = BigInt(GRANT_WINDOW_BASE);
const WINDOW_SPAN = 1n << 52n;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** A grant region as GuestMemory sees it: the same region at its folded base. */
class FoldedRegion implements GuestMemoryRegion {
  readonly guestBase: GuestAddress;
  readonly size: number;
  readonly inner: GuestMemoryRegion;
  /** Folded first byte and one past the last, as numbers (the fast path's bounds). */
  readonly base: number;
  readonly end: number;
  constructor(inner: GuestMemoryRegion) {
    this.inner = inner;
    this.size = inner.size;
    this.guestBase = new GuestAddress(WINDOW_BIG + (inner.guestBase.value - XEN_GRANT_DMA_ADDR_OFF));
    this.base = Number(this.guestBase.value);
    this.end = this.base + this.size;
  }
  get closed(): boolean {
    return this.inner.closed;
  }
  get mapping(): RegionMapping | undefined {
    return this.inner.mapping;
  }
  borrow(offset: number, length: number): RegionView {
    return this.inner.borrow(offset, length);
  }
  vhostUserDescription(): VhostUserRegionDescription | undefined {
    return this.inner.vhostUserDescription();
  }
  close(): void {
    this.inner.close();
  }
  [Symbol.dispose](): void {
    this.inner.close();
  }
}

/** `#pre` result: pass the caller's address to GuestMemory unchanged. */
const PLAIN = -1;

function big(addr: GuestAddressLike): bigint {
  return typeof addr === "number" ? BigInt(addr) : typeof addr === "bigint" ? addr : addr.value;
}

/**
 * The folded number of a grant address, PLAIN for everything else (numbers, and bigints below 2^63, which
 * GuestMemory handles itself), or undefined for a grant address beyond the window (unbacked). Allocation-free
 * apart from the two BigInt operations a grant address needs.
 */
function fold(addr: GuestAddressLike): number | undefined {
  // Window numbers are grant space already (virtio-queue's ring addresses): same fast path, same labels.
  if (typeof addr === "number") return addr >= GRANT_WINDOW_BASE && addr <= Number.MAX_SAFE_INTEGER && Number.isInteger(addr) ? addr : PLAIN;
  const v = typeof addr === "bigint" ? addr : addr.value;
  if (v < XEN_GRANT_DMA_ADDR_OFF || v > U64_MAX) return PLAIN;
  const x = v - XEN_GRANT_DMA_ADDR_OFF;
  return x < WINDOW_SPAN ? GRANT_WINDOW_BASE + Number(x) : undefined;
}

function unfoldBig(a: bigint): bigint {
  return a >= WINDOW_BIG && a < WINDOW_BIG * 2n ? XEN_GRANT_DMA_ADDR_OFF + (a - WINDOW_BIG) : a;
}

/** The same error with folded addresses (in the message and `address`) turned back into grant addresses. */
function relabel(err: unknown, addr: GuestAddressLike): unknown {
  // A caller who gave a window number gets errors in window numbers.
  if (!(err instanceof GuestMemoryError) || typeof addr === "number") return err;
  const message = err.message.replace(/0x[0-9a-f]+/g, (h) => hex(unfoldBig(BigInt(h))));
  const opts: { address?: bigint; cause?: unknown } = {};
  if (err.address !== undefined) opts.address = unfoldBig(err.address);
  if (err.cause !== undefined) opts.cause = err.cause;
  return new GuestMemoryError(err.kind, message, opts);
}

function unbacked(original: bigint, len: number): GuestMemoryError {
  return new GuestMemoryError("InvalidGuestAddress", `${len} bytes at ${hex(original)}: no memory at guest address ${hex(original)}`, { address: original });
}

function checkLen(len: number): void {
  if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`length ${len} is not a non-negative safe integer`);
}

/**
 * Guest memory over foreign, grant and any other vm-memory regions. Grant regions (base >= 2^63) are
 * reachable at their grant DMA addresses; everything else behaves exactly like GuestMemory.
 */
export class XenGuestMemory extends GuestMemory {
  readonly #real: readonly GuestMemoryRegion[];
  readonly #byAdapter: Map<GuestMemoryRegion, GuestMemoryRegion>;
  /** Last grant region hit by the copy fast path, and the region offset it computed. */
  #lastGrant: FoldedRegion | undefined;
  #grantOff = 0;

  /**
   * @throws GuestMemoryError `RegionOverlap`, `Closed`, `InvalidRegion` (a non-grant region reaching into
   *   the fold window at 2^52, or one between 2^53 and 2^63 GuestMemory cannot hold).
   */
  constructor(regions: Iterable<GuestMemoryRegion>, options: GuestMemoryOptions = {}) {
    const real = [...regions];
    const byAdapter = new Map<GuestMemoryRegion, GuestMemoryRegion>();
    const adapted = real.map((r) => {
      const base = r.guestBase.value;
      if (base >= XEN_GRANT_DMA_ADDR_OFF) {
        if (base - XEN_GRANT_DMA_ADDR_OFF + BigInt(r.size) > WINDOW_SPAN)
          throw new GuestMemoryError("InvalidRegion", `grant region at ${hex(base)} reaches past 2^63 + 2^52`, { address: base });
        const a = new FoldedRegion(r);
        byAdapter.set(a, r);
        return a;
      }
      if (base + BigInt(r.size) >= WINDOW_BIG)
        throw new GuestMemoryError("InvalidRegion", `region at ${hex(base)} (${r.size} bytes) reaches 2^52, where grant addresses are folded`, { address: base });
      return r;
    });
    super(adapted, options);
    this.#real = real;
    this.#byAdapter = byAdapter;
  }

  override get regions(): readonly GuestMemoryRegion[] {
    return super.regions.map((r) => this.#byAdapter.get(r) ?? r);
  }

  override get lastAddr(): GuestAddress | undefined {
    let last: bigint | undefined;
    for (const r of this.#real) {
      const end = r.guestBase.value + BigInt(r.size) - 1n;
      if (last === undefined || end > last) last = end;
    }
    return last === undefined ? undefined : new GuestAddress(last);
  }

  override findRegion(addr: GuestAddressLike): GuestMemoryRegion | undefined {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.findRegion(addr);
    const a = fold(addr);
    if (a === undefined) {
      if (this.closed) super.findRegion(0); // throws Closed
      return undefined;
    }
    const r = super.findRegion(a === PLAIN ? addr : a);
    return r === undefined ? undefined : (this.#byAdapter.get(r) ?? r);
  }

  override addressInRange(addr: GuestAddressLike): boolean {
    return this.findRegion(addr) !== undefined;
  }

  override checkRange(addr: GuestAddressLike, len: number): boolean {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.checkRange(addr, len);
    checkLen(len);
    const a = fold(addr);
    if (a === PLAIN) return super.checkRange(addr, len);
    if (this.closed) return super.checkRange(0, 0);
    if (a === undefined) return false;
    return super.checkRange(a, len);
  }

  /**
   * The folded address for GuestMemory, or PLAIN (use the caller's). Throws for a grant address beyond the
   * window (Overflow if the range wraps, else InvalidGuestAddress; Closed first when closed).
   */
  #pre(addr: GuestAddressLike, len: number): number {
    const a = fold(addr);
    if (a !== undefined) return a;
    if (this.closed) throw new GuestMemoryError("Closed", "guest memory is closed");
    const v = big(addr);
    if (len > 0 && v + BigInt(len) - 1n > U64_MAX) throw new GuestMemoryError("Overflow", `${hex(v)} + ${len} overflows`, { address: v });
    throw unbacked(v, len);
  }

  /**
   * The address GuestMemory uses internally: grant addresses become their fold-window number, others are
   * returned as numbers. For ring addresses given to virtio-queue, which keeps them as doubles.
   * @throws RangeError for an address that is neither below 2^53 nor a grant address within the window.
   */
  windowAddress(addr: GuestAddressLike): number {
    const a = fold(addr);
    const v = big(addr);
    if (a !== undefined && a !== PLAIN) return a;
    if (a === PLAIN && v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
    throw new RangeError(`${hex(v)} has no address below 2^53`);
  }

  /**
   * The grant region holding all of folded `[a, a + len)`, leaving the offset in #grantOff; undefined when
   * the range is anything else (GuestMemory's general path then checks and reports it).
   */
  #oneGrant(a: number, len: number): FoldedRegion | undefined {
    if (this.closed) return undefined;
    let r = this.#lastGrant;
    if (r === undefined || a < r.base || a + len > r.end) {
      const found = super.findRegion(a);
      if (!(found instanceof FoldedRegion) || a + len > found.end) return undefined;
      r = this.#lastGrant = found;
    }
    this.#grantOff = a - r.base;
    return r;
  }

  override readInto(addr: GuestAddressLike, dst: Uint8Array): void {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.readInto(addr, dst);
    if (dst.length === 0) return;
    const a = this.#pre(addr, dst.length);
    if (a === PLAIN) return super.readInto(addr, dst);
    // Fast path: one grant region, borrowed directly (GuestMemory's general path allocates segment lists).
    const g = this.#oneGrant(a, dst.length);
    if (g) {
      const v = g.inner.borrow(this.#grantOff, dst.length);
      try {
        dst.set(v.bytes);
      } finally {
        v.release();
      }
      return;
    }
    try {
      super.readInto(a, dst);
    } catch (err) {
      throw relabel(err, addr);
    }
  }

  override read(addr: GuestAddressLike, len: number): Uint8Array {
    checkLen(len);
    const out = new Uint8Array(len);
    this.readInto(addr, out);
    return out;
  }

  override write(addr: GuestAddressLike, data: Uint8Array): void {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.write(addr, data);
    if (data.length === 0) return;
    const a = this.#pre(addr, data.length);
    if (a === PLAIN) return super.write(addr, data);
    const g = this.#oneGrant(a, data.length);
    if (g) {
      const v = g.inner.borrow(this.#grantOff, data.length);
      try {
        v.bytes.set(data);
      } finally {
        v.release();
      }
      return;
    }
    try {
      super.write(a, data);
    } catch (err) {
      throw relabel(err, addr);
    }
  }

  override fill(addr: GuestAddressLike, len: number, value = 0): void {
    checkLen(len);
    if (len === 0) return;
    const a = this.#pre(addr, len);
    if (a === PLAIN) return super.fill(addr, len, value);
    try {
      super.fill(a, len, value);
    } catch (err) {
      throw relabel(err, addr);
    }
  }

  override readObj<F extends Record<string, FieldSpec>>(addr: GuestAddressLike, layout: StructLayout<F>): StructValue<StructLayout<F>> {
    return layout.decode(this.read(addr, layout.size));
  }

  override writeObj<F extends Record<string, FieldSpec>>(
    addr: GuestAddressLike,
    layout: StructLayout<F>,
    value: Partial<StructValue<StructLayout<F>>>,
  ): void {
    const buf = this.read(addr, layout.size);
    layout.write(new DataView(buf.buffer), 0, value);
    this.write(addr, buf);
  }

  override slice(addr: GuestAddressLike, len: number): Uint8Array {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.slice(addr, len);
    checkLen(len);
    const a = this.#pre(addr, len);
    if (a === PLAIN) return super.slice(addr, len);
    try {
      return super.slice(a, len);
    } catch (err) {
      throw relabel(err, addr);
    }
  }

  override borrow(addr: GuestAddressLike, len: number): RegionView {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.borrow(addr, len);
    checkLen(len);
    const a = this.#pre(addr, len);
    if (a === PLAIN) return super.borrow(addr, len);
    try {
      return super.borrow(a, len);
    } catch (err) {
      throw relabel(err, addr);
    }
  }

  override withSlice<T>(addr: GuestAddressLike, len: number, fn: (bytes: Uint8Array) => T): T {
    const v = this.borrow(addr, len);
    try {
      return fn(v.bytes);
    } finally {
      v.release();
    }
  }

  override load8(addr: GuestAddressLike): number {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.load8(addr);
    const a = this.#pre(addr, 1);
    if (a === PLAIN) return super.load8(addr);
    try {
      return super.load8(a);
    } catch (err) {
      throw relabel(err, addr);
    }
  }
  override store8(addr: GuestAddressLike, value: number): void {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.store8(addr, value);
    const a = this.#pre(addr, 1);
    if (a === PLAIN) return super.store8(addr, value);
    try {
      super.store8(a, value);
    } catch (err) {
      throw relabel(err, addr);
    }
  }
  override load16(addr: GuestAddressLike): number {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.load16(addr);
    const a = this.#pre(addr, 2);
    if (a === PLAIN) return super.load16(addr);
    try {
      return super.load16(a);
    } catch (err) {
      throw relabel(err, addr);
    }
  }
  override store16(addr: GuestAddressLike, value: number): void {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.store16(addr, value);
    const a = this.#pre(addr, 2);
    if (a === PLAIN) return super.store16(addr, value);
    try {
      super.store16(a, value);
    } catch (err) {
      throw relabel(err, addr);
    }
  }
  override load32(addr: GuestAddressLike): number {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.load32(addr);
    const a = this.#pre(addr, 4);
    if (a === PLAIN) return super.load32(addr);
    try {
      return super.load32(a);
    } catch (err) {
      throw relabel(err, addr);
    }
  }
  override store32(addr: GuestAddressLike, value: number): void {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.store32(addr, value);
    const a = this.#pre(addr, 4);
    if (a === PLAIN) return super.store32(addr, value);
    try {
      super.store32(a, value);
    } catch (err) {
      throw relabel(err, addr);
    }
  }
  override load64(addr: GuestAddressLike): bigint {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.load64(addr);
    const a = this.#pre(addr, 8);
    if (a === PLAIN) return super.load64(addr);
    try {
      return super.load64(a);
    } catch (err) {
      throw relabel(err, addr);
    }
  }
  override store64(addr: GuestAddressLike, value: bigint): void {
    if (typeof addr === "number" && addr < GRANT_WINDOW_BASE) return super.store64(addr, value);
    const a = this.#pre(addr, 8);
    if (a === PLAIN) return super.store64(addr, value);
    try {
      super.store64(a, value);
    } catch (err) {
      throw relabel(err, addr);
    }
  }
}
