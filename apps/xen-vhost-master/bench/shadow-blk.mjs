#!/usr/bin/env node
// 4 KiB random-read IOPS at queue depth 1 and 32 through shadow rings vs the same backend driven directly
// (the backend maps the guest's memfd RAM and serves the guest's own ring), in the same run. Both go
// through the same guest driver on the virtio-mmio register file and the same VhostUserDevice; only the
// ring path differs. Backends: qemu-storage-daemon (always) and DPDK examples/vhost_blk (when it builds).
// Usage: node bench/shadow-blk.mjs [seconds per run, default 2]   (after `pnpm build`); each case alternates
// direct and shadow runs three times and reports the medians.
import { spawn, spawnSync } from "node:child_process";
import { closeSync, cpSync, existsSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Frontend, fromCRegion } from "@xen-vhost/vhost-user-master";
import { startQsd, hasQsd } from "@xen-vhost/vhost-user-master/testing";
import { GuestMemory, MmapRegion, guestToUserAddr } from "@xen-vhost/vm-memory";
import { VhostUserDevice } from "../dist/vhost-user-device.js";
import { MmioGuest } from "../dist/shadow-guest.js";

const SECONDS = Number(process.argv[2] ?? 2);
const RAM = 0x4000_0000n;
const RAM_SIZE = 16 << 20;

async function device(socket, mode) {
  const mem = new GuestMemory([MmapRegion.memfd(RAM, RAM_SIZE)]);
  const regions = () => mem.vhostUserRegions();
  const fe = await Frontend.connect(socket, { retry: { attempts: 100, initialDelayMs: 20, maxDelayMs: 100 } });
  const dev = await VhostUserDevice.create({
    frontend: fe, deviceId: 2, defaultQueues: 1, queueMaxSize: 256, configSize: 0,
    memory: () => regions().map(fromCRegion),
    translate: (gpa, len) => guestToUserAddr(regions(), gpa, len),
    shadow: mode === "shadow" ? "always" : "never",
    guestMemory: () => mem,
  });
  const g = await MmioGuest.start(dev, { mem, base: RAM, bytes: RAM_SIZE, queueSizes: [128] });
  return { dev, mem, g };
}

async function run(socket, mode, qd, blocks) {
  const { dev, mem, g } = await device(socket, mode);
  const slots = Array.from({ length: qd }, () => ({ hdr: g.alloc(16), data: g.alloc(4096, 4096), status: g.alloc(1) }));
  for (const s of slots) {
    const h = new DataView(new ArrayBuffer(16));
    mem.write(s.hdr, new Uint8Array(h.buffer)); // VIRTIO_BLK_T_IN; the sector is set per request
  }
  let ops = 0;
  let errors = 0;
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed);
  let stop = false;
  const worker = async (s) => {
    const sectorField = s.hdr + 8n;
    while (!stop) {
      const block = rand() % blocks;
      mem.write(sectorField, new Uint8Array(new BigUint64Array([BigInt(block * 8)]).buffer));
      await g.submit(0, { readable: [{ addr: s.hdr, len: 16 }], writable: [{ addr: s.data, len: 4096 }, { addr: s.status, len: 1 }] });
      if (mem.load8(s.status) !== 0) errors++;
      ops++;
    }
  };
  // warm-up
  const warm = Date.now() + 300;
  const first = Promise.all(slots.map((s) => worker(s)));
  while (Date.now() < warm) await new Promise((r) => setTimeout(r, 50));
  ops = 0;
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  const n = ops;
  const dt = Number(process.hrtime.bigint() - t0) / 1e9;
  stop = true;
  await first;
  await g.reset();
  g.close();
  dev.close();
  mem.close();
  if (errors) throw new Error(`${errors} requests failed`);
  return n / dt;
}

/** Alternates the two modes ROUNDS times (the machine is shared and noisy) and keeps each mode's median. */
const ROUNDS = 3;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
async function bench(name, socket, blocks) {
  const rows = [];
  for (const qd of [1, 32]) {
    const d = [];
    const s = [];
    for (let i = 0; i < ROUNDS; i++) {
      d.push(await run(socket, "direct", qd, blocks));
      s.push(await run(socket, "shadow", qd, blocks));
    }
    const direct = median(d);
    const shadow = median(s);
    rows.push({ backend: name, qd, direct: Math.round(direct), shadow: Math.round(shadow), ratio: `${((100 * shadow) / direct).toFixed(1)}%` });
  }
  return rows;
}

function buildVhostBlk() {
  const example = "/usr/share/dpdk/examples/vhost_blk";
  if (!existsSync(example) || spawnSync("sh", ["-c", "pkg-config --exists libdpdk && command -v make && command -v cc"]).status !== 0) return undefined;
  const version = spawnSync("pkg-config", ["--modversion", "libdpdk"], { encoding: "utf8" }).stdout.trim();
  const dir = join(tmpdir(), `xen-vhost-dpdk-vhost-blk-${version}`);
  const bin = join(dir, "build", "vhost-blk");
  if (existsSync(bin)) return bin;
  rmSync(dir, { recursive: true, force: true });
  cpSync(example, dir, { recursive: true });
  const r = spawnSync("make", ["-C", dir], { encoding: "utf8" });
  return r.status === 0 && existsSync(bin) ? bin : undefined;
}

const rows = [];
if (hasQsd) {
  const qsd = await startQsd({ sectors: (64 << 20) / 512 });
  try {
    rows.push(...(await bench("qemu-storage-daemon", qsd.socket, (64 << 20) / 4096)));
  } finally {
    await qsd.stop();
  }
} else console.log("qemu-storage-daemon not installed: skipped");

const bin = buildVhostBlk();
if (bin) {
  const dir = mkdtempSync(join(tmpdir(), "bench-dpdk-blk-"));
  const log = openSync(join(dir, "log"), "a");
  const child = spawn(bin, ["-l", "1", "--no-huge", "-m", "512", "--no-pci", "--iova-mode=va", `--file-prefix=bshblk${process.pid}`], { cwd: dir, stdio: ["ignore", log, log] });
  closeSync(log);
  const exited = new Promise((r) => child.once("exit", r));
  for (let i = 0; i < 150 && !existsSync(join(dir, "vhost.socket")); i++) await new Promise((r) => setTimeout(r, 100));
  try {
    rows.push(...(await bench("DPDK vhost_blk", join(dir, "vhost.socket"), (128 << 20) / 4096)));
  } finally {
    child.kill("SIGTERM");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
} else console.log("DPDK vhost_blk example not buildable here: skipped");

console.log(`4 KiB random reads, median of ${ROUNDS} alternating ${SECONDS} s runs per mode, IOPS (shadow as % of direct):`);
console.table(rows);
