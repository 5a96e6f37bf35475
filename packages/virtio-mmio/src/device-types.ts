// Virtio device IDs: Virtual I/O Device (VIRTIO) Version 1.2, section 5 ("Device Types"), plus the queue
// layout and configuration-space size of each type as its own section defines them. The transport uses
// these as defaults when a backend cannot tell (GET_QUEUE_NUM needs the MQ protocol feature).

export interface VirtioDeviceType {
  /** Device ID (the DeviceID register). */
  readonly id: number;
  /** Short name, as vhost-device daemons and xen-vhost-frontend use it ("i2c", "gpio", "rng"). */
  readonly name: string;
  /** Queues the driver uses without negotiating extra features. */
  readonly queues: number;
  /** Largest queue size the type usually offers. */
  readonly queueMax: number;
  /** Bytes of device configuration space the type defines (0: none). */
  readonly configSize: number;
}

const t = (id: number, name: string, queues: number, queueMax: number, configSize: number): VirtioDeviceType => ({
  id, name, queues, queueMax, configSize,
});

/** Every device type of virtio 1.2 section 5 (and 1.3 drafts: SPI), keyed by ID. */
export const VIRTIO_DEVICE_TYPES: ReadonlyMap<number, VirtioDeviceType> = new Map(
  [
    t(1, "net", 2, 1024, 12), // 5.1: rx, tx (+ctrl with VIRTIO_NET_F_CTRL_VQ); mac[6] status mtu... (12 up to mtu)
    t(2, "blk", 1, 1024, 60), // 5.2: num_queues in config with VIRTIO_BLK_F_MQ; struct virtio_blk_config up to discard/write-zeroes
    t(3, "console", 2, 1024, 12), // 5.3: receiveq0, transmitq0 (+control with MULTIPORT)
    t(4, "rng", 1, 1024, 0), // 5.4: requestq
    t(5, "balloon", 3, 256, 8), // 5.5: inflateq, deflateq (+statsq)
    t(6, "iomemory", 1, 256, 0),
    t(7, "rpmsg", 2, 256, 0),
    t(8, "scsi", 3, 1024, 36), // 5.6: controlq, eventq, requestq0
    t(9, "9p", 1, 1024, 2 + 64), // 9P transport: tag_len + tag
    t(10, "mac80211-wlan", 2, 256, 0),
    t(11, "rproc-serial", 2, 256, 0),
    t(12, "caif", 2, 256, 0),
    t(13, "memory-balloon", 3, 256, 8),
    t(16, "gpu", 2, 1024, 24), // 5.7: controlq, cursorq
    t(17, "clock", 1, 256, 0),
    t(18, "input", 2, 256, 136), // 5.8: eventq, statusq; select subsel size + union(128)
    t(19, "vsock", 3, 256, 8), // 5.10: rx, tx, event; guest_cid
    t(20, "crypto", 2, 1024, 48), // 5.9: dataq0 + controlq
    t(21, "signal-distribution", 2, 256, 0),
    t(22, "pstore", 1, 256, 0),
    t(23, "iommu", 2, 256, 40), // 5.13: requestq, eventq
    t(24, "mem", 1, 256, 56), // 5.15: guestq
    t(25, "sound", 4, 256, 16), // 5.14: controlq, eventq, txq, rxq; jacks streams chmaps controls
    t(26, "fs", 2, 1024, 40), // 5.11: hiprio + request queue(s); tag[36] num_request_queues
    t(27, "pmem", 1, 256, 16), // 5.19: requestq; start, size
    t(28, "rpmb", 1, 256, 4), // 5.12
    t(29, "mac80211-hwsim", 2, 256, 0),
    t(30, "video-encoder", 2, 256, 16),
    t(31, "video-decoder", 2, 256, 16),
    t(32, "scmi", 2, 256, 0), // 5.17: cmdq, eventq
    t(33, "nitro-sec-mod", 1, 256, 0),
    t(34, "i2c", 1, 1024, 4), // 5.18: requestq; config only with VIRTIO_I2C_F_... (none in 1.2 beyond zero-length)
    t(35, "watchdog", 1, 256, 0),
    t(36, "can", 3, 256, 2), // 5.20: txq, rxq, controlq; status
    t(38, "parameter-server", 2, 256, 0),
    t(39, "audio-policy", 2, 256, 0),
    t(40, "bt", 4, 256, 8),
    t(41, "gpio", 2, 256, 8), // 5.19 (gpio): requestq, eventq; ngpio u16, padding[2], gpio_names_size u32
    t(42, "rdma", 3, 256, 0),
    t(45, "spi", 1, 256, 32), // virtio 1.3 draft
  ].map((d) => [d.id, d]),
);

/** The type by name ("i2c") or ID (34). */
export function deviceType(key: string | number): VirtioDeviceType | undefined {
  if (typeof key === "number") return VIRTIO_DEVICE_TYPES.get(key);
  for (const d of VIRTIO_DEVICE_TYPES.values()) if (d.name === key) return d;
  return undefined;
}

/**
 * The device-tree compatible string for a type: `virtio,device<ID in hex>` ("virtio,device22" is i2c,
 * ID 34). Xen's toolstack writes it to xenstore's `type` node; the number is hex, not decimal.
 */
export function dtCompatible(id: number): string {
  return `virtio,device${id.toString(16)}`;
}

/** Parses "virtio,device22" (hex) into 34; undefined if the string is not of that form. */
export function parseDtCompatible(compatible: string): number | undefined {
  const m = /^virtio,device([0-9a-fA-F]{1,4})$/.exec(compatible.trim());
  return m ? parseInt(m[1]!, 16) : undefined;
}
