// Wire layouts of vhost-user, one declaration per struct, offsets written out. All are packed and
// little-endian ("native byte order" on the little-endian hosts this project supports).
// Source: QEMU docs/interop/vhost-user.rst "Message Specification"; QEMU hw/virtio/vhost-user.c
// (`VhostUserMsg`, QEMU_PACKED); linux/vhost_types.h for the kernel structs vhost-user embeds.
import { defineStruct, u8, u16, u32, u64, bytes } from "@xen-vhost/vmm-sys-util";

/** vhost-user.rst "Header": request, flags (version in bits 0-1, REPLY bit 2, NEED_REPLY bit 3), size. */
export const VhostUserHeader = defineStruct("VhostUserHeader", { size: 12, packed: true }, {
  request: u32(0),
  flags: u32(4),
  size: u32(8),
});

/** Header flag bits (vhost-user.rst "Header"). */
export const VhostUserHeaderFlag = {
  VERSION_MASK: 0x3,
  VERSION: 0x1,
  REPLY: 0x4,
  NEED_REPLY: 0x8,
} as const;

/** "A single 64-bit integer". */
export const VhostUserU64 = defineStruct("VhostUserU64", { size: 8, packed: true }, { u64: u64(0) });

/** "A vring state description" = linux/vhost_types.h struct vhost_vring_state {unsigned index, num}. */
export const VhostUserVringState = defineStruct("vhost_vring_state", { size: 8, packed: true }, {
  index: u32(0),
  num: u32(4),
});

/** "A vring address description" = linux/vhost_types.h struct vhost_vring_addr. */
export const VhostUserVringAddr = defineStruct("vhost_vring_addr", { size: 40, packed: true }, {
  index: u32(0),
  flags: u32(4),
  desc_user_addr: u64(8),
  used_user_addr: u64(16),
  avail_user_addr: u64(24),
  log_guest_addr: u64(32),
});

/** VHOST_VRING_F_LOG (linux/vhost_types.h): log used-ring writes. */
export const VHOST_VRING_F_LOG = 0x1;

/** "Memory regions description": {u32 nregions; u32 padding} followed by the regions. */
export const VhostUserMemoryHeader = defineStruct("VhostUserMemory", { size: 8, packed: true }, {
  nregions: u32(0),
  padding: u32(4),
});

/** "A region" (32 bytes) without XEN_MMAP. */
export const VhostUserMemoryRegion = defineStruct("VhostUserMemoryRegion", { size: 32, packed: true }, {
  guest_phys_addr: u64(0),
  memory_size: u64(8),
  userspace_addr: u64(16),
  mmap_offset: u64(24),
});

/** The 40-byte region when VHOST_USER_PROTOCOL_F_XEN_MMAP is negotiated: + xen_mmap_flags, xen_mmap_data (domid). */
export const VhostUserMemoryRegionXen = defineStruct("VhostUserMemoryRegion(xen)", { size: 40, packed: true }, {
  guest_phys_addr: u64(0),
  memory_size: u64(8),
  userspace_addr: u64(16),
  mmap_offset: u64(24),
  xen_mmap_flags: u32(32),
  xen_mmap_data: u32(36),
});

/** "Single memory region description": u64 padding then one region (ADD_MEM_REG, REM_MEM_REG). */
export const VhostUserSingleMemoryRegionPadding = defineStruct("VhostUserMemRegMsg", { size: 8, packed: true }, {
  padding: u64(0),
});

/** "Log description" (SET_LOG_BASE). */
export const VhostUserLog = defineStruct("VhostUserLog", { size: 16, packed: true }, {
  mmap_size: u64(0),
  mmap_offset: u64(8),
});

/**
 * "An IOTLB message" = linux/vhost_types.h struct vhost_iotlb_msg. The C struct is not packed, so it
 * is 32 bytes (26 used + tail padding) and QEMU/libvhost-user send and check 32.
 */
export const VhostUserIotlb = defineStruct("vhost_iotlb_msg", { size: 32, packed: true }, {
  iova: u64(0),
  size: u64(8),
  uaddr: u64(16),
  perm: u8(24),
  type: u8(25),
});

/** "Virtio device config space" header; `size` bytes of config follow (at most 256). */
export const VhostUserConfigHeader = defineStruct("VhostUserConfig", { size: 12, packed: true }, {
  offset: u32(0),
  size: u32(4),
  flags: u32(8),
});

/** VHOST_USER_MAX_CONFIG_SIZE (QEMU hw/virtio/vhost-user.c). */
export const VHOST_USER_MAX_CONFIG_SIZE = 256;

/** "Vring area description" (VRING_HOST_NOTIFIER_MSG): u64 index|flags, size, offset. */
export const VhostUserVringArea = defineStruct("VhostUserVringArea", { size: 24, packed: true }, {
  u64: u64(0),
  size: u64(8),
  offset: u64(16),
});

/**
 * "Inflight description". The C struct (QEMU `VhostUserInflight`) is not packed: 20 bytes of fields
 * plus 4 of tail padding = 24, which is what QEMU sends and libvhost-user checks.
 */
export const VhostUserInflight = defineStruct("VhostUserInflight", { size: 24, packed: true }, {
  mmap_size: u64(0),
  mmap_offset: u64(8),
  num_queues: u16(16),
  queue_size: u16(18),
});

/** "VhostUserShared": a 16-byte UUID (virtio-dmabuf shared objects). */
export const VhostUserShared = defineStruct("VhostUserShared", { size: 16, packed: true }, { uuid: bytes(0, 16) });

/** "Device state transfer parameters" (SET_DEVICE_STATE_FD): direction (0 save, 1 load), phase (0 stopped). */
export const VhostUserTransferDeviceState = defineStruct("VhostUserTransferDeviceState", { size: 8, packed: true }, {
  direction: u32(0),
  phase: u32(4),
});

/** "MMap request" (SHMEM_MAP / SHMEM_UNMAP): shmid, padding, fd_offset, shm_offset, len, flags (bit 0 RW). */
export const VhostUserMMap = defineStruct("VhostUserMMap", { size: 40, packed: true }, {
  shmid: u8(0),
  padding: bytes(1, 7),
  fd_offset: u64(8),
  shm_offset: u64(16),
  len: u64(24),
  flags: u64(32),
});

/** VHOST_USER_FLAG_MAP_RW: map the shared memory read-write. */
export const VHOST_USER_FLAG_MAP_RW = 0x1;

/** VHOST_MEMORY_BASELINE_NREGIONS (vhost-user.rst): regions every back-end accepts in SET_MEM_TABLE. */
export const VHOST_MEMORY_BASELINE_NREGIONS = 8;

/** VIRTIO_MAX_SHMEM_REGIONS: entries of the shared-memory configuration. */
export const VHOST_USER_MAX_SHMEM_REGIONS = 256;

/** "Shared memory config" (GET_SHMEM_CONFIG reply): nregions, padding, u64 memory_sizes[256]. */
export const VhostUserShMemConfigHeader = defineStruct("VhostUserShMemConfig", { size: 8, packed: true }, {
  nregions: u32(0),
  padding: u32(4),
});
export const VHOST_USER_SHMEM_CONFIG_SIZE = 8 + 8 * VHOST_USER_MAX_SHMEM_REGIONS;

/** Bits of the u64 of SET_VRING_KICK/CALL/ERR and of the vring-area u64 (vhost-user.rst). */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
export const VHOST_USER_VRING_NOFD_MASK = 0x100;
