// Guest program "mmio": performs a list of MMIO accesses and returns what each read returned.
// args: { accesses: [{ op: "r" | "w", addr: "0x..." | number, size?: 1|2|4|8, value?: "0x..." | number }] }
import type { GuestContext } from "../program.js";

interface Access {
  op: "r" | "w";
  addr: string | number;
  size?: 1 | 2 | 4 | 8;
  value?: string | number;
}

export default function mmio(ctx: GuestContext): unknown {
  const { accesses } = ctx.args as { accesses: Access[] };
  const out: (string | null)[] = [];
  for (const a of accesses) {
    const addr = BigInt(a.addr);
    const size = a.size ?? 4;
    if (a.op === "r") {
      const v = ctx.vcpu.read(addr, size);
      ctx.log(`read${size * 8} 0x${addr.toString(16)} -> 0x${v.toString(16)}`);
      out.push(`0x${v.toString(16)}`);
    } else {
      const v = BigInt(a.value ?? 0);
      ctx.vcpu.write(addr, size, v);
      ctx.log(`write${size * 8} 0x${addr.toString(16)} <- 0x${v.toString(16)}`);
      out.push(null);
    }
  }
  return out;
}
