// Guest program "virtio-fs": brings a virtio-fs device up (tag, FUSE_INIT) and reads a file through FUSE
// LOOKUP / OPEN / READ / RELEASE / FORGET.
// args: { base?: "0x2000000", irq?: 33, dma?: "foreign" | "grant", path?: "hello.txt" }
import { VirtioMmioDriver } from "../virtio/driver.js";
import { VirtioFsDriver } from "../virtio/fs.js";
import type { GuestContext } from "../program.js";

export default function fs(ctx: GuestContext): unknown {
  const a = ctx.args as { base?: string; irq?: number; dma?: "foreign" | "grant"; path?: string };
  const drv = new VirtioMmioDriver(ctx.guest, ctx.vcpu, BigInt(a.base ?? "0x2000000"), {
    ...(a.irq !== undefined ? { irq: a.irq } : {}), dma: a.dma ?? "foreign", log: ctx.log,
  });
  const fsd = VirtioFsDriver.init(drv);
  ctx.log(`virtio-fs: tag "${fsd.tag}", ${fsd.numRequestQueues} request queue(s), FUSE ${fsd.session.major}.${fsd.session.minor}`);
  const path = a.path ?? "hello.txt";
  const content = new TextDecoder().decode(fsd.readFile(path));
  ctx.log(`read ${path}: ${content.length} bytes`);
  drv.reset();
  return { tag: fsd.tag, fuse: `${fsd.session.major}.${fsd.session.minor}`, content, interrupts: drv.interrupts };
}
