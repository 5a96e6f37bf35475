// Grant access by copy instead of mapping (IOCTL_GNTDEV_GRANT_COPY, Linux drivers/xen/gntdev.c; Xen's
// GNTTABOP_copy): a region of grant references that is never mapped into this process. Each access copies
// the bytes it touches in from the guest's granted pages (one segment per page), and a view whose bytes
// changed copies the changed span back when it is released.
//
// Why: a mapped grant pins the guest's page (the guest cannot end foreign access while it is mapped, and
// Linux defers freeing it), and a backend holding mappings can read the page after the request completed.
// With copies nothing stays mapped, the guest can revoke a grant at any time, and a backend that is not
// trusted with the guest's memory only ever sees the bytes of the buffers it is given (reference §4: "an
// opt-in copy-based grant path for untrusted backends"). The cost is a copy per access instead of a cache
// lookup, so it suits request/response buffers; rings, read and written all the time and with single-
// instruction index stores the driver races with, belong in mapped regions (advance-mapped grants).
//
// Atomic loads/stores on such a region work on the copy: a store reaches the guest when the view is
// released (one GNTTABOP_copy, not a single-instruction store), so never put a ring in a copy region.
import { AtomicAccess, close as closeFd, noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import {
  GuestAddress, GuestMemoryError, type GuestAddressLike, type GuestMemoryRegion, type RegionView, type VhostUserRegionDescription,
} from "@xen-vhost/vm-memory";
import { checkDomid, type GrantCopySegment, type GrantDevice, type XenTransport } from "@xen-vhost/xen-sys";
import { XenMemoryError, errnoOfCause, hex } from "./error.js";
import { xenMmapFlags, type NoAdvanceMapEncoding } from "./flags.js";
import { XEN_GRANT_DMA_ADDR_OFF, XEN_PAGE_SIZE, grantRefOf } from "./grant-address.js";
import { SYNTHETIC_USER_ADDR_BASE } from "./grant-region.js";
import { fdProviderFor, openMappingFd, type MappingFdProvider } from "./region-fd.js";

export interface GrantCopyRegionOptions {
  /** Never copy back (the guest granted read-only). Default false. */
  readOnly?: boolean;
  /** A grant device to share (not closed by the region); default: the transport opens one. */
  device?: GrantDevice;
  /** Where the vhost-user fd comes from (default: the transport if it can, else /dev/xen/gntdev). */
  fdProvider?: MappingFdProvider;
  /** NO_ADVANCE_MAP as 0x8 ("rust-vmm", default) or 0x100 ("spec") in the vhost-user description. */
  noAdvanceMapEncoding?: NoAdvanceMapEncoding;
  logger?: Logger;
}

/** Counters (tests, benchmarks, metrics). */
export interface GrantCopyStats {
  /** IOCTL_GNTDEV_GRANT_COPY calls that copied from the guest / to the guest. */
  copiesIn: number;
  copiesOut: number;
  bytesIn: number;
  bytesOut: number;
}

const noop = (): void => {};

class CopyView implements RegionView {
  readonly bytes: Uint8Array;
  readonly atomics: AtomicAccess;
  readonly atomicsOffset: number;
  readonly #snapshot: Uint8Array;
  #done: ((v: CopyView) => void) | undefined;
  readonly offset: number;

  constructor(offset: number, length: number, done: (v: CopyView) => void) {
    // Keep the guest address's alignment inside the local buffer, so aligned atomics stay aligned.
    const lead = offset % 8;
    const buf = new ArrayBuffer(lead + length + ((8 - ((lead + length) % 8)) % 8));
    this.offset = offset;
    this.bytes = new Uint8Array(buf, lead, length);
    this.atomics = new AtomicAccess(buf);
    this.atomicsOffset = lead;
    this.#snapshot = new Uint8Array(length);
    this.#done = done;
  }

  /** Records the bytes as copied in. */
  fill(): void {
    this.#snapshot.set(this.bytes);
  }

  /** The span that differs from what was copied in, or undefined. */
  changed(): { from: number; to: number } | undefined {
    const a = this.bytes;
    const b = this.#snapshot;
    let from = 0;
    while (from < a.length && a[from] === b[from]) from++;
    if (from === a.length) return undefined;
    let to = a.length;
    while (to > from && a[to - 1] === b[to - 1]) to--;
    return { from, to };
  }

  release(): void {
    const d = this.#done;
    if (!d) return;
    this.#done = undefined;
    d(this);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/** Grant references `[firstRef, firstRef + pages)` of domain `domid`, accessed by copy. */
export class XenGrantCopyRegion implements GuestMemoryRegion {
  readonly guestBase: GuestAddress;
  readonly size: number;
  readonly domid: number;
  readonly firstRef: number;
  readonly readOnly: boolean;
  readonly #device: GrantDevice;
  readonly #ownsDevice: boolean;
  readonly #fdProvider: MappingFdProvider;
  readonly #encoding: NoAdvanceMapEncoding;
  readonly #log: Logger;
  readonly #stats: GrantCopyStats = { copiesIn: 0, copiesOut: 0, bytesIn: 0, bytesOut: 0 };
  readonly #done = (v: CopyView): void => this.#release(v);
  #fd: number | undefined;
  #closed = false;

  private constructor(domid: number, firstRef: number, pages: number, device: GrantDevice, ownsDevice: boolean, transport: XenTransport | undefined, options: GrantCopyRegionOptions) {
    this.domid = domid;
    this.firstRef = firstRef;
    this.guestBase = new GuestAddress(XEN_GRANT_DMA_ADDR_OFF | (BigInt(firstRef) << 12n));
    this.size = pages * XEN_PAGE_SIZE;
    this.readOnly = options.readOnly ?? false;
    this.#device = device;
    this.#ownsDevice = ownsDevice;
    this.#fdProvider = options.fdProvider ?? (transport ? fdProviderFor(transport) : fdProviderFor({}));
    this.#encoding = options.noAdvanceMapEncoding ?? "rust-vmm";
    this.#log = options.logger ?? noopLogger;
  }

  /**
   * A region of `pages` grant references from `firstRef`. Nothing is mapped or copied yet.
   * @throws RangeError for a bad domid or a reference range outside u32; the transport's XenError if the
   *   grant device cannot be opened.
   */
  static forRefs(transport: XenTransport | undefined, domid: number, firstRef: number, pages: number, options: GrantCopyRegionOptions = {}): XenGrantCopyRegion {
    checkDomid(domid);
    if (!Number.isInteger(firstRef) || firstRef < 0 || firstRef > 0xffff_ffff) throw new RangeError(`grant reference ${firstRef} is not a u32`);
    if (!Number.isInteger(pages) || pages < 1 || firstRef + pages - 1 > 0xffff_ffff)
      throw new RangeError(`${pages} grant references from ${firstRef} do not fit grant_ref_t`);
    const shared = options.device;
    if (!shared && !transport) throw new TypeError("XenGrantCopyRegion needs a transport or a grant device");
    const device = shared ?? transport!.openGrantDevice();
    return new XenGrantCopyRegion(domid, firstRef, pages, device, shared === undefined, transport, options);
  }

  /** A region covering grant addresses `[guestBase, guestBase + size)`, page aligned, bit 63 set. */
  static create(transport: XenTransport | undefined, domid: number, guestBase: GuestAddressLike, size: number, options: GrantCopyRegionOptions = {}): XenGrantCopyRegion {
    const { gref, offset } = grantRefOf(GuestAddress.from(guestBase).value);
    if (offset !== 0) throw new RangeError(`grant region base ${GuestAddress.from(guestBase).toString()} is not 4 KiB aligned`);
    if (!Number.isSafeInteger(size) || size <= 0 || size % XEN_PAGE_SIZE !== 0)
      throw new RangeError(`grant region size ${size} is not a positive multiple of 4 KiB`);
    return XenGrantCopyRegion.forRefs(transport, domid, gref, size / XEN_PAGE_SIZE, options);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Never mapped: GuestMemory goes through `borrow` for every access. */
  get mapping(): undefined {
    if (this.#closed) throw new GuestMemoryError("Closed", `grant copy region at ${this.guestBase.toString()} is closed`);
    return undefined;
  }

  get stats(): GrantCopyStats {
    return { ...this.#stats };
  }

  /**
   * Copies `[offset, offset + length)` in from the guest and returns a view of the copy; releasing it
   * copies back what changed (unless read-only).
   * @throws GuestMemoryError `OutOfBounds`, `Closed`, `MapFailed` (cause: XenMemoryError `GrantCopyFailed`
   *   naming the first reference Xen refused, e.g. one the guest never granted or revoked).
   */
  borrow(offset: number, length: number): RegionView {
    if (this.#closed) throw new GuestMemoryError("Closed", `grant copy region at ${this.guestBase.toString()} is closed`);
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= this.size))
      throw new GuestMemoryError("OutOfBounds", `${length} bytes at offset ${offset} cross the end of a ${this.size}-byte grant region`, {
        address: this.guestBase.value + BigInt(Number.isSafeInteger(offset) && offset > 0 ? offset : 0),
      });
    if (length === 0) return { bytes: new Uint8Array(0), atomics: new AtomicAccess(new ArrayBuffer(0)), atomicsOffset: 0, release: noop, [Symbol.dispose]: noop };
    const v = new CopyView(offset, length, this.#done);
    this.#copy("in", offset, v.bytes);
    v.fill();
    return v;
  }

  #release(v: CopyView): void {
    if (this.#closed || this.readOnly) return;
    const span = v.changed();
    if (!span) return;
    // A failure propagates to the caller of release() (GuestMemory.write): the write did not happen.
    this.#copy("out", v.offset + span.from, v.bytes.subarray(span.from, span.to));
  }

  /** One IOCTL_GNTDEV_GRANT_COPY with a segment per page touched. */
  #copy(dir: "in" | "out", offset: number, local: Uint8Array): void {
    const segments: GrantCopySegment[] = [];
    const pages: number[] = [];
    for (let at = 0; at < local.length; ) {
      const off = offset + at;
      const page = Math.floor(off / XEN_PAGE_SIZE);
      const inPage = off % XEN_PAGE_SIZE;
      const len = Math.min(XEN_PAGE_SIZE - inPage, local.length - at);
      const foreign = { ref: this.firstRef + page, offset: inPage, domid: this.domid };
      const mine = { local: local.subarray(at, at + len) };
      segments.push(dir === "in" ? { source: foreign, dest: mine, len } : { source: mine, dest: foreign, len });
      pages.push(page);
      at += len;
    }
    let status: Int16Array;
    const fail = (gref: number, why: string, errno: number | undefined, cause?: unknown): never => {
      const x = new XenMemoryError(
        "GrantCopyFailed",
        `domain ${this.domid}: copying ${dir === "in" ? "from" : "to"} grant reference ${gref} failed (not granted${dir === "out" ? " or read-only" : ""}?): ${why}`,
        errno === undefined ? { domid: this.domid, grantRef: gref } : { domid: this.domid, grantRef: gref, errno },
        cause === undefined ? undefined : { cause },
      );
      throw new GuestMemoryError("MapFailed", x.message, { cause: x, address: this.guestBase.value + BigInt(offset) });
    };
    try {
      status = this.#device.grantCopy(segments);
    } catch (err) {
      return fail(this.firstRef + pages[0]!, (err as Error).message, errnoOfCause(err), err);
    }
    const bad = status.findIndex((s) => s !== 0);
    if (bad >= 0) fail(this.firstRef + pages[bad]!, `GNTST status ${status[bad]}`, undefined);
    if (dir === "in") {
      this.#stats.copiesIn++;
      this.#stats.bytesIn += local.length;
    } else {
      this.#stats.copiesOut++;
      this.#stats.bytesOut += local.length;
    }
  }

  /**
   * The vhost-user description, as a NO_ADVANCE_MAP grant region (how a backend reaches the memory is its
   * own choice): a fresh gntdev fd, GRANT | NO_ADVANCE_MAP, the domid, a synthetic user address.
   */
  vhostUserDescription(): VhostUserRegionDescription {
    if (this.#closed) throw new GuestMemoryError("Closed", `grant copy region at ${this.guestBase.toString()} is closed`);
    this.#fd ??= openMappingFd(this.#fdProvider, "gntdev", this.domid);
    return {
      guest_phys_addr: this.guestBase.value,
      memory_size: BigInt(this.size),
      userspace_addr: SYNTHETIC_USER_ADDR_BASE + (this.guestBase.value - XEN_GRANT_DMA_ADDR_OFF),
      mmap_offset: 0n,
      fd: this.#fd,
      xen: { flags: xenMmapFlags("grant", true, this.#encoding), domid: this.domid },
    };
  }

  /** Closes the grant device if owned and the vhost-user fd. Views still held copy nothing back. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsDevice) this.#device.close();
    const fd = this.#fd;
    this.#fd = undefined;
    if (fd !== undefined) {
      try {
        closeFd(fd);
      } catch (err) {
        this.#log.warn("closing the vhost-user gntdev fd failed", { fd, err });
      }
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }

  toString(): string {
    return `XenGrantCopyRegion(domain ${this.domid}, refs ${this.firstRef}..${this.firstRef + this.size / XEN_PAGE_SIZE - 1}, ${hex(this.guestBase.value)})`;
  }
}
