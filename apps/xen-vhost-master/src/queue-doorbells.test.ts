import { describe, expect, it } from "vitest";
import { UserspaceNotifier } from "@xen-vhost/ioreq-eventfd";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { QueueDoorbells } from "./queue-doorbells.js";

describe("QueueDoorbells", () => {
  it("counts the kicks the userspace relay delivers, per device, and closes what it created", () => {
    const fds = fdLeakCheck();
    const levels: number[] = [];
    const notifier = new UserspaceNotifier({ setIrqLevel: (_l, v) => levels.push(v) });
    const a = new QueueDoorbells(notifier, 0x2000000n);
    const b = new QueueDoorbells(notifier, 0x2000200n);
    const q0 = a.eventfd(0);
    expect(q0.created).toBe(true);
    expect(a.eventfd(0).eventfd).toBe(q0.eventfd); // one doorbell per queue
    a.eventfd(1);
    b.eventfd(0);
    // QueueNotify writes as the ioreq loop offers them: address, size, value halves.
    expect(notifier.dispatch("mmio", 0x2000050, 4, 0, 0)).toBe(true);
    expect(notifier.dispatch("mmio", 0x2000050, 4, 1, 0)).toBe(true);
    expect(notifier.dispatch("mmio", 0x2000050, 4, 1, 0)).toBe(true);
    expect(notifier.dispatch("mmio", 0x2000250, 4, 0, 0)).toBe(true);
    expect(notifier.dispatch("mmio", 0x2000050, 4, 7, 0)).toBe(false); // no such queue: the register file's
    expect(q0.eventfd.read()).toBe(1n); // the backend's side sees the kick
    expect([a.kicks, b.kicks, a.offloaded]).toEqual([3, 1, 0]);
    a.close();
    expect(a.kicks).toBe(3); // history kept
    expect(notifier.dispatch("mmio", 0x2000050, 4, 0, 0)).toBe(false); // unregistered
    b.close();
    b.close();
    notifier.close();
    expect(fds.check()).toEqual([]);
  });
});
