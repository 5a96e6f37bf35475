// Guest program "virtio-probe": probes a virtio-mmio window the way Linux's virtio_mmio_probe does and
// returns what it found. args: { base?: "0x2000000" }
import { VirtioMmioDriver } from "../virtio/driver.js";
import type { GuestContext } from "../program.js";

export default function probe(ctx: GuestContext): unknown {
  const { base = "0x2000000" } = ctx.args as { base?: string };
  const drv = new VirtioMmioDriver(ctx.guest, ctx.vcpu, BigInt(base), { log: ctx.log });
  const id = drv.probe();
  const features = drv.negotiate(0n);
  drv.reset();
  ctx.log(`reset: status ${drv.status()}`);
  return { ...id, features: `0x${features.toString(16)}` };
}
