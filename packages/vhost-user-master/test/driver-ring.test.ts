// DriverRing's completion modes against real back-ends: in poll mode the back-end is asked not to signal
// (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX) and must not need to; kicks honour the back-end's
// suppression. Payloads are checked, and the call eventfd's counter is read after the run (the ring is closed
// by then, so nothing else consumed it): a back-end that was still signalling leaves it non-zero.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY } from "@xen-vhost/virtio-queue";
import { DriverRing, type DriverRingStats } from "../src/index.js";
import { hasQsd, startQsd, sectorContent, SECTOR, type Qsd } from "../src/testing/qsd.js";
import { hasDpdkVhostBlk, startDpdkVhostBlk, DPDK_BLK_BLOCKS, type DpdkVhostBlk } from "../src/testing/dpdk-blk.js";
import { session, DATA, type Session } from "../src/testing/driver-session.js";
import { BlkDriver, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, type BlkRunOptions } from "../src/testing/blk-driver.js";

const F = (1n << 32n) | (1n << 30n); // VERSION_1 | PROTOCOL_FEATURES
const VIRTIO_RING_F_EVENT_IDX = 1n << 29n;
const N = 3000;
/** A spin budget no completion misses (2 s): in these tests poll mode must never need the call eventfd. */
const NEVER_SLEEP = 2_000_000;

let leaks: ReturnType<typeof fdLeakCheck>;
const cleanup: (() => void)[] = [];
beforeEach(() => {
  leaks = fdLeakCheck();
});
afterEach(() => {
  while (cleanup.length) cleanup.pop()!();
  expect(leaks.check()).toEqual([]);
});

async function open(socket: string, eventIdx: boolean, memSize = 0x80_0000): Promise<{ s: Session; drv: BlkDriver }> {
  const s = await session(socket, [128], { features: eventIdx ? F | VIRTIO_RING_F_EVENT_IDX : F, eventIdx, memSize, inflight: true, driverOk: true });
  cleanup.push(() => s.close());
  const ring = s.rings[0]!;
  const drv = new BlkDriver(s.mem, ring.driver, ring.kick, { base: DATA, call: ring.call });
  // Signals that are not about the driver's suppression, drained here: libvhost-user writes a new call fd once
  // ("in case of I/O hang after reconnecting"), and like Linux vhost it signals the first completion after the
  // ring starts whatever used_event says (signalled_used_valid is false until then).
  await drv.run(4, () => ({ type: VIRTIO_BLK_T_IN, sector: 0, len: 512 }), () => {});
  await new Promise((r) => setTimeout(r, 20));
  ring.call.read();
  return { s, drv };
}

/** Runs `n` reads of known sectors (qsd's image) and returns the ring's counters; every payload is compared. */
async function readKnownSectors(drv: BlkDriver, n: number, sectors: number, options: BlkRunOptions): Promise<DriverRingStats> {
  const bad: string[] = [];
  let stats: DriverRingStats | undefined;
  const sectorOf = (i: number) => (i * 7919) % sectors;
  await drv.run(n, (i) => ({ type: VIRTIO_BLK_T_IN, sector: sectorOf(i), len: SECTOR }), (i, c) => {
    if (c.status !== 0) bad.push(`request ${i}: status ${c.status}`);
    else if (!Buffer.from(c.data!).equals(sectorContent(sectorOf(i)))) bad.push(`sector ${sectorOf(i)} read wrong`);
  }, { ...options, stats: (st) => (stats = st) });
  expect(bad.slice(0, 5)).toEqual([]);
  return stats!;
}

describe("DriverRing without a back-end", () => {
  it("kicks only when the device did not set NO_NOTIFY; poll mode sets NO_INTERRUPT; close is idempotent", async () => {
    using mem = GuestMemory.fromRanges([[0, 0x20_0000]]);
    const q = DriverQueue.create<number>(mem, 0x1000, 8);
    using kick = new EventFd();
    using call = new EventFd();
    expect(() => new DriverRing(q, kick, call, { spinUs: -1 })).toThrow(RangeError);
    using ring = new DriverRing(q, kick, call, { completion: "poll", spinUs: 0 });
    expect(mem.load16(q.availRing.value) & VIRTQ_AVAIL_F_NO_INTERRUPT).toBe(VIRTQ_AVAIL_F_NO_INTERRUPT);
    q.add({ readable: [{ addr: 0x10_0000, len: 1 }] });
    expect(ring.notify()).toBe(true);
    expect(kick.read()).toBe(1n);
    mem.store16(q.usedRing.value, VIRTQ_USED_F_NO_NOTIFY);
    q.add({ readable: [{ addr: 0x10_0000, len: 1 }] });
    expect(ring.notify()).toBe(false);
    expect(kick.read()).toBeNull();
    expect(ring.stats).toMatchObject({ kicks: 1, kicksSuppressed: 1 });
    expect(ring.spin()).toBe(false);
    // a sleeping wait asks for the call, and turns it off again once woken
    const waiting = ring.wait();
    expect(mem.load16(q.availRing.value) & VIRTQ_AVAIL_F_NO_INTERRUPT).toBe(0);
    ring.wake();
    await waiting;
    expect(mem.load16(q.availRing.value) & VIRTQ_AVAIL_F_NO_INTERRUPT).toBe(VIRTQ_AVAIL_F_NO_INTERRUPT);
    expect(ring.stats.sleeps).toBe(1);
    // a call signal ends a sleep too
    const again = ring.wait();
    call.write(1);
    await again;
    expect(ring.stats.calls).toBe(1);
    ring.close();
    ring.close();
    expect(ring.closed).toBe(true);
  });
});

describe.skipIf(!hasQsd)("DriverRing against qemu-storage-daemon (needs qemu-storage-daemon)", () => {
  let qsd: Qsd;
  beforeAll(async () => {
    qsd = await startQsd();
  });
  afterAll(async () => {
    await qsd?.stop();
  });

  for (const eventIdx of [true, false]) {
    const how = eventIdx ? "used_event (EVENT_IDX)" : "VIRTQ_AVAIL_F_NO_INTERRUPT";
    it(`poll mode: ${N} reads at QD1 and QD8, payloads checked, no call eventfd write needed (${how})`, async () => {
      const { s, drv } = await open(qsd.socket, eventIdx);
      expect(s.rings[0]!.driver.eventIdx).toBe(eventIdx);
      for (const depth of [1, 8]) {
        const st = await readKnownSectors(drv, N, qsd.sectors, { depth, wait: "poll", spinUs: NEVER_SLEEP });
        expect({ depth, calls: st.calls, sleeps: st.sleeps, pending: s.rings[0]!.call.read() }).toEqual({ depth, calls: 0, sleeps: 0, pending: null });
        // qsd (libvhost-user) wants a kick for new requests: they were not suppressed away
        expect(st.kicks).toBeGreaterThan(0);
      }
    }, 60_000);
  }

  it("interrupt mode on the same ring: the back-end signals, so the check above can fail", async () => {
    const { s, drv } = await open(qsd.socket, true);
    const st = await readKnownSectors(drv, 200, qsd.sectors, { depth: 1, wait: "interrupt" });
    const pending = s.rings[0]!.call.read() ?? 0n;
    expect(st.calls + Number(pending)).toBeGreaterThan(0);
    expect(st.sleeps).toBeGreaterThan(0);
  }, 60_000);

  it("poll mode with no spin budget falls back to the call eventfd every time and still completes", async () => {
    const { s, drv } = await open(qsd.socket, true);
    const st = await readKnownSectors(drv, 300, qsd.sectors, { depth: 2, wait: "poll", spinUs: 0 });
    expect(st.sleeps).toBeGreaterThan(0);
    expect(st.calls).toBeGreaterThan(0);
    // the ring is left with interrupts on for the next user
    expect(s.rings[0]!.driver.interruptsDisabled).toBe(false);
  }, 60_000);
});

describe.skipIf(!hasDpdkVhostBlk)("DriverRing against DPDK examples/vhost_blk (needs dpdk-doc, dpdk-dev, make and cc)", () => {
  let blk: DpdkVhostBlk;
  // The example pins its polling worker to CPU 0; a front-end spinning on that CPU starves it for whole
  // timeslices (milliseconds per request), so this process moves off it while these tests run.
  let mask: string | undefined;
  beforeAll(async () => {
    blk = await startDpdkVhostBlk();
    if (cpus().length > 1) {
      mask = /: *([0-9a-f,]+)\s*$/.exec(spawnSync("taskset", ["-p", String(process.pid)], { encoding: "utf8" }).stdout ?? "")?.[1];
      spawnSync("taskset", ["-a", "-cp", String(cpus().length - 1), String(process.pid)], { stdio: "ignore" });
    }
  }, 180_000);
  afterAll(async () => {
    if (mask) spawnSync("taskset", ["-a", "-p", mask, String(process.pid)], { stdio: "ignore" });
    await blk?.stop();
  });

  it(`poll mode: ${N} writes then reads at QD1 and QD32 with neither a kick nor a call`, async () => {
    const { s, drv } = await open(blk.socket, true);
    // DPDK 22.11's example does not offer EVENT_IDX: the flags path
    expect(s.rings[0]!.driver.eventIdx).toBe(false);
    const payload = (b: number) => {
      const p = new Uint8Array(4096);
      for (let j = 0; j < 4096; j++) p[j] = (b * 31 + j) & 0xff;
      new DataView(p.buffer).setUint32(0, b, true);
      return p;
    };
    const block = (i: number) => (i * 4099) % DPDK_BLK_BLOCKS;
    const bad: string[] = [];
    const stats: DriverRingStats[] = [];
    for (const depth of [1, 32]) {
      await drv.run(N, (i) => ({ type: VIRTIO_BLK_T_OUT, sector: block(i) * 8, len: 4096, data: payload(block(i) + depth) }), (i, c) => {
        if (c.status !== 0) bad.push(`write ${i}: status ${c.status}`);
      }, { depth, wait: "poll", spinUs: NEVER_SLEEP, stats: (st) => stats.push(st) });
      await drv.run(N, (i) => ({ type: VIRTIO_BLK_T_IN, sector: block(i) * 8, len: 4096 }), (i, c) => {
        if (c.status !== 0 || !Buffer.from(c.data!).equals(payload(block(i) + depth))) bad.push(`block ${block(i)} read wrong`);
      }, { depth, wait: "poll", spinUs: NEVER_SLEEP, stats: (st) => stats.push(st) });
      expect(s.rings[0]!.call.read()).toBeNull();
    }
    expect(bad.slice(0, 5)).toEqual([]);
    // the example busy-polls with VRING_USED_F_NO_NOTIFY set: every kick was suppressed
    for (const st of stats) expect(st).toEqual({ kicks: 0, kicksSuppressed: st.kicksSuppressed, sleeps: 0, calls: 0 });
    // and in interrupt mode it signals every completion
    let st: DriverRingStats | undefined;
    await drv.run(100, (i) => ({ type: VIRTIO_BLK_T_IN, sector: block(i) * 8, len: 4096 }), () => {}, { wait: "interrupt", stats: (x) => (st = x) });
    expect(st!.calls + Number(s.rings[0]!.call.read() ?? 0n)).toBeGreaterThan(0);
  }, 120_000);
});
