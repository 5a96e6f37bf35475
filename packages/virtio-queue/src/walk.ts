// The validating split-ring chain walk (virtio 1.2 2.7.5), shared by `Queue.pop()`, `Queue.chainAt()` and
// `walkChain()` (vhost-user inflight resubmission walks heads that come from the inflight area, not from
// the avail ring). Everything read here is guest-controlled; a chain is returned only once every check
// passed: indices inside the (indirect) table, no revisits, at most one indirect table and no nesting, no
// INDIRECT|NEXT, readable buffers before writable ones, every buffer inside guest memory.
//
// Hot-path shape (it runs once per request): the descriptor table is read in place through a DataView over
// the region's mapping when the caller has one (no 16-byte copy and no GuestMemory lookup per descriptor),
// each field exactly once into a local (the guest may rewrite the table meanwhile; what was validated is
// what is returned). An indirect table is copied once, whole, into a reused scratch buffer with one
// bounds-checked read. Loop detection uses generation-stamped marks, so a walk allocates only the returned
// chain: its Descriptor objects and its array.
import { GuestAddress, GuestMemoryError, type GuestAddressLike, type GuestMemory } from "@xen-vhost/vm-memory";
import { DescriptorChain } from "./chain.js";
import { MAX_QUEUE_SIZE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "./defs.js";
import { Descriptor } from "./descriptor.js";
import { VirtqueueError, type VirtqueueErrorKind } from "./error.js";
import { GuestPart } from "./guest-part.js";

/** Highest `hi` word of a descriptor address whose value is still a safe double (2^53). */
const SAFE_HI = 0x20_0000;
const TWO_32 = 0x1_0000_0000;

function fail(head: number, kind: VirtqueueErrorKind, msg: string, cause?: unknown): never {
  throw new VirtqueueError(kind, `chain ${head}: ${msg}`, cause === undefined ? { head } : { head, cause });
}

function memFail(head: number, what: string, e: unknown): never {
  if (e instanceof GuestMemoryError) fail(head, "GuestMemory", `${what}: ${e.message}`, e);
  throw e;
}

/** Walks chains; one instance per queue (its scratch state is reused, walks are synchronous). */
export class ChainWalker {
  #visited = new Uint32Array(0);
  #generation = 0;
  /** One main-table descriptor when the table has no in-place view. */
  readonly #desc = new Uint8Array(16);
  readonly #descView = new DataView(this.#desc.buffer);
  /** Indirect tables are copied here. */
  #scratch = new Uint8Array(256);
  #scratchView = new DataView(this.#scratch.buffer);

  #newGeneration(entries: number): void {
    if (this.#visited.length < entries) this.#visited = new Uint32Array(Math.max(entries, this.#visited.length * 2));
    this.#generation = (this.#generation + 1) >>> 0;
    if (this.#generation === 0) {
      this.#visited.fill(0);
      this.#generation = 1;
    }
  }

  /** Scratch of at least `n` bytes (grows, never shrinks: indirect tables are copied here). */
  #scratchFor(n: number): DataView {
    if (this.#scratch.length < n) {
      this.#scratch = new Uint8Array(Math.max(n, this.#scratch.length * 2));
      this.#scratchView = new DataView(this.#scratch.buffer);
    }
    return this.#scratchView;
  }

  /**
   * The validated chain starting at `head` in the descriptor table `table` of `size` entries.
   * @param tableView the table's bytes (`size * 16`) read in place, or undefined to read through `mem`.
   * @throws VirtqueueError carrying `head`: InvalidIndex, DescriptorLoop, ChainTooLong, InvalidIndirect,
   *   ReadAfterWrite, OutOfBounds, GuestMemory.
   */
  walk(
    mem: GuestMemory,
    table: GuestPart,
    tableView: DataView | undefined,
    size: number,
    head: number,
    indirectOk: boolean,
    maxLen: number,
  ): DescriptorChain {
    if (!Number.isInteger(head) || head < 0 || head >= size) fail(head, "InvalidIndex", `head index ${head} outside a ${size}-entry table`);
    const descs: Descriptor[] = [];
    let idx = head;
    let seenWrite = false;
    this.#newGeneration(size);
    const visited = this.#visited;
    for (;;) {
      if (idx >= size) fail(head, "InvalidIndex", `next index ${idx} outside a ${size}-entry table`);
      const gen = this.#generation;
      if (visited[idx] === gen) fail(head, "DescriptorLoop", `descriptor ${idx} visited twice`);
      visited[idx] = gen;
      let v: DataView;
      let o: number;
      if (tableView !== undefined) {
        v = tableView;
        o = idx * 16;
      } else {
        // The main table without an in-place view (on-demand grant memory, a table across regions).
        const at = table.addr(idx * 16);
        v = this.#descView;
        try {
          mem.readInto(at, this.#desc);
        } catch (e) {
          memFail(head, `descriptor at 0x${at.toString(16)}`, e);
        }
        o = 0;
      }
      // virtio 1.2 2.7.5 struct virtq_desc: le64 addr, le32 len, le16 flags, le16 next; each read once.
      const lo = v.getUint32(o, true);
      const hi = v.getUint32(o + 4, true);
      const len = v.getUint32(o + 8, true);
      const flags = v.getUint16(o + 12, true);
      const next = v.getUint16(o + 14, true);
      // The double form takes GuestMemory's fast path; the bigint only for addresses at or above 2^53.
      const addr: number | bigint = hi < SAFE_HI ? hi * TWO_32 + lo : (BigInt(hi) << 32n) | BigInt(lo);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        // virtio 1.2 2.7.5.3.1: one table per descriptor, no nesting, INDIRECT and NEXT not both.
        if (!indirectOk) fail(head, "InvalidIndirect", "indirect descriptor but VIRTIO_RING_F_INDIRECT_DESC not negotiated");
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0) fail(head, "InvalidIndirect", "indirect descriptor with VIRTQ_DESC_F_NEXT");
        if (len === 0 || len % 16 !== 0) fail(head, "InvalidIndirect", `indirect table length ${len} is not a positive multiple of 16`);
        const n = len / 16;
        if (n > 65536) fail(head, "InvalidIndirect", `indirect table of ${n} entries (next is 16-bit)`);
        if (descs.length + n > maxLen) fail(head, "ChainTooLong", `indirect table of ${n} descriptors exceeds ${maxLen}`);
        if (!this.#inMemory(mem, addr, len, head)) fail(head, "OutOfBounds", `indirect table 0x${addr.toString(16)} (+${len}) outside guest memory`);
        // One bounds-checked copy of the whole table (any region kind, across adjacent regions too).
        const view = this.#scratchFor(len);
        try {
          mem.readInto(addr, this.#scratch.subarray(0, len));
        } catch (e) {
          memFail(head, `indirect table at 0x${addr.toString(16)}`, e);
        }
        this.#newGeneration(n);
        return this.#walkIndirect(mem, head, view, n, descs, seenWrite, maxLen);
      }
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) seenWrite = true;
      else if (seenWrite) fail(head, "ReadAfterWrite", `device-readable descriptor ${idx} after a device-writable one`);
      if (len > 0 && !this.#inMemory(mem, addr, len, head))
        fail(head, "OutOfBounds", `buffer 0x${addr.toString(16)} (+${len}) of descriptor ${idx} outside guest memory`);
      descs.push(new Descriptor(typeof addr === "number" ? BigInt(addr) : addr, len, flags, next));
      if (descs.length > maxLen) fail(head, "ChainTooLong", `more than ${maxLen} descriptors`);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      idx = next;
    }
    return new DescriptorChain(mem, head, descs, false);
  }

  /** The rest of a chain inside an indirect table copied to `view` (`entries` entries, walked from 0). */
  #walkIndirect(
    mem: GuestMemory,
    head: number,
    view: DataView,
    entries: number,
    descs: Descriptor[],
    seenWrite: boolean,
    maxLen: number,
  ): DescriptorChain {
    const visited = this.#visited;
    const gen = this.#generation;
    let idx = 0;
    for (;;) {
      if (idx >= entries) fail(head, "InvalidIndex", `next index ${idx} outside a ${entries}-entry indirect table`);
      if (visited[idx] === gen) fail(head, "DescriptorLoop", `descriptor ${idx} visited twice`);
      visited[idx] = gen;
      const o = idx * 16;
      const lo = view.getUint32(o, true);
      const hi = view.getUint32(o + 4, true);
      const len = view.getUint32(o + 8, true);
      const flags = view.getUint16(o + 12, true);
      const next = view.getUint16(o + 14, true);
      const addr: number | bigint = hi < SAFE_HI ? hi * TWO_32 + lo : (BigInt(hi) << 32n) | BigInt(lo);
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) fail(head, "InvalidIndirect", "indirect descriptor inside an indirect table");
      if ((flags & VIRTQ_DESC_F_WRITE) !== 0) seenWrite = true;
      else if (seenWrite) fail(head, "ReadAfterWrite", `device-readable descriptor ${idx} after a device-writable one`);
      if (len > 0 && !this.#inMemory(mem, addr, len, head))
        fail(head, "OutOfBounds", `buffer 0x${addr.toString(16)} (+${len}) of descriptor ${idx} outside guest memory`);
      descs.push(new Descriptor(typeof addr === "number" ? BigInt(addr) : addr, len, flags, next));
      if (descs.length > maxLen) fail(head, "ChainTooLong", `more than ${maxLen} descriptors`);
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      idx = next;
    }
    return new DescriptorChain(mem, head, descs, true);
  }

  #inMemory(mem: GuestMemory, addr: number | bigint, len: number, head: number): boolean {
    try {
      return mem.checkRange(addr, len);
    } catch (e) {
      return memFail(head, "descriptor buffer", e);
    }
  }
}

export interface WalkChainOptions {
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated (default true). */
  indirect?: boolean;
  /** Most descriptors in one chain, indirect entries included (default max(size, 1024), as Queue). */
  maxChainLength?: number;
}

/** For walkChain(): walks are synchronous, so one walker's scratch state serves every call. */
let sharedWalker: ChainWalker | undefined;

/**
 * The validated chain starting at descriptor `head` of the `size`-entry table at `descTable`, for code that
 * has a head but no configured `Queue` (with one, use `Queue.chainAt(head)`). Same checks as `Queue.pop()`;
 * the table is read through `mem` (bounds-checked per descriptor).
 * @throws RangeError for a `size` that is not 1..32768; VirtqueueError carrying `head`: `InvalidIndex`,
 *   `DescriptorLoop`, `ChainTooLong`, `InvalidIndirect`, `ReadAfterWrite`, `OutOfBounds`, `GuestMemory`.
 */
export function walkChain(mem: GuestMemory, descTable: GuestAddressLike, size: number, head: number, options: WalkChainOptions = {}): DescriptorChain {
  if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE) throw new RangeError(`queue size ${size} is not 1..${MAX_QUEUE_SIZE}`);
  const max = options.maxChainLength;
  if (max !== undefined && (!Number.isInteger(max) || max < 1)) throw new RangeError(`maxChainLength ${max} must be a positive integer`);
  sharedWalker ??= new ChainWalker();
  const table = new GuestPart(GuestAddress.from(descTable).value, size * 16);
  return sharedWalker.walk(mem, table, undefined, size, head, options.indirect ?? true, max ?? Math.max(size, 1024));
}
