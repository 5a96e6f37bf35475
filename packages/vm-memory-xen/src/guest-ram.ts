// Mapping a domain's whole RAM (the foreign-mapping mode of xen-vhost-frontend, which maps everything up
// front because mapping later "times out the guest kernel"). Banks are split into chunks so no single
// MMAPBATCH_V2 call or ArrayBuffer gets too large (privcmd transports cap one call below 2 GiB).
import type { XenTransport } from "@xen-vhost/xen-sys";
import { XenForeignRegion, type ForeignRegionOptions } from "./foreign-region.js";
import type { GuestRamLayout } from "./layout.js";
import { XenGuestMemory } from "./xen-guest-memory.js";

export interface MapGuestRamOptions extends ForeignRegionOptions {
  /** Largest single region (default 1 GiB; a multiple of 4 KiB). */
  maxRegionBytes?: number;
}

/**
 * Foreign-maps every bank of `layout`. If one chunk fails, the ones mapped so far are unmapped.
 * @throws XenMemoryError `ForeignMapFailed` naming the first frame that could not be mapped.
 */
export function mapGuestRam(transport: XenTransport, layout: GuestRamLayout, options: MapGuestRamOptions = {}): XenForeignRegion[] {
  const chunk = options.maxRegionBytes ?? 0x4000_0000;
  if (!Number.isSafeInteger(chunk) || chunk <= 0 || chunk % 4096 !== 0) throw new RangeError(`maxRegionBytes ${chunk} is not a positive multiple of 4 KiB`);
  const regions: XenForeignRegion[] = [];
  try {
    for (const bank of layout.banks) {
      for (let off = 0n; off < bank.size; off += BigInt(chunk)) {
        const left = bank.size - off;
        const size = left < BigInt(chunk) ? Number(left) : chunk;
        regions.push(XenForeignRegion.map(transport, layout.domid, bank.base + off, size, options));
      }
    }
    return regions;
  } catch (err) {
    for (const r of regions.reverse()) r.close();
    throw err;
  }
}

/** mapGuestRam wrapped in a XenGuestMemory (which owns and closes the regions). */
export function guestMemoryFromLayout(transport: XenTransport, layout: GuestRamLayout, options: MapGuestRamOptions = {}): XenGuestMemory {
  const regions = mapGuestRam(transport, layout, options);
  try {
    return new XenGuestMemory(regions);
  } catch (err) {
    for (const r of regions.reverse()) r.close();
    throw err;
  }
}
