import { describe, expect, it } from "vitest";
import { Frontend } from "@xen-vhost/vhost-user-master";
import { FakeBackend, FAKE_PROTOCOL_FEATURES, FAKE_FEATURES } from "@xen-vhost/vhost-user-master/testing";
import { VhostUserError, VhostUserProtocolFeature } from "@xen-vhost/vhost-user-protocol";
import { GuestMemory, MmapRegion } from "@xen-vhost/vm-memory";
import { deviceType, VirtioMmioTransport } from "@xen-vhost/virtio-mmio";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import {
  VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VirtioFsConfig, VirtioNetConfig, fsTagProblem, parseMac, suppliedConfig,
} from "./device-config.js";
import { VhostUserDevice } from "./vhost-user-device.js";
import { MmioGuest } from "./shadow-guest.js";

const FS = deviceType("fs")!.id;
const NET = deviceType("net")!.id;
const bit = (n: number): bigint => 1n << BigInt(n);
const VIRTIO_NET_F_EVENT_IDX_RING = 29; // VIRTIO_RING_F_EVENT_IDX
const MAC = Uint8Array.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

describe("config space layouts (virtio 1.2 5.1.4, 5.11.4)", () => {
  it("virtio_fs_config: tag[36] NUL-padded, num_request_queues le32 at 36", () => {
    const c = suppliedConfig(FS, { fs: { tag: "myfs", requestQueues: 3 } }, undefined)!;
    expect(c.bytes.length).toBe(40);
    expect([...c.bytes.subarray(0, 6)]).toEqual([0x6d, 0x79, 0x66, 0x73, 0, 0]);
    expect(c.bytes.subarray(4, 36).every((b) => b === 0)).toBe(true);
    expect([...c.bytes.subarray(36)]).toEqual([3, 0, 0, 0]);
    expect(c.queues).toBe(4); // hiprio + 3 request queues
    expect(c.features).toBe(0n);
    expect(VirtioFsConfig.offsetOf("num_request_queues")).toBe(36);
  });

  it("a 36-byte tag fills the field with no NUL; request queues default to the backend's count minus hiprio", () => {
    const tag = "t".repeat(34) + "é"; // 36 bytes of UTF-8
    const c = suppliedConfig(FS, { fs: { tag } }, 3)!;
    expect(new TextDecoder().decode(c.bytes.subarray(0, 36))).toBe(tag);
    expect(VirtioFsConfig.decode(c.bytes).num_request_queues).toBe(2);
    expect(suppliedConfig(FS, {}, undefined)!.describe).toEqual({ tag: "virtiofs", requestQueues: 1 });
  });

  it("refuses more request queues than the backend has, and bad tags", () => {
    expect(() => suppliedConfig(FS, { fs: { requestQueues: 4 } }, 2)).toThrow(/needs 5 queues, the backend has 2/);
    expect(fsTagProblem("x".repeat(37))).toMatch(/37 bytes/);
    expect(fsTagProblem("é".repeat(19))).toMatch(/38 bytes/);
    expect(fsTagProblem("")).toMatch(/empty/);
    expect(fsTagProblem("a\nb")).toMatch(/newline/);
    expect(fsTagProblem("x".repeat(36))).toBeUndefined();
  });

  it("virtio_net_config: mac, status LINK_UP, max_virtqueue_pairs, mtu; MAC/STATUS/MTU features", () => {
    const c = suppliedConfig(NET, { net: { mac: MAC, mtu: 1400 } }, 2)!;
    expect(c.bytes.length).toBe(12);
    expect(VirtioNetConfig.decode(c.bytes)).toEqual({ mac: MAC, status: 1, max_virtqueue_pairs: 1, mtu: 1400 });
    expect(c.features).toBe(bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS) | bit(VIRTIO_NET_F_MTU));
    // one pair and no MQ (QEMU's mq=off), whatever the backend's GET_QUEUE_NUM maximum (DPDK: 128)
    expect(VirtioNetConfig.decode(suppliedConfig(NET, {}, 128)!.bytes).max_virtqueue_pairs).toBe(1);
    // and no control queue (QEMU serves it itself; backends get data queues only): CTRL_VQ and its dependents
    expect(c.queues).toBe(2);
    expect(c.withdraw & bit(VIRTIO_NET_F_MQ)).not.toBe(0n);
    expect(c.withdraw & bit(VIRTIO_NET_F_CTRL_VQ)).not.toBe(0n);
    expect(c.withdraw & (bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS))).toBe(0n);
    const noMac = suppliedConfig(NET, {}, undefined)!;
    expect(noMac.features).toBe(bit(VIRTIO_NET_F_STATUS));
    expect(suppliedConfig(deviceType("rng")!.id, {}, undefined)).toBeUndefined();
  });

  it("parses MACs and refuses malformed, multicast and zero ones", () => {
    expect(parseMac("52:54:00:12:34:56")).toEqual(MAC);
    expect(parseMac("52-54-00-12-34-56")).toEqual(MAC);
    expect(parseMac("52:54:00:12:34")).toMatch(/expected a MAC/);
    expect(parseMac("52:54-00:12:34:56")).toMatch(/expected a MAC/);
    expect(parseMac("5g:54:00:12:34:56")).toMatch(/expected a MAC/);
    expect(parseMac("01:00:5e:00:00:01")).toMatch(/multicast/);
    expect(parseMac("00:00:00:00:00:00")).toMatch(/all-zero/);
  });
});

describe("a backend without VHOST_USER_PROTOCOL_F_CONFIG (in-process fake backend)", () => {
  const RAM = 0x4000_0000n;
  const noConfig = FAKE_PROTOCOL_FEATURES & ~bit(VhostUserProtocolFeature.CONFIG);

  async function device(deviceId: number, protocolFeatures: bigint, config?: Uint8Array): Promise<{ dev: VhostUserDevice; be: FakeBackend; mem: GuestMemory }> {
    // the backend offers VIRTIO_NET_F_MQ (as DPDK does); with the bridge's config space the guest must not see it
    const [stream, be] = FakeBackend.pair({ protocolFeatures, queueNum: 2, features: FAKE_FEATURES | bit(VIRTIO_NET_F_MQ) | bit(VIRTIO_NET_F_CTRL_VQ), ...(config ? { config } : {}) });
    const mem = new GuestMemory([MmapRegion.memfd(RAM, 1 << 20)]);
    const dev = await VhostUserDevice.create({
      frontend: Frontend.fromStream(stream), deviceId, defaultQueues: 2, queueMaxSize: 64, configSize: deviceType(deviceId)!.configSize,
      memory: () => [], translate: (a) => a, shadow: "always", guestMemory: () => mem,
      suppliedConfig: (q) => suppliedConfig(deviceId, { net: { mac: MAC }, fs: { tag: "myfs" } }, q),
    });
    return { dev, be, mem };
  }

  it("net: the guest reads the bridge's MAC and link status and may ack MAC/STATUS; SET_FEATURES leaves them out", async () => {
    const leaks = fdLeakCheck();
    const { dev, be, mem } = await device(NET, noConfig);
    expect(dev.configSupplied).toBe(true);
    const want = bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS);
    expect(dev.features & want).toBe(want);
    expect(dev.features & (bit(VIRTIO_NET_F_MQ) | bit(VIRTIO_NET_F_CTRL_VQ))).toBe(0n);
    const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: 1 << 20, queueSizes: [64, 64], wantFeatures: want });
    expect(g.features & want).toBe(want); // the guest acked them
    const cfg = await Promise.all([0, 1, 2, 3, 4, 5].map(async (i) => Number(await g.mmio.read(0x100 + i, 1))));
    expect(cfg).toEqual([...MAC]);
    expect(Number(await g.mmio.read(0x106, 2))).toBe(1); // VIRTIO_NET_S_LINK_UP
    // the backend got only what it offered (VERSION_1, EVENT_IDX, PROTOCOL_FEATURES), not NET_F_MAC/STATUS
    expect(be.features & want).toBe(0n);
    expect(be.features & ~FAKE_FEATURES).toBe(0n);
    expect(be.features & bit(VIRTIO_NET_F_EVENT_IDX_RING)).not.toBe(0n); // what both sides offered does go through
    await expect(dev.writeConfig(0, 1, 0)).rejects.toThrow(/read-only/);
    await g.reset();
    dev.close();
    be.close();
    mem.close();
    await new Promise((r) => setTimeout(r, 20));
    expect(leaks.check()).toEqual([]);
  });

  it("fs: tag and request-queue count through the register file", async () => {
    const { dev, be, mem } = await device(FS, noConfig);
    expect(dev.numQueues).toBe(2);
    const t = new Transport(dev);
    expect(await t.tag()).toBe("myfs");
    expect(Number(await t.mmio.read(0x100 + 36, 4))).toBe(1);
    dev.close();
    be.close();
    mem.close();
  });

  it("a backend with CONFIG keeps its own config space and no feature is added", async () => {
    const own = new Uint8Array(12).fill(0xab);
    const { dev, be, mem } = await device(NET, FAKE_PROTOCOL_FEATURES, own);
    expect(dev.configSupplied).toBe(false);
    expect(dev.features & bit(VIRTIO_NET_F_MAC)).toBe(0n);
    expect(dev.features & bit(VIRTIO_NET_F_MQ)).not.toBe(0n); // the backend's own config: its MQ stays
    expect(Number(await new Transport(dev).mmio.read(0x100, 4))).toBe(0xabababab);
    dev.close();
    be.close();
    mem.close();
  });

  it("a request-queue count the backend cannot serve fails create() with a typed error", async () => {
    const [stream, be] = FakeBackend.pair({ protocolFeatures: noConfig, queueNum: 2 });
    const fe = Frontend.fromStream(stream);
    const e: unknown = await VhostUserDevice.create({
      frontend: fe, deviceId: FS, defaultQueues: 2, queueMaxSize: 64, configSize: 40, memory: () => [], translate: (a) => a,
      suppliedConfig: (q) => suppliedConfig(FS, { fs: { requestQueues: 2 } }, q),
    }).then(() => undefined, (err: unknown) => err);
    expect(e).toBeInstanceOf(VhostUserError);
    expect((e as VhostUserError).kind).toBe("InvalidParam");
    expect((e as VhostUserError).message).toMatch(/needs 3 queues, the backend has 2/);
    fe.close();
    be.close();
  });
});

/** The register file alone (no driver): config reads as a guest does them. */
class Transport {
  readonly mmio: VirtioMmioTransport;
  constructor(dev: VhostUserDevice) {
    this.mmio = new VirtioMmioTransport(dev);
  }
  async tag(): Promise<string> {
    const raw = await Promise.all(Array.from({ length: 36 }, async (_, i) => Number(await this.mmio.read(0x100 + i, 1))));
    const end = raw.indexOf(0);
    return new TextDecoder().decode(Uint8Array.from(raw.slice(0, end < 0 ? 36 : end)));
  }
}
