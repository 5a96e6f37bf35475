// vhost-device-gpio driven by vhost-user-master through real rings in memfd memory: config, names, line
// toggling, interrupts on the event queue, and the statuses a misbehaving guest gets.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { UnixStream, close as closeFd, memfdCreate } from "@xen-vhost/vmm-sys-util";
import { FrontendReq, encodeHeader, encodeMessage } from "@xen-vhost/vhost-user-protocol";
import { TestFrontend } from "@xen-vhost/vhost-user-backend/testing";
import { VhostUserDaemon } from "@xen-vhost/vhost-user-backend";
import {
  GpioDevice, GpioError, SimChip, VIRTIO_GPIO_DIRECTION_IN, VIRTIO_GPIO_DIRECTION_NONE, VIRTIO_GPIO_DIRECTION_OUT, VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH,
  VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING, VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH, VIRTIO_GPIO_IRQ_TYPE_NONE, VIRTIO_GPIO_MSG_GET_DIRECTION, VIRTIO_GPIO_MSG_GET_NAMES,
  VIRTIO_GPIO_MSG_GET_VALUE, VIRTIO_GPIO_MSG_IRQ_TYPE, VIRTIO_GPIO_MSG_SET_DIRECTION, VIRTIO_GPIO_MSG_SET_VALUE, VirtioGpioRequest, openChips,
  parse, parseChipList, simCommand,
} from "../src/index.js";
import { DATA, session, type Session } from "@xen-vhost/vhost-user-master/testing";

let dir: string;
let leaks: ReturnType<typeof fdLeakCheck>;
const cleanup: (() => void)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "gpio-"));
  leaks = fdLeakCheck();
});
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) c();
  await new Promise((r) => setTimeout(r, 20));
  rmSync(dir, { recursive: true, force: true });
  expect(leaks.check()).toEqual([]);
});

function serve(chip: SimChip): string {
  const path = join(dir, "gpio.sock0");
  const d = new VhostUserDaemon(new GpioDevice(chip), { socket: path }).start();
  cleanup.push(() => d.close());
  return path;
}

async function open(path: string): Promise<Session> {
  const s = await session(path, [16, 16]);
  cleanup.push(() => s.close());
  return s;
}

let slot = 0;
/** One request on the request queue; resolves to [status, value bytes..., used len]. */
async function rq(s: Session, type: number, gpio: number, value = 0, respLen = 2, reqLen = 8): Promise<{ status: number; value: number[]; len: number }> {
  const base = DATA + (slot++ % 64) * 0x200;
  const req = VirtioGpioRequest.encode({ type, gpio, value });
  s.mem.write(base, req.subarray(0, Math.min(reqLen, 8)));
  s.mem.fill(base + 0x10, respLen, 0xee);
  s.post(0, { readable: [{ addr: base, len: reqLen }], writable: [{ addr: base + 0x10, len: respLen }] });
  const [u] = await s.used(0);
  const r = s.mem.read(base + 0x10, respLen);
  return { status: r[0]!, value: [...r.subarray(1)], len: u!.len };
}

/** Posts an eventq buffer for `gpio`; returns where its status lands. */
function irqBuffer(s: Session, gpio: number, token: number): number {
  const base = DATA + 0x10000 + token * 0x10;
  s.mem.write(base, Uint8Array.of(gpio & 0xff, gpio >> 8));
  s.mem.write(base + 8, Uint8Array.of(0xee));
  s.post(1, { readable: [{ addr: base, len: 2 }], writable: [{ addr: base + 8, len: 1 }] }, token);
  return base + 8;
}

describe("virtio-gpio over vhost-user with a simulated chip", () => {
  it("advertises what rust-vmm's does: 0x171000001, two queues, CONFIG; config ngpio 8, gpio_names_size 56", async () => {
    const s = await open(serve(new SimChip(8)));
    expect(s.negotiated.offeredFeatures).toBe(0x171000001n);
    expect(s.negotiated.queueNum).toBe(2);
    expect(s.fe.hasProtocolFeature("CONFIG")).toBe(true);
    expect(Buffer.from(await s.fe.getConfig(0, 8)).toString("hex")).toBe("0800000038000000");
  });

  it("GET_NAMES returns dummy0..dummy7 (used length 57)", async () => {
    const s = await open(serve(new SimChip(8)));
    const r = await rq(s, VIRTIO_GPIO_MSG_GET_NAMES, 0, 0, 57);
    expect(r.status).toBe(0);
    expect(r.len).toBe(57);
    expect(Buffer.from(r.value).toString("latin1").split("\0").slice(0, 8)).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => `dummy${i}`));
  });

  it("toggles a line like the rust-vmm data-path check, and the chip sees it", async () => {
    const chip = new SimChip(["led0", "led1", "button", "irq"]);
    const s = await open(serve(chip));
    expect(await rq(s, VIRTIO_GPIO_MSG_SET_VALUE, 3, 1)).toMatchObject({ status: 0, len: 2 });
    expect((await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, 3, VIRTIO_GPIO_DIRECTION_OUT)).status).toBe(0);
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_DIRECTION, 3)).value).toEqual([VIRTIO_GPIO_DIRECTION_OUT]);
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_VALUE, 3)).value).toEqual([1]);
    expect(chip.getValue(3)).toBe(1);
    await rq(s, VIRTIO_GPIO_MSG_SET_VALUE, 3, 0);
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_VALUE, 3)).value).toEqual([0]);
    expect(chip.getValue(3)).toBe(0);
    await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, 3, VIRTIO_GPIO_DIRECTION_NONE);
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_DIRECTION, 3)).value).toEqual([VIRTIO_GPIO_DIRECTION_NONE]);
    // an input reads what the outside world drives
    await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, 2, VIRTIO_GPIO_DIRECTION_IN);
    chip.drive(2, 1);
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_VALUE, 2)).value).toEqual([1]);
  });

  it("edge interrupts come back on the event queue with status VALID and a call", async () => {
    const chip = new SimChip(["led0", "led1", "button"]);
    const s = await open(serve(chip));
    await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, 2, VIRTIO_GPIO_DIRECTION_IN);
    expect((await rq(s, VIRTIO_GPIO_MSG_IRQ_TYPE, 2, VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING)).status).toBe(0);
    const st = irqBuffer(s, 2, 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(s.rings[1]!.driver.harvest()).toEqual([]); // held until the edge
    s.rings[1]!.call.read();
    chip.drive(2, 1);
    const [u] = await s.used(1);
    expect(u).toMatchObject({ token: 1, len: 1 });
    expect(s.mem.read(st, 1)[0]).toBe(1);
    expect(s.rings[1]!.call.read()).not.toBeNull();
    // falling edge is not enabled; the next rising edge comes with the next buffer
    const st2 = irqBuffer(s, 2, 2);
    chip.drive(2, 0);
    await new Promise((r) => setTimeout(r, 20));
    expect(s.rings[1]!.driver.harvest()).toEqual([]);
    chip.drive(2, 1);
    expect((await s.used(1))[0]!.token).toBe(2);
    expect(s.mem.read(st2, 1)[0]).toBe(1);
  });

  it("an edge with no buffer queued is latched; disabling the interrupt returns the held buffer INVALID; level-high fires at once", async () => {
    const chip = new SimChip(4);
    const s = await open(serve(chip));
    await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, 0, VIRTIO_GPIO_DIRECTION_IN);
    await rq(s, VIRTIO_GPIO_MSG_IRQ_TYPE, 0, VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH);
    chip.drive(0, 1);
    const st = irqBuffer(s, 0, 1);
    expect((await s.used(1))[0]!.token).toBe(1);
    expect(s.mem.read(st, 1)[0]).toBe(1);

    const st2 = irqBuffer(s, 0, 2);
    await new Promise((r) => setTimeout(r, 20));
    expect((await rq(s, VIRTIO_GPIO_MSG_IRQ_TYPE, 0, VIRTIO_GPIO_IRQ_TYPE_NONE)).status).toBe(0);
    expect((await s.used(1))[0]!.token).toBe(2);
    expect(s.mem.read(st2, 1)[0]).toBe(0);

    await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, 1, VIRTIO_GPIO_DIRECTION_IN);
    chip.drive(1, 1);
    await rq(s, VIRTIO_GPIO_MSG_IRQ_TYPE, 1, VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH);
    const st3 = irqBuffer(s, 1, 3);
    expect((await s.used(1))[0]!.token).toBe(3);
    expect(s.mem.read(st3, 1)[0]).toBe(1);
  });
});

describe("reconnect with inflight tracking (INFLIGHT_SHMFD)", () => {
  it("an eventq buffer held for an interrupt survives a dropped connection with the line's setup, and completes once", async () => {
    const chip = new SimChip(["led0", "irq1", "irq2"]);
    const path = join(dir, "gpio.sock0");
    const d = new VhostUserDaemon(new GpioDevice(chip), { socket: path }).start();
    cleanup.push(() => d.close());
    const s = await session(path, [16, 16], { inflight: true, frontend: { reconnect: { attempts: 400, initialDelayMs: 5, maxDelayMs: 50 } } });
    cleanup.push(() => s.close());
    expect(s.fe.hasProtocolFeature("INFLIGHT_SHMFD")).toBe(true);
    for (const line of [1, 2]) {
      await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, line, VIRTIO_GPIO_DIRECTION_IN);
      await rq(s, VIRTIO_GPIO_MSG_IRQ_TYPE, line, VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING);
    }
    // buffer A (line 2) is held; buffer B (line 1), queued after it, completes first: out of order, as
    // interrupts come. Neither a replay from the old base nor one from the used idx gets this right.
    const stA = irqBuffer(s, 2, 1);
    const stB = irqBuffer(s, 1, 2);
    chip.drive(1, 1);
    expect((await s.used(1))[0]!.token).toBe(2);
    expect(s.mem.read(stB, 1)[0]).toBe(1);

    const reconnected = new Promise<void>((r) => s.fe.once("reconnect", r));
    d.handler!.close();
    await reconnected;
    await new Promise((r) => setTimeout(r, 20));
    expect(s.rings[1]!.driver.harvest()).toEqual([]);
    // the rising-edge setup survived and A is held again: line 2's edge completes it, and only it
    chip.drive(2, 1);
    expect((await s.used(1)).map((u) => u.token)).toEqual([1]);
    expect(s.mem.read(stA, 1)[0]).toBe(1);
    chip.drive(1, 0);
    chip.drive(1, 1); // B is the driver's again: nothing may complete it a second time
    await new Promise((r) => setTimeout(r, 50));
    expect(s.rings[1]!.driver.harvest()).toEqual([]);
    // and the request queue carries on
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_VALUE, 2)).value).toEqual([1]);
  });
});

describe("errors the guest sees", () => {
  it("out-of-range lines, unknown types, bad values and wrong sizes get VIRTIO_GPIO_STATUS_ERR", async () => {
    const s = await open(serve(new SimChip(8)));
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_VALUE, 8)).status).toBe(1);
    expect((await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, 0xffff, VIRTIO_GPIO_DIRECTION_OUT)).status).toBe(1);
    expect((await rq(s, 0x77, 0)).status).toBe(1);
    expect((await rq(s, VIRTIO_GPIO_MSG_SET_VALUE, 1, 2)).status).toBe(1);
    expect((await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, 1, 3)).status).toBe(1);
    expect((await rq(s, VIRTIO_GPIO_MSG_IRQ_TYPE, 1, 5)).status).toBe(1);
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_NAMES, 0, 0, 2)).status).toBe(1); // buffer too small for the names
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_VALUE, 0, 0, 2, 4)).status).toBe(1); // 4-byte request
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_VALUE, 0, 0, 3)).status).toBe(1); // 3-byte response buffer
    // an eventq buffer for a line that does not exist comes straight back INVALID
    const st = irqBuffer(s, 99, 9);
    expect((await s.used(1))[0]!.token).toBe(9);
    expect(s.mem.read(st, 1)[0]).toBe(0);
    // and the device still answers
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_DIRECTION, 0)).status).toBe(0);
  });
});

describe("chip list and host chips", () => {
  it("parses rust-vmm's syntax and named simulated chips; one chip per socket", () => {
    expect(parseChipList("0:s8:sim=led,button")).toEqual([
      { kind: "host", index: 0 }, { kind: "sim", lines: 8 }, { kind: "sim", lines: ["led", "button"] },
    ]);
    expect(() => parseChipList("x")).toThrow(/neither/);
    expect(() => parseChipList("s0")).toThrow(/at least one line/);
    expect(() => parse(["-s", "p", "-c", "2", "-l", "s8"])).toThrow(/one chip per socket/);
    expect(parse(["-s", "p", "-l", "s4"]).chips).toEqual([{ kind: "sim", lines: 4 }]);
  });

  it("a missing /dev/gpiochipN is a ChipMissing error naming the node", () => {
    let n = 200;
    while (existsSync(`/dev/gpiochip${n}`)) n++;
    let err: unknown;
    try {
      openChips(parseChipList(`s2:${n}`));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GpioError);
    expect((err as GpioError).kind).toBe("ChipMissing");
    expect((err as GpioError).message).toContain(`/dev/gpiochip${n}: cannot open: ENOENT`);
  });
});

describe("the built daemon", () => {
  const main = join(import.meta.dirname, "../dist/main.js");
  it.skipIf(!existsSync(main))("--help, and -c 2 -l s8:sim=a,b serving two chips (needs pnpm build)", async () => {
    expect(execFileSync(process.execPath, [main, "--help"]).toString()).toMatch(/sim=<name>/);
    const base = join(dir, "gpio.sock");
    const child = spawn(process.execPath, [main, "-s", base, "-c", "2", "-l", "s8:sim=a,b"], { stdio: ["ignore", "ignore", "pipe"] });
    try {
      for (const [i, size] of [[0, 56], [1, 4]] as const) {
        const s = await session(`${base}${i}`, [16, 16]);
        try {
          const cfg = await s.fe.getConfig(0, 8);
          expect(new DataView(cfg.buffer, cfg.byteOffset).getUint32(4, true)).toBe(size);
        } finally {
          s.close();
        }
      }
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  }, 60_000);

  it.skipIf(!existsSync(main))("--sim-stdin: a line written to stdin presses a simulated button and the guest gets its interrupt (needs pnpm build)", async () => {
    const base = join(dir, "gpio.sock");
    const child = spawn(process.execPath, [main, "-s", base, "-l", "sim=led,button", "--sim-stdin"], { stdio: ["pipe", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    try {
      const s = await session(`${base}0`, [16, 16]);
      try {
        await rq(s, VIRTIO_GPIO_MSG_SET_DIRECTION, 1, VIRTIO_GPIO_DIRECTION_IN);
        await rq(s, VIRTIO_GPIO_MSG_IRQ_TYPE, 1, VIRTIO_GPIO_IRQ_TYPE_EDGE_RISING);
        const st = irqBuffer(s, 1, 1);
        child.stdin.write("0 nosuchline 1\n0 button 1\n");
        const [u] = await s.used(1, 1, 20_000);
        expect(u!.token).toBe(1);
        expect(s.mem.read(st, 1)[0]).toBe(1);
        expect((await rq(s, VIRTIO_GPIO_MSG_GET_VALUE, 1)).value).toEqual([1]);
      } finally {
        s.close();
      }
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
    expect(stderr).toContain("no line nosuchline on chip 0");
  }, 60_000);
});

describe("sim control commands", () => {
  it("drive lines by number or name; refuse malformed commands and host chips", () => {
    const chip = new SimChip(["a", "b"]);
    expect(simCommand([chip], "0 b 1")).toBeUndefined();
    expect(chip.getValue(1)).toBe(1);
    expect(simCommand([chip], "0 0 1")).toBeUndefined();
    expect(chip.getValue(0)).toBe(1);
    expect(simCommand([chip], "# comment")).toBeUndefined();
    expect(simCommand([chip], "0 b 2")).toMatch(/expected/);
    expect(simCommand([chip], "1 b 1")).toMatch(/not a simulated chip/);
    expect(simCommand([chip], "0 5 1")).toMatch(/no line 5/);
  });
});

describe("a malformed front-end message", () => {
  it("closes that connection cleanly (its fds closed) and the daemon serves the next front-end", async () => {
    const path = serve(new SimChip(4));
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
    const s = await open(path);
    expect((await rq(s, VIRTIO_GPIO_MSG_GET_VALUE, 1)).status).toBe(0);
  });
});
