// The real-device paths on a machine without Xen: real open(2)/ioctl(2)/mmap(2) on real nodes. A missing
// node and a kernel without the feature (here /dev/null, which answers every ioctl with ENOTTY) must give
// typed errors naming the operation, and leave no fd or mapping behind.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { EventFd, write } from "@xen-vhost/vmm-sys-util";
import { PrivcmdTransport } from "../src/privcmd.js";
import { Xen } from "../src/xen.js";
import { XenError } from "../src/error.js";
import { EvtchnDevice } from "../src/evtchn-device.js";
import { GntdevDevice } from "../src/gntdev-device.js";

function thrown(f: () => unknown): XenError {
  try {
    f();
  } catch (e) {
    if (e instanceof XenError) return e;
    throw e;
  }
  throw new Error("did not throw");
}

const inDom0 = existsSync("/dev/xen/privcmd");

describe("missing device nodes", () => {
  it.skipIf(inDom0)("Xen.open() without /dev/xen/privcmd is DeviceMissing naming the node (needs a non-Xen host)", () => {
    const leaks = fdLeakCheck();
    const err = thrown(() => Xen.open());
    expect(err.kind).toBe("DeviceMissing");
    expect(err.path).toBe("/dev/xen/privcmd");
    expect(err.code).toBe("ENOENT");
    expect(err.op).toBe("open /dev/xen/privcmd");
    expect(err.message).toContain("/dev/xen/privcmd does not exist");
    expect(leaks.check()).toEqual([]);
  });

  it("each node's absence names that node", () => {
    const leaks = fdLeakCheck();
    expect(thrown(() => PrivcmdTransport.open({ privcmdPath: "/nonexistent/xen/privcmd" }))).toMatchObject({
      kind: "DeviceMissing", path: "/nonexistent/xen/privcmd",
    });
    expect(thrown(() => EvtchnDevice.open("/nonexistent/xen/evtchn"))).toMatchObject({ kind: "DeviceMissing", path: "/nonexistent/xen/evtchn" });
    expect(thrown(() => GntdevDevice.open("/nonexistent/xen/gntdev"))).toMatchObject({ kind: "DeviceMissing", path: "/nonexistent/xen/gntdev" });
    // The transport opens evtchn/gntdev lazily: privcmd present, evtchn absent.
    using t = PrivcmdTransport.open({ privcmdPath: "/dev/null", evtchnPath: "/nonexistent/evtchn", gntdevPath: "/nonexistent/gntdev" });
    expect(thrown(() => t.openEventChannels())).toMatchObject({ kind: "DeviceMissing", path: "/nonexistent/evtchn" });
    expect(thrown(() => t.openGrantDevice())).toMatchObject({ kind: "DeviceMissing", path: "/nonexistent/gntdev" });
    t.close();
    expect(leaks.check()).toEqual([]);
  });
});

describe("a kernel without the feature (/dev/null as privcmd: every ioctl is ENOTTY)", () => {
  it("probes irqfd/ioeventfd as absent and refuses them with Unsupported", () => {
    const leaks = fdLeakCheck();
    using t = PrivcmdTransport.open({ privcmdPath: "/dev/null" });
    expect(t.capabilities()).toEqual({ irqfd: false, ioeventfd: false });
    using efd = new EventFd();
    expect(thrown(() => t.irqfd({ domid: 1, eventFd: efd.fd, dmOp: new Uint8Array(32) }))).toMatchObject({
      kind: "Unsupported", op: "IOCTL_PRIVCMD_IRQFD",
    });
    t.close();
    efd.close();
    expect(leaks.check()).toEqual([]);
  });

  it("dm_op, restrict, resource size and hypercalls fail as Unsupported naming the op", () => {
    const leaks = fdLeakCheck();
    using xen = Xen.open({ privcmd: { privcmdPath: "/dev/null", hypercallPath: "/nonexistent/hypercall" } });
    expect(thrown(() => xen.createIoreqServer(7))).toMatchObject({
      kind: "Unsupported", op: "dm_op create_ioreq_server", code: "ENOTTY", domid: 7,
    });
    expect(thrown(() => xen.restrict(7))).toMatchObject({ kind: "Unsupported", op: "IOCTL_PRIVCMD_RESTRICT" });
    expect(thrown(() => xen.resourceSize(7, 0, 1))).toMatchObject({ kind: "Unsupported", op: "IOCTL_PRIVCMD_MMAP_RESOURCE (size query)" });
    // sysctl goes through IOCTL_PRIVCMD_HYPERCALL with hypercall memory (anonymous: no /dev/xen/hypercall here).
    expect(thrown(() => xen.listDomains())).toMatchObject({ kind: "Unsupported", op: "sysctl getdomaininfolist", code: "ENOTTY" });
    expect(thrown(() => xen.consoleWrite("x"))).toMatchObject({ kind: "Unsupported", op: "console_io write" });
    xen.close();
    xen.close(); // idempotent
    expect(leaks.check()).toEqual([]);
  });

  it("a foreign mapping that cannot be set up is unmapped again", () => {
    const leaks = fdLeakCheck();
    using t = PrivcmdTransport.open({ privcmdPath: "/dev/null" });
    // mmap of /dev/null itself is refused (ENODEV), before any ioctl.
    expect(thrown(() => t.mmapForeign(7, BigUint64Array.of(0x40000n)))).toMatchObject({ op: "mmap privcmd", code: "ENODEV" });
    expect(thrown(() => t.mmapResource(7, 0, 1, 1, 1))).toMatchObject({ op: "mmap privcmd" });
    t.close();
    expect(leaks.check()).toEqual([]);
  });

  it("bad arguments are RangeErrors before any syscall, and use after close is Closed", () => {
    const t = PrivcmdTransport.open({ privcmdPath: "/dev/null" });
    expect(() => t.dmOp(0x7ff0, [new Uint8Array(32)])).toThrow(RangeError);
    expect(() => t.dmOp(-1, [new Uint8Array(32)])).toThrow(RangeError);
    expect(() => t.mmapForeign(1, new BigUint64Array(0))).toThrow(RangeError);
    expect(() => t.ioeventfd({ domid: 1, ioreq: new ArrayBuffer(4096), ports: new Uint32Array(1), addr: 0n, addrLen: 3, eventFd: 0, vq: 0 })).toThrow(RangeError);
    t.close();
    expect(thrown(() => t.restrict(1))).toMatchObject({ kind: "Closed" });
  });
});

describe("EvtchnDevice on a FIFO (a pollable fd whose reads and writes are whole port numbers)", () => {
  // /dev/xen/evtchn's read returns pending ports as u32s and a write of ports unmasks them. A FIFO opened
  // read-write gives the same byte stream with a real kernel object: what a test writes, the device reads,
  // and what `unmask` writes can be read back.
  function fifo(): { path: string; remove: () => void } {
    const dir = mkdtempSync(join(tmpdir(), "xen-sys-evtchn-"));
    const path = join(dir, "evtchn");
    execFileSync("mkfifo", [path]);
    return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
  }
  const hasMkfifo = (() => {
    try {
      execFileSync("mkfifo", ["--version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

  it.skipIf(!hasMkfifo)("readPendingInto fills the caller's buffer, returns the count, and 0 when nothing is pending (needs mkfifo)", () => {
    const leaks = fdLeakCheck();
    const f = fifo();
    const dev = EvtchnDevice.open(f.path);
    const buf = new Uint32Array(4);
    expect(dev.readPendingInto(buf)).toBe(0);
    write(dev.fd, Uint32Array.of(7, 9, 11));
    expect(dev.readPendingInto(buf)).toBe(3);
    expect([...buf.subarray(0, 3)]).toEqual([7, 9, 11]);
    // More pending than the buffer holds: the rest stays for the next read.
    write(dev.fd, Uint32Array.of(1, 2, 3, 4, 5, 6));
    expect(dev.readPendingInto(buf)).toBe(4);
    expect([...buf]).toEqual([1, 2, 3, 4]);
    expect(dev.readPendingInto(buf)).toBe(2);
    expect([...buf.subarray(0, 2)]).toEqual([5, 6]);
    // readPending is the allocating form over the same read.
    write(dev.fd, Uint32Array.of(42));
    expect([...dev.readPending(8)]).toEqual([42]);
    expect(dev.readPending()).toHaveLength(0);
    // unmask writes a Uint32Array as it is and an array as u32s.
    dev.unmask(buf.subarray(0, 2));
    dev.unmask([8]);
    expect([...dev.readPending()]).toEqual([5, 6, 8]);
    expect(() => dev.readPendingInto(new Uint32Array(0))).toThrow(RangeError);
    dev.close();
    f.remove();
    expect(leaks.check()).toEqual([]);
  });

  it.skipIf(!hasMkfifo)("a read that is not whole ports is a Protocol error; notify on a non-evtchn fd is Unsupported (needs mkfifo)", () => {
    const leaks = fdLeakCheck();
    const f = fifo();
    const dev = EvtchnDevice.open(f.path);
    write(dev.fd, Uint8Array.of(1, 0, 0, 0, 2, 0));
    expect(thrown(() => dev.readPendingInto(new Uint32Array(4)))).toMatchObject({ kind: "Protocol", op: "read evtchn" });
    expect(thrown(() => dev.notify(3))).toMatchObject({ kind: "Unsupported", op: "IOCTL_EVTCHN_NOTIFY", code: "ENOTTY" });
    dev.close();
    dev.close();
    expect(thrown(() => dev.readPendingInto(new Uint32Array(1)))).toMatchObject({ kind: "Closed" });
    f.remove();
    expect(leaks.check()).toEqual([]);
  });
});
