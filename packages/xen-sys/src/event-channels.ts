// Event channels on Node's event loop: an EventChannelDevice watched with the native FdWatcher, pending ports
// delivered as `event` events. Owns the ports it binds and unbinds them on close.
import { EventEmitter } from "eventemitter3";
import { FdWatcher, PollEvents, errnoName } from "@xen-vhost/vmm-sys-util";
import { XenError } from "./error.js";
import { silentLogger, type Logger } from "./logger.js";
import type { EventChannelDevice } from "./transport.js";

export interface EventChannelsEvents {
  /** A bound local port fired (already unmasked again unless `autoUnmask: false`). */
  event: [port: number];
  /** The device was closed, by `close()` or because polling failed (`cause`). */
  close: [cause?: Error];
}

export interface EventChannelsOptions {
  /** Unmask each port as soon as it is read (default true), as a device model that handles every kick does. */
  autoUnmask?: boolean;
  logger?: Logger;
}

/** Ports read per read(2): a wake-up rarely has more than one pending per vCPU. */
const BATCH = 64;

export class EventChannels extends EventEmitter<EventChannelsEvents> implements Disposable {
  readonly #dev: EventChannelDevice;
  readonly #autoUnmask: boolean;
  readonly #log: Logger;
  readonly #bound = new Set<number>();
  #watcher: FdWatcher | undefined;
  /** One read buffer for the life of the device, and a view of its first n ports for each n (unmask). */
  readonly #pending = new Uint32Array(BATCH);
  readonly #heads: Uint32Array[] = [];

  constructor(device: EventChannelDevice, options: EventChannelsOptions = {}) {
    super();
    this.#dev = device;
    this.#autoUnmask = options.autoUnmask ?? true;
    this.#log = options.logger ?? silentLogger;
    for (let n = 0; n <= BATCH; n++) this.#heads.push(this.#pending.subarray(0, n));
    this.#watcher = new FdWatcher(device.fd, (events, errno) => this.#onReady(events, errno), {
      onError: (err) => this.#log.error("evtchn: event listener threw", { err }),
    }).start(PollEvents.READABLE);
  }

  get closed(): boolean {
    return this.#watcher === undefined;
  }

  /** The local ports bound through this object. */
  get ports(): ReadonlySet<number> {
    return this.#bound;
  }

  #check(): EventChannelDevice {
    if (!this.#watcher) throw XenError.closed("event channels");
    return this.#dev;
  }

  /** Binds a local port to `remotePort` of `domid` (IOCTL_EVTCHN_BIND_INTERDOMAIN). */
  bindInterdomain(domid: number, remotePort: number): number {
    const port = this.#check().bindInterdomain(domid, remotePort);
    this.#bound.add(port);
    return port;
  }

  /** Allocates a port `domid` can bind to (IOCTL_EVTCHN_BIND_UNBOUND_PORT). */
  bindUnboundPort(domid: number): number {
    const port = this.#check().bindUnboundPort(domid);
    this.#bound.add(port);
    return port;
  }

  /** Binds a virtual IRQ (IOCTL_EVTCHN_BIND_VIRQ). */
  bindVirq(virq: number): number {
    const port = this.#check().bindVirq(virq);
    this.#bound.add(port);
    return port;
  }

  unbind(port: number): void {
    this.#check().unbind(port);
    this.#bound.delete(port);
  }

  notify(port: number): void {
    this.#check().notify(port);
  }

  restrict(domid: number): void {
    this.#check().restrict(domid);
  }

  /** Unmasks ports (only needed with `autoUnmask: false`). */
  unmask(ports: readonly number[] | Uint32Array): void {
    this.#check().unmask(ports);
  }

  #onReady(_events: number, errno: number): void {
    if (errno !== 0) {
      this.#close(new XenError("OperationFailed", `poll evtchn: ${errnoName(errno)}`, { op: "poll evtchn", code: errnoName(errno), errno }));
      return;
    }
    // The per-event path of every device model: no allocation (one buffer, preallocated views) and, when a
    // read returns less than a full buffer, no second read(2) just to see EAGAIN: the fd is polled
    // level-triggered, so ports that become pending later wake the loop again.
    const dev = this.#dev;
    for (;;) {
      let ports: Uint32Array;
      try {
        ports = dev.readPendingInto !== undefined ? this.#heads[dev.readPendingInto(this.#pending)]! : dev.readPending(BATCH);
      } catch (err) {
        this.#close(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      const n = ports.length;
      if (n === 0) return;
      if (this.#autoUnmask) {
        try {
          dev.unmask(ports);
        } catch (err) {
          this.#close(err instanceof Error ? err : new Error(String(err)));
          return;
        }
      }
      for (let i = 0; i < n; i++) {
        const port = ports[i]!;
        try {
          this.emit("event", port);
        } catch (err) {
          // One throwing listener must not stop delivery of the other ports.
          this.#log.error("evtchn: event listener threw", { port, err });
        }
      }
      if (!this.#watcher || n < BATCH) return;
    }
  }

  #close(cause?: Error): void {
    const w = this.#watcher;
    if (!w) return;
    this.#watcher = undefined;
    w.close();
    for (const port of this.#bound) {
      try {
        this.#dev.unbind(port);
      } catch {
        // closing the device releases the port as well
      }
    }
    this.#bound.clear();
    this.#dev.close();
    this.emit("close", cause);
  }

  /** Unbinds every port, stops watching and closes the device. Idempotent. */
  close(): void {
    this.#close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
