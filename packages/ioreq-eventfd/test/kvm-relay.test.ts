// End to end, the way a vhost-user backend sees it: the guest rings its doorbell (ioeventfd, no exit), a
// "backend" that knows nothing but two eventfds wakes on the kick fd (FdWatcher on the event loop) and
// writes the call fd, and the irqfd injects the interrupt the guest's handler then reports.
import { setImmediate as tick } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventFd, FdWatcher, dup } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { KvmNotifier, kvmAvailable } from "../src/index.js";
import { Asm16, RealModeVm } from "../src/testing/index.js";

const hasKvm = process.arch === "x64" && kvmAvailable();
const DOORBELL = 0x10000;
const QUEUE = 1;

function guest(): { code: Uint8Array; handler: Uint8Array } {
  const a = new Asm16()
    .cli()
    .storeWord(0x25 * 4, 0x1100)
    .storeWord(0x25 * 4 + 2, 0)
    .movAl(0x11).outAl(0x20).movAl(0x20).outAl(0x21).movAl(0x04).outAl(0x21).movAl(0x01).outAl(0x21)
    .movAl(0xdf).outAl(0x21) // IRQ5 -> vector 0x25, only IRQ5 unmasked
    .sti()
    .movAx(DOORBELL >> 4).movDsAx()
    .movEax(QUEUE).storeEax(0); // QueueNotify(1): served by the ioeventfd, no exit
  const top = a.length;
  a.movCx(0x4000).loopSelf().movAl(2).outAl(0x12).jmpTo(top); // tick while waiting
  const handler = new Asm16().movAl(0x42).outAl(0x11).movAl(0x20).outAl(0x20).iret().bytes();
  return { code: a.bytes(), handler };
}

/** A backend that only holds the two fds, as it would after SET_VRING_KICK / SET_VRING_CALL. */
function backend(kickFd: number, call: EventFd): { kicks: number; close(): void } {
  const kick = EventFd.fromFd(kickFd);
  const state = {
    kicks: 0,
    close: () => {
      watcher.close();
      kick.close();
    },
  };
  const watcher = new FdWatcher(kickFd, () => {
    const n = kick.read();
    if (n === null) return;
    state.kicks += Number(n);
    call.write(1); // "used buffers ready"
  }).start();
  return state;
}

describe.skipIf(!hasKvm)("kick -> backend -> call through eventfds only (needs /dev/kvm on x86_64)", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  beforeEach(() => {
    leaks = fdLeakCheck();
  });
  afterEach(() => {
    expect(leaks.check()).toEqual([]);
  });

  it("the guest's doorbell write comes back as the guest's interrupt", async () => {
    const { code, handler } = guest();
    using g = RealModeVm.create({ code, irqchip: true });
    g.load(0x1100, handler);
    using n = new KvmNotifier(g.vm);
    const kick = n.ioeventfd({ addr: BigInt(DOORBELL), len: 4, datamatch: BigInt(QUEUE) });
    const call = n.irqfd({ line: 5 });
    // The backend gets its own fd for the kick eventfd, like one received over SCM_RIGHTS.
    const b = backend(dup(kick.eventfd.fd), call.eventfd);
    try {
      const seen: string[] = [];
      for (let i = 0; i < 100 && !seen.includes("irq"); i++) {
        const e = g.run();
        if (e.reason !== "io") throw new Error(`unexpected exit ${e.reason}`);
        seen.push(e.port === 0x11 ? "irq" : e.port === 0x12 ? "tick" : `port ${e.port}`);
        await tick(); // KVM_RUN returned: let the event loop run the backend's watcher
      }
      expect(seen).toContain("irq");
      expect(seen.filter((s) => s !== "tick")).toEqual(["irq"]); // no MMIO exit ever reached us
      expect(b.kicks).toBe(1);
    } finally {
      b.close();
    }
  });
});
