// A RECORDING DOUBLE for the grant cache's bookkeeping only (which runs get mapped, when they are unmapped).
// It simulates nothing: every map returns fresh zeroed memory, so data written through one run is NOT seen
// through another (real grant mappings share the guest's frame). Data-path tests belong to xen-sim.
import { XenError, type GrantCopySegment, type GrantDevice, type GrantMapping } from "@xen-vhost/xen-sys";
import { errnoOf } from "@xen-vhost/vmm-sys-util";

export class RecordingGrantDevice implements GrantDevice {
  readonly maps: { domid: number; refs: number[]; readOnly: boolean }[] = [];
  readonly unmaps: { index: bigint; count: number }[] = [];
  /** References that make mapGrantRefs fail like gntdev does for a reference the guest never granted. */
  readonly refuse = new Set<number>();
  #next = 0n;
  #closed = false;
  live = 0;

  get closed(): boolean {
    return this.#closed;
  }
  setMaxGrants(): void {}
  mapGrantRefs(domid: number, refs: readonly number[], options: { readOnly?: boolean } = {}): GrantMapping {
    if (this.#closed) throw XenError.closed("gntdev device");
    this.maps.push({ domid, refs: [...refs], readOnly: options.readOnly ?? false });
    const bad = refs.find((r) => this.refuse.has(r));
    // gntdev's MAP_GRANT_REF only reserves an index; the grant map hypercall runs in mmap(), which fails for
    // a reference the guest never granted, and GntdevDevice reports that as XenError "mmap gntdev".
    if (bad !== undefined) throw XenError.fromErrno(errnoOf("EFAULT"), "mmap gntdev", { domid });
    const index = this.#next;
    this.#next += BigInt(refs.length * 4096);
    this.live++;
    return { buffer: new ArrayBuffer(refs.length * 4096), index, count: refs.length, domid };
  }
  unmapGrantRefs(mapping: GrantMapping): void {
    this.unmaps.push({ index: mapping.index, count: mapping.count });
    this.live--;
  }
  getOffsetForVaddr(): { offset: bigint; count: number } {
    throw new Error("not recorded");
  }
  setUnmapNotify(): void {}
  grantCopy(_segments: readonly GrantCopySegment[]): Int16Array {
    throw new Error("not recorded");
  }
  close(): void {
    this.#closed = true;
  }
  [Symbol.dispose](): void {
    this.close();
  }
}
