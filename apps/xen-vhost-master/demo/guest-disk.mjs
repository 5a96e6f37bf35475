// Demo guest program: what a Linux guest's virtio_blk does for `dd if=/dev/vda bs=512 count=2` and a
// write + read-back of one 4 KiB block. The image qemu-storage-daemon serves has known sectors
// (sector i = "VUSECTOR" + u64le(i) + 496 x byte((7i+1) & 0xff)), so the guest can say what it read.
// args: { base, irq }
import { VirtioMmioDriver, VirtioBlkDriver } from "@xen-vhost/xen-sim/guest";

const hex = (b) => Buffer.from(b).toString("hex").replace(/(..)/g, "$1 ").trim();

export default function main({ guest, vcpu, args, log }) {
  const drv = new VirtioMmioDriver(guest, vcpu, BigInt(args.base), { irq: args.irq, log });
  const disk = VirtioBlkDriver.init(drv);
  log(`virtio-blk: capacity ${disk.capacity} sectors (${(Number(disk.capacity) * 512) >> 20} MiB)`);
  const sectors = [];
  for (const s of [0n, 1n, disk.capacity - 1n]) {
    const d = disk.read(s, 1);
    const tag = new TextDecoder().decode(d.subarray(0, 8));
    const n = new DataView(d.buffer, d.byteOffset).getBigUint64(8, true);
    log(`sector ${s}: ${hex(d.subarray(0, 20))} ... ("${tag}" #${n})`);
    sectors.push({ sector: s.toString(), tag, number: n.toString(), fill: d[16] });
  }
  const block = new Uint8Array(4096).map((_, i) => (i * 31 + 7) & 0xff);
  disk.write(64n, block);
  const back = disk.read(64n, 8);
  const same = back.every((x, i) => x === block[i]);
  log(`wrote 4 KiB at sector 64 and read it back: ${same ? "identical" : "DIFFERENT"}`);
  disk.flush();
  drv.reset();
  return { sectors, roundTrip: same, interrupts: drv.interrupts };
}
