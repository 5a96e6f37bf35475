// The hypervisor-agnostic notification interface. KVM has ioeventfd (a guest write to a doorbell signals an
// eventfd in the kernel) and irqfd (an eventfd write injects an interrupt). Xen gets the same two primitives
// from an ioreq server: either in the kernel (privcmd IOCTL_PRIVCMD_IOEVENTFD / IOCTL_PRIVCMD_IRQFD, Linux >= 6.7)
// or relayed in userspace (evtchn -> eventfd write; eventfd -> XEN_DMOP_set_irq_level). Backends and bridges
// program against `Notifier` and only ever see eventfds; which path is active is reportable via `kind`.
import type { EventFd } from "@xen-vhost/vmm-sys-util";

/**
 * Which implementation delivers the notifications:
 * - `kvm`: KVM_IOEVENTFD / KVM_IRQFD, entirely in the host kernel.
 * - `xen-kernel`: privcmd ioeventfd/irqfd, in the dom0 kernel (no userspace hop).
 * - `xen-userspace`: the ioreq server's evtchn is read by this process, which writes the eventfd, and the
 *   irqfd eventfd is watched by this process, which issues XEN_DMOP_set_irq_level.
 */
export type NotifierKind = "kvm" | "xen-kernel" | "xen-userspace";

/** Address space of a doorbell: memory-mapped (every platform) or x86 port I/O. */
export type IoSpace = "mmio" | "pio";

/** Access widths a doorbell can match; 0 means "any width" (KVM_CAP_IOEVENTFD_ANY_LENGTH, MMIO only). */
export type IoeventfdLength = 0 | 1 | 2 | 4 | 8;

export interface IoeventfdOptions {
  /** Guest-physical address (mmio) or port number (pio) of the doorbell register. */
  addr: bigint;
  /** Width of the guest access to match, in bytes. */
  len: IoeventfdLength;
  /**
   * Only writes of exactly this value (little-endian, `len` bytes) signal the eventfd; other writes to the
   * same address are handled as if no ioeventfd existed (they exit to the device model). Without it, any
   * write signals. Several ioeventfds may share an address with different datamatch values (one per
   * virtqueue on a virtio-mmio QUEUE_NOTIFY register). Requires `len` > 0.
   */
  datamatch?: bigint;
  /** Default "mmio". */
  space?: IoSpace;
  /**
   * The eventfd to signal. Given: the caller keeps ownership (close() does not close it), e.g. a vhost-user
   * kick fd. Omitted: the handle creates one and owns it.
   */
  eventfd?: EventFd;
}

/**
 * A registered doorbell. While open, a matching guest write is consumed by the hypervisor path (the vCPU
 * does not exit to the device model) and adds 1 to `eventfd`'s counter. Writes are not queued per value:
 * N writes before a read show as counter N, so readers must treat the eventfd as "at least one kick".
 */
export interface Ioeventfd extends Disposable {
  /** The path serving this doorbell (on Xen a notifier may mix kernel and userspace registrations). */
  readonly kind: NotifierKind;
  readonly addr: bigint;
  readonly len: IoeventfdLength;
  readonly datamatch: bigint | undefined;
  readonly space: IoSpace;
  /** The signalled eventfd: hand its fd to a backend (vhost-user SET_VRING_KICK) or watch it. */
  readonly eventfd: EventFd;
  /** True if the handle closes `eventfd` on close() (it created it). */
  readonly ownsEventfd: boolean;
  readonly closed: boolean;
  /**
   * Unregisters the doorbell (later guest writes exit to the device model again) and closes `eventfd` if
   * the handle owns it. Idempotent. If the VM is already gone, only the eventfd is released.
   */
  close(): void;
}

/**
 * How the interrupt line behaves.
 * - `edge`: each eventfd write delivers one interrupt (KVM: the GSI is pulsed 1 -> 0; Xen: the line is
 *   raised and lowered). Nothing to acknowledge. Use for MSI-like and edge-configured lines.
 * - `level`: an eventfd write asserts the line and it stays asserted until lowered. Who lowers it differs,
 *   and the handle hides the difference as long as the device model follows the protocol below:
 *   KVM lowers it itself when the guest EOIs the interrupt (KVM_IRQFD_FLAG_RESAMPLE), then signals the
 *   resample eventfd; Xen/Arm (XEN_DMOP_set_irq_level) never lowers it, the device model must call
 *   `deassert()` when the guest acknowledges the cause (virtio-mmio INTERRUPT_ACK clears the ISR bits).
 *
 * The level protocol for a device model, correct on every implementation:
 *   1. interrupt condition becomes true (ISR != 0)  -> `trigger()` (or a backend writes the eventfd);
 *   2. guest acknowledges and the condition is false -> `deassert()`;
 *   3. `onResample` fires                             -> if the condition is still true, `trigger()` again.
 */
export type IrqTrigger = "edge" | "level";

export interface IrqfdOptions {
  /**
   * The interrupt line: a KVM GSI (x86: 0-23 IOAPIC pins, 0-15 also PIC; arm64: SPI number + 32 as
   * routed), or on Xen/Arm the SPI number given to XEN_DMOP_set_irq_level.
   */
  line: number;
  /** Default "edge". */
  trigger?: IrqTrigger;
  /**
   * The eventfd that raises the interrupt when written. Given: the caller keeps ownership, e.g. a vhost-user
   * call fd shared with a backend. Omitted: the handle creates and owns one.
   */
  eventfd?: EventFd;
  /**
   * Level lines only: called (on the event loop) after the hypervisor lowered the line at the guest's EOI.
   * The device model re-asserts with `trigger()` if its interrupt condition still holds. Implementations
   * that never lower the line themselves (Xen) never call it.
   */
  onResample?: () => void;
}

/** A registered interrupt source. */
export interface Irqfd extends Disposable {
  readonly kind: NotifierKind;
  readonly line: number;
  readonly trigger: IrqTrigger;
  /** Writing 1 to it raises the interrupt (edge: one interrupt; level: assert). */
  readonly eventfd: EventFd;
  readonly ownsEventfd: boolean;
  readonly closed: boolean;
  /** `eventfd.write(1)`: raise the interrupt from the device model itself (the userspace relay sets the line directly). */
  raise(): void;
  /**
   * Level lines: the interrupt condition is gone (the guest acknowledged it). Xen lowers the line now; KVM
   * has lowered or will lower it at the guest's EOI, so this is a no-op there. Edge lines: no-op.
   */
  deassert(): void;
  /**
   * Unregisters the irqfd (eventfd writes no longer reach the guest), lowers a level line, stops resample
   * notifications, and closes the eventfds the handle owns. Idempotent.
   */
  close(): void;
}

/**
 * The notifier of one guest. It borrows the VM / ioreq server (closing the notifier does not destroy the
 * guest) and owns every handle it returned: close() closes them all.
 */
export interface Notifier extends Disposable {
  /** The path this notifier prefers; individual handles report their own `kind`. */
  readonly kind: NotifierKind;
  readonly closed: boolean;
  /** @throws NotifierError `AddressInUse` (same addr/len/datamatch registered), `Unsupported`, `InvalidArgument`. */
  ioeventfd(options: IoeventfdOptions): Ioeventfd;
  /** @throws NotifierError `EventfdInUse` (eventfd already an irqfd), `Unsupported` (no irqchip/resample). */
  irqfd(options: IrqfdOptions): Irqfd;
  /** Closes every open handle. Idempotent. */
  close(): void;
}

const LENGTHS: readonly number[] = [0, 1, 2, 4, 8];

/**
 * Shared argument checks (TypeError/RangeError before any syscall), for every implementation.
 * Returns the options with defaults applied.
 */
export function checkIoeventfdOptions(options: IoeventfdOptions): Required<Omit<IoeventfdOptions, "datamatch" | "eventfd">> & {
  datamatch: bigint | undefined;
} {
  if (typeof options !== "object" || options === null) throw new TypeError("ioeventfd options must be an object");
  const { addr, len, datamatch, space = "mmio" } = options;
  if (typeof addr !== "bigint" || addr < 0n || addr > 0xffff_ffff_ffff_ffffn)
    throw new RangeError(`ioeventfd addr ${String(addr)} must be a u64 bigint`);
  if (!LENGTHS.includes(len)) throw new RangeError(`ioeventfd len ${String(len)} must be 0, 1, 2, 4 or 8`);
  if (space !== "mmio" && space !== "pio") throw new RangeError(`ioeventfd space ${String(space)} must be "mmio" or "pio"`);
  if (space === "pio" && addr > 0xffffn) throw new RangeError(`ioeventfd port 0x${addr.toString(16)} exceeds 0xffff`);
  if (space === "pio" && len === 0) throw new RangeError("ioeventfd len 0 (any width) is MMIO-only");
  if (datamatch !== undefined) {
    if (typeof datamatch !== "bigint" || datamatch < 0n) throw new RangeError("ioeventfd datamatch must be a non-negative bigint");
    if (len === 0) throw new RangeError("ioeventfd datamatch needs len > 0");
    if (datamatch >= 1n << BigInt(8 * len))
      throw new RangeError(`ioeventfd datamatch 0x${datamatch.toString(16)} does not fit ${len} byte(s)`);
  }
  return { addr, len, datamatch, space };
}

export function checkIrqfdOptions(options: IrqfdOptions): { line: number; trigger: IrqTrigger } {
  if (typeof options !== "object" || options === null) throw new TypeError("irqfd options must be an object");
  const { line, trigger = "edge", onResample } = options;
  if (!Number.isInteger(line) || line < 0 || line > 0xffffffff) throw new RangeError(`irqfd line ${line} must be a u32`);
  if (trigger !== "edge" && trigger !== "level") throw new RangeError(`irqfd trigger ${String(trigger)} must be "edge" or "level"`);
  if (onResample !== undefined && typeof onResample !== "function") throw new TypeError("irqfd onResample must be a function");
  if (onResample !== undefined && trigger !== "level") throw new RangeError("irqfd onResample needs trigger \"level\"");
  return { line, trigger };
}
