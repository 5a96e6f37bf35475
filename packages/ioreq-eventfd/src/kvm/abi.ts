// KVM userspace ABI, mirrored from the kernel's uapi headers (checked against /usr/include by
// test/kvm-abi.test.ts, which compiles a C probe). Only what the notifier and its tests need.
// Headers: include/uapi/linux/kvm.h (generic), arch/x86/include/uapi/asm/kvm.h (x86_64 register files).
import { _IO, _IOR, _IOW, defineStruct, u8, u16, u32, i32, u64, bytes, type StructValue } from "@xen-vhost/vmm-sys-util";

/* linux/kvm.h: #define KVMIO 0xAE */
export const KVMIO = 0xae;
/* linux/kvm.h: #define KVM_API_VERSION 12 */
export const KVM_API_VERSION = 12;

// linux/kvm.h: struct kvm_userspace_memory_region
export const KvmUserspaceMemoryRegion = defineStruct("kvm_userspace_memory_region", { size: 32, align: 8 }, {
  slot: u32(0),
  flags: u32(4),
  guest_phys_addr: u64(8),
  memory_size: u64(16),
  userspace_addr: u64(24),
});
export type KvmUserspaceMemoryRegion = StructValue<typeof KvmUserspaceMemoryRegion>;
/* linux/kvm.h: #define KVM_MEM_LOG_DIRTY_PAGES (1UL << 0), KVM_MEM_READONLY (1UL << 1) */
export const KVM_MEM_LOG_DIRTY_PAGES = 1 << 0;
export const KVM_MEM_READONLY = 1 << 1;

// linux/kvm.h: struct kvm_ioeventfd
export const KvmIoeventfd = defineStruct("kvm_ioeventfd", { size: 64, align: 8 }, {
  datamatch: u64(0),
  addr: u64(8),
  len: u32(16),
  fd: i32(20),
  flags: u32(24),
  pad: bytes(28, 36),
});
export type KvmIoeventfd = StructValue<typeof KvmIoeventfd>;
/* linux/kvm.h: enum { kvm_ioeventfd_flag_nr_datamatch, _pio, _deassign, ... };
 * #define KVM_IOEVENTFD_FLAG_DATAMATCH (1 << kvm_ioeventfd_flag_nr_datamatch) etc. */
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1 << 0;
export const KVM_IOEVENTFD_FLAG_PIO = 1 << 1;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 1 << 2;

// linux/kvm.h: struct kvm_irqfd
export const KvmIrqfd = defineStruct("kvm_irqfd", { size: 32, align: 4 }, {
  fd: u32(0),
  gsi: u32(4),
  flags: u32(8),
  resamplefd: u32(12),
  pad: bytes(16, 16),
});
export type KvmIrqfd = StructValue<typeof KvmIrqfd>;
/* linux/kvm.h: #define KVM_IRQFD_FLAG_DEASSIGN (1 << 0), KVM_IRQFD_FLAG_RESAMPLE (1 << 1) */
export const KVM_IRQFD_FLAG_DEASSIGN = 1 << 0;
export const KVM_IRQFD_FLAG_RESAMPLE = 1 << 1;

// linux/kvm.h: struct kvm_irq_level (union { __u32 irq; __s32 status; }; __u32 level;)
export const KvmIrqLevel = defineStruct("kvm_irq_level", { size: 8, align: 4 }, {
  irq: u32(0),
  level: u32(4),
});

// linux/kvm.h: struct kvm_run, the fixed header before the exit union (the union starts at offset 32 on
// every architecture but s390, which this package does not support).
export const KvmRunHeader = defineStruct("kvm_run", { size: 32, align: 8 }, {
  request_interrupt_window: u8(0),
  immediate_exit: u8(1),
  exit_reason: u32(8),
  ready_for_interrupt_injection: u8(12),
  if_flag: u8(13),
  flags: u16(14),
  cr8: u64(16),
  apic_base: u64(24),
});
/** Offset of the exit union in struct kvm_run. */
export const KVM_RUN_EXIT_OFFSET = 32;

// linux/kvm.h: struct kvm_run, union member `io` (KVM_EXIT_IO)
export const KvmRunIo = defineStruct("kvm_run.io", { size: 16, align: 8 }, {
  direction: u8(0),
  size: u8(1),
  port: u16(2),
  count: u32(4),
  data_offset: u64(8),
});
/* linux/kvm.h: #define KVM_EXIT_IO_IN 0, KVM_EXIT_IO_OUT 1 */
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

// linux/kvm.h: struct kvm_run, union member `mmio` (KVM_EXIT_MMIO)
export const KvmRunMmio = defineStruct("kvm_run.mmio", { size: 24, align: 8 }, {
  phys_addr: u64(0),
  data: bytes(8, 8),
  len: u32(16),
  is_write: u8(20),
});

// linux/kvm.h: struct kvm_run, union member `fail_entry` (KVM_EXIT_FAIL_ENTRY)
export const KvmRunFailEntry = defineStruct("kvm_run.fail_entry", { size: 16, align: 8 }, {
  hardware_entry_failure_reason: u64(0),
  cpu: u32(8),
});

// linux/kvm.h: struct kvm_run, union member `internal` (KVM_EXIT_INTERNAL_ERROR)
export const KvmRunInternal = defineStruct("kvm_run.internal", { size: 136, align: 8 }, {
  suberror: u32(0),
  ndata: u32(4),
  data: bytes(8, 128),
});

/* linux/kvm.h: #define KVM_EXIT_* */
export const KvmExitReason = {
  KVM_EXIT_UNKNOWN: 0,
  KVM_EXIT_EXCEPTION: 1,
  KVM_EXIT_IO: 2,
  KVM_EXIT_HYPERCALL: 3,
  KVM_EXIT_DEBUG: 4,
  KVM_EXIT_HLT: 5,
  KVM_EXIT_MMIO: 6,
  KVM_EXIT_IRQ_WINDOW_OPEN: 7,
  KVM_EXIT_SHUTDOWN: 8,
  KVM_EXIT_FAIL_ENTRY: 9,
  KVM_EXIT_INTR: 10,
  KVM_EXIT_INTERNAL_ERROR: 17,
  KVM_EXIT_SYSTEM_EVENT: 24,
} as const;
export type KvmExitReason = (typeof KvmExitReason)[keyof typeof KvmExitReason];

/* linux/kvm.h: #define KVM_CAP_* (the ones this package probes) */
export const KvmCap = {
  KVM_CAP_IRQCHIP: 0,
  KVM_CAP_USER_MEMORY: 3,
  KVM_CAP_SET_TSS_ADDR: 4,
  KVM_CAP_NR_MEMSLOTS: 10,
  KVM_CAP_IRQ_ROUTING: 25,
  KVM_CAP_IRQFD: 32,
  KVM_CAP_IOEVENTFD: 36,
  KVM_CAP_IRQFD_RESAMPLE: 82,
  KVM_CAP_IOEVENTFD_NO_LENGTH: 100,
  KVM_CAP_IOEVENTFD_ANY_LENGTH: 122,
} as const;
export type KvmCap = (typeof KvmCap)[keyof typeof KvmCap];

// x86_64 only: arch/x86/include/uapi/asm/kvm.h. arm64 uses KVM_GET_ONE_REG instead of these.

// asm/kvm.h (x86): struct kvm_regs
export const KvmRegs = defineStruct("kvm_regs", { size: 144, align: 8 }, {
  rax: u64(0), rbx: u64(8), rcx: u64(16), rdx: u64(24),
  rsi: u64(32), rdi: u64(40), rsp: u64(48), rbp: u64(56),
  r8: u64(64), r9: u64(72), r10: u64(80), r11: u64(88),
  r12: u64(96), r13: u64(104), r14: u64(112), r15: u64(120),
  rip: u64(128), rflags: u64(136),
});
export type KvmRegs = StructValue<typeof KvmRegs>;

// asm/kvm.h (x86): struct kvm_segment
export const KvmSegment = defineStruct("kvm_segment", { size: 24, align: 8 }, {
  base: u64(0),
  limit: u32(8),
  selector: u16(12),
  type: u8(14),
  present: u8(15),
  dpl: u8(16),
  db: u8(17),
  s: u8(18),
  l: u8(19),
  g: u8(20),
  avl: u8(21),
  unusable: u8(22),
  padding: u8(23),
});
export type KvmSegment = StructValue<typeof KvmSegment>;

// asm/kvm.h (x86): struct kvm_dtable
export const KvmDtable = defineStruct("kvm_dtable", { size: 16, align: 8 }, {
  base: u64(0),
  limit: u16(8),
  padding: bytes(10, 6),
});
export type KvmDtable = StructValue<typeof KvmDtable>;

// asm/kvm.h (x86): struct kvm_sregs; segments and tables are embedded structs (read them with KvmSegment /
// KvmDtable at the field's offset). interrupt_bitmap is __u64[(KVM_NR_INTERRUPTS + 63) / 64], KVM_NR_INTERRUPTS 256.
export const KvmSregs = defineStruct("kvm_sregs", { size: 312, align: 8 }, {
  cs: bytes(0, 24), ds: bytes(24, 24), es: bytes(48, 24), fs: bytes(72, 24),
  gs: bytes(96, 24), ss: bytes(120, 24), tr: bytes(144, 24), ldt: bytes(168, 24),
  gdt: bytes(192, 16), idt: bytes(208, 16),
  cr0: u64(224), cr2: u64(232), cr3: u64(240), cr4: u64(248), cr8: u64(256),
  efer: u64(264),
  apic_base: u64(272),
  interrupt_bitmap: bytes(280, 32),
});
export type KvmSregs = StructValue<typeof KvmSregs>;
/** The segment registers of kvm_sregs, in declaration order. */
export const KVM_SREGS_SEGMENTS = ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"] as const;
export type KvmSegmentName = (typeof KVM_SREGS_SEGMENTS)[number];

// Ioctl numbers (linux/kvm.h), computed from the layouts above.
/* #define KVM_GET_API_VERSION _IO(KVMIO, 0x00) */
export const KVM_GET_API_VERSION = _IO(KVMIO, 0x00);
/* #define KVM_CREATE_VM _IO(KVMIO, 0x01) -- returns a VM fd */
export const KVM_CREATE_VM = _IO(KVMIO, 0x01);
/* #define KVM_CHECK_EXTENSION _IO(KVMIO, 0x03) */
export const KVM_CHECK_EXTENSION = _IO(KVMIO, 0x03);
/* #define KVM_GET_VCPU_MMAP_SIZE _IO(KVMIO, 0x04) -- in bytes */
export const KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04);
/* #define KVM_CREATE_VCPU _IO(KVMIO, 0x41) */
export const KVM_CREATE_VCPU = _IO(KVMIO, 0x41);
/* #define KVM_SET_USER_MEMORY_REGION _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region) */
export const KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, KvmUserspaceMemoryRegion.size);
/* #define KVM_SET_TSS_ADDR _IO(KVMIO, 0x47) */
export const KVM_SET_TSS_ADDR = _IO(KVMIO, 0x47);
/* #define KVM_CREATE_IRQCHIP _IO(KVMIO, 0x60) */
export const KVM_CREATE_IRQCHIP = _IO(KVMIO, 0x60);
/* #define KVM_IRQ_LINE _IOW(KVMIO, 0x61, struct kvm_irq_level) */
export const KVM_IRQ_LINE = _IOW(KVMIO, 0x61, KvmIrqLevel.size);
/* #define KVM_IRQFD _IOW(KVMIO, 0x76, struct kvm_irqfd) */
export const KVM_IRQFD = _IOW(KVMIO, 0x76, KvmIrqfd.size);
/* #define KVM_IOEVENTFD _IOW(KVMIO, 0x79, struct kvm_ioeventfd) */
export const KVM_IOEVENTFD = _IOW(KVMIO, 0x79, KvmIoeventfd.size);
/* #define KVM_RUN _IO(KVMIO, 0x80) */
export const KVM_RUN = _IO(KVMIO, 0x80);
/* #define KVM_GET_REGS _IOR(KVMIO, 0x81, struct kvm_regs) */
export const KVM_GET_REGS = _IOR(KVMIO, 0x81, KvmRegs.size);
/* #define KVM_SET_REGS _IOW(KVMIO, 0x82, struct kvm_regs) */
export const KVM_SET_REGS = _IOW(KVMIO, 0x82, KvmRegs.size);
/* #define KVM_GET_SREGS _IOR(KVMIO, 0x83, struct kvm_sregs) */
export const KVM_GET_SREGS = _IOR(KVMIO, 0x83, KvmSregs.size);
/* #define KVM_SET_SREGS _IOW(KVMIO, 0x84, struct kvm_sregs) */
export const KVM_SET_SREGS = _IOW(KVMIO, 0x84, KvmSregs.size);
