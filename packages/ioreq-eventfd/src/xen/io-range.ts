// Device handlers registered per guest address range, and the lookup the ioreq loop does for every request.
// Addresses are kept as JS numbers: guest-physical MMIO addresses stay below 2^52 on x86_64 and arm64, so
// the hot path compares numbers and never allocates a BigInt.
import type { IoSpace } from "../notifier.js";

/** Access widths an ioreq can carry (xen/include/public/hvm/ioreq.h `size`). */
export type AccessSize = 1 | 2 | 4 | 8;

/** A register value: a number for widths up to 4 bytes, a bigint (or number) for 8. */
export type IoValue = number | bigint;

/** A value now, or once the device has answered (an async handler delays the vCPU, not the loop). */
export type MaybePromise<T> = T | Promise<T>;

/**
 * A device model's register file for one range. `offset` is relative to the range start. Shaped like
 * @xen-vhost/virtio-mmio's transport (`read(offset, size)`, `write(offset, size, value)`), so a transport
 * can be registered as is. Returning a Promise keeps that vCPU's ioreq INPROCESS until it settles; other
 * vCPUs and devices are served meanwhile. A throw or a rejection is answered like an unmapped access
 * (all-ones read, ignored write) and logged.
 */
export interface IoHandler {
  read(offset: number, size: AccessSize): MaybePromise<IoValue>;
  write(offset: number, size: AccessSize, value: IoValue): MaybePromise<void>;
}

/** Highest address the number-keyed table accepts (2^53 - 1). */
export const MAX_IO_ADDRESS = Number.MAX_SAFE_INTEGER;

export interface IoRange {
  readonly space: IoSpace;
  /** First address (port) of the range. */
  readonly start: number;
  /** One past the last address. */
  readonly end: number;
  readonly handler: IoHandler;
  /**
   * A placeholder (a doorbell-only range the notifier mapped so Xen forwards a doorbell): a real device range
   * mapped over it replaces it instead of being refused.
   */
  readonly weak?: boolean;
}

/** The ranges of one ioreq server, MMIO and PIO kept apart; no overlaps within a space. */
export class IoRangeTable {
  readonly #mmio: IoRange[] = [];
  readonly #pio: IoRange[] = [];
  #lastMmio: IoRange | undefined;

  #list(space: IoSpace): IoRange[] {
    return space === "mmio" ? this.#mmio : this.#pio;
  }

  /** The first range overlapping [start, end), if any. */
  overlapping(space: IoSpace, start: number, end: number): IoRange | undefined {
    return this.#list(space).find((r) => r.start < end && start < r.end);
  }

  /** Every range overlapping [start, end). */
  allOverlapping(space: IoSpace, start: number, end: number): IoRange[] {
    return this.#list(space).filter((r) => r.start < end && start < r.end);
  }

  add(range: IoRange): void {
    if (this.overlapping(range.space, range.start, range.end)) throw new RangeError("overlapping range");
    this.#list(range.space).push(range);
  }

  has(range: IoRange): boolean {
    return this.#list(range.space).includes(range);
  }

  remove(range: IoRange): boolean {
    const list = this.#list(range.space);
    const i = list.indexOf(range);
    if (i < 0) return false;
    list.splice(i, 1);
    if (this.#lastMmio === range) this.#lastMmio = undefined;
    return true;
  }

  /** The range holding all of [addr, addr + size), or undefined (unmapped, or straddling two ranges). */
  find(space: IoSpace, addr: number, size: number): IoRange | undefined {
    if (space === "mmio") {
      // Guests hammer one device at a time (a virtqueue's notify, then its ISR): remember the last hit.
      const last = this.#lastMmio;
      if (last !== undefined && addr >= last.start && addr + size <= last.end) return last;
    }
    const list = this.#list(space);
    for (let i = 0; i < list.length; i++) {
      const r = list[i]!;
      if (addr >= r.start && addr + size <= r.end) {
        if (space === "mmio") this.#lastMmio = r;
        return r;
      }
    }
    return undefined;
  }

  get size(): number {
    return this.#mmio.length + this.#pio.length;
  }

  all(): IoRange[] {
    return [...this.#mmio, ...this.#pio];
  }
}
