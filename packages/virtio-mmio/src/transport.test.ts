import { describe, expect, it } from "vitest";
import { RecordingDevice } from "../test/helpers.js";
import {
  VirtioMmioTransport, VirtioStatus as S, bit, VirtioFeature as F,
  VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_VERSION, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DRIVER_FEATURES, VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_SHM_SEL, VIRTIO_MMIO_SHM_LEN_LOW, VIRTIO_MMIO_SHM_BASE_HIGH,
  VIRTIO_MMIO_QUEUE_RESET, VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_MAGIC,
} from "../src/index.js";

type T = VirtioMmioTransport;
const rd = (t: T, off: number) => t.read(off, 4) as number;
const wr = (t: T, off: number, v: number) => t.write(off, 4, v);

/** Linux virtio_mmio.c's probe + virtio_dev_probe up to FEATURES_OK, then queue setup. */
async function driverInit(t: T, features: bigint, queues = [0, 1]): Promise<void> {
  expect(rd(t, VIRTIO_MMIO_MAGIC_VALUE)).toBe(VIRTIO_MMIO_MAGIC);
  expect(rd(t, VIRTIO_MMIO_VERSION)).toBe(2);
  await wr(t, VIRTIO_MMIO_STATUS, 0);
  await wr(t, VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE);
  await wr(t, VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER);
  await wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
  await wr(t, VIRTIO_MMIO_DRIVER_FEATURES, Number(features >> 32n));
  await wr(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
  await wr(t, VIRTIO_MMIO_DRIVER_FEATURES, Number(features & 0xffffffffn));
  await wr(t, VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  for (const q of queues) {
    await wr(t, VIRTIO_MMIO_QUEUE_SEL, q);
    await wr(t, VIRTIO_MMIO_QUEUE_NUM, 128);
    await wr(t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x4000_0000 + q * 0x10000);
    await wr(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
    await wr(t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x4000_0800 + q * 0x10000);
    await wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x4000_1000 + q * 0x10000);
    await wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
  }
}

describe("VirtioMmioTransport", () => {
  it("walks Linux's probe sequence and activates the device with the negotiated state", async () => {
    const dev = new RecordingDevice();
    const t = new VirtioMmioTransport(dev);
    expect(rd(t, VIRTIO_MMIO_DEVICE_ID)).toBe(34);
    await wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    expect(rd(t, VIRTIO_MMIO_DEVICE_FEATURES)).toBe(Number(dev.features >> 32n));
    await wr(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    expect(rd(t, VIRTIO_MMIO_DEVICE_FEATURES)).toBe(Number(dev.features & 0xffffffffn));
    await wr(t, VIRTIO_MMIO_QUEUE_SEL, 1);
    expect(rd(t, VIRTIO_MMIO_QUEUE_NUM_MAX)).toBe(256);
    await wr(t, VIRTIO_MMIO_QUEUE_SEL, 2);
    expect(rd(t, VIRTIO_MMIO_QUEUE_NUM_MAX)).toBe(0); // no such queue

    const features = bit(F.VERSION_1) | 1n;
    await driverInit(t, features);
    expect(rd(t, VIRTIO_MMIO_STATUS) & S.FEATURES_OK).toBe(S.FEATURES_OK);
    await wr(t, VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
    expect(dev.activations).toHaveLength(1);
    expect(dev.activations[0]!.features).toBe(features);
    expect(dev.activations[0]!.queues).toEqual([
      { index: 0, size: 128, desc: 0x4000_0000n, avail: 0x4000_0800n, used: 0x4000_1000n },
      { index: 1, size: 128, desc: 0x4001_0000n, avail: 0x4001_0800n, used: 0x4001_1000n },
    ]);
    expect(t.running).toBe(true);
    await wr(t, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
    expect(dev.notifies).toEqual([[1, 1]]);
    expect(t.counters.notifies).toBe(1);
  });

  it("refuses features that were not offered, and drivers without VERSION_1", async () => {
    const dev = new RecordingDevice();
    const t = new VirtioMmioTransport(dev);
    await driverInit(t, bit(F.VERSION_1) | bit(F.RING_PACKED));
    expect(rd(t, VIRTIO_MMIO_STATUS) & S.FEATURES_OK).toBe(0);
    await driverInit(t, 1n);
    expect(rd(t, VIRTIO_MMIO_STATUS) & S.FEATURES_OK).toBe(0);
    await wr(t, VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER | S.DRIVER_OK);
    expect(t.status & S.DRIVER_OK).toBe(0); // DRIVER_OK without FEATURES_OK is refused
    expect(dev.activations).toHaveLength(0);
  });

  it("raises the line for used buffers and config changes and lowers it on ACK", async () => {
    const t = new VirtioMmioTransport(new RecordingDevice());
    const levels: boolean[] = [];
    t.on("interrupt", (l) => levels.push(l));
    t.signalUsedBuffers();
    t.signalUsedBuffers(); // already asserted: no second edge
    expect(rd(t, VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(VIRTIO_MMIO_INT_VRING);
    t.signalConfigChange();
    expect(rd(t, VIRTIO_MMIO_CONFIG_GENERATION)).toBe(1);
    expect(rd(t, VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG);
    await wr(t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
    expect(levels).toEqual([true]);
    await wr(t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_CONFIG);
    expect(levels).toEqual([true, false]);
  });

  it("puts the device in NEEDS_RESET for unusable queues and recovers after reset", async () => {
    const dev = new RecordingDevice();
    const t = new VirtioMmioTransport(dev, { validateQueue: (q) => (q.used >= 0x8000_0000n ? "used ring outside RAM" : undefined) });
    const reasons: string[] = [];
    t.on("needsReset", (r) => reasons.push(r));
    await driverInit(t, bit(F.VERSION_1), []);
    await wr(t, VIRTIO_MMIO_QUEUE_SEL, 0);
    await wr(t, VIRTIO_MMIO_QUEUE_NUM, 100); // not a power of two
    await wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
    expect(rd(t, VIRTIO_MMIO_QUEUE_READY)).toBe(0);
    expect(rd(t, VIRTIO_MMIO_STATUS) & S.DEVICE_NEEDS_RESET).toBe(S.DEVICE_NEEDS_RESET);
    expect(reasons[0]).toMatch(/size 100 is not a power of two/);
    await wr(t, VIRTIO_MMIO_STATUS, 0);
    expect(rd(t, VIRTIO_MMIO_STATUS)).toBe(0);
    await driverInit(t, bit(F.VERSION_1), []);
    await wr(t, VIRTIO_MMIO_QUEUE_NUM, 64);
    await wr(t, VIRTIO_MMIO_QUEUE_USED_LOW, 0x9000_0000);
    await wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
    expect(reasons[1]).toMatch(/used ring outside RAM/);
  });

  it("ignores queue reconfiguration while ready and counts it", async () => {
    const t = new VirtioMmioTransport(new RecordingDevice());
    await driverInit(t, bit(F.VERSION_1));
    const before = t.counters.badAccesses;
    await wr(t, VIRTIO_MMIO_QUEUE_SEL, 0);
    await wr(t, VIRTIO_MMIO_QUEUE_NUM, 4);
    expect(t.counters.badAccesses).toBe(before + 1);
    expect(t.readyQueues()[0]!.size).toBe(128);
  });

  it("waits for an async activation, then answers later accesses in order", async () => {
    const dev = new RecordingDevice();
    let finish!: () => void;
    dev.activateImpl = () => new Promise<void>((r) => (finish = r));
    const t = new VirtioMmioTransport(dev);
    await driverInit(t, bit(F.VERSION_1));
    const w = t.write(VIRTIO_MMIO_STATUS, 4, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
    expect(w).toBeInstanceOf(Promise);
    const order: string[] = [];
    const r = Promise.resolve(t.read(VIRTIO_MMIO_STATUS, 4)).then((v) => order.push(`status ${String(v)}`));
    void Promise.resolve(w).then(() => order.push("activated"));
    await new Promise((res) => setTimeout(res, 5));
    expect(order).toEqual([]);
    finish();
    await r;
    expect(order).toEqual(["activated", "status 15"]);
  });

  it("a failing activation sets NEEDS_RESET and raises a config interrupt", async () => {
    const dev = new RecordingDevice();
    dev.activateImpl = () => Promise.reject(new Error("backend gone"));
    const t = new VirtioMmioTransport(dev);
    await driverInit(t, bit(F.VERSION_1));
    await wr(t, VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
    expect(t.status & S.DEVICE_NEEDS_RESET).toBe(S.DEVICE_NEEDS_RESET);
    expect(t.interruptStatus & VIRTIO_MMIO_INT_CONFIG).toBe(VIRTIO_MMIO_INT_CONFIG);
    await wr(t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    expect(dev.notifies).toEqual([]); // not running
  });

  it("reads and writes config space at every size, async too, and refuses out-of-range accesses", async () => {
    const dev = new RecordingDevice();
    const t = new VirtioMmioTransport(dev);
    expect(t.read(VIRTIO_MMIO_CONFIG, 2)).toBe(8);
    expect(t.read(VIRTIO_MMIO_CONFIG + 4, 4)).toBe(56);
    expect(t.read(VIRTIO_MMIO_CONFIG, 8)).toBe(0x38_0000_0008n);
    await t.write(VIRTIO_MMIO_CONFIG + 1, 1, 0xaa);
    expect(dev.config[1]).toBe(0xaa);
    expect(t.read(VIRTIO_MMIO_CONFIG + 6, 4)).toBe(0xffffffff); // crosses the end
    expect(t.read(VIRTIO_MMIO_CONFIG, 3 as 4)).toBe(0xffffffff);
    dev.asyncConfig = true;
    await expect(Promise.resolve(t.read(VIRTIO_MMIO_CONFIG, 1))).resolves.toBe(8);
    expect(t.counters.configReads).toBe(4);
  });

  it("answers bad control accesses with all-ones and counts them", () => {
    const t = new VirtioMmioTransport(new RecordingDevice());
    expect(t.read(VIRTIO_MMIO_MAGIC_VALUE, 2)).toBe(0xffff);
    expect(t.read(VIRTIO_MMIO_MAGIC_VALUE + 1, 4)).toBe(0xffffffff);
    expect(t.read(VIRTIO_MMIO_MAGIC_VALUE, 8)).toBe(0xffff_ffff_ffff_ffffn);
    expect(rd(t, VIRTIO_MMIO_QUEUE_NOTIFY)).toBe(0); // write-only
    void t.write(VIRTIO_MMIO_MAGIC_VALUE, 4, 5); // read-only
    expect(t.counters.badAccesses).toBe(5);
  });

  it("reports shared memory regions and -1 for missing ones", async () => {
    const dev = new RecordingDevice();
    Object.assign(dev, { sharedMemoryRegions: () => [{ id: 1, base: 0x1_2345_0000n, length: 0x10000n }] });
    const t = new VirtioMmioTransport(dev);
    expect(rd(t, VIRTIO_MMIO_SHM_LEN_LOW)).toBe(0xffffffff);
    await wr(t, VIRTIO_MMIO_SHM_SEL, 1);
    expect(rd(t, VIRTIO_MMIO_SHM_LEN_LOW)).toBe(0x10000);
    expect(rd(t, VIRTIO_MMIO_SHM_BASE_HIGH)).toBe(1);
  });

  it("resets a single queue with RING_RESET", async () => {
    const dev = new RecordingDevice();
    const t = new VirtioMmioTransport(dev);
    await driverInit(t, bit(F.VERSION_1) | bit(F.RING_RESET));
    await wr(t, VIRTIO_MMIO_QUEUE_SEL, 1);
    await wr(t, VIRTIO_MMIO_QUEUE_RESET, 1);
    expect(dev.queueResets).toEqual([1]);
    expect(rd(t, VIRTIO_MMIO_QUEUE_RESET)).toBe(1);
    expect(rd(t, VIRTIO_MMIO_QUEUE_READY)).toBe(0);
    await wr(t, VIRTIO_MMIO_QUEUE_NUM, 64);
    await wr(t, VIRTIO_MMIO_QUEUE_READY, 1);
    expect(rd(t, VIRTIO_MMIO_QUEUE_RESET)).toBe(0);
  });

  it("a device reset forwards to the device only when something was negotiated", async () => {
    const dev = new RecordingDevice();
    const t = new VirtioMmioTransport(dev);
    await wr(t, VIRTIO_MMIO_STATUS, 0);
    expect(dev.resets).toBe(0);
    await driverInit(t, bit(F.VERSION_1));
    await wr(t, VIRTIO_MMIO_STATUS, 0);
    expect(dev.resets).toBe(1);
    expect(t.readyQueues()).toEqual([]);
  });
});
