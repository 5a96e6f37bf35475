// Against DPDK 22.11's examples/vhost_blk (a 128 MiB RAM disk, busy-polling): the back-end that offers
// INFLIGHT_SHMFD and STATUS. The example ships as source in Debian's dpdk-doc; the test builds it once
// (needs dpdk-dev, make, a C compiler) into a cache directory and starts it itself.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, cpSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { describeProtocolFeatures } from "@xen-vhost/vhost-user-protocol";
import { Frontend, fromCRegion } from "../src/index.js";

const EXAMPLE = "/usr/share/dpdk/examples/vhost_blk";
const hasTools = existsSync(EXAMPLE) && spawnSync("sh", ["-c", "pkg-config --exists libdpdk && command -v make && command -v cc"]).status === 0;
const VIRTIO_F_VERSION_1 = 1n << 32n;
const F_PROTOCOL_FEATURES = 1n << 30n;
const QSIZE = 64;

/** Builds the example once per machine (cached by DPDK version) and returns the binary. */
function buildVhostBlk(): string {
  const version = spawnSync("pkg-config", ["--modversion", "libdpdk"], { encoding: "utf8" }).stdout.trim();
  const dir = join(tmpdir(), `xen-vhost-dpdk-vhost-blk-${version}`);
  const bin = join(dir, "build", "vhost-blk");
  if (existsSync(bin)) return bin;
  rmSync(dir, { recursive: true, force: true });
  cpSync(EXAMPLE, dir, { recursive: true });
  const r = spawnSync("make", ["-C", dir], { encoding: "utf8" });
  if (r.status !== 0 || !existsSync(bin)) throw new Error(`building vhost_blk failed: ${r.stderr}`);
  return bin;
}

describe.skipIf(!hasTools)("DPDK examples/vhost_blk (needs dpdk-doc, dpdk-dev, make and cc)", () => {
  let child: ChildProcess;
  let exited: Promise<void>;
  let dir: string;
  let socket: string;
  let leaks: ReturnType<typeof fdLeakCheck>;
  const cleanup: (() => void)[] = [];

  let bin: string;
  let starts = 0;
  async function start(): Promise<void> {
    socket = join(dir, "vhost.socket"); // the example always listens on $PWD/vhost.socket
    rmSync(socket, { force: true });
    const log = openSync(join(dir, "vhost-blk.log"), "a");
    child = spawn(bin, ["-l", "1", "--no-huge", "-m", "512", "--no-pci", "--iova-mode=va", `--file-prefix=vublk${process.pid}-${starts++}`], { cwd: dir, stdio: ["ignore", log, log] });
    closeSync(log);
    const c = child;
    exited = new Promise((r) => c.once("exit", () => r()));
    for (let i = 0; i < 150 && !existsSync(socket) && c.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
    if (!existsSync(socket)) throw new Error(`vhost-blk did not start: ${readFileSync(join(dir, "vhost-blk.log"), "utf8")}`);
  }

  beforeAll(async () => {
    bin = buildVhostBlk();
    dir = mkdtempSync(join(tmpdir(), "dpdk-blk-"));
    await start();
  }, 180_000);
  afterAll(async () => {
    if (child && child.exitCode === null) child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 3000);
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

  interface Session {
    fe: Frontend;
    mem: GuestMemory;
    q: DriverQueue<number>;
    kick: EventFd;
  }

  async function session(options: Parameters<typeof Frontend.connect>[1] = {}): Promise<Session> {
    const fe = await Frontend.connect(socket, { timeoutMs: 3000, ...options });
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
    child.kill("SIGKILL");
    await exited;
    await start();
    await reconnected;
    expect(s.fe.connected).toBe(true);
    // the RAM disk died with the process; the ring did not: the next request is served in place
    expect((await io(s, 1, 24n, 4096, pattern)).status).toBe(0);
    expect((await io(s, 0, 24n, 4096)).data).toEqual(pattern);
    // 2 requests before the crash + 2 after: the base given to the new process was the inflight used_idx (2)
    expect(await s.fe.getVringBase(0)).toBe(4);
  }, 60_000);
});
