// Both sides of a split ring (the device's Queue and the driver's DriverQueue) read and write their rings
// through typed-array views when a ring part lies in one region mapped up front; this finds such a view.
import { GuestMemoryError, type GuestAddress, type GuestMemory } from "@xen-vhost/vm-memory";

/**
 * `[addr, addr + len)` in place, if it lies inside one region mapped up front and its start is aligned to
 * `align` (so 16/32-bit views over it work); otherwise undefined and the caller keeps the GuestMemory path.
 */
export function inPlace(mem: GuestMemory, addr: GuestAddress, len: number, align: number): Uint8Array | undefined {
  try {
    if (mem.findRegion(addr)?.mapping === undefined) return undefined;
    const bytes = mem.slice(addr, len);
    return bytes.byteOffset % align === 0 ? bytes : undefined;
  } catch (e) {
    // across two regions, or closed: the GuestMemory path handles (or reports) it
    if (e instanceof GuestMemoryError) return undefined;
    throw e;
  }
}
