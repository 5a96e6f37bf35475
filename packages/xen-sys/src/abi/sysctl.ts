// xen/include/public/sysctl.h (Xen 4.17, XEN_SYSCTL_INTERFACE_VERSION 0x15). Only the operations a device model
// needs are mirrored. `struct xen_sysctl` embeds `interface_version`; Xen rejects any other version with
// -EACCES, so the typed layer probes the candidates below (src/sysctl.ts).
import { defineStruct, u8, u16, u32, u64, bytes, type StructValue } from "@xen-vhost/vmm-sys-util";

/** The version of the headers the layouts are checked against. */
export const XEN_SYSCTL_INTERFACE_VERSION = 0x15;
/**
 * Versions whose getdomaininfolist/physinfo layouts equal the ones below, most likely first:
 * 0x15 (Xen 4.17-4.20), 0x16 (4.21: a livepatch change only), 0x14 (4.16: physinfo differs, see PHYSINFO_MIN_VERSION).
 */
export const XEN_SYSCTL_INTERFACE_VERSIONS = [0x15, 0x16, 0x14] as const;
/** physinfo gained `arch_capabilities` + `pad` with version 0x15; older layouts are not supported. */
export const XEN_SYSCTL_PHYSINFO_MIN_VERSION = 0x15;

/** `#define XEN_SYSCTL_*` command numbers used here. */
export const XEN_SYSCTL = { readconsole: 1, physinfo: 3, getdomaininfolist: 6 } as const;

// struct xen_sysctl { uint32_t cmd; uint32_t interface_version; union { ...; uint8_t pad[128]; } u; };
export const XenSysctl = defineStruct("xen_sysctl", { size: 136, align: 8 }, {
  cmd: u32(0), interface_version: u32(4), u: bytes(8, 128),
});
export const XEN_SYSCTL_PAYLOAD_OFFSET = 8;

// struct xen_sysctl_getdomaininfolist { domid_t first_domain; uint32_t max_domains;
//   XEN_GUEST_HANDLE_64(xen_domctl_getdomaininfo_t) buffer; uint32_t num_domains; };
export const XenSysctlGetdomaininfolist = defineStruct("xen_sysctl_getdomaininfolist", { size: 24, align: 8 }, {
  first_domain: u16(0), max_domains: u32(4), buffer: u64(8), num_domains: u32(16),
});

// struct xen_sysctl_physinfo { uint32_t threads_per_core, cores_per_socket, nr_cpus, max_cpu_id, nr_nodes,
//   max_node_id, cpu_khz, capabilities, arch_capabilities, pad; uint64_aligned_t total_pages, free_pages,
//   scrub_pages, outstanding_pages, max_mfn; uint32_t hw_cap[8]; };
export const XenSysctlPhysinfo = defineStruct("xen_sysctl_physinfo", { size: 112, align: 8 }, {
  threads_per_core: u32(0), cores_per_socket: u32(4), nr_cpus: u32(8), max_cpu_id: u32(12), nr_nodes: u32(16),
  max_node_id: u32(20), cpu_khz: u32(24), capabilities: u32(28), arch_capabilities: u32(32), pad: u32(36),
  total_pages: u64(40), free_pages: u64(48), scrub_pages: u64(56), outstanding_pages: u64(64), max_mfn: u64(72),
  hw_cap: bytes(80, 32),
});
export type XenSysctlPhysinfo = StructValue<typeof XenSysctlPhysinfo>;

/* XEN_SYSCTL_PHYSCAP_hvm (1u<<0), _pv (1u<<1), _directio (1u<<2), _hap (1u<<3), _shadow (1u<<4),
   _iommu_hap_pt_share (1u<<5), _vmtrace (1u<<6), _vpmu (1u<<7), _gnttab_v1 (1u<<8), _gnttab_v2 (1u<<9) */
export const XEN_SYSCTL_PHYSCAP = {
  hvm: 1 << 0, pv: 1 << 1, directio: 1 << 2, hap: 1 << 3, shadow: 1 << 4, iommu_hap_pt_share: 1 << 5,
  vmtrace: 1 << 6, vpmu: 1 << 7, gnttab_v1: 1 << 8, gnttab_v2: 1 << 9,
} as const;

// struct xen_sysctl_readconsole { uint8_t clear; uint8_t incremental; uint8_t pad0, pad1; uint32_t index;
//   XEN_GUEST_HANDLE_64(char) buffer; uint32_t count; };
export const XenSysctlReadconsole = defineStruct("xen_sysctl_readconsole", { size: 24, align: 8 }, {
  clear: u8(0), incremental: u8(1), pad0: u8(2), pad1: u8(3), index: u32(4), buffer: u64(8),
  count: u32(16),
});
