// The guest's grant table (v1 entries in shared frames, public/grant_table.h), driven the way Linux's
// drivers/xen/grant-table.c does: write frame and domid, barrier, then flags; end access with a cmpxchg that
// fails while the backend has the page mapped (GTF_reading/GTF_writing set by Xen).
import { close as closeFd, fence, mmap, munmap, MmapConstants } from "@xen-vhost/vmm-sys-util";
import { SimError } from "../error.js";
import {
  GNTTAB_NR_RESERVED_ENTRIES, GRANT_ENTRY_SIZE, GTF_permit_access, GTF_readonly, GTF_reading, GTF_writing, PAGE_SHIFT,
  PAGE_SIZE, grantDmaAddress,
} from "../layout.js";

export class GrantTable implements Disposable {
  readonly entries: number;
  readonly #map: ArrayBuffer;
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  readonly #used: Uint8Array;

  /** Takes ownership of `fd` (the grant frames memfd). */
  constructor(fd: number, frames: number) {
    try {
      this.#map = mmap(frames * PAGE_SIZE, { fd, flags: MmapConstants.MAP_SHARED });
    } finally {
      closeFd(fd);
    }
    this.entries = (frames * PAGE_SIZE) / GRANT_ENTRY_SIZE;
    this.#u16 = new Uint16Array(this.#map);
    this.#u32 = new Uint32Array(this.#map);
    this.#used = new Uint8Array(this.entries);
    this.#used.fill(1, 0, GNTTAB_NR_RESERVED_ENTRIES);
  }

  /** Allocates `count` consecutive refs (gnttab_alloc_grant_reference_seq, as grant-dma-ops needs). */
  #alloc(count: number): number {
    let run = 0;
    for (let r = GNTTAB_NR_RESERVED_ENTRIES; r < this.entries; r++) {
      run = this.#used[r] ? 0 : run + 1;
      if (run === count) {
        const first = r - count + 1;
        this.#used.fill(1, first, r + 1);
        return first;
      }
    }
    throw new SimError("InvalidArgument", `no ${count} consecutive free grant refs`);
  }

  #set(ref: number, frame: bigint, domid: number, readOnly: boolean): void {
    Atomics.store(this.#u32, ref * 2 + 1, Number(frame));
    Atomics.store(this.#u16, ref * 4 + 1, domid);
    fence();
    Atomics.store(this.#u16, ref * 4, GTF_permit_access | (readOnly ? GTF_readonly : 0));
  }

  /** gnttab_grant_foreign_access: lets `domid` map frame `gfn`. Returns the ref. */
  grantAccess(gfn: bigint, options: { domid?: number; readOnly?: boolean } = {}): number {
    const ref = this.#alloc(1);
    this.#set(ref, gfn, options.domid ?? 0, options.readOnly ?? false);
    return ref;
  }

  /**
   * Grants the pages of [gpa, gpa+len) with consecutive refs and returns the virtio DMA address
   * (1 << 63 | first_ref << 12 | offset), as Linux grant-dma-ops hands a device.
   */
  grantRange(gpa: bigint, len: number, options: { domid?: number; readOnly?: boolean } = {}): { dma: bigint; refs: number[] } {
    const first = gpa >> BigInt(PAGE_SHIFT);
    const last = (gpa + BigInt(Math.max(len, 1)) - 1n) >> BigInt(PAGE_SHIFT);
    const n = Number(last - first) + 1;
    const ref = this.#alloc(n);
    const refs: number[] = [];
    for (let i = 0; i < n; i++) {
      this.#set(ref + i, first + BigInt(i), options.domid ?? 0, options.readOnly ?? false);
      refs.push(ref + i);
    }
    return { dma: grantDmaAddress(ref, Number(gpa & 0xfffn)), refs };
  }

  /** The flags word of `ref` (GTF_reading/GTF_writing show the backend's mappings). */
  flags(ref: number): number {
    return Atomics.load(this.#u16, ref * 4);
  }

  /** gnttab_end_foreign_access_ref: false while the page is mapped by the other side. */
  endAccess(ref: number): boolean {
    if (!Number.isInteger(ref) || ref < GNTTAB_NR_RESERVED_ENTRIES || ref >= this.entries) throw new RangeError(`grant ref ${ref}`);
    for (;;) {
      const f = Atomics.load(this.#u16, ref * 4);
      if ((f & (GTF_reading | GTF_writing)) !== 0) return false;
      if (Atomics.compareExchange(this.#u16, ref * 4, f, 0) === f) break;
    }
    this.#used[ref] = 0;
    return true;
  }

  close(): void {
    munmap(this.#map);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
