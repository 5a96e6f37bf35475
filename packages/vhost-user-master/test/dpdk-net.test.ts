// Against DPDK 22.11 testpmd's net_vhost port (server mode) echoing every frame from the front-end's TX
// queue back into its RX queue. DPDK offers the STATUS protocol feature and, once it is acked, does not
// start the device before SET_STATUS with DRIVER_OK: the test shows both halves of that.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { describeProtocolFeatures } from "@xen-vhost/vhost-user-protocol";
import { RequestRecorder } from "../src/testing/request-recorder.js";
import { noteCheck } from "./exercised.js";
import { spawnDaemon } from "../src/testing/reap.js";
import { Frontend, fromCRegion } from "../src/index.js";

const hasTestpmd = spawnSync("sh", ["-c", "command -v dpdk-testpmd"]).status === 0;
const VIRTIO_F_VERSION_1 = 1n << 32n;
const F_PROTOCOL_FEATURES = 1n << 30n;
const NET_HDR = 12; // struct virtio_net_hdr_v1 (VERSION_1: num_buffers included)
const QSIZE = 256;

let dir: string;
let child: ChildProcess | undefined;
let exited: Promise<void>;
let socket: string;

let starts = 0;

/** testpmd with one net_vhost port; `client` makes the port connect to `iface` (the front-end listens). */
function spawnTestpmd(iface: string, logDir: string, client = false): { child: ChildProcess; exited: Promise<void> } {
  const log = openSync(join(logDir, "testpmd.log"), "a");
  const c = spawnDaemon("dpdk-testpmd", [
    "-l", "0-1", "--no-huge", "-m", "256", "--no-pci", "--iova-mode=va", `--file-prefix=vutest${process.pid}-${starts++}`,
    "--vdev", `net_vhost0,iface=${iface},queues=1${client ? ",client=1" : ""}`, "--",
    "--forward-mode=io", "--port-topology=loop", "--auto-start", "--stats-period=30", "--nb-cores=1", "--rxq=1", "--txq=1", "--total-num-mbufs=16384",
  ], { stdio: ["ignore", log, log] });
  closeSync(log);
  return { child: c, exited: new Promise((r) => c.once("exit", () => r())) };
}

async function startTestpmd(): Promise<void> {
  dir = mkdtempSync(join(tmpdir(), "testpmd-"));
  socket = join(dir, "vhost-net.sock");
  const t = spawnTestpmd(socket, dir);
  child = t.child;
  exited = t.exited;
  const c = child;
  for (let i = 0; i < 150 && !existsSync(socket) && c.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
  if (!existsSync(socket)) throw new Error(`testpmd did not create ${socket}: ${readFileSync(join(dir, "testpmd.log"), "utf8")}`);
}

/** RX and TX rings in memfd guest memory, set up on `fe`, and a frame sender / receiver. */
async function netRings(fe: Frontend, cleanup: (() => void)[]) {
  const mem = GuestMemory.fromRanges([[0, 0x40_0000]]);
  cleanup.push(() => mem.close());
  await fe.setMemory(mem.vhostUserRegions().map(fromCRegion));
  const rx = DriverQueue.create<number>(mem, 0, QSIZE);
  const tx = DriverQueue.create<number>(mem, 0x10_0000, QSIZE);
  const efds = Array.from({ length: 4 }, () => new EventFd());
  cleanup.push(() => efds.forEach((e) => e.close()));
  for (const [i, q] of [rx, tx].entries())
    await fe.setupVring(i, {
      num: QSIZE, desc: fe.userAddrOf(q.descTable.value), avail: fe.userAddrOf(q.availRing.value), used: fe.userAddrOf(q.usedRing.value),
      kick: efds[i * 2]!.fd, call: efds[i * 2 + 1]!.fd,
    });
  const RXBUF = 0x20_0000, TXBUF = 0x30_0000;
  let rxToken = 0;
  const postRx = (n: number) => {
    for (let i = 0; i < n; i++, rxToken++) rx.add({ writable: [{ addr: RXBUF + (rxToken % 64) * 2048, len: 2048 }] }, { token: rxToken % 64 });
    efds[0]!.write(1);
  };
  /** A broadcast frame, ethertype 0x88b5 (local experimental), payload derived from `seed`. */
  const frameOf = (seed: number) => {
    const frame = new Uint8Array(NET_HDR + 64);
    frame.fill(0xff, NET_HDR, NET_HDR + 6);
    frame.set([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x88, 0xb5], NET_HDR + 6);
    for (let i = NET_HDR + 14; i < frame.length; i++) frame[i] = (i + seed) & 0xff;
    return frame;
  };
  const send = (frame: Uint8Array) => {
    mem.write(TXBUF, frame);
    tx.add({ readable: [{ addr: TXBUF, len: frame.length }] }, { token: 1 });
    efds[2]!.write(1);
  };
  const receive = async (ms: number): Promise<Uint8Array | undefined> => {
    for (let i = 0; i < ms && !rx.hasUsed(); i++) await new Promise((r) => setTimeout(r, 1));
    const used = rx.getUsed();
    return used && mem.read(RXBUF + used.token! * 2048, used.len);
  };
  return { mem, rx, tx, efds, postRx, frameOf, send, receive };
}

describe.skipIf(!hasTestpmd)("DPDK testpmd net_vhost (needs dpdk-testpmd from the dpdk package)", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  const cleanup: (() => void)[] = [];
  beforeAll(startTestpmd, 20_000);
  const rec = new RequestRecorder();
  afterAll(noteCheck("dpdk-testpmd", rec));
  afterAll(async () => {
    if (child && child.exitCode === null) child.kill("SIGTERM");
    const t = setTimeout(() => child?.kill("SIGKILL"), 3000);
    await exited;
    clearTimeout(t);
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    while (cleanup.length) cleanup.pop()!();
    expect(leaks.check()).toEqual([]);
  });

  it("handshake with STATUS; frames echo only after SET_STATUS(DRIVER_OK)", async () => {
    const fe = await Frontend.connect(socket, { timeoutMs: 3000, logger: rec });
    cleanup.push(() => fe.close());
    const n = await fe.negotiate({ features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES });
    expect(describeProtocolFeatures(n.offeredProtocolFeatures)).toEqual(expect.arrayContaining(["MQ", "REPLY_ACK", "STATUS", "BACKEND_REQ"]));
    expect(fe.hasProtocolFeature("STATUS")).toBe(true);
    expect(n.queueNum).toBeGreaterThanOrEqual(1);

    const net = await netRings(fe, cleanup);
    net.postRx(8);
    const frame = net.frameOf(0);
    net.send(frame);
    // STATUS acked but no DRIVER_OK yet: DPDK keeps the device stopped
    expect(await net.receive(300)).toBeUndefined();
    await fe.driverOk();
    net.efds[2]!.write(1);
    let got = await net.receive(3000);
    if (!got) {
      net.send(frame);
      got = await net.receive(3000);
    }
    expect(got).toEqual(frame);
    expect(await fe.getStatus()).toBe(0x0f);
    // stop the rings before leaving, as a driver reset would
    await fe.getVringBase(0);
    await fe.getVringBase(1);
  }, 20_000);

  it("server mode: testpmd connects to the front-end's socket (client=1); after testpmd dies the front-end accepts its successor, replays, and frames echo again", async () => {
    const sdir = mkdtempSync(join(tmpdir(), "testpmd-client-"));
    const path = join(sdir, "fe.sock");
    let pmd = spawnTestpmd(path, sdir, true);
    cleanup.push(() => rmSync(sdir, { recursive: true, force: true }));
    const stop = async () => {
      if (pmd.child.exitCode === null) pmd.child.kill("SIGKILL");
      await pmd.exited;
    };
    try {
      const held: { net?: Awaited<ReturnType<typeof netRings>> } = {};
      const fe = await Frontend.listen(path, {
        timeoutMs: 3000, logger: rec, acceptTimeoutMs: 30_000, reconnect: { attempts: 3 },
        // a crashed back-end left no GET_VRING_BASE: resume each ring at the used index it published in guest memory
        restoreVringBase: (index) => {
          const n = held.net!;
          return n.mem.load16(BigInt((index === 0 ? n.rx : n.tx).usedRing.value) + 2n);
        },
      });
      cleanup.push(() => fe.close());
      await fe.negotiate({ features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES });
      const net = (held.net = await netRings(fe, cleanup));
      await fe.driverOk();
      net.postRx(8);
      // a frame that arrives while the port is still coming up is dropped, as on a real link: send until one echoes
      // (a late echo of an earlier attempt is skipped; each frame taken from RX gets its buffer back)
      const echo = async (frame: Uint8Array): Promise<Uint8Array | undefined> => {
        for (let attempt = 0; attempt < 8; attempt++) {
          net.send(frame);
          const until = Date.now() + 1500;
          while (Date.now() < until) {
            const got = await net.receive(Math.max(1, until - Date.now()));
            if (!got) break;
            net.postRx(1);
            if (Buffer.from(got).equals(frame)) return got;
          }
        }
        return undefined;
      };
      const f1 = net.frameOf(1);
      expect(await echo(f1)).toEqual(f1);

      const disconnected = new Promise<string>((r) => fe.once("disconnect", (e) => r(e.kind)));
      const reconnected = new Promise<void>((r) => fe.once("reconnect", r));
      await stop();
      expect(await disconnected).toBe("Disconnected");
      pmd = spawnTestpmd(path, sdir, true);
      await reconnected;
      expect(fe.connected).toBe(true);
      const f2 = net.frameOf(2);
      expect(await echo(f2)).toEqual(f2);
      expect(await fe.getStatus()).toBe(0x0f); // SET_STATUS was replayed to the new process
    } finally {
      await stop();
    }
  }, 90_000);
});
