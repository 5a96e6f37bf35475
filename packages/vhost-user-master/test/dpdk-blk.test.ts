// Against DPDK 22.11's examples/vhost_blk (a 128 MiB RAM disk, busy-polling): the back-end that offers
// INFLIGHT_SHMFD and STATUS. The example ships as source in Debian's dpdk-doc; the test builds it once
// (needs dpdk-dev, make, a C compiler) into a cache directory and starts it itself.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { readFileSync, readdirSync } from "node:fs";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { describeProtocolFeatures } from "@xen-vhost/vhost-user-protocol";
import { RequestRecorder } from "../src/testing/request-recorder.js";
import { noteCheck } from "./exercised.js";
import { Frontend, fromCRegion } from "../src/index.js";
import { hasDpdkVhostBlk, startDpdkVhostBlk, DPDK_BLK_BLOCKS, type DpdkVhostBlk } from "../src/testing/dpdk-blk.js";
import { BlkDriver, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from "../src/testing/blk-driver.js";
import { session as driverSession, DATA as SESSION_DATA } from "../src/testing/driver-session.js";

const VIRTIO_F_VERSION_1 = 1n << 32n;
const F_PROTOCOL_FEATURES = 1n << 30n;
const QSIZE = 64;

describe.skipIf(!hasDpdkVhostBlk)("DPDK examples/vhost_blk (needs dpdk-doc, dpdk-dev, make and cc)", () => {
  let blk: DpdkVhostBlk;
  let socket: string;
  let leaks: ReturnType<typeof fdLeakCheck>;
  const cleanup: (() => void)[] = [];

  beforeAll(async () => {
    blk = await startDpdkVhostBlk();
    socket = blk.socket;
  }, 180_000);
  const rec = new RequestRecorder();
  afterAll(noteCheck("dpdk-vhost-blk", rec));
  afterAll(async () => {
    await blk?.stop();
  });
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    while (cleanup.length) cleanup.pop()!();
    expect(leaks.check()).toEqual([]);
  });

  interface Session {
    fe: Frontend;
    mem: GuestMemory;
    q: DriverQueue<number>;
    kick: EventFd;
  }

  async function session(options: Parameters<typeof Frontend.connect>[1] = {}): Promise<Session> {
    const fe = await Frontend.connect(socket, { timeoutMs: 3000, logger: rec, ...options });
    cleanup.push(() => fe.close());
    const n = await fe.negotiate({ features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES });
    expect(describeProtocolFeatures(n.protocolFeatures)).toEqual(expect.arrayContaining(["INFLIGHT_SHMFD", "STATUS", "REPLY_ACK", "CONFIG"]));
    const mem = GuestMemory.fromRanges([[0, 0x40_0000]]);
    cleanup.push(() => mem.close());
    await fe.setMemory(mem.vhostUserRegions().map(fromCRegion));
    const area = await fe.getInflightFd(1, QSIZE);
    expect(area.mmapSize).toBeGreaterThan(0n);
    await fe.setInflightFd(area);
    const q = DriverQueue.create<number>(mem, 0, QSIZE);
    const kick = new EventFd();
    const call = new EventFd();
    cleanup.push(() => kick.close(), () => call.close());
    await fe.setupVring(0, {
      num: QSIZE, desc: fe.userAddrOf(q.descTable.value), avail: fe.userAddrOf(q.availRing.value), used: fe.userAddrOf(q.usedRing.value),
      kick: kick.fd, call: call.fd,
    });
    await fe.driverOk();
    return { fe, mem, q, kick };
  }

  const HDR = 0x10_0000, DATA = 0x20_0000, STATUS = 0x30_0000;
  async function io(s: Session, type: number, sector: bigint, len: number, data?: Uint8Array): Promise<{ status: number; data: Uint8Array }> {
    const hdr = new Uint8Array(16);
    new DataView(hdr.buffer).setUint32(0, type, true);
    new DataView(hdr.buffer).setBigUint64(8, sector, true);
    s.mem.write(HDR, hdr);
    s.mem.write(STATUS, Uint8Array.of(0xff));
    if (data) s.mem.write(DATA, data);
    const buf = { addr: DATA, len };
    s.q.add(data
      ? { readable: [{ addr: HDR, len: 16 }, buf], writable: [{ addr: STATUS, len: 1 }] }
      : { readable: [{ addr: HDR, len: 16 }], writable: [buf, { addr: STATUS, len: 1 }] });
    s.kick.write(1);
    for (let i = 0; i < 3000 && !s.q.hasUsed(); i++) await new Promise((r) => setTimeout(r, 1));
    if (!s.q.getUsed()) throw new Error("no used element");
    return { status: s.mem.read(STATUS, 1)[0]!, data: s.mem.read(DATA, len) };
  }
  const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff);

  it("STATUS + INFLIGHT_SHMFD: I/O, then a planned reconnect that replays the inflight area and ring state", async () => {
    const s = await session();
    expect((await io(s, 1, 8n, 4096, pattern)).status).toBe(0);
    expect((await io(s, 0, 8n, 4096)).data).toEqual(pattern);
    {
      // DPDK records its ring in the area the front-end holds: used_idx 2, nothing owed
      using region = s.fe.mapInflight();
      expect(region.usedIdx(0)).toBe(2);
      expect(region.inflightHeads(0)).toEqual([]);
      expect(region.queue(0).desc_num).toBe(QSIZE);
    }
    await s.fe.reconnect();
    expect(s.fe.connected).toBe(true);
    expect((await io(s, 0, 8n, 4096)).data).toEqual(pattern);
    expect(await s.fe.getVringBase(0)).toBe(3);
  }, 60_000);

  it("crash + restart: the ring resumes from the inflight area's used_idx (no restoreVringBase hook)", async () => {
    const s = await session({ reconnect: { attempts: 300, initialDelayMs: 10, maxDelayMs: 50 } });
    expect((await io(s, 1, 16n, 4096, pattern)).status).toBe(0);
    expect((await io(s, 0, 16n, 4096)).data).toEqual(pattern);
    const reconnected = new Promise<void>((r) => s.fe.once("reconnect", r));
    await blk.crash();
    await blk.restart();
    await reconnected;
    expect(s.fe.connected).toBe(true);
    // the RAM disk died with the process; the ring did not: the next request is served in place
    expect((await io(s, 1, 24n, 4096, pattern)).status).toBe(0);
    expect((await io(s, 0, 24n, 4096)).data).toEqual(pattern);
    // 2 requests before the crash + 2 after: the base given to the new process was the inflight used_idx (2)
    expect(await s.fe.getVringBase(0)).toBe(4);
  }, 60_000);

  it("a request posted while the back-end is frozen, then killed, is served by the restarted back-end: not lost", async () => {
    const s = await session({ reconnect: { attempts: 300, initialDelayMs: 10, maxDelayMs: 50 } });
    expect((await io(s, 1, 32n, 4096, pattern)).status).toBe(0);
    process.kill(blk.pid, "SIGSTOP");
    cleanup.push(() => {
      try {
        process.kill(blk.pid, "SIGCONT"); // if the test failed before the kill, leave a running daemon behind
      } catch {
        /* already gone */
      }
    });
    await frozen(blk.pid);
    // a write the frozen back-end cannot have seen: it sits in the avail ring past the inflight area's used_idx
    const other = Uint8Array.from(pattern, (b) => b ^ 0xa5);
    const hdr = new Uint8Array(16);
    new DataView(hdr.buffer).setUint32(0, 1, true);
    new DataView(hdr.buffer).setBigUint64(8, 40n, true);
    s.mem.write(HDR, hdr);
    s.mem.write(STATUS, Uint8Array.of(0xff));
    s.mem.write(DATA, other);
    s.q.add({ readable: [{ addr: HDR, len: 16 }, { addr: DATA, len: 4096 }], writable: [{ addr: STATUS, len: 1 }] });
    s.kick.write(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(s.q.hasUsed()).toBe(false);
    const reconnected = new Promise<void>((r) => s.fe.once("reconnect", r));
    await blk.crash();
    await blk.restart();
    await reconnected;
    // nobody re-posts it: the new process starts at used_idx 1 and finds the request at avail index 1
    for (let i = 0; i < 3000 && !s.q.hasUsed(); i++) await new Promise((r) => setTimeout(r, 1));
    expect(s.q.getUsed()).toBeDefined();
    expect(s.mem.read(STATUS, 1)[0]).toBe(0);
    expect((await io(s, 0, 40n, 4096)).data).toEqual(other);
    expect(await s.fe.getVringBase(0)).toBe(3);
  }, 60_000);

  it("20,000 blocks written then read back at queue depth 1 and at queue depth 32, every payload checked", async () => {
    const s = await driverSession(socket, [128], { features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES, memSize: 0x40_0000, inflight: true, driverOk: true, frontend: { logger: rec } });
    cleanup.push(() => s.close());
    expect(describeProtocolFeatures(s.fe.protocolFeatures)).toEqual(expect.arrayContaining(["STATUS", "INFLIGHT_SHMFD"]));
    const ring = s.rings[0]!;
    const drv = new BlkDriver(s.mem, ring.driver, ring.kick, { base: SESSION_DATA });
    const N = 20_000;
    expect(N).toBeLessThan(DPDK_BLK_BLOCKS);
    const failures: string[] = [];
    const fail = (what: string) => failures.length < 10 && failures.push(what);

    for (const [pass, depth] of [[1, 1], [2, 32]] as const) {
      const writeOrder = pass === 1 ? Array.from({ length: N }, (_, i) => i) : shuffled(N, 7);
      const readOrder = shuffled(N, 11 + pass);
      let maxInFlight = 0;
      const track = () => (maxInFlight = Math.max(maxInFlight, ring.driver.inFlight));
      await drv.run(N, (i) => {
        track();
        const b = writeOrder[i]!;
        return { type: VIRTIO_BLK_T_OUT, sector: BigInt(b) * 8n, len: 4096, data: blockPayload(b, pass) };
      }, (i, c) => {
        if (c.status !== 0) fail(`pass ${pass}: write of block ${writeOrder[i]} status ${c.status}`);
      }, { depth });
      await drv.run(N, (i) => {
        track();
        return { type: VIRTIO_BLK_T_IN, sector: BigInt(readOrder[i]!) * 8n, len: 4096 };
      }, (i, c) => {
        const b = readOrder[i]!;
        if (c.status !== 0) fail(`pass ${pass}: read of block ${b} status ${c.status}`);
        else if (!Buffer.from(c.data!).equals(blockPayload(b, pass))) fail(`pass ${pass}: block ${b} read back wrong (${Buffer.from(c.data!.subarray(0, 12)).toString("hex")})`);
      }, { depth });
      // queue depth really reached: `make` runs with depth - 1 requests already in flight
      expect(maxInFlight).toBe(depth - 1);
    }
    expect(failures).toEqual([]);
    // every request of the four runs went through the ring: 80,000 avail entries
    expect(ring.driver.availIdx).toBe((4 * N) & 0xffff);
    using region = s.fe.mapInflight();
    expect(region.usedIdx(0)).toBe((4 * N) & 0xffff);
    expect(region.inflightHeads(0)).toEqual([]);
  }, 300_000);
});

/** Resolves once every thread of `pid` is stopped (state T in /proc): SIGSTOP takes effect asynchronously. */
async function frozen(pid: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const states = readdirSync(`/proc/${pid}/task`).map((t) => /\) (\w)/.exec(readFileSync(`/proc/${pid}/task/${t}/stat`, "utf8"))?.[1]);
    if (states.every((st) => st === "T" || st === "t")) return;
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`process ${pid} did not stop`);
}

/** Block `b`'s content in pass `pass`: "VBLK", u32 block, u32 pass, then xorshift32 words seeded by both. */
function blockPayload(b: number, pass: number): Buffer {
  const buf = Buffer.alloc(4096);
  const w = new Uint32Array(buf.buffer, buf.byteOffset, 1024);
  w[0] = 0x4b4c4256;
  w[1] = b;
  w[2] = pass;
  let x = (Math.imul(b + 1, 0x9e3779b1) ^ Math.imul(pass, 0x85ebca6b)) >>> 0 || 1;
  for (let i = 3; i < 1024; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    w[i] = x;
  }
  return buf;
}

/** 0..n-1 in a seeded random order (Fisher-Yates over a small LCG). */
function shuffled(n: number, seed: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  let r = seed >>> 0;
  for (let i = n - 1; i > 0; i--) {
    r = (Math.imul(r, 1664525) + 1013904223) >>> 0;
    const j = r % (i + 1);
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}
