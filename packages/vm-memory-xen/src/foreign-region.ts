// rust-vmm vm-memory src/mmap/xen.rs `MmapXenForeign`: a range of a guest's RAM mapped up front through
// privcmd (mmap of /dev/xen/privcmd, then IOCTL_PRIVCMD_MMAPBATCH_V2 over every frame; the transport retries
// frames Xen reports paged out). Mapped up front, it is a plain GuestMemoryRegion with a `mapping`, so
// GuestMemory takes its fast path (one lookup, one TypedArray.set) and virtio-queue works over it unchanged.
//
// A mapping with a failed frame is never handed out: touching that page would SIGBUS the whole process, and
// GuestMemory's fast path does no per-page check. Any page error unmaps everything and throws a typed error
// naming the first bad frame.
import { AtomicAccess, addressOf, close as closeFd, errnoName, noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import { GuestAddress, GuestMemoryError, MAX_REGION_END, type GuestAddressLike, type GuestMemoryRegion, type RegionMapping, type RegionView, type VhostUserRegionDescription } from "@xen-vhost/vm-memory";
import { XenError, checkDomid, type XenTransport } from "@xen-vhost/xen-sys";
import { ensureDetached } from "./detach.js";
import { XenMemoryError, errnoOfCause, hex } from "./error.js";
import { XenMmapFlag } from "./flags.js";
import { XEN_PAGE_SIZE } from "./grant-address.js";
import { fdProviderFor, openMappingFd, type MappingFdProvider } from "./region-fd.js";

export interface ForeignRegionOptions {
  /** Map read-only (default read-write). */
  readOnly?: boolean;
  /** Rounds of retry for paged-out frames (the transport's default otherwise). */
  pagedRetries?: number;
  /** Where the vhost-user fd comes from (default: the transport if it can, else /dev/xen/privcmd). */
  fdProvider?: MappingFdProvider;
  logger?: Logger;
}

const noRelease = (): void => {};

/** Guest RAM `[guestBase, guestBase + size)` of domain `domid`, mapped through privcmd. */
export class XenForeignRegion implements GuestMemoryRegion {
  readonly guestBase: GuestAddress;
  readonly size: number;
  readonly domid: number;
  /** The mapping's address in this process (vhost-user `userspace_addr`). */
  readonly userAddr: bigint;
  readonly #transport: XenTransport;
  readonly #fdProvider: MappingFdProvider;
  readonly #log: Logger;
  #buffer: ArrayBuffer | undefined;
  #mapping: RegionMapping | undefined;
  #fd: number | undefined;

  private constructor(transport: XenTransport, domid: number, base: GuestAddress, buffer: ArrayBuffer, options: ForeignRegionOptions) {
    this.#transport = transport;
    this.domid = domid;
    this.guestBase = base;
    this.size = buffer.byteLength;
    this.#buffer = buffer;
    this.#mapping = { bytes: new Uint8Array(buffer), atomics: new AtomicAccess(buffer) };
    this.userAddr = addressOf(buffer);
    this.#fdProvider = options.fdProvider ?? fdProviderFor(transport);
    this.#log = options.logger ?? noopLogger;
  }

  /**
   * Maps `size` bytes of domain `domid`'s memory at guest physical `guestBase` (both multiples of 4 KiB).
   * @throws RangeError for a bad domid, an unaligned or empty range, or one ending above 2^53 - 1.
   * @throws XenMemoryError `ForeignMapFailed`: `gfn`/`errno`/`code` name the first frame Xen refused
   *   (nothing stays mapped), or the cause is the transport's XenError (e.g. NoSuchDomain, PermissionDenied).
   */
  static map(transport: XenTransport, domid: number, guestBase: GuestAddressLike, size: number, options: ForeignRegionOptions = {}): XenForeignRegion {
    checkDomid(domid);
    const base = GuestAddress.from(guestBase);
    if (!Number.isSafeInteger(size) || size <= 0 || size % XEN_PAGE_SIZE !== 0)
      throw new RangeError(`foreign region size ${size} is not a positive multiple of 4 KiB`);
    if (!base.isAligned(XEN_PAGE_SIZE)) throw new RangeError(`foreign region base ${base.toString()} is not 4 KiB aligned`);
    if (base.value + BigInt(size) - 1n > BigInt(MAX_REGION_END))
      throw new RangeError(`foreign region ${base.toString()}+${hex(size)} ends above 2^53 - 1`);
    const pages = size / XEN_PAGE_SIZE;
    const first = base.value >> 12n;
    const gfns = new BigUint64Array(pages);
    for (let i = 0; i < pages; i++) gfns[i] = first + BigInt(i);
    const mapOpts: { readOnly?: boolean; pagedRetries?: number } = {};
    if (options.readOnly !== undefined) mapOpts.readOnly = options.readOnly;
    if (options.pagedRetries !== undefined) mapOpts.pagedRetries = options.pagedRetries;
    let m;
    try {
      m = transport.mmapForeign(domid, gfns, mapOpts);
    } catch (err) {
      const errno = errnoOfCause(err);
      throw new XenMemoryError(
        "ForeignMapFailed",
        `mapping ${pages} frames of domain ${domid} at ${base.toString()} failed: ${(err as Error).message}`,
        errno === undefined ? { domid, gfn: first } : { domid, gfn: first, errno },
        { cause: err },
      );
    }
    const bad = m.errors.findIndex((e) => e !== 0);
    if (bad >= 0 || m.buffer.byteLength !== size) {
      release(transport, m.buffer);
      if (bad < 0)
        throw new XenMemoryError("ForeignMapFailed", `transport ${transport.kind} returned ${m.buffer.byteLength} bytes for ${size}`, { domid });
      const errno = Math.abs(m.errors[bad]!);
      const gfn = first + BigInt(bad);
      const failed = m.errors.reduce((n, e) => (e !== 0 ? n + 1 : n), 0);
      throw new XenMemoryError(
        "ForeignMapFailed",
        `domain ${domid}: frame ${hex(gfn)} (guest address ${hex(gfn << 12n)}) cannot be mapped: ${errnoName(errno)}` +
          (failed > 1 ? ` (${failed} of ${pages} frames failed)` : ""),
        { domid, gfn, errno, pageErrors: m.errors },
      );
    }
    try {
      return new XenForeignRegion(transport, domid, base, m.buffer, options);
    } catch (err) {
      release(transport, m.buffer);
      throw err;
    }
  }

  get closed(): boolean {
    return this.#buffer === undefined;
  }

  get mapping(): RegionMapping {
    const m = this.#mapping;
    if (!m) throw new GuestMemoryError("Closed", `foreign region at ${this.guestBase.toString()} (domain ${this.domid}) is closed`);
    return m;
  }

  borrow(offset: number, length: number): RegionView {
    const m = this.mapping;
    if (!(offset >= 0 && length >= 0 && offset + length <= this.size))
      throw new GuestMemoryError("OutOfBounds", `${length} bytes at offset ${offset} cross the end of a ${this.size}-byte region`, {
        address: this.guestBase.value + BigInt(Math.max(0, offset)),
      });
    return { bytes: m.bytes.subarray(offset, offset + length), atomics: m.atomics, atomicsOffset: offset, release: noRelease, [Symbol.dispose]: noRelease };
  }

  /** The vhost-user description: a fresh privcmd fd (restricted to the guest), FOREIGN, the domid. */
  vhostUserDescription(): VhostUserRegionDescription {
    if (this.closed) throw new GuestMemoryError("Closed", `foreign region at ${this.guestBase.toString()} is closed`);
    this.#fd ??= openMappingFd(this.#fdProvider, "privcmd", this.domid);
    return {
      guest_phys_addr: this.guestBase.value,
      memory_size: BigInt(this.size),
      userspace_addr: this.userAddr,
      // rust-vmm MmapXenForeign requires offset 0: the backend names frames by GPA, not by file offset.
      mmap_offset: 0n,
      fd: this.#fd,
      xen: { flags: XenMmapFlag.FOREIGN, domid: this.domid },
    };
  }

  /** Unmaps (views read as length 0 afterwards) and closes the vhost-user fd. Idempotent. */
  close(): void {
    const b = this.#buffer;
    if (!b) return;
    this.#buffer = undefined;
    this.#mapping = undefined;
    const fd = this.#fd;
    this.#fd = undefined;
    try {
      release(this.#transport, b);
    } finally {
      if (fd !== undefined) {
        try {
          closeFd(fd);
        } catch (err) {
          this.#log.warn("closing the vhost-user privcmd fd failed", { fd, err });
        }
      }
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** transport.unmap, then make sure stale views cannot reach the memory. */
function release(transport: XenTransport, buffer: ArrayBuffer): void {
  try {
    if (!transport.closed) transport.unmap(buffer);
  } catch (err) {
    if (!(err instanceof XenError)) throw err;
  } finally {
    ensureDetached(buffer);
  }
}
