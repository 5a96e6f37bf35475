// Shadow mode against qemu-storage-daemon (which has no XEN_MMAP): a guest on the virtio-mmio register file
// with its own memfd "RAM" that the backend is never given; the backend gets only the shadow memory. The
// guest reads known sectors, writes 10,000 4 KiB blocks and reads every one back, checking each payload.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Frontend } from "@xen-vhost/vhost-user-master";
import { GuestMemory, MmapRegion } from "@xen-vhost/vm-memory";
import { deviceType, VirtioStatus, VIRTIO_MMIO_QUEUE_NOTIFY } from "@xen-vhost/virtio-mmio";
import { AVAIL_IDX, AVAIL_RING, VIRTQ_DESC_F_NEXT, VirtqDesc } from "@xen-vhost/virtio-queue";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { hasQsd, sectorContent, startQsd, SECTOR, type Qsd } from "@xen-vhost/vhost-user-master/testing";
import { VhostUserDevice } from "../src/vhost-user-device.js";
import { MmioGuest } from "../src/shadow-guest.js";

const RAM = 0x4000_0000n;
const RAM_SIZE = 32 << 20;
const T_IN = 0;
const T_OUT = 1;
const BLOCK = 4096;
const BLOCKS = 10_000;
const QD = 16;

function header(mem: GuestMemory, at: bigint, type: number, sector: number): void {
  const h = new DataView(new ArrayBuffer(16));
  h.setUint32(0, type, true);
  h.setBigUint64(8, BigInt(sector), true);
  mem.write(at, new Uint8Array(h.buffer));
}

/** Block i's payload: distinct per block and per byte. */
function payload(i: number): Uint8Array {
  const b = new Uint8Array(BLOCK);
  const v = new DataView(b.buffer);
  for (let o = 0; o < BLOCK; o += 4) v.setUint32(o, (i * 0x9e3779b1 + o * 0x85ebca6b) >>> 0, true);
  return b;
}

describe.skipIf(!hasQsd)("shadow mode against qemu-storage-daemon (needs qemu-storage-daemon)", () => {
  let qsd: Qsd;
  beforeAll(async () => {
    qsd = await startQsd({ sectors: (BLOCKS * BLOCK) / SECTOR + 64 });
  });
  afterAll(async () => {
    await qsd?.stop();
  });

  it("auto mode picks shadow rings for a backend without XEN_MMAP; known sectors read back; 10,000 blocks written and verified", async () => {
    const leaks = fdLeakCheck();
    const mem = new GuestMemory([MmapRegion.memfd(RAM, RAM_SIZE)]);
    const fe = await Frontend.connect(qsd.socket);
    const blk = deviceType("blk")!;
    const dev = await VhostUserDevice.create({
      frontend: fe, deviceId: blk.id, defaultQueues: blk.queues, queueMaxSize: 256, configSize: 8,
      // in shadow mode the backend never sees these: they would be the Xen mappings
      memory: () => { throw new Error("the guest's memory must not be offered in shadow mode"); },
      translate: () => { throw new Error("no guest address may be translated for the backend in shadow mode"); },
      requireProtocolFeatures: ["XEN_MMAP"],
      shadow: "auto",
      guestMemory: () => mem,
    });
    expect(dev.shadow).toBe(true);
    expect(dev.features & (1n << 28n)).not.toBe(0n); // the relay offers indirect descriptors itself
    expect(dev.features & (1n << 34n)).toBe(0n); // never packed rings
    const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: RAM_SIZE, queueSizes: [128] });
    expect(g.features & (1n << 29n)).not.toBe(0n); // EVENT_IDX on the guest side
    const rings = dev.shadowRings!;
    expect(rings.memory.totalSize).toBeLessThan(5 << 20);

    // per-slot buffers: header, data, status
    const slots = Array.from({ length: QD }, () => ({ hdr: g.alloc(16), data: g.alloc(BLOCK, 4096), status: g.alloc(1) }));
    async function io(slot: number, type: number, sector: number, len: number, indirect: boolean): Promise<number> {
      const s = slots[slot]!;
      header(mem, s.hdr, type, sector);
      mem.store8(s.status, 0xff);
      const c = await g.submit(
        0,
        type === T_IN
          ? { readable: [{ addr: s.hdr, len: 16 }], writable: [{ addr: s.data, len }, { addr: s.status, len: 1 }] }
          : { readable: [{ addr: s.hdr, len: 16 }, { addr: s.data, len }], writable: [{ addr: s.status, len: 1 }] },
        { indirect },
      );
      expect(c.len).toBe(type === T_IN ? len + 1 : 1);
      return mem.load8(s.status);
    }

    for (const sec of [0, 1, 777, 4097]) {
      expect(await io(0, T_IN, sec, SECTOR, false)).toBe(0);
      expect(mem.read(slots[0]!.data, SECTOR)).toEqual(sectorContent(sec));
    }

    // 10,000 blocks at queue depth 16, every other request through an indirect table
    const sectorOf = (i: number) => i * (BLOCK / SECTOR);
    let next = 0;
    const writer = async (slot: number) => {
      for (let i = next++; i < BLOCKS; i = next++) {
        mem.write(slots[slot]!.data, payload(i));
        expect(await io(slot, T_OUT, sectorOf(i), BLOCK, i % 2 === 0)).toBe(0);
      }
    };
    await Promise.all(slots.map((_, s) => writer(s)));
    next = 0;
    let verified = 0;
    const reader = async (slot: number) => {
      for (let i = next++; i < BLOCKS; i = next++) {
        mem.fill(slots[slot]!.data, BLOCK, 0);
        expect(await io(slot, T_IN, sectorOf(i), BLOCK, i % 2 === 1)).toBe(0);
        const got = mem.read(slots[slot]!.data, BLOCK);
        if (!Buffer.from(got).equals(Buffer.from(payload(i)))) throw new Error(`block ${i} differs after the round trip`);
        verified++;
      }
    };
    await Promise.all(slots.map((_, s) => reader(s)));
    expect(verified).toBe(BLOCKS);

    const st = rings.stats().get(0)!;
    expect(st.completed).toBe(2 * BLOCKS + 4);
    expect(st.inFlight).toBe(0);
    expect(st.poolUsed).toBe(0);
    // one copy each way: writes copy header + data in, reads copy data + status out
    expect(st.bytesIn).toBe(BLOCKS * (16 + BLOCK) + BLOCKS * 16 + 4 * 16);
    expect(st.bytesOut).toBe(BLOCKS * (BLOCK + 1) + BLOCKS * 1 + 4 * (SECTOR + 1));

    await g.reset();
    expect(dev.shadowRings).toBeUndefined();
    dev.close();
    mem.close();
    await new Promise((res) => setTimeout(res, 20));
    expect(leaks.check()).toEqual([]);
  }, 180_000);

  it("backend restart: qemu-storage-daemon is killed with reads in flight; a new one gets them re-posted, none is lost", async () => {
    const leaks = fdLeakCheck();
    const mem = new GuestMemory([MmapRegion.memfd(RAM, RAM_SIZE)]);
    const hook: { device?: VhostUserDevice } = {};
    const fe = await Frontend.connect(qsd.socket, {
      reconnect: { attempts: 400, initialDelayMs: 10, maxDelayMs: 50 },
      // what the bridge passes too: each reconnection attempt gets a freshly built shadow ring
      restoreVringBase: (i, last) => hook.device?.restoreVringBase(i, last) ?? last,
    });
    const blk = deviceType("blk")!;
    const dev = await VhostUserDevice.create({
      frontend: fe, deviceId: blk.id, defaultQueues: blk.queues, queueMaxSize: 256, configSize: 8,
      memory: () => [], translate: () => 0n, shadow: "always", guestMemory: () => mem,
    });
    hook.device = dev;
    let failed: Error | undefined;
    dev.on("failed", (e) => (failed = e));
    const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: RAM_SIZE, queueSizes: [128] });
    const slots = Array.from({ length: QD }, () => ({ hdr: g.alloc(16), data: g.alloc(SECTOR * 8, 4096), status: g.alloc(1) }));
    let done = 0;
    let stop = false;
    let bad: string | undefined;
    // the first test rewrote sectors below BLOCKS * 8; the 64 after them still hold the image's content
    const fresh = (BLOCKS * BLOCK) / SECTOR;
    const worker = async (k: number) => {
      const s = slots[k]!;
      for (let n = 0; !stop && !bad; n++) {
        const sec = fresh + ((k * 977 + n * 8) % 56);
        header(mem, s.hdr, T_IN, sec);
        mem.store8(s.status, 0xff);
        mem.fill(s.data, SECTOR * 8, 0);
        await g.submit(0, { readable: [{ addr: s.hdr, len: 16 }], writable: [{ addr: s.data, len: SECTOR * 8 }, { addr: s.status, len: 1 }] });
        if (mem.load8(s.status) !== 0) bad = `sector ${sec}: status ${mem.load8(s.status)}`;
        for (let i = 0; i < 8; i++)
          if (!Buffer.from(mem.read(s.data + BigInt(i * SECTOR), SECTOR)).equals(Buffer.from(sectorContent(sec + i)))) bad = `sector ${sec + i} is not the image's`;
        done++;
      }
    };
    const workers = Promise.all(slots.map((_, k) => worker(k)));
    while (done < 500 && !bad) await new Promise((r) => setTimeout(r, 5));
    // kill it with requests outstanding (the guest keeps QD requests in flight all the time)
    const relay = dev.shadowRings!.relay(0)!;
    await qsd.crash();
    const inFlightAtCrash = relay.inFlight + relay.stats.reposted;
    qsd = await startQsd({ reuse: qsd });
    const before = done;
    const until = Date.now() + 20_000;
    while (done < before + 500 && Date.now() < until && !bad) await new Promise((r) => setTimeout(r, 10));
    stop = true;
    if (done < before + 500)
      bad ??= `stuck after restart: ${JSON.stringify({ done, before, pending: g.pending, inFlight: relay.inFlight, stats: relay.stats, shadowUsed: dev.shadowRings?.memory.memory.load16(relay.shadowRing.used + 2n), shadowAvail: dev.shadowRings?.memory.memory.load16(relay.shadowRing.avail + 2n) })}`;
    if (!bad) await workers;
    expect(bad).toBeUndefined();
    expect(failed).toBeUndefined();
    expect(done).toBeGreaterThanOrEqual(before + 500);
    expect(inFlightAtCrash).toBeGreaterThan(0);
    expect(relay.stats.reposted).toBeGreaterThan(0);
    expect(relay.broken).toBeUndefined();
    expect(relay.inFlight).toBe(0);
    expect(relay.poolUsed).toBe(0);
    await g.reset();
    dev.close();
    mem.close();
    await new Promise((res) => setTimeout(res, 20));
    expect(leaks.check()).toEqual([]);
  }, 60_000);

  it("hostile chains (loop, length past RAM, head past the ring) put only that device in NEEDS_RESET; another device keeps serving", async () => {
    const leaks = fdLeakCheck();
    const other = await startQsd({ sectors: 2048 });
    const blk = deviceType("blk")!;
    const make = async (socket: string, mem: GuestMemory) =>
      VhostUserDevice.create({
        frontend: await Frontend.connect(socket), deviceId: blk.id, defaultQueues: 1, queueMaxSize: 256, configSize: 8,
        memory: () => [], translate: () => 0n, shadow: "always", guestMemory: () => mem,
      });
    const attacks: [string, (mem: GuestMemory, desc: bigint, data: bigint) => { descs: { addr: bigint; len: number; flags: number; next: number }[]; head: number }][] = [
      ["descriptor loop", (_m, _d, data) => ({ descs: [{ addr: data, len: 16, flags: VIRTQ_DESC_F_NEXT, next: 1 }, { addr: data, len: 16, flags: VIRTQ_DESC_F_NEXT, next: 0 }], head: 0 })],
      ["length past guest RAM", (_m, _d, data) => ({ descs: [{ addr: data, len: 0x7000_0000, flags: 0, next: 0 }], head: 0 })],
      ["head index past the ring", () => ({ descs: [], head: 4000 })],
    ];
    const goodMem = new GuestMemory([MmapRegion.memfd(RAM, RAM_SIZE)]);
    const good = await make(other.socket, goodMem);
    const gg = await MmioGuest.start(good, { mem: goodMem, base: RAM, bytes: RAM_SIZE, queueSizes: [64] });
    const gslot = { hdr: gg.alloc(16), data: gg.alloc(SECTOR, 512), status: gg.alloc(1) };
    const goodRead = async (sec: number) => {
      header(goodMem, gslot.hdr, T_IN, sec);
      await gg.submit(0, { readable: [{ addr: gslot.hdr, len: 16 }], writable: [{ addr: gslot.data, len: SECTOR }, { addr: gslot.status, len: 1 }] });
      expect(goodMem.read(gslot.data, SECTOR)).toEqual(sectorContent(sec));
    };
    for (const [what, attack] of attacks) {
      const mem = new GuestMemory([MmapRegion.memfd(RAM, RAM_SIZE)]);
      const dev = await make(qsd.socket, mem);
      const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: RAM_SIZE, queueSizes: [64] });
      const broken: string[] = [];
      dev.on("broken", (e) => broken.push(`${e.kind}: ${(e.cause as Error).message}`));
      const q = g.queues[0]!;
      const { descs, head } = attack(mem, q.descTable.value, g.alloc(4096));
      descs.forEach((d, i) => mem.writeObj(q.descTable.value + BigInt(16 * i), VirtqDesc, d));
      mem.store16(q.availRing.value + BigInt(AVAIL_RING), head);
      mem.store16(q.availRing.value + BigInt(AVAIL_IDX), 1);
      await g.mmio.write(VIRTIO_MMIO_QUEUE_NOTIFY, 4, 0);
      await new Promise((r) => setTimeout(r, 10));
      expect(broken, what).toHaveLength(1);
      expect(broken[0]).toMatch(/^GuestChain: chain/);
      expect(g.mmio.status & VirtioStatus.DEVICE_NEEDS_RESET, what).toBe(VirtioStatus.DEVICE_NEEDS_RESET);
      const st = dev.shadowRings!.stats().get(0)!;
      expect(st.posted).toBe(0);
      expect(st.poolUsed).toBe(0);
      expect(dev.shadowRings!.memory.totalSize).toBeLessThan(5 << 20);
      // the other device is unaffected
      await goodRead(7);
      // the guest resets the device: it can be used again
      await g.reset();
      dev.close();
      mem.close();
    }
    await gg.reset();
    good.close();
    goodMem.close();
    await other.stop();
    await new Promise((res) => setTimeout(res, 20));
    expect(leaks.check()).toEqual([]);
  }, 60_000);

  it("multi-queue: a 4-queue export, 200 reads spread over every queue at once, each checked", async () => {
    const leaks = fdLeakCheck();
    const mq = await startQsd({ sectors: 4096, numQueues: 4 });
    const mem = new GuestMemory([MmapRegion.memfd(RAM, RAM_SIZE)]);
    const blk = deviceType("blk")!;
    const dev = await VhostUserDevice.create({
      frontend: await Frontend.connect(mq.socket), deviceId: blk.id, defaultQueues: 1, queueMaxSize: 256, configSize: 60,
      memory: () => [], translate: () => 0n, shadow: "always", guestMemory: () => mem,
    });
    expect(dev.numQueues).toBe(4);
    const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: RAM_SIZE, queueSizes: [64, 64, 64, 64], wantFeatures: 1n << 12n }); // VIRTIO_BLK_F_MQ
    expect(dev.shadowRings!.queues).toEqual([0, 1, 2, 3]);
    const reads = [];
    for (let i = 0; i < 200; i++) {
      const q = i % 4;
      const hdr = g.alloc(16);
      const data = g.alloc(SECTOR, 512);
      const status = g.alloc(1);
      header(mem, hdr, T_IN, i * 3);
      reads.push(g.submit(q, { readable: [{ addr: hdr, len: 16 }], writable: [{ addr: data, len: SECTOR }, { addr: status, len: 1 }] }).then(() => {
        expect(mem.load8(status)).toBe(0);
        expect(mem.read(data, SECTOR)).toEqual(sectorContent(i * 3));
      }));
    }
    await Promise.all(reads);
    for (const q of [0, 1, 2, 3]) expect(dev.shadowRings!.stats().get(q)!.completed).toBe(50);
    await g.reset();
    dev.close();
    mem.close();
    await mq.stop();
    await new Promise((res) => setTimeout(res, 20));
    expect(leaks.check()).toEqual([]);
  }, 60_000);
});
