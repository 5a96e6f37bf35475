// How a device's backend reaches the guest's memory: through the foreign mapping of all RAM (the driver
// hands out guest-physical addresses), or through grants (Linux's grant-dma-ops for a `xen,grant-dma`
// device: addresses 1 << 63 | ref << 12 | offset, include/xen/arm/... XEN_GRANT_DMA_ADDR_OFF). Grant mode
// needs VIRTIO_F_ACCESS_PLATFORM offered (Linux refuses a grant-DMA device without it) and a XEN_MMAP
// grant region in the backend's memory table: one NO_ADVANCE_MAP region over every grant reference, which
// the backend maps reference by reference as the rings and buffers name them.
//
// `auto` offers ACCESS_PLATFORM when the toolstack asked for grants (xenstore `grant_usage` = 1), and picks
// the memory table from the addresses the driver writes into the queue registers: bit 63 set -> grants.
import { guestToUserAddr, type VhostUserRegionDescription } from "@xen-vhost/vm-memory";
import { XenGrantRegion, isGrantAddress, type XenGuestMemory } from "@xen-vhost/vm-memory-xen";
import type { XenTransport } from "@xen-vhost/xen-sys";
import type { QueueConfig } from "@xen-vhost/virtio-mmio";
import type { Logger } from "@xen-vhost/vmm-sys-util";
import type { MemoryMode } from "./config.js";

/** Every grant reference a guest can name (grant_ref_t is a u32): 2^32 pages of the grant space. */
const ALL_GRANT_PAGES = 2 ** 32;

export interface DeviceMemoryOptions {
  transport: XenTransport;
  domid: number;
  /** The guest's foreign-mapped RAM (shared by the guest's devices; not owned). */
  ram: XenGuestMemory;
  mode: MemoryMode;
  /** xenstore `grant_usage` of the device (xl >= 4.18). */
  grantUsage: boolean;
  logger: Logger;
}

export class DeviceMemory implements Disposable {
  readonly #o: DeviceMemoryOptions;
  #grants: XenGrantRegion | undefined;
  /** The mode the driver's queue addresses chose since the last reset (auto), or the configured one. */
  #active: "foreign" | "grant" | undefined;
  #closed = false;

  constructor(options: DeviceMemoryOptions) {
    this.#o = options;
    this.#active = options.mode === "auto" ? undefined : options.mode;
  }

  /** Offer VIRTIO_F_ACCESS_PLATFORM: the driver may (auto) or must (grant) use grant addresses. */
  get offersAccessPlatform(): boolean {
    return this.#o.mode === "grant" || (this.#o.mode === "auto" && this.#o.grantUsage);
  }

  get mode(): "foreign" | "grant" {
    return this.#active ?? "foreign";
  }

  /** The driver reset the device: auto mode decides again from the next rings. */
  reset(): void {
    if (this.#o.mode === "auto") this.#active = undefined;
  }

  /** QueueReady: the rings must lie where the backend can reach them; auto mode settles on their kind. */
  validate(q: QueueConfig): string | undefined {
    const parts: [string, bigint, number][] = [["descriptor table", q.desc, 16 * q.size], ["driver area", q.avail, 6 + 2 * q.size], ["device area", q.used, 6 + 8 * q.size]];
    const grant = parts.map(([, a]) => isGrantAddress(a));
    if (grant.some((g) => g !== grant[0])) return "rings mix grant and guest-physical addresses";
    const kind = grant[0] ? "grant" : "foreign";
    if (this.#active !== undefined && this.#active !== kind) {
      return this.#o.mode === "auto" ? `queue uses ${kind} addresses while the device's other queues use ${this.#active} ones` : `${kind} addresses on a device configured for ${this.#active} memory`;
    }
    if (kind === "grant" && !this.offersAccessPlatform) return "grant addresses, but the device was not set up for grants (memory mode / grant_usage)";
    for (const [what, addr, len] of parts) {
      if (kind === "foreign" ? !this.#o.ram.checkRange(addr, len) : !grantRangeOk(addr, len)) return `${what} at 0x${addr.toString(16)} is outside ${kind === "foreign" ? "guest RAM" : "the grant space"}`;
    }
    this.#active = kind;
    return undefined;
  }

  #grantRegion(): XenGrantRegion {
    if (this.#closed) throw new Error("device memory is closed");
    this.#grants ??= XenGrantRegion.forRefs(this.#o.transport, this.#o.domid, 0, ALL_GRANT_PAGES, { advanceMap: false, logger: this.#o.logger });
    return this.#grants;
  }

  /** The memory table for SET_MEM_TABLE in the current mode. */
  regions(): VhostUserRegionDescription[] {
    if (this.mode === "grant") return [this.#grantRegion().vhostUserDescription()];
    return this.#o.ram.vhostUserRegions();
  }

  /** A ring address as the backend's memory table names it (SET_VRING_ADDR carries front-end addresses). */
  translate(addr: bigint, len: number): bigint {
    return guestToUserAddr(this.regions(), addr, len);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#grants?.close();
    this.#grants = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function grantRangeOk(addr: bigint, len: number): boolean {
  const off = addr & ~(1n << 63n);
  return off + BigInt(len) <= BigInt(ALL_GRANT_PAGES) * 4096n;
}
