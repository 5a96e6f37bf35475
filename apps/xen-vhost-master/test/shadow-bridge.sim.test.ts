// Shadow mode end to end on the simulator: a simulated Arm guest's virtio-blk device served by stock
// qemu-storage-daemon (no XEN_MMAP) through the bridge started with the seed's command line. The bridge
// maps the guest's RAM (foreign) or its grants and relays every request through shadow rings; the backend
// only ever sees the bridge's memfd shadow memory.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { startSimulator, type Simulator } from "@xen-vhost/xen-sim";
import { hasQsd, startQsd, type Qsd } from "@xen-vhost/vhost-user-master/testing";
import { bridgeMain, Processes, waitFor } from "./sim-helpers.js";

const guestBlk = join(import.meta.dirname, "shadow-fixtures", "guest-blk.mjs");

let sim: Simulator;
let dir: string;
let qsd: Qsd;
const procs = new Processes();

describe.skipIf(!hasQsd)("shadow mode through the bridge on the simulator (needs qemu-storage-daemon)", () => {
  beforeAll(async () => {
    qsd = await startQsd({ sectors: 90_000 });
  });
  afterAll(async () => {
    await qsd?.stop();
  });
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "xvm-shadow-"));
    sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 64 << 20, vcpus: 1 }] });
  });
  afterEach(async () => {
    procs.killAll();
    await sim.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function serve(grants: boolean): Promise<void> {
    const env = sim.env();
    const logs = (): string[] => procs.logs();
    // grant_usage = 1: what xl writes for `grant_usage=1`; the guest then hands out grant DMA addresses
    if (grants) sim.xenstoreWrite("/local/domain/0/backend/virtio/1/0/grant_usage", "1");
    sim.addVirtioDevice({ domid: 1, devid: 0, type: "virtio,device2", base: 0x0200_0000n, irq: 33 });
    const bridge = procs.start(bridgeMain, ["--socket-path", qsd.socket, "--name", "blk", "--log-level", "debug"], env, "bridge");
    await waitFor("backend state Connected", () => sim.xenstoreRead("/local/domain/0/backend/virtio/1/0/state") === "4", 30_000, logs);
    expect(bridge.log.some((l) => l.includes('"mode":"shadow"'))).toBe(true);
    sim.unpause(1);
    const dma = grants ? "grant" : "foreign";
    const guestLog: string[] = [];
    const guest = sim.startGuest({ domid: 1, program: guestBlk, args: { base: "0x2000000", irq: 33, dma, blocks: grants ? 200 : 10_000, first: grants ? 10_100 : 10 }, onLog: (l) => guestLog.push(l) });
    const result = (await guest.result.catch((err: unknown) => {
      throw new Error(`${String(err)}\n${[...guestLog.map((l) => `[guest] ${l}`), ...logs()].slice(-60).join("\n")}`);
    })) as { capacity: string; verified: number; id: string; interrupts: number };
    expect(result.capacity).toBe("90000");
    expect(result.verified).toBe(grants ? 200 : 10_000);
    expect(result.interrupts).toBeGreaterThan(0);
    expect(bridge.log.some((l) => l.includes("device started (shadow rings)"))).toBe(true);
    bridge.child.kill("SIGTERM");
    await waitFor("bridge exit", () => bridge.child.exitCode !== null, 5000, logs);
    expect(bridge.child.exitCode).toBe(0);
  }

  it("a guest reads the image's known sectors, writes 10,000 4 KiB blocks and reads every one back (guest RAM foreign-mapped)", async () => {
    await serve(false);
  }, 300_000);

  it("the same with grants: the guest hands out grant DMA addresses (grant-dma-ops), every grant ended after use", async () => {
    await serve(true);
  }, 120_000);
});
