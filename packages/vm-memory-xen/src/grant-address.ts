// Grant "DMA" addresses. A Linux guest using grant-dma-ops (drivers/xen/grant-dma-ops.c, `grant_to_dma`)
// hands its virtio device addresses of the form `XEN_GRANT_DMA_ADDR_OFF | gref << XEN_PAGE_SHIFT` with
// `XEN_GRANT_DMA_ADDR_OFF = 1ULL << 63`; a buffer of several pages gets consecutive references, so
// `address + n` lies in reference `gref + (offset + n) / 4096`. rust-vmm vm-memory (src/mmap/xen.rs
// MmapXenGrant) derives references the same way.
import { XenMemoryError, hex } from "./error.js";

/** `#define XEN_GRANT_DMA_ADDR_OFF (1ULL << 63)` (Linux drivers/xen/grant-dma-ops.c). */
export const XEN_GRANT_DMA_ADDR_OFF = 1n << 63n;
/** Xen pages are 4 KiB on every architecture. */
export const XEN_PAGE_SIZE = 4096;
const PAGE_SHIFT = 12n;
/** grant_ref_t is a uint32_t (public/grant_table.h). */
const MAX_GREF = 0xffff_ffffn;

/** Whether `addr` is a grant address (bit 63 set). */
export function isGrantAddress(addr: bigint): boolean {
  return (addr & XEN_GRANT_DMA_ADDR_OFF) !== 0n;
}

/** The guest address of byte 0 of grant reference `gref`. */
export function grantAddress(gref: number): bigint {
  if (!Number.isInteger(gref) || gref < 0 || gref > 0xffff_ffff) throw new RangeError(`grant reference ${gref} is not a u32`);
  return XEN_GRANT_DMA_ADDR_OFF | (BigInt(gref) << PAGE_SHIFT);
}

/**
 * The grant reference and the offset in its page of a grant address.
 * @throws XenMemoryError `NotAGrantAddress` without bit 63 or for a reference above 2^32 - 1.
 */
export function grantRefOf(addr: bigint): { gref: number; offset: number } {
  if (!isGrantAddress(addr) || addr > 0xffff_ffff_ffff_ffffn)
    throw new XenMemoryError("NotAGrantAddress", `${hex(addr)} is not a grant address (bit 63 clear)`);
  const off = addr & ~XEN_GRANT_DMA_ADDR_OFF;
  const gref = off >> PAGE_SHIFT;
  if (gref > MAX_GREF) throw new XenMemoryError("NotAGrantAddress", `${hex(addr)} names grant reference ${gref}, above 2^32 - 1`);
  return { gref: Number(gref), offset: Number(off & 0xfffn) };
}
