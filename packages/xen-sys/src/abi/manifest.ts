// The ABI table: every mirrored struct and constant with the C name it must match. test/abi.test.ts turns it
// into a C file of _Static_asserts (sizeof, _Alignof, offsetof and member sizes) plus one initialised object
// per bit field (all-ones in a zeroed struct, whose bytes the test reads back from the object file), and
// compiles it against Debian's libxen-dev and the kernel uapi headers for x86_64 and arm64.
import type { FieldSpec, StructLayout } from "@xen-vhost/vmm-sys-util";
import * as privcmd from "./privcmd.js";
import * as evtchn from "./evtchn.js";
import * as gntdev from "./gntdev.js";
import * as dmop from "./dm-op.js";
import * as ioreq from "./hvm-ioreq.js";
import * as sysctl from "./sysctl.js";
import * as domctl from "./domctl.js";
import * as xs from "./xs-wire.js";
import * as xen from "./xen.js";
import type { XenArch } from "./domctl.js";

export interface AbiStruct {
  readonly layout: StructLayout<Record<string, FieldSpec>>;
  /** The C type, e.g. `struct privcmd_mmapbatch_v2`. */
  readonly ctype: string;
  /** The header that declares it. */
  readonly header: string;
  /** Only on this architecture (arch-specific tails). */
  readonly arch?: XenArch;
  /** TS field name → C member designator where they differ (`arg0` → `arg[0]`). */
  readonly members?: Readonly<Record<string, string>>;
}

export interface AbiConstant {
  /** A C constant expression. */
  readonly c: string;
  readonly value: number | bigint;
  readonly header: string;
}

type AnyLayout = StructLayout<Record<string, FieldSpec>>;
const s = (layout: unknown, ctype: string, header: string, extra: Partial<AbiStruct> = {}): AbiStruct => ({
  layout: layout as AnyLayout,
  ctype,
  header,
  ...extra,
});

const PRIVCMD_H = "linux/include/uapi/xen/privcmd.h";
const EVTCHN_H = "linux/include/uapi/xen/evtchn.h";
const GNTDEV_H = "linux/include/uapi/xen/gntdev.h";
const DM_OP_H = "xen/include/public/hvm/dm_op.h";
const IOREQ_H = "xen/include/public/hvm/ioreq.h";
const SYSCTL_H = "xen/include/public/sysctl.h";
const DOMCTL_H = "xen/include/public/domctl.h";
const XS_WIRE_H = "xen/include/public/io/xs_wire.h";
const XEN_H = "xen/include/public/xen.h";
const MEMORY_H = "xen/include/public/memory.h";

export const abiStructs: readonly AbiStruct[] = [
  s(privcmd.PrivcmdHypercall, "struct privcmd_hypercall", PRIVCMD_H, {
    members: { arg0: "arg[0]", arg1: "arg[1]", arg2: "arg[2]", arg3: "arg[3]", arg4: "arg[4]" },
  }),
  s(privcmd.PrivcmdMmapbatchV2, "struct privcmd_mmapbatch_v2", PRIVCMD_H),
  s(privcmd.PrivcmdDmOpBuf, "struct privcmd_dm_op_buf", PRIVCMD_H),
  s(privcmd.PrivcmdDmOp, "struct privcmd_dm_op", PRIVCMD_H),
  s(privcmd.PrivcmdMmapResource, "struct privcmd_mmap_resource", PRIVCMD_H),
  s(privcmd.PrivcmdIrqfd, "struct privcmd_irqfd", PRIVCMD_H),
  s(privcmd.PrivcmdIoeventfd, "struct privcmd_ioeventfd", PRIVCMD_H),

  s(evtchn.IoctlEvtchnBindVirq, "struct ioctl_evtchn_bind_virq", EVTCHN_H),
  s(evtchn.IoctlEvtchnBindInterdomain, "struct ioctl_evtchn_bind_interdomain", EVTCHN_H),
  s(evtchn.IoctlEvtchnBindUnboundPort, "struct ioctl_evtchn_bind_unbound_port", EVTCHN_H),
  s(evtchn.IoctlEvtchnUnbind, "struct ioctl_evtchn_unbind", EVTCHN_H),
  s(evtchn.IoctlEvtchnNotify, "struct ioctl_evtchn_notify", EVTCHN_H),
  s(evtchn.IoctlEvtchnRestrictDomid, "struct ioctl_evtchn_restrict_domid", EVTCHN_H),

  s(gntdev.IoctlGntdevGrantRef, "struct ioctl_gntdev_grant_ref", GNTDEV_H),
  s(gntdev.IoctlGntdevMapGrantRef, "struct ioctl_gntdev_map_grant_ref", GNTDEV_H, {
    members: { refs0_domid: "refs[0].domid", refs0_ref: "refs[0].ref" },
  }),
  s(gntdev.IoctlGntdevUnmapGrantRef, "struct ioctl_gntdev_unmap_grant_ref", GNTDEV_H),
  s(gntdev.IoctlGntdevGetOffsetForVaddr, "struct ioctl_gntdev_get_offset_for_vaddr", GNTDEV_H),
  s(gntdev.IoctlGntdevSetMaxGrants, "struct ioctl_gntdev_set_max_grants", GNTDEV_H),
  s(gntdev.IoctlGntdevUnmapNotify, "struct ioctl_gntdev_unmap_notify", GNTDEV_H),
  s(gntdev.GntdevGrantCopySegment, "struct gntdev_grant_copy_segment", GNTDEV_H, {
    members: { source_virt: "source.virt", dest_virt: "dest.virt" },
  }),
  s(gntdev.GntdevGrantCopyForeign, "__typeof__(((struct gntdev_grant_copy_segment *)0)->source.foreign)", GNTDEV_H),
  s(gntdev.IoctlGntdevGrantCopy, "struct ioctl_gntdev_grant_copy", GNTDEV_H),

  s(dmop.XenDmOp, "struct xen_dm_op", DM_OP_H),
  s(dmop.XenDmOpCreateIoreqServer, "struct xen_dm_op_create_ioreq_server", DM_OP_H),
  s(dmop.XenDmOpGetIoreqServerInfo, "struct xen_dm_op_get_ioreq_server_info", DM_OP_H),
  s(dmop.XenDmOpIoreqServerRange, "struct xen_dm_op_ioreq_server_range", DM_OP_H),
  s(dmop.XenDmOpSetIoreqServerState, "struct xen_dm_op_set_ioreq_server_state", DM_OP_H),
  s(dmop.XenDmOpDestroyIoreqServer, "struct xen_dm_op_destroy_ioreq_server", DM_OP_H),
  s(dmop.XenDmOpTrackDirtyVram, "struct xen_dm_op_track_dirty_vram", DM_OP_H),
  s(dmop.XenDmOpSetPciIntxLevel, "struct xen_dm_op_set_pci_intx_level", DM_OP_H),
  s(dmop.XenDmOpSetIsaIrqLevel, "struct xen_dm_op_set_isa_irq_level", DM_OP_H),
  s(dmop.XenDmOpSetPciLinkRoute, "struct xen_dm_op_set_pci_link_route", DM_OP_H),
  s(dmop.XenDmOpModifiedMemory, "struct xen_dm_op_modified_memory", DM_OP_H),
  s(dmop.XenDmOpModifiedMemoryExtent, "struct xen_dm_op_modified_memory_extent", DM_OP_H),
  s(dmop.XenDmOpSetMemType, "struct xen_dm_op_set_mem_type", DM_OP_H),
  s(dmop.XenDmOpInjectEvent, "struct xen_dm_op_inject_event", DM_OP_H),
  s(dmop.XenDmOpInjectMsi, "struct xen_dm_op_inject_msi", DM_OP_H),
  s(dmop.XenDmOpMapMemTypeToIoreqServer, "struct xen_dm_op_map_mem_type_to_ioreq_server", DM_OP_H),
  s(dmop.XenDmOpRemoteShutdown, "struct xen_dm_op_remote_shutdown", DM_OP_H),
  s(dmop.XenDmOpRelocateMemory, "struct xen_dm_op_relocate_memory", DM_OP_H),
  s(dmop.XenDmOpPinMemoryCacheattr, "struct xen_dm_op_pin_memory_cacheattr", DM_OP_H),
  s(dmop.XenDmOpSetIrqLevel, "struct xen_dm_op_set_irq_level", DM_OP_H),
  s(dmop.XenDmOpNrVcpus, "struct xen_dm_op_nr_vcpus", DM_OP_H),

  s(ioreq.IoReq, "struct ioreq", IOREQ_H),
  s(ioreq.SharedIopage, "struct shared_iopage", IOREQ_H),
  s(ioreq.BufIoreq, "struct buf_ioreq", IOREQ_H),
  s(ioreq.BufferedIopage, "struct buffered_iopage", IOREQ_H),

  s(sysctl.XenSysctl, "struct xen_sysctl", SYSCTL_H),
  s(sysctl.XenSysctlGetdomaininfolist, "struct xen_sysctl_getdomaininfolist", SYSCTL_H),
  s(sysctl.XenSysctlPhysinfo, "struct xen_sysctl_physinfo", SYSCTL_H),
  s(sysctl.XenSysctlReadconsole, "struct xen_sysctl_readconsole", SYSCTL_H),

  s(domctl.XenDomctl, "struct xen_domctl", DOMCTL_H),
  s(domctl.XenArchDomainconfigX86, "struct xen_arch_domainconfig", "xen/include/public/arch-x86/xen.h", { arch: "x86_64" }),
  s(domctl.XenArchDomainconfigArm, "struct xen_arch_domainconfig", "xen/include/public/arch-arm.h", { arch: "arm64" }),
  s(domctl.XenDomctlGetdomaininfoX86, "struct xen_domctl_getdomaininfo", DOMCTL_H, { arch: "x86_64" }),
  s(domctl.XenDomctlGetdomaininfoArm, "struct xen_domctl_getdomaininfo", DOMCTL_H, { arch: "arm64" }),

  s(xs.XsdSockmsg, "struct xsd_sockmsg", XS_WIRE_H),
  s(xs.XenstoreDomainInterface, "struct xenstore_domain_interface", XS_WIRE_H),
];

const c = (cExpr: string, value: number | bigint, header: string): AbiConstant => ({ c: cExpr, value, header });

export const abiConstants: readonly AbiConstant[] = [
  c("IOCTL_PRIVCMD_HYPERCALL", privcmd.IOCTL_PRIVCMD_HYPERCALL, PRIVCMD_H),
  c("IOCTL_PRIVCMD_MMAPBATCH_V2", privcmd.IOCTL_PRIVCMD_MMAPBATCH_V2, PRIVCMD_H),
  c("IOCTL_PRIVCMD_DM_OP", privcmd.IOCTL_PRIVCMD_DM_OP, PRIVCMD_H),
  c("IOCTL_PRIVCMD_RESTRICT", privcmd.IOCTL_PRIVCMD_RESTRICT, PRIVCMD_H),
  c("IOCTL_PRIVCMD_MMAP_RESOURCE", privcmd.IOCTL_PRIVCMD_MMAP_RESOURCE, PRIVCMD_H),
  c("IOCTL_PRIVCMD_IRQFD", privcmd.IOCTL_PRIVCMD_IRQFD, PRIVCMD_H),
  c("IOCTL_PRIVCMD_IOEVENTFD", privcmd.IOCTL_PRIVCMD_IOEVENTFD, PRIVCMD_H),
  c("PRIVCMD_IRQFD_FLAG_DEASSIGN", privcmd.PRIVCMD_IRQFD_FLAG_DEASSIGN, PRIVCMD_H),
  c("PRIVCMD_IOEVENTFD_FLAG_DEASSIGN", privcmd.PRIVCMD_IOEVENTFD_FLAG_DEASSIGN, PRIVCMD_H),

  c("IOCTL_EVTCHN_BIND_VIRQ", evtchn.IOCTL_EVTCHN_BIND_VIRQ, EVTCHN_H),
  c("IOCTL_EVTCHN_BIND_INTERDOMAIN", evtchn.IOCTL_EVTCHN_BIND_INTERDOMAIN, EVTCHN_H),
  c("IOCTL_EVTCHN_BIND_UNBOUND_PORT", evtchn.IOCTL_EVTCHN_BIND_UNBOUND_PORT, EVTCHN_H),
  c("IOCTL_EVTCHN_UNBIND", evtchn.IOCTL_EVTCHN_UNBIND, EVTCHN_H),
  c("IOCTL_EVTCHN_NOTIFY", evtchn.IOCTL_EVTCHN_NOTIFY, EVTCHN_H),
  c("IOCTL_EVTCHN_RESET", evtchn.IOCTL_EVTCHN_RESET, EVTCHN_H),
  c("IOCTL_EVTCHN_RESTRICT_DOMID", evtchn.IOCTL_EVTCHN_RESTRICT_DOMID, EVTCHN_H),

  c("IOCTL_GNTDEV_MAP_GRANT_REF", gntdev.IOCTL_GNTDEV_MAP_GRANT_REF, GNTDEV_H),
  c("IOCTL_GNTDEV_UNMAP_GRANT_REF", gntdev.IOCTL_GNTDEV_UNMAP_GRANT_REF, GNTDEV_H),
  c("IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR", gntdev.IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR, GNTDEV_H),
  c("IOCTL_GNTDEV_SET_MAX_GRANTS", gntdev.IOCTL_GNTDEV_SET_MAX_GRANTS, GNTDEV_H),
  c("IOCTL_GNTDEV_SET_UNMAP_NOTIFY", gntdev.IOCTL_GNTDEV_SET_UNMAP_NOTIFY, GNTDEV_H),
  c("IOCTL_GNTDEV_GRANT_COPY", gntdev.IOCTL_GNTDEV_GRANT_COPY, GNTDEV_H),
  c("UNMAP_NOTIFY_CLEAR_BYTE", gntdev.UNMAP_NOTIFY_CLEAR_BYTE, GNTDEV_H),
  c("UNMAP_NOTIFY_SEND_EVENT", gntdev.UNMAP_NOTIFY_SEND_EVENT, GNTDEV_H),
  c("GNTCOPY_source_gref", gntdev.GNTCOPY_source_gref, "xen/include/public/grant_table.h"),
  c("GNTCOPY_dest_gref", gntdev.GNTCOPY_dest_gref, "xen/include/public/grant_table.h"),
  c("GNTST_okay", gntdev.GNTST_okay, "xen/include/public/grant_table.h"),

  ...Object.entries(dmop.XEN_DMOP).map(([k, v]) => c(`XEN_DMOP_${k}`, v, DM_OP_H)),
  ...Object.entries(dmop.XEN_DMOP_IO_RANGE).map(([k, v]) => c(`XEN_DMOP_IO_RANGE_${k}`, v, DM_OP_H)),
  ...Object.entries(dmop.HVM_IOREQSRV_BUFIOREQ).map(([k, v]) => c(`HVM_IOREQSRV_BUFIOREQ_${k}`, v, "xen/include/public/hvm/hvm_op.h")),
  c("XEN_DMOP_no_gfns", dmop.XEN_DMOP_no_gfns, DM_OP_H),
  c("XEN_DMOP_IOREQ_MEM_ACCESS_READ", dmop.XEN_DMOP_IOREQ_MEM_ACCESS_READ, DM_OP_H),
  c("XEN_DMOP_IOREQ_MEM_ACCESS_WRITE", dmop.XEN_DMOP_IOREQ_MEM_ACCESS_WRITE, DM_OP_H),
  c("XEN_DMOP_PCI_SBDF(0x1234, 0x56, 0x1f, 7)", dmop.XEN_DMOP_PCI_SBDF(0x1234, 0x56, 0x1f, 7), DM_OP_H),
  c("offsetof(struct xen_dm_op, u)", dmop.XEN_DM_OP_PAYLOAD_OFFSET, DM_OP_H),

  c("IOREQ_READ", ioreq.IOREQ_READ, IOREQ_H),
  c("IOREQ_WRITE", ioreq.IOREQ_WRITE, IOREQ_H),
  c("STATE_IOREQ_NONE", ioreq.STATE_IOREQ_NONE, IOREQ_H),
  c("STATE_IOREQ_READY", ioreq.STATE_IOREQ_READY, IOREQ_H),
  c("STATE_IOREQ_INPROCESS", ioreq.STATE_IOREQ_INPROCESS, IOREQ_H),
  c("STATE_IORESP_READY", ioreq.STATE_IORESP_READY, IOREQ_H),
  ...Object.entries(ioreq.IOREQ_TYPE).map(([k, v]) => c(`IOREQ_TYPE_${k}`, v, IOREQ_H)),
  c("IOREQ_BUFFER_SLOT_NUM", ioreq.IOREQ_BUFFER_SLOT_NUM, IOREQ_H),
  c("XENMEM_resource_ioreq_server", ioreq.XENMEM_resource_ioreq_server, MEMORY_H),
  c("XENMEM_resource_grant_table", ioreq.XENMEM_resource_grant_table, MEMORY_H),
  c("XENMEM_resource_ioreq_server_frame_bufioreq", ioreq.XENMEM_resource_ioreq_server_frame_bufioreq, MEMORY_H),
  c("XENMEM_resource_ioreq_server_frame_ioreq(5)", ioreq.XENMEM_resource_ioreq_server_frame_ioreq(5), MEMORY_H),

  c("XEN_SYSCTL_INTERFACE_VERSION", sysctl.XEN_SYSCTL_INTERFACE_VERSION, SYSCTL_H),
  ...Object.entries(sysctl.XEN_SYSCTL).map(([k, v]) => c(`XEN_SYSCTL_${k}`, v, SYSCTL_H)),
  ...Object.entries(sysctl.XEN_SYSCTL_PHYSCAP).map(([k, v]) => c(`XEN_SYSCTL_PHYSCAP_${k}`, v, SYSCTL_H)),
  c("offsetof(struct xen_sysctl, u)", sysctl.XEN_SYSCTL_PAYLOAD_OFFSET, SYSCTL_H),
  c("XEN_DOMCTL_INTERFACE_VERSION", domctl.XEN_DOMCTL_INTERFACE_VERSION, DOMCTL_H),
  ...Object.entries(domctl.XEN_DOMCTL).map(([k, v]) => c(`XEN_DOMCTL_${k}`, v, DOMCTL_H)),
  ...Object.entries(domctl.XEN_DOMINF).map(([k, v]) => c(`XEN_DOMINF_${k}`, v, DOMCTL_H)),
  c("XEN_DOMINF_shutdownmask", domctl.XEN_DOMINF_shutdownmask, DOMCTL_H),
  c("XEN_DOMINF_shutdownshift", domctl.XEN_DOMINF_shutdownshift, DOMCTL_H),
  c("offsetof(struct xen_domctl, u)", domctl.XEN_DOMCTL_PAYLOAD_OFFSET, DOMCTL_H),
  ...Object.entries(domctl.SHUTDOWN).map(([k, v]) => c(`SHUTDOWN_${k}`, v, "xen/include/public/sched.h")),

  ...Object.entries(xs.XS).map(([k, v]) => c(`XS_${k}`, v, XS_WIRE_H)),
  c("XS_WATCH_PATH", xs.XS_WATCH_PATH, XS_WIRE_H),
  c("XS_WATCH_TOKEN", xs.XS_WATCH_TOKEN, XS_WIRE_H),
  c("XENSTORE_PAYLOAD_MAX", xs.XENSTORE_PAYLOAD_MAX, XS_WIRE_H),
  c("XENSTORE_ABS_PATH_MAX", xs.XENSTORE_ABS_PATH_MAX, XS_WIRE_H),
  c("XENSTORE_REL_PATH_MAX", xs.XENSTORE_REL_PATH_MAX, XS_WIRE_H),
  c("XENSTORE_RING_SIZE", xs.XENSTORE_RING_SIZE, XS_WIRE_H),
  ...Object.entries(xs.XenbusState).map(([k, v]) => c(`XenbusState${k}`, v, "xen/include/public/io/xenbus.h")),

  ...Object.entries(xen.__HYPERVISOR).map(([k, v]) => c(`__HYPERVISOR_${k}`, v, XEN_H)),
  c("CONSOLEIO_write", xen.CONSOLEIO_write, XEN_H),
  c("CONSOLEIO_read", xen.CONSOLEIO_read, XEN_H),
  c("DOMID_FIRST_RESERVED", xen.DOMID_FIRST_RESERVED, XEN_H),
  c("DOMID_SELF", xen.DOMID_SELF, XEN_H),
  c("DOMID_IO", xen.DOMID_IO, XEN_H),
  c("DOMID_XEN", xen.DOMID_XEN, XEN_H),
  c("DOMID_COW", xen.DOMID_COW, XEN_H),
  c("DOMID_INVALID", xen.DOMID_INVALID, XEN_H),
  c("DOMID_IDLE", xen.DOMID_IDLE, XEN_H),
];

/** Header order for the probe (xen.h first: the kernel uapi headers use domid_t/xen_pfn_t/grant_ref_t). */
export const abiIncludes = [
  "xen/xen.h",
  "xen/grant_table.h",
  "xen/memory.h",
  "xen/hvm/hvm_op.h",
  "xen/hvm/dm_op.h",
  "xen/hvm/ioreq.h",
  "xen/domctl.h",
  "xen/sched.h",
  "xen/sysctl.h",
  "xen/io/xs_wire.h",
  "xen/io/xenbus.h",
  "xen/privcmd.h",
  "xen/evtchn.h",
  "xen/gntdev.h",
] as const;
