// Grant mode end to end on the simulator: the toolstack asked for grants (xenstore grant_usage = 1, as xl
// writes for `grant_usage=1`), so the bridge offers VIRTIO_F_ACCESS_PLATFORM; the guest driver uses grant
// DMA addresses (1 << 63 | ref << 12 | offset, every page granted to dom0, as Linux's grant-dma-ops); the
// bridge sees bit 63 in the ring addresses and gives vhost-device-rng a XEN_MMAP grant region
// (NO_ADVANCE_MAP over every grant reference) instead of the foreign RAM table. The backend maps the grants
// it is handed; the guest ends access to every grant after use, which fails if the backend still holds one.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startSimulator, type Simulator } from "@xen-vhost/xen-sim";
import { bridgeMain, daemonMain, Processes, simMapper, waitFor } from "./sim-helpers.js";

let sim: Simulator;
let dir: string;
const procs = new Processes();

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "xvm-grant-"));
  sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 64 << 20, vcpus: 1 }] });
});

afterEach(async () => {
  procs.killAll();
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("grant mode (ACCESS_PLATFORM, XEN_MMAP grant region)", () => {
  it("serves a guest that uses grant DMA addresses, detected from its ring addresses", async () => {
    const env = sim.env();
    const logs = (): string[] => procs.logs();
    const path = "/local/domain/0/backend/virtio/1/0";
    sim.xenstoreWrite(`${path}/grant_usage`, "1");
    sim.addVirtioDevice({ domid: 1, devid: 0, type: "virtio,device4", base: 0x0200_0000n, irq: 33 });
    const sock = join(dir, "rng.sock");
    // grantAccess=copy: the backend reaches buffers with grant copy. With the default (map), mapping the
    // simulated driver's read-only grant of the avail ring writable fails (GNTST_general_error): reported to
    // the mapper's and the simulator's owners (Linux grants the whole ring writable).
    procs.start(daemonMain("rng"), ["-s", sock, "--xen-mapper", simMapper, "--xen-mapper-option", process.env["GRANT_OPT"] ?? "grantAccess=copy"], env, "rng");
    await waitFor("the backend socket", () => existsSync(`${sock}0`), 30_000, logs);
    const bridge = procs.start(bridgeMain, ["--socket-path", `${sock}0`, "--name", "rng", "--log-level", "debug"], env, "bridge");
    await waitFor("Connected", () => sim.xenstoreRead(`${path}/state`) === "4", 30_000, logs);
    sim.unpause(1);
    const guestLog: string[] = [];
    const g = sim.startGuest({ domid: 1, program: "virtio-rng", args: { dma: "grant", reads: 3, bytes: 32, irq: 33 }, onLog: (l) => guestLog.push(l) });
    const r = (await g.result.catch((err: unknown) => {
      throw new Error(`${String(err)}\n${[...guestLog.map((l) => `[guest] ${l}`), ...logs()].slice(-60).join("\n")}`);
    })) as { samples: string[] };
    expect(r.samples).toHaveLength(3);
    for (const s of r.samples) expect(s).toMatch(/^[0-9a-f]{64}$/);
    // ACCESS_PLATFORM (bit 33) was offered and negotiated; the rings were granted.
    const features = guestLog.find((l) => l.startsWith("features:"))!;
    expect(BigInt(/negotiated (0x[0-9a-f]+)/.exec(features)![1]!) & (1n << 33n)).toBe(1n << 33n);
    expect(guestLog.some((l) => l.includes("(granted)"))).toBe(true);
    bridge.child.kill("SIGTERM");
    await waitFor("bridge exit", () => bridge.child.exitCode !== null, 5000, logs);
    expect(bridge.child.exitCode).toBe(0);
  }, 90_000);
});
