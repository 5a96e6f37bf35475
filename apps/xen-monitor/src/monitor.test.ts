import { describe, expect, it } from "vitest";
import type { DomainInfo } from "@xen-vhost/xen-sys";
import { Monitor } from "./monitor.js";
import type { NameSource } from "./names.js";

// The toolstack side is a plain list here (the simulator tests in test/ use the real thing); this pins down
// how the monitor waits for a new domain's name.
function info(domid: number, uuid: string): DomainInfo {
  return {
    domid, dying: false, hvm: true, shutdown: false, paused: true, blocked: false, running: false, debugged: false, xenstoreDomain: false,
    hap: true, shutdownReason: -1, flags: 0xffff000a, totPages: 256n, maxPages: 256n, outstandingPages: 0n, sharedPages: 0n,
    pagedPages: 0n, sharedInfoFrame: 0n, cpuTime: 0n, onlineVcpus: 1, maxVcpuId: 0, ssidref: 0, uuid, cpupool: 0, gpaddrBits: 40,
    arch: { arch: "arm64", gicVersion: 0, teeType: 0, nrSpis: 0, clockFrequency: 0 } as DomainInfo["arch"],
  };
}

describe("Monitor", () => {
  it("reports a new domain once XenStore names it, or by domid after nameWaitMs", async () => {
    let list = [info(0, "u0")];
    const names = new Map([[0, "Domain-0"]]);
    const source: NameSource = { names: (ids) => Promise.resolve(new Map(ids.flatMap((i) => (names.has(i) ? [[i, names.get(i)!] as const] : [])))), close: () => undefined };
    const mon = new Monitor({ xen: { listDomains: () => list }, names: source, nameWaitMs: 150 });
    expect((await mon.poll()).map((e) => e.type)).toEqual(["present"]);
    list = [info(0, "u0"), info(1, "u1")];
    expect(await mon.poll()).toEqual([]); // created, but xl has not written the name yet
    names.set(1, "web");
    expect(await mon.poll()).toMatchObject([{ type: "created", domid: 1, name: "web" }]);
    list = [...list, info(2, "u2")];
    expect(await mon.poll()).toEqual([]);
    await new Promise((r) => setTimeout(r, 200));
    expect(await mon.poll()).toMatchObject([{ type: "created", domid: 2, name: undefined }]);
    // a nameless domain that goes before it was reported leaves nothing behind
    list = [...list, info(3, "u3")];
    expect(await mon.poll()).toEqual([]);
    list = list.filter((d) => d.domid !== 3);
    expect(await mon.poll()).toEqual([]);
  });

  it("without a name source reports new domains at once", async () => {
    let list = [info(0, "u0")];
    const mon = new Monitor({ xen: { listDomains: () => list } });
    await mon.poll();
    list = [info(0, "u0"), info(4, "u4")];
    expect(await mon.poll()).toMatchObject([{ type: "created", domid: 4, name: undefined, activity: "paused" }]);
  });

  it("holds a domain back while it is being built (no vCPU online, as right after XEN_DOMCTL_createdomain)", async () => {
    let list = [info(0, "u0")];
    const mon = new Monitor({ xen: { listDomains: () => list } });
    await mon.poll();
    list = [info(0, "u0"), { ...info(1, "u1"), onlineVcpus: 0, totPages: 0n }];
    expect(await mon.poll()).toEqual([]);
    list = [info(0, "u0"), info(1, "u1")];
    expect(await mon.poll()).toMatchObject([{ type: "created", domid: 1, vcpus: 1, memKiB: 1024 }]);
  });
});
