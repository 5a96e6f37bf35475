// Memory regions as plain data: what a guest-memory implementation (packages/vm-memory's memfd regions,
// vm-memory-xen's foreign/grant regions) describes, and what SET_MEM_TABLE / ADD_MEM_REG carry.
import { VhostUserError, XenMmapFlags, type MemoryRegion } from "@xen-vhost/vhost-user-protocol";

/** One region of guest memory that a back-end can map from `fd`. */
export interface MemoryRegionDescription {
  /** Guest physical address of the first byte. */
  guestPhysAddr: bigint | number;
  /** Length in bytes. */
  size: bigint | number;
  /**
   * The front-end's address of the first byte: vring addresses are given in this space (unless
   * GPA_ADDRESSES or IOMMU_PLATFORM). It need not be a real mapping, only unique and non-overlapping.
   */
  userAddr: bigint | number;
  /** Offset of the region in `fd`. */
  mmapOffset: bigint | number;
  /** The fd the back-end maps (memfd, or /dev/xen/privcmd or gntdev for Xen). Borrowed, never closed. */
  fd: number;
  /**
   * Xen mapping of the region (needs VHOST_USER_PROTOCOL_F_XEN_MMAP): `flags` from XenMmapFlags
   * (FOREIGN, GRANT, GRANT | NO_ADVANCE_MAP; either NO_ADVANCE_MAP encoding is accepted), `domid` the guest.
   */
  xen?: { flags: number; domid: number };
}

function big(v: bigint | number, what: string): bigint {
  if (typeof v === "bigint") {
    if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new VhostUserError("InvalidParam", `${what} ${v} out of u64 range`);
    return v;
  }
  if (!Number.isSafeInteger(v) || v < 0) throw new VhostUserError("InvalidParam", `${what} ${v} must be a non-negative integer`);
  return BigInt(v);
}

/** Checks a description and converts it to the wire form. */
export function toWireRegion(d: MemoryRegionDescription, index = 0): MemoryRegion {
  const what = `region ${index}`;
  if (!Number.isInteger(d.fd) || d.fd < 0) throw new VhostUserError("InvalidParam", `${what}: invalid fd ${d.fd}`);
  const r: MemoryRegion = {
    guestPhysAddr: big(d.guestPhysAddr, `${what} guestPhysAddr`),
    memorySize: big(d.size, `${what} size`),
    userAddr: big(d.userAddr, `${what} userAddr`),
    mmapOffset: big(d.mmapOffset, `${what} mmapOffset`),
  };
  if (r.memorySize === 0n) throw new VhostUserError("InvalidParam", `${what}: size is 0`);
  if (d.xen) {
    const noAdv = XenMmapFlags.NO_ADVANCE_MAP | XenMmapFlags.NO_ADVANCE_MAP_RUST_VMM;
    const type = d.xen.flags & ~noAdv;
    if (type !== XenMmapFlags.UNIX && type !== XenMmapFlags.FOREIGN && type !== XenMmapFlags.GRANT)
      throw new VhostUserError("InvalidParam", `${what}: xen flags 0x${d.xen.flags.toString(16)} must be one of UNIX, FOREIGN, GRANT`);
    if ((d.xen.flags & noAdv) !== 0 && type !== XenMmapFlags.GRANT)
      throw new VhostUserError("InvalidParam", `${what}: NO_ADVANCE_MAP needs GRANT`);
    if (!Number.isInteger(d.xen.domid) || d.xen.domid < 0 || d.xen.domid > 0xffff)
      throw new VhostUserError("InvalidParam", `${what}: domid ${d.xen.domid} is not a domid_t`);
    r.xen = { flags: (d.xen.flags & noAdv) !== 0 ? type | XenMmapFlags.NO_ADVANCE_MAP : type, domid: d.xen.domid };
  }
  return r;
}

/** Checks that guest and user ranges of a table do not overlap (vhost-user.rst: they must not). */
export function checkNoOverlap(regions: readonly MemoryRegion[]): void {
  const check = (key: "guestPhysAddr" | "userAddr") => {
    const sorted = [...regions].sort((a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0));
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1]!;
      if (prev[key] + prev.memorySize > sorted[i]![key])
        throw new VhostUserError("InvalidParam", `memory regions overlap in ${key === "userAddr" ? "user" : "guest"} addresses at 0x${sorted[i]![key].toString(16)}`);
    }
  };
  check("guestPhysAddr");
  check("userAddr");
}

/** Identity of a region for ADD/REM_MEM_REG diffs: guest address, user address and size (spec: REM_MEM_REG matches on these). */
export function regionKey(r: MemoryRegion): string {
  return `${r.guestPhysAddr}:${r.userAddr}:${r.memorySize}`;
}

/**
 * Adapter for region descriptions that use the C field names (packages/vm-memory's
 * `GuestMemory.vhostUserRegions()`): structural, so this package does not depend on vm-memory.
 */
export function fromCRegion(d: {
  readonly guest_phys_addr: bigint;
  readonly memory_size: bigint;
  readonly userspace_addr: bigint;
  readonly mmap_offset: bigint;
  readonly fd: number;
  readonly xen?: { readonly flags: number; readonly domid: number } | undefined;
}): MemoryRegionDescription {
  const r: MemoryRegionDescription = {
    guestPhysAddr: d.guest_phys_addr, size: d.memory_size, userAddr: d.userspace_addr, mmapOffset: d.mmap_offset, fd: d.fd,
  };
  if (d.xen) r.xen = { flags: d.xen.flags, domid: d.xen.domid };
  return r;
}
