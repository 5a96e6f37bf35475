// Reading a chain's device-readable buffers and filling its device-writable ones (rust-vmm virtio-queue's
// Reader/Writer): bounded copies through GuestMemory, so a guest length can never make us allocate or
// touch more than the caller allows.
import type { GuestMemory } from "@xen-vhost/vm-memory";

/** A guest buffer (a virtio-queue `Descriptor` is one). */
export interface GuestBuffer {
  readonly addr: bigint;
  readonly len: number;
}

/** Total length of some buffers (lengths are u32 each; the sum fits a double). */
export function totalLength(bufs: readonly GuestBuffer[]): number {
  let n = 0;
  for (const b of bufs) n += b.len;
  return n;
}

/** Copies up to `max` bytes of `bufs` (in order) out of guest memory. */
export function readBuffers(mem: GuestMemory, bufs: readonly GuestBuffer[], max = Infinity): Uint8Array {
  const n = Math.min(totalLength(bufs), max);
  const out = new Uint8Array(n);
  let at = 0;
  for (const b of bufs) {
    if (at >= n) break;
    const take = Math.min(b.len, n - at);
    mem.readInto(b.addr, out.subarray(at, at + take));
    at += take;
  }
  return out;
}

/** Writes `data` across `bufs` starting `skip` bytes in; returns the bytes written (short if the buffers are). */
export function writeBuffers(mem: GuestMemory, bufs: readonly GuestBuffer[], data: Uint8Array, skip = 0): number {
  let written = 0;
  let pos = 0;
  for (const b of bufs) {
    if (written >= data.length) break;
    const start = Math.max(0, skip - pos);
    pos += b.len;
    if (start >= b.len) continue;
    const take = Math.min(b.len - start, data.length - written);
    mem.write(b.addr + BigInt(start), data.subarray(written, written + take));
    written += take;
  }
  return written;
}

/**
 * A cursor over a chain's buffers: `take(n)` returns the next `n` bytes' buffers (splitting one if needed).
 * Devices whose requests have a layout (header, data, status) cut the chain into parts with it.
 */
export class BufferCursor {
  readonly #bufs: readonly GuestBuffer[];
  #i = 0;
  #off = 0;

  constructor(bufs: readonly GuestBuffer[]) {
    this.#bufs = bufs;
  }

  /** Bytes not yet taken. */
  get remaining(): number {
    let n = -this.#off;
    for (let i = this.#i; i < this.#bufs.length; i++) n += this.#bufs[i]!.len;
    return n;
  }

  /** The next `n` bytes as buffers, or null if fewer remain. */
  take(n: number): GuestBuffer[] | null {
    if (n > this.remaining) return null;
    const out: GuestBuffer[] = [];
    let left = n;
    while (left > 0) {
      const b = this.#bufs[this.#i]!;
      const avail = b.len - this.#off;
      const k = Math.min(avail, left);
      out.push({ addr: b.addr + BigInt(this.#off), len: k });
      left -= k;
      this.#off += k;
      if (this.#off === b.len) {
        this.#i++;
        this.#off = 0;
      }
    }
    return out;
  }

  /** Everything not yet taken. */
  rest(): GuestBuffer[] {
    return this.take(this.remaining) ?? [];
  }
}
