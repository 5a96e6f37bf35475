// Guest program "virtio-net": brings a virtio-net device up, sends frames and expects each back on the
// receive queue (a loopback or echoing backend such as testpmd in io/macswap forwarding).
// args: { base?: "0x2000000", irq?: 33, dma?: "foreign" | "grant", frames?: 4, length?: 64, macswap?: false }
import { SimError } from "../../error.js";
import { VirtioMmioDriver } from "../virtio/driver.js";
import { VirtioNetDriver } from "../virtio/net.js";
import type { GuestContext } from "../program.js";

/** A broadcast test frame from `src`: ethertype 0x88b5 (IEEE local experimental), payload seq-dependent. */
export function testFrame(src: Uint8Array, seq: number, length: number): Uint8Array {
  const f = new Uint8Array(length);
  f.fill(0xff, 0, 6);
  f.set(src, 6);
  f.set([0x88, 0xb5], 12);
  for (let i = 14; i < length; i++) f[i] = (i + seq * 31) & 0xff;
  return f;
}

export default function net(ctx: GuestContext): unknown {
  const a = ctx.args as { base?: string; irq?: number; dma?: "foreign" | "grant"; frames?: number; length?: number; macswap?: boolean };
  const drv = new VirtioMmioDriver(ctx.guest, ctx.vcpu, BigInt(a.base ?? "0x2000000"), {
    ...(a.irq !== undefined ? { irq: a.irq } : {}), dma: a.dma ?? "foreign", log: ctx.log,
  });
  const nic = VirtioNetDriver.init(drv);
  const mac = nic.mac ?? new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
  ctx.log(`virtio-net: mac ${nic.macString ?? "(none offered)"}, link ${nic.linkUp ? "up" : "down"}`);
  for (let seq = 0; seq < (a.frames ?? 4); seq++) {
    const frame = testFrame(mac, seq, a.length ?? 64);
    nic.send(frame);
    const got = nic.receive();
    const expected = a.macswap ? Uint8Array.from([...frame.subarray(6, 12), ...frame.subarray(0, 6), ...frame.subarray(12)]) : frame;
    if (Buffer.compare(got.frame, expected) !== 0) throw new SimError("GuestFailed", `frame ${seq} came back different`);
    ctx.log(`frame ${seq}: ${frame.length} bytes sent and received back`);
  }
  drv.reset();
  return { mac: nic.macString ?? null, tx: nic.txFrames, rx: nic.rxFrames, interrupts: drv.interrupts };
}
