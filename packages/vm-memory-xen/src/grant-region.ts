// rust-vmm vm-memory src/mmap/xen.rs `MmapXenGrant`: guest memory the guest has *granted* to us, named by
// grant DMA addresses (bit 63 | gref << 12, see grant-address.ts). Grants cannot be mapped up front in
// general: only the pages of in-flight buffers are granted, and they change with every request. So a grant
// region with NO_ADVANCE_MAP maps on demand: every access borrows `[offset, offset + len)`, which maps that
// run of references (IOCTL_GNTDEV_MAP_GRANT_REF + mmap), and releasing the view returns the run to a small LRU
// cache of mapped runs, bounded in runs and pages. Rings are touched on every request, so the cache turns
// their map/unmap pair per access into a lookup.
//
// Holding a mapping keeps the guest from ending foreign access to those references (Linux then defers
// freeing them), so the cache is bounded, `flush()` unmaps every idle run (call it when a request completes
// if the guest must get its pages back promptly), and `cacheRuns: 0` gives strict map -> use -> unmap.
// A run still borrowed is never unmapped under its user, except by close(), after which its views read as
// length 0 (the buffers are detached) instead of touching unmapped memory.
//
// Without NO_ADVANCE_MAP (`advanceMap: true`) the whole region is mapped once at creation, as xen-vhost-
// frontend does for the three ring areas of each queue, and behaves like a mapped-up-front region.
import { AtomicAccess, addressOf, close as closeFd, noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import { GuestAddress, GuestMemoryError, type GuestAddressLike, type GuestMemoryRegion, type RegionMapping, type RegionView, type VhostUserRegionDescription } from "@xen-vhost/vm-memory";
import { checkDomid, type GrantDevice, type GrantMapping, type XenTransport } from "@xen-vhost/xen-sys";
import { ensureDetached } from "./detach.js";
import { XenMemoryError, errnoOfCause, hex } from "./error.js";
import { xenMmapFlags, type NoAdvanceMapEncoding } from "./flags.js";
import { XEN_GRANT_DMA_ADDR_OFF, XEN_PAGE_SIZE, grantRefOf } from "./grant-address.js";
import { fdProviderFor, openMappingFd, type MappingFdProvider } from "./region-fd.js";

/**
 * Where synthetic vhost-user `userspace_addr`s of NO_ADVANCE_MAP regions start: the top half of the 64-bit
 * space, which is kernel space on x86_64 and arm64, so no real user mapping of any process can overlap one.
 * Region `gpa` gets `SYNTHETIC_USER_ADDR_BASE + (gpa - 2^63)`: unique and non-overlapping because guest
 * ranges are (xen-vhost-frontend sent 0 for every such region, which overlaps; reference §4).
 */
export const SYNTHETIC_USER_ADDR_BASE = 0xffff_8000_0000_0000n;

export interface GrantCacheOptions {
  /** Most mapped runs kept when idle (default 32; 0 = unmap on every release). */
  maxRuns?: number;
  /** Most pages kept mapped when idle (default 1024 = 4 MiB). */
  maxPages?: number;
}

export interface GrantRegionOptions {
  /** Map the whole region now instead of on demand (a region without NO_ADVANCE_MAP). Default false. */
  advanceMap?: boolean;
  /** Map read-only (default read-write). */
  readOnly?: boolean;
  cache?: GrantCacheOptions;
  /** A grant device to share (not closed by the region); default: the transport opens one per region. */
  device?: GrantDevice;
  /** Where the vhost-user fd comes from (default: the transport if it can, else /dev/xen/gntdev). */
  fdProvider?: MappingFdProvider;
  /** NO_ADVANCE_MAP as 0x8 ("rust-vmm", default) or 0x100 ("spec"). */
  noAdvanceMapEncoding?: NoAdvanceMapEncoding;
  logger?: Logger;
}

/** Counters of the mapping cache (tests, benchmarks, metrics). */
export interface GrantCacheStats {
  /** Borrows served by a run already mapped. */
  hits: number;
  /** Borrows that had to map. */
  misses: number;
  /** IOCTL_GNTDEV_MAP_GRANT_REF calls. */
  maps: number;
  /** Runs unmapped. */
  unmaps: number;
  /** Runs mapped now. */
  runs: number;
  /** Pages mapped now. */
  pages: number;
}

interface Run {
  /** First page index within the region. */
  readonly first: number;
  readonly count: number;
  readonly mapping: GrantMapping;
  readonly bytes: Uint8Array;
  readonly atomics: AtomicAccess;
  users: number;
  /** Unmap as soon as the last user releases it (flushed or over the bound while in use). */
  doomed: boolean;
  /** When it was last borrowed (LRU order without reshuffling a container on every hit). */
  tick: number;
}

/** A borrowed view; a class rather than closures keeps the hit path to one small allocation. */
class GrantView implements RegionView {
  readonly bytes: Uint8Array;
  readonly atomics: AtomicAccess;
  readonly atomicsOffset: number;
  #run: Run | undefined;
  readonly #done: ((run: Run) => void) | undefined;
  constructor(run: Run, offset: number, length: number, done: ((run: Run) => void) | undefined) {
    const at = offset - run.first * XEN_PAGE_SIZE;
    this.bytes = run.bytes.subarray(at, at + length);
    this.atomics = run.atomics;
    this.atomicsOffset = at;
    this.#run = run;
    this.#done = done;
  }
  release(): void {
    const r = this.#run;
    if (r === undefined) return;
    this.#run = undefined;
    this.#done?.(r);
  }
  [Symbol.dispose](): void {
    this.release();
  }
}

const noop = (): void => {};

/** Grant references `[firstRef, firstRef + pages)` of domain `domid`, at their grant DMA addresses. */
export class XenGrantRegion implements GuestMemoryRegion {
  readonly guestBase: GuestAddress;
  readonly size: number;
  readonly domid: number;
  readonly firstRef: number;
  readonly advanceMap: boolean;
  readonly #device: GrantDevice;
  readonly #ownsDevice: boolean;
  readonly #readOnly: boolean;
  readonly #maxRuns: number;
  readonly #maxPages: number;
  readonly #fdProvider: MappingFdProvider;
  readonly #encoding: NoAdvanceMapEncoding;
  readonly #log: Logger;
  /** Mapped runs (a handful: bounded by maxRuns while idle). */
  readonly #runs: Run[] = [];
  #clock = 0;
  readonly #done = (run: Run): void => this.#release(run);
  #pinned: Run | undefined;
  #mapping: RegionMapping | undefined;
  #last: Run | undefined;
  #pages = 0;
  #closed = false;
  #fd: number | undefined;
  readonly #stats = { hits: 0, misses: 0, maps: 0, unmaps: 0 };

  private constructor(domid: number, firstRef: number, pages: number, device: GrantDevice, ownsDevice: boolean, transport: XenTransport | undefined, options: GrantRegionOptions) {
    this.domid = domid;
    this.firstRef = firstRef;
    this.guestBase = new GuestAddress(XEN_GRANT_DMA_ADDR_OFF | (BigInt(firstRef) << 12n));
    this.size = pages * XEN_PAGE_SIZE;
    this.advanceMap = options.advanceMap ?? false;
    this.#device = device;
    this.#ownsDevice = ownsDevice;
    this.#readOnly = options.readOnly ?? false;
    const maxRuns = options.cache?.maxRuns ?? 32;
    const maxPages = options.cache?.maxPages ?? 1024;
    if (!Number.isSafeInteger(maxRuns) || maxRuns < 0) throw new RangeError(`cache.maxRuns ${maxRuns} must be a non-negative integer`);
    if (!Number.isSafeInteger(maxPages) || maxPages < 0) throw new RangeError(`cache.maxPages ${maxPages} must be a non-negative integer`);
    this.#maxRuns = maxRuns;
    this.#maxPages = maxPages;
    this.#fdProvider = options.fdProvider ?? (transport ? fdProviderFor(transport) : fdProviderFor({}));
    this.#encoding = options.noAdvanceMapEncoding ?? "rust-vmm";
    this.#log = options.logger ?? noopLogger;
  }

  /**
   * A region of `pages` grant references starting at `firstRef`.
   * @throws RangeError for a bad domid or a reference range outside u32.
   * @throws XenMemoryError `GrantMapFailed` (advanceMap only) if a reference cannot be mapped; the XenError
   *   opening the grant device (DeviceMissing...) passes through.
   */
  static forRefs(transport: XenTransport | undefined, domid: number, firstRef: number, pages: number, options: GrantRegionOptions = {}): XenGrantRegion {
    checkDomid(domid);
    if (!Number.isInteger(firstRef) || firstRef < 0 || firstRef > 0xffff_ffff) throw new RangeError(`grant reference ${firstRef} is not a u32`);
    if (!Number.isInteger(pages) || pages < 1 || firstRef + pages - 1 > 0xffff_ffff)
      throw new RangeError(`${pages} grant references from ${firstRef} do not fit grant_ref_t`);
    const shared = options.device;
    if (!shared && !transport) throw new TypeError("XenGrantRegion needs a transport or a grant device");
    const device = shared ?? transport!.openGrantDevice();
    let region: XenGrantRegion | undefined;
    try {
      region = new XenGrantRegion(domid, firstRef, pages, device, shared === undefined, transport, options);
      if (region.advanceMap) {
        const run = region.#map(0, pages - 1);
        run.users = 1;
        region.#pinned = run;
        region.#mapping = { bytes: run.bytes, atomics: run.atomics };
      }
      return region;
    } catch (err) {
      if (region) region.close();
      else if (!shared) device.close();
      throw err instanceof GuestMemoryError && err.cause instanceof XenMemoryError ? err.cause : err;
    }
  }

  /**
   * A region covering grant addresses `[guestBase, guestBase + size)`: both page aligned, bit 63 set.
   * @throws XenMemoryError `NotAGrantAddress`; RangeError for an unaligned or empty range.
   */
  static create(transport: XenTransport | undefined, domid: number, guestBase: GuestAddressLike, size: number, options: GrantRegionOptions = {}): XenGrantRegion {
    const base = GuestAddress.from(guestBase);
    const { gref, offset } = grantRefOf(base.value);
    if (offset !== 0) throw new RangeError(`grant region base ${base.toString()} is not 4 KiB aligned`);
    if (!Number.isSafeInteger(size) || size <= 0 || size % XEN_PAGE_SIZE !== 0)
      throw new RangeError(`grant region size ${size} is not a positive multiple of 4 KiB`);
    return XenGrantRegion.forRefs(transport, domid, gref, size / XEN_PAGE_SIZE, options);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The whole region when mapped in advance; undefined for NO_ADVANCE_MAP (GuestMemory then borrows). */
  get mapping(): RegionMapping | undefined {
    if (this.#closed) throw new GuestMemoryError("Closed", `grant region at ${this.guestBase.toString()} is closed`);
    return this.#mapping;
  }

  get stats(): GrantCacheStats {
    return { ...this.#stats, runs: this.#runs.length, pages: this.#pages };
  }

  /**
   * Maps (or finds in the cache) the references holding `[offset, offset + length)` and returns a view.
   * @throws GuestMemoryError `OutOfBounds`, `Closed`, `MapFailed` (cause: XenMemoryError `GrantMapFailed`,
   *   whose `grantRef` is the first reference of the run, e.g. one the guest never granted).
   */
  borrow(offset: number, length: number): RegionView {
    if (this.#closed) throw new GuestMemoryError("Closed", `grant region at ${this.guestBase.toString()} is closed`);
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= this.size))
      throw new GuestMemoryError("OutOfBounds", `${length} bytes at offset ${offset} cross the end of a ${this.size}-byte grant region`, {
        address: this.guestBase.value + BigInt(Number.isSafeInteger(offset) && offset > 0 ? offset : 0),
      });
    const pinned = this.#pinned;
    if (pinned) return new GrantView(pinned, offset, length, undefined);
    if (length === 0) return { bytes: new Uint8Array(0), atomics: new AtomicAccess(new ArrayBuffer(0)), atomicsOffset: 0, release: noop, [Symbol.dispose]: noop };
    const firstPage = Math.floor(offset / XEN_PAGE_SIZE);
    const lastPage = Math.floor((offset + length - 1) / XEN_PAGE_SIZE);
    let run = this.#find(firstPage, lastPage);
    if (run) {
      this.#stats.hits++;
      run.users++;
    } else {
      this.#stats.misses++;
      run = this.#map(firstPage, lastPage);
      // Trimmed only once the new run is in use, so it is never the one evicted.
      run.users++;
      this.#trim();
    }
    return new GrantView(run, offset, length, this.#done);
  }

  #find(first: number, last: number): Run | undefined {
    const l = this.#last;
    if (l !== undefined && l.first <= first && last < l.first + l.count && !l.doomed) {
      l.tick = ++this.#clock;
      return l;
    }
    for (const r of this.#runs) {
      if (r.first <= first && last < r.first + r.count && !r.doomed) {
        r.tick = ++this.#clock;
        this.#last = r;
        return r;
      }
    }
    return undefined;
  }

  #map(first: number, last: number): Run {
    const count = last - first + 1;
    const refs: number[] = new Array<number>(count);
    for (let i = 0; i < count; i++) refs[i] = this.firstRef + first + i;
    let mapping: GrantMapping;
    try {
      mapping = this.#device.mapGrantRefs(this.domid, refs, { readOnly: this.#readOnly });
    } catch (err) {
      const errno = errnoOfCause(err);
      const gref = this.firstRef + first;
      const what = count === 1 ? `grant reference ${gref}` : `grant references ${gref}..${gref + count - 1}`;
      const cause = new XenMemoryError(
        "GrantMapFailed",
        `domain ${this.domid}: ${what} cannot be mapped (not granted?): ${(err as Error).message}`,
        errno === undefined ? { domid: this.domid, grantRef: gref } : { domid: this.domid, grantRef: gref, errno },
        { cause: err },
      );
      throw new GuestMemoryError("MapFailed", cause.message, { cause, address: this.guestBase.value + BigInt(first * XEN_PAGE_SIZE) });
    }
    this.#stats.maps++;
    const run: Run = {
      first, count, mapping, bytes: new Uint8Array(mapping.buffer), atomics: new AtomicAccess(mapping.buffer), users: 0, doomed: false,
      tick: ++this.#clock,
    };
    this.#runs.push(run);
    this.#pages += count;
    this.#last = run;
    return run;
  }

  #release(run: Run): void {
    run.users--;
    if (run.users > 0 || this.#closed) return;
    if (run.doomed) this.#unmap(run);
    else this.#trim();
  }

  /** Unmaps idle runs, least recently used first, until the cache is within its bounds. */
  #trim(): void {
    while (this.#runs.length > this.#maxRuns || this.#pages > this.#maxPages) {
      let victim: Run | undefined;
      for (const r of this.#runs) if (r.users === 0 && (victim === undefined || r.tick < victim.tick)) victim = r;
      if (victim === undefined) return; // everything left is in use: unmapped on release
      this.#unmap(victim);
    }
  }

  #unmap(run: Run): void {
    const i = this.#runs.indexOf(run);
    if (i < 0) return;
    this.#runs.splice(i, 1);
    this.#pages -= run.count;
    if (this.#last === run) this.#last = undefined;
    this.#stats.unmaps++;
    try {
      this.#device.unmapGrantRefs(run.mapping);
    } catch (err) {
      this.#log.warn("unmapping grant references failed", { domid: this.domid, firstRef: this.firstRef + run.first, count: run.count, err });
    } finally {
      ensureDetached(run.mapping.buffer);
    }
  }

  /**
   * Unmaps every idle run now; runs still borrowed are unmapped when released. Call when requests have
   * completed and the guest should get its pages back. Never touches the advance mapping.
   */
  flush(): void {
    for (const r of [...this.#runs]) {
      if (r === this.#pinned) continue;
      if (r.users === 0) this.#unmap(r);
      else r.doomed = true;
    }
  }

  /**
   * The vhost-user description: a fresh gntdev fd, GRANT (| NO_ADVANCE_MAP unless mapped in advance), the
   * domid; `userspace_addr` is the real mapping for advance-mapped regions, else a synthetic address.
   * @throws XenMemoryError `FdUnavailable`; GuestMemoryError `Closed`.
   */
  vhostUserDescription(): VhostUserRegionDescription {
    if (this.#closed) throw new GuestMemoryError("Closed", `grant region at ${this.guestBase.toString()} is closed`);
    this.#fd ??= openMappingFd(this.#fdProvider, "gntdev", this.domid);
    const pinned = this.#pinned;
    return {
      guest_phys_addr: this.guestBase.value,
      memory_size: BigInt(this.size),
      userspace_addr: pinned ? addressOf(pinned.bytes) : SYNTHETIC_USER_ADDR_BASE + (this.guestBase.value - XEN_GRANT_DMA_ADDR_OFF),
      mmap_offset: 0n,
      fd: this.#fd,
      xen: { flags: xenMmapFlags("grant", !this.advanceMap, this.#encoding), domid: this.domid },
    };
  }

  /** Unmaps everything (views still held read as length 0), closes the grant device if owned and the fd. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#mapping = undefined;
    this.#pinned = undefined;
    for (const r of [...this.#runs]) this.#unmap(r);
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
    return `XenGrantRegion(domain ${this.domid}, refs ${this.firstRef}..${this.firstRef + this.size / XEN_PAGE_SIZE - 1}, ${hex(this.guestBase.value)})`;
  }
}
