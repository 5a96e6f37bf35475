// Grant mode: the guest grants every page the device touches and hands out 1<<63 | ref<<12 addresses; the
// device model maps them through the simulator's gntdev (SimGrantDevice), which enforces the grant table.
import { randomFillSync } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Xen, XenError, type GrantDevice, type GrantMapping } from "@xen-vhost/xen-sys";
import { bit, VirtioFeature, type QueueConfig, type VirtioDevice } from "@xen-vhost/virtio-mmio";
import { BlkDevice, FsDevice, NetDevice, XEN_GRANT_DMA_ADDR_OFF, XenVirtioMmioDevice, startSimulator, type GrantDmaRegion, type Simulator } from "../src/index.js";

const BASE = 0x2000000n;
const IRQ = 33;

function refOf(dma: bigint): { ref: number; offset: number } {
  expect(dma & XEN_GRANT_DMA_ADDR_OFF).toBe(XEN_GRANT_DMA_ADDR_OFF);
  return { ref: Number((dma & ~XEN_GRANT_DMA_ADDR_OFF) >> 12n), offset: Number(dma & 0xfffn) };
}

/** A virtio-rng that only ever sees grant addresses: rings and buffers are mapped by grant reference. */
class GrantRngDevice implements VirtioDevice {
  readonly deviceId = 4;
  readonly features = bit(VirtioFeature.VERSION_1) | bit(VirtioFeature.ACCESS_PLATFORM);
  readonly numQueues = 1;
  readonly configSize = 0;
  readonly refused: string[] = [];
  served = 0;
  #q: QueueConfig | undefined;
  #maps: GrantMapping[] = [];
  #last = 0;
  readonly gnt: GrantDevice;
  readonly signal: () => void;
  constructor(gnt: GrantDevice, signal: () => void) {
    this.gnt = gnt;
    this.signal = signal;
  }
  queueMaxSize(): number {
    return 64;
  }
  readConfig(): number {
    return 0;
  }
  writeConfig(): void {}
  activate(_f: bigint, queues: readonly QueueConfig[]): void {
    this.#q = queues[0];
    // The descriptor table is granted read-only: a writable mapping must be refused.
    try {
      this.gnt.unmapGrantRefs(this.gnt.mapGrantRefs(1, [refOf(this.#q!.desc).ref]));
    } catch (err) {
      this.refused.push((err as XenError).code ?? "?");
    }
  }
  reset(): void {
    for (const m of this.#maps) this.gnt.unmapGrantRefs(m);
    this.#maps = [];
    this.#q = undefined;
    this.#last = 0;
  }
  #view(dma: bigint, len: number, readOnly: boolean): { view: DataView; mapping: GrantMapping } {
    const { ref, offset } = refOf(dma);
    const mapping = this.gnt.mapGrantRefs(1, [ref], { readOnly });
    return { view: new DataView(mapping.buffer, offset, len), mapping };
  }
  notify(): void {
    const q = this.#q!;
    const desc = this.#view(q.desc, q.size * 16, true);
    const avail = this.#view(q.avail, 4 + 2 * q.size, true);
    const used = this.#view(q.used, 4 + 8 * q.size, false);
    try {
      const idx = avail.view.getUint16(2, true);
      while (this.#last !== idx) {
        const head = avail.view.getUint16(4 + 2 * (this.#last % q.size), true);
        const addr = desc.view.getBigUint64(head * 16, true);
        const len = desc.view.getUint32(head * 16 + 8, true);
        const buf = this.#view(addr, len, false);
        randomFillSync(new Uint8Array(buf.view.buffer, buf.view.byteOffset, len));
        this.gnt.unmapGrantRefs(buf.mapping);
        const u = used.view.getUint16(2, true);
        used.view.setUint32(4 + 8 * (u % q.size), head, true);
        used.view.setUint32(8 + 8 * (u % q.size), len, true);
        used.view.setUint16(2, (u + 1) & 0xffff, true);
        this.#last = (this.#last + 1) & 0xffff;
        this.served++;
      }
    } finally {
      for (const m of [desc, avail, used]) this.gnt.unmapGrantRefs(m.mapping);
    }
    this.signal();
  }
}

describe("grant mode", () => {
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

  it("serves virtio-rng through grant references only; read-only grants refuse writable maps", async () => {
    using gnt = xen.openGrantDevice();
    let dev: GrantRngDevice | undefined;
    using _dm = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, device: (_m, s) => (dev = new GrantRngDevice(gnt, s)) });
    sim.unpause(1);
    const g = sim.startGuest({ domid: 1, program: "virtio-rng", args: { irq: IRQ, dma: "grant", reads: 2, bytes: 48 } });
    const r = (await g.result) as { samples: string[] };
    expect(r.samples).toHaveLength(2);
    expect(r.samples[0]).toMatch(/^[0-9a-f]{96}$/);
    expect(dev!.served).toBe(2);
    expect(dev!.refused).toEqual(["EFAULT"]);
    expect(g.logs.some((l) => l.includes("(granted)"))).toBe(true);
  });

  it("runs the blk, net and fs drivers in grant mode against device models that reach memory only through gntdev", async () => {
    let blk: BlkDevice | undefined;
    let dm = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, dma: "grant", device: (m, s) => (blk = new BlkDevice(m, s, 256)) });
    sim.unpause(1);
    const rb = await sim.startGuest({ domid: 1, program: "virtio-blk", args: { irq: IRQ, dma: "grant", sector: 3, sectors: 4 } }).result;
    expect(rb).toMatchObject({ capacity: "256", sectors: 4, verified: true });
    expect(blk!.disk[3 * 512 + 1]).toBe(10);
    // the rings' descriptor table and avail ring are granted read-only, and were mapped so
    expect((dm.memory.regions[0] as GrantDmaRegion).readOnlyMaps).toBeGreaterThan(0);
    dm.close();

    dm = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, dma: "grant", device: (m, s) => new NetDevice(m, s) });
    const rn = await sim.startGuest({ domid: 1, program: "virtio-net", args: { irq: IRQ, dma: "grant", frames: 3, length: 200 } }).result;
    expect(rn).toMatchObject({ tx: 3, rx: 3 });
    dm.close();

    let fs: FsDevice | undefined;
    dm = new XenVirtioMmioDevice(xen, { domid: 1, base: BASE, irq: IRQ, dma: "grant", device: (m, s) => (fs = new FsDevice(m, s, "granted", { "a.txt": "granted bytes" })) });
    const rf = await sim.startGuest({ domid: 1, program: "virtio-fs", args: { irq: IRQ, dma: "grant", path: "a.txt" } }).result;
    expect(rf).toMatchObject({ tag: "granted", content: "granted bytes" });
    expect(fs!.lookups.size).toBe(0);
    dm.close();
  }, 60_000);

  it("refuses refs that were never granted, and grant copy reports GNTST statuses", () => {
    using gnt = xen.openGrantDevice();
    expect(() => gnt.mapGrantRefs(1, [100])).toThrow(XenError);
    expect(() => gnt.mapGrantRefs(1, [1 << 20])).toThrow(/GNTST -4/);
    const local = new Uint8Array(16);
    const st = gnt.grantCopy([
      { source: { ref: 100, offset: 0, domid: 1 }, dest: { local }, len: 16 },
      { source: { ref: 5, offset: 0, domid: 9 }, dest: { local }, len: 16 },
    ]);
    expect([...st]).toEqual([-1, -2]);
  });
});

describe("grant table pins and copies (guest and backend concurrently)", () => {
  it("pins granted pages while mapped, copies in both directions, releases on unmap", async () => {
    const leaks = fdLeakCheck();
    const sim = await startSimulator({ domains: [{ domid: 1, ram: 16 << 20 }] });
    const xen = Xen.open({ transport: sim.connect() });
    const gnt = xen.openGrantDevice();
    const { TinyDeviceModel } = await import("./helpers.js");
    let rwRef = 0;
    let roRef = 0;
    let maps: GrantMapping[] = [];
    const seen: { rwByte?: number | undefined; roByte?: number | undefined; copy?: number[]; copied?: number[] } = {};
    const dm = new TinyDeviceModel(xen, 1, [BASE, BASE + 0xfn], {
      read: () => {
        maps = [gnt.mapGrantRefs(1, [rwRef]), gnt.mapGrantRefs(1, [roRef], { readOnly: true })];
        seen.rwByte = new Uint8Array(maps[0]!.buffer)[0];
        seen.roByte = new Uint8Array(maps[1]!.buffer)[100];
        // grant copy: read the ro page, write the rw page
        const local = new Uint8Array(8);
        const st = gnt.grantCopy([
          { source: { ref: roRef, offset: 8, domid: 1 }, dest: { local }, len: 8 },
          { source: { local: Uint8Array.of(0x11) }, dest: { ref: rwRef, offset: 0, domid: 1 }, len: 1 },
          { source: { local: Uint8Array.of(0x22) }, dest: { ref: roRef, offset: 0, domid: 1 }, len: 1 },
        ]);
        seen.copy = [...st];
        seen.copied = [...local];
        return 1n;
      },
      write: (addr, _s, v) => {
        if (addr === BASE) rwRef = Number(v);
        else if (addr === BASE + 4n) roRef = Number(v);
        else for (const m of maps.splice(0)) gnt.unmapGrantRefs(m);
      },
    });
    sim.unpause(1);
    const r = (await sim.startGuest({ domid: 1, program: "grants" }).result) as { flagsWhileMapped: number };
    expect(r).toMatchObject({ mapped: 1, endWhileMapped: false, endAfter: true, firstByte: 0x11 });
    // GTF_permit_access | GTF_reading | GTF_writing while the backend held a writable mapping
    expect(r.flagsWhileMapped).toBe(1 | 8 | 16);
    expect(seen).toEqual({ rwByte: 0xa5, roByte: 0x5a, copy: [0, 0, -1], copied: Array(8).fill(0x5a) });
    dm.close();
    gnt.close();
    xen.transport.close();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });
});
