// The typed API over the recording transport (a test double for encodings only): what bytes each operation
// hands the transport, how OUT fields are read back, and how failures are named.
import { describe, expect, it } from "vitest";
import { Xen } from "./xen.js";
import { XenError } from "./error.js";
import { RecordingTransport, fail } from "./testing/index.js";
import { SHUTDOWN, XEN_DOMINF, type XenArch } from "./abi/domctl.js";
import { decodeDomainInfo } from "./sysctl.js";

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

/** Writes a getdomaininfo record the way Xen does (offsets from domctl.h), `size` bytes per record. */
function putDomain(data: Uint8Array, at: number, domid: number, flags: number, arch: XenArch): void {
  const v = dv(data);
  v.setUint16(at, domid, true);
  v.setUint32(at + 4, flags, true);
  v.setBigUint64(at + 8, BigInt(domid * 1000 + 1), true); // tot_pages
  v.setBigUint64(at + 56, 123456789n, true); // cpu_time
  v.setUint32(at + 64, 2, true); // nr_online_vcpus
  v.setUint32(at + 68, 1, true); // max_vcpu_id
  data.set([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, domid], at + 76); // handle
  data[at + 96] = 40; // gpaddr_bits
  if (arch === "arm64") {
    data[at + 104] = 3; // gic_version
    v.setUint32(at + 108, 96, true); // nr_spis
  } else {
    v.setUint32(at + 104, 0x3ff, true); // emulation_flags
  }
}

function sysctlTransport(arch: XenArch, domains: number[], accept = 0x15): RecordingTransport {
  const stride = arch === "arm64" ? 120 : 112;
  return new RecordingTransport({
    arch,
    respond: {
      sysctl(op, handles) {
        const v = dv(op);
        if (v.getUint32(4, true) !== accept) throw fail("EACCES", "sysctl");
        if (v.getUint32(0, true) !== 6) throw fail("ENOSYS", "sysctl");
        const first = v.getUint16(8, true);
        const max = v.getUint32(12, true);
        const list = domains.filter((d) => d >= first).slice(0, max);
        list.forEach((d, i) => putDomain(handles[0]!.data, i * stride, d, (1 << 5) | (d ? 2 : 0), arch));
        v.setUint32(24, list.length, true);
      },
    },
  });
}

describe("Xen over a recording transport", () => {
  it("listDomains encodes XEN_SYSCTL_getdomaininfolist and decodes x86_64 records (112-byte stride)", () => {
    const t = sysctlTransport("x86_64", [0, 7]);
    using xen = Xen.open({ transport: t });
    const doms = xen.listDomains();
    expect(doms.map((d) => d.domid)).toEqual([0, 7]);
    expect(doms[1]).toMatchObject({ running: true, hvm: true, totPages: 7001n, onlineVcpus: 2, gpaddrBits: 40 });
    expect(doms[1]!.uuid).toBe("deadbeef-0001-0203-0405-060708090a07");
    expect(doms[1]!.arch).toEqual({ arch: "x86_64", reported: true, emulationFlags: 0x3ff, miscFlags: 0 });
    const call = t.of("sysctl")[0]!;
    expect(call.op.byteLength).toBe(136);
    expect([dv(call.op).getUint32(0, true), dv(call.op).getUint32(4, true)]).toEqual([6, 0x15]);
    expect([dv(call.op).getUint16(8, true), dv(call.op).getUint32(12, true)]).toEqual([0, 256]);
    expect(call.handles).toHaveLength(1);
    expect(call.handles[0]!.offset).toBe(16); // u.getdomaininfolist.buffer
    expect(call.handles[0]!.data.byteLength).toBe(256 * 112);
  });

  it("decodes arm64 records with their 120-byte stride and GIC tail", () => {
    using xen = Xen.open({ transport: sysctlTransport("arm64", [0, 1, 2]) });
    const doms = xen.listDomains();
    expect(doms.map((d) => d.domid)).toEqual([0, 1, 2]);
    expect(doms[2]!.arch).toEqual({ arch: "arm64", reported: true, gicVersion: 3, teeType: 0, nrSpis: 96, clockFrequency: 0 });
  });

  it("an Arm tail Xen left zero (Xen 4.17-4.20 never fill it on Arm) is reported: false", () => {
    const rec = new Uint8Array(120);
    rec[0] = 5;
    const d = decodeDomainInfo("arm64", rec);
    expect(d.arch).toEqual({ arch: "arm64", reported: false, gicVersion: 0, teeType: 0, nrSpis: 0, clockFrequency: 0 });
  });

  it("shutdownReason is the SHUTDOWN_* code only once the domain is shut down, else -1", () => {
    const rec = new Uint8Array(112);
    const v = dv(rec);
    // A live domain: Xen's SHUTDOWN_CODE_INVALID (~0u) shows through as 0xff in the shutdown-code bits.
    v.setUint32(4, (0xff << 16) | XEN_DOMINF.running, true);
    expect(decodeDomainInfo("x86_64", rec)).toMatchObject({ shutdown: false, running: true, shutdownReason: -1 });
    v.setUint32(4, (SHUTDOWN.crash << 16) | XEN_DOMINF.shutdown, true);
    expect(decodeDomainInfo("x86_64", rec)).toMatchObject({ shutdown: true, shutdownReason: SHUTDOWN.crash });
    v.setUint32(4, (SHUTDOWN.poweroff << 16) | XEN_DOMINF.shutdown | XEN_DOMINF.dying, true);
    expect(decodeDomainInfo("x86_64", rec)).toMatchObject({ shutdown: true, dying: true, shutdownReason: SHUTDOWN.poweroff });
    // A dying domain that never shut down (xl destroy of a running guest) has no reason either.
    v.setUint32(4, (0xff << 16) | XEN_DOMINF.dying, true);
    expect(decodeDomainInfo("x86_64", rec)).toMatchObject({ dying: true, shutdown: false, shutdownReason: -1 });
  });

  it("pages through more than one batch", () => {
    const many = Array.from({ length: 300 }, (_, i) => i);
    using xen = Xen.open({ transport: sysctlTransport("x86_64", many) });
    expect(xen.listDomains()).toHaveLength(300);
  });

  it("probes the sysctl interface version: EACCES moves to the next candidate, then sticks", () => {
    const t = sysctlTransport("x86_64", [0], 0x16);
    using xen = Xen.open({ transport: t });
    xen.listDomains();
    expect(t.of("sysctl").map((c) => dv(c.op).getUint32(4, true))).toEqual([0x15, 0x16]);
    expect(xen.control.sysctlVersion.accepted).toBe(0x16);
    xen.listDomains();
    expect(t.of("sysctl").map((c) => dv(c.op).getUint32(4, true))).toEqual([0x15, 0x16, 0x16]);
  });

  it("fails with InterfaceVersion when every version is refused", () => {
    using xen = Xen.open({ transport: sysctlTransport("x86_64", [0], 0x99) });
    const err = (() => { try { xen.listDomains(); } catch (e) { return e; } })() as XenError;
    expect(err).toBeInstanceOf(XenError);
    expect(err.kind).toBe("InterfaceVersion");
    expect(err.op).toBe("sysctl getdomaininfolist");
    expect(err.message).toContain("0x15, 0x16, 0x14");
  });

  it("a pinned version is the only one tried", () => {
    const t = sysctlTransport("x86_64", [0], 0x14);
    using xen = Xen.open({ transport: t, sysctlVersion: 0x14 });
    xen.listDomains();
    expect(t.of("sysctl").map((c) => dv(c.op).getUint32(4, true))).toEqual([0x14]);
  });

  it("getDomainInfo encodes XEN_DOMCTL_getdomaininfo and rejects the next domain Xen returns instead", () => {
    const t = new RecordingTransport({
      respond: {
        domctl(op) {
          if (dv(op).getUint32(4, true) !== 0x17) throw fail("EACCES");
          putDomain(op, 16, dv(op).getUint16(8, true) === 3 ? 3 : 9, 1 << 4, "x86_64");
        },
      },
    });
    using xen = Xen.open({ transport: t });
    expect(xen.getDomainInfo(3)).toMatchObject({ domid: 3, blocked: true, running: false });
    const op = t.of("domctl").at(-1)!.op;
    expect(op.byteLength).toBe(144);
    expect([dv(op).getUint32(0, true), dv(op).getUint32(4, true), dv(op).getUint16(8, true)]).toEqual([5, 0x17, 3]);
    expect(() => xen.getDomainInfo(4)).toThrow(expect.objectContaining({ kind: "NoSuchDomain", op: "domctl getdomaininfo", domid: 4 }));
    expect(() => xen.getDomainInfo(0x7ff0)).toThrow(RangeError);
  });

  it("physinfo decodes XEN_SYSCTL_physinfo", () => {
    const t = new RecordingTransport({
      respond: {
        sysctl(op) {
          const v = dv(op);
          expect(v.getUint32(0, true)).toBe(3);
          v.setUint32(8 + 8, 4, true); // nr_cpus
          v.setUint32(8 + 28, 0b1001, true); // hvm | hap
          v.setBigUint64(8 + 40, 0x40000n, true); // total_pages
        },
      },
    });
    using xen = Xen.open({ transport: t });
    const p = xen.physinfo();
    expect(p).toMatchObject({ nrCpus: 4, totalPages: 0x40000n });
    expect(p.capabilities).toMatchObject({ hvm: true, pv: false, hap: true });
  });

  it("console_io write and read", () => {
    const t = new RecordingTransport({
      respond: {
        consoleIo(cmd, data) {
          if (cmd === 1) {
            data.set([104, 105]);
            return 2;
          }
        },
      },
    });
    using xen = Xen.open({ transport: t });
    xen.consoleWrite("hello\n");
    expect(new TextDecoder().decode(xen.consoleRead(16))).toBe("hi");
    const [w, r] = t.of("consoleIo");
    expect([w!.cmd, new TextDecoder().decode(w!.data)]).toEqual([0, "hello\n"]);
    expect([r!.cmd, r!.data.byteLength]).toEqual([1, 16]);
  });

  it("ioreq server lifecycle: ids and ports read back from the OUT fields", () => {
    const t = new RecordingTransport({
      respond: {
        dmOp(domid, bufs) {
          const v = dv(bufs[0]!);
          switch (v.getUint32(0, true)) {
            case 1: v.setUint16(12, 5, true); break;
            case 2: v.setUint32(12, 77, true); v.setBigUint64(16, 0xfeff0n, true); break;
            case 20: v.setUint32(8, domid === 7 ? 4 : 1, true); break;
          }
        },
      },
    });
    using xen = Xen.open({ transport: t });
    const id = xen.createIoreqServer(7);
    expect(id).toBe(5);
    expect(xen.getIoreqServerInfo(7, id, { noGfns: false })).toEqual({ bufioreqPort: 77, ioreqGfn: 0xfeff0n, bufioreqGfn: 0n });
    expect(xen.nrVcpus(7)).toBe(4);
    xen.setIoreqServerState(7, id, true);
    xen.mapIoRangeToIoreqServer(7, id, 0x2000000n, 0x20001ffn);
    xen.setIrqLevel(7, 33, 1);
    xen.unmapIoRangeFromIoreqServer(7, id, 0x2000000n, 0x20001ffn);
    xen.destroyIoreqServer(7, id);
    expect(t.of("dmOp").map((c) => [c.domid, dv(c.bufs[0]!).getUint32(0, true)])).toEqual([
      [7, 1], [7, 2], [7, 20], [7, 5], [7, 3], [7, 19], [7, 4], [7, 6],
    ]);
  });

  it("a failing dm_op names the op, the domain and the errno", () => {
    using xen = Xen.open({ transport: new RecordingTransport({ respond: { dmOp() { throw fail("ESRCH", "IOCTL_PRIVCMD_DM_OP"); } } }) });
    let err: unknown;
    try {
      xen.createIoreqServer(42);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ name: "XenError", kind: "NoSuchDomain", op: "dm_op create_ioreq_server", code: "ESRCH", domid: 42 });
    expect((err as Error).message).toBe("dm_op create_ioreq_server (domain 42): ESRCH");
  });

  it("mapIoreqServerPages maps frames 1..size-1 of the ioreq server resource", () => {
    const t = new RecordingTransport({ respond: { resourceSize: () => 3 } });
    using xen = Xen.open({ transport: t });
    const pages = xen.mapIoreqServerPages(7, 5);
    expect(pages.frames).toBe(2);
    expect(t.of("resourceSize")[0]).toMatchObject({ domid: 7, type: 0, id: 5 });
    expect(t.of("mmapResource")[0]).toMatchObject({ domid: 7, type: 0, id: 5, frame: 1, nrFrames: 2 });
  });

  it("mapForeignPages fails with per-page errors unless partial mappings are allowed", () => {
    const t = new RecordingTransport({
      respond: { mmapForeign: (_d, gfns) => ({ buffer: new ArrayBuffer(gfns.length * 4096), errors: Int32Array.from([0, 14, 0]) }) },
    });
    using xen = Xen.open({ transport: t });
    let err: XenError | undefined;
    try {
      xen.mapForeignPages(7, [0x40000, 0x40001, 0x40002]);
    } catch (e) {
      err = e as XenError;
    }
    expect(err?.kind).toBe("MappingFailed");
    expect(err?.code).toBe("EFAULT");
    expect(err?.message).toContain("frame 0x40001 (page 1)");
    expect([...err!.pageErrors!]).toEqual([0, 14, 0]);
    expect(t.of("mmapForeign")[0]!.gfns).toEqual([0x40000n, 0x40001n, 0x40002n]);
    const m = xen.mapForeignPages(7, [1n, 2n, 3n], { allowPartial: true });
    expect([...m.errors]).toEqual([0, 14, 0]);
  });

  it("assignIrqfd hands the kernel a set_irq_level(irq, 1) dm_op", () => {
    const t = new RecordingTransport();
    using xen = Xen.open({ transport: t });
    xen.assignIrqfd(7, 12, 33);
    const req = t.of("irqfd")[0]!.req;
    expect([req.domid, req.eventFd, req.deassign]).toEqual([7, 12, false]);
    expect([dv(req.dmOp).getUint32(0, true), dv(req.dmOp).getUint32(8, true), req.dmOp[12]]).toEqual([19, 33, 1]);
  });
});
