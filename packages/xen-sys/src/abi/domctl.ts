// xen/include/public/domctl.h (Xen 4.17, XEN_DOMCTL_INTERFACE_VERSION 0x15) and the arch tails
// (public/arch-x86/xen.h, public/arch-arm.h). `struct xen_domctl_getdomaininfo` ends with the arch-specific
// `struct xen_arch_domainconfig`, so its size differs: 112 bytes on x86_64, 120 on arm64. The same struct is
// the element of XEN_SYSCTL_getdomaininfolist's buffer, so the stride differs too.
import { defineStruct, u8, u16, u32, u64, bytes, type StructValue } from "@xen-vhost/vmm-sys-util";

/** The architectures whose Xen ABI is mirrored. */
export type XenArch = "x86_64" | "arm64";

/** The architecture this process runs on (the ABI of the hypervisor it talks to). */
export function hostXenArch(): XenArch {
  if (process.arch === "x64") return "x86_64";
  if (process.arch === "arm64") return "arm64";
  throw new RangeError(`Xen ABI not mirrored for ${process.arch} (x86_64 and arm64 only)`);
}

/** The version of the headers the layouts are checked against. */
export const XEN_DOMCTL_INTERFACE_VERSION = 0x15;
/** Versions with the getdomaininfo layout below: 0x15 (4.17-4.18), 0x16, 0x17 (4.19+), 0x14 (4.16). */
export const XEN_DOMCTL_INTERFACE_VERSIONS = [0x15, 0x16, 0x17, 0x14] as const;

/** `#define XEN_DOMCTL_*` command numbers used here. */
export const XEN_DOMCTL = { getdomaininfo: 5 } as const;

// struct xen_domctl { uint32_t cmd; uint32_t interface_version; domid_t domain; uint16_t _pad[3];
//   union { ...; uint8_t pad[128]; } u; };
export const XenDomctl = defineStruct("xen_domctl", { size: 144, align: 8 }, {
  cmd: u32(0), interface_version: u32(4), domain: u16(8), _pad: bytes(10, 6), u: bytes(16, 128),
});
export const XEN_DOMCTL_PAYLOAD_OFFSET = 16;

// public/arch-x86/xen.h: struct xen_arch_domainconfig { uint32_t emulation_flags; uint32_t misc_flags; };
export const XenArchDomainconfigX86 = defineStruct("xen_arch_domainconfig", { size: 8, align: 4 }, {
  emulation_flags: u32(0), misc_flags: u32(4),
});
// public/arch-arm.h: struct xen_arch_domainconfig { uint8_t gic_version; uint16_t tee_type; uint32_t nr_spis;
//   uint32_t clock_frequency; };
export const XenArchDomainconfigArm = defineStruct("xen_arch_domainconfig", { size: 12, align: 4 }, {
  gic_version: u8(0), tee_type: u16(2), nr_spis: u32(4), clock_frequency: u32(8),
});

const getdomaininfoFields = {
  domain: u16(0), pad1: u16(2), flags: u32(4), tot_pages: u64(8), max_pages: u64(16), outstanding_pages: u64(24),
  shr_pages: u64(32), paged_pages: u64(40), shared_info_frame: u64(48), cpu_time: u64(56), nr_online_vcpus: u32(64),
  max_vcpu_id: u32(68), ssidref: u32(72), handle: bytes(76, 16), cpupool: u32(92), gpaddr_bits: u8(96),
  pad2: bytes(97, 7),
} as const;

// struct xen_domctl_getdomaininfo { domid_t domain; uint16_t pad1; uint32_t flags; uint64_aligned_t tot_pages,
//   max_pages, outstanding_pages, shr_pages, paged_pages, shared_info_frame, cpu_time; uint32_t nr_online_vcpus,
//   max_vcpu_id, ssidref; xen_domain_handle_t handle; uint32_t cpupool; uint8_t gpaddr_bits; uint8_t pad2[7];
//   struct xen_arch_domainconfig arch_config; };
export const XenDomctlGetdomaininfoX86 = defineStruct("xen_domctl_getdomaininfo", { size: 112, align: 8 }, {
  ...getdomaininfoFields, arch_config: bytes(104, XenArchDomainconfigX86.size),
});
export const XenDomctlGetdomaininfoArm = defineStruct("xen_domctl_getdomaininfo", { size: 120, align: 8 }, {
  ...getdomaininfoFields, arch_config: bytes(104, XenArchDomainconfigArm.size),
});
export type XenDomctlGetdomaininfo = StructValue<typeof XenDomctlGetdomaininfoX86>;

/** The getdomaininfo layout of an architecture. */
export function xenDomctlGetdomaininfo(arch: XenArch): typeof XenDomctlGetdomaininfoX86 {
  return arch === "x86_64" ? XenDomctlGetdomaininfoX86 : XenDomctlGetdomaininfoArm;
}

/* XEN_DOMINF_dying (1U<<0) ... XEN_DOMINF_hap (1U<<8); shutdown code = (flags >> 16) & 255. */
export const XEN_DOMINF = {
  dying: 1 << 0, hvm_guest: 1 << 1, shutdown: 1 << 2, paused: 1 << 3, blocked: 1 << 4, running: 1 << 5,
  debugged: 1 << 6, xs_domain: 1 << 7, hap: 1 << 8,
} as const;
export const XEN_DOMINF_shutdownmask = 255;
export const XEN_DOMINF_shutdownshift = 16;

// xen/include/public/sched.h: the reasons of SCHEDOP_shutdown / SHUTDOWN_* (what getdomaininfo's shutdown code
// holds once XEN_DOMINF_shutdown is set; a live domain carries Xen's internal SHUTDOWN_CODE_INVALID, ~0u,
// which reads as 255 after the mask).
export const SHUTDOWN = { poweroff: 0, reboot: 1, suspend: 2, crash: 3, watchdog: 4, soft_reset: 5 } as const;
export type ShutdownReason = keyof typeof SHUTDOWN;
