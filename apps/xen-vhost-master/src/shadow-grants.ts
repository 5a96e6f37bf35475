// Guest memory for shadow mode on Xen: the guest's RAM (the bridge's foreign mappings, shared, not owned)
// plus its whole grant space as one on-demand grant region, so the relay follows a guest that hands out
// grant DMA addresses (Linux grant-dma-ops, `xen,grant-dma`) as well as one that hands out guest physical
// addresses. Nothing of the grant space is mapped until a ring or buffer is touched; mapped runs are
// dropped after every batch of completions (`flushGrants`), so the guest can end foreign access to a
// buffer as soon as it sees it used, as Linux does.
import { GuestMemoryError, type GuestMemory, type GuestMemoryRegion, type RegionMapping, type RegionView } from "@xen-vhost/vm-memory";
import { XenGrantCopyRegion, XenGrantRegion, XenGuestMemory } from "@xen-vhost/vm-memory-xen";
import type { XenTransport } from "@xen-vhost/xen-sys";
import type { Logger } from "@xen-vhost/vmm-sys-util";

/**
 * Grant references the window covers: 2^20 (4 GiB of grant addresses), above any guest's grant table
 * (Xen's default max_grant_frames 64 is 32768 v1 entries). Costs nothing until used.
 */
export const SHADOW_GRANT_REFS = 1 << 20;

/**
 * The grant space, mapped on demand, with grant copy as the fallback for a run that cannot be mapped
 * writable: a driver may grant what the device only reads (descriptor table, avail ring, request headers)
 * read-only, and gntdev refuses a writable mapping of those. Mapping read-only instead would turn a stray
 * write into a SIGSEGV, so the fallback copies (a write to a read-only grant then fails with a typed error).
 */
class GrantSpace implements GuestMemoryRegion {
  readonly #map: XenGrantRegion;
  readonly #copy: XenGrantCopyRegion;

  constructor(map: XenGrantRegion, copy: XenGrantCopyRegion) {
    this.#map = map;
    this.#copy = copy;
  }

  get guestBase(): XenGrantRegion["guestBase"] {
    return this.#map.guestBase;
  }

  get size(): number {
    return this.#map.size;
  }

  get closed(): boolean {
    return this.#map.closed;
  }

  get mapping(): RegionMapping | undefined {
    return undefined;
  }

  borrow(offset: number, length: number): RegionView {
    try {
      return this.#map.borrow(offset, length);
    } catch (e) {
      if (e instanceof GuestMemoryError && e.kind === "MapFailed") return this.#copy.borrow(offset, length);
      throw e;
    }
  }

  vhostUserDescription(): undefined {
    return undefined;
  }

  flush(): void {
    this.#map.flush();
  }

  close(): void {
    this.#map.close();
    this.#copy.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export class ShadowGuestMemory extends XenGuestMemory {
  readonly #grants: GrantSpace;

  private constructor(ram: GuestMemory, grants: GrantSpace) {
    super([...ram.regions, grants], { ownsRegions: false });
    this.#grants = grants;
  }

  /**
   * RAM as the bridge mapped it, plus domain `domid`'s grants. The RAM stays the caller's. Without a grant
   * device (no gntdev in this kernel) the result is RAM only, with a warning: a guest that uses physical
   * addresses is still served, one that uses grants gets NEEDS_RESET from the relay's typed error.
   */
  static create(transport: XenTransport, domid: number, ram: GuestMemory, logger?: Logger): XenGuestMemory {
    try {
      return ShadowGuestMemory.#create(transport, domid, ram, logger);
    } catch (err) {
      logger?.warn("no grant device: shadow mode serves guest physical addresses only", { domid, error: String(err) });
      return new XenGuestMemory(ram.regions, { ownsRegions: false });
    }
  }

  static #create(transport: XenTransport, domid: number, ram: GuestMemory, logger?: Logger): ShadowGuestMemory {
    const map = XenGrantRegion.forRefs(transport, domid, 0, SHADOW_GRANT_REFS, logger ? { logger } : {});
    let grants: GrantSpace | undefined;
    try {
      grants = new GrantSpace(map, XenGrantCopyRegion.forRefs(transport, domid, 0, SHADOW_GRANT_REFS, logger ? { logger } : {}));
      return new ShadowGuestMemory(ram, grants);
    } catch (e) {
      if (grants) grants.close();
      else map.close();
      throw e;
    }
  }

  /** Unmaps every idle grant run (after completions, before the guest is told). */
  flushGrants(): void {
    this.#grants.flush();
  }

  /** Closes the grant region (and its gntdev fd); the RAM regions are left to their owner. */
  override close(): void {
    super.close();
    this.#grants.close();
  }
}
