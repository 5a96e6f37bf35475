// The userspace relay: ioeventfd and irqfd done by this process when the hypervisor cannot do them in the
// kernel (Xen without CONFIG_XEN_PRIVCMD_EVENTFD, or doorbells the privcmd path cannot match, which is all
// but virtio-mmio QueueNotify). Hypervisor-agnostic: the device model feeds guest writes to
// `dispatchWrite` (from an ioreq, a KVM_EXIT_MMIO...) and supplies `setIrqLevel` (XEN_DMOP_set_irq_level,
// KVM_IRQ_LINE). Matching and collision rules are KVM's (virt/kvm/eventfd.c), so both paths agree.
import { EventFd, FdWatcher, PollEvents, SysError } from "@xen-vhost/vmm-sys-util";
import { NotifierError } from "./error.js";
import { nullLogger, type Logger } from "./logger.js";
import {
  checkIoeventfdOptions,
  checkIrqfdOptions,
  type IoSpace,
  type Ioeventfd,
  type IoeventfdLength,
  type IoeventfdOptions,
  type IrqTrigger,
  type Irqfd,
  type IrqfdOptions,
  type Notifier,
  type NotifierKind,
} from "./notifier.js";

export interface UserspaceNotifierOptions {
  /** What to report; "xen-userspace" for the Xen relay. */
  kind?: NotifierKind;
  /**
   * Sets an interrupt line's level (Xen: XEN_DMOP_set_irq_level; KVM: KVM_IRQ_LINE). Called on the event
   * loop; a throw is logged and the relay keeps running.
   */
  setIrqLevel: (line: number, level: 0 | 1) => void;
  logger?: Logger;
}

/** One guest write the device model was asked to emulate. */
export interface GuestWrite {
  space: IoSpace;
  addr: bigint;
  /** Access width in bytes. */
  len: number;
  /** The written value, little-endian, `len` bytes. */
  value: bigint;
}

/** virt/kvm/eventfd.c ioeventfd_check_collision: the registrations KVM answers EEXIST to. */
export function ioeventfdsCollide(
  a: Pick<Ioeventfd, "space" | "addr" | "len" | "datamatch">,
  b: Pick<Ioeventfd, "space" | "addr" | "len" | "datamatch">,
): boolean {
  return (
    a.space === b.space &&
    a.addr === b.addr &&
    (a.len === 0 || b.len === 0 || (a.len === b.len && (a.datamatch === undefined || b.datamatch === undefined || a.datamatch === b.datamatch)))
  );
}

class UserspaceIoeventfd implements Ioeventfd {
  readonly kind: NotifierKind;
  readonly addr: bigint;
  readonly len: IoeventfdLength;
  readonly datamatch: bigint | undefined;
  readonly space: IoSpace;
  readonly eventfd: EventFd;
  readonly ownsEventfd: boolean;
  readonly #onClose: (h: UserspaceIoeventfd) => void;
  // Number shadows of addr/datamatch for the allocation-free `dispatch` (-1: beyond 2^53, never matches).
  readonly #addrNum: number;
  readonly #dmLo: number;
  readonly #dmHi: number;
  #closed = false;

  constructor(kind: NotifierKind, options: IoeventfdOptions, onClose: (h: UserspaceIoeventfd) => void) {
    const { addr, len, datamatch, space } = checkIoeventfdOptions(options);
    if (options.eventfd !== undefined && !(options.eventfd instanceof EventFd)) throw new TypeError("eventfd must be an EventFd");
    this.kind = kind;
    this.addr = addr;
    this.len = len;
    this.datamatch = datamatch;
    this.space = space;
    this.#onClose = onClose;
    this.ownsEventfd = options.eventfd === undefined;
    this.#addrNum = addr <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(addr) : -1;
    this.#dmLo = datamatch === undefined ? 0 : Number(datamatch & 0xffff_ffffn);
    this.#dmHi = datamatch === undefined ? 0 : Number(datamatch >> 32n);
    this.eventfd = options.eventfd ?? new EventFd();
  }

  /** `matches` on numbers: the value as two u32 halves (lo, hi), little-endian `len` bytes. */
  matchesRaw(space: IoSpace, addr: number, len: number, lo: number, hi: number): boolean {
    if (space !== this.space || addr !== this.#addrNum) return false;
    if (this.len === 0) return true;
    if (len !== this.len) return false;
    if (this.datamatch === undefined) return true;
    if (len === 8) return lo >>> 0 === this.#dmLo && hi >>> 0 === this.#dmHi;
    return (len === 4 ? lo >>> 0 : lo & ((1 << (8 * len)) - 1)) === this.#dmLo;
  }

  /** virt/kvm/eventfd.c ioeventfd_in_range: same address; len 0 matches any width; datamatch on the value. */
  matches(w: GuestWrite): boolean {
    if (w.space !== this.space || w.addr !== this.addr) return false;
    if (this.len === 0) return true;
    if (w.len !== this.len) return false;
    if (this.datamatch === undefined) return true;
    return (w.value & ((1n << BigInt(8 * this.len)) - 1n)) === this.datamatch;
  }

  collides(o: UserspaceIoeventfd): boolean {
    return ioeventfdsCollide(this, o);
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose(this);
    if (this.ownsEventfd) this.eventfd.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

class UserspaceIrqfd implements Irqfd {
  readonly kind: NotifierKind;
  readonly line: number;
  readonly trigger: IrqTrigger;
  readonly eventfd: EventFd;
  readonly ownsEventfd: boolean;
  readonly #watcher: FdWatcher;
  readonly #setIrqLevel: (line: number, level: 0 | 1) => void;
  readonly #logger: Logger;
  readonly #onClose: (h: UserspaceIrqfd) => void;
  #asserted = false;
  #closed = false;

  constructor(
    kind: NotifierKind,
    options: IrqfdOptions,
    setIrqLevel: (line: number, level: 0 | 1) => void,
    logger: Logger,
    onClose: (h: UserspaceIrqfd) => void,
  ) {
    const { line, trigger } = checkIrqfdOptions(options);
    if (options.eventfd !== undefined && !(options.eventfd instanceof EventFd)) throw new TypeError("eventfd must be an EventFd");
    this.kind = kind;
    this.line = line;
    this.trigger = trigger;
    this.#setIrqLevel = setIrqLevel;
    this.#logger = logger;
    this.#onClose = onClose;
    this.ownsEventfd = options.eventfd === undefined;
    this.eventfd = options.eventfd ?? new EventFd();
    try {
      // The watcher reads the counter in C (drainEventfd) and only when poll says readable: a caller's
      // eventfd may be blocking (its flags belong to the shared file description, so we do not change them).
      this.#watcher = new FdWatcher(this.eventfd.fd, (events, errno, count) => this.#signalled(events, errno, count), {
        onError: (err) => logger.error("irqfd relay failed", { line, err }),
        drainEventfd: true,
      }).start(PollEvents.READABLE);
    } catch (err) {
      if (this.ownsEventfd) this.eventfd.close();
      throw err;
    }
  }

  #signalled(events: number, errno: number, count: number): void {
    if (errno !== 0) {
      this.#logger.error("irqfd relay poll error", { line: this.line, errno });
      return;
    }
    if ((events & PollEvents.READABLE) === 0 || count === 0) return;
    this.#assert();
  }

  /** What a signal does: an edge pulses the line, a level line goes up unless it is already. */
  #assert(): void {
    if (this.trigger === "edge") {
      this.#setIrqLevel(this.line, 1);
      this.#setIrqLevel(this.line, 0);
    } else if (!this.#asserted) {
      this.#setIrqLevel(this.line, 1);
      this.#asserted = true;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Signals the line from this process. On this path the relay is this process, so the line is set here, in
   * the caller's callback, rather than by writing the eventfd and setting it on the watcher's next event-loop
   * turn (an eventfd write, a loop wake-up and a read saved per interrupt). A level line already up stays up;
   * a failing `setIrqLevel` is logged, as on the watcher path. Writers of the eventfd itself (a back-end given
   * it as its call fd) still go through the watcher.
   */
  raise(): void {
    if (this.#closed) throw SysError.closed("Irqfd");
    try {
      this.#assert();
    } catch (err) {
      this.#logger.error("irqfd relay failed", { line: this.line, err });
    }
  }

  /** Level lines: lowers the line now (the hypervisor never does on this path). */
  deassert(): void {
    if (this.#closed) throw SysError.closed("Irqfd");
    if (this.trigger !== "level" || !this.#asserted) return;
    // A signal still queued in the eventfd (written by another process) is left alone: it may be a new
    // event that arrived after the guest's acknowledgement, and re-asserting for it costs at most one
    // spurious interrupt.
    this.#asserted = false;
    this.#setIrqLevel(this.line, 0);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose(this);
    this.#watcher.close();
    try {
      if (this.#asserted) {
        this.#asserted = false;
        this.#setIrqLevel(this.line, 0);
      }
    } finally {
      if (this.ownsEventfd) this.eventfd.close();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * `Notifier` done in this process. ioeventfd: a doorbell table the device model consults with
 * `dispatchWrite` for every guest write it handles; a match signals the eventfd and the device model
 * completes the access without emulating it. irqfd: an FdWatcher on the eventfd drives `setIrqLevel`.
 * `onResample` is never called: on this path the line drops only via `deassert()`.
 */
export class UserspaceNotifier implements Notifier {
  readonly kind: NotifierKind;
  readonly #setIrqLevel: (line: number, level: 0 | 1) => void;
  readonly #logger: Logger;
  readonly #doorbells = new Set<UserspaceIoeventfd>();
  /** `#doorbells` as an array, rebuilt on (un)registration: `dispatch` walks it without an iterator. */
  #table: UserspaceIoeventfd[] = [];
  readonly #irqfds = new Set<UserspaceIrqfd>();
  #closed = false;

  constructor(options: UserspaceNotifierOptions) {
    if (typeof options?.setIrqLevel !== "function") throw new TypeError("setIrqLevel must be a function");
    this.kind = options.kind ?? "xen-userspace";
    this.#setIrqLevel = options.setIrqLevel;
    this.#logger = options.logger ?? nullLogger;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #open(): void {
    if (this.#closed) throw SysError.closed("UserspaceNotifier");
  }

  /** @throws NotifierError `AddressInUse` for a registration KVM would refuse with EEXIST. */
  ioeventfd(options: IoeventfdOptions): Ioeventfd {
    this.#open();
    const h = new UserspaceIoeventfd(this.kind, options, (x) => {
      if (this.#doorbells.delete(x)) this.#table = [...this.#doorbells];
    });
    for (const o of this.#doorbells) {
      if (o.collides(h)) {
        h.close();
        throw new NotifierError(
          "AddressInUse",
          `ioeventfd ${h.space} 0x${h.addr.toString(16)}/${h.len} collides with an existing registration`,
        );
      }
    }
    this.#doorbells.add(h);
    this.#table = [...this.#doorbells];
    return h;
  }

  irqfd(options: IrqfdOptions): Irqfd {
    this.#open();
    for (const o of this.#irqfds) {
      if (options?.eventfd !== undefined && o.eventfd === options.eventfd)
        throw new NotifierError("EventfdInUse", `eventfd already relays line ${o.line}`);
    }
    const h = new UserspaceIrqfd(this.kind, options, this.#setIrqLevel, this.#logger, (x) => this.#irqfds.delete(x));
    this.#irqfds.add(h);
    return h;
  }

  /**
   * Offers a guest write to the doorbells. True if one matched (its eventfd was signalled, the device model
   * must not emulate the write further); false if the write is the device model's to handle.
   */
  dispatchWrite(write: GuestWrite): boolean {
    this.#open();
    for (const h of this.#doorbells) {
      if (h.matches(write)) {
        h.eventfd.write(1);
        return true;
      }
    }
    return false;
  }

  /**
   * `dispatchWrite` for a hot loop: the address as a number and the value as two u32 halves, so a guest
   * write costs no allocation (the Xen ioreq loop calls this for every write). False once closed.
   */
  dispatch(space: IoSpace, addr: number, len: number, valueLo: number, valueHi: number): boolean {
    if (this.#closed) return false;
    const table = this.#table;
    for (let i = 0; i < table.length; i++) {
      const h = table[i]!;
      if (h.matchesRaw(space, addr, len, valueLo, valueHi)) {
        // write(1), not signal(): a caller's EventFd subclass may count the writes (xen-vhost-master's kicks)
        h.eventfd.write(1);
        return true;
      }
    }
    return false;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const errors: unknown[] = [];
    for (const h of [...this.#doorbells, ...this.#irqfds]) {
      try {
        h.close();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "UserspaceNotifier: several handles failed to close");
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
