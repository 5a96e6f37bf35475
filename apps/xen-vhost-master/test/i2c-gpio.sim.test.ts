// i2c and gpio end to end on the simulator, each through its own bridge started with the seed's command
// line (`--socket-path S --name i2c`): the project's vhost-device-i2c (a simulated DS1338 RTC at 0x20) and
// vhost-device-gpio (a simulated chip, input driven through --sim-stdin), both with XEN_MMAP (foreign
// mapping of the guest's RAM by the backend), and one simulated guest using both devices with the xen-sim
// driver kit: it reads the RTC's time registers, toggles a gpio line and receives an edge event.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { startSimulator, type Simulator } from "@xen-vhost/xen-sim";
import { bridgeMain, daemonMain, fixture, Processes, simMapper, waitFor } from "./sim-helpers.js";

let sim: Simulator;
let dir: string;
const procs = new Processes();

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "xvm-i2c-gpio-"));
  sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 64 << 20, vcpus: 1 }] });
});

afterEach(async () => {
  procs.killAll();
  await sim.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Result {
  rtc: { sec: number; min: number; hour: number; mday: number; mon: number; year: number; raw: string; probe23: boolean; interrupts: number };
  gpio: { ngpio: number; names: string[]; toggles: number[]; eventStatus: number; inputAfter: number; interrupts: number };
}

describe("i2c and gpio through the bridge on the simulator (XEN_MMAP)", () => {
  // grant: xl's grant_usage=1, the guest's driver hands out grant addresses, the backends get a grant region
  // and reach buffers by grant copy (--xen-mapper-option grantAccess=copy; see grant.sim.test.ts for why).
  it.each(["foreign", "grant"] as const)("the guest reads the RTC's time, toggles a gpio line and receives an edge event (%s memory)", async (dma) => {
    const env = sim.env();
    const mapperArgs = dma === "grant" ? ["--xen-mapper", simMapper, "--xen-mapper-option", process.env["GRANT_OPT"] ?? "grantAccess=copy"] : ["--xen-mapper", simMapper];
    if (dma === "grant") for (const devid of [0, 1]) sim.xenstoreWrite(`/local/domain/0/backend/virtio/1/${devid}/grant_usage`, "1");
    const logs = (): string[] => procs.logs();
    sim.addVirtioDevice({ domid: 1, devid: 0, type: "virtio,device22", base: 0x0200_0000n, irq: 33 }); // i2c (0x22 = 34)
    sim.addVirtioDevice({ domid: 1, devid: 1, type: "virtio,device29", base: 0x0200_0200n, irq: 34 }); // gpio (0x29 = 41)
    const i2cSock = join(dir, "i2c.sock");
    const gpioSock = join(dir, "gpio.sock");
    procs.start(daemonMain("i2c"), ["-s", i2cSock, "-l", "sim:rtc@0x20", ...mapperArgs], env, "i2c");
    const gpioDaemon = procs.start(daemonMain("gpio"), ["-s", gpioSock, "-l", "sim=led,button,a,b", "--sim-stdin", ...mapperArgs], env, "gpio", { stdin: true });
    await waitFor("the backend sockets", () => existsSync(`${i2cSock}0`) && existsSync(`${gpioSock}0`), 30_000, logs);
    // The seed's command line, once per device type: each bridge serves its type and leaves the other alone.
    const b1 = procs.start(bridgeMain, ["--socket-path", `${i2cSock}0`, "--name", "i2c"], env, "bridge-i2c");
    const b2 = procs.start(bridgeMain, ["--socket-path", `${gpioSock}0`, "--name", "gpio"], env, "bridge-gpio");
    await waitFor("both devices Connected", () => sim.xenstoreRead("/local/domain/0/backend/virtio/1/0/state") === "4" && sim.xenstoreRead("/local/domain/0/backend/virtio/1/1/state") === "4", 30_000, logs);
    sim.unpause(1);
    const guestLog: string[] = [];
    const before = new Date();
    const guest = sim.startGuest({
      domid: 1,
      program: fixture("guest-i2c-gpio.mjs"),
      args: { i2c: { base: "0x2000000", irq: 33, addr: 0x20 }, gpio: { base: "0x2000200", irq: 34, out: 0, in: 1 }, dma },
      onLog: (l) => {
        guestLog.push(l);
        // The guest armed the rising edge on "button": press it from outside, as a test harness would.
        if (l.startsWith("armed line 1")) gpioDaemon.child.stdin!.write("0 button 1\n");
      },
    });
    const result = (await guest.result.catch((err: unknown) => {
      throw new Error(`${String(err)}\n${[...guestLog.map((l) => `[guest] ${l}`), ...logs()].slice(-60).join("\n")}`);
    })) as Result;
    const after = new Date();
    // The RTC reads the host clock (UTC): the guest's reading lies between the instants around the run.
    const { rtc } = result;
    const read = Date.UTC(rtc.year, rtc.mon - 1, rtc.mday, rtc.hour, rtc.min, rtc.sec);
    expect(read).toBeGreaterThanOrEqual(Math.floor(before.getTime() / 1000) * 1000 - 1000);
    expect(read).toBeLessThanOrEqual(after.getTime() + 1000);
    expect(rtc.probe23).toBe(false); // nothing at 0x23
    expect(result.gpio.ngpio).toBe(4);
    expect(result.gpio.names).toEqual(["led", "button", "a", "b"]);
    expect(result.gpio.toggles).toEqual([1, 0, 1, 0]);
    expect(result.gpio.eventStatus).toBe(1); // VIRTIO_GPIO_IRQ_STATUS_VALID
    expect(result.gpio.inputAfter).toBe(1);
    expect(result.rtc.interrupts + result.gpio.interrupts).toBeGreaterThanOrEqual(1);
    // Grant mode: both devices' rings were granted (the driver logs it) and ACCESS_PLATFORM negotiated.
    expect(guestLog.filter((l) => l.includes("(granted)")).length).toBe(dma === "grant" ? 3 : 0);
    for (const b of [b1, b2]) b.child.kill("SIGTERM");
    await waitFor("bridges exit", () => b1.child.exitCode !== null && b2.child.exitCode !== null, 5000, logs);
    expect([b1.child.exitCode, b2.child.exitCode]).toEqual([0, 0]);
  }, 120_000);
});
