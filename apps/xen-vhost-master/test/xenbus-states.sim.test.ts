// The backend's xenbus states as the toolstack sees them, for xl 4.17's `virtio_disk` layout: libxl gives
// the backend ~10 s to reach InitWait and compares for equality, so the bridge must say InitWait before its
// slow set-up (mapping RAM, the ioreq server, the backend's negotiation), and may say Connected only once
// the guest runs. The bridge runs in this process against the simulator.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startSimulator, type Simulator } from "@xen-vhost/xen-sim";
import { UnixListener } from "@xen-vhost/vmm-sys-util";
import { Bridge } from "../src/bridge.js";
import { parseCommandLine, type BridgeConfig } from "../src/config.js";
import { jsonLogger } from "../src/log.js";
import { daemonMain, Processes, simMapper, waitFor } from "./sim-helpers.js";

const BACKEND = "/local/domain/0/backend/virtio_disk/1/51712";

let sim: Simulator;
let dir: string;
const procs = new Processes();
const bridgeLog: string[] = [];
let bridge: Bridge | undefined;
const logs = (): string[] => [...bridgeLog.map((l) => `[bridge] ${l.trim()}`), ...procs.logs()];
const state = (): string | undefined => sim.xenstoreRead(`${BACKEND}/state`);

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "xvm-xenbus-"));
  bridgeLog.length = 0;
  sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 64 << 20, vcpus: 1 }] });
});

afterEach(async () => {
  await bridge?.close();
  bridge = undefined;
  procs.killAll();
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

/** What libxl 4.17 writes for `disk = ["backendtype=standalone, specification=virtio, ..."]`, state last. */
function addVirtioDisk(): void {
  sim.xenstoreWrite(`${BACKEND}/frontend`, "/local/domain/1/device/virtio_disk/51712");
  sim.xenstoreWrite(`${BACKEND}/params`, "/dev/loop0");
  sim.xenstoreWrite(`${BACKEND}/state`, "1");
}

async function startBridge(socket: string): Promise<Bridge> {
  const config = parseCommandLine(["--socket-path", socket, "--name", "rng"]) as BridgeConfig;
  const b = new Bridge({ config, transport: sim.connect(), xenstorePath: sim.xenstorePath!, logger: jsonLogger("debug", (l) => bridgeLog.push(l)) });
  bridge = b;
  await b.start();
  return b;
}

describe("xenbus states of a 4.17 virtio_disk device", () => {
  it("InitWait comes before the set-up finishes: a backend that never answers still sees InitWait at once, then Closed when set-up fails", async () => {
    // A backend that accepts the connection and never replies: negotiation waits for the reply timeout.
    const socket = join(dir, "mute.sock");
    const mute = new UnixListener(socket);
    try {
      addVirtioDisk();
      await startBridge(socket);
      await waitFor("InitWait", () => state() === "2", 3000, logs);
      expect(bridgeLog.some((l) => l.includes("device ready for the guest"))).toBe(false);
      // Nobody serves the device: Closed, so a create still waiting fails rather than starting a guest
      // whose device never answers.
      await waitFor("Closed after the failed set-up", () => state() === "6", 20_000, logs);
      expect(bridgeLog.some((l) => l.includes("device set-up failed"))).toBe(true);
    } finally {
      mute.close();
    }
  }, 30_000);

  it("stays in InitWait while libxl may still be waiting, goes Connected when the guest's driver acknowledges the device, and keeps serving it", async () => {
    const sock = join(dir, "rng.sock");
    procs.start(daemonMain("rng"), ["-s", sock, "--xen-mapper", simMapper], sim.env(), "rng");
    await waitFor("the backend socket", () => existsSync(`${sock}0`), 30_000, logs);
    addVirtioDisk();
    await startBridge(`${sock}0`);
    await waitFor("device served", () => bridgeLog.some((l) => l.includes("device ready for the guest")), 30_000, logs);
    await new Promise((r) => setTimeout(r, 200)); // a late Connected would show up here
    expect(state()).toBe("2");
    sim.unpause(1);
    const guestLog: string[] = [];
    const g = sim.startGuest({ domid: 1, program: "virtio-rng", args: { base: "0x2000000", irq: 33, reads: 3, bytes: 16 }, onLog: (l) => guestLog.push(l) });
    const r = (await g.result.catch((err: unknown) => {
      throw new Error(`${String(err)}\n${[...guestLog.map((l) => `[guest] ${l}`), ...logs()].slice(-60).join("\n")}`);
    })) as { samples: string[] };
    expect(r.samples).toHaveLength(3);
    expect(state()).toBe("4");
    // Connected is not mistaken for a device going away: still served, nothing removed.
    expect(bridgeLog.some((l) => l.includes("device removed") || l.includes("removing device"))).toBe(false);
    // The toolstack's destroy: Closing -> the bridge tears the device down and answers Closed.
    sim.xenstoreWrite(`${BACKEND}/state`, "5");
    await waitFor("Closed", () => state() === "6", 10_000, logs);
  }, 60_000);
});
