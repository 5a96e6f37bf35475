// The backend side: vhost-user-backend's `--xen-mapper @xen-vhost/vm-memory-xen` imports this module and
// calls createXenRegionMapper(). For each Xen region of a SET_MEM_TABLE / ADD_MEM_REG it maps the guest's
// memory again, in this process: FOREIGN regions through privcmd, GRANT regions through gntdev (on demand
// when NO_ADVANCE_MAP). The interface is declared structurally here (vhost-user-backend's XenRegionMapper)
// so neither package depends on the other.
//
// Known limit: the fd that came with the region is not used; the mapper maps through its own transport
// (default: /dev/xen/privcmd). Using the received fd (which the front-end restricted to the guest) needs
// xen-sys to build a transport / grant device over an existing fd (reported as a root change).
import { noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import type { GuestMemoryRegion } from "@xen-vhost/vm-memory";
import { PrivcmdTransport, type XenTransport } from "@xen-vhost/xen-sys";
import { XenForeignRegion } from "./foreign-region.js";
import { XEN_GRANT_DMA_ADDR_OFF, grantRefOf } from "./grant-address.js";
import { XenGrantCopyRegion } from "./grant-copy-region.js";
import { XenGrantRegion, type GrantCacheOptions } from "./grant-region.js";

/** One past the last grant address: 2^63 + (2^32 references << 12). */
const GRANT_SPACE_END = XEN_GRANT_DMA_ADDR_OFF + (1n << 44n);

/** What vhost-user-backend hands a mapper (its XenRegionDescription). */
export interface XenRegionRequest {
  readonly guestPhysAddr: bigint;
  readonly memorySize: bigint;
  readonly userAddr: bigint;
  readonly mmapOffset: bigint;
  readonly fd: number;
  readonly type: "foreign" | "grant";
  readonly noAdvanceMap: boolean;
  readonly domid: number;
}

/** vhost-user-backend's XenRegionMapper, structurally. */
export interface XenRegionMapper {
  readonly name: string;
  supports(type: "foreign" | "grant", noAdvanceMap: boolean): boolean;
  map(region: XenRegionRequest): GuestMemoryRegion;
}

export interface XenRegionMapperOptions {
  /** The transport to map with (default: PrivcmdTransport opened at the first map). */
  transport?: XenTransport;
  /** Grant mapping cache bounds for NO_ADVANCE_MAP regions. */
  grantCache?: GrantCacheOptions;
  /**
   * How NO_ADVANCE_MAP grant regions are accessed: "map" (default; gntdev mappings with a small cache) or
   * "copy" (IOCTL_GNTDEV_GRANT_COPY per access: nothing stays mapped, the guest can revoke any grant at
   * once). Advance-mapped grant regions (rings) are always mapped.
   */
  grantAccess?: "map" | "copy";
  logger?: Logger;
}

/**
 * The mapper a vhost-user backend plugs in. Options may come from a CLI as a plain record, so they are
 * read defensively.
 */
export function createXenRegionMapper(options: XenRegionMapperOptions | Record<string, unknown> = {}): XenRegionMapper {
  const o = options as XenRegionMapperOptions;
  const log = o.logger ?? noopLogger;
  let transport = o.transport;
  const get = (): XenTransport => (transport ??= PrivcmdTransport.open({ logger: log }));
  return {
    name: "vm-memory-xen",
    supports: (type, noAdvanceMap) => type === "grant" || (type === "foreign" && !noAdvanceMap),
    map(region) {
      if (region.type === "foreign") {
        if (region.noAdvanceMap) throw new RangeError("NO_ADVANCE_MAP is only valid with GRANT");
        if (region.memorySize > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`foreign region size ${region.memorySize} is larger than 2^53 - 1 bytes`);
        return XenForeignRegion.map(get(), region.domid, region.guestPhysAddr, Number(region.memorySize), { logger: log });
      }
      // A grant region may be described up to the end of the 64-bit space (one NO_ADVANCE_MAP region for
      // all grants, or xen-vhost-frontend's gap regions); grant_ref_t reaches only 2^44 bytes past 2^63,
      // so the region is the part references can name. grantRefOf refuses a base without bit 63 or past it.
      const { gref } = grantRefOf(region.guestPhysAddr);
      const reachable = GRANT_SPACE_END - region.guestPhysAddr;
      const size = Number(region.memorySize < reachable ? region.memorySize : reachable);
      if (BigInt(size) < region.memorySize)
        log.info("grant region clipped to what grant references can name", { gref, described: String(region.memorySize), mapped: size });
      if (region.noAdvanceMap && o.grantAccess === "copy")
        return XenGrantCopyRegion.create(get(), region.domid, region.guestPhysAddr, size, { logger: log });
      return XenGrantRegion.create(get(), region.domid, region.guestPhysAddr, size, {
        advanceMap: !region.noAdvanceMap, logger: log, ...(o.grantCache ? { cache: o.grantCache } : {}),
      });
    },
  };
}
