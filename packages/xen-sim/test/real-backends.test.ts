// The guest virtio-net and virtio-fs drivers against stock backends nobody here wrote, driven the KVM way
// (vhost-user front-end, memfd guest RAM; see vhost-user-transport.ts): DPDK 22.11 testpmd's net_vhost port
// in io and macswap forwarding, and QEMU 7.2's C virtiofsd reading a real file.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { VirtioFsDriver, VirtioNetDriver, VIRTIO_NET_HDR_SIZE, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS } from "../src/guest/index.js";
import { testFrame } from "../src/guest/programs/virtio-net.js";
import { VhostUserTransport } from "./vhost-user-transport.js";

const hasTestpmd = spawnSync("sh", ["-c", "command -v dpdk-testpmd"]).status === 0;
const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
// -o sandbox=chroot needs CAP_SYS_CHROOT
const hasVirtiofsd = existsSync(VIRTIOFSD) && process.getuid?.() === 0;
const MAC = new Uint8Array([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);

interface Daemon {
  dir: string;
  socket: string;
  child: ChildProcess;
  exited: Promise<void>;
}

async function waitForSocket(d: Daemon, log: string): Promise<Daemon> {
  for (let i = 0; i < 150 && !existsSync(d.socket) && d.child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 100));
  if (!existsSync(d.socket)) throw new Error(`backend did not create ${d.socket}: ${readFileSync(log, "utf8")}`);
  return d;
}

function spawnLogged(dir: string, cmd: string, args: string[]): { child: ChildProcess; exited: Promise<void>; log: string } {
  const log = join(dir, "backend.log");
  const fd = openSync(log, "a");
  const child = spawn(cmd, args, { stdio: ["ignore", fd, fd] });
  closeSync(fd);
  return { child, exited: new Promise((r) => child.once("exit", () => r())), log };
}

async function stop(d: Daemon | undefined): Promise<void> {
  if (!d) return;
  const timer = setTimeout(() => d.child.kill("SIGKILL"), 3000);
  if (d.child.exitCode === null) d.child.kill("SIGTERM");
  await d.exited;
  clearTimeout(timer);
  rmSync(d.dir, { recursive: true, force: true });
}

async function startTestpmd(mode: "io" | "macswap"): Promise<Daemon> {
  const dir = mkdtempSync(join(tmpdir(), "xen-sim-testpmd-"));
  const socket = join(dir, "vhost-net.sock");
  // io forwarding with a looped port echoes every frame the guest transmits into its receive queue;
  // macswap does the same with the Ethernet addresses swapped (so the reply is addressed to our MAC).
  const { child, exited, log } = spawnLogged(dir, "dpdk-testpmd", [
    "-l", "0-1", "--no-huge", "-m", "256", "--no-pci", "--iova-mode=va", `--file-prefix=xensim${process.pid}${mode}`,
    "--vdev", `net_vhost0,iface=${socket},queues=1`, "--",
    `--forward-mode=${mode}`, "--port-topology=loop", "--auto-start", "--stats-period=30", "--nb-cores=1", "--rxq=1", "--txq=1", "--total-num-mbufs=16384",
  ]);
  return waitForSocket({ dir, socket, child, exited }, log);
}

async function startVirtiofsd(files: Record<string, string>): Promise<Daemon> {
  const dir = mkdtempSync(join(tmpdir(), "xen-sim-virtiofsd-"));
  const share = join(dir, "share");
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(join(share, name, ".."), { recursive: true });
    writeFileSync(join(share, name), content);
  }
  const socket = join(dir, "vhost-fs.sock");
  const { child, exited, log } = spawnLogged(dir, VIRTIOFSD, [`--socket-path=${socket}`, "-o", `source=${share}`, "-o", "sandbox=chroot", "-o", "cache=none", "-f"]);
  return waitForSocket({ dir, socket, child, exited }, log);
}

function netConfig(): Uint8Array {
  const c = new Uint8Array(12);
  c.set(MAC, 0);
  c[6] = 1; // VIRTIO_NET_S_LINK_UP
  c[8] = 1; // max_virtqueue_pairs
  return c;
}

for (const mode of ["io", "macswap"] as const) {
  describe.skipIf(!hasTestpmd)(`VirtioNetDriver against DPDK testpmd, ${mode} forwarding (needs dpdk-testpmd from the dpdk package)`, () => {
    let d: Daemon | undefined;
    let leaks: ReturnType<typeof fdLeakCheck>;
    let t: VhostUserTransport | undefined;
    beforeAll(async () => {
      d = await startTestpmd(mode);
    }, 20_000);
    afterAll(() => stop(d), 10_000);
    beforeEach(() => {
      leaks = fdLeakCheck();
    });
    afterEach(() => {
      t?.close();
      t = undefined;
      expect(leaks.check()).toEqual([]);
    });

    it("MAC from config, frames through TX come back on RX with a virtio_net_hdr_v1", async () => {
      t = await VhostUserTransport.open(d!.socket, { deviceId: 1, config: netConfig(), vmmFeatures: (1n << BigInt(VIRTIO_NET_F_MAC)) | (1n << BigInt(VIRTIO_NET_F_STATUS)) });
      const nic = VirtioNetDriver.init(t, { rxBuffers: 32 });
      expect(nic.macString).toBe("52:54:00:ab:cd:ef");
      expect(nic.linkUp).toBe(true);
      expect(t.driverOkSeen).toBe(true);
      await t.activate();
      for (let seq = 0; seq < 40; seq++) {
        const frame = testFrame(MAC, seq, 60 + seq * 37);
        nic.send(frame);
        const got = nic.receive(3000);
        expect(got.header).toHaveLength(VIRTIO_NET_HDR_SIZE);
        expect(got.header[0]).toBe(0); // no VIRTIO_NET_HDR_F_NEEDS_CSUM: nothing was offloaded
        if (mode === "macswap") {
          expect([...got.frame.subarray(0, 6)]).toEqual([...MAC]); // now addressed to us
          expect([...got.frame.subarray(6, 12)]).toEqual([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
          expect(got.frame.subarray(12)).toEqual(frame.subarray(12));
        } else {
          expect(got.frame).toEqual(frame);
        }
      }
      expect(nic.txFrames).toBe(40);
      expect(nic.rxFrames).toBe(40);
      expect(nic.tryReceive()).toBeUndefined();
      await t.stop();
    }, 30_000);

    // (io forwarding only: the frames come back unchanged)
    if (mode === "io") it("mergeable receive buffers: frames bigger than one buffer arrive in num_buffers pieces", async () => {
      t = await VhostUserTransport.open(d!.socket, { deviceId: 1, config: netConfig(), vmmFeatures: 1n << BigInt(VIRTIO_NET_F_MAC) });
      const nic = VirtioNetDriver.init(t, { rxBuffers: 64, bufferSize: 512, mergeable: true });
      expect(nic.mergeable).toBe(true);
      await t.activate();
      const pieces: number[] = [];
      for (const len of [60, 500, 501, 1000, 1514, 1514]) {
        const frame = testFrame(MAC, len, len);
        nic.send(frame);
        const got = nic.receive(3000);
        expect(got.frame).toEqual(frame);
        pieces.push(got.buffers);
      }
      // 12-byte header + frame in 512-byte buffers: 500 fills one exactly, 501 spills into a second
      expect(pieces).toEqual([1, 1, 2, 2, 3, 3]);
      await t.stop();
    }, 30_000);
  });
}

describe.skipIf(!hasVirtiofsd)("VirtioFsDriver against QEMU's virtiofsd (needs /usr/lib/qemu/virtiofsd from qemu-system-common, run as root)", () => {
  let d: Daemon | undefined;
  let leaks: ReturnType<typeof fdLeakCheck>;
  const big = Array.from({ length: 3000 }, (_, i) => `line ${i} of a file bigger than one FUSE read\n`).join("");
  beforeEach(async () => {
    // virtiofsd serves one front-end and exits when it disconnects: one per test.
    d = await startVirtiofsd({ "hello.txt": "hello from virtiofsd through the guest driver\n", "sub/big.txt": big });
    leaks = fdLeakCheck();
  });
  afterEach(async () => {
    expect(leaks.check()).toEqual([]);
    await stop(d);
  });

  it("tag from config, FUSE_INIT, then LOOKUP/OPEN/READ/RELEASE/FORGET of real files; errors are FUSE errors", async () => {
    const config = new Uint8Array(40);
    config.set(new TextEncoder().encode("hostshare"), 0);
    new DataView(config.buffer).setUint32(36, 1, true);
    using t = await VhostUserTransport.open(d!.socket, { deviceId: 26, config });
    // Device bring-up (virtio_fs_probe), then the rings start (the VMM's part), then FUSE_INIT (mount).
    const fs = VirtioFsDriver.init(t, { mount: false });
    await t.activate();
    fs.mount();
    expect(fs.tag).toBe("hostshare");
    expect(fs.numRequestQueues).toBe(1);
    expect(fs.session.major).toBe(7);
    expect(fs.session.minor).toBeGreaterThanOrEqual(31);
    expect(new TextDecoder().decode(fs.readFile("hello.txt"))).toBe("hello from virtiofsd through the guest driver\n");
    const data = fs.readFile("/sub/big.txt", 16 * 1024);
    expect(data.length).toBe(big.length);
    expect(new TextDecoder().decode(data)).toBe(big);
    const entry = fs.lookup(1n, "hello.txt");
    expect(entry.attr.size).toBe(46n);
    expect(fs.getattr(entry.nodeid).size).toBe(46n);
    fs.forget(entry.nodeid);
    expect(() => fs.lookup(1n, "missing")).toThrow(/ENOENT \(-2\)/);
    expect(fs.request(1, 1n, new TextEncoder().encode("missing\0"), 128).error).toBe(-2);
    // the session goes on after errors
    expect(fs.readFile("hello.txt").length).toBe(46);
    await t.stop();
  }, 30_000);
});
