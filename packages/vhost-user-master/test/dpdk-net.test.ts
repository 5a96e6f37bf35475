// Against DPDK 22.11 testpmd's net_vhost port (server mode) echoing every frame from the front-end's TX
// queue back into its RX queue. DPDK offers the STATUS protocol feature and, once it is acked, does not
// start the device before SET_STATUS with DRIVER_OK: the test shows both halves of that.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { describeProtocolFeatures } from "@xen-vhost/vhost-user-protocol";
import { RequestRecorder } from "../src/testing/request-recorder.js";
import { expectNoteMatches } from "./exercised.js";
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

async function startTestpmd(): Promise<void> {
  dir = mkdtempSync(join(tmpdir(), "testpmd-"));
  socket = join(dir, "vhost-net.sock");
  const log = openSync(join(dir, "testpmd.log"), "a");
  child = spawn("dpdk-testpmd", [
    "-l", "0-1", "--no-huge", "-m", "256", "--no-pci", "--iova-mode=va", `--file-prefix=vutest${process.pid}`,
    "--vdev", `net_vhost0,iface=${socket},queues=1`, "--",
    "--forward-mode=io", "--port-topology=loop", "--auto-start", "--stats-period=30", "--nb-cores=1", "--rxq=1", "--txq=1", "--total-num-mbufs=16384",
  ], { stdio: ["ignore", log, log] });
  closeSync(log);
  const c = child;
  exited = new Promise((r) => c.once("exit", () => r()));
  for (let i = 0; i < 150 && !existsSync(socket) && c.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
  if (!existsSync(socket)) throw new Error(`testpmd did not create ${socket}: ${readFileSync(join(dir, "testpmd.log"), "utf8")}`);
}

describe.skipIf(!hasTestpmd)("DPDK testpmd net_vhost (needs dpdk-testpmd from the dpdk package)", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  const cleanup: (() => void)[] = [];
  beforeAll(startTestpmd, 20_000);
  const rec = new RequestRecorder();
  afterAll(async () => {
    if (child && child.exitCode === null) child.kill("SIGTERM");
    await exited;
    rmSync(dir, { recursive: true, force: true });
    expectNoteMatches("dpdk-testpmd", rec);
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

    // RX buffers, then one frame on TX: broadcast, ethertype 0x88b5 (local experimental), payload pattern
    const RXBUF = 0x20_0000;
    for (let i = 0; i < 8; i++) rx.add({ writable: [{ addr: RXBUF + i * 2048, len: 2048 }] }, { token: i });
    efds[0]!.write(1);
    const frame = new Uint8Array(NET_HDR + 64);
    frame.fill(0xff, NET_HDR, NET_HDR + 6);
    frame.set([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x88, 0xb5], NET_HDR + 6);
    for (let i = NET_HDR + 14; i < frame.length; i++) frame[i] = i & 0xff;
    const TXBUF = 0x30_0000;
    const send = () => {
      mem.write(TXBUF, frame);
      tx.add({ readable: [{ addr: TXBUF, len: frame.length }] }, { token: 1 });
      efds[2]!.write(1);
    };
    send();
    const waitRx = async (ms: number) => {
      for (let i = 0; i < ms && !rx.hasUsed(); i++) await new Promise((r) => setTimeout(r, 1));
      return rx.getUsed();
    };
    // STATUS acked but no DRIVER_OK yet: DPDK keeps the device stopped
    expect(await waitRx(300)).toBeUndefined();
    await fe.driverOk();
    efds[2]!.write(1);
    let used = await waitRx(3000);
    if (!used) {
      send();
      used = await waitRx(3000);
    }
    expect(used).toBeDefined();
    expect(used!.len).toBe(frame.length);
    const got = mem.read(RXBUF + used!.token! * 2048 + NET_HDR, frame.length - NET_HDR);
    expect(got).toEqual(frame.subarray(NET_HDR));
    expect(await fe.getStatus()).toBe(0x0f);
    // stop the rings before leaving, as a driver reset would
    await fe.getVringBase(0);
    await fe.getVringBase(1);
  }, 20_000);
});
