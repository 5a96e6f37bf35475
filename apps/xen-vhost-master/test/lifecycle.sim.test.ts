// The bridge in this process (so its counters, fds and mappings can be inspected) against the simulator,
// with the project's vhost-device-rng as a separate process (XEN_MMAP): the kick counters on both doorbell
// paths, and a guest destroyed without toolstack cleanup, noticed through xenstored's @releaseDomain.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startSimulator, type Simulator } from "@xen-vhost/xen-sim";
import { XenStore } from "@xen-vhost/xen-sys";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Bridge } from "../src/bridge.js";
import { parseCommandLine, type BridgeConfig } from "../src/config.js";
import { jsonLogger } from "../src/log.js";
import { daemonMain, Processes, simMapper, waitFor } from "./sim-helpers.js";

let sim: Simulator;
let dir: string;
const procs = new Processes();
const bridgeLog: string[] = [];
let bridge: Bridge | undefined;

const logs = (): string[] => [...bridgeLog.map((l) => `[bridge] ${l.trim()}`), ...procs.logs()];
// Shared file mappings (guest RAM, ioreq pages: memfd/privcmd-backed), not the heap's anonymous ones, whose
// number moves with V8's heap.
const mappings = (): number => readFileSync("/proc/self/maps", "utf8").split("\n").filter((l) => l.split(" ")[1]?.endsWith("s")).length;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "xvm-life-"));
  bridgeLog.length = 0;
  sim = await startSimulator({
    domains: [
      { domid: 1, name: "guest1", ram: 64 << 20, vcpus: 1 },
      { domid: 2, name: "guest2", ram: 64 << 20, vcpus: 1 },
    ],
  });
});

afterEach(async () => {
  await bridge?.close();
  bridge = undefined;
  procs.killAll();
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

async function startRng(count = 1): Promise<string> {
  const sock = join(dir, "rng.sock");
  procs.start(daemonMain("rng"), ["-s", sock, "-c", String(count), "--xen-mapper", simMapper], sim.env(), "rng");
  await waitFor("the backend sockets", () => Array.from({ length: count }, (_, i) => existsSync(`${sock}${i}`)).every(Boolean), 30_000, logs);
  return sock;
}

function startBridge(config: BridgeConfig, offload: boolean): Bridge {
  const transport = sim.connect();
  if (!offload) transport.disableEventfdOffload();
  const b = new Bridge({ config, transport, xenstorePath: sim.xenstorePath!, logger: jsonLogger("debug", (l) => bridgeLog.push(l)) });
  bridge = b;
  return b;
}

async function runRngGuest(domid: number, base: string, irq: number): Promise<{ samples: string[]; interrupts: number }> {
  const guestLog: string[] = [];
  const g = sim.startGuest({ domid, program: "virtio-rng", args: { base, irq, reads: 4, bytes: 32 }, onLog: (l) => guestLog.push(l) });
  return (await g.result.catch((err: unknown) => {
    throw new Error(`${String(err)}\n${[...guestLog.map((l) => `[guest${domid}] ${l}`), ...logs()].slice(-60).join("\n")}`);
  })) as { samples: string[]; interrupts: number };
}

type Row = { labels: Record<string, string | number>; counters: Record<string, number> };

describe("kick counters", () => {
  for (const offload of [false, true]) {
    it(`counts kicks relayed in userspace, and says which queues the kernel path hides (${offload ? "privcmd ioeventfd" : "userspace relay"})`, async () => {
      const sock = await startRng();
      sim.addVirtioDevice({ domid: 1, devid: 0, type: "virtio,device4", base: 0x0200_0000n, irq: 33 });
      const b = startBridge(parseCommandLine(["--socket-path", `${sock}0`, "--name", "rng"]) as BridgeConfig, offload);
      await b.start();
      await waitFor("Connected", () => sim.xenstoreRead("/local/domain/0/backend/virtio/1/0/state") === "4", 30_000, logs);
      sim.unpause(1);
      const r = await runRngGuest(1, "0x2000000", 33);
      expect(r.samples).toHaveLength(4);
      const dev = [...b.counters()][0] as Row;
      const guest = [...b.guestCounters()][0] as Row;
      expect(dev.counters["ioreqs"]).toBeGreaterThan(20);
      expect(dev.counters["interrupts"]).toBeGreaterThanOrEqual(1);
      if (offload) {
        // The simulated kernel completed QueueNotify in the vCPU: this process never saw those kicks.
        expect(dev.counters["kicksOffloadedQueues"]).toBe(1);
        expect(dev.counters["kicks"]).toBe(0);
        expect(guest.counters["doorbells"]).toBe(0);
      } else {
        // Each QueueNotify went through the ioreq loop's doorbell table to the backend's kick eventfd.
        expect(dev.counters["kicksOffloadedQueues"]).toBe(0);
        expect(dev.counters["kicks"]).toBeGreaterThanOrEqual(1);
        expect(dev.counters["kicks"]).toBe(guest.counters["doorbells"]);
      }
    }, 90_000);
  }
});

describe("guest destroyed without toolstack cleanup", () => {
  it("@releaseDomain tears the guest's devices down, destroys its ioreq server, releases its mappings; the other guest keeps its device", async () => {
    const sock = await startRng(2);
    const config: BridgeConfig = {
      ...(parseCommandLine(["--socket-path", `${sock}0`, "--name", "rng"]) as BridgeConfig),
    };
    // Two backends (one per guest): the discovered devices take the sockets in order of appearance.
    config.devices = [{ ...config.devices[0]!, socket: `${sock}0` }];
    const b = startBridge(config, false);
    const removed: [string, string][] = [];
    b.on("deviceRemoved", (key, reason) => removed.push([key, reason]));
    await b.start();
    // The toolstack's view: xenstored knows the domains (XS_INTRODUCE), and forgets one when it dies.
    const xs = await XenStore.open({ socketPath: sim.xenstorePath! });
    try {
      // A simulator whose xenstored introduces domains itself also fires @releaseDomain itself; with an
      // older one the test plays xenstored's part (XS_INTRODUCE now, XS_RELEASE once the domain is gone).
      const simFires = await xs.isDomainIntroduced(1);
      if (!simFires) {
        await xs.introduce(1, 0, 1);
        await xs.introduce(2, 0, 1);
      }
      sim.xenstoreRead("/local/domain/1/name"); // opens the test's own control connection before the snapshot
      const fds = fdLeakCheck();
      const maps = mappings();
      sim.addVirtioDevice({ domid: 1, devid: 0, type: "virtio,device4", base: 0x0200_0000n, irq: 33 });
      await waitFor("guest 1 served", () => sim.xenstoreRead("/local/domain/0/backend/virtio/1/0/state") === "4", 30_000, logs);
      expect(mappings()).toBeGreaterThan(maps); // guest RAM and ioreq pages are mapped
      sim.unpause(1);
      expect((await runRngGuest(1, "0x2000000", 33)).samples).toHaveLength(4);

      // xl destroy of a wedged guest, and no toolstack left to remove backend/virtio/1/0.
      sim.destroy(1);
      if (!simFires) await xs.release(1); // what xenstored does when the domain dies: @releaseDomain
      await waitFor("guest 1 released", () => bridgeLog.some((l) => l.includes('"guest released"') && l.includes('"domid":1')), 10_000, logs);
      expect(removed).toHaveLength(1);
      expect(removed[0]![0]).toBe("virtio/1/0");
      expect(removed[0]![1]).toMatch(/^guest gone: domain (no longer exists|is dying)$/);
      // The backend entry the toolstack left behind says Closed; the bridge holds nothing of the guest.
      expect(sim.xenstoreRead("/local/domain/0/backend/virtio/1/0/state")).toBe("6");
      expect(bridgeLog.some((l) => l.includes("ioreq server destroyed") && l.includes('"domid":1'))).toBe(true);
      expect(fds.check()).toEqual([]);
      expect(mappings()).toBe(maps);
      expect([...b.counters()]).toHaveLength(0);

      // The other guest is untouched by all that: it gets a device and uses it.
      sim.addVirtioDevice({ domid: 2, devid: 0, type: "virtio,device4", base: 0x0200_0000n, irq: 33 });
      await waitFor("guest 2 served", () => sim.xenstoreRead("/local/domain/0/backend/virtio/2/0/state") === "4", 30_000, logs);
      sim.unpause(2);
      expect((await runRngGuest(2, "0x2000000", 33)).samples).toHaveLength(4);
    } finally {
      xs.close();
    }
  }, 120_000);
});
