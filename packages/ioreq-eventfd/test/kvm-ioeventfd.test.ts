// ioeventfd against a real KVM guest: a few real-mode instructions write to a doorbell, and the kernel must
// signal the eventfd instead of returning an MMIO/PIO exit. KVM_RUN runs on the test's main thread: each
// guest here ends in HLT (no irqchip, so HLT exits) after a handful of instructions.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd, FdWatcher } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { KvmNotifier, NotifierError, kvmAvailable, type KvmExit } from "../src/index.js";
import { Asm16, RealModeVm } from "../src/testing/index.js";

const hasKvm = process.arch === "x64" && kvmAvailable();
const DOORBELL = 0x10000; // just above the 64 KiB of guest RAM: unbacked, so an MMIO exit without ioeventfd
const PORT = 0x3f0;

/** ds = 0x1000, then `mov dword [0], value`: one 4-byte MMIO write to 0x10000, then HLT. */
function mmioWrite(...values: number[]): Uint8Array {
  const a = new Asm16().movAx(DOORBELL >> 4).movDsAx();
  for (const v of values) a.movEax(v).storeEax(0);
  return a.hlt().bytes();
}

/** `out dx, al` to PORT for each value, then HLT. */
function pioWrite(...values: number[]): Uint8Array {
  const a = new Asm16().movDx(PORT);
  for (const v of values) a.movAl(v).outDxAl();
  return a.hlt().bytes();
}

const untilHlt = (e: KvmExit): boolean => e.reason === "hlt";

describe.skipIf(!hasKvm)("KvmNotifier.ioeventfd with a real guest (needs /dev/kvm on x86_64)", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    expect(leaks.check()).toEqual([]);
  });

  it("control: without an ioeventfd the doorbell write exits to userspace as MMIO", () => {
    using g = RealModeVm.create({ code: mmioWrite(0x12345678) });
    const exits = g.runUntil(untilHlt);
    expect(exits).toEqual([
      { reason: "mmio", physAddr: BigInt(DOORBELL), len: 4, isWrite: true, data: Uint8Array.of(0x78, 0x56, 0x34, 0x12), value: 0x12345678n },
      { reason: "hlt" },
    ]);
  });

  it("an MMIO doorbell write signals the eventfd without an MMIO exit", () => {
    using g = RealModeVm.create({ code: mmioWrite(0x12345678) });
    using n = new KvmNotifier(g.vm);
    const h = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4 });
    expect(h.kind).toBe("kvm");
    expect(h.ownsEventfd).toBe(true);
    expect(h.eventfd.read()).toBeNull();
    expect(g.runUntil(untilHlt)).toEqual([{ reason: "hlt" }]);
    expect(h.eventfd.read()).toBe(1n);
  });

  it("counts every write: three doorbell writes read as 3", () => {
    using g = RealModeVm.create({ code: mmioWrite(1, 2, 3) });
    using n = new KvmNotifier(g.vm);
    const h = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4 });
    expect(g.runUntil(untilHlt)).toEqual([{ reason: "hlt" }]);
    expect(h.eventfd.read()).toBe(3n);
  });

  it("a PIO doorbell (out dx, al) signals the eventfd without an IO exit", () => {
    using g = RealModeVm.create({ code: pioWrite(0x2a) });
    using n = new KvmNotifier(g.vm);
    const h = n.ioeventfd({ addr: BigInt(PORT), len: 1, space: "pio" });
    expect(g.runUntil(untilHlt)).toEqual([{ reason: "hlt" }]);
    expect(h.eventfd.read()).toBe(1n);
  });

  it("control: the same PIO write without ioeventfd is an IO exit", () => {
    using g = RealModeVm.create({ code: pioWrite(0x2a) });
    const exits = g.runUntil(untilHlt);
    expect(exits[0]).toMatchObject({ reason: "io", direction: "out", port: PORT, size: 1, value: 0x2a });
  });

  it("datamatch: the matching value signals, a non-matching one exits to userspace", () => {
    using g = RealModeVm.create({ code: mmioWrite(0x1, 0x2, 0x1) });
    using n = new KvmNotifier(g.vm);
    const vq1 = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4, datamatch: 1n });
    const exits = g.runUntil(untilHlt);
    expect(exits).toEqual([
      { reason: "mmio", physAddr: BigInt(DOORBELL), len: 4, isWrite: true, data: Uint8Array.of(2, 0, 0, 0), value: 2n },
      { reason: "hlt" },
    ]);
    expect(vq1.eventfd.read()).toBe(2n);
  });

  it("datamatch: one doorbell address, one eventfd per value (virtio-mmio QUEUE_NOTIFY per queue)", () => {
    using g = RealModeVm.create({ code: mmioWrite(0, 1, 1, 0, 1) });
    using n = new KvmNotifier(g.vm);
    const q0 = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4, datamatch: 0n });
    const q1 = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4, datamatch: 1n });
    expect(g.runUntil(untilHlt)).toEqual([{ reason: "hlt" }]);
    expect(q0.eventfd.read()).toBe(2n);
    expect(q1.eventfd.read()).toBe(3n);
  });

  it("len 0 matches writes of any width (KVM_CAP_IOEVENTFD_ANY_LENGTH)", () => {
    // mov byte [0], al; mov word [0], ax; mov dword [0], eax with ds = 0x1000
    const code = new Asm16().movAx(DOORBELL >> 4).movDsAx().movEax(7).storeAl(0).storeAx(0).storeEax(0).hlt().bytes();
    using g = RealModeVm.create({ code });
    using n = new KvmNotifier(g.vm);
    const h = n.ioeventfd({ addr: BigInt(DOORBELL), len: 0 });
    expect(g.runUntil(untilHlt)).toEqual([{ reason: "hlt" }]);
    expect(h.eventfd.read()).toBe(3n);
  });

  it("a write of another width does not match (len 2 ioeventfd, 4-byte write exits)", () => {
    using g = RealModeVm.create({ code: mmioWrite(7) });
    using n = new KvmNotifier(g.vm);
    const h = n.ioeventfd({ addr: BigInt(DOORBELL), len: 2 });
    expect(g.runUntil(untilHlt)[0]).toMatchObject({ reason: "mmio", len: 4, value: 7n });
    expect(h.eventfd.read()).toBeNull();
  });

  it("the FdWatcher callback fires on the event loop after KVM_RUN returns", async () => {
    using g = RealModeVm.create({ code: mmioWrite(5) });
    using n = new KvmNotifier(g.vm);
    const h = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4 });
    const kicked = new Promise<bigint | null>((resolve) => {
      const w = new FdWatcher(h.eventfd.fd, () => {
        w.close();
        resolve(h.eventfd.read());
      }).start();
    });
    expect(g.runUntil(untilHlt)).toEqual([{ reason: "hlt" }]);
    await expect(kicked).resolves.toBe(1n);
  });

  it("close() deassigns: the next guest write exits again, and the owned eventfd is closed", () => {
    using g = RealModeVm.create({ code: mmioWrite(9) });
    using n = new KvmNotifier(g.vm);
    const h = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4 });
    const fd = h.eventfd;
    h.close();
    h.close(); // idempotent
    expect(h.closed).toBe(true);
    expect(fd.closed).toBe(true);
    expect(g.runUntil(untilHlt)[0]).toMatchObject({ reason: "mmio", value: 9n });
  });

  it("a caller-provided eventfd (a vhost-user kick fd) is signalled and left open on close", () => {
    using kick = new EventFd();
    using g = RealModeVm.create({ code: mmioWrite(3) });
    {
      using n = new KvmNotifier(g.vm);
      const h = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4, eventfd: kick });
      expect(h.ownsEventfd).toBe(false);
      expect(h.eventfd).toBe(kick);
      expect(g.runUntil(untilHlt)).toEqual([{ reason: "hlt" }]);
    }
    expect(kick.closed).toBe(false);
    expect(kick.read()).toBe(1n);
  });

  it("a duplicate registration is AddressInUse and leaks nothing", () => {
    using g = RealModeVm.create({ code: mmioWrite(0) });
    using n = new KvmNotifier(g.vm);
    n.ioeventfd({ addr: BigInt(DOORBELL), len: 4, datamatch: 1n });
    let err: unknown;
    try {
      n.ioeventfd({ addr: BigInt(DOORBELL), len: 4, datamatch: 1n });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NotifierError);
    expect(err).toMatchObject({ kind: "AddressInUse", cause: { code: "EEXIST" } });
  });

  it("notifier.close() releases every handle; closing the VM first is also fine", () => {
    const g = RealModeVm.create({ code: mmioWrite(0) });
    const n = new KvmNotifier(g.vm);
    const a = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4 });
    const b = n.ioeventfd({ addr: BigInt(PORT), len: 1, space: "pio" });
    g.close(); // the kernel dropped the registrations with the VM
    n.close();
    expect([a.closed, b.closed, a.eventfd.closed, b.eventfd.closed]).toEqual([true, true, true, true]);
    expect(() => n.ioeventfd({ addr: 0n, len: 4 })).toThrow(expect.objectContaining({ code: "EBADF" }));
  });
});
