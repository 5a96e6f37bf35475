import { describe, expect, it } from "vitest";
import { RecordingDevice } from "../test/helpers.js";
import {
  VirtioMmioTransport, regionsFromShmemConfig, shmRegisterValue, SHM_NO_REGION,
  VIRTIO_MMIO_SHM_SEL, VIRTIO_MMIO_SHM_LEN_LOW, VIRTIO_MMIO_SHM_LEN_HIGH, VIRTIO_MMIO_SHM_BASE_LOW, VIRTIO_MMIO_SHM_BASE_HIGH,
  VIRTIO_MMIO_STATUS,
} from "./index.js";

const SHM = [VIRTIO_MMIO_SHM_LEN_LOW, VIRTIO_MMIO_SHM_LEN_HIGH, VIRTIO_MMIO_SHM_BASE_LOW, VIRTIO_MMIO_SHM_BASE_HIGH];
const readAll = (t: VirtioMmioTransport): number[] => SHM.map((o) => t.read(o, 4) as number);

describe("SHM registers (virtio 1.2 4.2.2)", () => {
  it("report no region (length -1) for every ID when the device has none", async () => {
    const t = new VirtioMmioTransport(new RecordingDevice());
    for (const sel of [0, 1, 255, 256, 0xffffffff]) {
      await t.write(VIRTIO_MMIO_SHM_SEL, 4, sel);
      expect(readAll(t)).toEqual([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff]);
    }
  });

  it("report no region when the backend announced sizes but the VMM reserved no window for them", async () => {
    const regions = regionsFromShmemConfig([0x10000n, 0n, 0x20000n], undefined);
    expect(regions).toEqual([]);
    const t = new VirtioMmioTransport(new RecordingDevice(), { sharedMemoryRegions: () => regions });
    await t.write(VIRTIO_MMIO_SHM_SEL, 4, 0);
    expect(readAll(t)).toEqual([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff]);
  });

  it("lay GET_SHMEM_CONFIG regions out in a reserved window, skipping unused IDs and what does not fit", () => {
    const placement = { base: 0x1_0000_0000n, size: 0x40000n, align: 0x10000n };
    expect(regionsFromShmemConfig([0x1800n, 0n, 0x20000n, 0x40000n], placement)).toEqual([
      { id: 0, base: 0x1_0000_0000n, length: 0x1800n },
      { id: 2, base: 0x1_0001_0000n, length: 0x20000n },
      // id 3 (256 KiB) does not fit in what is left: absent rather than overlapping the guest's memory
    ]);
    expect(() => regionsFromShmemConfig(new Array<bigint>(257).fill(1n), placement)).toThrow(RangeError);
    expect(() => regionsFromShmemConfig([-1n], placement)).toThrow(RangeError);
    expect(() => regionsFromShmemConfig([1n], { ...placement, align: 3n })).toThrow(RangeError);
  });

  it("read a placed region's length and base per SHMSel; the transport's regions win over the device's", async () => {
    const dev = new RecordingDevice();
    Object.assign(dev, { sharedMemoryRegions: () => [{ id: 0, base: 0x1234n, length: 0x1000n }] });
    const regions = regionsFromShmemConfig([0n, 0x2_0000_1000n], { base: 0x8_0000_0000n, size: 0x10_0000_0000n });
    const t = new VirtioMmioTransport(dev, { sharedMemoryRegions: () => regions });
    await t.write(VIRTIO_MMIO_SHM_SEL, 4, 1);
    expect(readAll(t)).toEqual([0x1000, 2, 0, 8]);
    await t.write(VIRTIO_MMIO_SHM_SEL, 4, 0);
    expect(readAll(t)).toEqual([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff]); // the device's id 0 is overridden
    expect(shmRegisterValue(regions, 1, "lenHigh")).toBe(2);
    expect(Number(SHM_NO_REGION & 0xffffffffn)).toBe(0xffffffff);
  });

  it("take only aligned 32-bit reads; writes to the read-only SHM registers are ignored and counted; reset clears SHMSel", async () => {
    const regions = [{ id: 0, base: 0x4000_0000n, length: 0x1000n }, { id: 1, base: 0x5000_0000n, length: 0x2000n }];
    const t = new VirtioMmioTransport(new RecordingDevice(), { sharedMemoryRegions: () => regions });
    expect(t.read(VIRTIO_MMIO_SHM_LEN_LOW, 2)).toBe(0xffff);
    expect(t.read(VIRTIO_MMIO_SHM_LEN_LOW, 8)).toBe(0xffff_ffff_ffff_ffffn);
    expect(t.read(VIRTIO_MMIO_SHM_LEN_LOW + 1, 4)).toBe(0xffffffff);
    await t.write(VIRTIO_MMIO_SHM_LEN_LOW, 4, 5);
    await t.write(VIRTIO_MMIO_SHM_BASE_HIGH, 4, 5);
    expect(t.counters.badAccesses).toBe(5);
    expect(t.read(VIRTIO_MMIO_SHM_SEL, 4)).toBe(0); // write-only: reads 0, counted
    await t.write(VIRTIO_MMIO_SHM_SEL, 4, 1);
    expect(t.read(VIRTIO_MMIO_SHM_LEN_LOW, 4)).toBe(0x2000);
    await t.write(VIRTIO_MMIO_STATUS, 4, 0);
    expect(t.read(VIRTIO_MMIO_SHM_LEN_LOW, 4)).toBe(0x1000); // SHMSel back to 0
  });
});
