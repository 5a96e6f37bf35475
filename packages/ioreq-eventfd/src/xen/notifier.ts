// `Notifier` over a Xen ioreq server. Two paths, chosen per handle and reported in its `kind`:
// - xen-kernel: privcmd IOCTL_PRIVCMD_IOEVENTFD / IOCTL_PRIVCMD_IRQFD (Linux >= 6.7, CONFIG_XEN_PRIVCMD_EVENTFD).
//   The kernel's ioeventfd only knows virtio-mmio QueueNotify: it completes a write when
//   addr == base + 0x50 (VIRTIO_MMIO_QUEUE_NOTIFY), size == addr_len and (data & 0xffff) == vq
//   (drivers/xen/privcmd.c ioeventfd_interrupt). So a doorbell registered at A with datamatch Q < 2^16 goes
//   to the kernel as base = A - 0x50, vq = Q. Its irqfd issues a stored DM_OP (set level 1) per signal and
//   never lowers the line, so only level irqfds use it; deassert() lowers from userspace.
// - xen-userspace: UserspaceNotifier's doorbell table, fed from the ioreq loop for every guest write (no
//   allocation per write), and an FdWatcher per irqfd issuing the level DM_OP.
// Capabilities are probed once; a kernel registration that fails falls back to userspace for that handle
// (and, on Unsupported, for all later ones).
import { EventFd, SysError } from "@xen-vhost/vmm-sys-util";
import { dmOps, type Xen } from "@xen-vhost/xen-sys";
import { NotifierError, classifyXenError } from "../error.js";
import { nullLogger, type Logger } from "../logger.js";
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
} from "../notifier.js";
import { UserspaceNotifier, ioeventfdsCollide } from "../userspace.js";
import type { IoHandler } from "./io-range.js";
import type { IoRangeHandle, IoreqServer } from "./ioreq-server.js";

/** linux/virtio_mmio.h VIRTIO_MMIO_QUEUE_NOTIFY: the only register privcmd's kernel ioeventfd matches. */
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x50n;

/**
 * How an interrupt line number becomes a level DM_OP (xen/include/public/hvm/dm_op.h):
 * - `set_irq_level`: Arm, line = SPI number (XEN_DMOP_set_irq_level);
 * - `set_isa_irq_level`: x86, line = ISA IRQ 0..15 (XEN_DMOP_set_isa_irq_level);
 * - a function returning the xen_dm_op bytes, e.g. for XEN_DMOP_set_pci_intx_level:
 *   `(line, level) => dmOps.setPciIntxLevel({ segment: 0, bus: 0, device: line }, 0, level)`.
 */
export type XenIrqMethod = "set_irq_level" | "set_isa_irq_level" | ((line: number, level: 0 | 1) => Uint8Array);

export interface XenNotifierOptions {
  /** Default: `set_irq_level` when the hypervisor is arm64, `set_isa_irq_level` on x86_64. */
  irq?: XenIrqMethod;
  /** Use privcmd's in-kernel ioeventfd/irqfd where they apply (default true for both). */
  kernel?: boolean | { ioeventfd?: boolean; irqfd?: boolean };
  logger?: Logger;
}

/** Reads nothing and ignores writes: the range a doorbell needs so Xen forwards its writes at all. */
const DOORBELL_ONLY: IoHandler = {
  read: () => 0,
  write: () => {},
};

class XenIoeventfd implements Ioeventfd {
  readonly kind: NotifierKind;
  readonly addr: bigint;
  readonly len: IoeventfdLength;
  readonly datamatch: bigint | undefined;
  readonly space: IoSpace;
  readonly eventfd: EventFd;
  readonly ownsEventfd: boolean;
  readonly #undo: () => void;
  #closed = false;

  constructor(
    kind: NotifierKind,
    o: { addr: bigint; len: IoeventfdLength; datamatch: bigint | undefined; space: IoSpace },
    eventfd: EventFd,
    owns: boolean,
    undo: () => void,
  ) {
    this.kind = kind;
    this.addr = o.addr;
    this.len = o.len;
    this.datamatch = o.datamatch;
    this.space = o.space;
    this.eventfd = eventfd;
    this.ownsEventfd = owns;
    this.#undo = undo;
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#undo();
    } finally {
      if (this.ownsEventfd) this.eventfd.close();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

class XenIrqfd implements Irqfd {
  readonly kind: NotifierKind;
  readonly line: number;
  readonly trigger: IrqTrigger;
  readonly eventfd: EventFd;
  readonly ownsEventfd: boolean;
  readonly #deassert: () => void;
  readonly #undo: () => void;
  #closed = false;

  constructor(kind: NotifierKind, line: number, trigger: IrqTrigger, eventfd: EventFd, owns: boolean, deassert: () => void, undo: () => void) {
    this.kind = kind;
    this.line = line;
    this.trigger = trigger;
    this.eventfd = eventfd;
    this.ownsEventfd = owns;
    this.#deassert = deassert;
    this.#undo = undo;
  }

  get closed(): boolean {
    return this.#closed;
  }

  raise(): void {
    if (this.#closed) throw SysError.closed("Irqfd");
    this.eventfd.write(1);
  }

  deassert(): void {
    if (this.#closed) throw SysError.closed("Irqfd");
    this.#deassert();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#undo();
    } finally {
      if (this.ownsEventfd) this.eventfd.close();
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The Notifier of one Xen guest, over its IoreqServer (borrowed: closing the notifier leaves the server
 * running; closing the server closes the notifier first). Doorbells must lie in guest ranges Xen forwards
 * to this server: if no registered range covers one, the notifier maps a doorbell-only range for it
 * (reads 0, other writes ignored) and unmaps it with the last doorbell there.
 */
export class XenNotifier implements Notifier {
  readonly kind: NotifierKind;
  readonly #server: IoreqServer;
  readonly #xen: Xen;
  readonly #user: UserspaceNotifier;
  readonly #log: Logger;
  readonly #encode: (line: number, level: 0 | 1) => Uint8Array;
  /** Cached [xen_dm_op] buffer lists per (line, level): set_irq_level has no OUT fields, so reuse is safe. */
  readonly #levelOps = new Map<number, readonly Uint8Array[]>();
  readonly #doorbells = new Set<XenIoeventfd>();
  readonly #irqfds = new Set<XenIrqfd>();
  readonly #autoRanges = new Map<string, { handle: IoRangeHandle; refs: number }>();
  readonly #detach: () => void;
  #kernelIoeventfd: boolean;
  #kernelIrqfd: boolean;
  #closed = false;

  constructor(server: IoreqServer, options: XenNotifierOptions = {}) {
    if (server.closed) throw SysError.closed("IoreqServer");
    this.#server = server;
    this.#xen = server.xen;
    this.#log = options.logger ?? nullLogger;
    const irq = options.irq ?? (server.xen.transport.arch === "arm64" ? "set_irq_level" : "set_isa_irq_level");
    this.#encode =
      irq === "set_irq_level"
        ? (line, level) => dmOps.setIrqLevel(line, level)
        : irq === "set_isa_irq_level"
          ? (line, level) => dmOps.setIsaIrqLevel(line, level)
          : typeof irq === "function"
            ? irq
            : (() => {
                throw new RangeError(`irq method ${String(irq)}`);
              })();
    const want = options.kernel ?? true;
    const wantIoeventfd = typeof want === "boolean" ? want : (want.ioeventfd ?? true);
    const wantIrqfd = typeof want === "boolean" ? want : (want.irqfd ?? true);
    let caps = { ioeventfd: false, irqfd: false };
    if (wantIoeventfd || wantIrqfd) {
      try {
        caps = server.xen.capabilities();
      } catch (err) {
        this.#log.info("privcmd eventfd capabilities could not be probed; userspace relay only", { err });
      }
    }
    this.#kernelIoeventfd = wantIoeventfd && caps.ioeventfd;
    this.#kernelIrqfd = wantIrqfd && caps.irqfd;
    this.kind = this.#kernelIoeventfd || this.#kernelIrqfd ? "xen-kernel" : "xen-userspace";
    this.#user = new UserspaceNotifier({
      kind: "xen-userspace",
      setIrqLevel: (line, level) => this.#setLevel(line, level),
      logger: this.#log,
    });
    const user = this.#user;
    this.#detach = server.attachDoorbells({
      dispatch: (space, addr, size, lo, hi) => user.dispatch(space, addr, size, lo, hi),
      serverClosing: () => this.close(),
    });
    this.#log.info("xen notifier", { domid: server.domid, kind: this.kind, kernelIoeventfd: this.#kernelIoeventfd, kernelIrqfd: this.#kernelIrqfd });
  }

  get closed(): boolean {
    return this.#closed;
  }

  #open(): void {
    if (this.#closed) throw SysError.closed("XenNotifier");
  }

  /** Issues the level DM_OP for `line` (cached bytes; the hot path allocates nothing of ours). */
  #setLevel(line: number, level: 0 | 1): void {
    const key = line * 2 + level;
    let bufs = this.#levelOps.get(key);
    if (bufs === undefined) {
      bufs = [this.#encode(line, level)];
      this.#levelOps.set(key, bufs);
    }
    try {
      this.#xen.transport.dmOp(this.#server.domid, bufs);
    } catch (err) {
      throw classifyXenError(err, `set level ${level} on irq ${line}`);
    }
  }

  /**
   * @throws NotifierError `AddressInUse` (same addr/len/datamatch already registered, or the range Xen
   *   would need to forward is another server's).
   */
  ioeventfd(options: IoeventfdOptions): Ioeventfd {
    this.#open();
    const o = checkIoeventfdOptions(options);
    if (options.eventfd !== undefined && !(options.eventfd instanceof EventFd)) throw new TypeError("eventfd must be an EventFd");
    for (const h of this.#doorbells)
      if (ioeventfdsCollide(h, o))
        throw new NotifierError("AddressInUse", `ioeventfd ${o.space} 0x${o.addr.toString(16)}/${o.len} collides with an existing registration`);
    const owns = options.eventfd === undefined;
    const eventfd = options.eventfd ?? new EventFd();
    let releaseRange: () => void = () => {};
    try {
      releaseRange = this.#ensureRange(o.space, o.addr, o.len === 0 ? 8 : o.len);
      const kernel = this.#tryKernelIoeventfd(o, eventfd);
      let undo: () => void;
      let kind: NotifierKind;
      if (kernel !== undefined) {
        kind = "xen-kernel";
        undo = kernel;
      } else {
        const inner = this.#user.ioeventfd({
          addr: o.addr,
          len: o.len,
          space: o.space,
          eventfd,
          ...(o.datamatch === undefined ? {} : { datamatch: o.datamatch }),
        });
        kind = "xen-userspace";
        undo = () => inner.close();
      }
      const release = releaseRange;
      const h: XenIoeventfd = new XenIoeventfd(kind, o, eventfd, owns, () => {
        this.#doorbells.delete(h);
        try {
          undo();
        } finally {
          release();
        }
      });
      this.#doorbells.add(h);
      return h;
    } catch (err) {
      releaseRange();
      if (owns) eventfd.close();
      throw err;
    }
  }

  /** Maps a doorbell-only range unless a registered range already covers [addr, addr + len). */
  #ensureRange(space: IoSpace, addr: bigint, len: number): () => void {
    // A doorbell-only range of ours that already holds this doorbell is shared (refcounted), so it stays
    // mapped until the last doorbell in it closes.
    let key = `${space}:${addr}:${len}`;
    for (const [k, e] of this.#autoRanges) {
      const h = e.handle;
      if (h.space === space && !h.closed && h.start <= addr && addr + BigInt(len) <= h.start + BigInt(h.length)) key = k;
    }
    const existing = this.#autoRanges.get(key);
    if (existing !== undefined && !existing.handle.closed) {
      existing.refs++;
    } else {
      if (this.#server.covers(space, addr, len)) return () => {};
      const weak = { weak: true };
      const handle =
        space === "pio"
          ? this.#server.mapPio(Number(addr), len, DOORBELL_ONLY, weak)
          : this.#server.mapMmio(addr, len, DOORBELL_ONLY, weak);
      this.#autoRanges.set(key, { handle, refs: 1 });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const e = this.#autoRanges.get(key);
      if (e === undefined || --e.refs > 0) return;
      this.#autoRanges.delete(key);
      e.handle.unmap();
    };
  }

  /** The kernel registration's undo, or undefined when this doorbell stays in userspace. */
  #tryKernelIoeventfd(
    o: { addr: bigint; len: IoeventfdLength; datamatch: bigint | undefined; space: IoSpace },
    eventfd: EventFd,
  ): (() => void) | undefined {
    if (!this.#kernelIoeventfd) return undefined;
    // What privcmd can match: a QueueNotify-shaped write of an exact width carrying a 16-bit queue index.
    if (o.space !== "mmio" || o.len === 0 || o.datamatch === undefined || o.datamatch > 0xffffn || o.addr < VIRTIO_MMIO_QUEUE_NOTIFY)
      return undefined;
    const server = this.#server;
    const req = {
      domid: server.domid,
      ioreq: server.ioreqPages,
      ports: Uint32Array.from(server.localPorts),
      addr: o.addr - VIRTIO_MMIO_QUEUE_NOTIFY,
      addrLen: o.len,
      eventFd: eventfd.fd,
      vq: Number(o.datamatch),
    };
    try {
      this.#xen.assignIoeventfd(req);
    } catch (err) {
      const e = classifyXenError(err, "IOCTL_PRIVCMD_IOEVENTFD");
      if (e instanceof NotifierError && e.kind === "Unsupported") {
        this.#kernelIoeventfd = false;
        this.#log.info("privcmd ioeventfd unsupported; doorbells relayed in userspace", { err });
      } else {
        this.#log.warn("privcmd ioeventfd refused this doorbell; relayed in userspace", { addr: o.addr, vq: req.vq, err });
      }
      return undefined;
    }
    return () => {
      if (server.closed) return;
      try {
        this.#xen.assignIoeventfd({ ...req, deassign: true });
      } catch (err) {
        this.#log.warn("privcmd ioeventfd deassign failed", { addr: o.addr, vq: req.vq, err });
      }
    };
  }

  /**
   * `level`: the line stays up until `deassert()` (Xen never lowers it). `edge`: each signal raises and
   * lowers the line (userspace path only; the kernel irqfd can only set one level).
   * @throws NotifierError `EventfdInUse`
   */
  irqfd(options: IrqfdOptions): Irqfd {
    this.#open();
    const { line, trigger } = checkIrqfdOptions(options);
    if (options.eventfd !== undefined && !(options.eventfd instanceof EventFd)) throw new TypeError("eventfd must be an EventFd");
    for (const h of this.#irqfds)
      if (options.eventfd !== undefined && h.eventfd === options.eventfd)
        throw new NotifierError("EventfdInUse", `eventfd already relays line ${h.line}`);
    // Validate the line for the method before any registration (RangeError for an ISA IRQ > 15...).
    this.#encode(line, 0);
    const owns = options.eventfd === undefined;
    const eventfd = options.eventfd ?? new EventFd();
    try {
      const kernel = trigger === "level" ? this.#tryKernelIrqfd(line, eventfd) : undefined;
      let h: XenIrqfd;
      if (kernel !== undefined) {
        h = new XenIrqfd("xen-kernel", line, trigger, eventfd, owns, () => this.#setLevel(line, 0), () => {
          this.#irqfds.delete(h);
          kernel();
        });
      } else {
        const inner = this.#user.irqfd({ line, trigger, eventfd });
        h = new XenIrqfd("xen-userspace", line, trigger, eventfd, owns, () => inner.deassert(), () => {
          this.#irqfds.delete(h);
          inner.close();
        });
      }
      this.#irqfds.add(h);
      return h;
    } catch (err) {
      if (owns) eventfd.close();
      throw err;
    }
  }

  #tryKernelIrqfd(line: number, eventfd: EventFd): (() => void) | undefined {
    if (!this.#kernelIrqfd) return undefined;
    const domid = this.#server.domid;
    const req = { domid, eventFd: eventfd.fd, dmOp: this.#encode(line, 1) };
    try {
      this.#xen.transport.irqfd(req);
    } catch (err) {
      const e = classifyXenError(err, "IOCTL_PRIVCMD_IRQFD");
      if (e instanceof NotifierError && e.kind === "Unsupported") {
        this.#kernelIrqfd = false;
        this.#log.info("privcmd irqfd unsupported; interrupts relayed in userspace", { err });
      } else {
        this.#log.warn("privcmd irqfd refused; relayed in userspace", { line, err });
      }
      return undefined;
    }
    return () => {
      if (this.#server.closed) return;
      try {
        this.#xen.transport.irqfd({ ...req, deassign: true });
      } catch (err) {
        this.#log.warn("privcmd irqfd deassign failed", { line, err });
      }
      // Closing lowers a level line, as the userspace path does.
      try {
        this.#setLevel(line, 0);
      } catch (err) {
        this.#log.warn("lowering the line on close failed", { line, err });
      }
    };
  }

  /** Closes every handle (kernel registrations deassigned, lines lowered, doorbell ranges unmapped). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#detach();
    const errors: unknown[] = [];
    for (const h of [...this.#doorbells, ...this.#irqfds]) {
      try {
        h.close();
      } catch (err) {
        errors.push(err);
      }
    }
    try {
      this.#user.close();
    } catch (err) {
      errors.push(err);
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "XenNotifier: several handles failed to close");
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
