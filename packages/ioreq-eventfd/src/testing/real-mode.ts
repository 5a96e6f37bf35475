// A one-vCPU x86 VM in real mode, for tests that need a real guest to ring doorbells and take interrupts
// (this package's and the bridges'). Guest RAM is a memfd mapped MAP_SHARED at guest-physical 0, the
// layout vm-memory uses for vhost-user.
import { close as closeFd, ftruncate, memfdCreate, mmap, munmap } from "@xen-vhost/vmm-sys-util";
import { KvmCap } from "../kvm/abi.js";
import { Kvm, type KvmExit, type KvmVcpu, type KvmVm } from "../kvm/kvm.js";

export interface RealModeVmOptions {
  /** Guest code, loaded at `entry`. */
  code: Uint8Array;
  /** Guest-physical (= linear, CS=0) address of the first instruction. Default 0x1000. */
  entry?: number;
  /** RAM at guest-physical 0, a multiple of 4 KiB. Default 64 KiB (IVT at 0, code at 0x1000, stack below 0x10000). */
  memorySize?: number;
  /** KVM_CREATE_IRQCHIP before the vCPU (PIC + IOAPIC + LAPIC). With it, HLT no longer exits to userspace. */
  irqchip?: boolean;
}

/** Unused guest-physical range KVM uses for the real-mode TSS on VMX (QEMU uses the same address). */
const TSS_ADDR = 0xfffbd000;

/** Kvm + VM + memfd RAM + one real-mode vCPU. close() releases everything in reverse order. */
export class RealModeVm implements Disposable {
  readonly kvm: Kvm;
  readonly vm: KvmVm;
  readonly vcpu: KvmVcpu;
  /** Guest RAM, guest-physical 0 at index 0. */
  readonly memory: Uint8Array;
  readonly #buffer: ArrayBuffer;
  readonly #memfd: number;
  #closed = false;

  private constructor(kvm: Kvm, vm: KvmVm, vcpu: KvmVcpu, buffer: ArrayBuffer, memfd: number) {
    this.kvm = kvm;
    this.vm = vm;
    this.vcpu = vcpu;
    this.#buffer = buffer;
    this.#memfd = memfd;
    this.memory = new Uint8Array(buffer);
  }

  static create(options: RealModeVmOptions): RealModeVm {
    const { code, entry = 0x1000, memorySize = 0x10000, irqchip = false } = options;
    if (!(code instanceof Uint8Array)) throw new TypeError("code must be a Uint8Array");
    if (!Number.isInteger(memorySize) || memorySize <= 0 || memorySize % 4096 !== 0 || memorySize > 0x100000)
      throw new RangeError(`memorySize ${memorySize} must be a multiple of 4096 up to 1 MiB`);
    if (!Number.isInteger(entry) || entry < 0 || entry + code.length > memorySize || entry > 0xffff)
      throw new RangeError(`code at 0x${entry.toString(16)} does not fit guest RAM / segment 0`);
    // Node 20 has no DisposableStack: undo steps in reverse if a later one fails.
    const undo: (() => void)[] = [];
    const stack = { defer: (f: () => void) => undo.push(f) };
    let ok = false;
    try {
      const kvm = Kvm.open();
      stack.defer(() => kvm.close());
      const vm = kvm.createVm();
      stack.defer(() => vm.close());
      if (kvm.checkExtension(KvmCap.KVM_CAP_SET_TSS_ADDR) > 0) vm.setTssAddr(TSS_ADDR);
      const memfd = memfdCreate("real-mode-guest-ram");
      stack.defer(() => closeFd(memfd));
      ftruncate(memfd, memorySize);
      const buffer = mmap(memorySize, { fd: memfd });
      stack.defer(() => munmap(buffer));
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0n, memory: buffer });
      if (irqchip) vm.createIrqchip();
      const vcpu = vm.createVcpu(0);
      new Uint8Array(buffer).set(code, entry);
      // Real mode with every segment at 0: linear = offset, so guest addresses are guest-physical.
      const flat = { base: 0n, selector: 0 };
      vcpu.setSregs({ segments: { cs: flat, ds: flat, es: flat, ss: flat, fs: flat, gs: flat } });
      // rflags bit 1 is reserved-one; IF starts clear (the guest uses sti).
      vcpu.setRegs({ rip: BigInt(entry), rflags: 2n, rsp: BigInt(Math.min(memorySize, 0x10000) - 0x10) });
      ok = true;
      return new RealModeVm(kvm, vm, vcpu, buffer, memfd);
    } finally {
      if (!ok) for (const f of undo.reverse()) f();
    }
  }

  /** Copies bytes into guest RAM at a guest-physical address (e.g. an interrupt handler). */
  load(addr: number, bytes: Uint8Array): void {
    if (addr < 0 || addr + bytes.length > this.memory.length) throw new RangeError(`0x${addr.toString(16)} outside guest RAM`);
    this.memory.set(bytes, addr);
  }

  /** One KVM_RUN. */
  run(): KvmExit {
    return this.vcpu.run();
  }

  /**
   * Runs until `stop(exit)` is true or `maxExits` exits went by, and returns every exit. Exits the guest
   * expects to be handled (port IN) read as zero.
   */
  runUntil(stop: (exit: KvmExit) => boolean, maxExits = 64): KvmExit[] {
    const exits: KvmExit[] = [];
    for (let i = 0; i < maxExits; i++) {
      const exit = this.vcpu.run();
      // Snapshot: data views alias kvm_run and change on the next run.
      if (exit.reason === "io" || exit.reason === "mmio") {
        const data = Uint8Array.from(exit.data);
        if (exit.reason === "io" && exit.direction === "in") exit.data.fill(0);
        if (exit.reason === "mmio" && !exit.isWrite) exit.data.fill(0);
        exits.push({ ...exit, data });
      } else {
        exits.push(exit);
      }
      if (stop(exit)) return exits;
      if (exit.reason === "shutdown" || exit.reason === "fail-entry" || exit.reason === "internal-error") return exits;
    }
    return exits;
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.vm.close();
    munmap(this.#buffer);
    closeFd(this.#memfd);
    this.kvm.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Just enough of a 16-bit x86 assembler for test guests: each method appends one instruction's encoding
 * (Intel SDM vol. 2 opcode tables). `bytes()` returns the program.
 */
export class Asm16 {
  readonly #out: number[] = [];

  #emit(...b: number[]): this {
    this.#out.push(...b);
    return this;
  }

  #imm16(v: number): number[] {
    return [v & 0xff, (v >>> 8) & 0xff];
  }

  /** Current length: the offset of the next instruction. */
  get length(): number {
    return this.#out.length;
  }

  cli(): this { return this.#emit(0xfa); }
  sti(): this { return this.#emit(0xfb); }
  hlt(): this { return this.#emit(0xf4); }
  nop(): this { return this.#emit(0x90); }
  iret(): this { return this.#emit(0xcf); }
  /** mov al, imm8 */
  movAl(v: number): this { return this.#emit(0xb0, v & 0xff); }
  /** mov ax, imm16 */
  movAx(v: number): this { return this.#emit(0xb8, ...this.#imm16(v)); }
  /** mov eax, imm32 (0x66 operand-size prefix) */
  movEax(v: number): this { return this.#emit(0x66, 0xb8, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff); }
  /** mov dx, imm16 */
  movDx(v: number): this { return this.#emit(0xba, ...this.#imm16(v)); }
  /** mov cx, imm16 */
  movCx(v: number): this { return this.#emit(0xb9, ...this.#imm16(v)); }
  /** mov ds, ax */
  movDsAx(): this { return this.#emit(0x8e, 0xd8); }
  /** mov [disp16], al */
  storeAl(addr: number): this { return this.#emit(0xa2, ...this.#imm16(addr)); }
  /** mov [disp16], ax */
  storeAx(addr: number): this { return this.#emit(0xa3, ...this.#imm16(addr)); }
  /** mov [disp16], eax */
  storeEax(addr: number): this { return this.#emit(0x66, 0xa3, ...this.#imm16(addr)); }
  /** mov word [disp16], imm16 */
  storeWord(addr: number, v: number): this { return this.#emit(0xc7, 0x06, ...this.#imm16(addr), ...this.#imm16(v)); }
  /** out imm8, al */
  outAl(port: number): this { return this.#emit(0xe6, port & 0xff); }
  /** out dx, al */
  outDxAl(): this { return this.#emit(0xee); }
  /** out dx, ax */
  outDxAx(): this { return this.#emit(0xef); }
  /** loop to an earlier offset (dec cx; jump while cx != 0) */
  loopTo(target: number): this {
    const rel = target - (this.#out.length + 2);
    if (rel < -128 || rel > 127) throw new RangeError(`loop target ${rel} bytes away does not fit rel8`);
    return this.#emit(0xe2, rel & 0xff);
  }
  /** loop $ (decrements cx until zero: a bounded busy wait) */
  loopSelf(): this { return this.#emit(0xe2, 0xfe); }
  /** jmp $ */
  jmpSelf(): this { return this.#emit(0xeb, 0xfe); }
  /** jmp short to an earlier or later offset of this program (`length` taken when emitting the target). */
  jmpTo(target: number): this {
    const rel = target - (this.#out.length + 2);
    if (rel < -128 || rel > 127) throw new RangeError(`jmp target ${rel} bytes away does not fit rel8`);
    return this.#emit(0xeb, rel & 0xff);
  }

  bytes(): Uint8Array {
    return Uint8Array.from(this.#out);
  }
}
