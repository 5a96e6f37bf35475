// The simulated hypervisor in-process, fed hostile bytes: every malformed sysctl/domctl/dm_op is refused
// with an errno (HypervisorError), never a crash, and the domain's state stays consistent.
import { afterAll, beforeAll, describe, expect } from "vitest";
import { test, fc } from "@fast-check/vitest";
import {
  XEN_DMOP, XEN_SYSCTL, XenSysctlGetdomaininfolist, decodeDomainInfo, encodeSysctl, encodeDomctl, xenDomctlGetdomaininfo,
  type DomainInfo,
} from "@xen-vhost/xen-sys";
import { HypervisorError, SimError } from "../error.js";
import { FrameReader, encodeFrame } from "../protocol.js";
import { Client, Hypervisor } from "./hypervisor.js";

let hv: Hypervisor;
const client = new Client(1);
beforeAll(() => {
  hv = new Hypervisor({ domains: [{ domid: 1, ram: 1 << 20, vcpus: 2 }] });
  hv.addClient(client);
});
afterAll(() => {
  hv.disconnect(client);
  hv.close();
});

function refusedOrOk(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(HypervisorError);
    expect((err as HypervisorError).code).toMatch(/^E[A-Z0-9]+$/);
  }
}

describe("hostile hypercall bytes", () => {
  test.prop([fc.integer({ min: 0, max: 24 }), fc.uint8Array({ minLength: 0, maxLength: 40 }), fc.integer({ min: 0, max: 3 })], { numRuns: 4000 })(
    "dm_op answers or refuses with an errno",
    (op, payload, domid) => {
      const buf = new Uint8Array(8 + payload.length);
      new DataView(buf.buffer).setUint32(0, op, true);
      buf.set(payload, 8);
      refusedOrOk(() => hv.dmOp(client, { domid, bufs: [buf] }));
      // destroy whatever got created so ENOSPC does not hide the other paths
      const d = hv.domains.get(1)!;
      for (const id of [...d.ioreqServers.keys()]) {
        const destroy = new Uint8Array(12);
        new DataView(destroy.buffer).setUint32(0, XEN_DMOP.destroy_ioreq_server, true);
        new DataView(destroy.buffer).setUint16(8, id, true);
        hv.dmOp(client, { domid: 1, bufs: [destroy] });
      }
      // every allocated port is consistent: interdomain ports point back at each other
      for (const [p, rec] of d.ports) {
        if (rec.state === "interdomain") expect(hv.domains.get(rec.remoteDomid)?.ports.get(rec.remotePort)?.remotePort).toBe(p);
      }
    },
  );

  test.prop([fc.integer({ min: 0, max: 40 }), fc.constantFrom(0x14, 0x15, 0x16), fc.uint8Array({ maxLength: 128 })], { numRuns: 2000 })(
    "sysctl answers or refuses",
    (cmd, version, payload) => {
      refusedOrOk(() => hv.sysctl(client, { op: encodeSysctl(cmd, version, payload), handles: [{ offset: 16, data: new Uint8Array(256) }] }));
    },
  );

  test.prop([fc.integer({ min: 0, max: 10 }), fc.constantFrom(0x15, 0x17), fc.integer({ min: 0, max: 0x7fff })], { numRuns: 2000 })(
    "domctl answers or refuses (pause/unpause/destroy of dom0 refused)",
    (cmd, version, domid) => {
      if (cmd === 2 && domid === 1) return; // keep the test domain
      refusedOrOk(() => hv.domctl(client, { op: encodeDomctl(cmd, version, domid) }));
      expect(hv.domains.has(0)).toBe(true);
    },
  );

  test.prop([fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 })], { numRuns: 2000 })(
    "the frame reader rejects garbage with SimError only",
    (chunks) => {
      const r = new FrameReader();
      try {
        for (const c of chunks) {
          r.push(c, []);
          while (r.next());
        }
      } catch (err) {
        expect(err).toBeInstanceOf(SimError);
      }
    },
  );

  test.prop([fc.jsonValue(), fc.integer({ min: 1, max: 7 })], { numRuns: 500 })("frames round-trip in arbitrary splits", (value, split) => {
    const frame = encodeFrame({ id: 1, value }, 0);
    const r = new FrameReader();
    for (let i = 0; i < frame.length; i += split) r.push(frame.subarray(i, i + split), []);
    const got = r.next();
    expect(got?.message).toEqual(JSON.parse(JSON.stringify({ id: 1, value })));
  });
});

/** getdomaininfolist through the hypervisor's sysctl bytes, decoded by xen-sys (what a monitor sees). */
function list(h: Hypervisor, c: Client): DomainInfo[] {
  const size = xenDomctlGetdomaininfo(h.arch).size;
  const data = new Uint8Array(16 * size);
  const op = encodeSysctl(XEN_SYSCTL.getdomaininfolist, 0x15, XenSysctlGetdomaininfolist.encode({ first_domain: 0, max_domains: 16 }));
  const r = h.sysctl(c, { op, handles: [{ offset: 16, data }] }).result as { op: Uint8Array; handles: Uint8Array[] };
  const n = XenSysctlGetdomaininfolist.read(new DataView(r.op.buffer, r.op.byteOffset), 8).num_domains;
  return Array.from({ length: n }, (_, i) => decodeDomainInfo(h.arch, r.handles[0]!, i * size));
}

describe("toolstack lifecycle as getdomaininfolist reports it", () => {
  test("shutdown code, vCPU and memory changes, a dying domain that lingers", async () => {
    const h = new Hypervisor({ domains: [{ domid: 3, ram: 4 << 20, vcpus: 4, paused: false }] });
    const c = new Client(9);
    h.addClient(c);
    try {
      let d3 = list(h, c).find((d) => d.domid === 3)!;
      // a live domain carries SHUTDOWN_CODE_INVALID (~0u) in the flags, as real Xen does
      expect(d3.flags >>> 16).toBe(0xffff);
      expect(d3.shutdown).toBe(false);
      expect(d3.blocked).toBe(true);
      expect([d3.onlineVcpus, d3.maxVcpuId, d3.totPages, d3.maxPages]).toEqual([4, 3, 1024n, 1024n]);
      h.domain(3).setOnlineVcpus(2);
      h.domain(3).setCurrentPages(512);
      expect(() => h.domain(3).setOnlineVcpus(5)).toThrow(HypervisorError);
      expect(() => h.domain(3).setCurrentPages(2048)).toThrow(HypervisorError);
      d3 = list(h, c).find((d) => d.domid === 3)!;
      expect([d3.onlineVcpus, d3.maxVcpuId, d3.totPages, d3.maxPages]).toEqual([2, 3, 512n, 1024n]);
      expect(() => h.shutdownDomain(3, 6)).toThrow(HypervisorError);
      h.shutdownDomain(3, 3);
      d3 = list(h, c).find((d) => d.domid === 3)!;
      expect([d3.shutdown, (d3.flags >>> 16) & 0xff, d3.running, d3.blocked]).toEqual([true, 3, false, false]);
      h.destroyDomain(3, { lingerMs: 100 });
      d3 = list(h, c).find((d) => d.domid === 3)!;
      expect(d3.dying).toBe(true);
      expect(() => h.domain(3)).toThrow(HypervisorError);
      // getdomaininfo (domctl) still answers for it, as Xen does until the domain is gone
      const op = encodeDomctl(5, 0x15, 3);
      h.domctl(c, { op });
      expect(decodeDomainInfo(h.arch, op, 16)).toMatchObject({ domid: 3, dying: true });
      await new Promise((r) => setTimeout(r, 250));
      expect(list(h, c).map((d) => d.domid)).toEqual([0]);
    } finally {
      h.disconnect(c);
      h.close();
    }
  });

  test("close() reaps a dying domain still lingering", () => {
    const h = new Hypervisor({ domains: [{ domid: 2, ram: 1 << 20 }] });
    h.destroyDomain(2, { lingerMs: 10_000 });
    expect(h.domains.get(2)?.dying).toBe(true);
    h.close();
    expect(h.domains.has(2)).toBe(false);
  });
});
