// Shared memory regions (virtio 1.2 section 2.10) as the virtio-mmio SHM registers show them
// (section 4.2.2: SHMSel 0x0ac, SHMLenLow/High 0x0b0/0x0b4, SHMBaseLow/High 0x0b8/0x0bc).
//
// A vhost-user backend announces its regions' sizes with GET_SHMEM_CONFIG (VHOST_USER_PROTOCOL_F_SHMEM,
// vhost-user.rst "VHOST_USER_GET_SHMEM_CONFIG": `nregions` and `memory_sizes[256]`, a size of 0 meaning
// the ID is unused) and maps into them later with SHMEM_MAP. A region exists for the driver only once the
// VMM has reserved guest-physical space for it: a VMM that cannot (no free window, or a hypervisor where
// the backend's memory cannot be placed in the guest) reports every ID as absent, which the spec spells as
// a length of -1 (all ones).
import type { SharedMemoryRegion } from "./device.js";

/** vhost-user VHOST_USER_MAX_SHMEM_REGIONS: IDs are 0..255. */
export const MAX_SHMEM_REGIONS = 256;

/** What SHMLen and SHMBase read for an ID that names no region: length -1 (4.2.2), base likewise all ones. */
export const SHM_NO_REGION = 0xffff_ffff_ffff_ffffn;

export interface ShmemPlacement {
  /** Guest-physical start of the window the VMM reserved for the device's regions. */
  base: bigint;
  /** Its size in bytes. */
  size: bigint;
  /** Alignment of each region (default 4 KiB, a page; must be a power of two). */
  align?: bigint;
}

/**
 * Lays the regions of a GET_SHMEM_CONFIG reply out in a reserved guest-physical window, in ID order, each
 * aligned. IDs with size 0 are unused. Without a window (undefined) there are no regions. A region that
 * does not fit is left out (its ID reads as absent) rather than overlapping guest memory it does not own.
 * @throws RangeError for more than 256 sizes, a negative size, or an alignment that is not a power of two.
 */
export function regionsFromShmemConfig(sizes: readonly bigint[], placement: ShmemPlacement | undefined): SharedMemoryRegion[] {
  if (sizes.length > MAX_SHMEM_REGIONS) throw new RangeError(`${sizes.length} shared memory regions exceed ${MAX_SHMEM_REGIONS}`);
  for (const s of sizes) if (s < 0n) throw new RangeError(`shared memory region size ${s} is negative`);
  if (!placement) return [];
  const align = placement.align ?? 0x1000n;
  if (align <= 0n || (align & (align - 1n)) !== 0n) throw new RangeError(`alignment 0x${align.toString(16)} is not a power of two`);
  const end = placement.base + placement.size;
  const out: SharedMemoryRegion[] = [];
  let next = placement.base;
  sizes.forEach((length, id) => {
    if (length === 0n) return;
    const at = (next + align - 1n) & ~(align - 1n);
    if (at + length > end) return;
    out.push({ id, base: at, length });
    next = at + length;
  });
  return out;
}

/** The value a SHM register reads for `shmSel` (4-byte registers; `offset` is one of the four read-only ones). */
export function shmRegisterValue(regions: readonly SharedMemoryRegion[], shmSel: number, which: "lenLow" | "lenHigh" | "baseLow" | "baseHigh"): number {
  const r = regions.find((x) => x.id === shmSel);
  const v = r === undefined ? SHM_NO_REGION : which === "lenLow" || which === "lenHigh" ? r.length : r.base;
  return Number(which.endsWith("Low") ? v & 0xffff_ffffn : (v >> 32n) & 0xffff_ffffn);
}
