// Guest program "virtio-blk": brings a virtio-blk device up, writes a pattern, reads it back, flushes.
// args: { base?: "0x2000000", irq?: 33, dma?: "foreign" | "grant", sector?: 8, sectors?: 4 }
import { SimError } from "../../error.js";
import { VirtioMmioDriver } from "../virtio/driver.js";
import { VirtioBlkDriver } from "../virtio/blk.js";
import type { GuestContext } from "../program.js";

export default function blk(ctx: GuestContext): unknown {
  const a = ctx.args as { base?: string; irq?: number; dma?: "foreign" | "grant"; sector?: number; sectors?: number };
  const drv = new VirtioMmioDriver(ctx.guest, ctx.vcpu, BigInt(a.base ?? "0x2000000"), {
    ...(a.irq !== undefined ? { irq: a.irq } : {}), dma: a.dma ?? "foreign", log: ctx.log,
  });
  const disk = VirtioBlkDriver.init(drv);
  ctx.log(`capacity ${disk.capacity} sectors, id "${disk.id()}"`);
  const sector = BigInt(a.sector ?? 8);
  const n = a.sectors ?? 4;
  const pattern = new Uint8Array(n * 512).map((_, i) => (i * 7 + 3) & 0xff);
  disk.write(sector, pattern);
  ctx.log(`wrote ${n} sectors at ${sector}`);
  const back = disk.read(sector, n);
  if (!back.every((b, i) => b === pattern[i])) throw new SimError("GuestFailed", "read back differs from what was written");
  ctx.log(`read ${n} sectors back: match`);
  disk.flush();
  ctx.log("flush ok");
  drv.reset();
  return { capacity: disk.capacity.toString(), sectors: n, verified: true, interrupts: drv.interrupts };
}
