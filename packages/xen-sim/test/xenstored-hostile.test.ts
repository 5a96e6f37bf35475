// The simulator's xenstored against hostile clients: a guest trying toolstack-only requests, unknown types
// and giving its nodes away; raw garbage and oversized headers on the dom0 socket. Each gets an XS_ERROR or
// loses its own connection, and the store keeps serving everyone else.
import { connect } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fc, test as fcTest } from "@fast-check/vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { XS, XenStore, encodeMessage, socketConnector, strings } from "@xen-vhost/xen-sys";
import { startSimulator, type Simulator } from "../src/index.js";

/** Sends raw bytes on a fresh dom0 connection; resolves with what came back before it closed or went quiet. */
function raw(path: string, bytes: Uint8Array, quietMs = 150): Promise<{ data: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(path);
    const chunks: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    const done = (closed: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve({ data: Buffer.concat(chunks), closed });
    };
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("close", () => done(true));
    s.on("error", () => done(true));
    s.on("connect", () => {
      s.write(bytes);
      timer = setTimeout(() => done(false), quietMs);
    });
  });
}

describe("xenstored against hostile clients", () => {
  let sim: Simulator;
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({ domains: [{ domid: 1, ram: 8 << 20 }, { domid: 2, ram: 8 << 20 }] });
    sim.unpause(1);
  });
  afterEach(async () => {
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  it("refuses a guest's toolstack requests, unknown types and giving its node away", async () => {
    const r = await sim.startGuest({
      domid: 1, program: "xenbus",
      args: {
        publish: { "data/mine": "1" },
        raw: [
          { type: XS.INTRODUCE, args: ["3", "1", "1"] }, { type: XS.RELEASE, args: ["2"] }, { type: XS.IS_DOMAIN_INTRODUCED, args: ["2"] },
          { type: 99, args: [] }, { type: XS.READ, args: [""] }, { type: XS.WATCH, args: ["@bogusSpecial", "t"] },
          { type: XS.READ, args: ["/local/domain/1/../0/name"] },
        ],
        setPerms: [
          { path: "data/mine", perms: ["n2"] }, // give it to domain 2: EPERM
          { path: "data/mine", perms: ["n1", "r2"] }, // let domain 2 read it: fine
          { path: "name", perms: ["n1"] }, // libxl's node: EACCES
        ],
      },
    }).result;
    expect(r).toMatchObject({ raw: ["EACCES", "EACCES", "EACCES", "EINVAL", "EINVAL", "EINVAL", "EINVAL"], setPerms: ["EPERM", "OK", "EACCES"] });
    // domain 2 was neither released nor introduced twice
    const xs = await XenStore.open({ connector: socketConnector(sim.xenstorePath) });
    try {
      expect(await xs.isDomainIntroduced(2)).toBe(true);
      expect(await xs.getPerms("/local/domain/1/data/mine")).toEqual([{ domid: 1, perm: "none" }, { domid: 2, perm: "read" }]);
    } finally {
      xs.close();
    }
  });

  it("drops a dom0 connection announcing a payload over 4096 bytes; answers garbage types with XS_ERROR", async () => {
    const big = new Uint8Array(16);
    new DataView(big.buffer).setUint32(12, 5000, true);
    expect((await raw(sim.xenstorePath!, big)).closed).toBe(true);
    const odd = encodeMessage({ type: 1234, reqId: 7, txId: 0, payload: strings("x") });
    const got = await raw(sim.xenstorePath!, odd);
    expect(got.data.readUInt32LE(0)).toBe(XS.ERROR);
    expect(got.data.readUInt32LE(4)).toBe(7);
    expect(got.data.subarray(16).toString()).toBe("EINVAL\0");
  });

  fcTest.prop([fc.uint8Array({ minLength: 1, maxLength: 300 })], { numRuns: 15 })("survives random bytes on a dom0 connection", async (bytes) => {
    await raw(sim.xenstorePath!, bytes, 10);
    const xs = await XenStore.open({ connector: socketConnector(sim.xenstorePath) });
    try {
      expect(await xs.read("/local/domain/1/domid")).toBe("1");
    } finally {
      xs.close();
    }
  });
});
