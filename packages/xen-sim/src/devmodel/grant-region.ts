// The grant address space of one guest as a vm-memory region, for the package's device models in grant
// mode: a device handed `1 << 63 | ref << 12 | offset` addresses (Linux grant-dma-ops) reaches the bytes
// through gntdev, mapping the refs a view covers and unmapping them when the view is released, so the
// simulator's grant checks (GTF_permit_access, GTF_readonly, pins) apply to every access. A test aid: the
// product's on-demand grant mapping with a cache is vm-memory-xen's XenGrantRegion.
import { AtomicAccess } from "@xen-vhost/vmm-sys-util";
import { GuestAddress, type GuestMemoryRegion, type RegionView } from "@xen-vhost/vm-memory";
import { XenError, type GrantDevice } from "@xen-vhost/xen-sys";
import { PAGE_SIZE, XEN_GRANT_DMA_ADDR_OFF } from "../layout.js";

export class GrantDmaRegion implements GuestMemoryRegion {
  readonly guestBase = new GuestAddress(XEN_GRANT_DMA_ADDR_OFF);
  readonly size: number;
  readonly mapping = undefined;
  /** Views that had to be mapped read-only (the guest granted the pages read-only). */
  readOnlyMaps = 0;
  readonly #gnt: GrantDevice;
  readonly #domid: number;
  #closed = false;

  /** Refs `[0, refs)` of `domid`'s grant table, through `gnt` (owned by the caller). */
  constructor(gnt: GrantDevice, domid: number, refs: number) {
    this.#gnt = gnt;
    this.#domid = domid;
    this.size = refs * PAGE_SIZE;
  }

  get closed(): boolean {
    return this.#closed;
  }

  borrow(offset: number, length: number): RegionView {
    if (this.#closed) throw XenError.closed("grant region");
    const first = Math.floor(offset / PAGE_SIZE);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / PAGE_SIZE);
    const refs = Array.from({ length: last - first + 1 }, (_, i) => first + i);
    let m;
    try {
      m = this.#gnt.mapGrantRefs(this.#domid, refs);
    } catch (err) {
      // A read-only grant refuses a writable map (GNTST_permission_denied): what the device reads there is
      // for reading only, as in a real backend that maps with GNTMAP_readonly.
      if (!(err instanceof XenError)) throw err;
      m = this.#gnt.mapGrantRefs(this.#domid, refs, { readOnly: true });
      this.readOnlyMaps++;
    }
    const at = offset - first * PAGE_SIZE;
    const mapping = m;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.#gnt.unmapGrantRefs(mapping);
    };
    return {
      bytes: new Uint8Array(mapping.buffer, at, length),
      atomics: new AtomicAccess(mapping.buffer),
      atomicsOffset: at,
      release,
      [Symbol.dispose]: release,
    };
  }

  vhostUserDescription(): undefined {
    return undefined;
  }

  close(): void {
    this.#closed = true;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
