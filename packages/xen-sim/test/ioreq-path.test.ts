import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { Xen, XenError } from "@xen-vhost/xen-sys";
import { startSimulator, type Simulator } from "../src/index.js";
import { TinyDeviceModel } from "./helpers.js";

const BASE = 0x2000000n;

describe("ioreq path: guest vCPU -> simulated Xen -> device model on xen-sys", () => {
  let sim: Simulator;
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 16 << 20, vcpus: 1 }] });
  });
  afterEach(async () => {
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  it("lists domains through the real getdomaininfolist bytes", () => {
    using xen = Xen.open({ transport: sim.connect() });
    const doms = xen.listDomains();
    expect(doms.map((d) => d.domid)).toEqual([0, 1]);
    const d1 = xen.getDomainInfo(1);
    expect(d1.paused).toBe(true);
    expect(d1.totPages).toBe(BigInt((16 << 20) / 4096));
    expect(d1.onlineVcpus).toBe(1);
    expect(d1.arch).toMatchObject({ arch: "arm64", nrSpis: 64 });
    expect(xen.control.sysctlVersion.accepted).toBe(0x15);
    expect(xen.physinfo().capabilities.hvm).toBe(true);
    expect(() => xen.getDomainInfo(9)).toThrow(XenError);
    xen.transport.close();
  });

  it("serves the guest's MMIO reads and writes through ioreqs", async () => {
    const xen = Xen.open({ transport: sim.connect() });
    const regs = new Map<bigint, bigint>([[BASE, 0x74726976n]]);
    const dm = new TinyDeviceModel(xen, 1, [BASE, BASE + 0x1ffn], {
      read: (a) => regs.get(a) ?? 0n,
      write: (a, _s, v) => void regs.set(a, v),
    });
    sim.unpause(1);
    const g = sim.startGuest({
      domid: 1,
      program: "mmio",
      args: {
        accesses: [
          { op: "r", addr: "0x2000000" },
          { op: "w", addr: "0x2000070", value: "0xf" },
          { op: "r", addr: "0x2000070" },
          { op: "r", addr: "0x2000400" },
          { op: "r", addr: "0x2000070", size: 1 },
        ],
      },
    });
    const result = await g.result;
    expect(result).toEqual(["0x74726976", null, "0xf", "0xffffffff", "0xf"]);
    expect(dm.served.map((s) => s.dir)).toEqual(["r", "w", "r", "r"]);
    expect(dm.served[1]).toMatchObject({ addr: BASE + 0x70n, size: 4, data: 0xfn });
    dm.close();
    xen.transport.close();
  });
});

describe("privcmd ioeventfd emulation", () => {
  it("completes matching QUEUE_NOTIFY writes in the 'kernel' and passes the rest to the device model", async () => {
    const leaks = fdLeakCheck();
    const sim = await startSimulator({ xenstore: false, domains: [{ domid: 1, ram: 4 << 20 }] });
    const xen = Xen.open({ transport: sim.connect() });
    const dm = new TinyDeviceModel(xen, 1, [BASE, BASE + 0x1ffn], { read: () => 0n, write: () => undefined });
    const kick = new EventFd();
    xen.assignIoeventfd({ domid: 1, ioreq: dm.pages, ports: Uint32Array.from(dm.ports), addr: BASE, addrLen: 4, eventFd: kick.fd, vq: 0 });
    expect(() => xen.assignIoeventfd({ domid: 1, ioreq: dm.pages, ports: Uint32Array.from(dm.ports), addr: BASE, addrLen: 4, eventFd: kick.fd, vq: 0 })).toThrow(/EBUSY/);
    sim.unpause(1);
    const g = sim.startGuest({
      domid: 1, program: "mmio",
      args: { accesses: [{ op: "w", addr: "0x2000050", value: 0 }, { op: "w", addr: "0x2000050", value: 0 }, { op: "w", addr: "0x2000050", value: 1 }, { op: "w", addr: "0x2000050", size: 2, value: 0 }] },
    });
    await g.result;
    expect(kick.read()).toBe(2n);
    expect(dm.served.map((x) => [x.data, x.size])).toEqual([[1n, 4], [0n, 2]]);
    expect(g.counters).toMatchObject({ ioeventfds: 2 });
    xen.assignIoeventfd({ domid: 1, ioreq: dm.pages, ports: Uint32Array.from(dm.ports), addr: BASE, addrLen: 4, eventFd: kick.fd, vq: 0, deassign: true });
    kick.close();
    dm.close();
    xen.transport.close();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });
});

describe("device model restart and simulator-side leaks", () => {
  it("lets a new device model bind the vCPU ports after the old one disconnected; the simulator leaks nothing", async () => {
    const leaks = fdLeakCheck();
    const sim = await startSimulator({ xenstore: false, domains: [{ domid: 1, ram: 4 << 20 }] });
    try {
      // warm up the simulator's lazily created objects, then take its fd baseline
      Xen.open({ transport: sim.connect() }).transport.close();
      const baseline = sim.stats().fds;
      sim.unpause(1);
      for (let round = 0; round < 3; round++) {
        const xen = Xen.open({ transport: sim.connect() });
        const regs = new Map<bigint, bigint>([[BASE, BigInt(round)]]);
        const dm = new TinyDeviceModel(xen, 1, [BASE, BASE + 0xfn], { read: (a) => regs.get(a) ?? 0n, write: () => undefined });
        const r = await sim.startGuest({ domid: 1, program: "mmio", args: { accesses: [{ op: "r", addr: "0x2000000" }] } }).result;
        expect(r).toEqual([`0x${round}`]);
        // no destroy: the server and its bound ports go away with the connection, as when a daemon dies
        dm.events.close();
        xen.unmap(dm.pages);
        xen.transport.close();
        for (let i = 0; i < 50 && sim.stats().connections > 1; i++) await new Promise((res) => setTimeout(res, 10));
      }
      const s = sim.stats();
      expect(s.connections).toBe(1); // the control connection
      // the three servers stay (Xen keeps them until destroyed or the domain dies) but hold one memfd each
      expect(s.fds - baseline).toBe(3);
    } finally {
      await sim.close();
    }
    expect(leaks.check()).toEqual([]);
  });
});
