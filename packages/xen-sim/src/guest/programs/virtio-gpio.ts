// Guest program "virtio-gpio": lists the lines, drives line `line` high as an output and reads it back.
// args: { base?, irq?, dma?, line?: 3 }
import { VirtioMmioDriver } from "../virtio/driver.js";
import { VIRTIO_GPIO_DIRECTION, VirtioGpioDriver } from "../virtio/gpio.js";
import type { GuestContext } from "../program.js";

export default function gpio(ctx: GuestContext): unknown {
  const a = ctx.args as { base?: string; irq?: number; dma?: "foreign" | "grant"; line?: number };
  const drv = new VirtioMmioDriver(ctx.guest, ctx.vcpu, BigInt(a.base ?? "0x2000000"), {
    ...(a.irq !== undefined ? { irq: a.irq } : {}), dma: a.dma ?? "foreign", log: ctx.log,
  });
  const chip = VirtioGpioDriver.init(drv);
  const names = chip.names();
  ctx.log(`${chip.ngpio} lines: ${names.join(", ")}`);
  const line = a.line ?? 3;
  chip.setDirection(line, VIRTIO_GPIO_DIRECTION.OUT);
  chip.set(line, 1);
  const value = chip.get(line);
  const direction = chip.direction(line);
  ctx.log(`line ${line}: direction ${direction}, value ${value}`);
  let refused = false;
  try {
    chip.set(line + 1, 1); // still an input: the device refuses
  } catch {
    refused = true;
  }
  drv.reset();
  return { ngpio: chip.ngpio, names, direction, value, refusedOnInput: refused };
}
