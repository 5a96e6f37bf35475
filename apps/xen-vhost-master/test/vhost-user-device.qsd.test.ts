// The bridge's hypervisor-agnostic core against a real backend: the virtio-mmio register file in front of
// a VhostUserDevice driving qemu-storage-daemon's vhost-user-blk export, with memfd guest memory. The
// "guest" here writes the registers directly (on Xen they arrive as ioreqs) and uses virtio-queue's
// driver side for the ring, then reads and writes real sectors.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Frontend, fromCRegion } from "@xen-vhost/vhost-user-master";
import { GuestMemory, MmapRegion, guestToUserAddr } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import {
  VirtioMmioTransport, VirtioStatus as S, deviceType,
  VIRTIO_MMIO_STATUS, VIRTIO_MMIO_DEVICE_FEATURES, VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH, VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_DEVICE_ID,
} from "@xen-vhost/virtio-mmio";
import { VhostUserDevice } from "../src/index.js";
import { hasQsd, sectorContent, startQsd, SECTOR, type Qsd } from "@xen-vhost/vhost-user-master/testing";

const RAM = 0x4000_0000n;
const RAM_SIZE = 4 << 20;
const VIRTIO_BLK_T_IN = 0;
const VIRTIO_BLK_T_OUT = 1;

describe.skipIf(!hasQsd)("VhostUserDevice + virtio-mmio against qemu-storage-daemon (needs qemu-storage-daemon)", () => {
  let qsd: Qsd;
  beforeAll(async () => {
    qsd = await startQsd({ sectors: 2048 });
  });
  afterAll(async () => {
    await qsd?.stop();
  });

  it("a driver probes, negotiates, reads and writes sectors through the register file", async () => {
    const leaks = fdLeakCheck();
    const mem = new GuestMemory([MmapRegion.memfd(RAM, RAM_SIZE)]);
    const regions = () => mem.vhostUserRegions();
    const fe = await Frontend.connect(qsd.socket);
    const blk = deviceType("blk")!;
    const dev = await VhostUserDevice.create({
      frontend: fe, deviceId: blk.id, defaultQueues: blk.queues, queueMaxSize: 256, configSize: 8,
      memory: () => regions().map(fromCRegion),
      translate: (gpa, len) => guestToUserAddr(regions(), gpa, len),
    });
    const mmio = new VirtioMmioTransport(dev);
    dev.on("used", () => mmio.signalUsedBuffers());
    const q = DriverQueue.create<number>(mem, RAM, 128);
    const r = async (off: number) => Number(await mmio.read(off, 4));
    const w = async (off: number, v: number) => mmio.write(off, 4, v);
    // The guest's interrupt handler, as Linux's vm_interrupt does it: read InterruptStatus, ACK it (which
    // lowers the line), then look at the used rings. Backends may interrupt spuriously (qsd signals every
    // call fd once when the ring starts), so waiters check the ring, not the number of interrupts.
    let interrupts = 0;
    let wake: (() => void) | undefined;
    mmio.on("interrupt", (level) => {
      if (!level) return;
      interrupts++;
      void (async () => {
        await w(VIRTIO_MMIO_INTERRUPT_ACK, await r(VIRTIO_MMIO_INTERRUPT_STATUS));
        if (q.hasUsed()) wake?.();
      })();
    });

    // Probe and negotiate like Linux's virtio_mmio + virtio_blk.
    expect(await r(VIRTIO_MMIO_DEVICE_ID)).toBe(2);
    await w(VIRTIO_MMIO_STATUS, 0);
    await w(VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER);
    await w(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    const hi = await r(VIRTIO_MMIO_DEVICE_FEATURES);
    expect(hi & 1).toBe(1); // VERSION_1
    await w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    await w(VIRTIO_MMIO_DRIVER_FEATURES, 1);
    await w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    await w(VIRTIO_MMIO_DRIVER_FEATURES, 0);
    await w(VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    expect((await r(VIRTIO_MMIO_STATUS)) & S.FEATURES_OK).toBe(S.FEATURES_OK);
    // virtio_blk_config.capacity, in 512-byte sectors, from the backend's GET_CONFIG (cached).
    expect(await mmio.read(VIRTIO_MMIO_CONFIG, 8)).toBe(2048n);

    await w(VIRTIO_MMIO_QUEUE_SEL, 0);
    expect(await r(VIRTIO_MMIO_QUEUE_NUM_MAX)).toBe(256);
    await w(VIRTIO_MMIO_QUEUE_NUM, 128);
    const lo = (a: bigint) => Number(a & 0xffffffffn);
    const hi32 = (a: bigint) => Number(a >> 32n);
    await w(VIRTIO_MMIO_QUEUE_DESC_LOW, lo(q.descTable.value));
    await w(VIRTIO_MMIO_QUEUE_DESC_HIGH, hi32(q.descTable.value));
    await w(VIRTIO_MMIO_QUEUE_AVAIL_LOW, lo(q.availRing.value));
    await w(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, hi32(q.availRing.value));
    await w(VIRTIO_MMIO_QUEUE_USED_LOW, lo(q.usedRing.value));
    await w(VIRTIO_MMIO_QUEUE_USED_HIGH, hi32(q.usedRing.value));
    await w(VIRTIO_MMIO_QUEUE_READY, 1);
    await w(VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
    expect(mmio.running).toBe(true);

    const hdr = RAM + 0x10000n;
    const data = RAM + 0x11000n;
    const status = RAM + 0x12000n;
    async function request(type: number, sector: number): Promise<number> {
      const h = new DataView(new ArrayBuffer(16));
      h.setUint32(0, type, true);
      h.setBigUint64(8, BigInt(sector), true);
      mem.write(hdr, new Uint8Array(h.buffer));
      mem.write(status, new Uint8Array([0xff]));
      const done = new Promise<void>((res) => (wake = res));
      q.add(
        type === VIRTIO_BLK_T_IN
          ? { readable: [{ addr: hdr, len: 16 }], writable: [{ addr: data, len: SECTOR }, { addr: status, len: 1 }] }
          : { readable: [{ addr: hdr, len: 16 }, { addr: data, len: SECTOR }], writable: [{ addr: status, len: 1 }] },
        { token: sector },
      );
      await w(VIRTIO_MMIO_QUEUE_NOTIFY, 0);
      await done;
      const used = q.harvest();
      expect(used.map((u) => u.token)).toEqual([sector]);
      return mem.read(status, 1)[0]!;
    }

    for (const s of [0, 1, 777, 2047]) {
      expect(await request(VIRTIO_BLK_T_IN, s)).toBe(0);
      expect(mem.read(data, SECTOR)).toEqual(sectorContent(s));
    }
    const pattern = new Uint8Array(SECTOR).map((_, i) => (i * 13) & 0xff);
    mem.write(data, pattern);
    expect(await request(VIRTIO_BLK_T_OUT, 5)).toBe(0);
    mem.fill(data, SECTOR, 0);
    expect(await request(VIRTIO_BLK_T_IN, 5)).toBe(0);
    expect(mem.read(data, SECTOR)).toEqual(pattern);
    expect(interrupts).toBeGreaterThanOrEqual(6);
    expect(mmio.counters.notifies).toBe(6);

    // Reset: the backend's ring is stopped (GET_VRING_BASE) and the device can start over.
    await w(VIRTIO_MMIO_STATUS, 0);
    expect(mmio.status).toBe(0);
    dev.close();
    mem.close();
    await new Promise((res) => setTimeout(res, 20));
    expect(leaks.check()).toEqual([]);
  });
});
