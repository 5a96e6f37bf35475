// Guest memory for shadow mode on Xen: the guest's RAM (the bridge's foreign mappings, shared, not owned)
// plus its whole grant space as one on-demand grant region, so the relay follows a guest that hands out
// grant DMA addresses (Linux grant-dma-ops, `xen,grant-dma`) as well as one that hands out guest physical
// addresses. Nothing of the grant space is mapped until a ring or buffer is touched; mapped runs are
// dropped after every batch of completions (`flushGrants`), so the guest can end foreign access to a
// buffer as soon as it sees it used, as Linux does.
import type { GuestMemory } from "@xen-vhost/vm-memory";
import { XenGrantRegion, XenGuestMemory } from "@xen-vhost/vm-memory-xen";
import type { XenTransport } from "@xen-vhost/xen-sys";
import type { Logger } from "@xen-vhost/vmm-sys-util";

/**
 * Grant references the window covers: 2^20 (4 GiB of grant addresses), above any guest's grant table
 * (Xen's default max_grant_frames 64 is 32768 v1 entries). Costs nothing until used.
 */
export const SHADOW_GRANT_REFS = 1 << 20;

export class ShadowGuestMemory extends XenGuestMemory {
  readonly #grants: XenGrantRegion;

  private constructor(ram: GuestMemory, grants: XenGrantRegion) {
    super([...ram.regions, grants], { ownsRegions: false });
    this.#grants = grants;
  }

  /** RAM as the bridge mapped it, plus domain `domid`'s grants. The RAM stays the caller's. */
  static create(transport: XenTransport, domid: number, ram: GuestMemory, logger?: Logger): ShadowGuestMemory {
    const grants = XenGrantRegion.forRefs(transport, domid, 0, SHADOW_GRANT_REFS, logger ? { logger } : {});
    try {
      return new ShadowGuestMemory(ram, grants);
    } catch (e) {
      grants.close();
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
