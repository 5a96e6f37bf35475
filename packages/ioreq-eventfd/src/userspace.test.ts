// The userspace relay without a hypervisor: the doorbell table and the irq relay against a recording
// setIrqLevel. Eventfds and the FdWatcher are real.
import { setImmediate as tick } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { NotifierError } from "./error.js";
import { UserspaceNotifier } from "./userspace.js";

function recorder() {
  const calls: string[] = [];
  return { calls, setIrqLevel: (line: number, level: 0 | 1) => void calls.push(`${line}=${level}`) };
}

async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await tick();
}

describe("UserspaceNotifier", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    expect(leaks.check()).toEqual([]);
  });

  it("reports its kind and matches doorbells like KVM: address, width, datamatch, space", () => {
    using n = new UserspaceNotifier({ setIrqLevel: () => {} });
    expect(n.kind).toBe("xen-userspace");
    const q0 = n.ioeventfd({ addr: 0x1050n, len: 4, datamatch: 0n });
    const q1 = n.ioeventfd({ addr: 0x1050n, len: 4, datamatch: 1n });
    const any = n.ioeventfd({ addr: 0x2000n, len: 0 });
    const pio = n.ioeventfd({ addr: 0x1050n, len: 2, space: "pio" });
    expect(q0.kind).toBe("xen-userspace");
    expect(n.dispatchWrite({ space: "mmio", addr: 0x1050n, len: 4, value: 1n })).toBe(true);
    expect(n.dispatchWrite({ space: "mmio", addr: 0x1050n, len: 4, value: 0n })).toBe(true);
    expect(n.dispatchWrite({ space: "mmio", addr: 0x1050n, len: 4, value: 2n })).toBe(false); // no queue 2
    expect(n.dispatchWrite({ space: "mmio", addr: 0x1050n, len: 2, value: 1n })).toBe(false); // width
    expect(n.dispatchWrite({ space: "mmio", addr: 0x1054n, len: 4, value: 1n })).toBe(false); // address
    expect(n.dispatchWrite({ space: "mmio", addr: 0x2000n, len: 1, value: 9n })).toBe(true); // any width
    expect(n.dispatchWrite({ space: "mmio", addr: 0x2000n, len: 8, value: 9n })).toBe(true);
    expect(n.dispatchWrite({ space: "pio", addr: 0x1050n, len: 2, value: 0xffffn })).toBe(true);
    expect([q0.eventfd.read(), q1.eventfd.read(), any.eventfd.read(), pio.eventfd.read()]).toEqual([1n, 1n, 2n, 1n]);
  });

  it("refuses the registrations KVM refuses with EEXIST", () => {
    using n = new UserspaceNotifier({ setIrqLevel: () => {} });
    n.ioeventfd({ addr: 0x1050n, len: 4, datamatch: 1n });
    const dup = (): unknown => n.ioeventfd({ addr: 0x1050n, len: 4, datamatch: 1n });
    expect(dup).toThrow(NotifierError);
    expect(() => n.ioeventfd({ addr: 0x1050n, len: 4 })).toThrow(expect.objectContaining({ kind: "AddressInUse" }));
    expect(() => n.ioeventfd({ addr: 0x1050n, len: 0 })).toThrow(expect.objectContaining({ kind: "AddressInUse" }));
    n.ioeventfd({ addr: 0x1050n, len: 4, datamatch: 2n }); // another queue is fine
    n.ioeventfd({ addr: 0x1050n, len: 2 }); // another width is fine
    n.ioeventfd({ addr: 0x1050n, len: 4, space: "pio" }); // another space is fine
  });

  it("a closed doorbell no longer matches and releases only an owned eventfd", () => {
    using kick = new EventFd();
    using n = new UserspaceNotifier({ setIrqLevel: () => {} });
    const mine = n.ioeventfd({ addr: 0x10n, len: 4, eventfd: kick });
    const owned = n.ioeventfd({ addr: 0x20n, len: 4 });
    mine.close();
    owned.close();
    expect(kick.closed).toBe(false);
    expect(owned.eventfd.closed).toBe(true);
    expect(n.dispatchWrite({ space: "mmio", addr: 0x10n, len: 4, value: 0n })).toBe(false);
  });

  it("edge irqfd: each eventfd write is a 1 -> 0 pulse on the line", async () => {
    const r = recorder();
    using n = new UserspaceNotifier(r);
    const irq = n.irqfd({ line: 33 });
    irq.raise();
    await settle();
    expect(r.calls).toEqual(["33=1", "33=0"]);
    irq.eventfd.write(1);
    await settle();
    expect(r.calls).toEqual(["33=1", "33=0", "33=1", "33=0"]);
  });

  it("level irqfd: asserted once until deassert(); close() lowers an asserted line", async () => {
    const r = recorder();
    using n = new UserspaceNotifier(r);
    const irq = n.irqfd({ line: 40, trigger: "level" });
    irq.raise();
    await settle();
    irq.raise(); // still asserted: no second hypercall
    await settle();
    expect(r.calls).toEqual(["40=1"]);
    irq.deassert();
    irq.deassert(); // already low
    expect(r.calls).toEqual(["40=1", "40=0"]);
    irq.raise();
    await settle();
    irq.close();
    expect(r.calls).toEqual(["40=1", "40=0", "40=1", "40=0"]);
    expect(() => irq.raise()).toThrow(expect.objectContaining({ code: "EBADF" }));
  });

  it("raise() sets the line in the caller's turn; a raise and the guest's ACK in one turn leave it low", async () => {
    const r = recorder();
    using n = new UserspaceNotifier(r);
    const level = n.irqfd({ line: 41, trigger: "level" });
    const edge = n.irqfd({ line: 42 });
    level.raise();
    edge.raise();
    expect(r.calls).toEqual(["41=1", "42=1", "42=0"]); // no event-loop turn needed
    level.deassert();
    level.raise();
    level.deassert();
    await settle();
    // (a raise relayed through the eventfd would have re-asserted line 41 here, after its deassert)
    expect(r.calls).toEqual(["41=1", "42=1", "42=0", "41=0", "41=1", "41=0"]);
    expect(level.eventfd.read()).toBeNull();
  });

  it("a throwing setIrqLevel is logged and the relay keeps running", async () => {
    const errors: string[] = [];
    const logger = { debug() {}, info() {}, warn() {}, error: (msg: string) => void errors.push(msg) };
    let fail = true;
    const calls: number[] = [];
    using n = new UserspaceNotifier({
      logger,
      setIrqLevel: (_line, level) => {
        if (fail) throw new Error("dm_op failed");
        calls.push(level);
      },
    });
    const irq = n.irqfd({ line: 1 });
    irq.raise();
    await settle();
    expect(errors).toEqual(["irqfd relay failed"]);
    fail = false;
    irq.raise();
    await settle();
    expect(calls).toEqual([1, 0]);
  });

  it("one eventfd cannot relay two lines; close() releases everything", () => {
    using call = new EventFd();
    const n = new UserspaceNotifier({ setIrqLevel: () => {} });
    const a = n.irqfd({ line: 1, eventfd: call });
    expect(() => n.irqfd({ line: 2, eventfd: call })).toThrow(expect.objectContaining({ kind: "EventfdInUse" }));
    const b = n.ioeventfd({ addr: 0n, len: 4 });
    n.close();
    expect([a.closed, b.closed, call.closed, b.eventfd.closed]).toEqual([true, true, false, true]);
    expect(() => n.dispatchWrite({ space: "mmio", addr: 0n, len: 4, value: 0n })).toThrow(expect.objectContaining({ code: "EBADF" }));
  });
});
