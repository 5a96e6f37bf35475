// irqfd against a real KVM guest with the in-kernel irqchip (PIC + IOAPIC + LAPIC). The guest programs the
// master 8259 (IRQ5 -> vector 0x25), installs a real-mode IVT entry for vector 0x25, enables interrupts and
// spins; its handler reports itself with `out 0x11`, EOIs the PIC, reports again with `out 0x13`, and IRETs.
// With an in-kernel irqchip HLT does not exit to userspace, so the guest never halts: it busy-waits and
// reports "tick" (`out 0x12`) between waits, which bounds every KVM_RUN and lets a missing interrupt show
// as a run of ticks instead of a hung test. KVM_RUN runs on the test's main thread.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { KvmNotifier, NotifierError, kvmAvailable, type KvmExit } from "../src/index.js";
import { Asm16, RealModeVm } from "../src/testing/index.js";

const hasKvm = process.arch === "x64" && kvmAvailable();

const LINE = 5; // GSI 5: ISA IRQ5, routed to PIC master input 5 (and IOAPIC pin 5, masked at reset)
const VECTOR = 0x25;
const HANDLER = 0x1100;
const PORT_READY = 0x10;
const PORT_IN_HANDLER = 0x11;
const PORT_TICK = 0x12;
const PORT_AFTER_EOI = 0x13;

/** The guest described at the top. `level` sets the ELCR bit so the PIC treats IRQ5 as level-triggered. */
function guest(level: boolean): { code: Uint8Array; handler: Uint8Array } {
  const a = new Asm16()
    .cli()
    .storeWord(VECTOR * 4, HANDLER) // IVT[0x25] = 0000:HANDLER
    .storeWord(VECTOR * 4 + 2, 0)
    // 8259 master init: ICW1 (edge, cascade, ICW4), ICW2 vector base 0x20, ICW3 slave on IR2, ICW4 8086 mode
    .movAl(0x11).outAl(0x20)
    .movAl(0x20).outAl(0x21)
    .movAl(0x04).outAl(0x21)
    .movAl(0x01).outAl(0x21)
    .movAl(0xff & ~(1 << LINE)).outAl(0x21); // OCW1: unmask IRQ5 only
  if (level) a.movDx(0x4d0).movAl(1 << LINE).outDxAl(); // ELCR1: IRQ5 level-sensitive
  a.movAl(1).outAl(PORT_READY).sti();
  const top = a.length;
  a.movCx(0x4000).loopSelf().movAl(2).outAl(PORT_TICK).jmpTo(top);
  const handler = new Asm16()
    .movAl(0x42).outAl(PORT_IN_HANDLER)
    .movAl(0x20).outAl(0x20) // OCW2: non-specific EOI
    .movAl(0x43).outAl(PORT_AFTER_EOI)
    .iret()
    .bytes();
  return { code: a.bytes(), handler };
}

function boot(level = false): RealModeVm {
  const { code, handler } = guest(level);
  const g = RealModeVm.create({ code, irqchip: true });
  g.load(HANDLER, handler);
  return g;
}

/**
 * The guest's port writes by name ("ready", "irq", "eoi", "tick"), running until `ticks` ticks in a row
 * were seen after the last other event (so a late injection still leaves `ticks` quiet ticks after it).
 */
function trace(g: RealModeVm, ticks: number, onPort: (port: number) => void = () => {}): string[] {
  const names: Record<number, string> = { [PORT_READY]: "ready", [PORT_IN_HANDLER]: "irq", [PORT_TICK]: "tick", [PORT_AFTER_EOI]: "eoi" };
  const out: string[] = [];
  let seen = 0;
  g.runUntil((e: KvmExit) => {
    if (e.reason !== "io" || e.direction !== "out") {
      out.push(e.reason);
      return true;
    }
    out.push(names[e.port] ?? `port 0x${e.port.toString(16)}`);
    onPort(e.port);
    seen = e.port === PORT_TICK ? seen + 1 : 0;
    return seen >= ticks;
  }, 200);
  return out;
}

/** Drops ticks that came before the interrupt: irqfd injection of a PIC line runs from a kernel work item. */
function compact(t: string[]): string {
  return t.join(" ").replace(/(tick )+(?=irq)/g, "");
}

describe.skipIf(!hasKvm)("KvmNotifier.irqfd with a real guest (needs /dev/kvm on x86_64)", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    expect(leaks.check()).toEqual([]);
  });

  it("control: without an eventfd write the handler never runs", () => {
    using g = boot();
    using n = new KvmNotifier(g.vm);
    n.irqfd({ line: LINE });
    expect(trace(g, 5).join(" ")).toBe("ready tick tick tick tick tick");
  });

  it("edge: writing the eventfd injects the interrupt and the guest's handler runs once", () => {
    using g = boot();
    using n = new KvmNotifier(g.vm);
    const irq = n.irqfd({ line: LINE });
    expect(irq.kind).toBe("kvm");
    expect(irq.trigger).toBe("edge");
    const t = trace(g, 5, (port) => {
      if (port === PORT_READY) irq.eventfd.write(1);
    });
    expect(compact(t)).toBe("ready irq eoi tick tick tick tick tick");
  });

  it("edge: a second write is a second interrupt", () => {
    using g = boot();
    using n = new KvmNotifier(g.vm);
    const irq = n.irqfd({ line: LINE });
    let raised = 0;
    const t = trace(g, 6, (port) => {
      if (port === PORT_READY || (port === PORT_TICK && raised === 1)) {
        raised++;
        irq.raise();
      }
    });
    expect(t.filter((x) => x === "irq")).toHaveLength(2);
  });

  it("a caller's eventfd (a vhost-user call fd) injects, and stays open after close", () => {
    using call = new EventFd();
    using g = boot();
    {
      using n = new KvmNotifier(g.vm);
      const irq = n.irqfd({ line: LINE, eventfd: call });
      expect(irq.ownsEventfd).toBe(false);
      const t = trace(g, 3, (port) => {
        if (port === PORT_READY) call.write(1);
      });
      expect(t).toContain("irq");
    }
    expect(call.closed).toBe(false);
  });

  it("close() deassigns: later eventfd writes no longer interrupt the guest", () => {
    using call = new EventFd();
    using g = boot();
    using n = new KvmNotifier(g.vm);
    n.irqfd({ line: LINE, eventfd: call }).close();
    const t = trace(g, 5, (port) => {
      if (port === PORT_READY) call.write(1);
    });
    expect(t).not.toContain("irq");
  });

  it("level: the line is lowered at EOI and the resample eventfd signalled; no second interrupt", () => {
    using g = boot(true);
    using n = new KvmNotifier(g.vm);
    const irq = n.irqfd({ line: LINE, trigger: "level" });
    const resamples: (bigint | null)[] = [];
    const t = trace(g, 5, (port) => {
      if (port === PORT_READY) {
        expect(irq.resampleEventfd!.read()).toBeNull();
        irq.raise();
      }
      // The guest's EOI (an in-kernel PIC write) ran KVM's ack notifier before this exit.
      if (port === PORT_AFTER_EOI) resamples.push(irq.resampleEventfd!.read());
    });
    expect(compact(t)).toBe("ready irq eoi tick tick tick tick tick");
    expect(resamples).toEqual([1n]);
  });

  it("level: re-asserting after resample (condition still pending) interrupts again", () => {
    using g = boot(true);
    using n = new KvmNotifier(g.vm);
    const irq = n.irqfd({ line: LINE, trigger: "level" });
    let pending = 2; // the device model has two events to deliver, one per interrupt
    const t = trace(g, 6, (port) => {
      if (port === PORT_READY) irq.raise();
      if (port === PORT_AFTER_EOI && irq.resampleEventfd!.read() !== null && --pending > 0) irq.raise();
    });
    expect(t.filter((x) => x === "irq")).toHaveLength(2);
  });

  it("level: onResample runs on the event loop after the guest's EOI", async () => {
    using g = boot(true);
    using n = new KvmNotifier(g.vm);
    let resampled!: () => void;
    const done = new Promise<void>((resolve) => (resampled = resolve));
    const irq = n.irqfd({ line: LINE, trigger: "level", onResample: () => resampled() });
    irq.deassert(); // a no-op on KVM, allowed at any time
    const t = trace(g, 2, (port) => {
      if (port === PORT_READY) irq.raise();
    });
    expect(t).toContain("eoi");
    await done;
  });

  it("an eventfd already bound as irqfd is EventfdInUse, and nothing leaks", () => {
    using call = new EventFd();
    using g = boot();
    using n = new KvmNotifier(g.vm);
    n.irqfd({ line: LINE, eventfd: call });
    expect(() => n.irqfd({ line: 6, eventfd: call })).toThrow(
      expect.objectContaining({ name: "NotifierError", kind: "EventfdInUse" }) as Error,
    );
  });

  it("irqfd without an in-kernel irqchip is Unsupported", () => {
    using g = RealModeVm.create({ code: new Asm16().hlt().bytes() });
    using n = new KvmNotifier(g.vm);
    let err: unknown;
    try {
      n.irqfd({ line: LINE });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NotifierError);
    expect(err).toMatchObject({ kind: "Unsupported", cause: { code: "EINVAL" } });
    expect((err as NotifierError).canFallBack).toBe(true);
  });
});
