// Guest program for the shadow-mode simulator test: virtio-blk served by qemu-storage-daemon through the
// bridge's shadow rings. Reads known sectors of the image (sector i = "VUSECTOR" + u64le(i) + 496 x
// byte((7i+1) & 0xff)), writes `blocks` 4 KiB blocks with distinct payloads and reads each one back, asks
// for the device ID and flushes. args: { base, irq, dma: "foreign" | "grant", blocks, first }
import { VirtioMmioDriver, VirtioBlkDriver } from "@xen-vhost/xen-sim/guest";

function sectorContent(i) {
  const s = new Uint8Array(512);
  s.set(new TextEncoder().encode("VUSECTOR"), 0);
  new DataView(s.buffer).setBigUint64(8, BigInt(i), true);
  s.fill((7 * i + 1) & 0xff, 16);
  return s;
}

function payload(i, salt) {
  const b = new Uint8Array(4096);
  const v = new DataView(b.buffer);
  for (let o = 0; o < 4096; o += 4) v.setUint32(o, (i * 0x9e3779b1 + o * 0x85ebca6b + salt) >>> 0, true);
  return b;
}

const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

export default function guestBlk(ctx) {
  const a = ctx.args;
  const drv = new VirtioMmioDriver(ctx.guest, ctx.vcpu, BigInt(a.base), { irq: a.irq, dma: a.dma, log: ctx.log });
  const disk = VirtioBlkDriver.init(drv);
  ctx.log(`capacity ${disk.capacity} sectors (${a.dma})`);
  for (const s of [0, 1, 85_000, 89_999]) {
    if (!same(disk.read(BigInt(s), 1), sectorContent(s))) throw new Error(`sector ${s} is not the image's`);
  }
  const salt = a.dma === "grant" ? 77 : 0;
  for (let i = 0; i < a.blocks; i++) disk.write(BigInt((a.first + i) * 8), payload(i, salt));
  for (let i = 0; i < a.blocks; i++) {
    if (!same(disk.read(BigInt((a.first + i) * 8), 8), payload(i, salt))) throw new Error(`block ${i} differs after the round trip`);
  }
  const id = disk.id();
  disk.flush();
  drv.reset();
  return { capacity: disk.capacity.toString(), verified: a.blocks, id, interrupts: drv.interrupts };
}
