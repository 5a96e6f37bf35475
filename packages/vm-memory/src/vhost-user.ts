// What a vhost-user front-end sends for each guest memory region in VHOST_USER_SET_MEM_TABLE /
// VHOST_USER_ADD_MEM_REG (docs/interop/vhost-user.rst, "Memory region description": guest_phys_addr,
// memory_size, userspace_addr, mmap_offset, all u64; the region's fd travels as SCM_RIGHTS ancillary data).
// With VHOST_USER_PROTOCOL_F_XEN_MMAP the description carries xen_mmap_flags and domid as well. The field
// names are the C names so a vhost-user-protocol struct layout can take the object as is. Regions produce
// their own description, so a front-end never assembles one by hand.

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
