// Guest program "virtio-rng": brings a virtio-rng device up and reads random bytes from it.
// args: { base?: "0x2000000", irq?: 33, dma?: "foreign" | "grant", reads?: 4, bytes?: 32 }
import { VirtioMmioDriver } from "../virtio/driver.js";
import { VirtioRngDriver } from "../virtio/rng.js";
import type { GuestContext } from "../program.js";

export default function rng(ctx: GuestContext): unknown {
  const a = ctx.args as { base?: string; irq?: number; dma?: "foreign" | "grant"; reads?: number; bytes?: number };
  const drv = new VirtioMmioDriver(ctx.guest, ctx.vcpu, BigInt(a.base ?? "0x2000000"), {
    ...(a.irq !== undefined ? { irq: a.irq } : {}), dma: a.dma ?? "foreign", log: ctx.log,
  });
  const rngDrv = VirtioRngDriver.init(drv);
  const samples: string[] = [];
  for (let i = 0; i < (a.reads ?? 4); i++) {
    const bytes = rngDrv.read(a.bytes ?? 32);
    const hex = Buffer.from(bytes).toString("hex");
    ctx.log(`hwrng: ${bytes.length} bytes: ${hex.slice(0, 32)}...`);
    samples.push(hex);
  }
  drv.reset();
  ctx.log("device reset");
  return { samples, interrupts: drv.interrupts };
}
