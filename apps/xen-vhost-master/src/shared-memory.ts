// Shared memory regions of a vhost-user backend (VHOST_USER_PROTOCOL_F_SHMEM: GET_SHMEM_CONFIG sizes, later
// SHMEM_MAP into them) as a Xen guest sees them through virtio-mmio's SHM registers. The regions would have
// to appear in the guest's physical address space, backed by the backend's memory; on Xen that needs the
// toolstack to reserve guest-physical space and dom0 to place its own pages there, which neither xl nor this
// bridge does. So every ID reads as absent (length -1): honest, and what Linux's virtio_mmio treats as "no
// region" (virtio_get_shm_region returns false) rather than a region it would fault on.
import { regionsFromShmemConfig, type SharedMemoryRegion } from "@xen-vhost/virtio-mmio";
import type { Frontend } from "@xen-vhost/vhost-user-master";
import type { Logger } from "@xen-vhost/vmm-sys-util";

export async function sharedMemoryRegions(frontend: Frontend, log: Logger): Promise<readonly SharedMemoryRegion[]> {
  if (!frontend.hasProtocolFeature("SHMEM")) return [];
  let sizes: bigint[];
  try {
    sizes = await frontend.getShmemConfig();
  } catch (err) {
    log.warn("GET_SHMEM_CONFIG failed; the device shows no shared memory regions", { error: err });
    return [];
  }
  const used = sizes.flatMap((s, id) => (s > 0n ? [{ id, size: s }] : []));
  if (used.length > 0) log.warn("the backend has shared memory regions, which a Xen guest cannot be given; they read as absent", { regions: used });
  return regionsFromShmemConfig(sizes, undefined);
}
