import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Xen, XenStore, socketConnector, type XenStoreWatchEvent } from "@xen-vhost/xen-sys";
import { RngDevice, XenVirtioMmioDevice, startSimulator, type Simulator } from "../src/index.js";
import { TinyDeviceModel } from "./helpers.js";

const BASE = 0x2000000n;

describe("XenStore in the simulator (xen-sys client unchanged)", () => {
  let sim: Simulator;
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({ domains: [{ domid: 2, name: "vm2", ram: 8 << 20, vcpus: 2 }] });
  });
  afterEach(async () => {
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  it("holds the toolstack's domain and virtio nodes, fires watches with tokens, runs transactions", async () => {
    const xs = await XenStore.open({ connector: socketConnector(sim.xenstorePath) });
    try {
      expect(await xs.read("/local/domain/2/name")).toBe("vm2");
      expect(await xs.directory("/local/domain/2/cpu")).toEqual(["0", "1"]);
      const be = sim.addVirtioDevice({ domid: 2, devid: 0, type: "virtio,device22", base: BASE, irq: 33 });
      expect(be).toBe("/local/domain/0/backend/virtio/2/0");
      expect(await xs.read(`${be}/type`)).toBe("virtio,device22");
      expect(await xs.read(`${be}/base`)).toBe("0x2000000");
      expect(await xs.read(`${be}/irq`)).toBe("33");
      expect(await xs.read("/local/domain/2/device/virtio/0/backend")).toBe(be);
      const disk = sim.addVirtioDisk({ domid: 2, target: "/dev/loop0" });
      expect(disk).toBe("/local/domain/0/backend/virtio_disk/2/51712");
      expect(await xs.read(`${disk}/state`)).toBe("1");

      const w = await xs.watch(`${be}/state`, { token: "tok-1" });
      const events: XenStoreWatchEvent[] = [];
      xs.on("watch", (e) => events.push(e));
      await xs.write(`${be}/state`, "2");
      for (let i = 0; i < 50 && !events.some((e) => e.token === "tok-1"); i++) await new Promise((r) => setTimeout(r, 20));
      expect(events.some((e) => e.token === "tok-1" && e.path === `${be}/state`)).toBe(true);
      expect(sim.xenstoreRead(`${be}/state`)).toBe("2");
      await w.close();

      await xs.transaction(async (tx) => {
        await tx.write(`${be}/state`, "4");
        await tx.write(`${be}/feature`, "1");
      });
      expect(await xs.read(`${be}/state`)).toBe("4");
      await xs.setPerms(`${be}/state`, [{ domid: 0, perm: "none" }, { domid: 2, perm: "read" }]);
      expect(await xs.getPerms(`${be}/state`)).toEqual([{ domid: 0, perm: "none" }, { domid: 2, perm: "read" }]);
      await expect(xs.read(`${be}/nonexistent`)).rejects.toMatchObject({ code: "ENOENT" });
    } finally {
      xs.close();
    }
  });

  it("wakes a vCPU blocked in an ioreq when the domain is destroyed", async () => {
    const xen = Xen.open({ transport: sim.connect() });
    // A device model that never answers: the vCPU blocks in read(2) on its wake eventfd.
    const dm = new TinyDeviceModel(xen, 2, [BASE, BASE + 0xfn], { read: () => 0n, write: () => undefined });
    dm.events.removeAllListeners("event");
    sim.unpause(2);
    const g = sim.startGuest({ domid: 2, program: "mmio", args: { accesses: [{ op: "r", addr: "0x2000000" }] } });
    // wait until the vCPU attached and its ioreq is out (READY in the slot)
    for (let i = 0; i < 200 && dm.pagesState() !== 1; i++) await new Promise((r) => setTimeout(r, 20));
    expect(dm.pagesState()).toBe(1);
    sim.destroy(2);
    await expect(g.result).rejects.toThrow(/destroyed during an ioreq|dying/);
    expect(xen.listDomains().map((d) => d.domid)).toEqual([0]);
    dm.events.close();
    xen.transport.close();
  });

  it("fails a vCPU whose ioreq nobody answers after its timeout, naming the access", async () => {
    const xen = Xen.open({ transport: sim.connect() });
    const dm = new TinyDeviceModel(xen, 2, [BASE, BASE + 0xfn], { read: () => 0n, write: () => undefined });
    dm.events.removeAllListeners("event");
    sim.unpause(2);
    const g = sim.startGuest({ domid: 2, program: "mmio", ioreqTimeoutMs: 500, args: { accesses: [{ op: "r", addr: "0x2000004" }] } });
    await expect(g.result).rejects.toThrow(/no answer to the ioreq for 0x2000004 in 500 ms \(slot state 1/);
    dm.close();
    xen.transport.close();
  });

  it("runs two vCPUs of one domain concurrently, each on its own slot and port", async () => {
    const xen = Xen.open({ transport: sim.connect() });
    let reads = 0;
    const dm = new TinyDeviceModel(xen, 2, [BASE, BASE + 0xfn], { read: (a) => a + BigInt(++reads * 0), write: () => undefined });
    expect(dm.ports).toHaveLength(2);
    sim.unpause(2);
    const accesses = Array.from({ length: 200 }, (_, i) => ({ op: "r", addr: `0x${(BASE + BigInt((i % 4) * 4)).toString(16)}` }));
    const [r0, r1] = await Promise.all([
      sim.startGuest({ domid: 2, vcpu: 0, program: "mmio", args: { accesses } }).result,
      sim.startGuest({ domid: 2, vcpu: 1, program: "mmio", args: { accesses } }).result,
    ]);
    const expected = accesses.map((a) => a.addr);
    expect(r0).toEqual(expected);
    expect(r1).toEqual(expected);
    expect(reads).toBe(400);
    dm.close();
    xen.transport.close();
  });

  it("keeps a paused guest from running until unpause (xl create -p ... xl unpause)", async () => {
    const xen = Xen.open({ transport: sim.connect() });
    const dev = new XenVirtioMmioDevice(xen, { domid: 2, base: BASE, irq: 33, device: (m, s) => new RngDevice(m, s) });
    const g = sim.startGuest({ domid: 2, program: "virtio-probe" });
    await new Promise((r) => setTimeout(r, 600));
    expect(dev.transport.counters.reads).toBe(0);
    sim.unpause(2);
    await expect(g.result).resolves.toMatchObject({ deviceId: 4 });
    expect(dev.transport.counters.reads).toBeGreaterThan(0);
    dev.close();
    xen.transport.close();
  });
});

describe("guest event channels", () => {
  it("binds dom0 to a guest's unbound port and exchanges events both ways", async () => {
    const leaks = fdLeakCheck();
    const sim = await startSimulator({ xenstore: false, domains: [{ domid: 1, ram: 4 << 20 }] });
    const xen = Xen.open({ transport: sim.connect() });
    const evt = xen.transport.openEventChannels();
    let local = -1;
    const dm = new TinyDeviceModel(xen, 1, [BASE, BASE + 0xfn], {
      read: () => 0n,
      write: (_a, _s, v) => {
        local = evt.bindInterdomain(1, Number(v));
        // consume the pending bit bind_interdomain sets, so what follows is the guest's own event
        expect([...evt.readPending()]).toEqual([local]);
        evt.unmask([local]);
        evt.notify(local);
      },
    });
    sim.unpause(1);
    const r = (await sim.startGuest({ domid: 1, program: "evtchn" }).result) as { port: number; events: number[] };
    expect(r.events).toEqual([r.port]);
    expect([...evt.readPending()]).toEqual([local]);
    dm.close();
    evt.close();
    xen.transport.close();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });
});
