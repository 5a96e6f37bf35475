// A bump allocator over guest RAM for rings and buffers (the simulated guest's "kmalloc").
import { SimError } from "../../error.js";
import { GUEST_RAM0_BASE } from "../../layout.js";
import type { Guest } from "../guest.js";

/** A bump allocator over guest RAM for rings and buffers (the simulated guest's "kmalloc"). */
export class GuestAllocator {
  #next: bigint;
  readonly #end: bigint;

  constructor(start: bigint, end: bigint) {
    this.#next = start;
    this.#end = end;
  }

  /** From 1 MiB into RAM0 to its end. */
  static forGuest(guest: Guest): GuestAllocator {
    const ram0 = guest.info.ram[0]!;
    return new GuestAllocator(GUEST_RAM0_BASE + 0x10_0000n, ram0.base + BigInt(ram0.size));
  }

  alloc(len: number, align = 16): bigint {
    const a = BigInt(align);
    const at = (this.#next + a - 1n) & ~(a - 1n);
    if (at + BigInt(len) > this.#end) throw new SimError("InvalidArgument", `guest allocator out of memory (${len} bytes)`);
    this.#next = at + BigInt(len);
    return at;
  }
}
