// The guest side of XenStore (a PV guest's xenbus) and xenstored's special watches, against the
// simulator's xenstored, with xen-sys's XenStore client as dom0.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Xen, XenStore, encodeDomctl, socketConnector, type XenStoreWatchEvent } from "@xen-vhost/xen-sys";
import { startSimulator, type Simulator } from "../src/index.js";

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  for (let i = 0; i < ms / 10 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

describe("guest xenbus through the simulator's xenstored", () => {
  let sim: Simulator;
  let xs: XenStore;
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 8 << 20 }, { domid: 2, name: "guest2", ram: 8 << 20 }] });
    xs = await XenStore.open({ connector: socketConnector(sim.xenstorePath) });
    sim.unpause(1);
  });
  afterEach(async () => {
    xs.close();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  it("a guest publishes under its own data/ and a dom0 watch sees it; the node is the guest's", async () => {
    const events: XenStoreWatchEvent[] = [];
    xs.on("watch", (e) => events.push(e));
    await xs.watch("/local/domain/1/data", { token: "dom0-data" });
    const r = await sim.startGuest({ domid: 1, program: "xenbus", args: { publish: { "data/greeting": "hello from domU" }, perms: ["data/greeting"] } }).result;
    expect(r).toMatchObject({ home: "/local/domain/1", perms: { "data/greeting": ["none:1"] } });
    await until(() => events.some((e) => e.token === "dom0-data" && e.path === "/local/domain/1/data/greeting"));
    expect(await xs.read("/local/domain/1/data/greeting")).toBe("hello from domU");
    // construct_node: what an unprivileged domain creates, it owns
    expect(await xs.getPerms("/local/domain/1/data/greeting")).toEqual([{ domid: 1, perm: "none" }]);
    // libxl's permissions on the domain directory: dom0's, readable by the guest
    expect(sim.xenstorePerms("/local/domain/1")).toEqual([{ domid: 0, perm: "none" }, { domid: 1, perm: "read" }]);
  });

  it("checks every request as the guest's domid: libxl's read-only nodes, other domains and dom0 are refused", async () => {
    const r = await sim.startGuest({
      domid: 1, program: "xenbus",
      args: {
        read: ["name", "/local/domain/1/domid", "/local/domain/2/name", "/local/domain/0/name", "missing"],
        tryWrite: ["name", "memory/target", "data/ok", "control/shutdown", "/local/domain/2/data/x", "/local/domain/0/evil", "/evil"],
      },
    }).result;
    expect(r).toMatchObject({
      read: { name: "guest1", "/local/domain/1/domid": "1", "/local/domain/2/name": "EACCES", "/local/domain/0/name": "EACCES", missing: "ENOENT" },
      tryWrite: {
        name: "EACCES", "memory/target": "EACCES", "data/ok": "OK", "control/shutdown": "OK",
        "/local/domain/2/data/x": "EACCES", "/local/domain/0/evil": "EACCES", "/evil": "EACCES",
      },
    });
    expect(await xs.read("/local/domain/1/name")).toBe("guest1");
    await expect(xs.read("/evil")).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("the guest sees dom0's write to control/shutdown (the PV shutdown protocol) but no events for nodes it cannot read", async () => {
    const g = sim.startGuest({
      domid: 1, program: "xenbus", args: { foreignWatch: "/local/domain/2/data", waitFor: { path: "control/shutdown", value: "poweroff" } },
    });
    await until(() => g.logs.some((l) => l.includes("watching control/shutdown")), 10_000);
    await xs.write("/local/domain/2/data/secret", "not for domain 1");
    await xs.write("/local/domain/1/control/shutdown", "poweroff");
    expect(await g.result).toMatchObject({ waited: "poweroff", foreignEvents: 0 });
  });

  it("fires @introduceDomain on creation and @releaseDomain on shutdown and destruction (xl and domctl); the guest's xenbus is dropped", async () => {
    const events: XenStoreWatchEvent[] = [];
    xs.on("watch", (e) => events.push(e));
    await xs.watch("@introduceDomain", { token: "intro" });
    await xs.watch("@releaseDomain", { token: "release" });
    await until(() => events.filter((e) => e.token === "intro").length === 1 && events.filter((e) => e.token === "release").length === 1);
    const count = (t: string): number => events.filter((e) => e.token === t).length;

    const id = sim.createDomain({ ram: 8 << 20, name: "late" });
    await until(() => count("intro") === 2);
    expect(events.at(-1)).toEqual({ path: "@introduceDomain", token: "intro" });
    expect(await xs.read(`/local/domain/${id}/name`)).toBe("late");

    // a guest blocked on its xenbus loses the connection when its domain is destroyed
    const g = sim.startGuest({ domid: 1, program: "xenbus", args: { waitFor: { path: "control/shutdown", value: "never", timeoutMs: 20_000 } } });
    await until(() => g.logs.some((l) => l.includes("watching")), 10_000);
    sim.destroy(1);
    await until(() => count("release") === 2);
    await expect(g.result).rejects.toThrow(/Disconnected|dying|xenbus/);
    await expect(xs.read("/local/domain/1/name")).rejects.toMatchObject({ code: "ENOENT" });

    // shutdown (domain stays until destroyed) and a raw XEN_DOMCTL_destroydomain each fire once more
    sim.shutdown(2, 0);
    await until(() => count("release") === 3);
    // XEN_DOMCTL_destroydomain (2) straight from a dom0 process, without the toolstack
    const xen = Xen.open({ transport: sim.connect() });
    xen.getDomainInfo(id); // probes the domctl interface version
    xen.transport.domctl(encodeDomctl(2, xen.control.domctlVersion.accepted!, id));
    await until(() => count("release") === 4);
    xen.transport.close();
  });
});

describe("xenstored transactions (xenstored_transaction.c: conflicts per accessed node)", () => {
  it("commits over unrelated changes, fails with EAGAIN when an accessed node changed, applies nothing then", async () => {
    const leaks = fdLeakCheck();
    const sim = await startSimulator({ domains: [{ domid: 1, ram: 8 << 20 }] });
    const a = await XenStore.open({ connector: socketConnector(sim.xenstorePath) });
    const b = await XenStore.open({ connector: socketConnector(sim.xenstorePath) });
    try {
      await a.write("/tx/x", "1");
      await a.write("/tx/y", "1");
      // b writes a node the transaction never touched: the commit goes through, b's write stays
      let tx = await a.transactionStart();
      expect(await tx.read("/tx/x")).toBe("1");
      await tx.write("/tx/x", "2");
      await b.write("/tx/y", "b");
      await tx.commit();
      expect(await a.read("/tx/x")).toBe("2");
      expect(await a.read("/tx/y")).toBe("b");
      // b changes a node the transaction read: EAGAIN, and none of the transaction's writes happen
      tx = await a.transactionStart();
      expect(await tx.read("/tx/y")).toBe("b");
      await tx.write("/tx/x", "3");
      await tx.write("/tx/new", "n");
      await b.write("/tx/y", "b2");
      await expect(tx.commit()).rejects.toMatchObject({ code: "EAGAIN" });
      expect(await a.read("/tx/x")).toBe("2");
      expect(await a.tryRead("/tx/new")).toBeUndefined();
      // the client's retry helper gets through
      await a.transaction(async (t) => {
        await t.write("/tx/x", String(Number(await t.read("/tx/x")) + 1));
      });
      expect(await a.read("/tx/x")).toBe("3");
    } finally {
      a.close();
      b.close();
      await sim.close();
    }
    expect(leaks.check()).toEqual([]);
  });
});
