// virtio-mmio version 2 register map: Virtual I/O Device (VIRTIO) Version 1.2, section 4.2.2
// ("MMIO Device Register Layout"), the same offsets as Linux include/uapi/linux/virtio_mmio.h.

export const VIRTIO_MMIO_MAGIC_VALUE = 0x000; // R: 0x74726976 ("virt")
export const VIRTIO_MMIO_VERSION = 0x004; // R: 2 (1 is the legacy interface, not offered)
export const VIRTIO_MMIO_DEVICE_ID = 0x008; // R
export const VIRTIO_MMIO_VENDOR_ID = 0x00c; // R
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010; // R: bits [32*sel, 32*sel+31]
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014; // W
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020; // W
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024; // W
export const VIRTIO_MMIO_QUEUE_SEL = 0x030; // W
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034; // R
export const VIRTIO_MMIO_QUEUE_NUM = 0x038; // W
export const VIRTIO_MMIO_QUEUE_READY = 0x044; // RW
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050; // W
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060; // R
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064; // W
export const VIRTIO_MMIO_STATUS = 0x070; // RW
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080; // W
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084; // W
export const VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090; // W ("QueueDriver")
export const VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094; // W
export const VIRTIO_MMIO_QUEUE_USED_LOW = 0x0a0; // W ("QueueDevice")
export const VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0a4; // W
export const VIRTIO_MMIO_SHM_SEL = 0x0ac; // W
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0; // R
export const VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4; // R
export const VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8; // R
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc; // R
export const VIRTIO_MMIO_QUEUE_RESET = 0x0c0; // RW (needs VIRTIO_F_RING_RESET)
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc; // R
export const VIRTIO_MMIO_CONFIG = 0x100; // RW: device-specific configuration space

/** The size of one device's MMIO window (Xen's toolstack and QEMU use 0x200 per device). */
export const VIRTIO_MMIO_WINDOW = 0x200;

export const VIRTIO_MMIO_MAGIC = 0x74726976;

/** InterruptStatus / InterruptACK bits. */
export const VIRTIO_MMIO_INT_VRING = 1 << 0; // "Used Buffer Notification"
export const VIRTIO_MMIO_INT_CONFIG = 1 << 1; // "Configuration Change Notification"

/** Device status bits: virtio 1.2 section 2.1. */
export const VirtioStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** Transport feature bits (virtio 1.2 section 6) as bit numbers. */
export const VirtioFeature = {
  NOTIFY_ON_EMPTY: 24,
  ANY_LAYOUT: 27,
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  /** Not a virtio bit: vhost-user's VHOST_USER_F_PROTOCOL_FEATURES, never offered to a driver. */
  VHOST_USER_PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  NOTIFICATION_DATA: 38,
  NOTIF_CONFIG_DATA: 39,
  RING_RESET: 40,
} as const;

export const bit = (n: number): bigint => 1n << BigInt(n);

/** A human name for a register offset (for logs and errors). */
export function registerName(offset: number): string {
  if (offset >= VIRTIO_MMIO_CONFIG) return `CONFIG+0x${(offset - VIRTIO_MMIO_CONFIG).toString(16)}`;
  return registerNames.get(offset) ?? `0x${offset.toString(16).padStart(3, "0")}`;
}

const registerNames = new Map<number, string>([
  [VIRTIO_MMIO_MAGIC_VALUE, "MagicValue"], [VIRTIO_MMIO_VERSION, "Version"], [VIRTIO_MMIO_DEVICE_ID, "DeviceID"],
  [VIRTIO_MMIO_VENDOR_ID, "VendorID"], [VIRTIO_MMIO_DEVICE_FEATURES, "DeviceFeatures"],
  [VIRTIO_MMIO_DEVICE_FEATURES_SEL, "DeviceFeaturesSel"], [VIRTIO_MMIO_DRIVER_FEATURES, "DriverFeatures"],
  [VIRTIO_MMIO_DRIVER_FEATURES_SEL, "DriverFeaturesSel"], [VIRTIO_MMIO_QUEUE_SEL, "QueueSel"],
  [VIRTIO_MMIO_QUEUE_NUM_MAX, "QueueNumMax"], [VIRTIO_MMIO_QUEUE_NUM, "QueueNum"], [VIRTIO_MMIO_QUEUE_READY, "QueueReady"],
  [VIRTIO_MMIO_QUEUE_NOTIFY, "QueueNotify"], [VIRTIO_MMIO_INTERRUPT_STATUS, "InterruptStatus"],
  [VIRTIO_MMIO_INTERRUPT_ACK, "InterruptACK"], [VIRTIO_MMIO_STATUS, "Status"],
  [VIRTIO_MMIO_QUEUE_DESC_LOW, "QueueDescLow"], [VIRTIO_MMIO_QUEUE_DESC_HIGH, "QueueDescHigh"],
  [VIRTIO_MMIO_QUEUE_AVAIL_LOW, "QueueDriverLow"], [VIRTIO_MMIO_QUEUE_AVAIL_HIGH, "QueueDriverHigh"],
  [VIRTIO_MMIO_QUEUE_USED_LOW, "QueueDeviceLow"], [VIRTIO_MMIO_QUEUE_USED_HIGH, "QueueDeviceHigh"],
  [VIRTIO_MMIO_SHM_SEL, "SHMSel"], [VIRTIO_MMIO_SHM_LEN_LOW, "SHMLenLow"], [VIRTIO_MMIO_SHM_LEN_HIGH, "SHMLenHigh"],
  [VIRTIO_MMIO_SHM_BASE_LOW, "SHMBaseLow"], [VIRTIO_MMIO_SHM_BASE_HIGH, "SHMBaseHigh"],
  [VIRTIO_MMIO_QUEUE_RESET, "QueueReset"], [VIRTIO_MMIO_CONFIG_GENERATION, "ConfigGeneration"],
]);
