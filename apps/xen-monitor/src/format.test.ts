import { describe, expect, it } from "vitest";
import type { DomainInfo } from "@xen-vhost/xen-sys";
import { consoleLine, formatEvent, formatTable, jsonEvent } from "./format.js";
import { viewOf } from "./view.js";

// Two records as the rig's Xen 4.17 returned them (xen-rig log of the xen-sys scenario), and the two lines
// `xl list -v` printed for them at the same time (its first six columns are `xl list`'s).
function info(p: Partial<DomainInfo>): DomainInfo {
  return {
    domid: 0, dying: false, hvm: true, shutdown: false, paused: false, blocked: false, running: false, debugged: false,
    xenstoreDomain: false, hap: true, shutdownReason: 255, flags: 0, totPages: 0n, maxPages: 0n, outstandingPages: 0n,
    sharedPages: 0n, pagedPages: 0n, sharedInfoFrame: 0n, cpuTime: 0n, onlineVcpus: 1, maxVcpuId: 0, ssidref: 0,
    uuid: "00000000-0000-0000-0000-000000000000", cpupool: 0, gpaddrBits: 44,
    arch: { arch: "arm64", gicVersion: 0, teeType: 0, nrSpis: 0, clockFrequency: 0 } as DomainInfo["arch"],
    ...p,
  };
}
const dom0 = info({ domid: 0, flags: 0xffff0122, running: true, totPages: 196608n, maxPages: 196608n, onlineVcpus: 2, maxVcpuId: 1, cpuTime: 148_612_000_000n });
const xsys = info({
  domid: 4, flags: 0xffff0112, blocked: true, totPages: 32772n, maxPages: 33024n, onlineVcpus: 1, cpuTime: 2_912_000_000n,
  uuid: "2da12a4b-5d3f-4e4f-a5a2-c6948717e792",
});

describe("formatTable", () => {
  it("prints what xl list printed for the same domains", () => {
    expect(formatTable([viewOf(xsys, "xsys"), viewOf(dom0, "Domain-0")])).toBe(
      "Name                                        ID   Mem VCPUs\tState\tTime(s)\n" +
        "Domain-0                                     0   768     2     r-----     148.6\n" +
        "xsys                                         4   128     1     -b----       2.9\n",
    );
  });

  it("masks the shutdown code of a live domain (255 on real Xen) and marks a crash", () => {
    const live = viewOf(xsys, "xsys");
    expect(live.shutdownCode).toBeUndefined();
    const crashed = viewOf(info({ ...xsys, blocked: false, shutdown: true, flags: 0x0003_0116 }), "xsys");
    expect(crashed.shutdownCode).toBe(3);
    expect(formatTable([crashed])).toContain("     ---sc-  ");
    expect(formatTable([viewOf(xsys, undefined)])).toContain("(unknown)");
  });
});

describe("event lines", () => {
  const who = { domid: 4, name: "xsys" };
  it("reads as a sentence, with the domid after a name", () => {
    expect(formatEvent({ ...who, type: "created", activity: "paused", vcpus: 1, memKiB: 131088 })).toBe("xsys created (domain 4): paused, 1 vCPU, 128 MiB");
    expect(formatEvent({ ...who, type: "state", from: "running", to: "paused" })).toBe("xsys paused (domain 4, was running)");
    expect(formatEvent({ ...who, type: "state", from: "paused", to: "blocked" })).toBe("xsys unpaused (domain 4): blocked");
    expect(formatEvent({ ...who, type: "state", from: "blocked", to: "running" })).toBe("xsys running (domain 4, was blocked)");
    expect(formatEvent({ ...who, type: "shutdown", code: 4 })).toBe("xsys shut down: watchdog (domain 4)");
    expect(formatEvent({ ...who, type: "shutdown", code: 9 })).toBe("xsys shut down: code 9 (domain 4)");
    expect(formatEvent({ ...who, type: "dying" })).toBe("xsys dying (domain 4)");
    expect(formatEvent({ ...who, type: "destroyed" })).toBe("xsys destroyed (domain 4)");
    expect(formatEvent({ ...who, type: "vcpus", from: 2, to: 1 })).toBe("xsys vCPUs 2 -> 1 (domain 4)");
    expect(formatEvent({ ...who, type: "memory", fromKiB: 131088, toKiB: 65536 })).toBe("xsys memory 128 MiB -> 64 MiB (domain 4)");
    expect(formatEvent({ ...who, type: "renamed", from: "old" })).toBe("xsys renamed from old (domain 4)");
    expect(formatEvent({ domid: 7, name: undefined, type: "state", from: "blocked", to: "paused" })).toBe("domain 7 paused (was blocked)");
    expect(formatEvent({ domid: 7, name: undefined, type: "destroyed" })).toBe("domain 7 destroyed");
    expect(consoleLine({ ...who, type: "dying" })).toBe("xen-monitor: xsys dying (domain 4)\n");
  });

  it("has a JSON form with the reason named and unknowns as null", () => {
    const t = new Date("2026-11-26T18:00:00.000Z");
    expect(JSON.parse(jsonEvent({ ...who, type: "shutdown", code: 0 }, t))).toEqual({
      time: "2026-11-26T18:00:00.000Z", type: "shutdown", domid: 4, name: "xsys", code: 0, reason: "poweroff",
    });
    expect(JSON.parse(jsonEvent({ domid: 2, name: undefined, type: "created", activity: undefined, vcpus: 1, memKiB: 4 }, t))).toEqual({
      time: "2026-11-26T18:00:00.000Z", type: "created", domid: 2, name: null, activity: null, vcpus: 1, memKiB: 4,
    });
  });
});
