// Linux include/uapi/xen/gntdev.h (/dev/xen/gntdev).
import { _IOC, _IOC_NONE, defineStruct, u16, i16, u32, u64 } from "@xen-vhost/vmm-sys-util";

export const GNTDEV_DEVICE = "/dev/xen/gntdev";

// struct ioctl_gntdev_grant_ref { __u32 domid; __u32 ref; };
export const IoctlGntdevGrantRef = defineStruct("ioctl_gntdev_grant_ref", { size: 8, align: 4 }, {
  domid: u32(0), ref: u32(4),
});
// struct ioctl_gntdev_map_grant_ref { __u32 count; __u32 pad; __u64 index; struct ioctl_gntdev_grant_ref refs[1]; };
// The ioctl number encodes sizeof with refs[1]; the kernel reads `count` refs from offset 16.
export const IoctlGntdevMapGrantRef = defineStruct("ioctl_gntdev_map_grant_ref", { size: 24, align: 8 }, {
  count: u32(0), pad: u32(4), index: u64(8), refs0_domid: u32(16), refs0_ref: u32(20),
});
// struct ioctl_gntdev_unmap_grant_ref { __u64 index; __u32 count; __u32 pad; };
export const IoctlGntdevUnmapGrantRef = defineStruct("ioctl_gntdev_unmap_grant_ref", { size: 16, align: 8 }, {
  index: u64(0), count: u32(8), pad: u32(12),
});
// struct ioctl_gntdev_get_offset_for_vaddr { __u64 vaddr; __u64 offset; __u32 count; __u32 pad; };
export const IoctlGntdevGetOffsetForVaddr = defineStruct("ioctl_gntdev_get_offset_for_vaddr", { size: 24, align: 8 }, {
  vaddr: u64(0), offset: u64(8), count: u32(16), pad: u32(20),
});
// struct ioctl_gntdev_set_max_grants { __u32 count; };
export const IoctlGntdevSetMaxGrants = defineStruct("ioctl_gntdev_set_max_grants", { size: 4, align: 4 }, {
  count: u32(0),
});
// struct ioctl_gntdev_unmap_notify { __u64 index; __u32 action; __u32 event_channel_port; };
export const IoctlGntdevUnmapNotify = defineStruct("ioctl_gntdev_unmap_notify", { size: 16, align: 8 }, {
  index: u64(0), action: u32(8), event_channel_port: u32(12),
});
/* #define UNMAP_NOTIFY_CLEAR_BYTE 0x1, UNMAP_NOTIFY_SEND_EVENT 0x2 */
export const UNMAP_NOTIFY_CLEAR_BYTE = 0x1;
export const UNMAP_NOTIFY_SEND_EVENT = 0x2;

// struct gntdev_grant_copy_segment { union { void *virt; struct { grant_ref_t ref; __u16 offset; domid_t domid; }
//   foreign; } source, dest; __u16 len; __u16 flags; __s16 status; };
export const GntdevGrantCopySegment = defineStruct("gntdev_grant_copy_segment", { size: 24, align: 8 }, {
  source_virt: u64(0), dest_virt: u64(8), len: u16(16), flags: u16(18), status: i16(20),
});
// The `foreign` arm of the source/dest unions (at offset 0 and 8 of the segment).
export const GntdevGrantCopyForeign = defineStruct("gntdev_grant_copy_segment.source.foreign", { size: 8, align: 4 }, {
  ref: u32(0), offset: u16(4), domid: u16(6),
});
// struct ioctl_gntdev_grant_copy { unsigned int count; struct gntdev_grant_copy_segment *segments; };
export const IoctlGntdevGrantCopy = defineStruct("ioctl_gntdev_grant_copy", { size: 16, align: 8 }, {
  count: u32(0), segments: u64(8),
});
// xen/include/public/grant_table.h: GNTCOPY_source_gref (1<<0), GNTCOPY_dest_gref (1<<1); GNTST_okay 0.
export const GNTCOPY_source_gref = 1 << 0;
export const GNTCOPY_dest_gref = 1 << 1;
export const GNTST_okay = 0;

/* #define IOCTL_GNTDEV_MAP_GRANT_REF _IOC(_IOC_NONE, 'G', 0, sizeof(struct ioctl_gntdev_map_grant_ref)) */
export const IOCTL_GNTDEV_MAP_GRANT_REF = _IOC(_IOC_NONE, "G", 0, IoctlGntdevMapGrantRef.size);
/* #define IOCTL_GNTDEV_UNMAP_GRANT_REF _IOC(_IOC_NONE, 'G', 1, sizeof(struct ioctl_gntdev_unmap_grant_ref)) */
export const IOCTL_GNTDEV_UNMAP_GRANT_REF = _IOC(_IOC_NONE, "G", 1, IoctlGntdevUnmapGrantRef.size);
/* #define IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR _IOC(_IOC_NONE, 'G', 2, sizeof(struct ioctl_gntdev_get_offset_for_vaddr)) */
export const IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR = _IOC(_IOC_NONE, "G", 2, IoctlGntdevGetOffsetForVaddr.size);
/* #define IOCTL_GNTDEV_SET_MAX_GRANTS _IOC(_IOC_NONE, 'G', 3, sizeof(struct ioctl_gntdev_set_max_grants)) */
export const IOCTL_GNTDEV_SET_MAX_GRANTS = _IOC(_IOC_NONE, "G", 3, IoctlGntdevSetMaxGrants.size);
/* #define IOCTL_GNTDEV_SET_UNMAP_NOTIFY _IOC(_IOC_NONE, 'G', 7, sizeof(struct ioctl_gntdev_unmap_notify)) */
export const IOCTL_GNTDEV_SET_UNMAP_NOTIFY = _IOC(_IOC_NONE, "G", 7, IoctlGntdevUnmapNotify.size);
/* #define IOCTL_GNTDEV_GRANT_COPY _IOC(_IOC_NONE, 'G', 8, sizeof(struct ioctl_gntdev_grant_copy)) */
export const IOCTL_GNTDEV_GRANT_COPY = _IOC(_IOC_NONE, "G", 8, IoctlGntdevGrantCopy.size);
