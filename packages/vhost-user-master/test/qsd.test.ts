// Against a real, independent back-end: qemu-storage-daemon's vhost-user-blk export (libvhost-user).
// Handshake, config, memory tables (ADD_MEM_REG and SET_MEM_TABLE paths), ring setup, reconnects, and
// real block I/O through packages/virtio-queue's driver over packages/vm-memory's memfd guest memory.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { describeProtocolFeatures } from "@xen-vhost/vhost-user-protocol";
import { RequestRecorder } from "../src/testing/request-recorder.js";
import { noteCheck } from "./exercised.js";
import { Frontend, fromCRegion, DEFAULT_PROTOCOL_FEATURES } from "../src/index.js";
import { hasQsd, startQsd, sectorContent, SECTOR, type Qsd } from "../src/testing/qsd.js";
import { session as driverSession, DATA as SESSION_DATA } from "../src/testing/driver-session.js";
import { BlkDriver } from "../src/testing/blk-driver.js";

const VIRTIO_F_VERSION_1 = 1n << 32n;
const F_PROTOCOL_FEATURES = 1n << 30n;
const VIRTIO_BLK_F_FLUSH = 1n << 9n;
const VIRTIO_BLK_T_IN = 0;
const VIRTIO_BLK_T_OUT = 1;
const VIRTIO_BLK_T_FLUSH = 4;
const VIRTIO_BLK_T_GET_ID = 8;
const QUEUE_SIZE = 64;

let qsd: Qsd;
const rec = new RequestRecorder();
if (hasQsd) afterAll(noteCheck("qsd", rec));
const cleanup: (() => void)[] = [];
let leaks: ReturnType<typeof fdLeakCheck>;

describe.skipIf(!hasQsd)("qemu-storage-daemon vhost-user-blk (needs qemu-storage-daemon from qemu-system-common)", () => {
  beforeAll(async () => {
    qsd = await startQsd();
  });
  afterAll(async () => {
    await qsd?.stop();
  });
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    while (cleanup.length) cleanup.pop()!();
    expect(leaks.check()).toEqual([]);
  });

  async function open(options: Parameters<typeof Frontend.connect>[1] = {}): Promise<Frontend> {
    const fe = await Frontend.connect(qsd.socket, { timeoutMs: 3000, logger: rec, ...options });
    cleanup.push(() => fe.close());
    return fe;
  }

  it("handshake: features, protocol features, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, GET_CONFIG capacity", async () => {
    const fe = await open();
    const n = await fe.negotiate({ features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES | VIRTIO_BLK_F_FLUSH });
    expect(n.offeredFeatures & VIRTIO_F_VERSION_1).toBe(VIRTIO_F_VERSION_1);
    expect(n.offeredFeatures & F_PROTOCOL_FEATURES).toBe(F_PROTOCOL_FEATURES);
    expect(describeProtocolFeatures(n.offeredProtocolFeatures)).toEqual(expect.arrayContaining(["MQ", "REPLY_ACK", "BACKEND_REQ", "CONFIG", "CONFIGURE_MEM_SLOTS"]));
    expect(describeProtocolFeatures(n.protocolFeatures).sort()).toEqual(
      DEFAULT_PROTOCOL_FEATURES.filter((f) => describeProtocolFeatures(n.offeredProtocolFeatures).includes(f)).sort(),
    );
    expect(n.queueNum).toBe(1);
    expect(n.maxMemSlots).toBeGreaterThanOrEqual(8);
    // struct virtio_blk_config: u64 capacity (512-byte sectors) at offset 0
    const cfg = await fe.getConfig(0, 8);
    expect(new DataView(cfg.buffer).getBigUint64(0, true)).toBe(BigInt(qsd.sectors));
    // blk_size at offset 20 (VIRTIO_BLK_F_BLK_SIZE). libvhost-user ignores the offset of GET_CONFIG and
    // always copies from the start of the config space (QEMU only ever reads from 0), so read from 0.
    const whole = await fe.getConfig(0, 24);
    expect(new DataView(whole.buffer).getUint32(20, true)).toBe(512);
    expect(new DataView((await fe.getConfig(20, 4)).buffer).getUint32(0, true)).toBe(qsd.sectors); // the quirk, observed
  });

  it("memory by ADD_MEM_REG (CONFIGURE_MEM_SLOTS) and by SET_MEM_TABLE, ring setup, GET_VRING_BASE", async () => {
    for (const protocolFeatures of [DEFAULT_PROTOCOL_FEATURES, DEFAULT_PROTOCOL_FEATURES.filter((f) => f !== "CONFIGURE_MEM_SLOTS")]) {
      const fe = await open();
      await fe.negotiate({ features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES, protocolFeatures });
      const mem = GuestMemory.fromRanges([[0, 0x10_0000], [0x20_0000, 0x10_0000]]);
      cleanup.push(() => mem.close());
      await fe.setMemory(mem.vhostUserRegions().map(fromCRegion));
      expect(fe.memoryRegions).toHaveLength(2);
      const kick = new EventFd();
      const call = new EventFd();
      cleanup.push(() => kick.close(), () => call.close());
      const q = DriverQueue.create(mem, 0x20_0000, QUEUE_SIZE);
      await fe.setupVring(0, {
        num: QUEUE_SIZE, desc: fe.userAddrOf(q.descTable.value), avail: fe.userAddrOf(q.availRing.value), used: fe.userAddrOf(q.usedRing.value),
        kick: kick.fd, call: call.fd,
      });
      expect(await fe.getVringBase(0)).toBe(0);
      fe.close();
    }
  });

  describe("block I/O through virtio-queue", () => {
    interface Blk {
      fe: Frontend;
      mem: GuestMemory;
      q: DriverQueue<number>;
      kick: EventFd;
      call: EventFd;
    }

    async function setup(fe: Frontend): Promise<Blk> {
      await fe.negotiate({ features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES | VIRTIO_BLK_F_FLUSH });
      const mem = GuestMemory.fromRanges([[0, 0x40_0000]]);
      cleanup.push(() => mem.close());
      await fe.setMemory(mem.vhostUserRegions().map(fromCRegion));
      const q = DriverQueue.create<number>(mem, 0, QUEUE_SIZE);
      const kick = new EventFd();
      const call = new EventFd();
      cleanup.push(() => kick.close(), () => call.close());
      await fe.setupVring(0, {
        num: QUEUE_SIZE, desc: fe.userAddrOf(q.descTable.value), avail: fe.userAddrOf(q.availRing.value), used: fe.userAddrOf(q.usedRing.value),
        kick: kick.fd, call: call.fd,
      });
      await fe.driverOk();
      return { fe, mem, q, kick, call };
    }

    const HDR = 0x10_0000;
    const DATA = 0x20_0000;
    const STATUS = 0x30_0000;

    /** One request: header, optional data (readable for OUT, writable for IN/GET_ID), status. */
    async function request(b: Blk, type: number, sector: bigint, data?: { len: number; write?: Uint8Array }): Promise<{ status: number; len: number; data?: Uint8Array }> {
      const hdr = new Uint8Array(16);
      const v = new DataView(hdr.buffer);
      v.setUint32(0, type, true);
      v.setBigUint64(8, sector, true);
      b.mem.write(HDR, hdr);
      b.mem.write(STATUS, Uint8Array.of(0xff));
      if (data?.write) b.mem.write(DATA, data.write);
      const readable = [{ addr: HDR, len: 16 }];
      const writable = [];
      if (data && data.write) readable.push({ addr: DATA, len: data.len });
      else if (data) writable.push({ addr: DATA, len: data.len });
      writable.push({ addr: STATUS, len: 1 });
      b.q.add({ readable, writable }, { token: type });
      b.kick.write(1);
      for (let i = 0; i < 2000 && !b.q.hasUsed(); i++) await new Promise((r) => setTimeout(r, 1));
      const used = b.q.getUsed();
      if (!used) throw new Error("no used element within 2 s");
      const out: { status: number; len: number; data?: Uint8Array } = { status: b.mem.read(STATUS, 1)[0]!, len: used.len };
      if (data && !data.write) out.data = b.mem.read(DATA, data.len);
      return out;
    }

    it("reads known sectors, writes and reads back, flushes, GET_ID", async () => {
      const b = await setup(await open());
      for (const s of [0, 1, 7, 4095, qsd.sectors - 1]) {
        const r = await request(b, VIRTIO_BLK_T_IN, BigInt(s), { len: SECTOR });
        expect(r.status).toBe(0);
        expect(r.data).toEqual(sectorContent(s));
      }
      // 4 sectors in one request
      const multi = await request(b, VIRTIO_BLK_T_IN, 100n, { len: 4 * SECTOR });
      expect(multi.data).toEqual(Uint8Array.from([100, 101, 102, 103].flatMap((i) => [...sectorContent(i)])));

      const pattern = Uint8Array.from({ length: SECTOR }, (_, i) => (i * 13 + 5) & 0xff);
      expect((await request(b, VIRTIO_BLK_T_OUT, 42n, { len: SECTOR, write: pattern })).status).toBe(0);
      expect((await request(b, VIRTIO_BLK_T_IN, 42n, { len: SECTOR })).data).toEqual(pattern);
      expect((await request(b, VIRTIO_BLK_T_FLUSH, 0n)).status).toBe(0);
      // the write reached the image file
      expect(new Uint8Array(readFileSync(qsd.image).subarray(42 * SECTOR, 43 * SECTOR))).toEqual(pattern);

      const id = await request(b, VIRTIO_BLK_T_GET_ID, 0n, { len: 20 });
      expect(id.status).toBe(0);
      // qsd answers with the export's node name (NUL padded)
      expect(new TextDecoder().decode(id.data).replace(/\0+$/, "")).toMatch(/\S/);

      // reading past the end is an I/O error status, not a crash
      expect((await request(b, VIRTIO_BLK_T_IN, BigInt(qsd.sectors), { len: SECTOR })).status).not.toBe(0);
      expect(await b.fe.getVringBase(0)).toBe(b.q.availIdx);
    });

    it("reconnect after the front-end closes: a new front-end, and a planned reconnect that replays ring state", async () => {
      const first = await open();
      const b = await setup(first);
      expect((await request(b, VIRTIO_BLK_T_IN, 3n, { len: SECTOR })).data).toEqual(sectorContent(3));
      first.close();
      // qsd accepts a new front-end after the old one closed
      const second = await open();
      const c = await setup(second);
      expect((await request(c, VIRTIO_BLK_T_IN, 5n, { len: SECTOR })).data).toEqual(sectorContent(5));
      // planned reconnect: GET_VRING_BASE saves the ring position, the new session resumes there
      const reconnected = new Promise<void>((r) => second.once("reconnect", r));
      await second.reconnect();
      await reconnected;
      expect((await request(c, VIRTIO_BLK_T_IN, 6n, { len: SECTOR })).data).toEqual(sectorContent(6));
      expect((await request(c, VIRTIO_BLK_T_IN, 7n, { len: SECTOR })).data).toEqual(sectorContent(7));
      expect(await second.getVringBase(0)).toBe(3);
    });

    it("back-end crash: the front-end reconnects to the restarted daemon, replays state and I/O resumes", async () => {
      const ring: { blk?: Blk } = {};
      const fe = await open({
        reconnect: { attempts: 200, initialDelayMs: 10, maxDelayMs: 50 },
        // after a crash the ring resumes at the used index the guest already harvested
        restoreVringBase: (index) => (index === 0 && ring.blk ? ring.blk.q.lastUsed : 0),
      });
      const blk = (ring.blk = await setup(fe));
      expect((await request(blk, VIRTIO_BLK_T_IN, 11n, { len: SECTOR })).data).toEqual(sectorContent(11));
      const disconnected = new Promise<string>((r) => fe.once("disconnect", (e) => r(e.kind)));
      const reconnected = new Promise<void>((r) => fe.once("reconnect", r));
      await qsd.crash();
      expect(await disconnected).toBe("Disconnected");
      qsd = await startQsd({ reuse: qsd });
      await reconnected;
      expect(fe.connected).toBe(true);
      expect((await request(blk, VIRTIO_BLK_T_IN, 12n, { len: SECTOR })).data).toEqual(sectorContent(12));
      expect(await fe.getVringBase(0)).toBe(2);
    });
  });
});

describe.skipIf(!hasQsd)("qemu-storage-daemon vhost-user-blk with num-queues=4 (needs qemu-storage-daemon)", () => {
  let mq: Qsd;
  let leaks4: ReturnType<typeof fdLeakCheck>;
  const done: (() => void)[] = [];
  beforeAll(async () => {
    mq = await startQsd({ numQueues: 4 });
  });
  afterAll(async () => {
    await mq?.stop();
  });
  beforeEach(() => {
    leaks4 = fdLeakCheck();
  });
  afterEach(() => {
    while (done.length) done.pop()!();
    expect(leaks4.check()).toEqual([]);
  });

  it("GET_QUEUE_NUM = 4, config num_queues = 4, and I/O on all four rings at once", async () => {
    const VIRTIO_BLK_F_MQ = 1n << 12n;
    const s = await driverSession(mq.socket, [64, 64, 64, 64], { features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES | VIRTIO_BLK_F_MQ, memSize: 0x40_0000, frontend: { logger: rec } });
    done.push(() => s.close());
    expect(s.negotiated.queueNum).toBe(4);
    expect(s.negotiated.features & VIRTIO_BLK_F_MQ).toBe(VIRTIO_BLK_F_MQ);
    // struct virtio_blk_config: le16 num_queues at offset 34 (read from 0: libvhost-user ignores the offset)
    expect(new DataView((await s.fe.getConfig(0, 36)).buffer).getUint16(34, true)).toBe(4);

    // Each ring reads known sectors and writes its own, 4 requests in flight per ring, all four rings at once;
    // then each ring reads back what another ring wrote.
    const PER_RING = 200;
    const drivers = s.rings.map((r, i) => new BlkDriver(s.mem, r.driver, r.kick, { base: SESSION_DATA + i * 0x8_0000 }));
    const pattern = (ring: number, k: number) => Uint8Array.from({ length: SECTOR }, (_, j) => (ring * 61 + k * 7 + j) & 0xff);
    const target = (ring: number, k: number) => 8000 + ring * PER_RING + k;
    const bad: string[] = [];
    await Promise.all(drivers.map((d, ring) => d.run(2 * PER_RING, (i) => {
      const k = i >> 1;
      return i % 2 === 0
        ? { type: VIRTIO_BLK_T_IN, sector: ring * PER_RING + k, len: SECTOR }
        : { type: VIRTIO_BLK_T_OUT, sector: target(ring, k), len: SECTOR, data: pattern(ring, k) };
    }, (i, c) => {
      const k = i >> 1;
      if (c.status !== 0) bad.push(`ring ${ring} request ${i}: status ${c.status}`);
      else if (i % 2 === 0 && !Buffer.from(c.data!).equals(sectorContent(ring * PER_RING + k))) bad.push(`ring ${ring}: sector ${ring * PER_RING + k} read wrong`);
    }, { depth: 4 })));
    expect(bad).toEqual([]);
    await Promise.all(drivers.map((d, ring) => {
      const from = (ring + 1) % 4;
      return d.run(PER_RING, (k) => ({ type: VIRTIO_BLK_T_IN, sector: target(from, k), len: SECTOR }), (k, c) => {
        if (c.status !== 0 || !Buffer.from(c.data!).equals(pattern(from, k))) bad.push(`ring ${ring}: sector ${target(from, k)} written by ring ${from} read wrong`);
      }, { depth: 4 });
    }));
    expect(bad).toEqual([]);
    // every ring carried its own requests: the back-end's next avail index per ring (GET_VRING_BASE stops it)
    for (let i = 0; i < 4; i++) expect(await s.fe.getVringBase(i)).toBe(3 * PER_RING);
  }, 60_000);

  it("INFLIGHT_SHMFD: qemu-storage-daemon 7.2 does not offer it, so GET_INFLIGHT_FD is refused before sending", async () => {
    const s = await driverSession(mq.socket, [], { features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES, frontend: { logger: rec } });
    done.push(() => s.close());
    // 7.2's vhost-user-blk export adds only CONFIG to libvhost-user's set (block/export/vhost-user-blk-server.c)
    expect(describeProtocolFeatures(s.negotiated.offeredProtocolFeatures)).not.toContain("INFLIGHT_SHMFD");
    await expect(s.fe.getInflightFd(1, 64)).rejects.toMatchObject({ kind: "InactiveFeature" });
    expect(s.fe.connected).toBe(true);
  });
});
