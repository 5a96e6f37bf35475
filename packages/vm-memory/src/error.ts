// One error class for the package (rust-vmm vm-memory's `GuestMemoryError` enum as a string-literal kind).
// Every guest-controlled failure (an address a guest or a hostile descriptor names) is one of these, never a
// RangeError from a typed array or a crash; bad arguments from the program itself are TypeError/RangeError.

/**
 * - `InvalidGuestAddress`: no region contains the address (or a hole inside a range).
 * - `OutOfBounds`: the range starts in a region but crosses its end (slices, atomics, single-region ops).
 * - `Unaligned`: an atomic access at an address not aligned to its width.
 * - `Overflow`: address arithmetic wrapped past 2^64 - 1 (or below 0).
 * - `RegionOverlap`: regions given to GuestMemory overlap.
 * - `InvalidRegion`: a region is malformed (size 0, above 2^53, not shareable for vhost-user...).
 * - `Closed`: the memory or region was closed.
 * - `MapFailed`: mapping guest memory failed (the SysError is the cause).
 */
export type GuestMemoryErrorKind =
  | "InvalidGuestAddress"
  | "OutOfBounds"
  | "Unaligned"
  | "Overflow"
  | "RegionOverlap"
  | "InvalidRegion"
  | "Closed"
  | "MapFailed";

export interface GuestMemoryErrorOptions extends ErrorOptions {
  /** The guest physical address the error is about, if any. */
  address?: bigint;
}

export class GuestMemoryError extends Error {
  override readonly name = "GuestMemoryError";
  readonly kind: GuestMemoryErrorKind;
  readonly address: bigint | undefined;

  constructor(kind: GuestMemoryErrorKind, message: string, options: GuestMemoryErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.kind = kind;
    this.address = options.address;
  }
}

/** Hex form of an address for messages ("0x1000"). */
export function hex(v: bigint | number): string {
  return `0x${v.toString(16)}`;
}
