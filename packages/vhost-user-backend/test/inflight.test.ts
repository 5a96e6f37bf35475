// Inflight I/O tracking (INFLIGHT_SHMFD): the area's layout and recovery rules, then the real thing with
// vhost-user-master's Frontend on a real socket: a connection dropped while the device holds requests, and a
// back-end process killed with SIGKILL and replaced; either way every request completes exactly once.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { EventFd, close as closeFd, ftruncate, memfdCreate } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, type UsedElement } from "@xen-vhost/virtio-queue";
import { Frontend } from "@xen-vhost/vhost-user-master";
import {
  BackendError, DescStateSplit, InflightArea, QueueRegionSplit, VhostUserDaemon, inflightQueueRegionSize,
} from "../src/index.js";
import { TestFrontend } from "../src/testing/index.js";
import { EchoDevice } from "./echo-device.js";
import { HoldingDevice } from "./holding-device.js";

const here = dirname(fileURLToPath(import.meta.url));
const enc = new TextEncoder();
const dec = new TextDecoder();
let dir: string;
let leaks: ReturnType<typeof fdLeakCheck>;
const open: { close(): void }[] = [];
function track<T extends { close(): void }>(x: T): T {
  open.push(x);
  return x;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "vub-inf-"));
  leaks = fdLeakCheck();
});
afterEach(async () => {
  for (const x of open.splice(0).reverse()) x.close();
  await new Promise((r) => setTimeout(r, 30));
  rmSync(dir, { recursive: true, force: true });
  expect(leaks.check()).toEqual([]);
});

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** An area of `n` 8-entry queues; the fd a front-end would get is closed at once (the mapping stays). */
function area8(n: number): InflightArea {
  const { area, fd } = InflightArea.allocate(n, 8);
  closeFd(fd);
  return area;
}

describe("inflight area layout (vhost-user.rst DescStateSplit / QueueRegionSplit)", () => {
  it("mirrors the spec's structs and libvhost-user's region size", () => {
    expect(DescStateSplit.size).toBe(16);
    expect(DescStateSplit.fields).toMatchObject({ inflight: { offset: 0 }, next: { offset: 6 }, counter: { offset: 8 } });
    expect(QueueRegionSplit.size).toBe(16);
    expect(QueueRegionSplit.fields).toMatchObject({ features: { offset: 0 }, version: { offset: 8 }, desc_num: { offset: 10 }, last_batch_head: { offset: 12 }, used_idx: { offset: 14 } });
    // libvhost-user vu_inflight_queue_size(): ALIGN_UP(16 * n + 2, 64) -- the same for these sizes
    expect(inflightQueueRegionSize(128)).toBe(2112);
    expect(inflightQueueRegionSize(256)).toBe(4160);
    expect(inflightQueueRegionSize(1)).toBe(64);
  });

  it("records fetches, completions and the used idx in the spec's fields", () => {
    using area = area8(2);
    const q = area.queue(1)!;
    // as allocated: zeroed until the ring starts on it
    expect([q.version, q.descNum, q.usedIdx]).toEqual([0, 0, 0]);
    expect(q.recover(8, 0)).toEqual([]);
    expect([q.version, q.descNum, q.usedIdx]).toEqual([1, 8, 0]);
    for (const h of [3, 1, 7]) q.fetched(h);
    q.beforeUsed(1);
    q.afterUsed(1, 1);
    expect([q.isInflight(3), q.isInflight(1), q.isInflight(7)]).toEqual([true, false, true]);
    expect([q.counterOf(3), q.counterOf(7)]).toEqual([0, 2]);
    expect([q.lastBatchHead, q.usedIdx]).toEqual([1, 1]);
    // a new back-end: the used ring says 1 too, so 3 and 7 are resubmitted in fetch order
    expect(q.recover(8, 1)).toEqual([3, 7]);
    // and the counter continues after the largest one
    q.fetched(5);
    expect(q.counterOf(5)).toBe(3);
    expect(area.queue(2)).toBeUndefined();
  });

  it("a fresh region on a ring resumed at used idx 500 starts from there (no phantom batch of 500)", () => {
    using area = area8(1);
    const q = area.queue(0)!;
    expect(q.recover(8, 500)).toEqual([]);
    expect(q.usedIdx).toBe(500);
    q.fetched(3);
    // the back-end dies before completing it: the next one resubmits 3
    expect(q.recover(8, 500)).toEqual([3]);
    // a device reset clears the region back to version 0
    area.clear();
    expect([q.version, q.isInflight(3)]).toEqual([0, false]);
  });

  it("a back-end that died between publishing the used idx and recording it: the last batch is not resubmitted", () => {
    using area = area8(1);
    const q = area.queue(0)!;
    q.recover(8, 0);
    q.fetched(4);
    q.fetched(6);
    q.beforeUsed(4);
    // ...the used element and idx (1) reach the ring, then the process dies before afterUsed
    expect(q.isInflight(4)).toBe(true);
    expect(q.recover(8, 1)).toEqual([6]);
    expect(q.usedIdx).toBe(1);
    expect(q.isInflight(4)).toBe(false);
  });

  it("a region that contradicts the ring is refused (InvalidVring), never resubmitted", () => {
    using area = area8(1);
    const q = area.queue(0)!;
    q.recover(8, 0);
    q.fetched(2);
    // the used ring is 9 entries ahead of used_idx: more than the 8 descriptors the region tracks
    expect(() => q.recover(8, 9)).toThrow(BackendError);
    // a ring larger than the region
    expect(() => q.recover(16, 0)).toThrow(/tracks 8 descriptors/);
    // descriptor 6 in flight in a 4-entry ring
    q.fetched(6);
    expect(() => q.recover(4, 0)).toThrow(/descriptor 6/);
  });

  it("SET_INFLIGHT_FD's description is checked against the file before mapping (a short file would SIGBUS)", () => {
    const fd = memfdCreate("short");
    try {
      ftruncate(fd, 4096);
      expect(() => InflightArea.fromFd(fd, { mmapSize: 8320n, mmapOffset: 0n, numQueues: 2, queueSize: 256 })).toThrow(/past the 4096-byte file/);
      expect(() => InflightArea.fromFd(fd, { mmapSize: 4096n, mmapOffset: 0n, numQueues: 1, queueSize: 1024 })).toThrow(/cannot track 1024/);
      expect(() => InflightArea.fromFd(fd, { mmapSize: 4096n, mmapOffset: 0n, numQueues: 3, queueSize: 8 })).toThrow(BackendError);
      // a zeroed region (version 0) is fresh: nothing to resubmit
      using a = InflightArea.fromFd(fd, { mmapSize: 4096n, mmapOffset: 0n, numQueues: 1, queueSize: 128 });
      expect(a.queue(0)!.recover(128, 0)).toEqual([]);
      expect(a.queue(0)!.version).toBe(1);
    } finally {
      closeFd(fd);
    }
  });
});

/** A guest with one ring driven through vhost-user-master's Frontend, reconnecting on its own. */
interface Guest {
  fe: Frontend;
  mem: GuestMemory;
  driver: DriverQueue<string>;
  kick: EventFd;
  call: EventFd;
  reconnects: number;
  /** Adds a request and kicks; returns its head. */
  post(text: string): number;
  used(n: number, ms?: number): Promise<string[]>;
}

let slot = 0;
async function guest(path: string, options: { inflight?: boolean } = {}): Promise<Guest> {
  const retry = { attempts: 2000, initialDelayMs: 5, maxDelayMs: 50 };
  const fe = track(await Frontend.connect(path, { retry, reconnect: retry, timeoutMs: 20_000 }));
  const mem = track(GuestMemory.fromRanges([[0, 0x20_0000]]));
  const kick = track(new EventFd());
  const call = track(new EventFd());
  await fe.negotiate();
  const regions = mem.vhostUserRegions().map((d) => ({ guestPhysAddr: d.guest_phys_addr, size: d.memory_size, userAddr: d.userspace_addr, mmapOffset: d.mmap_offset, fd: d.fd }));
  await fe.setMemTable(regions);
  if (options.inflight ?? true) {
    // as QEMU's vhost_dev_start: GET_INFLIGHT_FD once, then SET_INFLIGHT_FD on every (re)connection
    const area = await fe.getInflightFd(1, 256);
    await fe.setInflightFd(area);
  }
  const driver = DriverQueue.create<string>(mem, 0x1000, 256, { eventIdx: true });
  const va = (gpa: bigint): bigint => regions[0]!.userAddr + gpa;
  await fe.setupVring(0, { num: 256, desc: va(driver.descTable.value), avail: va(driver.availRing.value), used: va(driver.usedRing.value), kick: kick.fd, call: call.fd });
  const g: Guest = {
    fe, mem, driver, kick, call, reconnects: 0,
    post(text) {
      const at = 0x10_0000 + (slot++ % 128) * 0x1000;
      mem.write(at, enc.encode(text));
      const head = driver.add({ readable: [{ addr: at, len: text.length }], writable: [{ addr: at + 0x800, len: 64 }] }, { token: `${at}` });
      kick.write(1);
      return head;
    },
    async used(n, ms = 10_000) {
      const out: UsedElement<string>[] = [];
      const end = Date.now() + ms;
      while (out.length < n) {
        out.push(...driver.harvest(n - out.length));
        if (out.length >= n) break;
        if (Date.now() > end) throw new Error(`timed out: ${out.length} of ${n} used`);
        await new Promise((r) => setTimeout(r, 5));
      }
      return out.map((u) => dec.decode(mem.read(Number(u.token) + 0x800, u.len)));
    },
  };
  fe.on("reconnect", () => g.reconnects++);
  return g;
}

describe("inflight requests across a reconnect (vhost-user-master Frontend, real socket, memfd, eventfds)", () => {
  it("offers INFLIGHT_SHMFD only to devices that opt in", async () => {
    const p1 = join(dir, "a.sock");
    track(new VhostUserDaemon(new HoldingDevice(), { socket: p1 }).start());
    const p2 = join(dir, "b.sock");
    track(new VhostUserDaemon(new EchoDevice(), { socket: p2 }).start());
    const bit = 1n << 12n;
    const a = track(TestFrontend.connect(p1));
    expect((await a.u64("GET_PROTOCOL_FEATURES")) & bit).toBe(bit);
    const b = track(TestFrontend.connect(p2));
    expect((await b.u64("GET_PROTOCOL_FEATURES")) & bit).toBe(0n);
  });

  it("bad GET/SET_INFLIGHT_FD: a description that does not fit its file gets a failure status (fd closed), too many queues closes the connection", async () => {
    const path = join(dir, "bad.sock");
    track(new VhostUserDaemon(new HoldingDevice(), { socket: path }).start());
    const fe = track(TestFrontend.connect(path));
    await fe.negotiate({ protocol: ["MQ", "REPLY_ACK", "INFLIGHT_SHMFD"] });
    const fd = memfdCreate("small");
    try {
      ftruncate(fd, 4096);
      const tooBig = { kind: "inflight" as const, mmapSize: 1n << 20n, mmapOffset: 0n, numQueues: 1, queueSize: 256 };
      expect(await fe.ack("SET_INFLIGHT_FD", tooBig, [fd])).toBe(1n);
      const ok = { kind: "inflight" as const, mmapSize: 4096n, mmapOffset: 0n, numQueues: 1, queueSize: 128 };
      expect(await fe.ack("SET_INFLIGHT_FD", ok, [fd])).toBe(0n);
    } finally {
      closeFd(fd);
    }
    // GET_INFLIGHT_FD has its own reply, so a failure cannot be reported: the connection closes
    void fe.request("GET_INFLIGHT_FD", { kind: "inflight", mmapSize: 0n, mmapOffset: 0n, numQueues: 5, queueSize: 128 }).catch(() => undefined);
    expect((await fe.whenClosed())?.kind).toBe("Disconnected");
  });

  it("a connection dropped while the device holds requests: they come back in fetch order and complete exactly once", async () => {
    const path = join(dir, "hold.sock");
    const device = new HoldingDevice();
    const daemon = track(new VhostUserDaemon(device, { socket: path }).start());
    const g = await guest(path);
    const heads = ["a", "b", "c"].map((t) => g.post(t));
    await until("3 held requests", () => device.held.length === 3);
    device.complete(["b"]);
    expect(await g.used(1)).toEqual(["done:b"]);
    // what the front-end sees in the area, through vhost-user-master's reader (checked against DPDK's
    // vhost_blk, an independent implementation of the same layout)
    expect(g.fe.inflightArea?.mmapSize).toBe(BigInt(inflightQueueRegionSize(256)));
    {
      using region = g.fe.mapInflight();
      expect(region.queue(0)).toMatchObject({ version: 1, desc_num: 256, used_idx: 1, last_batch_head: heads[1] });
      expect(region.inflightHeads(0)).toEqual([heads[0], heads[2]]);
    }

    daemon.handler!.close(); // the back-end side drops the connection mid-request
    await until("the Frontend's reconnect", () => g.reconnects === 1);
    await until("the resubmitted requests", () => device.held.length === 2);
    expect(device.popped).toEqual(["a", "b", "c", "a", "c"]);
    device.complete();
    expect((await g.used(2)).sort()).toEqual(["done:a", "done:c"]);

    // the ring carries on where it was, and nothing else comes back
    g.post("d");
    await until("d", () => device.held.length === 1);
    device.complete();
    expect(await g.used(1)).toEqual(["done:d"]);
    await new Promise((r) => setTimeout(r, 50));
    expect(g.driver.harvest()).toEqual([]);
    expect(device.completed).toEqual(["b", "a", "c", "d"]);
  });

  it("a device reset (SET_STATUS 0) clears the area: nothing is resubmitted to the next driver", async () => {
    const path = join(dir, "reset.sock");
    const device = new HoldingDevice();
    const daemon = track(new VhostUserDaemon(device, { socket: path }).start());
    const g = await guest(path);
    g.post("x");
    await until("x held", () => device.held.length === 1);
    await g.fe.setStatus(0);
    const q = daemon.handler!.inflightArea!.queue(0)!;
    expect(q.isInflight(0)).toBe(false);
    expect([q.version, q.usedIdx]).toEqual([0, 0]);
  });

  it("without inflight tracking the replay starts from the base the front-end last knew: a completed request runs again", async () => {
    const path = join(dir, "plain.sock");
    const device = new HoldingDevice({ inflight: false });
    const daemon = track(new VhostUserDaemon(device, { socket: path }).start());
    const g = await guest(path, { inflight: false });
    for (const t of ["a", "b"]) g.post(t);
    await until("2 held", () => device.held.length === 2);
    device.complete(["b"]);
    await g.used(1);
    daemon.handler!.close();
    await until("reconnect", () => g.reconnects === 1);
    await until("re-popped", () => device.popped.length === 4);
    expect(device.popped).toEqual(["a", "b", "a", "b"]); // "b" was already done: the failure inflight tracking prevents
  });
});

describe("a back-end process killed with SIGKILL mid-request and replaced", () => {
  function daemonProcess(path: string, hold: boolean): { child: ChildProcess; lines: string[]; exited: Promise<void> } {
    const child = spawn(process.execPath, [join(here, "fixtures/holding-daemon.mjs"), path], {
      env: { ...process.env, HOLD: hold ? "1" : "0" }, stdio: ["ignore", "pipe", "inherit"],
    });
    const lines: string[] = [];
    let buf = "";
    child.stdout.on("data", (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split("\n");
      buf = parts.pop()!;
      lines.push(...parts);
    });
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    open.push({ close: () => child.kill("SIGKILL") });
    return { child, lines, exited };
  }

  it("the new process resubmits the requests the dead one held; each completes exactly once", { timeout: 60_000 }, async () => {
    const path = join(dir, "crash.sock");
    const first = daemonProcess(path, true);
    await until("the first daemon", () => first.lines.includes("listening"), 30_000);
    const g = await guest(path);
    for (const t of ["p", "q"]) g.post(t);
    await until("both popped by the first daemon", () => first.lines.filter((l) => l.startsWith("popped")).length === 2, 30_000);

    first.child.kill("SIGKILL");
    await first.exited;
    const second = daemonProcess(path, false);
    await until("the Frontend's reconnect to the second daemon", () => g.reconnects === 1, 30_000);
    expect((await g.used(2, 30_000)).sort()).toEqual(["done:p", "done:q"]);
    expect(second.lines.filter((l) => l.startsWith("popped"))).toEqual(["popped p", "popped q"]);

    g.post("r");
    expect(await g.used(1, 30_000)).toEqual(["done:r"]);
    await new Promise((r) => setTimeout(r, 100));
    expect(g.driver.harvest()).toEqual([]);
    expect(second.lines.filter((l) => l.startsWith("popped"))).toEqual(["popped p", "popped q", "popped r"]);
  });
});

