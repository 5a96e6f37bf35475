// rust-vmm vm-memory `GuestMemoryRegion`: one contiguous range of guest physical memory. Two ways of being
// backed are supported:
//  - mapped up front (memfd/mmap regions here, Xen foreign mappings in vm-memory-xen): `mapping` gives the
//    whole region as one view, the fast path every GuestMemory access takes;
//  - mapped on demand (Xen grant references without advance mapping: map, use, unmap, with a small cache):
//    `mapping` is undefined and every access goes through `borrow(offset, length)`, which maps what is
//    needed and returns a view that must be released.
// GuestMemory only uses this interface, so a new kind of region needs no change here.
import { AtomicAccess, munmap } from "@xen-vhost/vmm-sys-util";
import { GuestMemoryError, hex } from "./error.js";
import { GuestAddress, type GuestAddressLike } from "./guest-address.js";
import type { VhostUserRegionDescription } from "./vhost-user.js";

/** A mapped view of part of a region. Release it (or `using`) when done; it is invalid afterwards. */
export interface RegionView extends Disposable {
  /** The bytes of the borrowed range (exactly the length asked for). */
  readonly bytes: Uint8Array;
  /** Atomic access over the mapping that holds `bytes`. */
  readonly atomics: AtomicAccess;
  /** The offset in `atomics` of `bytes[0]`. */
  readonly atomicsOffset: number;
  /** Releases the view (unmaps on-demand mappings, or returns them to a cache). Idempotent. */
  release(): void;
}

/** The whole region, for regions mapped up front. */
export interface RegionMapping {
  readonly bytes: Uint8Array;
  readonly atomics: AtomicAccess;
}

export interface GuestMemoryRegion extends Disposable {
  /** Guest physical address of the first byte. */
  readonly guestBase: GuestAddress;
  /** Size in bytes (below 2^53); the region may lie anywhere below 2^64. */
  readonly size: number;
  readonly closed: boolean;
  /**
   * The whole region if it is mapped up front; `undefined` for regions mapped on demand.
   * @throws GuestMemoryError `Closed` after close.
   */
  readonly mapping: RegionMapping | undefined;
  /**
   * A view of `[offset, offset + length)` of the region, mapping it if needed. The caller has checked the
   * range is inside the region.
   * @throws GuestMemoryError `Closed` after close, `MapFailed` if an on-demand mapping fails.
   */
  borrow(offset: number, length: number): RegionView;
  /** The vhost-user description of this region, or `undefined` if it has no fd to share. */
  vhostUserDescription(): VhostUserRegionDescription | undefined;
  /** Unmaps and releases everything. Idempotent. */
  close(): void;
}

/**
 * The end of GuestMemory's double fast path: addresses up to here are looked up without bigint arithmetic.
 * Regions may lie anywhere below 2^64 (Xen grant DMA addresses set bit 63); this is no longer a limit.
 */
export const MAX_REGION_END = Number.MAX_SAFE_INTEGER;

const U64_END = 1n << 64n;

const noRelease = (): void => {};

/**
 * A region mapped up front as one ArrayBuffer (an mmap from vmm-sys-util): the base class for MmapRegion
 * and for vm-memory-xen's foreign-mapped regions. Closing munmaps the buffer, which detaches it, so views
 * handed out earlier read as length 0 instead of touching unmapped memory.
 */
export class MappedRegion implements GuestMemoryRegion {
  readonly guestBase: GuestAddress;
  readonly size: number;
  #mapping: RegionMapping | undefined;
  #buffer: ArrayBuffer | undefined;
  readonly #onClose: (() => void) | undefined;

  /**
   * @param buffer the mapping (from `mmap`); owned by the region: close() munmaps it.
   * @param onClose runs after the munmap (e.g. closes the fd).
   * @throws GuestMemoryError `InvalidRegion` for an empty region or one ending above 2^64 - 1.
   */
  constructor(guestBase: GuestAddressLike, buffer: ArrayBuffer, onClose?: () => void) {
    this.guestBase = GuestAddress.from(guestBase);
    this.size = buffer.byteLength;
    if (this.size === 0) throw new GuestMemoryError("InvalidRegion", "region of size 0", { address: this.guestBase.value });
    if (this.guestBase.value + BigInt(this.size) > U64_END)
      throw new GuestMemoryError("InvalidRegion", `region at ${hex(this.guestBase.value)} ends above 2^64 - 1`, {
        address: this.guestBase.value,
      });
    this.#buffer = buffer;
    this.#mapping = { bytes: new Uint8Array(buffer), atomics: new AtomicAccess(buffer) };
    this.#onClose = onClose;
  }

  get closed(): boolean {
    return this.#buffer === undefined;
  }

  get mapping(): RegionMapping {
    const m = this.#mapping;
    if (!m) throw new GuestMemoryError("Closed", `region at ${this.guestBase.toString()} is closed`);
    return m;
  }

  /** The mapping's ArrayBuffer. @throws GuestMemoryError `Closed` after close. */
  get buffer(): ArrayBuffer {
    const b = this.#buffer;
    if (!b) throw new GuestMemoryError("Closed", `region at ${this.guestBase.toString()} is closed`);
    return b;
  }

  borrow(offset: number, length: number): RegionView {
    const m = this.mapping;
    if (offset < 0 || length < 0 || offset + length > this.size)
      throw new GuestMemoryError("OutOfBounds", `${length} bytes at offset ${offset} cross the end of a ${this.size}-byte region`);
    return {
      bytes: m.bytes.subarray(offset, offset + length),
      atomics: m.atomics,
      atomicsOffset: offset,
      release: noRelease,
      [Symbol.dispose]: noRelease,
    };
  }

  vhostUserDescription(): VhostUserRegionDescription | undefined {
    return undefined;
  }

  close(): void {
    const b = this.#buffer;
    if (!b) return;
    this.#buffer = undefined;
    this.#mapping = undefined;
    try {
      munmap(b);
    } finally {
      this.#onClose?.();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
