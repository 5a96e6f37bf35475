// Memory layouts shared by the simulator, the transport and the simulated guest.
//
// Event delivery without a round trip: a port's receiver owns a "pending set" in shared memory (a memfd page)
// and an eventfd. A sender sets the port's bit with one atomic OR and writes the eventfd; the receiver drains
// the eventfd and harvests bits. This is Xen's 2-level event channel ABI (public/xen.h: shared_info
// evtchn_pending[] with the per-vCPU evtchn_pending_sel selector word), with the eventfd standing in for the
// upcall. The simulator only sets the links up (bind/unbind); it never relays an event itself.

/** public/arch-arm.h: GUEST_RAM0_BASE / GUEST_RAM0_SIZE (3 GiB) and GUEST_RAM1_BASE. */
export const GUEST_RAM0_BASE = 0x4000_0000n;
export const GUEST_RAM0_SIZE = 0xc000_0000n;
export const GUEST_RAM1_BASE = 0x2_0000_0000n;
/** public/arch-arm.h: GUEST_VIRTIO_MMIO_BASE, _SIZE, _SPI_FIRST, _SPI_LAST. */
export const GUEST_VIRTIO_MMIO_BASE = 0x0200_0000n;
export const GUEST_VIRTIO_MMIO_SIZE = 0x0010_0000n;
export const GUEST_VIRTIO_MMIO_SPI_FIRST = 33;
export const GUEST_VIRTIO_MMIO_SPI_LAST = 43;
/** xen/arch/arm/include/asm/gic.h NR_LOCAL_IRQS: SGIs and PPIs; set_irq_level refuses them. */
export const NR_LOCAL_IRQS = 32;

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;

/** Ports per domain: the 2-level ABI on 64-bit guests (public/xen.h EVTCHN_2L_NR_CHANNELS = 64 * 64). */
export const EVTCHN_NR_PORTS = 4096;

// A pending set: u32 selector[4] (bit w = word w may have pending bits), u32 pending[128] (bit p = port p).
export const PENDING_SEL_OFFSET = 0;
export const PENDING_WORDS_OFFSET = 16;
export const PENDING_SET_SIZE = 16 + EVTCHN_NR_PORTS / 8;

// The domain page (one per domain, shared with the guest's processes):
/** u32: bumped whenever routes or event channel links of the domain change (guests re-fetch their caches). */
export const DOMPAGE_GENERATION = 0;
/** u32: DOMPAGE_FLAG_* bits. */
export const DOMPAGE_FLAGS = 4;
export const DOMPAGE_FLAG_PAUSED = 1;
export const DOMPAGE_FLAG_DYING = 2;
/** u32[32]: interrupt line levels, bit i = irq i (1024 lines; Arm SPIs up to 987). */
export const DOMPAGE_IRQ_LEVELS = 64;
export const DOMPAGE_NR_IRQS = 1024;
/** The pending set of the guest's own (guest-consumed) ports. */
export const DOMPAGE_PENDING = 256;

/** A place to deliver an event: the receiver's pending set (optional) and its eventfd. */
export interface EndpointDescription {
  /** Index into the fds of the message: the receiver's eventfd. */
  eventFd: number;
  /** Index into the fds of the message: the memfd holding the pending set, or -1 (Xen-consumed port). */
  pendingFd: number;
  /** Byte offset of the pending set in that memfd. */
  pendingOffset: number;
  /** The receiver's port (the bit to set). */
  port: number;
}

/** Sets `port` pending in a pending set viewed as u32 words starting at `base` (a u32 index). */
export function raisePending(words: Uint32Array, base: number, port: number): void {
  const w = port >>> 5;
  Atomics.or(words, base + PENDING_WORDS_OFFSET / 4 + w, (1 << (port & 31)) >>> 0);
  Atomics.or(words, base + PENDING_SEL_OFFSET / 4 + (w >>> 5), (1 << (w & 31)) >>> 0);
}

/**
 * Takes the pending, unmasked ports of a set (clearing their bits), up to `max`. Masked ports stay pending
 * (their selector bit is set again) so an unmask can deliver them, as Xen's evtchn_2l_unmask does.
 */
export function takePending(words: Uint32Array, base: number, masked: (port: number) => boolean, max: number): number[] {
  const out: number[] = [];
  const selBase = base + PENDING_SEL_OFFSET / 4;
  const pendBase = base + PENDING_WORDS_OFFSET / 4;
  for (let s = 0; s < 4; s++) {
    let sel = Atomics.exchange(words, selBase + s, 0) >>> 0;
    while (sel !== 0) {
      const bit = 31 - Math.clz32(sel & -sel);
      sel = (sel & ~(1 << bit)) >>> 0;
      const w = s * 32 + bit;
      const pending = Atomics.load(words, pendBase + w) >>> 0;
      let deliver = 0;
      let left = false;
      for (let b = pending; b !== 0; ) {
        const lo = 31 - Math.clz32(b & -b);
        b = (b & ~(1 << lo)) >>> 0;
        const port = w * 32 + lo;
        if (!masked(port) && out.length < max) {
          deliver |= 1 << lo;
          out.push(port);
        } else {
          left = true;
        }
      }
      if (deliver !== 0) Atomics.and(words, pendBase + w, ~deliver);
      if (left) Atomics.or(words, selBase + s, (1 << bit) >>> 0);
    }
  }
  return out;
}

/** Whether `port` is pending in the set. */
export function isPending(words: Uint32Array, base: number, port: number): boolean {
  return ((Atomics.load(words, base + PENDING_WORDS_OFFSET / 4 + (port >>> 5)) >>> (port & 31)) & 1) === 1;
}

/** Marks the word of `port` in the selector (after an unmask left it pending). */
export function reselect(words: Uint32Array, base: number, port: number): void {
  const w = port >>> 5;
  Atomics.or(words, base + PENDING_SEL_OFFSET / 4 + (w >>> 5), (1 << (w & 31)) >>> 0);
}

// public/grant_table.h (v1): struct grant_entry_v1 { uint16_t flags; domid_t domid; uint32_t frame; }.
export const GRANT_ENTRY_SIZE = 8;
export const GTF_invalid = 0;
export const GTF_permit_access = 1;
export const GTF_type_mask = 3;
export const GTF_readonly = 1 << 2;
export const GTF_reading = 1 << 3;
export const GTF_writing = 1 << 4;
/** Linux reserves the first grant refs (GNTTAB_NR_RESERVED_ENTRIES) for the console and xenstore. */
export const GNTTAB_NR_RESERVED_ENTRIES = 8;
/** public/grant_table.h GNTST_*. */
export const GNTST = {
  okay: 0, general_error: -1, bad_domain: -2, bad_gntref: -4, bad_handle: -4, bad_virt_addr: -5, bad_dev_addr: -6,
  no_device_space: -7, permission_denied: -8, bad_page: -9, bad_copy_arg: -10, address_too_big: -11, eagain: -12,
} as const;

/** The virtio grant DMA address of a granted page (Linux drivers/xen/grant-dma-ops.c: XEN_GRANT_DMA_ADDR_OFF). */
export const XEN_GRANT_DMA_ADDR_OFF = 1n << 63n;
export function grantDmaAddress(ref: number, offset = 0): bigint {
  return XEN_GRANT_DMA_ADDR_OFF | (BigInt(ref) << 12n) | BigInt(offset);
}
