// rust-vmm vm-memory address.rs / guest_memory.rs `GuestAddress`: a guest physical address (GPA), an
// unsigned 64-bit value. Arithmetic is checked: wrapping past 2^64 - 1 or below 0 throws
// GuestMemoryError("Overflow") instead of silently aliasing another address (a guest-supplied descriptor
// address plus length is the classic way to reach memory the device should not touch).
import { GuestMemoryError, hex } from "./error.js";

const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** Anything that names a guest address: a GuestAddress, a bigint or a non-negative safe integer. */
export type GuestAddressLike = GuestAddress | bigint | number;

function toBigint(v: bigint | number, what: string): bigint {
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new RangeError(`${what} ${v} is not a safe integer`);
    return BigInt(v);
  }
  if (typeof v !== "bigint") throw new TypeError(`${what} must be a bigint or number`);
  return v;
}

export class GuestAddress {
  /** The address, 0 ..= 2^64 - 1. */
  readonly value: bigint;

  /** @throws RangeError if `value` is negative or above 2^64 - 1. */
  constructor(value: bigint | number) {
    const v = toBigint(value, "guest address");
    if (v < 0n || v > U64_MAX) throw new RangeError(`guest address ${String(value)} outside 0..2^64-1`);
    this.value = v;
  }

  /** Converts any GuestAddressLike (a GuestAddress is returned as is). */
  static from(addr: GuestAddressLike): GuestAddress {
    return addr instanceof GuestAddress ? addr : new GuestAddress(addr);
  }

  /** `self + offset`. @throws GuestMemoryError `Overflow` if the result leaves 0..2^64-1. */
  checkedAdd(offset: bigint | number): GuestAddress {
    const r = this.value + toBigint(offset, "offset");
    if (r > U64_MAX || r < 0n)
      throw new GuestMemoryError("Overflow", `${hex(this.value)} + ${String(offset)} overflows`, { address: this.value });
    return new GuestAddress(r);
  }

  /** `self - offset`. @throws GuestMemoryError `Overflow` below 0. */
  checkedSub(offset: bigint | number): GuestAddress {
    const r = this.value - toBigint(offset, "offset");
    if (r < 0n || r > U64_MAX)
      throw new GuestMemoryError("Overflow", `${hex(this.value)} - ${String(offset)} underflows`, { address: this.value });
    return new GuestAddress(r);
  }

  /** `self - base` as a byte count. @throws GuestMemoryError `Overflow` if `base` is above `self`. */
  offsetFrom(base: GuestAddressLike): bigint {
    const b = GuestAddress.from(base).value;
    if (b > this.value)
      throw new GuestMemoryError("Overflow", `${hex(b)} is above ${hex(this.value)}`, { address: this.value });
    return this.value - b;
  }

  /** Rounds up to a power-of-two alignment. @throws GuestMemoryError `Overflow` past 2^64 - 1. */
  alignUp(align: bigint | number): GuestAddress {
    const a = toBigint(align, "alignment");
    if (a <= 0n || (a & (a - 1n)) !== 0n) throw new RangeError(`alignment ${String(align)} is not a power of two`);
    return this.checkedAdd((a - (this.value & (a - 1n))) & (a - 1n));
  }

  /** Whether the address is a multiple of `align` (a power of two). */
  isAligned(align: bigint | number): boolean {
    const a = toBigint(align, "alignment");
    return (this.value & (a - 1n)) === 0n;
  }

  /** The address as a number. @throws RangeError above 2^53 - 1. */
  toNumber(): number {
    if (this.value > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`${hex(this.value)} exceeds 2^53 - 1`);
    return Number(this.value);
  }

  equals(other: GuestAddressLike): boolean {
    return this.value === GuestAddress.from(other).value;
  }

  compare(other: GuestAddressLike): -1 | 0 | 1 {
    const o = GuestAddress.from(other).value;
    return this.value < o ? -1 : this.value > o ? 1 : 0;
  }

  toString(): string {
    return hex(this.value);
  }
}
