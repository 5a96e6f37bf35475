// IoreqServer and XenNotifier against @xen-vhost/xen-sim: a simulator process decodes the same dm_op bytes,
// MMAP_RESOURCE and evtchn ioctls real Xen gets, and guest vCPU processes issue real ioreqs (slot fill,
// READY, notify, wait for IORESP_READY). Nothing below xen-sys's XenTransport is faked in this process.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd, FdWatcher } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { IoReq, IOREQ_TYPE, STATE_IOREQ_READY, STATE_IORESP_READY, Xen } from "@xen-vhost/xen-sys";
import { startSimulator, type SimTransport, type Simulator } from "@xen-vhost/xen-sim";
import { IoreqServer, XenNotifier, type IoHandler, type Logger } from "../src/index.js";

const BASE = 0x2000000n;
const SPI = 33;
const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

interface DomainView {
  servers: number[];
  ports: number[];
}

function recordingLogger() {
  const warnings: string[] = [];
  const logger: Logger = { debug: () => {}, info: () => {}, warn: (m) => void warnings.push(m), error: (m) => void warnings.push(m) };
  return { logger, warnings };
}

/** A register file: reads answer the stored value (or a default), writes store; accesses are logged. */
function registers(initial: Record<number, number> = {}) {
  const regs = new Map<number, bigint>(Object.entries(initial).map(([k, v]) => [Number(k), BigInt(v)]));
  const log: string[] = [];
  const handler: IoHandler = {
    read: (off, size) => {
      log.push(`r ${off.toString(16)}/${size}`);
      return regs.get(off) ?? 0n;
    },
    write: (off, size, value) => {
      log.push(`w ${off.toString(16)}/${size}=${value.toString(16)}`);
      regs.set(off, BigInt(value));
    },
  };
  return { handler, log, regs };
}

/** Servers and transports a failed test left open, closed before the simulator goes away. */
const opened: Disposable[] = [];
function tracked<T extends Disposable>(x: T): T {
  opened.push(x);
  return x;
}
function closeLeftovers(): void {
  for (const x of opened.splice(0).reverse()) {
    try {
      x[Symbol.dispose]();
    } catch {
      // already closed, or its transport is gone
    }
  }
}

async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe("Xen ioreq server on xen-sim", () => {
  let sim: Simulator;
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({
      domains: [
        { domid: 1, name: "guest1", ram: 16 << 20, vcpus: 2 },
        { domid: 2, name: "guest2", ram: 16 << 20, vcpus: 1 },
      ],
    });
  });
  afterEach(async () => {
    closeLeftovers();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  const domain = (domid: number): DomainView => sim.control<DomainView>("domain", { domid });

  it("serves a guest vCPU's MMIO reads and writes of every width through the registered handler", async () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    expect(server.vcpus).toBe(2);
    expect(server.frames).toBe(1);
    expect(server.localPorts).toHaveLength(2);
    expect(domain(1).servers).toEqual([server.id]);
    const dev = registers({ 0: 0x74726976, 2: 0x7472 });
    server.mapMmio(BASE, 0x200, dev.handler);
    sim.unpause(1);
    const g = sim.startGuest({
      domid: 1,
      program: "mmio",
      args: {
        accesses: [
          { op: "r", addr: "0x2000000" },
          { op: "r", addr: "0x2000000", size: 1 },
          { op: "r", addr: "0x2000002", size: 2 },
          { op: "w", addr: "0x2000070", value: "0xf" },
          { op: "r", addr: "0x2000070" },
          { op: "w", addr: "0x2000100", size: 8, value: "0x8000000000000001" },
          { op: "r", addr: "0x2000100", size: 8 },
          { op: "r", addr: "0x2000400" }, // outside every server's ranges: Xen's null handler
        ],
      },
    });
    expect(await g.result).toEqual(["0x74726976", "0x76", "0x7472", null, "0xf", null, "0x8000000000000001", "0xffffffff"]);
    expect(dev.log).toEqual(["r 0/4", "r 0/1", "r 2/2", "w 70/4=f", "r 70/4", "w 100/8=8000000000000001", "r 100/8"]);
    expect(server.stats).toMatchObject({ handled: 7, unmapped: 0, handlerErrors: 0 });
    server.close();
    xen.transport.close();
  });

  it("serves two vCPUs at once: an async handler holding vCPU 0 does not stop vCPU 1", async () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    server.mapMmio(BASE, 0x200, {
      // vCPU 0's read stays INPROCESS until vCPU 1 writes 0x40.
      read: (off) => (off === 0x20 ? released.then(() => 0xabcd) : 7),
      write: (off) => {
        if (off === 0x40) release();
      },
    });
    sim.unpause(1);
    const g0 = sim.startGuest({ domid: 1, vcpu: 0, program: "mmio", args: { accesses: [{ op: "r", addr: "0x2000020" }] } });
    await until(() => server.stats.handled === 0 && domainBusy(server), "vCPU 0's request to be held");
    const g1 = sim.startGuest({
      domid: 1,
      vcpu: 1,
      program: "mmio",
      args: { accesses: [{ op: "r", addr: "0x2000004" }, { op: "w", addr: "0x2000040", value: 1 }, { op: "r", addr: "0x2000008" }] },
    });
    expect(await g1.result).toEqual(["0x7", null, "0x7"]);
    expect(await g0.result).toEqual(["0xabcd"]);
    expect(server.stats.handled).toBe(4);
    server.close();
    xen.transport.close();
  });

  it("answers bad input and keeps serving: throwing and rejecting handlers, a bad size, an idle slot, a vCPU out of range", async () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const { logger, warnings } = recordingLogger();
    const server = tracked(IoreqServer.create({ xen, domid: 1, logger }));
    server.mapMmio(BASE, 0x100, {
      read: (off) => {
        if (off === 0) throw new Error("device broke");
        return off === 4 ? Promise.reject(new Error("backend gone")) : 1;
      },
      write: () => {
        throw new Error("device broke");
      },
    });
    server.mapMmio(BASE + 0x100n, 0x100, registers({ 0: 0x99 }).handler);
    sim.unpause(1);
    const g = sim.startGuest({
      domid: 1,
      program: "mmio",
      args: {
        accesses: [
          { op: "r", addr: "0x2000000" },
          { op: "r", addr: "0x2000004", size: 2 },
          { op: "w", addr: "0x2000000", value: 1 },
          { op: "r", addr: "0x2000008" },
          { op: "r", addr: "0x2000100" }, // another device is unaffected
        ],
      },
    });
    expect(await g.result).toEqual(["0xffffffff", "0xffff", null, "0x1", "0x99"]);
    expect(server.stats.handlerErrors).toBe(3);
    // Requests a simulated vCPU cannot produce, posted into vCPU 1's real slot as Xen would.
    const pages = xen.mapIoreqServerPages(1, server.id).buffer;
    const post = (req: Partial<IoReq>): void => {
      IoReq.write(new DataView(pages), 32, { addr: BASE, data: 0n, count: 1, size: 4, dir: 1, type: IOREQ_TYPE.COPY, data_is_ptr: 0, ...req });
      const b = new Uint8Array(pages);
      Atomics.store(b, 32 + 30, (Atomics.load(b, 32 + 30) & 0xf0) | STATE_IOREQ_READY);
    };
    const state = (): number => Atomics.load(new Uint8Array(pages), 32 + 30) & 0xf;
    const consume = (): void => void Atomics.store(new Uint8Array(pages), 32 + 30, 0);
    post({ size: 3 });
    server.service(1);
    expect([state(), IoReq.read(new DataView(pages), 32).data]).toEqual([STATE_IORESP_READY, 0xffff_ffff_ffff_ffffn]);
    consume();
    post({ addr: BASE + 0x100n, type: 0x42 });
    server.service(1);
    expect(state()).toBe(STATE_IORESP_READY);
    consume();
    const spurious = server.stats.spurious; // binding a port fires it once (Xen's fix-up for missed events)
    server.service(1); // idle slot: a port that fired with nothing pending
    server.service(2); // vCPU out of range
    server.service(-1);
    expect(server.stats).toMatchObject({ badSize: 1, unknownType: 1, spurious: spurious + 1, badVcpu: 2 });
    expect(warnings.length).toBeGreaterThanOrEqual(6);
    // Still serving after all of it.
    const g2 = sim.startGuest({ domid: 1, program: "mmio", args: { accesses: [{ op: "r", addr: "0x2000100" }] } });
    expect(await g2.result).toEqual(["0x99"]);
    xen.unmap(pages);
    server.close();
    xen.transport.close();
  });

  it("close() destroys the server in Xen; later guest accesses fall through to Xen's null handler", async () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    const before = domain(1).ports.length;
    server.mapMmio(BASE, 0x200, registers({ 0: 1 }).handler);
    let closed = false;
    server.on("close", () => (closed = true));
    server.close();
    server.close(); // idempotent
    expect(closed).toBe(true);
    expect(server.closed).toBe(true);
    expect(domain(1).servers).toEqual([]);
    expect(domain(1).ports.length).toBeLessThan(before);
    expect(() => server.mapMmio(BASE, 0x10, registers().handler)).toThrow(expect.objectContaining({ code: "EBADF" }));
    sim.unpause(1);
    const g = sim.startGuest({ domid: 1, program: "mmio", args: { accesses: [{ op: "r", addr: "0x2000000" }] } });
    expect(await g.result).toEqual(["0xffffffff"]);
    xen.transport.close();
  });

  it("close() after Xen already destroyed the server (a dying domain, seen on real Xen as ENOENT) releases the rest quietly", () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const server = tracked(IoreqServer.create({ xen, domid: 1, restrictTransport: false }));
    const before = domain(1).ports.length;
    // What ioreq_server_destroy_all() does while the domain dies: the server is gone before we close.
    xen.destroyIoreqServer(1, server.id);
    expect(domain(1).servers).toEqual([]);
    expect(() => xen.destroyIoreqServer(1, server.id)).toThrow(expect.objectContaining({ code: "ENOENT" }));
    expect(() => server.close()).not.toThrow();
    expect(server.closed).toBe(true);
    expect(domain(1).ports.length).toBeLessThan(before);
    xen.transport.close();
  });

  it("a disabled server gets no requests (Xen's null handler answers); enabling it again resumes serving", async () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    server.mapMmio(BASE, 0x200, registers({ 0: 5 }).handler);
    sim.unpause(1);
    const read = async (): Promise<unknown> =>
      sim.startGuest({ domid: 1, program: "mmio", args: { accesses: [{ op: "r", addr: "0x2000000" }] } }).result;
    server.setEnabled(false);
    expect(server.enabled).toBe(false);
    expect(await read()).toEqual(["0xffffffff"]);
    server.setEnabled(true);
    expect(await read()).toEqual(["0x5"]);
    server.close();
    expect(() => server.setEnabled(false)).toThrow(expect.objectContaining({ code: "EBADF" }));
  });

  it("with bufioreq ATOMIC: maps the buffered frame and binds its port as well, and still cleans up", () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const before = domain(1).ports.length;
    const server = tracked(IoreqServer.create({ xen, domid: 1, bufioreq: "ATOMIC" }));
    // Xen's side: one port per vCPU plus the buffered one.
    expect(domain(1).ports.length).toBe(before + 3);
    server.close();
    expect(domain(1)).toMatchObject({ servers: [] });
    expect(domain(1).ports.length).toBe(before);
  });

  it("restricts the evtchn fd and the transport to the guest (least privilege), unless told not to", () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    expect(() => xen.createIoreqServer(2)).toThrow(expect.objectContaining({ code: "EPERM" }));
    server.close();
    xen.transport.close();
    const shared = tracked(Xen.open({ transport: sim.connect() }));
    const s2 = tracked(IoreqServer.create({ xen: shared, domid: 1, restrictTransport: false }));
    const other = shared.createIoreqServer(2);
    shared.destroyIoreqServer(2, other);
    s2.close();
    shared.transport.close();
  });

  it("refuses ranges overlapping its own before asking Xen (Xen lets two servers claim one range: highest id wins)", () => {
    const a = tracked(Xen.open({ transport: sim.connect() }));
    const b = tracked(Xen.open({ transport: sim.connect() }));
    const s1 = tracked(IoreqServer.create({ xen: a, domid: 1 }));
    const s2 = tracked(IoreqServer.create({ xen: b, domid: 1 }));
    const r = s1.mapMmio(BASE, 0x200, registers().handler);
    expect(() => s1.mapMmio(BASE + 0x100n, 0x200, registers().handler)).toThrow(expect.objectContaining({ kind: "AddressInUse" }));
    s2.mapMmio(BASE, 0x200, registers().handler).unmap();
    r.unmap();
    r.unmap(); // idempotent
    s1.mapMmio(BASE + 0x100n, 0x200, registers().handler); // free again
    s1.close();
    s2.close();
    a.transport.close();
    b.transport.close();
  });

  it("a process that exits without close() leaves no ioreq server behind (a SIGKILLed one does: the control)", async () => {
    const run = async (mode: string): Promise<number> => {
      const child = spawn(process.execPath, [fixture("exit-child.mjs"), mode], { env: { ...process.env, ...sim.env() }, stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      child.stdout.on("data", (d: Buffer) => (out += d.toString()));
      await new Promise((resolve) => child.once("close", resolve));
      return Number(out.trim());
    };
    await run("exit");
    expect(domain(1).servers).toEqual([]);
    await run("end");
    expect(domain(1).servers).toEqual([]);
    const id = await run("kill");
    expect(domain(1).servers).toEqual([id]);
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    xen.destroyIoreqServer(1, id);
    xen.transport.close();
  });
});

/** A transport that reports a pre-6.7 kernel (no privcmd ioeventfd/irqfd), as xen-sim can. */
function userspaceOnly(sim: Simulator): SimTransport {
  const t = sim.connect();
  t.disableEventfdOffload();
  return t;
}

function domainBusy(server: IoreqServer): boolean {
  // The held request is INPROCESS in vCPU 0's slot.
  const b = new Uint8Array(server.ioreqPages);
  return (Atomics.load(b, 30) & 0xf) === 2;
}

describe("XenNotifier on xen-sim, userspace relay (the transport reports a kernel without privcmd eventfd)", () => {
  let sim: Simulator;
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 16 << 20, vcpus: 1 }] });
  });
  afterEach(async () => {
    closeLeftovers();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  it("a QueueNotify write with a matching queue index signals the ioeventfd; others reach the device", async () => {
    const xen = tracked(Xen.open({ transport: userspaceOnly(sim) }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    const dev = registers();
    server.mapMmio(BASE, 0x200, dev.handler);
    const notifier = new XenNotifier(server);
    expect(notifier.kind).toBe("xen-userspace");
    const q0 = notifier.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 0n });
    using callerKick = new EventFd();
    const q1 = notifier.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 1n, eventfd: callerKick });
    // A doorbell outside every registered range: the notifier maps one so Xen forwards it at all.
    const far = notifier.ioeventfd({ addr: 0x3000000n, len: 2 });
    expect([q0.kind, q1.kind, far.kind]).toEqual(["xen-userspace", "xen-userspace", "xen-userspace"]);
    sim.unpause(1);
    const g = sim.startGuest({
      domid: 1,
      program: "mmio",
      args: {
        accesses: [
          { op: "w", addr: "0x2000050", value: 1 },
          { op: "w", addr: "0x2000050", value: 0 },
          { op: "w", addr: "0x2000050", value: 1 },
          { op: "w", addr: "0x2000050", value: 2 }, // no queue 2: the device sees it
          { op: "w", addr: "0x2000050", size: 2, value: 0 }, // other width: the device sees it
          { op: "w", addr: "0x3000000", size: 2, value: 0x1234 },
        ],
      },
    });
    await g.result;
    expect([q0.eventfd.read(), callerKick.read(), far.eventfd.read()]).toEqual([1n, 2n, 1n]);
    expect(dev.log).toEqual(["w 50/4=2", "w 50/2=0"]);
    expect(server.stats.doorbells).toBe(4);
    // Closing the doorbell: the next write reaches the device again; the caller's eventfd stays open.
    q1.close();
    far.close();
    expect(callerKick.closed).toBe(false);
    const g2 = sim.startGuest({ domid: 1, program: "mmio", args: { accesses: [{ op: "w", addr: "0x2000050", value: 1 }, { op: "r", addr: "0x3000000", size: 2 }] } });
    expect(await g2.result).toEqual([null, "0xffff"]); // the doorbell-only range went with the doorbell
    expect(dev.log).toEqual(["w 50/4=2", "w 50/2=0", "w 50/4=1"]);
    notifier.close();
    server.close();
    xen.transport.close();
  });

  it("doorbell-only ranges: shared by doorbells inside them, replaced by a device range mapped over them", async () => {
    const xen = tracked(Xen.open({ transport: userspaceOnly(sim) }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    const notifier = new XenNotifier(server);
    sim.unpause(1);
    const run = async (accesses: unknown[]): Promise<unknown> => sim.startGuest({ domid: 1, program: "mmio", args: { accesses } }).result;
    const a = notifier.ioeventfd({ addr: 0x3000000n, len: 4, datamatch: 1n });
    const b = notifier.ioeventfd({ addr: 0x3000002n, len: 2 }); // inside a's range: shares it
    a.close();
    await run([{ op: "w", addr: "0x3000002", size: 2, value: 7 }]);
    expect(b.eventfd.read()).toBe(1n);
    b.close();
    expect(await run([{ op: "r", addr: "0x3000000" }])).toEqual(["0xffffffff"]); // gone with the last doorbell
    const c = notifier.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 0n });
    const dev = registers({ 0: 0x74726976 });
    server.mapMmio(BASE, 0x200, dev.handler); // replaces c's placeholder
    expect(await run([{ op: "w", addr: "0x2000050", value: 0 }, { op: "w", addr: "0x2000050", value: 1 }])).toEqual([null, null]);
    expect(c.eventfd.read()).toBe(1n);
    c.close(); // the device range stays
    expect(await run([{ op: "r", addr: "0x2000000" }])).toEqual(["0x74726976"]);
    expect(dev.log).toEqual(["w 50/4=1", "r 0/4"]);
    notifier.close();
    server.close();
  });

  it("irqfd raises the SPI the guest sees; the device model lowers it on the guest's ACK", async () => {
    const xen = tracked(Xen.open({ transport: userspaceOnly(sim) }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    const notifier = new XenNotifier(server);
    const kick = notifier.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 0n });
    const call = notifier.irqfd({ line: SPI, trigger: "level" });
    expect(call.kind).toBe("xen-userspace");
    // A "backend" that only has the two eventfds: a kick makes it complete a buffer and signal the call fd.
    let isr = 0;
    const backend = new FdWatcher(kick.eventfd.fd, () => {
      if (kick.eventfd.read() === null) return;
      isr |= 1;
      call.eventfd.write(1);
    }).start();
    server.mapMmio(BASE, 0x200, {
      read: (off) => (off === 0x60 ? isr : 0),
      write: (off, _size, v) => {
        if (off !== 0x64) return;
        isr &= ~Number(v);
        if (isr === 0) call.deassert();
      },
    });
    sim.unpause(1);
    const g = sim.startGuest({ domid: 1, program: fixture("irq-guest.mjs"), args: { base: "0x2000000", irq: SPI } });
    expect(await g.result).toEqual({ isr: 1, levelAfterAck: false });
    expect(sim.irqLevel(1, SPI)).toBe(false);
    backend.close();
    notifier.close();
    server.close();
    xen.transport.close();
  });

  it("edge irqfds pulse the line; closing a level irqfd lowers it; closing the server closes the notifier", async () => {
    const xen = tracked(Xen.open({ transport: userspaceOnly(sim) }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    const notifier = new XenNotifier(server);
    const level = notifier.irqfd({ line: SPI, trigger: "level" });
    const edge = notifier.irqfd({ line: SPI + 1 });
    level.raise();
    await until(() => sim.irqLevel(1, SPI), "the level line to rise");
    level.raise(); // already up: stays up
    edge.raise();
    await sleep(20);
    expect([sim.irqLevel(1, SPI), sim.irqLevel(1, SPI + 1)]).toEqual([true, false]);
    level.deassert();
    expect(sim.irqLevel(1, SPI)).toBe(false);
    level.raise();
    await until(() => sim.irqLevel(1, SPI), "the line to rise again");
    level.close();
    expect(sim.irqLevel(1, SPI)).toBe(false);
    server.close();
    expect(notifier.closed).toBe(true);
    expect(edge.closed).toBe(true);
    xen.transport.close();
  });
});

describe("XenNotifier on xen-sim, kernel offload (the simulator emulates privcmd ioeventfd/irqfd)", () => {
  let sim: Simulator;
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 16 << 20, vcpus: 2 }] });
  });
  afterEach(async () => {
    closeLeftovers();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  it("QueueNotify writes matching a queue index never reach the device model; others and closed ones do", async () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    const dev = registers();
    server.mapMmio(BASE, 0x200, dev.handler);
    const notifier = new XenNotifier(server);
    expect(notifier.kind).toBe("xen-kernel");
    const q0 = notifier.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 0n });
    const q1 = notifier.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 1n });
    const any = notifier.ioeventfd({ addr: BASE + 0x54n, len: 0 }); // any width: privcmd cannot, userspace does
    expect([q0.kind, q1.kind, any.kind]).toEqual(["xen-kernel", "xen-kernel", "xen-userspace"]);
    sim.unpause(1);
    const run = async (accesses: unknown[]): Promise<unknown> =>
      sim.startGuest({ domid: 1, vcpu: 1, program: "mmio", args: { accesses } }).result;
    await run([
      { op: "w", addr: "0x2000050", value: 1 },
      { op: "w", addr: "0x2000050", value: 0 },
      { op: "w", addr: "0x2000050", value: 1 },
      { op: "w", addr: "0x2000050", value: 2 }, // no queue 2: the kernel puts it back, the device model gets it
      { op: "w", addr: "0x2000054", size: 1, value: 9 },
    ]);
    expect([q0.eventfd.read(), q1.eventfd.read(), any.eventfd.read()]).toEqual([1n, 2n, 1n]);
    expect(dev.log).toEqual(["w 50/4=2"]);
    expect(server.stats).toMatchObject({ handled: 2, doorbells: 1 });
    q1.close(); // deassigned in the "kernel": the next write exits to the device model again
    await run([{ op: "w", addr: "0x2000050", value: 1 }]);
    expect(dev.log).toEqual(["w 50/4=2", "w 50/4=1"]);
    notifier.close();
    server.close();
  });

  it("a guest kicks through the kernel ioeventfd and takes the kernel irqfd's interrupt; its ACK lowers the line", async () => {
    const xen = tracked(Xen.open({ transport: sim.connect() }));
    const server = tracked(IoreqServer.create({ xen, domid: 1 }));
    const notifier = new XenNotifier(server);
    const kick = notifier.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 0n });
    const call = notifier.irqfd({ line: SPI, trigger: "level" });
    expect([kick.kind, call.kind]).toEqual(["xen-kernel", "xen-kernel"]);
    let isr = 0;
    const backend = new FdWatcher(kick.eventfd.fd, () => {
      if (kick.eventfd.read() === null) return;
      isr |= 1;
      call.eventfd.write(1);
    }).start();
    server.mapMmio(BASE, 0x200, {
      read: (off) => (off === 0x60 ? isr : 0),
      write: (off, _size, v) => {
        if (off !== 0x64) return;
        isr &= ~Number(v);
        if (isr === 0) call.deassert();
      },
    });
    sim.unpause(1);
    const g = sim.startGuest({ domid: 1, program: fixture("irq-guest.mjs"), args: { base: "0x2000000", irq: SPI } });
    expect(await g.result).toEqual({ isr: 1, levelAfterAck: false });
    expect(server.stats.handled).toBe(2); // the ISR read and the ACK; the kick never came here
    backend.close();
    notifier.close();
    server.close();
  });
});
