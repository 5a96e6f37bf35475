// The userspace relay (the path Xen takes without privcmd eventfd support) driven by a real KVM guest:
// doorbell writes arrive as KVM_EXIT_MMIO and go through `dispatchWrite`; interrupts go through
// KVM_IRQ_LINE, which stands in for XEN_DMOP_set_irq_level and, like it, is never lowered by the
// hypervisor. The level test shows why `deassert()` exists: without it a level line re-fires after EOI.
import { setImmediate as tick } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { UserspaceNotifier, kvmAvailable, type Irqfd } from "../src/index.js";
import { Asm16, RealModeVm } from "../src/testing/index.js";

const hasKvm = process.arch === "x64" && kvmAvailable();
const DOORBELL = 0x10000;
const LINE = 5;

async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await tick();
}

/**
 * PIC set up for IRQ5 -> vector 0x25, handler with a device ACK register. `level` makes IRQ5 level-sensitive
 * (ELCR): the PIC then forgets a request whose line dropped before the CPU took it, so a level line must be
 * held and an edge line must not be ELCR-level.
 */
function guest(level: boolean): { code: Uint8Array; handler: Uint8Array } {
  const a = new Asm16()
    .cli()
    .storeWord(0x25 * 4, 0x1100)
    .storeWord(0x25 * 4 + 2, 0)
    .movAl(0x11).outAl(0x20).movAl(0x20).outAl(0x21).movAl(0x04).outAl(0x21).movAl(0x01).outAl(0x21)
    .movAl(0xdf).outAl(0x21)
    .movDx(0x4d0).movAl(level ? 1 << LINE : 0).outDxAl() // ELCR
    .movAl(1).outAl(0x10) // ready
    .sti();
  const top = a.length;
  a.movCx(0x4000).loopSelf().movAl(2).outAl(0x12).jmpTo(top);
  const handler = new Asm16()
    .movAl(0x42).outAl(0x11) // in handler
    .movAl(0x01).outAl(0x14) // INTERRUPT_ACK to the device
    .movAl(0x20).outAl(0x20) // EOI
    .iret()
    .bytes();
  return { code: a.bytes(), handler };
}

describe.skipIf(!hasKvm)("UserspaceNotifier with a real KVM guest (needs /dev/kvm on x86_64)", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    expect(leaks.check()).toEqual([]);
  });

  it("doorbell MMIO exits dispatched to the table signal the queue's eventfd; others stay the device model's", () => {
    const a = new Asm16().movAx(DOORBELL >> 4).movDsAx();
    for (const q of [0, 1, 2, 1]) a.movEax(q).storeEax(0);
    using g = RealModeVm.create({ code: a.hlt().bytes() });
    using n = new UserspaceNotifier({ setIrqLevel: () => {} });
    const q0 = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4, datamatch: 0n });
    const q1 = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4, datamatch: 1n });
    const unhandled: bigint[] = [];
    g.runUntil((e) => {
      if (e.reason === "mmio" && e.isWrite && !n.dispatchWrite({ space: "mmio", addr: e.physAddr, len: e.len, value: e.value }))
        unhandled.push(e.value);
      return e.reason === "hlt";
    });
    expect([q0.eventfd.read(), q1.eventfd.read()]).toEqual([1n, 2n]);
    expect(unhandled).toEqual([2n]);
  });

  async function run(g: RealModeVm, irq: Irqfd, deassertOnAck: boolean): Promise<string[]> {
    const names: Record<number, string> = { 0x10: "ready", 0x11: "irq", 0x12: "tick", 0x14: "ack" };
    const seen: string[] = [];
    let quiet = 0;
    for (let i = 0; i < 200 && quiet < 4 && seen.filter((s) => s === "irq").length < 3; i++) {
      const e = g.run();
      if (e.reason !== "io") throw new Error(`unexpected exit ${e.reason}`);
      seen.push(names[e.port] ?? `0x${e.port.toString(16)}`);
      quiet = e.port === 0x12 ? quiet + 1 : 0;
      if (e.port === 0x10) irq.raise();
      if (e.port === 0x14 && deassertOnAck) irq.deassert();
      await settle(); // the relay runs on the event loop between KVM_RUNs
    }
    return seen.filter((s) => s !== "tick");
  }

  it("level line: raise() delivers the interrupt, deassert() on the guest's ACK keeps it from re-firing", async () => {
    const { code, handler } = guest(true);
    using g = RealModeVm.create({ code, irqchip: true });
    g.load(0x1100, handler);
    using n = new UserspaceNotifier({ setIrqLevel: (line, level) => g.vm.setIrqLine(line, level) });
    const irq = n.irqfd({ line: LINE, trigger: "level" });
    expect(await run(g, irq, true)).toEqual(["ready", "irq", "ack"]);
  });

  it("control: without deassert() the level line stays high and the guest is interrupted again after EOI", async () => {
    const { code, handler } = guest(true);
    using g = RealModeVm.create({ code, irqchip: true });
    g.load(0x1100, handler);
    using n = new UserspaceNotifier({ setIrqLevel: (line, level) => g.vm.setIrqLine(line, level) });
    const irq = n.irqfd({ line: LINE, trigger: "level" });
    expect(await run(g, irq, false)).toEqual(["ready", "irq", "ack", "irq", "ack", "irq"]);
  });

  it("edge line: one pulse, one interrupt", async () => {
    const { code, handler } = guest(false);
    using g = RealModeVm.create({ code, irqchip: true });
    g.load(0x1100, handler);
    using n = new UserspaceNotifier({ setIrqLevel: (line, level) => g.vm.setIrqLine(line, level) });
    const irq = n.irqfd({ line: LINE });
    expect(await run(g, irq, false)).toEqual(["ready", "irq", "ack"]);
  });
});
