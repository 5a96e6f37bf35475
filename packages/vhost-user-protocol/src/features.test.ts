import { describe, expect, it } from "vitest";
import {
  VhostUserProtocolFeature, protocolFeatureBit, protocolFeatureSet, describeProtocolFeatures, missingPrerequisites,
  hasProtocolFeature, configFlagsFor,
} from "./features.js";

describe("protocol feature bits", () => {
  it("match the spec's list (vhost-user.rst, bits 0..23)", () => {
    expect(Object.entries(VhostUserProtocolFeature)).toEqual([
      ["MQ", 0], ["LOG_SHMFD", 1], ["RARP", 2], ["REPLY_ACK", 3], ["MTU", 4], ["BACKEND_REQ", 5], ["CROSS_ENDIAN", 6],
      ["CRYPTO_SESSION", 7], ["PAGEFAULT", 8], ["CONFIG", 9], ["BACKEND_SEND_FD", 10], ["HOST_NOTIFIER", 11],
      ["INFLIGHT_SHMFD", 12], ["RESET_DEVICE", 13], ["INBAND_NOTIFICATIONS", 14], ["CONFIGURE_MEM_SLOTS", 15],
      ["STATUS", 16], ["XEN_MMAP", 17], ["SHARED_OBJECT", 18], ["DEVICE_STATE", 19], ["GET_VRING_BASE_INFLIGHT", 20],
      ["GPA_ADDRESSES", 21], ["SHMEM", 22], ["GET_VRING_BASE_SKIP_DRAIN", 23],
    ]);
  });

  it("moves SHMEM with the quirk (rust-vmm vhost <= 0.16 used 21, an early draft 20)", () => {
    expect(protocolFeatureBit("SHMEM")).toBe(22);
    expect(protocolFeatureBit("SHMEM", { shmemBit: 21 })).toBe(21);
    expect(protocolFeatureBit("SHMEM", { shmemBit: 20 })).toBe(20);
    expect(hasProtocolFeature(1n << 21n, "SHMEM", { shmemBit: 21 })).toBe(true);
    expect(hasProtocolFeature(1n << 21n, "SHMEM")).toBe(false);
  });

  it("describes what real back-ends advertise", () => {
    // qemu-storage-daemon 7.2 vhost-user-blk
    expect(describeProtocolFeatures(0x8f2bn)).toEqual([
      "MQ", "LOG_SHMFD", "REPLY_ACK", "BACKEND_REQ", "PAGEFAULT", "CONFIG", "BACKEND_SEND_FD", "HOST_NOTIFIER", "CONFIGURE_MEM_SLOTS",
    ]);
    // DPDK vhost_blk
    expect(describeProtocolFeatures(0x11ebfn)).toContain("STATUS");
    expect(describeProtocolFeatures(1n << 40n)).toEqual(["bit40"]);
  });

  it("knows prerequisites", () => {
    expect(missingPrerequisites(protocolFeatureSet(["INBAND_NOTIFICATIONS"]))).toEqual([
      ["INBAND_NOTIFICATIONS", "BACKEND_REQ"], ["INBAND_NOTIFICATIONS", "REPLY_ACK"],
    ]);
    expect(missingPrerequisites(protocolFeatureSet(["INBAND_NOTIFICATIONS", "BACKEND_REQ", "REPLY_ACK"]))).toEqual([]);
  });

  it("config flags: spec 0/1, rust-vmm 1/2", () => {
    expect(configFlagsFor("writable")).toBe(0);
    expect(configFlagsFor("live-migration")).toBe(1);
    expect(configFlagsFor("writable", { configFlags: "rust-vmm" })).toBe(1);
    expect(configFlagsFor("live-migration", { configFlags: "rust-vmm" })).toBe(2);
  });
});
