// The guest's drivers treat the device as untrusted, as Linux's do: a used length outside the buffer, a FUSE
// reply for another request or longer than its buffer fails the guest program with a message naming the bad
// value, instead of reading past a buffer or mixing up replies.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Xen } from "@xen-vhost/xen-sys";
import type { Queue } from "@xen-vhost/virtio-queue";
import { FsDevice, NetDevice, XenVirtioMmioDevice, startSimulator, type Simulator } from "../src/index.js";

const BASE = 0x2000000n;
const IRQ = 33;
type Chain = NonNullable<ReturnType<Queue["pop"]>>;

/** Completes every receive buffer with a 5-byte length: shorter than the virtio_net_hdr_v1 alone. */
class ShortRxNet extends NetDevice {
  override notify(queue: number): void {
    const tx = this.queues[1];
    if (queue === 1 && tx) for (let c = tx.pop(); c; c = tx.pop()) tx.addUsed(c.head, 0);
    const rx = this.queues[0];
    const c = queue === 1 ? rx?.pop() : undefined;
    if (rx && c) rx.addUsed(c.head, 5);
    this.signal();
  }
}

/** Answers FUSE requests with the header of another request (unique + 7), or a length past the buffer. */
class LyingFs extends FsDevice {
  mode: "unique" | "length" = "unique";
  protected override handle(chain: Chain): number {
    const req = chain.readAll();
    const unique = new DataView(req.buffer, req.byteOffset).getBigUint64(8, true);
    const out = new Uint8Array(16 + 64);
    const v = new DataView(out.buffer);
    v.setUint32(0, this.mode === "length" ? 1 << 20 : out.length, true);
    v.setBigUint64(8, this.mode === "unique" ? unique + 7n : unique, true);
    return chain.writeAll(out.subarray(0, Math.min(out.length, chain.writableLength)));
  }
}

describe("guest drivers against a misbehaving device", () => {
  let sim: Simulator;
  let xen: Xen;
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({ domains: [{ domid: 1, ram: 16 << 20 }] });
    xen = Xen.open({ transport: sim.connect() });
    sim.unpause(1);
  });
  afterEach(async () => {
    xen.transport.close();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  it("virtio-net: a receive length shorter than the header is refused", async () => {
    using _dm = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (m, s) => new ShortRxNet(m, s) });
    await expect(sim.startGuest({ domid: 1, program: "virtio-net", args: { irq: IRQ, frames: 1 } }).result).rejects.toThrow(/receive buffer returned with length 5 \(buffer 2048\)/);
  });

  it("virtio-fs: a reply for another request, and a reply longer than its buffer, are refused", async () => {
    let fs: LyingFs | undefined;
    using _dm = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (m, s) => (fs = new LyingFs(m, s, "t", {})) });
    await expect(sim.startGuest({ domid: 1, program: "virtio-fs", args: { irq: IRQ } }).result).rejects.toThrow(/FUSE reply for unique 8, expected 1/);
    fs!.mode = "length";
    await expect(sim.startGuest({ domid: 1, program: "virtio-fs", args: { irq: IRQ } }).result).rejects.toThrow(/FUSE reply length 1048576/);
  });
});
