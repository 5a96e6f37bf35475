import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Xen } from "@xen-vhost/xen-sys";
import { BlkDevice, FsDevice, GpioDevice, I2cDevice, NetDevice, RngDevice, XenVirtioMmioDevice, startSimulator, type Simulator } from "../src/index.js";

const BASE = 0x2000000n;
const IRQ = 33;

describe("guest virtio-mmio drivers against a device model on xen-sys (foreign mode)", () => {
  let sim: Simulator;
  let xen: Xen;
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({ domains: [{ domid: 1, ram: 16 << 20 }] });
    xen = Xen.open({ transport: sim.connect() });
  });
  afterEach(async () => {
    xen.transport.close();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  it("probes the device and negotiates VERSION_1", async () => {
    using dev = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (m, s) => new RngDevice(m, s) });
    sim.unpause(1);
    const r = await sim.startGuest({ domid: 1, program: "virtio-probe" }).result;
    expect(r).toEqual({ magic: 0x74726976, version: 2, deviceId: 4, vendorId: dev.transport.vendorId, features: "0x100000000" });
    expect(dev.transport.status).toBe(0);
  });

  it("reads random bytes through virtio-rng with interrupts (set_irq_level, InterruptStatus, ACK)", async () => {
    let rng: RngDevice | undefined;
    using dev = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (m, s) => (rng = new RngDevice(m, s)) });
    sim.unpause(1);
    const g = sim.startGuest({ domid: 1, program: "virtio-rng", args: { irq: IRQ, reads: 3, bytes: 64 } });
    const r = (await g.result) as { samples: string[]; interrupts: number };
    expect(r.samples).toHaveLength(3);
    for (const s of r.samples) expect(s).toMatch(/^[0-9a-f]{128}$/);
    expect(new Set(r.samples).size).toBe(3);
    expect(r.interrupts).toBe(3);
    expect(rng!.served).toBe(3);
    expect(dev.transport.counters.notifies).toBe(3);
    // the level was dropped when the guest acknowledged the last interrupt
    expect(sim.irqLevel(1, IRQ)).toBe(false);
    expect(g.logs.some((l) => l.startsWith("queue 0: 64 entries"))).toBe(true);
  });

  it("writes and reads back sectors through virtio-blk", async () => {
    let blk: BlkDevice | undefined;
    using _dev = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (m, s) => (blk = new BlkDevice(m, s, 1024)) });
    sim.unpause(1);
    const r = await sim.startGuest({ domid: 1, program: "virtio-blk", args: { irq: IRQ, sector: 10, sectors: 8 } }).result;
    expect(r).toMatchObject({ capacity: "1024", sectors: 8, verified: true });
    expect(blk!.disk[10 * 512 + 1]).toBe(10);
  });

  it("talks to an I2C target through virtio-i2c (ack, read back, nak on an empty address)", async () => {
    let i2c: I2cDevice | undefined;
    using _dev = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (m, s) => (i2c = new I2cDevice(m, s)) });
    sim.unpause(1);
    const r = await sim.startGuest({ domid: 1, program: "virtio-i2c", args: { irq: IRQ } }).result;
    expect(r).toEqual({ readBack: "deadbeef", probe23: false });
    expect([...i2c!.eeprom.subarray(0x10, 0x14)]).toEqual([0xde, 0xad, 0xbe, 0xef]);
  });

  it("drives a GPIO line through virtio-gpio (names from config size, direction, value, refusal)", async () => {
    let gpio: GpioDevice | undefined;
    using _dev = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (m, s) => (gpio = new GpioDevice(m, s, 8)) });
    sim.unpause(1);
    const r = await sim.startGuest({ domid: 1, program: "virtio-gpio", args: { irq: IRQ, line: 5 } }).result;
    expect(r).toEqual({ ngpio: 8, names: Array.from({ length: 8 }, (_, i) => `gpio${i}`), direction: 1, value: 1, refusedOnInput: true });
    expect(gpio!.values[5]).toBe(1);
  });

  it("sends frames through virtio-net and gets them back on the receive queue (MAC and link from config)", async () => {
    let net: NetDevice | undefined;
    using _dev = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (m, s) => (net = new NetDevice(m, s)) });
    sim.unpause(1);
    const g = sim.startGuest({ domid: 1, program: "virtio-net", args: { irq: IRQ, frames: 5, length: 100 } });
    const r = await g.result;
    expect(r).toMatchObject({ mac: "52:54:00:5e:00:01", tx: 5, rx: 5 });
    expect(g.logs).toContain("virtio-net: mac 52:54:00:5e:00:01, link up");
    expect(net!.served).toBe(5);
    expect(net!.dropped).toBe(0);
  });

  it("reads a file through virtio-fs: tag from config, FUSE INIT/LOOKUP/OPEN/READ/RELEASE, FORGET on hiprio", async () => {
    let fs: FsDevice | undefined;
    const text = "x".repeat(40_000) + "end\n";
    using _dev = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (m, s) => (fs = new FsDevice(m, s, "simshare", { "notes.txt": text })) });
    sim.unpause(1);
    const r = (await sim.startGuest({ domid: 1, program: "virtio-fs", args: { irq: IRQ, path: "notes.txt" } }).result) as { tag: string; fuse: string; content: string };
    expect(r.tag).toBe("simshare");
    expect(r.fuse).toBe("7.31");
    expect(r.content).toBe(text);
    // INIT, LOOKUP, OPEN, READ x3 (16 KiB chunks) + the empty one, RELEASE, FORGET: every lookup forgotten
    expect(fs!.opcodes).toEqual([26, 1, 14, 15, 15, 15, 15, 18, 2]);
    expect(fs!.lookups.size).toBe(0);
  });
});
