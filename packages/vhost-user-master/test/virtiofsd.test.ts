// Against QEMU 7.2's C virtiofsd (Debian qemu-system-common): handshake, then real FUSE requests through
// virtio-queue rings (INIT, LOOKUP, OPEN, READ of a file the test wrote). virtiofsd serves one front-end
// and exits when it disconnects, so each test starts its own.
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
// -o sandbox=chroot needs CAP_SYS_CHROOT
const canRun = existsSync(VIRTIOFSD) && process.getuid?.() === 0;
const VIRTIO_F_VERSION_1 = 1n << 32n;
const F_PROTOCOL_FEATURES = 1n << 30n;
const CONTENT = "hello from virtiofsd via vhost-user\n";

interface Daemon {
  socket: string;
  dir: string;
  child: ChildProcess;
  exited: Promise<number | null>;
}

async function startVirtiofsd(): Promise<Daemon> {
  const dir = mkdtempSync(join(tmpdir(), "virtiofsd-"));
  mkdirSync(join(dir, "share"));
  writeFileSync(join(dir, "share", "hello.txt"), CONTENT);
  const socket = join(dir, "vhost-fs.sock");
  const log = openSync(join(dir, "virtiofsd.log"), "a");
  const child = spawnDaemon(VIRTIOFSD, [`--socket-path=${socket}`, "-o", `source=${join(dir, "share")}`, "-o", "sandbox=chroot", "-o", "cache=none", "-f"],
    { stdio: ["ignore", log, log] });
  closeSync(log);
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  for (let i = 0; i < 100 && !existsSync(socket) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
  if (!existsSync(socket)) throw new Error(`virtiofsd did not start: ${readFileSync(join(dir, "virtiofsd.log"), "utf8")}`);
  return { socket, dir, child, exited };
}

describe.skipIf(!canRun)("virtiofsd (needs /usr/lib/qemu/virtiofsd from qemu-system-common, run as root)", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  let d: Daemon;
  const rec = new RequestRecorder();
  afterAll(noteCheck("virtiofsd", rec));
  const cleanup: (() => void)[] = [];
  beforeEach(async () => {
    d = await startVirtiofsd();
    leaks = fdLeakCheck();
  });
  afterEach(async () => {
    while (cleanup.length) cleanup.pop()!();
    expect(leaks.check()).toEqual([]);
    const timer = setTimeout(() => d.child.kill("SIGKILL"), 3000);
    await d.exited; // it exits by itself once the front-end is gone
    clearTimeout(timer);
    rmSync(d.dir, { recursive: true, force: true });
  });

  it("handshake, then FUSE INIT / LOOKUP / OPEN / READ of a file through the request queue", async () => {
    const fe = await Frontend.connect(d.socket, { timeoutMs: 3000, logger: rec });
    cleanup.push(() => fe.close());
    const n = await fe.negotiate({ features: VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES });
    expect(n.offeredFeatures & VIRTIO_F_VERSION_1).toBe(VIRTIO_F_VERSION_1);
    expect(describeProtocolFeatures(n.offeredProtocolFeatures)).toEqual(expect.arrayContaining(["MQ", "REPLY_ACK", "BACKEND_REQ", "CONFIGURE_MEM_SLOTS"]));
    expect(n.queueNum).toBe(2);

    const mem = GuestMemory.fromRanges([[0, 0x40_0000]]);
    cleanup.push(() => mem.close());
    await fe.setMemory(mem.vhostUserRegions().map(fromCRegion));
    const efds = Array.from({ length: 4 }, () => new EventFd());
    cleanup.push(() => efds.forEach((e) => e.close()));
    const queues = [DriverQueue.create<number>(mem, 0, 64), DriverQueue.create<number>(mem, 0x8000, 64)];
    for (const [i, q] of queues.entries())
      await fe.setupVring(i, {
        num: 64, desc: fe.userAddrOf(q.descTable.value), avail: fe.userAddrOf(q.availRing.value), used: fe.userAddrOf(q.usedRing.value),
        kick: efds[i * 2]!.fd, call: efds[i * 2 + 1]!.fd,
      });
    const req = queues[1]!;
    let unique = 1n;
    const IN = 0x10_0000;
    const OUT = 0x20_0000;

    /** One FUSE request on the request queue: in header + args readable, out header + reply writable. */
    async function fuse(opcode: number, nodeid: bigint, args: Uint8Array, outLen: number): Promise<{ error: number; body: Uint8Array }> {
      const hdr = new Uint8Array(40);
      const v = new DataView(hdr.buffer);
      v.setUint32(0, 40 + args.length, true);
      v.setUint32(4, opcode, true);
      v.setBigUint64(8, unique++, true);
      v.setBigUint64(16, nodeid, true);
      const inBuf = new Uint8Array(40 + args.length);
      inBuf.set(hdr);
      inBuf.set(args, 40);
      mem.write(IN, inBuf);
      mem.fill(OUT, 16 + outLen, 0);
      req.add({ readable: [{ addr: IN, len: inBuf.length }], writable: [{ addr: OUT, len: 16 }, { addr: OUT + 16, len: outLen }] });
      efds[2]!.write(1);
      for (let i = 0; i < 3000 && !req.hasUsed(); i++) await new Promise((r) => setTimeout(r, 1));
      const used = req.getUsed();
      if (!used) throw new Error(`no reply to FUSE opcode ${opcode}`);
      const out = mem.read(OUT, 16);
      const ov = new DataView(out.buffer);
      return { error: ov.getInt32(4, true), body: mem.read(OUT + 16, Math.max(0, ov.getUint32(0, true) - 16)) };
    }

    // FUSE_INIT (26): fuse_init_in {major 7, minor 31, max_readahead, flags}
    const init = new Uint8Array(16);
    new DataView(init.buffer).setUint32(0, 7, true);
    new DataView(init.buffer).setUint32(4, 31, true);
    const r1 = await fuse(26, 0n, init, 64);
    expect(r1.error).toBe(0);
    expect(new DataView(r1.body.buffer).getUint32(0, true)).toBe(7);
    // FUSE_LOOKUP (1) "hello.txt" in the root (nodeid 1) -> fuse_entry_out {nodeid, ..., attr.size at 40+8}
    const r2 = await fuse(1, 1n, new TextEncoder().encode("hello.txt\0"), 128);
    expect(r2.error).toBe(0);
    const ev = new DataView(r2.body.buffer);
    const nodeid = ev.getBigUint64(0, true);
    expect(ev.getBigUint64(40 + 8, true)).toBe(BigInt(CONTENT.length));
    // FUSE_OPEN (14) O_RDONLY -> fuse_open_out {fh}
    const r3 = await fuse(14, nodeid, new Uint8Array(8), 16);
    expect(r3.error).toBe(0);
    const fh = new DataView(r3.body.buffer).getBigUint64(0, true);
    // FUSE_READ (15): fuse_read_in {fh, offset 0, size 4096, ...}
    const read = new Uint8Array(40);
    const rv = new DataView(read.buffer);
    rv.setBigUint64(0, fh, true);
    rv.setUint32(16, 4096, true);
    const r4 = await fuse(15, nodeid, read, 4096);
    expect(r4.error).toBe(0);
    expect(new TextDecoder().decode(r4.body)).toBe(CONTENT);
    // LOOKUP of a missing name: a FUSE error (-ENOENT), the connection is unaffected
    const r5 = await fuse(1, 1n, new TextEncoder().encode("missing\0"), 128);
    expect(r5.error).toBe(-2);
    expect(fe.connected).toBe(true);
  }, 20_000);
});
