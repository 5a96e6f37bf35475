// Guest program for bench/net.mjs: brings virtio-net up, then times `frames` send + receive round trips.
import { VirtioMmioDriver, VirtioNetDriver } from "@xen-vhost/xen-sim/guest";

export default function main({ guest, vcpu, args }) {
  const drv = new VirtioMmioDriver(guest, vcpu, 0x2000000n, { irq: 33, dma: args.dma });
  const nic = VirtioNetDriver.init(drv);
  const frame = new Uint8Array(args.length ?? 64).fill(0xab);
  frame.fill(0xff, 0, 6);
  for (let i = 0; i < 20; i++) (nic.send(frame), nic.receive()); // warm-up
  const before = { ...vcpu.counters };
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < args.frames; i++) {
    nic.send(frame);
    nic.receive();
  }
  const ns = Number(process.hrtime.bigint() - t0);
  drv.reset();
  return { frames: args.frames, usPerFrame: ns / 1000 / args.frames, mmioPerFrame: (vcpu.counters.ioreqs - before.ioreqs) / args.frames };
}
