// XenNotifier's privcmd kernel path at the ioctl boundary: which doorbells and lines it hands to
// IOCTL_PRIVCMD_IOEVENTFD / IOCTL_PRIVCMD_IRQFD, with which exact arguments, and how it falls back. The
// simulator's transport is used with those two ioctls replaced by a recorder that can be told to fail as the
// kernel does (ENOTTY without CONFIG_XEN_PRIVCMD_EVENTFD, EBUSY for a reused eventfd); everything else (dm_ops,
// the line the guest sees) is the simulator's. The offload working end to end (the simulator emulates
// privcmd's ioeventfd/irqfd) is in xen-sim.test.ts.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { Xen, XenError, dmOps, type IoeventfdRequest, type IrqfdRequest, type XenTransport } from "@xen-vhost/xen-sys";
import { startSimulator, type Simulator } from "@xen-vhost/xen-sim";
import { IoreqServer, XenNotifier } from "../src/index.js";

const BASE = 0x2000000n;

type Call = { ioeventfd: IoeventfdRequest } | { irqfd: IrqfdRequest };

function kernelCapable(t: XenTransport, calls: Call[], failWith: { code?: string | undefined }) {
  const refuse = (op: string): void => {
    if (failWith.code === undefined) return;
    const errno = { ENOTTY: 25, EBUSY: 16, EINVAL: 22, EOPNOTSUPP: 95 }[failWith.code] ?? 5;
    throw XenError.fromErrno(errno, op);
  };
  return new Proxy(t, {
    get(target, prop) {
      if (prop === "capabilities") return () => ({ irqfd: true, ioeventfd: true });
      if (prop === "ioeventfd")
        return (req: IoeventfdRequest) => {
          refuse("IOCTL_PRIVCMD_IOEVENTFD");
          calls.push({ ioeventfd: req });
        };
      if (prop === "irqfd")
        return (req: IrqfdRequest) => {
          refuse("IOCTL_PRIVCMD_IRQFD");
          calls.push({ irqfd: req });
        };
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

describe("XenNotifier kernel offload (privcmd ioctls recorded; the rest on xen-sim)", () => {
  let sim: Simulator;
  let leaks: ReturnType<typeof fdLeakCheck>;
  let calls: Call[];
  let failWith: { code?: string | undefined };
  let transport: XenTransport;
  let server: IoreqServer;
  beforeEach(async () => {
    leaks = fdLeakCheck();
    sim = await startSimulator({ domains: [{ domid: 1, name: "guest1", ram: 16 << 20, vcpus: 2 }] });
    calls = [];
    failWith = {};
    transport = sim.connect();
    server = IoreqServer.create({ xen: Xen.open({ transport: kernelCapable(transport, calls, failWith) }), domid: 1 });
    server.mapMmio(BASE, 0x200, { read: () => 0, write: () => {} });
  });
  afterEach(async () => {
    server.close();
    transport.close();
    await sim.close();
    expect(leaks.check()).toEqual([]);
  });

  it("hands QueueNotify doorbells to privcmd as base = addr - 0x50, vq = datamatch, every vCPU's port", () => {
    const n = new XenNotifier(server);
    expect(n.kind).toBe("xen-kernel");
    const q1 = n.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 1n });
    expect(q1.kind).toBe("xen-kernel");
    expect(calls).toHaveLength(1);
    const req = (calls[0] as { ioeventfd: IoeventfdRequest }).ioeventfd;
    expect(req).toMatchObject({ domid: 1, addr: BASE, addrLen: 4, vq: 1, eventFd: q1.eventfd.fd });
    expect(req.ioreq).toBe(server.ioreqPages);
    expect([...req.ports]).toEqual([...server.localPorts]);
    expect(req.deassign).toBeUndefined();
    q1.close();
    expect((calls[1] as { ioeventfd: IoeventfdRequest }).ioeventfd).toMatchObject({ addr: BASE, vq: 1, deassign: true });
    n.close();
  });

  it("keeps doorbells privcmd cannot match in userspace: no datamatch, any width, a 32-bit value, PIO", () => {
    const n = new XenNotifier(server);
    const handles = [
      n.ioeventfd({ addr: BASE + 0x50n, len: 4 }),
      n.ioeventfd({ addr: BASE + 0x60n, len: 0 }),
      n.ioeventfd({ addr: BASE + 0x70n, len: 4, datamatch: 0x1_0000n }),
      n.ioeventfd({ addr: 0x40n, len: 4, datamatch: 0n }), // below 0x50: no base
      n.ioeventfd({ addr: 0x60n, len: 1, space: "pio" }),
    ];
    expect(handles.map((h) => h.kind)).toEqual(Array(5).fill("xen-userspace"));
    expect(calls).toEqual([]);
    // Collisions are checked across both paths.
    expect(() => n.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 3n })).toThrow(expect.objectContaining({ kind: "AddressInUse" }));
    n.close();
  });

  it("falls back per handle on EBUSY, and for good on ENOTTY (no CONFIG_XEN_PRIVCMD_EVENTFD)", () => {
    const n = new XenNotifier(server);
    failWith.code = "EBUSY";
    expect(n.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 0n }).kind).toBe("xen-userspace");
    failWith.code = "ENOTTY";
    expect(n.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 1n }).kind).toBe("xen-userspace");
    failWith.code = undefined;
    expect(n.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 2n }).kind).toBe("xen-userspace"); // not tried again
    expect(calls).toEqual([]);
    expect(n.irqfd({ line: 33, trigger: "level" }).kind).toBe("xen-kernel"); // irqfd is probed on its own
    n.close();
  });

  it("treats EOPNOTSUPP (privcmd built without CONFIG_XEN_PRIVCMD_EVENTFD) as unsupported for good", () => {
    const n = new XenNotifier(server);
    failWith.code = "EOPNOTSUPP";
    expect(n.irqfd({ line: 33, trigger: "level" }).kind).toBe("xen-userspace");
    failWith.code = undefined;
    expect(n.irqfd({ line: 34, trigger: "level" }).kind).toBe("xen-userspace");
    expect(calls).toEqual([]);
    n.close();
  });

  it("level irqfds go to privcmd with a set_irq_level(line, 1) DM_OP; deassert and close lower the line", () => {
    const n = new XenNotifier(server);
    const level = n.irqfd({ line: 33, trigger: "level" });
    const edge = n.irqfd({ line: 34 });
    expect([level.kind, edge.kind]).toEqual(["xen-kernel", "xen-userspace"]); // the kernel cannot pulse
    const req = (calls[0] as { irqfd: IrqfdRequest }).irqfd;
    expect(req).toMatchObject({ domid: 1, eventFd: level.eventfd.fd });
    expect([...req.dmOp]).toEqual([...dmOps.setIrqLevel(33, 1)]);
    // What the kernel would do on a signal, then the device model's deassert on the guest's ACK.
    server.xen.setIrqLevel(1, 33, 1);
    expect(sim.irqLevel(1, 33)).toBe(true);
    level.deassert();
    expect(sim.irqLevel(1, 33)).toBe(false);
    server.xen.setIrqLevel(1, 33, 1);
    level.close();
    expect((calls[1] as { irqfd: IrqfdRequest }).irqfd).toMatchObject({ eventFd: req.eventFd, deassign: true });
    expect(sim.irqLevel(1, 33)).toBe(false);
    n.close();
  });

  it("kernel: false (or per primitive) keeps everything in userspace", () => {
    const n = new XenNotifier(server, { kernel: { ioeventfd: false } });
    expect(n.ioeventfd({ addr: BASE + 0x50n, len: 4, datamatch: 0n }).kind).toBe("xen-userspace");
    expect(n.irqfd({ line: 33, trigger: "level" }).kind).toBe("xen-kernel");
    n.close();
    const m = new XenNotifier(server, { kernel: false });
    expect(m.kind).toBe("xen-userspace");
    m.close();
  });
});
