// Guest program "mmio-loop": `count` reads of `addr`, timed inside the guest (the ioreq round trip as the
// vCPU sees it). args: { count, addr, size? }
import type { GuestContext } from "../program.js";

export default function mmioLoop(ctx: GuestContext): unknown {
  const { count = 10000, addr = "0x2000000", size = 4 } = ctx.args as { count?: number; addr?: string; size?: 1 | 2 | 4 | 8 };
  const a = BigInt(addr);
  ctx.vcpu.read(a, size); // warm up: routes fetched, peer mapped
  const t0 = process.hrtime.bigint();
  let last = 0n;
  for (let i = 0; i < count; i++) last = ctx.vcpu.read(a, size);
  const ns = Number(process.hrtime.bigint() - t0);
  return { count, nsPerIoreq: Math.round(ns / count), last: `0x${last.toString(16)}` };
}
