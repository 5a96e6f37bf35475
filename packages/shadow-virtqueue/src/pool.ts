// A bounded first-fit extent allocator over one queue's shadow buffer pool. Each request gets one
// contiguous extent (so one free returns it whole); free extents are kept sorted and coalesced, so the pool
// does not fragment into pieces smaller than its requests for long. All bookkeeping is outside shared
// memory: the backend can scribble over the pool's bytes but never over the allocator.

/** An allocated extent: `len` bytes at `offset` into the pool. */
export interface Extent {
  readonly offset: number;
  readonly len: number;
}

export class ExtentPool {
  readonly size: number;
  readonly #align: number;
  /** Free extents, sorted by offset, never adjacent (coalesced). */
  #free: { offset: number; len: number }[];
  #used = 0;

  /**
   * @param size pool bytes
   * @param align every extent starts and ends on this boundary (a power of two)
   */
  constructor(size: number, align = 64) {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`pool size ${size} must be a positive integer`);
    if (!Number.isInteger(align) || align <= 0 || (align & (align - 1)) !== 0) throw new RangeError(`alignment ${align} is not a power of two`);
    this.size = size - (size % align);
    this.#align = align;
    this.#free = [{ offset: 0, len: this.size }];
  }

  /** Bytes currently allocated (rounded to the alignment). */
  get used(): number {
    return this.#used;
  }

  /** The largest request that could be satisfied now. */
  get largestFree(): number {
    let m = 0;
    for (const f of this.#free) m = Math.max(m, f.len);
    return m;
  }

  /** An extent of at least `len` bytes, or undefined if no free extent is large enough now. */
  alloc(len: number): Extent | undefined {
    if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`extent length ${len} must be a non-negative integer`);
    const want = Math.max(this.#align, Math.ceil(len / this.#align) * this.#align);
    for (let i = 0; i < this.#free.length; i++) {
      const f = this.#free[i]!;
      if (f.len < want) continue;
      const offset = f.offset;
      if (f.len === want) this.#free.splice(i, 1);
      else {
        f.offset += want;
        f.len -= want;
      }
      this.#used += want;
      return { offset, len: want };
    }
    return undefined;
  }

  /** Returns an extent (from `alloc`, exactly once). */
  free(e: Extent): void {
    const list = this.#free;
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.offset < e.offset) lo = mid + 1;
      else hi = mid;
    }
    const prev = list[lo - 1];
    const next = list[lo];
    if ((prev && prev.offset + prev.len > e.offset) || (next && e.offset + e.len > next.offset) || e.offset + e.len > this.size)
      throw new RangeError(`extent ${e.offset}+${e.len} is not allocated`);
    this.#used -= e.len;
    if (prev && prev.offset + prev.len === e.offset) {
      prev.len += e.len;
      if (next && prev.offset + prev.len === next.offset) {
        prev.len += next.len;
        list.splice(lo, 1);
      }
    } else if (next && e.offset + e.len === next.offset) {
      next.offset = e.offset;
      next.len += e.len;
    } else list.splice(lo, 0, { offset: e.offset, len: e.len });
  }

  /** Frees everything. */
  reset(): void {
    this.#free = [{ offset: 0, len: this.size }];
    this.#used = 0;
  }
}
