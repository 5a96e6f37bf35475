// Linux include/uapi/xen/privcmd.h (/dev/xen/privcmd). Layouts are LP64 (x86_64 and arm64 agree: pointers,
// size_t and xen_pfn_t are 8 bytes on both). Checked against the headers by test/abi.test.ts.
import { _IOC, _IOC_NONE, _IOW, defineStruct, u16, u32, u64, bytes, type StructValue } from "@xen-vhost/vmm-sys-util";

/** The device node for privileged operations and foreign mappings. */
export const PRIVCMD_DEVICE = "/dev/xen/privcmd";
/** Linux privcmd-buf: mmap-able memory that the kernel lets hypercalls touch ("hypercall buffers"). */
export const HYPERCALL_BUFFER_DEVICE = "/dev/xen/hypercall";
/** Xen's page size: frame numbers (gfn/mfn) count 4 KiB pages on every architecture. */
export const XEN_PAGE_SIZE = 4096;
export const XEN_PAGE_SHIFT = 12;

// struct privcmd_hypercall { __u64 op; __u64 arg[5]; };
export const PrivcmdHypercall = defineStruct("privcmd_hypercall", { size: 48, align: 8 }, {
  op: u64(0),
  arg0: u64(8), arg1: u64(16), arg2: u64(24), arg3: u64(32), arg4: u64(40),
});
export type PrivcmdHypercall = StructValue<typeof PrivcmdHypercall>;

// struct privcmd_mmapbatch_v2 { unsigned int num; domid_t dom; __u64 addr; const xen_pfn_t *arr; int *err; };
export const PrivcmdMmapbatchV2 = defineStruct("privcmd_mmapbatch_v2", { size: 32, align: 8 }, {
  num: u32(0), dom: u16(4), addr: u64(8), arr: u64(16), err: u64(24),
});
export type PrivcmdMmapbatchV2 = StructValue<typeof PrivcmdMmapbatchV2>;

// struct privcmd_dm_op_buf { void __user *uptr; size_t size; };
export const PrivcmdDmOpBuf = defineStruct("privcmd_dm_op_buf", { size: 16, align: 8 }, {
  uptr: u64(0), size: u64(8),
});

// struct privcmd_dm_op { domid_t dom; __u16 num; const struct privcmd_dm_op_buf __user *ubufs; };
export const PrivcmdDmOp = defineStruct("privcmd_dm_op", { size: 16, align: 8 }, {
  dom: u16(0), num: u16(2), ubufs: u64(8),
});

// struct privcmd_mmap_resource { domid_t dom; __u32 type; __u32 id; __u32 idx; __u64 num; __u64 addr; };
export const PrivcmdMmapResource = defineStruct("privcmd_mmap_resource", { size: 32, align: 8 }, {
  dom: u16(0), type: u32(4), id: u32(8), idx: u32(12), num: u64(16), addr: u64(24),
});
export type PrivcmdMmapResource = StructValue<typeof PrivcmdMmapResource>;

// Linux >= 6.7 (CONFIG_XEN_PRIVCMD_EVENTFD):
// struct privcmd_irqfd { __u64 dm_op; __u32 size; __u32 fd; __u32 flags; domid_t dom; __u8 pad[2]; };
export const PrivcmdIrqfd = defineStruct("privcmd_irqfd", { size: 24, align: 8 }, {
  dm_op: u64(0), size: u32(8), fd: u32(12), flags: u32(16), dom: u16(20), pad: bytes(22, 2),
});
export type PrivcmdIrqfd = StructValue<typeof PrivcmdIrqfd>;
/* #define PRIVCMD_IRQFD_FLAG_DEASSIGN (1 << 0) */
export const PRIVCMD_IRQFD_FLAG_DEASSIGN = 1;

// Linux >= 6.7: struct privcmd_ioeventfd { __u64 ioreq; __u64 ports; __u64 addr; __u32 addr_len;
//   __u32 event_fd; __u32 vcpus; __u32 vq; __u32 flags; domid_t dom; __u8 pad[2]; };
export const PrivcmdIoeventfd = defineStruct("privcmd_ioeventfd", { size: 48, align: 8 }, {
  ioreq: u64(0), ports: u64(8), addr: u64(16), addr_len: u32(24), event_fd: u32(28), vcpus: u32(32),
  vq: u32(36), flags: u32(40), dom: u16(44), pad: bytes(46, 2),
});
export type PrivcmdIoeventfd = StructValue<typeof PrivcmdIoeventfd>;
/* #define PRIVCMD_IOEVENTFD_FLAG_DEASSIGN (1 << 0) */
export const PRIVCMD_IOEVENTFD_FLAG_DEASSIGN = 1;

/* The RESTRICT argument is a bare domid_t (2 bytes). */
const SIZEOF_DOMID_T = 2;

/* #define IOCTL_PRIVCMD_HYPERCALL _IOC(_IOC_NONE, 'P', 0, sizeof(struct privcmd_hypercall)) */
export const IOCTL_PRIVCMD_HYPERCALL = _IOC(_IOC_NONE, "P", 0, PrivcmdHypercall.size);
/* #define IOCTL_PRIVCMD_MMAPBATCH_V2 _IOC(_IOC_NONE, 'P', 4, sizeof(struct privcmd_mmapbatch_v2)) */
export const IOCTL_PRIVCMD_MMAPBATCH_V2 = _IOC(_IOC_NONE, "P", 4, PrivcmdMmapbatchV2.size);
/* #define IOCTL_PRIVCMD_DM_OP _IOC(_IOC_NONE, 'P', 5, sizeof(struct privcmd_dm_op)) */
export const IOCTL_PRIVCMD_DM_OP = _IOC(_IOC_NONE, "P", 5, PrivcmdDmOp.size);
/* #define IOCTL_PRIVCMD_RESTRICT _IOC(_IOC_NONE, 'P', 6, sizeof(domid_t)) */
export const IOCTL_PRIVCMD_RESTRICT = _IOC(_IOC_NONE, "P", 6, SIZEOF_DOMID_T);
/* #define IOCTL_PRIVCMD_MMAP_RESOURCE _IOC(_IOC_NONE, 'P', 7, sizeof(struct privcmd_mmap_resource)) */
export const IOCTL_PRIVCMD_MMAP_RESOURCE = _IOC(_IOC_NONE, "P", 7, PrivcmdMmapResource.size);
/* #define IOCTL_PRIVCMD_IRQFD _IOW('P', 8, struct privcmd_irqfd) */
export const IOCTL_PRIVCMD_IRQFD = _IOW("P", 8, PrivcmdIrqfd.size);
/* #define IOCTL_PRIVCMD_IOEVENTFD _IOW('P', 9, struct privcmd_ioeventfd) */
export const IOCTL_PRIVCMD_IOEVENTFD = _IOW("P", 9, PrivcmdIoeventfd.size);

/* Per-page error of IOCTL_PRIVCMD_MMAPBATCH_V2 meaning "paged out, retry" (-ENOENT). */
export const PRIVCMD_MMAPBATCH_PAGED_ERRNO = 2;

