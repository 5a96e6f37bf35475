// Shadow mode against the other stock backends from Debian (none has XEN_MMAP): QEMU's C virtiofsd (FUSE
// INIT / LOOKUP / OPEN / READ of a file), DPDK testpmd (virtio-net frames echoed from TX to RX) and DPDK's
// examples/vhost_blk (a busy-polling RAM disk, queue depth 32). Each guest is on the virtio-mmio register
// file with its own memfd RAM, which no backend is given: they see only the bridge's shadow memory.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Frontend } from "@xen-vhost/vhost-user-master";
import { GuestMemory, MmapRegion } from "@xen-vhost/vm-memory";
import { deviceType } from "@xen-vhost/virtio-mmio";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { VhostUserDevice } from "../src/vhost-user-device.js";
import { MmioGuest } from "../src/shadow-guest.js";

const RAM = 0x4000_0000n;
const RAM_SIZE = 16 << 20;
const noGuestMemoryForBackend = {
  memory: (): never => {
    throw new Error("the guest's memory must not be offered in shadow mode");
  },
  translate: (): never => {
    throw new Error("no guest address may be translated for the backend in shadow mode");
  },
};

async function spawnDaemon(cmd: string, args: string[], socket: string, logFile: string, cwd?: string): Promise<{ child: ChildProcess; exited: Promise<void> }> {
  const log = openSync(logFile, "a");
  const child = spawn(cmd, args, { stdio: ["ignore", log, log], ...(cwd ? { cwd } : {}) });
  closeSync(log);
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  for (let i = 0; i < 200 && !existsSync(socket) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
  if (!existsSync(socket)) throw new Error(`${cmd} did not create ${socket}: ${readFileSync(logFile, "utf8")}`);
  return { child, exited };
}

async function stop(d: { child: ChildProcess; exited: Promise<void> } | undefined): Promise<void> {
  if (!d) return;
  if (d.child.exitCode === null) d.child.kill("SIGTERM");
  const t = setTimeout(() => d.child.kill("SIGKILL"), 3000);
  await d.exited;
  clearTimeout(t);
}

async function shadowDevice(socket: string, name: string, configSize: number): Promise<{ dev: VhostUserDevice; mem: GuestMemory }> {
  const mem = new GuestMemory([MmapRegion.memfd(RAM, RAM_SIZE)]);
  const fe = await Frontend.connect(socket, { timeoutMs: 5000, retry: { attempts: 100, initialDelayMs: 20, maxDelayMs: 100 } });
  const t = deviceType(name)!;
  const dev = await VhostUserDevice.create({
    frontend: fe, deviceId: t.id, defaultQueues: t.queues, queueMaxSize: 256, configSize,
    ...noGuestMemoryForBackend,
    requireProtocolFeatures: ["XEN_MMAP"],
    shadow: "auto",
    guestMemory: () => mem,
  });
  expect(dev.shadow).toBe(true);
  return { dev, mem };
}

// ---------------------------------------------------------------------------------------------- virtiofsd
const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
const CONTENT = "hello from virtiofsd through shadow rings\n";

describe.skipIf(!(existsSync(VIRTIOFSD) && process.getuid?.() === 0))("shadow mode: QEMU virtiofsd (needs /usr/lib/qemu/virtiofsd, root)", () => {
  let dir: string;
  let d: { child: ChildProcess; exited: Promise<void> } | undefined;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "shadow-fs-"));
    mkdirSync(join(dir, "share"));
    writeFileSync(join(dir, "share", "hello.txt"), CONTENT);
    const socket = join(dir, "fs.sock");
    d = await spawnDaemon(VIRTIOFSD, [`--socket-path=${socket}`, "-o", `source=${join(dir, "share")}`, "-o", "sandbox=chroot", "-o", "cache=none", "-f"], socket, join(dir, "virtiofsd.log"));
  });
  afterAll(async () => {
    await stop(d);
    rmSync(dir, { recursive: true, force: true });
  });

  it("FUSE INIT, LOOKUP, OPEN and READ of a file through the request queue", async () => {
    const leaks = fdLeakCheck();
    const { dev, mem } = await shadowDevice(join(dir, "fs.sock"), "fs", 0);
    const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: RAM_SIZE, queueSizes: [64, 64] });
    const IN = g.alloc(8192);
    const OUT = g.alloc(16 + 8192);
    let unique = 1n;
    async function fuse(opcode: number, nodeid: bigint, args: Uint8Array, outLen: number): Promise<{ error: number; len: number; body: Uint8Array }> {
      const inBuf = new Uint8Array(40 + args.length);
      const v = new DataView(inBuf.buffer);
      v.setUint32(0, inBuf.length, true);
      v.setUint32(4, opcode, true);
      v.setBigUint64(8, unique++, true);
      v.setBigUint64(16, nodeid, true);
      inBuf.set(args, 40);
      mem.write(IN, inBuf);
      mem.fill(OUT, 16 + outLen, 0xee);
      // in header and args split over two buffers, out header and reply over two: the shadow chain keeps them
      const c = await g.submit(1, { readable: [{ addr: IN, len: 40 }, { addr: IN + 40n, len: args.length }], writable: [{ addr: OUT, len: 16 }, { addr: OUT + 16n, len: outLen }] });
      const out = new DataView(mem.read(OUT, 16).buffer);
      expect(out.getBigUint64(8, true)).toBe(unique - 1n);
      const len = out.getUint32(0, true);
      expect(c.len).toBe(len); // virtiofsd's used.len is the reply length
      // nothing past used.len was copied into the guest's buffer
      expect(mem.read(OUT + BigInt(len), Math.min(16, 16 + outLen - len)).every((b) => b === 0xee)).toBe(true);
      return { error: out.getInt32(4, true), len, body: mem.read(OUT + 16n, Math.max(0, len - 16)) };
    }
    const init = new Uint8Array(16);
    new DataView(init.buffer).setUint32(0, 7, true);
    new DataView(init.buffer).setUint32(4, 31, true);
    const r1 = await fuse(26, 0n, init, 64);
    expect(r1.error).toBe(0);
    expect(new DataView(r1.body.buffer).getUint32(0, true)).toBe(7);
    const r2 = await fuse(1, 1n, new TextEncoder().encode("hello.txt\0"), 128);
    expect(r2.error).toBe(0);
    const ev = new DataView(r2.body.buffer);
    const nodeid = ev.getBigUint64(0, true);
    expect(ev.getBigUint64(40 + 8, true)).toBe(BigInt(CONTENT.length));
    const r3 = await fuse(14, nodeid, new Uint8Array(8), 16);
    expect(r3.error).toBe(0);
    const fh = new DataView(r3.body.buffer).getBigUint64(0, true);
    const read = new Uint8Array(40);
    new DataView(read.buffer).setBigUint64(0, fh, true);
    new DataView(read.buffer).setUint32(16, 4096, true);
    const r4 = await fuse(15, nodeid, read, 4096);
    expect(r4.error).toBe(0);
    expect(new TextDecoder().decode(r4.body)).toBe(CONTENT);
    const r5 = await fuse(1, 1n, new TextEncoder().encode("missing\0"), 128);
    expect(r5.error).toBe(-2);
    const st = dev.shadowRings!.stats().get(1)!;
    expect(st.completed).toBe(5);
    // used.len semantics: only the bytes virtiofsd wrote came back (READ: 16 + the file, not 16 + 4096)
    expect(st.bytesOut).toBe(r1.len + r2.len + r3.len + r4.len + r5.len);
    dev.close();
    mem.close();
    await new Promise((r) => setTimeout(r, 20));
    expect(leaks.check()).toEqual([]);
  }, 30_000);
});

// ---------------------------------------------------------------------------------------------- testpmd
const hasTestpmd = spawnSync("sh", ["-c", "command -v dpdk-testpmd"]).status === 0;
const NET_HDR = 12; // struct virtio_net_hdr_v1

describe.skipIf(!hasTestpmd)("shadow mode: DPDK testpmd net_vhost (needs dpdk-testpmd)", () => {
  let dir: string;
  let d: { child: ChildProcess; exited: Promise<void> } | undefined;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "shadow-net-"));
    const socket = join(dir, "net.sock");
    d = await spawnDaemon("dpdk-testpmd", [
      "-l", "0-1", "--no-huge", "-m", "256", "--no-pci", "--iova-mode=va", `--file-prefix=shadow${process.pid}`,
      "--vdev", `net_vhost0,iface=${socket},queues=1`, "--",
      "--forward-mode=io", "--port-topology=loop", "--auto-start", "--stats-period=30", "--nb-cores=1", "--rxq=1", "--txq=1", "--total-num-mbufs=16384",
    ], socket, join(dir, "testpmd.log"));
  }, 30_000);
  afterAll(async () => {
    await stop(d);
    rmSync(dir, { recursive: true, force: true });
  });

  it("500 frames sent on TX come back on RX intact", async () => {
    const leaks = fdLeakCheck();
    const { dev, mem } = await shadowDevice(join(dir, "net.sock"), "net", 0);
    const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: RAM_SIZE, queueSizes: [256, 256] });
    const RX = 64;
    const rxBufs = Array.from({ length: RX }, () => g.alloc(2048));
    const received: Uint8Array[] = [];
    let wake: (() => void) | undefined;
    const postRx = (i: number): void => {
      void g.submit(0, { writable: [{ addr: rxBufs[i]!, len: 2048 }] }).then((c) => {
        received.push(mem.read(rxBufs[i]! + BigInt(NET_HDR), c.len - NET_HDR));
        postRx(i);
        wake?.();
      });
    };
    for (let i = 0; i < RX; i++) postRx(i);
    const FRAMES = 500;
    const frameOf = (n: number): Uint8Array => {
      const f = new Uint8Array(NET_HDR + 60 + (n % 1400));
      f.fill(0xff, NET_HDR, NET_HDR + 6);
      f.set([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x88, 0xb5], NET_HDR + 6);
      new DataView(f.buffer).setUint32(NET_HDR + 14, n, true);
      for (let i = NET_HDR + 18; i < f.length; i++) f[i] = (i * 31 + n) & 0xff;
      return f;
    };
    const txBufs = Array.from({ length: 16 }, () => g.alloc(2048));
    for (let n = 0; n < FRAMES; n += 16) {
      const sent: Promise<unknown>[] = [];
      for (const [i, b] of txBufs.entries()) {
        if (n + i >= FRAMES) break;
        const f = frameOf(n + i);
        mem.write(b, f);
        sent.push(g.submit(1, { readable: [{ addr: b, len: NET_HDR }, { addr: b + BigInt(NET_HDR), len: f.length - NET_HDR }] }));
      }
      await Promise.all(sent);
    }
    const until = Date.now() + 10_000;
    while (received.length < FRAMES && Date.now() < until) await new Promise<void>((r) => ((wake = r), setTimeout(r, 50)));
    expect(received.length).toBe(FRAMES);
    const seen = new Set<number>();
    for (const f of received) {
      const n = new DataView(f.buffer, f.byteOffset).getUint32(14, true);
      expect(f).toEqual(frameOf(n).subarray(NET_HDR));
      seen.add(n);
    }
    expect(seen.size).toBe(FRAMES);
    await g.reset();
    // the relay's counters outlive the reset (the metrics endpoint reads them): every TX chain completed,
    // every received frame was an RX completion, nothing in flight once stopped
    expect(dev.shadowRings).toBeUndefined();
    const tx = dev.shadowStats().get(1)!;
    const rx = dev.shadowStats().get(0)!;
    expect([tx.posted, tx.completed, tx.inFlight]).toEqual([FRAMES, FRAMES, 0]);
    expect(rx.completed).toBe(FRAMES);
    expect(tx.bytesIn).toBe(received.reduce((n, f) => n + f.length + NET_HDR, 0));
    dev.close();
    mem.close();
    await new Promise((r) => setTimeout(r, 20));
    expect(leaks.check()).toEqual([]);
  }, 60_000);
});

// ---------------------------------------------------------------------------------------------- DPDK vhost_blk
const EXAMPLE = "/usr/share/dpdk/examples/vhost_blk";
const hasVhostBlk = existsSync(EXAMPLE) && spawnSync("sh", ["-c", "pkg-config --exists libdpdk && command -v make && command -v cc"]).status === 0;

/** Builds DPDK's example once per machine (the same cache as vhost-user-master's test). */
export function buildVhostBlk(): string {
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

describe.skipIf(!hasVhostBlk)("shadow mode: DPDK examples/vhost_blk (needs dpdk-doc, dpdk-dev, make, cc)", () => {
  let dir: string;
  let d: { child: ChildProcess; exited: Promise<void> } | undefined;
  beforeAll(async () => {
    const bin = buildVhostBlk();
    dir = mkdtempSync(join(tmpdir(), "shadow-dpdk-blk-"));
    d = await spawnDaemon(bin, ["-l", "1", "--no-huge", "-m", "512", "--no-pci", "--iova-mode=va", `--file-prefix=shblk${process.pid}`], join(dir, "vhost.socket"), join(dir, "vhost-blk.log"), dir);
  }, 180_000);
  afterAll(async () => {
    await stop(d);
    rmSync(dir, { recursive: true, force: true });
  });

  it("queue depth 32: 2,000 4 KiB blocks written and read back, every payload checked", async () => {
    const leaks = fdLeakCheck();
    const { dev, mem } = await shadowDevice(join(dir, "vhost.socket"), "blk", 0);
    const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: RAM_SIZE, queueSizes: [128] });
    const QD = 32;
    const BLOCKS = 2000;
    const slots = Array.from({ length: QD }, () => ({ hdr: g.alloc(16), data: g.alloc(4096, 4096), status: g.alloc(1) }));
    const payload = (i: number): Uint8Array => new Uint8Array(4096).map((_, o) => (i * 131 + o * 7 + (o >> 8)) & 0xff);
    let maxPending = 0;
    async function io(slot: number, type: number, block: number): Promise<void> {
      const s = slots[slot]!;
      const h = new DataView(new ArrayBuffer(16));
      h.setUint32(0, type, true);
      h.setBigUint64(8, BigInt(block * 8), true);
      mem.write(s.hdr, new Uint8Array(h.buffer));
      mem.store8(s.status, 0xff);
      const p = g.submit(
        0,
        type === 0
          ? { readable: [{ addr: s.hdr, len: 16 }], writable: [{ addr: s.data, len: 4096 }, { addr: s.status, len: 1 }] }
          : { readable: [{ addr: s.hdr, len: 16 }, { addr: s.data, len: 4096 }], writable: [{ addr: s.status, len: 1 }] },
      );
      maxPending = Math.max(maxPending, g.pending);
      await p;
      expect(mem.load8(s.status)).toBe(0);
    }
    let next = 0;
    await Promise.all(slots.map(async (s, k) => {
      for (let i = next++; i < BLOCKS; i = next++) {
        mem.write(s.data, payload(i));
        await io(k, 1, i);
      }
    }));
    next = 0;
    let verified = 0;
    await Promise.all(slots.map(async (s, k) => {
      for (let i = next++; i < BLOCKS; i = next++) {
        mem.fill(s.data, 4096, 0);
        await io(k, 0, i);
        if (!Buffer.from(mem.read(s.data, 4096)).equals(Buffer.from(payload(i)))) throw new Error(`block ${i} differs`);
        verified++;
      }
    }));
    expect(verified).toBe(BLOCKS);
    expect(maxPending).toBe(QD);
    await g.reset();
    dev.close();
    mem.close();
    await new Promise((r) => setTimeout(r, 20));
    expect(leaks.check()).toEqual([]);
  }, 120_000);
});

// ---------------------------------------------------------------------------------------------- vhost-user-gpu
const GPU = "/usr/lib/qemu/vhost-user-gpu";

describe.skipIf(!existsSync(GPU))("shadow mode: QEMU vhost-user-gpu handshake (needs /usr/lib/qemu/vhost-user-gpu from qemu-system-gui)", () => {
  let dir: string;
  let d: { child: ChildProcess; exited: Promise<void> } | undefined;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "shadow-gpu-"));
    d = await spawnDaemon(GPU, [`--socket-path=${join(dir, "gpu.sock")}`], join(dir, "gpu.sock"), join(dir, "gpu.log"));
  });
  afterAll(async () => {
    await stop(d);
    rmSync(dir, { recursive: true, force: true });
  });

  it("negotiates, takes the shadow memory table and both shadow rings, and stays up", async () => {
    const leaks = fdLeakCheck();
    const { dev, mem } = await shadowDevice(join(dir, "gpu.sock"), "gpu", 16);
    expect(dev.numQueues).toBe(2); // control and cursor
    const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: RAM_SIZE, queueSizes: [64, 64] });
    expect(dev.shadowRings!.queues).toEqual([0, 1]);
    expect(dev.frontend.connected).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(d!.child.exitCode).toBeNull();
    await g.reset();
    dev.close();
    mem.close();
    await new Promise((r) => setTimeout(r, 20));
    expect(leaks.check()).toEqual([]);
  }, 30_000);
});
