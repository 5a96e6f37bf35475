// `Notifier` over a KVM VM: ioeventfd = KVM_IOEVENTFD, irqfd = KVM_IRQFD (level lines with
// KVM_IRQFD_FLAG_RESAMPLE). Everything stays in the host kernel; this process only registers.
import { EventFd, FdWatcher, SysError } from "@xen-vhost/vmm-sys-util";
import { NotifierError } from "../error.js";
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
} from "../notifier.js";
import { KvmCap } from "./abi.js";
import type { KvmVm } from "./kvm.js";

export interface KvmNotifierOptions {
  logger?: Logger;
}

/** Closes an eventfd we created; leaves a borrowed one alone. */
function release(eventfd: EventFd, owned: boolean): void {
  if (owned) eventfd.close();
}

class KvmIoeventfd implements Ioeventfd {
  readonly kind = "kvm" as const;
  readonly addr: bigint;
  readonly len: IoeventfdLength;
  readonly datamatch: bigint | undefined;
  readonly space: IoSpace;
  readonly eventfd: EventFd;
  readonly ownsEventfd: boolean;
  readonly #vm: KvmVm;
  readonly #onClose: (h: KvmIoeventfd) => void;
  #closed = false;

  constructor(vm: KvmVm, options: IoeventfdOptions, onClose: (h: KvmIoeventfd) => void) {
    const { addr, len, datamatch, space } = checkIoeventfdOptions(options);
    if (options.eventfd !== undefined && !(options.eventfd instanceof EventFd)) throw new TypeError("eventfd must be an EventFd");
    this.addr = addr;
    this.len = len;
    this.datamatch = datamatch;
    this.space = space;
    this.#vm = vm;
    this.#onClose = onClose;
    this.ownsEventfd = options.eventfd === undefined;
    this.eventfd = options.eventfd ?? new EventFd();
    try {
      vm.assignIoeventfd(this.#args());
    } catch (err) {
      release(this.eventfd, this.ownsEventfd);
      throw err;
    }
  }

  #args() {
    return {
      fd: this.eventfd.fd,
      addr: this.addr,
      len: this.len,
      pio: this.space === "pio",
      ...(this.datamatch !== undefined ? { datamatch: this.datamatch } : {}),
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose(this);
    try {
      // The kernel matches the registration by eventfd, so deassign before the fd can be closed.
      if (!this.#vm.closed && !this.eventfd.closed) this.#vm.deassignIoeventfd(this.#args());
    } finally {
      release(this.eventfd, this.ownsEventfd);
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

class KvmIrqfd implements Irqfd {
  readonly kind = "kvm" as const;
  readonly line: number;
  readonly trigger: IrqTrigger;
  readonly eventfd: EventFd;
  readonly ownsEventfd: boolean;
  /** Level lines: KVM's resamplefd, signalled when it lowered the line at the guest's EOI. Owned by the handle. */
  readonly resampleEventfd: EventFd | undefined;
  readonly #watcher: FdWatcher | undefined;
  readonly #vm: KvmVm;
  readonly #onClose: (h: KvmIrqfd) => void;
  #closed = false;

  constructor(vm: KvmVm, options: IrqfdOptions, logger: Logger, onClose: (h: KvmIrqfd) => void) {
    const { line, trigger } = checkIrqfdOptions(options);
    if (options.eventfd !== undefined && !(options.eventfd instanceof EventFd)) throw new TypeError("eventfd must be an EventFd");
    if (trigger === "level" && vm.checkExtension(KvmCap.KVM_CAP_IRQFD_RESAMPLE) <= 0)
      throw new NotifierError("Unsupported", "level-triggered irqfd needs KVM_CAP_IRQFD_RESAMPLE");
    this.line = line;
    this.trigger = trigger;
    this.#vm = vm;
    this.#onClose = onClose;
    this.ownsEventfd = options.eventfd === undefined;
    this.eventfd = options.eventfd ?? new EventFd();
    const onResample = options.onResample;
    try {
      if (trigger === "level") {
        this.resampleEventfd = new EventFd();
        if (onResample) {
          const resample = this.resampleEventfd;
          this.#watcher = new FdWatcher(
            resample.fd,
            () => {
              if (resample.read() !== null) onResample();
            },
            { onError: (err) => logger.error("irqfd onResample threw", { line, err }) },
          ).start();
        }
      }
      vm.assignIrqfd({
        fd: this.eventfd.fd,
        gsi: line,
        ...(this.resampleEventfd ? { resamplefd: this.resampleEventfd.fd } : {}),
      });
    } catch (err) {
      this.#watcher?.close();
      this.resampleEventfd?.close();
      release(this.eventfd, this.ownsEventfd);
      throw err;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  raise(): void {
    if (this.#closed) throw SysError.closed("Irqfd");
    this.eventfd.write(1);
  }

  /** KVM lowers a resample irqfd's line itself at EOI, and edge lines are pulses: nothing to do. */
  deassert(): void {}

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onClose(this);
    this.#watcher?.close();
    try {
      // Removing the last irqfd of a resampler also lowers its line (virt/kvm/eventfd.c irqfd_resampler_shutdown).
      if (!this.#vm.closed && !this.eventfd.closed) this.#vm.deassignIrqfd({ fd: this.eventfd.fd, gsi: this.line });
    } finally {
      this.resampleEventfd?.close();
      release(this.eventfd, this.ownsEventfd);
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The KVM notifier: borrows a VM (closing the notifier leaves the VM running) and owns the handles it
 * returns. irqfd needs an in-kernel irqchip (`vm.createIrqchip()` before creating vCPUs on x86).
 */
export class KvmNotifier implements Notifier {
  readonly kind = "kvm" as const;
  readonly vm: KvmVm;
  readonly #handles = new Set<KvmIoeventfd | KvmIrqfd>();
  readonly #logger: Logger;
  #closed = false;

  constructor(vm: KvmVm, options: KvmNotifierOptions = {}) {
    this.vm = vm;
    this.#logger = options.logger ?? nullLogger;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #open(): void {
    if (this.#closed) throw SysError.closed("KvmNotifier");
  }

  ioeventfd(options: IoeventfdOptions): Ioeventfd {
    this.#open();
    const h = new KvmIoeventfd(this.vm, options, (x) => this.#handles.delete(x));
    this.#handles.add(h);
    this.#logger.debug("ioeventfd assigned", { space: h.space, addr: h.addr, len: h.len, datamatch: h.datamatch });
    return h;
  }

  irqfd(options: IrqfdOptions): Irqfd & { readonly resampleEventfd: EventFd | undefined } {
    this.#open();
    const h = new KvmIrqfd(this.vm, options, this.#logger, (x) => this.#handles.delete(x));
    this.#handles.add(h);
    this.#logger.debug("irqfd assigned", { line: h.line, trigger: h.trigger });
    return h;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const errors: unknown[] = [];
    for (const h of [...this.#handles]) {
      try {
        h.close();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "KvmNotifier: several handles failed to close");
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
