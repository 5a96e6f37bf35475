// rust-vmm virtio-queue chain.rs `DescriptorChain`, validated up front: when `Queue.pop()` returns a chain,
// every descriptor (indirect tables flattened) is known to lie in guest memory, in readable-then-writable
// order, without loops. Copy helpers move data in and out of the buffers with bounds-checked GuestMemory
// calls, so a device implementation never does address arithmetic on guest values.
import type { GuestMemory } from "@xen-vhost/vm-memory";
import type { Descriptor } from "./descriptor.js";

export class DescriptorChain {
  /** Head index: what goes back in the used ring. */
  readonly head: number;
  /** The buffers, in chain order (an indirect descriptor is replaced by its table's entries). */
  readonly descriptors: readonly Descriptor[];
  /** Whether the chain went through an indirect table. */
  readonly indirect: boolean;
  readonly #mem: GuestMemory;

  constructor(mem: GuestMemory, head: number, descriptors: readonly Descriptor[], indirect: boolean) {
    this.#mem = mem;
    this.head = head;
    this.descriptors = descriptors;
    this.indirect = indirect;
  }

  /** The device-readable buffers (they come first). */
  get readable(): Descriptor[] {
    return this.descriptors.filter((d) => !d.isWriteOnly);
  }

  /** The device-writable buffers. */
  get writable(): Descriptor[] {
    return this.descriptors.filter((d) => d.isWriteOnly);
  }

  get readableLength(): number {
    let n = 0;
    for (const d of this.descriptors) if (!d.isWriteOnly) n += d.len;
    return n;
  }

  get writableLength(): number {
    let n = 0;
    for (const d of this.descriptors) if (d.isWriteOnly) n += d.len;
    return n;
  }

  /** A copy of all readable bytes, in order. */
  readAll(): Uint8Array {
    const out = new Uint8Array(this.readableLength);
    let at = 0;
    for (const d of this.descriptors) {
      if (d.isWriteOnly || d.len === 0) continue;
      this.#mem.readInto(d.addr, out.subarray(at, at + d.len));
      at += d.len;
    }
    return out;
  }

  /**
   * Writes `data` across the writable buffers in order and returns the bytes written (at most
   * `writableLength`): the value for the used element's `len`.
   */
  writeAll(data: Uint8Array): number {
    let at = 0;
    for (const d of this.descriptors) {
      if (!d.isWriteOnly || d.len === 0) continue;
      if (at >= data.length) break;
      const n = Math.min(d.len, data.length - at);
      this.#mem.write(d.addr, data.subarray(at, at + n));
      at += n;
    }
    return at;
  }
}
