// A ring part's base address in the form GuestMemory takes fastest: a double when the whole part lies below
// 2^53 (all RAM), a bigint otherwise (Xen grant DMA addresses set bit 63). `addr(off)` does the one
// addition either way, so ring code never mixes the two.
const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);

export class GuestPart {
  readonly #low: boolean;
  readonly #n: number;
  readonly #b: bigint;

  /** The part `[base, base + len)`. */
  constructor(base: bigint, len: number) {
    this.#b = base;
    this.#low = base + BigInt(len) <= MAX_SAFE_BIG;
    this.#n = this.#low ? Number(base) : 0;
  }

  /** The guest address `off` bytes into the part. */
  addr(off: number): number | bigint {
    return this.#low ? this.#n + off : this.#b + BigInt(off);
  }
}

/** `a + off` for an address in either form. */
export function addrAdd(a: number | bigint, off: number): number | bigint {
  return typeof a === "number" ? a + off : a + BigInt(off);
}
