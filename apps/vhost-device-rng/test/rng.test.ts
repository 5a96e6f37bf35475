import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { UnixStream, close as closeFd, memfdCreate } from "@xen-vhost/vmm-sys-util";
import { FrontendReq, encodeHeader, encodeMessage } from "@xen-vhost/vhost-user-protocol";
import { TestFrontend } from "@xen-vhost/vhost-user-backend/testing";
import { VhostUserDaemon } from "@xen-vhost/vhost-user-backend";
import { RngDevice, parse } from "../src/index.js";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { Frontend, XenMmapFlags } from "@xen-vhost/vhost-user-master";
import { DATA, session } from "@xen-vhost/vhost-user-master/testing";

let dir: string;
let leaks: ReturnType<typeof fdLeakCheck>;
const cleanup: (() => void)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "rng-"));
  leaks = fdLeakCheck();
});
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) c();
  await new Promise((r) => setTimeout(r, 20));
  rmSync(dir, { recursive: true, force: true });
  expect(leaks.check()).toEqual([]);
});

function serve(device: RngDevice): string {
  const path = join(dir, "rng.sock0");
  const d = new VhostUserDaemon(device, { socket: path }).start();
  cleanup.push(() => d.close(), () => device.close());
  return path;
}

describe("vhost-device-rng", () => {
  it("advertises what rust-vmm's does (0x171000000, one queue) plus the protocol features it implements", async () => {
    const path = serve(new RngDevice());
    const s = await session(path, [8]);
    cleanup.push(() => s.close());
    expect(s.negotiated.offeredFeatures).toBe(0x171000000n);
    expect(s.negotiated.queueNum).toBe(1);
  });

  it("fills device-writable buffers with distinct random bytes through a real ring", async () => {
    const path = serve(new RngDevice());
    const s = await session(path, [8]);
    cleanup.push(() => s.close());
    for (let i = 0; i < 3; i++) s.post(0, { writable: [{ addr: DATA + i * 0x100, len: 64 }] }, i);
    const used = await s.used(0, 3);
    expect(used.map((u) => u.len)).toEqual([64, 64, 64]);
    const bufs = [0, 1, 2].map((i) => Buffer.from(s.mem.read(DATA + i * 0x100, 64)).toString("hex"));
    expect(new Set(bufs).size).toBe(3);
    for (const b of bufs) expect(new Set(Buffer.from(b, "hex")).size).toBeGreaterThan(40);
    expect(await s.fe.getVringBase(0)).toBe(3);
  });

  it("a chain without writable buffers comes back with length 0", async () => {
    const path = serve(new RngDevice());
    const s = await session(path, [8]);
    cleanup.push(() => s.close());
    s.post(0, { readable: [{ addr: DATA, len: 16 }] });
    const [u] = await s.used(0);
    expect(u!.len).toBe(0);
  });

  it("rate limit: --max-bytes per --period, the rest waits in the ring for the next period", async () => {
    let now = 1_000_000;
    const device = new RngDevice({ maxBytes: 100, periodMs: 20, now: () => now });
    const path = serve(device);
    const s = await session(path, [8]);
    cleanup.push(() => s.close());
    for (let i = 0; i < 3; i++) s.post(0, { writable: [{ addr: DATA + i * 0x100, len: 64 }] }, i);
    const first = await s.used(0, 2);
    expect(first.map((u) => u.len)).toEqual([64, 36]);
    // the device's clock has not moved: its retry timer fires but the quota is still spent
    await new Promise((r) => setTimeout(r, 80));
    expect(s.rings[0]!.driver.harvest()).toEqual([]);
    now += 20;
    const [third] = await s.used(0, 1);
    expect(third!.len).toBe(64);
    expect(device.bytesServed).toBe(164);
  });

  it("reads entropy from a file with -f", async () => {
    const file = join(dir, "entropy");
    writeFileSync(file, Buffer.alloc(4096, 0xab));
    const path = serve(new RngDevice({ filename: file }));
    const s = await session(path, [8]);
    cleanup.push(() => s.close());
    s.post(0, { writable: [{ addr: DATA, len: 32 }] });
    await s.used(0);
    expect([...s.mem.read(DATA, 32)].every((b) => b === 0xab)).toBe(true);
  });

  it("serves a new front-end after the first one disconnects", async () => {
    const path = serve(new RngDevice());
    const a = await session(path, [8]);
    a.close();
    const b = await session(path, [8]);
    cleanup.push(() => b.close());
    b.post(0, { writable: [{ addr: DATA, len: 8 }] });
    expect((await b.used(0))[0]!.len).toBe(8);
  });
});

describe("command line", () => {
  it("parses rust-vmm's options", () => {
    const a = parse(["-s", "/tmp/rng.sock", "-c", "2", "-p", "1000", "-m", "4096"]);
    expect(a.common).toMatchObject({ socketPath: "/tmp/rng.sock", socketCount: 2, client: false });
    expect(a.rng).toEqual({ periodMs: 1000, maxBytes: 4096 });
    expect(() => parse(["-c", "2"])).toThrow(/--socket-path is required/);
    expect(() => parse(["-s", "x", "-m", "lots"])).toThrow(/not a number/);
    expect(() => parse(["-s", "x", "--bogus"])).toThrow(/bogus/);
  });

  const main = join(import.meta.dirname, "../dist/main.js");
  it.skipIf(!existsSync(main))("the built daemon prints --help and serves -s PATH -c 2 as PATH0 and PATH1 (needs pnpm build)", async () => {
    expect(execFileSync(process.execPath, [main, "--help"]).toString()).toMatch(/--socket-path/);
    const base = join(dir, "rng.sock");
    const child = spawn(process.execPath, [main, "-s", base, "-c", "2"], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    try {
      for (const i of [0, 1]) {
        const s = await session(`${base}${i}`, [8]);
        s.post(0, { writable: [{ addr: DATA, len: 16 }] });
        expect((await s.used(0))[0]!.len).toBe(16);
        s.close();
      }
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
    expect(stderr).toMatch(/"msg":"listening"/);
    expect(existsSync(`${base}0`)).toBe(false);
  }, 60_000);
});

describe("one build, KVM-style and Xen front-ends", () => {
  const main = join(import.meta.dirname, "../dist/main.js");
  const mapper = join(import.meta.dirname, "fixtures/fd-xen-mapper.mjs");

  async function run(args: string[], body: (base: string, stderr: () => string) => Promise<void>): Promise<void> {
    const base = join(dir, "rng.sock");
    const child = spawn(process.execPath, [main, "-s", base, ...args], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    try {
      await body(base, () => stderr);
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  }

  it.skipIf(!existsSync(main))("without --xen-mapper XEN_MMAP is not offered: a front-end that requires it stops at negotiation (needs pnpm build)", async () => {
    await run([], async (base) => {
      const fe = await Frontend.connect(`${base}0`, { retry: { attempts: 400, initialDelayMs: 10, maxDelayMs: 100 } });
      try {
        await expect(fe.negotiate({ requireProtocolFeatures: ["XEN_MMAP"] })).rejects.toMatchObject({ kind: "FeatureMismatch" });
      } finally {
        fe.close();
      }
    });
  }, 60_000);

  it.skipIf(!existsSync(main))("with --xen-mapper MODULE the same daemon offers XEN_MMAP and maps FOREIGN regions through the plugged-in mapper (needs pnpm build)", async () => {
    await run(["--xen-mapper", mapper], async (base, stderr) => {
      const fe = await Frontend.connect(`${base}0`, { retry: { attempts: 400, initialDelayMs: 10, maxDelayMs: 100 } });
      const mem = GuestMemory.fromRanges([[0, 0x20_0000]]);
      const kick = new EventFd();
      const call = new EventFd();
      try {
        const n = await fe.negotiate({ requireProtocolFeatures: ["XEN_MMAP"] });
        expect(n.protocolFeatures & (1n << 17n)).toBe(1n << 17n);
        const d = mem.vhostUserRegions()[0]!;
        await fe.setMemTable([{ guestPhysAddr: d.guest_phys_addr, size: d.memory_size, userAddr: d.userspace_addr, mmapOffset: d.mmap_offset, fd: d.fd, xen: { flags: XenMmapFlags.FOREIGN, domid: 5 } }]);
        const q = DriverQueue.create<number>(mem, 0x1000, 8, { eventIdx: true });
        const va = (g: bigint): bigint => d.userspace_addr + g;
        await fe.setupVring(0, { num: 8, desc: va(q.descTable.value), avail: va(q.availRing.value), used: va(q.usedRing.value), kick: kick.fd, call: call.fd });
        q.add({ writable: [{ addr: DATA, len: 32 }] });
        kick.write(1);
        let used: { len: number }[] = [];
        for (let i = 0; i < 500 && used.length === 0; i++) {
          used = q.harvest();
          if (used.length === 0) await new Promise((r) => setTimeout(r, 5));
        }
        expect(used[0]?.len).toBe(32);
        expect(stderr()).toContain('"fixtureMapper":{"type":"foreign","noAdvanceMap":false,"domid":5}');
        expect(stderr()).toContain("offering XEN_MMAP");
      } finally {
        fe.close();
        kick.close();
        call.close();
        mem.close();
      }
    });
  }, 60_000);
});

describe("a malformed front-end message", () => {
  it("closes that connection cleanly (its fds closed) and the daemon serves the next front-end", async () => {
    const path = serve(new RngDevice());
    const hostile: [string, Uint8Array, boolean][] = [
      // SET_MEM_TABLE announcing one region in a 4-byte body, with an fd
      ["truncated SET_MEM_TABLE", Uint8Array.of(...encodeHeader({ request: FrontendReq.SET_MEM_TABLE, flags: 1, size: 4 }), 1, 0, 0, 0), true],
      // a request id no spec defines
      ["unknown request 999", encodeHeader({ request: 999, flags: 1, size: 0 }), false],
      // GET_INFLIGHT_FD before INFLIGHT_SHMFD was negotiated
      ["unnegotiated GET_INFLIGHT_FD", encodeMessage({ request: FrontendReq.GET_INFLIGHT_FD, flags: 1, payload: { kind: "inflight", mmapSize: 0n, mmapOffset: 0n, numQueues: 1, queueSize: 16 } }), false],
    ];
    for (const [what, bytes, withFd] of hostile) {
      const fe = new TestFrontend(UnixStream.connect(path));
      const fd = memfdCreate("junk");
      try {
        fe.conn.sendRaw(bytes, withFd ? [fd] : []);
      } finally {
        closeFd(fd);
      }
      expect((await fe.whenClosed())?.kind, what).toBe("Disconnected");
      fe.close();
    }
    const s = await session(path, [8]);
    cleanup.push(() => s.close());
    s.post(0, { writable: [{ addr: DATA, len: 16 }] });
    expect((await s.used(0))[0]!.len).toBe(16);
  });
});
