// EventChannels on Node's loop with the real FdWatcher. The device is a test double whose readiness is a real
// eventfd (the kernel's /dev/xen/evtchn exists only in a Xen domain); it checks the delivery/unmask/unbind logic.
import { describe, expect, it } from "vitest";
import { EventFd } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { EventChannels } from "./event-channels.js";
import type { EventChannelDevice } from "./transport.js";

class FakeEvtchn implements EventChannelDevice {
  readonly efd = new EventFd();
  pending: number[] = [];
  unmasked: number[] = [];
  unbound: number[] = [];
  notified: number[] = [];
  next = 10;
  get fd(): number { return this.efd.fd; }
  get closed(): boolean { return this.efd.closed; }
  fire(...ports: number[]): void { this.pending.push(...ports); this.efd.write(1); }
  bindInterdomain(): number { return this.next++; }
  bindUnboundPort(): number { return this.next++; }
  bindVirq(): number { return this.next++; }
  unbind(port: number): void { this.unbound.push(port); }
  notify(port: number): void { this.notified.push(port); }
  restrict(): void {}
  readPending(max = 64): Uint32Array {
    const out = this.pending.splice(0, max);
    if (this.pending.length === 0) this.efd.read();
    return Uint32Array.from(out);
  }
  unmask(ports: readonly number[] | Uint32Array): void { this.unmasked.push(...ports); }
  close(): void { this.efd.close(); }
  [Symbol.dispose](): void { this.close(); }
}

describe("EventChannels", () => {
  it("delivers pending ports as events, unmasks them, unbinds owned ports on close", async () => {
    const leaks = fdLeakCheck();
    const dev = new FakeEvtchn();
    const ec = new EventChannels(dev);
    const a = ec.bindInterdomain(7, 3);
    const b = ec.bindUnboundPort(7);
    const got: number[] = [];
    const done = new Promise<void>((resolve) => ec.on("event", (p) => { got.push(p); if (got.length === 3) resolve(); }));
    dev.fire(a, b, a);
    await done;
    expect(got).toEqual([a, b, a]);
    expect(dev.unmasked).toEqual([a, b, a]);
    ec.notify(a);
    expect(dev.notified).toEqual([a]);
    const closed = new Promise<unknown>((r) => ec.on("close", r));
    ec.close();
    ec.close();
    expect(await closed).toBeUndefined();
    expect(dev.unbound.sort()).toEqual([a, b].sort());
    expect(dev.closed).toBe(true);
    expect(() => ec.notify(a)).toThrow(expect.objectContaining({ kind: "Closed" }));
    expect(leaks.check()).toEqual([]);
  });

  it("a throwing listener does not stop delivery; autoUnmask:false leaves unmasking to the caller", async () => {
    const dev = new FakeEvtchn();
    const errors: unknown[] = [];
    const ec = new EventChannels(dev, {
      autoUnmask: false,
      logger: { debug() {}, info() {}, warn() {}, error: (_m, f) => errors.push(f) },
    });
    const got: number[] = [];
    ec.on("event", (p) => { if (p === 1) throw new Error("listener bug"); });
    const done = new Promise<void>((resolve) => ec.on("event", (p) => { got.push(p); if (p === 2) resolve(); }));
    dev.fire(1, 2);
    await done;
    expect(got).toEqual([2]);
    expect(errors).toHaveLength(1);
    expect(dev.unmasked).toEqual([]);
    ec.unmask([1, 2]);
    expect(dev.unmasked).toEqual([1, 2]);
    ec.close();
  });
});

/** A device with the allocation-free read: the buffer EventChannels passes is filled in place. */
class FakeEvtchnInto extends FakeEvtchn {
  buffers = new Set<Uint32Array>();
  reads = 0;
  override readPending(): Uint32Array {
    throw new Error("readPending must not be used when readPendingInto exists");
  }
  readPendingInto(buffer: Uint32Array): number {
    this.reads++;
    this.buffers.add(buffer);
    const out = this.pending.splice(0, buffer.length);
    if (this.pending.length === 0) this.efd.read();
    buffer.set(out);
    return out.length;
  }
}

describe("EventChannels with readPendingInto", () => {
  it("reuses one buffer, reads once per wake-up below a full batch, and comes back for more after a full one", async () => {
    const dev = new FakeEvtchnInto();
    const ec = new EventChannels(dev);
    const got: number[] = [];
    let want = 0;
    let resolve: () => void = () => {};
    ec.on("event", (p) => { got.push(p); if (got.length === want) resolve(); });
    const wait = (n: number) => new Promise<void>((r) => { want = n; resolve = r; });

    let done = wait(2);
    dev.fire(3, 4);
    await done;
    expect(got).toEqual([3, 4]);
    expect(dev.unmasked).toEqual([3, 4]);
    expect(dev.reads).toBe(1); // no second read(2) just to see EAGAIN

    const many = Array.from({ length: 70 }, (_, i) => 100 + i);
    done = wait(72);
    dev.fire(...many);
    await done;
    expect(got.slice(2)).toEqual(many);
    expect(dev.reads).toBe(3); // 64, then the remaining 6
    expect(dev.buffers.size).toBe(1);
    ec.close();
  });
});
