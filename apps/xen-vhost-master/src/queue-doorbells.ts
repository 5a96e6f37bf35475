// The QueueNotify doorbells of one device (one ioeventfd per queue at base + 0x50, datamatch = queue index),
// with a per-queue kick count. Where the doorbell is relayed in userspace (the notifier's ioreq loop writes
// the eventfd), every relayed kick is counted here, by handing the notifier an eventfd that counts its own
// writes. Where privcmd completes the doorbell in the kernel (Linux >= 6.7), the kick never reaches this
// process: those queues report `offloaded` and their kicks are not counted (the per-guest ioreq statistics'
// `spurious` count is the closest observable on real Xen, where the kernel and the evtchn device share the
// port's interrupt).
import { EventFd } from "@xen-vhost/vmm-sys-util";
import type { Ioeventfd, Notifier } from "@xen-vhost/ioreq-eventfd";

/** virtio-mmio QueueNotify: the doorbell every queue's ioeventfd sits on (datamatch = queue index). */
export const QUEUE_NOTIFY = 0x50n;

/** An eventfd that counts the writes made through this object (the userspace relay's kicks). */
export class CountingEventFd extends EventFd {
  count = 0;

  override write(value: number | bigint = 1): boolean {
    this.count++;
    return super.write(value);
  }
}

interface Doorbell {
  handle: Ioeventfd;
  eventfd: CountingEventFd;
}

export class QueueDoorbells implements Disposable {
  readonly #notifier: Notifier;
  readonly #base: bigint;
  readonly #queues = new Map<number, Doorbell>();
  /** Kicks of doorbells already closed (a queue re-created after a reset keeps its history). */
  #retired = 0;
  #closed = false;

  constructor(notifier: Notifier, base: bigint) {
    this.#notifier = notifier;
    this.#base = base;
  }

  /** The kick eventfd of `queue`, registering its doorbell on first use. */
  eventfd(queue: number): { eventfd: EventFd; kind: Ioeventfd["kind"]; created: boolean } {
    const d = this.#queues.get(queue);
    if (d) return { eventfd: d.eventfd, kind: d.handle.kind, created: false };
    const eventfd = new CountingEventFd();
    try {
      const handle = this.#notifier.ioeventfd({ addr: this.#base + QUEUE_NOTIFY, len: 4, datamatch: BigInt(queue), eventfd });
      this.#queues.set(queue, { handle, eventfd });
      return { eventfd, kind: handle.kind, created: true };
    } catch (err) {
      eventfd.close();
      throw err;
    }
  }

  /** Kicks relayed by this process since the device started (kernel-offloaded ones excluded). */
  get kicks(): number {
    let n = this.#retired;
    for (const d of this.#queues.values()) n += d.eventfd.count;
    return n;
  }

  /** Queues whose doorbell the kernel completes (their kicks are invisible here). */
  get offloaded(): number {
    let n = 0;
    for (const d of this.#queues.values()) if (d.handle.kind === "xen-kernel" || d.handle.kind === "kvm") n++;
    return n;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Unregisters every doorbell and closes the eventfds (the notifier borrowed them). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const d of this.#queues.values()) {
      this.#retired += d.eventfd.count;
      try {
        d.handle.close();
      } finally {
        d.eventfd.close();
      }
    }
    this.#queues.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
