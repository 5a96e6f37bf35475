// Stock backends through the bridge on the simulator (packages/xen-sim/examples/bridge-stock-backends.mjs as
// CI tests): the xen-sim guest's virtio-fs and virtio-net drivers, xl's xenstore entries, and the bridge
// started with the seed's command line in shadow mode (neither backend has XEN_MMAP). Neither backend has a
// config space either (no VHOST_USER_PROTOCOL_F_CONFIG), so the fs tag and the MAC the guest reads are the
// ones the bridge was given (--fs-tag, --mac), as QEMU's device properties supply them. The bridge's metrics
// endpoint is read afterwards for the shadow relay's per-queue counters.
import { spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startSimulator, type Simulator } from "@xen-vhost/xen-sim";
import { spawnDaemon } from "@xen-vhost/vhost-user-master/testing";
import { bridgeMain, Processes, waitFor, type Spawned } from "./sim-helpers.js";

const VIRTIOFSD = "/usr/lib/qemu/virtiofsd";
const hasVirtiofsd = existsSync(VIRTIOFSD) && process.getuid?.() === 0;
const hasTestpmd = spawnSync("sh", ["-c", "command -v dpdk-testpmd"]).status === 0;
const CONTENT = "hello from the host, through the bridge and virtiofsd\n";
const STATE = "/local/domain/0/backend/virtio/1/0/state";

let sim: Simulator;
let dir: string;
const procs = new Processes();
let daemon: ChildProcess | undefined;
let daemonLog: string[] = [];

function startDaemon(cmd: string, args: string[]): void {
  daemonLog = [];
  daemon = spawnDaemon(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  for (const s of [daemon.stdout!, daemon.stderr!]) s.on("data", (d: Buffer) => daemonLog.push(...d.toString().split("\n").filter(Boolean).map((l) => `[${cmd}] ${l}`)));
}

const logs = (): string[] => [...daemonLog.slice(-20), ...procs.logs()];

function scrape(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    request({ socketPath, path: "/" }, (res) => {
      let body = "";
      res.on("data", (d: Buffer) => (body += d.toString()));
      res.on("end", () => resolve(body));
    }).on("error", reject).end();
  });
}

/** The value of `metric{...labels...}` in Prometheus text, for the line whose labels include all of `labels`. */
function metric(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split("\n")) {
    const m = /^(\w+)\{(.*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    if (Object.entries(labels).every(([k, v]) => m[2]!.includes(`${k}="${v}"`))) return Number(m[3]);
  }
  return undefined;
}

async function bridgeFor(type: string, socket: string, extra: string[]): Promise<{ bridge: Spawned; metrics: string }> {
  await waitFor("the backend's socket", () => existsSync(socket) || daemon?.exitCode !== null, 30_000, logs);
  expect(daemon?.exitCode, logs().join("\n")).toBeNull();
  // What xl writes for `virtio = ["type=virtio,device1a, transport=mmio"]` (virtio,device1 for net).
  sim.addVirtioDevice({ domid: 1, devid: 0, type, base: 0x0200_0000n, irq: 33 });
  const metrics = join(dir, "metrics.sock");
  const args = extra[0] === "--config" ? extra : ["--socket-path", socket, ...extra];
  const bridge = procs.start(bridgeMain, [...args, "--metrics", metrics, "--log-level", "debug"], sim.env(), "bridge");
  await waitFor("backend state Connected", () => sim.xenstoreRead(STATE) === "4", 30_000, logs);
  expect(bridge.log.some((l) => l.includes('"mode":"shadow"'))).toBe(true);
  expect(bridge.log.some((l) => l.includes("the bridge supplies it"))).toBe(true);
  sim.unpause(1);
  return { bridge, metrics };
}

async function runGuest<T>(program: string, args: Record<string, unknown>): Promise<{ result: T; log: string[] }> {
  const log: string[] = [];
  const g = sim.startGuest({ domid: 1, program, args, onLog: (l) => log.push(l) });
  const result = (await g.result.catch((err: unknown) => {
    throw new Error(`${String(err)}\n${[...log.map((l) => `[guest] ${l}`), ...logs()].slice(-60).join("\n")}`);
  })) as T;
  return { result, log };
}

async function stopBridge(bridge: Spawned): Promise<void> {
  bridge.child.kill("SIGTERM");
  await waitFor("bridge exit", () => bridge.child.exitCode !== null, 5000, logs);
  expect(bridge.child.exitCode).toBe(0);
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "xvm-stock-"));
  sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 64 << 20, vcpus: 1 }] });
});
afterEach(async () => {
  procs.killAll();
  if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
    const gone = new Promise((r) => daemon!.once("exit", r));
    daemon.kill("SIGTERM");
    const t = setTimeout(() => daemon?.kill("SIGKILL"), 3000);
    await gone;
    clearTimeout(t);
  }
  daemon = undefined;
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!hasVirtiofsd)("virtio-fs: QEMU virtiofsd through the bridge (needs /usr/lib/qemu/virtiofsd from qemu-system-common, root)", () => {
  it("the guest mounts the tag the bridge supplies (--fs-tag) and reads a host file through FUSE; the relay's counters are in the metrics", async () => {
    mkdirSync(join(dir, "share"));
    writeFileSync(join(dir, "share", "hello.txt"), CONTENT);
    const socket = join(dir, "fs.sock");
    startDaemon(VIRTIOFSD, [`--socket-path=${socket}`, "-o", `source=${join(dir, "share")}`, "-o", "sandbox=chroot", "-o", "cache=none", "-f"]);
    const { bridge, metrics } = await bridgeFor("virtio,device1a", socket, ["--name", "fs", "--fs-tag", "hostshare"]);
    const { result, log } = await runGuest<{ tag: string; content: string; fuse: string; interrupts: number }>("virtio-fs", { irq: 33, path: "hello.txt" });
    expect(result.tag).toBe("hostshare");
    expect(log.some((l) => l.includes("1 request queue(s)"))).toBe(true);
    expect(result.content).toBe(CONTENT);
    expect(result.interrupts).toBeGreaterThan(0);
    // The guest reset the device at the end; the counters of its request queue (1) are still there.
    const text = await scrape(metrics);
    const q1 = { type: "fs", queue: "1" };
    const completed = metric(text, "xen_vhost_shadowCompleted_total", q1);
    // FUSE INIT, LOOKUP, OPEN, READ, RELEASE at least (the driver's sequence), each one relayed chain
    expect(completed, text).toBeGreaterThanOrEqual(5);
    expect(metric(text, "xen_vhost_shadowPosted_total", q1)).toBe(completed);
    expect(metric(text, "xen_vhost_shadowBytesOut_total", q1)).toBeGreaterThan(CONTENT.length);
    expect(metric(text, "xen_vhost_shadowInFlight", q1)).toBe(0);
    expect(metric(text, "xen_vhost_shadowFailed_total", q1)).toBe(0);
    expect(text).toContain("# TYPE xen_vhost_shadowInFlight gauge");
    await stopBridge(bridge);
  }, 120_000);

  it("from a JSON config: \"fs\": { tag, requestQueues: 1 } - the guest reads both", async () => {
    mkdirSync(join(dir, "share"));
    writeFileSync(join(dir, "share", "hello.txt"), CONTENT);
    const socket = join(dir, "fs.sock");
    startDaemon(VIRTIOFSD, [`--socket-path=${socket}`, "-o", `source=${join(dir, "share")}`, "-o", "sandbox=chroot", "-o", "cache=none", "-f"]);
    const config = join(dir, "bridge.json");
    writeFileSync(config, JSON.stringify({ devices: [{ name: "fs", socket, fs: { tag: "from-json", requestQueues: 1 } }] }));
    const { bridge } = await bridgeFor("virtio,device1a", socket, ["--config", config]);
    const { result, log } = await runGuest<{ tag: string; content: string }>("virtio-fs", { irq: 33, path: "hello.txt" });
    expect(result.tag).toBe("from-json");
    expect(log.some((l) => l.includes("1 request queue(s)"))).toBe(true);
    expect(result.content).toBe(CONTENT);
    await stopBridge(bridge);
  }, 120_000);

  it("--fs-queues beyond what virtiofsd reports (GET_QUEUE_NUM: hiprio + 1) is refused with the reason, the device is not served", async () => {
    mkdirSync(join(dir, "share"));
    const socket = join(dir, "fs.sock");
    startDaemon(VIRTIOFSD, [`--socket-path=${socket}`, "-o", `source=${join(dir, "share")}`, "-o", "sandbox=chroot", "-o", "cache=none", "-f"]);
    await waitFor("the backend's socket", () => existsSync(socket), 30_000, logs);
    sim.addVirtioDevice({ domid: 1, devid: 0, type: "virtio,device1a", base: 0x0200_0000n, irq: 33 });
    const bridge = procs.start(bridgeMain, ["--socket-path", socket, "--name", "fs", "--fs-queues", "2"], sim.env(), "bridge");
    await waitFor("the set-up failure", () => bridge.log.some((l) => l.includes("device set-up failed")), 30_000, logs);
    expect(bridge.log.find((l) => l.includes("device set-up failed"))).toMatch(/requestQueues 2 needs 3 queues, the backend has 2/);
    expect(sim.xenstoreRead(STATE)).not.toBe("4");
    expect(bridge.child.exitCode).toBeNull(); // the bridge keeps running for other devices
    await stopBridge(bridge);
  }, 60_000);

  it("without --fs-tag the guest still gets a usable tag (the default), never 0xff bytes", async () => {
    mkdirSync(join(dir, "share"));
    writeFileSync(join(dir, "share", "hello.txt"), CONTENT);
    const socket = join(dir, "fs.sock");
    startDaemon(VIRTIOFSD, [`--socket-path=${socket}`, "-o", `source=${join(dir, "share")}`, "-o", "sandbox=chroot", "-o", "cache=none", "-f"]);
    const { bridge } = await bridgeFor("virtio,device1a", socket, ["--name", "fs"]);
    const { result } = await runGuest<{ tag: string; content: string }>("virtio-fs", { irq: 33, path: "hello.txt" });
    expect(result.tag).toBe("virtiofs");
    expect(result.content).toBe(CONTENT);
    await stopBridge(bridge);
  }, 120_000);
});

describe.skipIf(!hasTestpmd)("virtio-net: DPDK testpmd through the bridge (needs dpdk-testpmd from Debian dpdk)", () => {
  it("the guest reads the MAC the bridge supplies (--mac), link up, and gets every frame echoed; TX/RX counters in the metrics", async () => {
    const socket = join(dir, "net.sock");
    // io forwarding on a looped port: every frame the guest sends comes back (--stats-period keeps it running
    // without a terminal).
    startDaemon("dpdk-testpmd", ["-l", "0-1", "--no-huge", "-m", "256", "--no-pci", "--iova-mode=va", `--file-prefix=xvmstock${process.pid}`,
      "--vdev", `net_vhost0,iface=${socket},queues=1`, "--", "--forward-mode=io", "--port-topology=loop", "--auto-start",
      "--stats-period=30", "--nb-cores=1", "--rxq=1", "--txq=1", "--total-num-mbufs=16384"]);
    const mac = "52:54:00:ab:cd:ef";
    const { bridge, metrics } = await bridgeFor("virtio,device1", socket, ["--name", "net", "--mac", mac]);
    // What the guest is offered: testpmd's bits with the bridge's MAC/STATUS, without the control queue and
    // MQ (QEMU serves the control queue itself; DPDK 22.11 never answers it).
    const ready = JSON.parse(bridge.log.find((l) => l.includes("device ready for the guest"))!.replace(/^\[bridge\] /, "")) as { features: number; queues: number };
    expect(ready.queues).toBe(2); // rx and tx, although testpmd reports 128 in GET_QUEUE_NUM
    const offered = BigInt(ready.features);
    expect([5, 16, 17, 22].map((b) => Number((offered >> BigInt(b)) & 1n))).toEqual([1, 1, 0, 0]);
    const FRAMES = 20;
    const { result, log } = await runGuest<{ mac: string | null; tx: number; rx: number; interrupts: number }>("virtio-net", { irq: 33, frames: FRAMES, length: 80 });
    expect(result.mac).toBe(mac);
    expect(log.some((l) => l.includes(`mac ${mac}, link up`))).toBe(true);
    expect([result.tx, result.rx]).toEqual([FRAMES, FRAMES]);
    const text = await scrape(metrics);
    // virtio-net queue 0 is receive, 1 transmit (virtio 1.2 5.1.2)
    expect(metric(text, "xen_vhost_shadowCompleted_total", { type: "net", queue: "1" }), text).toBe(FRAMES);
    expect(metric(text, "xen_vhost_shadowCompleted_total", { type: "net", queue: "0" })).toBe(FRAMES);
    // each TX chain: the 12-byte virtio_net_hdr_v1 and the 80-byte frame
    expect(metric(text, "xen_vhost_shadowBytesIn_total", { type: "net", queue: "1" })).toBe(FRAMES * (12 + 80));
    await stopBridge(bridge);
  }, 120_000);
});
