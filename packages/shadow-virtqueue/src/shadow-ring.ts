// The driver side of one shadow ring (virtio 1.2 2.7.13 / 2.7.14), specialised for the relay: the ring
// lives in the relay's own memfd mapping, so it is written through one DataView and one AtomicAccess over
// that mapping instead of GuestMemory calls, buffers are plain numbers (shadow addresses are small), and
// nothing is allocated per request. Layout and semantics are virtio-queue's DriverQueue (same `layout`):
// descriptors and avail entries are written first, then a fence and one single-instruction 16-bit store of
// avail.idx, so a busy-polling backend (DPDK) never sees half an index or an unwritten descriptor.
// Everything read back from the backend (used idx, used ids) is validated.
import { DriverQueue, USED_FLAGS, USED_IDX, USED_RING, AVAIL_FLAGS, AVAIL_IDX, AVAIL_RING, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY, VirtqueueError, availEventOffset, usedEventOffset, vringNeedEvent } from "@xen-vhost/virtio-queue";
import { fence, type AtomicAccess } from "@xen-vhost/vmm-sys-util";

/** One buffer of a shadow chain: `len` bytes at shadow address `addr`. */
export interface ShadowBuffer {
  readonly addr: number;
  readonly len: number;
}

export class ShadowRing<T> {
  readonly size: number;
  readonly eventIdx: boolean;
  /** Shadow addresses of the parts (for SET_VRING_ADDR). */
  readonly descTable: number;
  readonly availRing: number;
  readonly usedRing: number;
  readonly #view: DataView;
  readonly #atomics: AtomicAccess;
  /** Offsets of the parts in the mapping. */
  readonly #desc: number;
  readonly #avail: number;
  readonly #used: number;
  readonly #freeNext: Uint16Array;
  /** Descriptors of each in-flight head (count), and its token. */
  readonly #count: Uint16Array;
  readonly #tokens: (T | undefined)[];
  #freeHead = 0;
  #numFree: number;
  #availIdx = 0;
  #publishedIdx = 0;
  #kickedIdx = 0;
  #lastUsed = 0;

  /**
   * Lays the ring out at `base` (DriverQueue.layout) inside `mapping`, whose first byte is shadow address
   * `mappingBase`, and zeroes it.
   * @throws VirtqueueError `InvalidConfig` if the ring does not fit the mapping.
   */
  constructor(mapping: { bytes: Uint8Array; atomics: AtomicAccess }, mappingBase: number, base: number, size: number, eventIdx: boolean) {
    const l = DriverQueue.layout(base, size);
    this.size = size;
    this.eventIdx = eventIdx;
    this.descTable = Number(l.descTable);
    this.availRing = Number(l.availRing);
    this.usedRing = Number(l.usedRing);
    const start = this.descTable - mappingBase;
    const end = Number(l.end) - mappingBase;
    const b = mapping.bytes;
    if (start < 0 || end > b.length) throw new VirtqueueError("InvalidConfig", `shadow ring at 0x${base.toString(16)} (${size} entries) is outside the shadow mapping`);
    this.#view = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.#atomics = mapping.atomics;
    // AtomicAccess offsets are relative to the mapping's ArrayBuffer, like the DataView's.
    const o = b.byteOffset - mappingBase;
    this.#desc = this.descTable + o;
    this.#avail = this.availRing + o;
    this.#used = this.usedRing + o;
    b.fill(0, start, end);
    this.#freeNext = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.#freeNext[i] = (i + 1) & 0xffff;
    this.#numFree = size;
    this.#count = new Uint16Array(size);
    this.#tokens = new Array<T | undefined>(size).fill(undefined);
    fence();
  }

  get numFree(): number {
    return this.#numFree;
  }

  /**
   * Writes a chain (readable buffers, then writable) and its avail entry; `publish()` makes it visible.
   * The caller has checked `numFree` and that every buffer lies in shadow memory.
   */
  add(readable: readonly ShadowBuffer[], writable: readonly ShadowBuffer[], token: T): number {
    const n = readable.length + writable.length;
    if (n === 0 || n > this.#numFree) throw new VirtqueueError("QueueFull", `${n} descriptors needed, ${this.#numFree} free`);
    const v = this.#view;
    const head = this.#freeHead;
    let d = head;
    let i = 0;
    for (const list of [readable, writable]) {
      const flags = list === writable ? VIRTQ_DESC_F_WRITE : 0;
      for (const b of list) {
        const next = this.#freeNext[d]!;
        const at = this.#desc + 16 * d;
        v.setUint32(at, b.addr % 0x1_0000_0000, true);
        v.setUint32(at + 4, Math.floor(b.addr / 0x1_0000_0000), true);
        v.setUint32(at + 8, b.len, true);
        const last = ++i === n;
        v.setUint16(at + 12, flags | (last ? 0 : VIRTQ_DESC_F_NEXT), true);
        v.setUint16(at + 14, last ? 0 : next, true);
        if (last) this.#freeHead = next;
        d = next;
      }
    }
    this.#numFree -= n;
    this.#count[head] = n;
    this.#tokens[head] = token;
    v.setUint16(this.#avail + AVAIL_RING + 2 * (this.#availIdx & (this.size - 1)), head, true);
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    return head;
  }

  /** Fence, then one aligned 16-bit store of avail.idx. */
  publish(): void {
    if (this.#publishedIdx === this.#availIdx) return;
    fence();
    this.#atomics.store16(this.#avail + AVAIL_IDX, this.#availIdx);
    this.#publishedIdx = this.#availIdx;
  }

  /** Publishes, then whether the backend wants a kick (avail_event, or VIRTQ_USED_F_NO_NOTIFY). */
  needsNotification(): boolean {
    this.publish();
    fence();
    const old = this.#kickedIdx;
    const now = this.#publishedIdx;
    this.#kickedIdx = now;
    if (this.eventIdx) return vringNeedEvent(this.#atomics.load16(this.#used + availEventOffset(this.size)), now, old);
    return (this.#atomics.load16(this.#used + USED_FLAGS) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** The backend's next used element as [token, len], or undefined; its descriptors are freed. */
  getUsed(): { token: T; len: number } | undefined {
    const a = this.#atomics;
    const usedIdx = a.load16(this.#used + USED_IDX);
    if (usedIdx === this.#lastUsed) return undefined;
    if (((usedIdx - this.#lastUsed) & 0xffff) > this.size)
      throw new VirtqueueError("InvalidUsedIdx", `used idx ${usedIdx} is more than ${this.size} past ${this.#lastUsed}`);
    fence();
    const slot = this.#used + USED_RING + 8 * (this.#lastUsed & (this.size - 1));
    const id = a.load32(slot);
    const len = a.load32(slot + 4);
    this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    if (this.eventIdx) a.store16(this.#avail + usedEventOffset(this.size), this.#lastUsed);
    const token = id < this.size ? this.#tokens[id] : undefined;
    if (token === undefined) throw new VirtqueueError("InvalidIndex", `device returned id ${id}, which is not an in-flight chain head`);
    this.#tokens[id] = undefined;
    // Back to the free list: the chain's descriptors, found by their own next links (which we wrote; the
    // count bounds the walk, so a backend that scribbled on the table cannot make us loop).
    const n = this.#count[id]!;
    let d = id;
    for (let k = 1; k < n; k++) d = this.#freeNext[d]!;
    this.#freeNext[d] = this.#freeHead;
    this.#freeHead = id;
    this.#numFree += n;
    return { token, len };
  }

  /** Asks for interrupts (used_event = next, or clears NO_INTERRUPT); whether used entries are pending. */
  enableInterrupts(): boolean {
    if (this.eventIdx) this.#atomics.store16(this.#avail + usedEventOffset(this.size), this.#lastUsed);
    else this.#atomics.store16(this.#avail + AVAIL_FLAGS, 0);
    fence();
    return this.#atomics.load16(this.#used + USED_IDX) !== this.#lastUsed;
  }
}
