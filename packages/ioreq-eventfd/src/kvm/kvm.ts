// A minimal /dev/kvm binding (Documentation/virt/kvm/api.rst): enough to create a VM with guest RAM,
// in-kernel irqchip, vCPUs that run a few instructions, and the ioeventfd/irqfd registrations the
// notifier needs. Policy-free: every method is one ioctl, arguments checked before the syscall.
import {
  SysError,
  addressOf,
  close as closeFd,
  constants,
  ioctl,
  mmap,
  munmap,
  open as openFd,
  pageSize,
} from "@xen-vhost/vmm-sys-util";
import { NotifierError, classifyErrno } from "../error.js";
import {
  KVM_API_VERSION,
  KVM_CHECK_EXTENSION,
  KVM_CREATE_IRQCHIP,
  KVM_CREATE_VCPU,
  KVM_CREATE_VM,
  KVM_EXIT_IO_OUT,
  KVM_GET_API_VERSION,
  KVM_GET_REGS,
  KVM_GET_SREGS,
  KVM_GET_VCPU_MMAP_SIZE,
  KVM_IOEVENTFD,
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQFD,
  KVM_IRQ_LINE,
  KVM_IRQFD_FLAG_DEASSIGN,
  KVM_IRQFD_FLAG_RESAMPLE,
  KVM_RUN,
  KVM_RUN_EXIT_OFFSET,
  KVM_SET_REGS,
  KVM_SET_SREGS,
  KVM_SET_TSS_ADDR,
  KVM_SET_USER_MEMORY_REGION,
  KvmExitReason,
  KvmIoeventfd,
  KvmIrqfd,
  KvmIrqLevel,
  KvmRegs,
  KvmRunFailEntry,
  KvmRunHeader,
  KvmRunInternal,
  KvmRunIo,
  KvmRunMmio,
  KvmSegment,
  KvmSregs,
  KvmUserspaceMemoryRegion,
  type KvmSegmentName,
} from "./abi.js";

/** Whether `path` (default /dev/kvm) can be opened read-write: the test-skip probe. */
export function kvmAvailable(path = "/dev/kvm"): boolean {
  try {
    closeFd(openFd(path, constants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}

function call(fd: number, request: number, arg: number | bigint | Uint8Array | undefined, what: string): number {
  try {
    return ioctl(fd, request, arg);
  } catch (err) {
    throw classifyErrno(err, what);
  }
}

/** The `/dev/kvm` system fd. Owns it; close() is idempotent. */
export class Kvm implements Disposable {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Opens the device and checks KVM_GET_API_VERSION.
   * @throws NotifierError `DeviceUnavailable` (missing node, no permission), `ApiVersion`.
   */
  static open(path = "/dev/kvm"): Kvm {
    let fd: number;
    try {
      fd = openFd(path, constants.O_RDWR);
    } catch (err) {
      throw classifyErrno(err, `open ${path}`, { ENOENT: "DeviceUnavailable" });
    }
    const kvm = new Kvm(fd);
    try {
      let v: number;
      try {
        v = ioctl(fd, KVM_GET_API_VERSION);
      } catch (err) {
        // ENOTTY: the node exists but is not KVM (a wrong path, /dev/null in a container).
        throw classifyErrno(err, `${path}: KVM_GET_API_VERSION`, { ENOTTY: "DeviceUnavailable" });
      }
      if (v !== KVM_API_VERSION)
        throw new NotifierError("ApiVersion", `${path}: KVM API version ${v}, expected ${KVM_API_VERSION}`);
    } catch (err) {
      kvm.close();
      throw err;
    }
    return kvm;
  }

  get fd(): number {
    if (this.#fd < 0) throw SysError.closed("Kvm");
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** KVM_GET_API_VERSION: 12 on every kernel since 2.6.22. */
  apiVersion(): number {
    return call(this.fd, KVM_GET_API_VERSION, undefined, "KVM_GET_API_VERSION");
  }

  /** KVM_CHECK_EXTENSION on the system fd: 0 if unsupported, else a capability-specific positive value. */
  checkExtension(cap: number): number {
    checkU32(cap, "capability");
    return call(this.fd, KVM_CHECK_EXTENSION, cap, `KVM_CHECK_EXTENSION ${cap}`);
  }

  /** KVM_GET_VCPU_MMAP_SIZE: bytes to map from a vCPU fd (struct kvm_run plus the PIO data page...). */
  vcpuMmapSize(): number {
    return call(this.fd, KVM_GET_VCPU_MMAP_SIZE, undefined, "KVM_GET_VCPU_MMAP_SIZE");
  }

  /** KVM_CREATE_VM with the default machine type. The VM keeps working after this Kvm is closed. */
  createVm(): KvmVm {
    const fd = call(this.fd, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
    try {
      return new KvmVm(fd, this.vcpuMmapSize());
    } catch (err) {
      closeFd(fd);
      throw err;
    }
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    closeFd(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function checkU32(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${what} ${v} must be a u32`);
}

function checkU64(v: bigint, what: string): void {
  if (typeof v !== "bigint" || v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`${what} ${String(v)} must be a u64 bigint`);
}

export interface UserMemoryRegion {
  slot: number;
  guestPhysAddr: bigint;
  /**
   * Page-aligned host memory (an ArrayBuffer from `mmap`, e.g. of a memfd). The VM keeps a reference while
   * the slot is registered; the caller must not munmap it before removing the slot or closing the VM.
   */
  memory: ArrayBuffer;
  /** KVM_MEM_* flags (KVM_MEM_READONLY makes guest writes exit as MMIO). */
  flags?: number;
}

/** Raw KVM_IOEVENTFD arguments (linux/kvm.h struct kvm_ioeventfd). */
export interface KvmIoeventfdArgs {
  fd: number;
  addr: bigint;
  len: number;
  datamatch?: bigint;
  pio?: boolean;
}

/** Raw KVM_IRQFD arguments (linux/kvm.h struct kvm_irqfd). */
export interface KvmIrqfdArgs {
  fd: number;
  gsi: number;
  /** With KVM_IRQFD_FLAG_RESAMPLE: the line is level-triggered, lowered at EOI, and this eventfd signalled. */
  resamplefd?: number;
}

/** A VM fd. Owns it and its vCPUs; close() closes the vCPUs first. */
export class KvmVm implements Disposable {
  #fd: number;
  readonly #vcpuMmapSize: number;
  readonly #memory = new Map<number, ArrayBuffer>();
  readonly #vcpus = new Set<KvmVcpu>();
  #irqchip = false;

  /** @internal Use `Kvm.createVm()`. */
  constructor(fd: number, vcpuMmapSize: number) {
    this.#fd = fd;
    this.#vcpuMmapSize = vcpuMmapSize;
  }

  get fd(): number {
    if (this.#fd < 0) throw SysError.closed("KvmVm");
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Whether KVM_CREATE_IRQCHIP succeeded on this VM. */
  get hasIrqchip(): boolean {
    return this.#irqchip;
  }

  /** KVM_CHECK_EXTENSION on the VM fd (per-VM answers, KVM_CAP_CHECK_EXTENSION_VM). */
  checkExtension(cap: number): number {
    checkU32(cap, "capability");
    return call(this.fd, KVM_CHECK_EXTENSION, cap, `KVM_CHECK_EXTENSION ${cap}`);
  }

  /**
   * KVM_SET_USER_MEMORY_REGION: maps `memory` at `guestPhysAddr`. userspace_addr is the buffer's address
   * (addressOf), so the buffer must stay mapped while registered; the VM holds a reference to it.
   */
  setUserMemoryRegion(region: UserMemoryRegion): void {
    const { slot, guestPhysAddr, memory, flags = 0 } = region;
    checkU32(slot, "memory slot");
    checkU32(flags, "memory flags");
    checkU64(guestPhysAddr, "guest_phys_addr");
    if (!(memory instanceof ArrayBuffer)) throw new TypeError("memory must be an ArrayBuffer from mmap");
    const page = BigInt(pageSize());
    const addr = addressOf(memory);
    if (guestPhysAddr % page !== 0n || addr % page !== 0n || memory.byteLength % Number(page) !== 0 || memory.byteLength === 0)
      throw new RangeError(`memory slot ${slot}: guest address, host address and size must be page-aligned and non-zero`);
    this.#setRegion(slot, flags, guestPhysAddr, BigInt(memory.byteLength), addr);
    this.#memory.set(slot, memory);
  }

  /** Removes a slot (memory_size 0); the caller may munmap the memory afterwards. */
  removeUserMemoryRegion(slot: number): void {
    checkU32(slot, "memory slot");
    this.#setRegion(slot, 0, 0n, 0n, 0n);
    this.#memory.delete(slot);
  }

  #setRegion(slot: number, flags: number, gpa: bigint, size: bigint, addr: bigint): void {
    const arg = KvmUserspaceMemoryRegion.encode({
      slot,
      flags,
      guest_phys_addr: gpa,
      memory_size: size,
      userspace_addr: addr,
    });
    call(this.fd, KVM_SET_USER_MEMORY_REGION, arg, `KVM_SET_USER_MEMORY_REGION slot ${slot}`);
  }

  /** KVM_SET_TSS_ADDR (x86, Intel): three pages of guest-physical space KVM uses to run real mode on VMX. */
  setTssAddr(addr: number): void {
    checkU32(addr, "TSS address");
    call(this.fd, KVM_SET_TSS_ADDR, addr, "KVM_SET_TSS_ADDR");
  }

  /**
   * KVM_CREATE_IRQCHIP: in-kernel interrupt controller (x86: PIC + IOAPIC + per-vCPU LAPIC; arm64: vGIC via
   * KVM_CREATE_DEVICE instead). Must precede createVcpu. Required by irqfd.
   */
  createIrqchip(): void {
    call(this.fd, KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP");
    this.#irqchip = true;
  }

  /**
   * KVM_IRQ_LINE: drives a GSI of the in-kernel irqchip from userspace (the KVM counterpart of Xen's
   * XEN_DMOP_set_irq_level). The level stays until changed; a pulse is 1 then 0.
   */
  setIrqLine(gsi: number, level: 0 | 1): void {
    checkU32(gsi, "irq line");
    if (level !== 0 && level !== 1) throw new RangeError(`irq level ${String(level)} must be 0 or 1`);
    call(this.fd, KVM_IRQ_LINE, KvmIrqLevel.encode({ irq: gsi, level }), `KVM_IRQ_LINE ${gsi}=${level}`);
  }

  /** KVM_CREATE_VCPU and a mapping of its struct kvm_run. */
  createVcpu(id: number): KvmVcpu {
    checkU32(id, "vcpu id");
    const fd = call(this.fd, KVM_CREATE_VCPU, id, `KVM_CREATE_VCPU ${id}`);
    let run: ArrayBuffer;
    try {
      run = mmap(this.#vcpuMmapSize, { fd });
    } catch (err) {
      closeFd(fd);
      throw classifyErrno(err, `mmap kvm_run of vcpu ${id}`);
    }
    const vcpu = new KvmVcpu(id, fd, run, () => this.#vcpus.delete(vcpu));
    this.#vcpus.add(vcpu);
    return vcpu;
  }

  /** KVM_IOEVENTFD assign. @throws NotifierError `AddressInUse` (EEXIST), `InvalidArgument`. */
  assignIoeventfd(args: KvmIoeventfdArgs): void {
    this.#ioeventfd(args, false);
  }

  /** KVM_IOEVENTFD with KVM_IOEVENTFD_FLAG_DEASSIGN: the same fd/addr/len/datamatch/space as assigned. */
  deassignIoeventfd(args: KvmIoeventfdArgs): void {
    this.#ioeventfd(args, true);
  }

  #ioeventfd(args: KvmIoeventfdArgs, deassign: boolean): void {
    const { fd, addr, len, datamatch, pio = false } = args;
    checkU64(addr, "ioeventfd addr");
    if (datamatch !== undefined) checkU64(datamatch, "ioeventfd datamatch");
    const flags =
      (datamatch !== undefined ? KVM_IOEVENTFD_FLAG_DATAMATCH : 0) |
      (pio ? KVM_IOEVENTFD_FLAG_PIO : 0) |
      (deassign ? KVM_IOEVENTFD_FLAG_DEASSIGN : 0);
    const arg = KvmIoeventfd.encode({ datamatch: datamatch ?? 0n, addr, len, fd, flags });
    const what = `KVM_IOEVENTFD ${deassign ? "deassign" : "assign"} ${pio ? "pio" : "mmio"} 0x${addr.toString(16)}/${len}`;
    try {
      ioctl(this.fd, KVM_IOEVENTFD, arg);
    } catch (err) {
      // Deassigning an unknown registration is ENOENT; for assign, ENOENT cannot occur.
      throw classifyErrno(err, what, { ENOENT: "NotRegistered" });
    }
  }

  /**
   * KVM_IRQFD assign (optionally with KVM_IRQFD_FLAG_RESAMPLE).
   * @throws NotifierError `EventfdInUse` (EBUSY), `Unsupported`/`InvalidArgument` without an irqchip.
   */
  assignIrqfd(args: KvmIrqfdArgs): void {
    const { fd, gsi, resamplefd } = args;
    checkU32(gsi, "irqfd gsi");
    const arg = KvmIrqfd.encode({
      fd,
      gsi,
      flags: resamplefd !== undefined ? KVM_IRQFD_FLAG_RESAMPLE : 0,
      resamplefd: resamplefd ?? 0,
    });
    try {
      ioctl(this.fd, KVM_IRQFD, arg);
    } catch (err) {
      const what = `KVM_IRQFD assign gsi ${gsi}`;
      // x86 answers EINVAL when there is no in-kernel irqchip to route the GSI to.
      if (!this.#irqchip && err instanceof SysError && err.code === "EINVAL")
        throw new NotifierError("Unsupported", `${what}: EINVAL (no in-kernel irqchip: KvmVm.createIrqchip())`, { cause: err });
      throw classifyErrno(err, what);
    }
  }

  /** KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN (matched on fd + gsi). Unknown pairs are ignored by the kernel. */
  deassignIrqfd(args: { fd: number; gsi: number }): void {
    checkU32(args.gsi, "irqfd gsi");
    const arg = KvmIrqfd.encode({ fd: args.fd, gsi: args.gsi, flags: KVM_IRQFD_FLAG_DEASSIGN });
    call(this.fd, KVM_IRQFD, arg, `KVM_IRQFD deassign gsi ${args.gsi}`);
  }

  /** Closes the vCPUs, then the VM fd. The kernel drops every ioeventfd/irqfd and memory slot with it. */
  close(): void {
    if (this.#fd < 0) return;
    for (const v of [...this.#vcpus]) v.close();
    const fd = this.#fd;
    this.#fd = -1;
    this.#memory.clear();
    closeFd(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Why KVM_RUN returned, decoded from struct kvm_run. Data views alias the kvm_run page until the next run. */
export type KvmExit =
  | {
      reason: "io";
      direction: "in" | "out";
      port: number;
      /** Bytes per access. */
      size: number;
      count: number;
      /** size * count bytes inside kvm_run: OUT data to read, IN data to fill before the next run(). */
      data: Uint8Array;
      /** OUT: the first access's value, little-endian. */
      value: number;
    }
  | {
      reason: "mmio";
      physAddr: bigint;
      len: number;
      isWrite: boolean;
      /** `len` bytes inside kvm_run: write data, or where to put read data before the next run(). */
      data: Uint8Array;
      /** Writes: the value, little-endian. */
      value: bigint;
    }
  | { reason: "hlt" }
  | { reason: "shutdown" }
  | { reason: "intr" }
  | { reason: "fail-entry"; hardwareEntryFailureReason: bigint; cpu: number }
  | { reason: "internal-error"; suberror: number }
  | { reason: "other"; exitReason: number };

function le(data: Uint8Array): bigint {
  let v = 0n;
  for (let i = data.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[i] ?? 0);
  return v;
}

/** A vCPU: its fd and the shared struct kvm_run mapping. Owned by its VM. */
export class KvmVcpu implements Disposable {
  readonly id: number;
  #fd: number;
  #run: ArrayBuffer | undefined;
  readonly #onClose: () => void;

  /** @internal Use `KvmVm.createVcpu()`. */
  constructor(id: number, fd: number, run: ArrayBuffer, onClose: () => void) {
    this.id = id;
    this.#fd = fd;
    this.#run = run;
    this.#onClose = onClose;
  }

  get fd(): number {
    if (this.#fd < 0) throw SysError.closed("KvmVcpu");
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  #view(): DataView {
    if (!this.#run) throw SysError.closed("KvmVcpu");
    return new DataView(this.#run);
  }

  /** KVM_GET_REGS (x86_64). */
  getRegs(): KvmRegs {
    const buf = new Uint8Array(KvmRegs.size);
    call(this.fd, KVM_GET_REGS, buf, "KVM_GET_REGS");
    return KvmRegs.decode(buf);
  }

  /** KVM_SET_REGS (x86_64): read-modify-write, so only the given registers change. */
  setRegs(regs: Partial<KvmRegs>): void {
    const buf = new Uint8Array(KvmRegs.size);
    call(this.fd, KVM_GET_REGS, buf, "KVM_GET_REGS");
    KvmRegs.write(new DataView(buf.buffer), 0, regs);
    call(this.fd, KVM_SET_REGS, buf, "KVM_SET_REGS");
  }

  /** KVM_GET_SREGS (x86_64) as raw bytes; see `getSegment`/`setSregs` for the fields. */
  getSregs(): KvmSregs {
    const buf = new Uint8Array(KvmSregs.size);
    call(this.fd, KVM_GET_SREGS, buf, "KVM_GET_SREGS");
    return KvmSregs.decode(buf);
  }

  /**
   * KVM_SET_SREGS (x86_64): read-modify-write of control registers and whole segments, e.g.
   * `setSregs({ segments: { cs: { base: 0n, selector: 0 } } })` for real mode at 0000:xxxx.
   */
  setSregs(update: { segments?: Partial<Record<KvmSegmentName, Partial<KvmSegment>>>; cr0?: bigint; cr4?: bigint; efer?: bigint }): void {
    const buf = new Uint8Array(KvmSregs.size);
    call(this.fd, KVM_GET_SREGS, buf, "KVM_GET_SREGS");
    const view = new DataView(buf.buffer);
    for (const [name, seg] of Object.entries(update.segments ?? {}))
      KvmSegment.write(view, KvmSregs.offsetOf(name as KvmSegmentName), seg);
    const { cr0, cr4, efer } = update;
    KvmSregs.write(view, 0, {
      ...(cr0 !== undefined ? { cr0 } : {}),
      ...(cr4 !== undefined ? { cr4 } : {}),
      ...(efer !== undefined ? { efer } : {}),
    });
    call(this.fd, KVM_SET_SREGS, buf, "KVM_SET_SREGS");
  }

  /** One segment register from KVM_GET_SREGS. */
  getSegment(name: KvmSegmentName): KvmSegment {
    const buf = new Uint8Array(KvmSregs.size);
    call(this.fd, KVM_GET_SREGS, buf, "KVM_GET_SREGS");
    return KvmSegment.read(new DataView(buf.buffer), KvmSregs.offsetOf(name));
  }

  /**
   * KVM_RUN: runs the vCPU on this thread until it exits to userspace, and decodes the exit. Blocks the
   * event loop while the guest runs, so it suits short guest sequences (tests) or a worker thread; with an
   * in-kernel irqchip, HLT does not exit (the vCPU sleeps in the kernel until an interrupt). Entry
   * failures and internal errors are returned as exits, not thrown, so callers can report guest state.
   */
  run(): KvmExit {
    call(this.fd, KVM_RUN, 0, `KVM_RUN vcpu ${this.id}`);
    return this.#decodeExit();
  }

  /** The exit_reason of the last KVM_RUN. */
  get exitReason(): number {
    return KvmRunHeader.read(this.#view()).exit_reason;
  }

  #decodeExit(): KvmExit {
    const view = this.#view();
    const reason = KvmRunHeader.read(view).exit_reason;
    switch (reason) {
      case KvmExitReason.KVM_EXIT_IO: {
        const io = KvmRunIo.read(view, KVM_RUN_EXIT_OFFSET);
        const off = Number(io.data_offset);
        const bytes = io.size * io.count;
        if (off + bytes > view.byteLength) throw new NotifierError("Hypervisor", `KVM_EXIT_IO data outside kvm_run (${off}+${bytes})`);
        const data = new Uint8Array(view.buffer, off, bytes);
        return {
          reason: "io",
          direction: io.direction === KVM_EXIT_IO_OUT ? "out" : "in",
          port: io.port,
          size: io.size,
          count: io.count,
          data,
          value: Number(le(data.subarray(0, io.size))),
        };
      }
      case KvmExitReason.KVM_EXIT_MMIO: {
        const m = KvmRunMmio.read(view, KVM_RUN_EXIT_OFFSET);
        const len = Math.min(m.len, 8);
        const data = new Uint8Array(view.buffer, KVM_RUN_EXIT_OFFSET + KvmRunMmio.offsetOf("data"), len);
        return { reason: "mmio", physAddr: m.phys_addr, len: m.len, isWrite: m.is_write !== 0, data, value: le(data) };
      }
      case KvmExitReason.KVM_EXIT_HLT:
        return { reason: "hlt" };
      case KvmExitReason.KVM_EXIT_SHUTDOWN:
        return { reason: "shutdown" };
      case KvmExitReason.KVM_EXIT_INTR:
        return { reason: "intr" };
      case KvmExitReason.KVM_EXIT_FAIL_ENTRY: {
        const f = KvmRunFailEntry.read(view, KVM_RUN_EXIT_OFFSET);
        return { reason: "fail-entry", hardwareEntryFailureReason: f.hardware_entry_failure_reason, cpu: f.cpu };
      }
      case KvmExitReason.KVM_EXIT_INTERNAL_ERROR:
        return { reason: "internal-error", suberror: KvmRunInternal.read(view, KVM_RUN_EXIT_OFFSET).suberror };
      default:
        return { reason: "other", exitReason: reason };
    }
  }

  /** Unmaps kvm_run and closes the vCPU fd. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    if (this.#run) munmap(this.#run);
    this.#run = undefined;
    this.#onClose();
    closeFd(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
