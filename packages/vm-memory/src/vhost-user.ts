// What a vhost-user front-end sends for each guest memory region in VHOST_USER_SET_MEM_TABLE /
// VHOST_USER_ADD_MEM_REG (docs/interop/vhost-user.rst, "Memory region description": guest_phys_addr,
// memory_size, userspace_addr, mmap_offset, all u64; the region's fd travels as SCM_RIGHTS ancillary data).
// With VHOST_USER_PROTOCOL_F_XEN_MMAP the description carries xen_mmap_flags and domid as well. The field
// names are the C names so a vhost-user-protocol struct layout can take the object as is. Regions produce
// their own description, so a front-end never assembles one by hand.
import { GuestMemoryError, hex } from "./error.js";

/** One region as a vhost-user front-end describes it to a backend. */
export interface VhostUserRegionDescription {
  /** Guest physical address of the region's start. */
  readonly guest_phys_addr: bigint;
  /** Size in bytes. */
  readonly memory_size: bigint;
  /** The front-end's virtual address of the mapping (backends translate vring addresses with it). */
  readonly userspace_addr: bigint;
  /** Offset of the region in `fd` (the backend mmaps `fd` at this offset). */
  readonly mmap_offset: bigint;
  /** The fd to send (not owned by the receiver of this object: the region keeps it open). */
  readonly fd: number;
  /**
   * Xen mapping data for VHOST_USER_PROTOCOL_F_XEN_MMAP (xen_mmap_flags, domid). Plain data here; Xen regions
   * in vm-memory-xen fill it in.
   */
  readonly xen?: { readonly flags: number; readonly domid: number };
}

function find(
  regions: readonly VhostUserRegionDescription[],
  addr: bigint,
  len: bigint,
  key: "guest_phys_addr" | "userspace_addr",
): VhostUserRegionDescription | undefined {
  for (const r of regions) {
    const base = r[key];
    if (addr >= base && addr + len <= base + r.memory_size) return r;
  }
  return undefined;
}

/**
 * The front-end's virtual address for guest address `gpa` (VHOST_USER_SET_VRING_ADDR takes ring addresses
 * in the front-end's address space). `len` bytes from there must lie in one region.
 * @throws GuestMemoryError `InvalidGuestAddress`.
 */
export function guestToUserAddr(regions: readonly VhostUserRegionDescription[], gpa: bigint | number, len: bigint | number = 1n): bigint {
  const a = BigInt(gpa);
  const r = find(regions, a, BigInt(len), "guest_phys_addr");
  if (!r) throw new GuestMemoryError("InvalidGuestAddress", `no region holds ${len} bytes at guest address ${hex(a)}`, { address: a });
  return r.userspace_addr + (a - r.guest_phys_addr);
}

/**
 * The guest address for a front-end virtual address (what a backend does with SET_VRING_ADDR).
 * @throws GuestMemoryError `InvalidGuestAddress`.
 */
export function userToGuestAddr(regions: readonly VhostUserRegionDescription[], uaddr: bigint | number, len: bigint | number = 1n): bigint {
  const u = BigInt(uaddr);
  const r = find(regions, u, BigInt(len), "userspace_addr");
  if (!r) throw new GuestMemoryError("InvalidGuestAddress", `no region holds ${len} bytes at front-end address ${hex(u)}`);
  return r.guest_phys_addr + (u - r.userspace_addr);
}
