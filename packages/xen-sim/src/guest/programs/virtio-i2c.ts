// Guest program "virtio-i2c": writes a few bytes to the EEPROM at 0x50, reads them back, and probes an
// address with nothing behind it (i2cdetect-style zero-length read). args: { base?, irq?, dma? }
import { SimError } from "../../error.js";
import { VirtioMmioDriver } from "../virtio/driver.js";
import { VirtioI2cDriver } from "../virtio/i2c.js";
import type { GuestContext } from "../program.js";

export default function i2c(ctx: GuestContext): unknown {
  const a = ctx.args as { base?: string; irq?: number; dma?: "foreign" | "grant" };
  const drv = new VirtioMmioDriver(ctx.guest, ctx.vcpu, BigInt(a.base ?? "0x2000000"), {
    ...(a.irq !== undefined ? { irq: a.irq } : {}), dma: a.dma ?? "foreign", log: ctx.log,
  });
  const bus = VirtioI2cDriver.init(drv);
  const w = bus.transfer(0x50, { write: Uint8Array.of(0x10, 0xde, 0xad, 0xbe, 0xef) });
  ctx.log(`write 4 bytes at 0x10 of 0x50: ${w.ok ? "ack" : "nak"}`);
  bus.transfer(0x50, { write: Uint8Array.of(0x10) });
  const r = bus.transfer(0x50, { read: 4 });
  const hex = Buffer.from(r.data).toString("hex");
  ctx.log(`read back: ${hex}`);
  if (hex !== "deadbeef") throw new SimError("GuestFailed", `read back ${hex}`);
  const probe = bus.transfer(0x23, { read: 0 });
  ctx.log(`probe 0x23: ${probe.ok ? "ack" : "nak"}`);
  drv.reset();
  return { readBack: hex, probe23: probe.ok };
}
