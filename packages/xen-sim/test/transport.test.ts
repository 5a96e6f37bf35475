// SimTransport against the simulator process: the failures privcmd would report, mappings of guest RAM and
// ioreq pages, event channel semantics (mask on delivery, unmask re-delivers, ENOTCONN), restrict.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { EventFd, UnixStream } from "@xen-vhost/vmm-sys-util";
import {
  IoReq, XENMEM_resource_ioreq_server, XEN_DMOP_IO_RANGE, Xen, XenError, dmOps,
} from "@xen-vhost/xen-sys";
import { GUEST_RAM0_BASE, GUEST_RAM1_BASE, SimTransport, startSimulator, type Simulator } from "../src/index.js";

let sim: Simulator;
let leaks: ReturnType<typeof fdLeakCheck>;
beforeAll(async () => {
  leaks = fdLeakCheck();
  sim = await startSimulator({
    domains: [
      { domid: 1, name: "a", ram: 8 << 20, ram1: 1 << 20, vcpus: 2 },
      { domid: 5, name: "b", ram: 4 << 20, paused: false },
    ],
  });
});
afterAll(async () => {
  await sim.close();
  expect(leaks.check()).toEqual([]);
});

function open(): Xen {
  return Xen.open({ transport: SimTransport.connect(sim.socketPath) });
}

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    if (err instanceof XenError) return err.code;
    throw err;
  }
  return undefined;
}

describe("SimTransport", () => {
  it("maps guest RAM from both banks, with per-page EINVAL outside RAM", () => {
    using xen = open();
    const t = xen.transport;
    const frames = [GUEST_RAM0_BASE >> 12n, (GUEST_RAM0_BASE >> 12n) + 1n, 0x1000n, GUEST_RAM1_BASE >> 12n];
    const m = xen.mapForeignPages(1, frames, { allowPartial: true });
    expect([...m.errors]).toEqual([0, 0, 22, 0]);
    const bytes = new Uint8Array(m.buffer);
    bytes[4096 + 7] = 0x42;
    bytes[3 * 4096] = 0x17;
    // A second mapping sees the same memory (MAP_SHARED memfd pages).
    const again = xen.mapForeignPages(1, [(GUEST_RAM0_BASE >> 12n) + 1n, GUEST_RAM1_BASE >> 12n]);
    expect(new Uint8Array(again.buffer)[7]).toBe(0x42);
    expect(new Uint8Array(again.buffer)[4096]).toBe(0x17);
    expect(() => xen.mapForeignPages(1, [0x1000n])).toThrow(/page 0.*EINVAL/);
    t.unmap(again.buffer);
    t.unmap(m.buffer);
    t.unmap(m.buffer); // idempotent
    expect(code(() => xen.mapForeignPages(9, [1n]))).toBe("ESRCH");
    expect(code(() => xen.mapForeignPages(0, [1n]))).toBe("EPERM");
    t.close();
  });

  it("answers dm_op errors as Xen does", () => {
    using xen = open();
    expect(code(() => xen.createIoreqServer(42))).toBe("ESRCH");
    expect(code(() => xen.getIoreqServerInfo(1, 7))).toBe("ENOENT");
    const id = xen.createIoreqServer(1);
    expect(xen.getIoreqServerInfo(1, id)).toEqual({ bufioreqPort: 0, ioreqGfn: 0n, bufioreqGfn: 0n });
    expect(code(() => xen.getIoreqServerInfo(1, id, { noGfns: false }))).toBe("ENOTSUP");
    xen.mapIoRangeToIoreqServer(1, id, 0x1000n, 0x1fffn);
    expect(code(() => xen.mapIoRangeToIoreqServer(1, id, 0x1800n, 0x2800n))).toBe("EEXIST");
    xen.unmapIoRangeFromIoreqServer(1, id, 0x1400n, 0x14ffn); // splits
    xen.mapIoRangeToIoreqServer(1, id, 0x1400n, 0x14ffn);
    expect(code(() => xen.unmapIoRangeFromIoreqServer(1, id, 0x3000n, 0x3fffn))).toBe("ENOENT");
    expect(code(() => xen.setIrqLevel(1, 27, 1))).toBe("EINVAL"); // a PPI
    expect(code(() => xen.setIrqLevel(1, 32 + 64, 1))).toBe("EINVAL"); // past nr_spis
    xen.setIrqLevel(1, 40, 1);
    expect(sim.irqLevel(1, 40)).toBe(true);
    xen.setIrqLevel(1, 40, 0);
    expect(sim.irqLevel(1, 40)).toBe(false);
    expect(xen.nrVcpus(1)).toBe(2);
    expect(code(() => xen.modifiedMemory(1, [{ firstPfn: 1n, nr: 1 }]))).toBe("ENOTSUP");
    // a hand-made buffer with a nonzero pad is refused
    const bad = dmOps.mapIoRange(id, XEN_DMOP_IO_RANGE.MEMORY, 0n, 1n);
    bad[8 + 2] = 1;
    expect(code(() => xen.dmOp(1, [bad]))).toBe("EINVAL");
    const ids = [id];
    for (let i = 1; i < 8; i++) ids.push(xen.createIoreqServer(1));
    expect(new Set(ids).size).toBe(8);
    expect(code(() => xen.createIoreqServer(1))).toBe("ENOSPC");
    for (const i of ids) xen.destroyIoreqServer(1, i);
    expect(code(() => xen.destroyIoreqServer(1, id))).toBe("ENOENT");
    xen.transport.close();
  });

  it("maps ioreq pages as a resource with one slot per vCPU and vp_eport filled in", () => {
    using xen = open();
    const id = xen.createIoreqServer(1);
    expect(xen.resourceSize(1, XENMEM_resource_ioreq_server, id)).toBe(2);
    expect(code(() => xen.mapResource(1, XENMEM_resource_ioreq_server, id, 0, 1))).toBe("EINVAL"); // no bufioreq page
    expect(code(() => xen.mapResource(1, XENMEM_resource_ioreq_server, id, 1, 2))).toBe("EINVAL");
    expect(code(() => xen.mapResource(1, 1, 0, 0, 1))).toBe("ENOTSUP");
    const pages = xen.mapIoreqServerPages(1, id);
    expect(pages.frames).toBe(1);
    const view = new DataView(pages.buffer);
    const p0 = IoReq.read(view, 0);
    const p1 = IoReq.read(view, 32);
    expect(p0.vp_eport).toBeGreaterThan(0);
    expect(p1.vp_eport).not.toBe(p0.vp_eport);
    expect(p0.state).toBe(0);
    const buffered = xen.createIoreqServer(1, { bufioreq: "ATOMIC" });
    expect(xen.getIoreqServerInfo(1, buffered).bufioreqPort).toBeGreaterThan(0);
    const bufPage = xen.mapResource(1, XENMEM_resource_ioreq_server, buffered, 0, 2);
    xen.unmap(bufPage);
    xen.unmap(pages.buffer);
    xen.destroyIoreqServer(1, buffered);
    xen.destroyIoreqServer(1, id);
    xen.transport.close();
  });

  it("probes the interface version and pauses/unpauses through domctl", async () => {
    const s419 = await startSimulator({ release: "4.19", arch: "x86_64", xenstore: false, domains: [{ domid: 3 }] });
    try {
      using xen = Xen.open({ transport: s419.connect() });
      const d = xen.getDomainInfo(3);
      expect(xen.control.domctlVersion.accepted).toBe(0x17);
      expect(d.arch.arch).toBe("x86_64");
      expect(d.paused).toBe(true);
      s419.unpause(3);
      expect(xen.getDomainInfo(3).paused).toBe(false);
      expect(() => s419.unpause(3)).toThrow(/EINVAL/);
    } finally {
      await s419.close();
    }
  });

  it("restricts a handle to one domain", () => {
    using xen = open();
    xen.restrict(5);
    expect(xen.nrVcpus(5)).toBe(1);
    expect(code(() => xen.nrVcpus(1))).toBe("EPERM");
    xen.transport.close();
  });

  it("emulates privcmd irqfd: a signalled eventfd issues the stored set_irq_level", async () => {
    using xen = open();
    expect(xen.capabilities()).toEqual({ irqfd: true, ioeventfd: true });
    using ev = new EventFd();
    xen.assignIrqfd(1, ev.fd, 41);
    expect(() => xen.assignIrqfd(1, ev.fd, 41)).toThrow(/EBUSY/);
    ev.write(1);
    for (let i = 0; i < 100 && !sim.irqLevel(1, 41); i++) await new Promise((r) => setTimeout(r, 10));
    expect(sim.irqLevel(1, 41)).toBe(true);
    xen.setIrqLevel(1, 41, 0);
    xen.assignIrqfd(1, ev.fd, 41, { deassign: true });
    ev.write(1);
    await new Promise((r) => setTimeout(r, 50));
    expect(sim.irqLevel(1, 41)).toBe(false);
    (xen.transport as SimTransport).disableEventfdOffload();
    expect(() => xen.assignIrqfd(1, ev.fd, 41)).toThrow(expect.objectContaining({ kind: "Unsupported" }));
    xen.transport.close();
  });

  it("fails cleanly after close and when the simulator is not there", () => {
    const xen = open();
    xen.transport.close();
    expect(() => xen.nrVcpus(1)).toThrow(expect.objectContaining({ kind: "Closed" }));
    expect(() => SimTransport.connect("/nonexistent/sim.sock")).toThrow(expect.objectContaining({ kind: "DeviceMissing" }));
    expect(SimTransport.fromEnv({})).toBeUndefined();
    const t = SimTransport.fromEnv({ XEN_VHOST_SIM: sim.socketPath })!;
    expect(t.kind).toBe("xen-sim");
    t.close();
  });

  it("survives malformed frames and unknown methods from a client", () => {
    const s = UnixStream.connect(sim.socketPath);
    s.send(Uint8Array.of(0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0));
    s.close();
    const s2 = UnixStream.connect(sim.socketPath);
    const body = Buffer.from("not json");
    const hdr = Buffer.alloc(8);
    hdr.writeUInt32LE(body.length, 0);
    s2.send(Buffer.concat([hdr, body]));
    s2.close();
    using xen = open();
    expect(xen.nrVcpus(1)).toBe(2);
    xen.transport.close();
  });
});

describe("SimEventChannelDevice", () => {
  it("links ports both ways without the simulator on the path; masks on delivery, unmask re-delivers", () => {
    using xen = open();
    const a = xen.transport.openEventChannels();
    const b = xen.transport.openEventChannels();
    const pa = a.bindUnboundPort(0);
    const pb = b.bindInterdomain(0, pa);
    // bind_interdomain sets the new local port pending (lost-notification fix-up)
    expect([...b.readPending()]).toEqual([pb]);
    b.unmask([pb]);
    expect([...b.readPending()]).toEqual([]);
    b.notify(pb);
    b.notify(pb);
    expect([...a.readPending()]).toEqual([pa]);
    // masked until unmasked: another event stays pending and comes back on unmask
    b.notify(pb);
    expect([...a.readPending()]).toEqual([]);
    a.unmask([pa]);
    expect([...a.readPending()]).toEqual([pa]);
    a.unmask([pa]);
    a.notify(pa); // the unbound side learns its peer on first use
    expect([...b.readPending()]).toEqual([pb]);
    expect(() => a.notify(999)).toThrow(/ENOTCONN/);
    expect(code(() => b.bindInterdomain(0, pa))).toBe("EINVAL"); // no longer unbound
    expect(code(() => b.bindInterdomain(1, 4000))).toBe("EINVAL");
    b.unbind(pb);
    // the peer's port fell back to unbound: it can be bound again
    const pb2 = b.bindInterdomain(0, pa);
    a.notify(pa);
    a.notify(pa);
    const got = b.readPending();
    expect([...got]).toContain(pb2);
    expect(code(() => b.unbind(12345))).toBe("ENOTCONN");
    a.close();
    b.close();
    a.close();
    xen.transport.close();
  });

  it("delivers events on the Node loop through xen-sys EventChannels", async () => {
    using xen = open();
    const a = xen.openEventChannels();
    const b = xen.openEventChannels();
    const pa = a.bindUnboundPort(0);
    const pb = b.bindInterdomain(0, pa);
    const got: number[] = [];
    const done = new Promise<void>((resolve) => {
      a.on("event", (p) => {
        got.push(p);
        if (got.length === 3) resolve();
        else b.notify(pb);
      });
    });
    b.notify(pb);
    await done;
    expect(got).toEqual([pa, pa, pa]);
    a.close();
    b.close();
    xen.transport.close();
  });

  it("restricts an evtchn device to one domain", () => {
    using xen = open();
    const a = xen.transport.openEventChannels();
    a.restrict(5);
    expect(code(() => a.bindUnboundPort(1))).toBe("EACCES");
    expect(a.bindUnboundPort(5)).toBeGreaterThan(0);
    a.close();
    xen.transport.close();
  });
});

describe("selecting the simulator in another process (XEN_VHOST_SIM)", () => {
  it("a child process with XEN_VHOST_SIM set reaches the simulator through SimTransport.fromEnv()", async () => {
    const { spawn } = await import("node:child_process");
    const { fileURLToPath } = await import("node:url");
    const dist = fileURLToPath(new URL("../dist/index.js", import.meta.url));
    const script = `
      import { Xen } from "@xen-vhost/xen-sys";
      import { SimTransport } from ${JSON.stringify(dist)};
      const t = SimTransport.fromEnv();
      const xen = Xen.open({ transport: t });
      console.log(JSON.stringify({ kind: t.kind, domains: xen.listDomains().map((d) => d.domid) }));
      t.close();
    `;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      env: { ...process.env, ...sim.env() },
      cwd: fileURLToPath(new URL("..", import.meta.url)),
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const code = await new Promise((r) => child.on("close", r));
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual({ kind: "xen-sim", domains: [0, 1, 5] });
  });
});

describe("the simulator dies under a transport", () => {
  it("fails calls with kind Disconnected and still closes cleanly", async () => {
    const leaks2 = fdLeakCheck();
    const s = await startSimulator({ xenstore: false, domains: [{ domid: 1, ram: 1 << 20 }] });
    const t = s.connect();
    const xen = Xen.open({ transport: t });
    const evt = t.openEventChannels();
    expect(xen.nrVcpus(1)).toBe(1);
    process.kill(s.pid, "SIGKILL");
    await new Promise((r) => setTimeout(r, 100));
    expect(() => xen.nrVcpus(1)).toThrow(expect.objectContaining({ kind: "Disconnected" }));
    evt.close();
    t.close();
    await s.close();
    expect(leaks2.check()).toEqual([]);
  });
});
