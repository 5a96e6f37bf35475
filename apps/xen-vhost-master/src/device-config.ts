// Device config space the bridge supplies itself when the backend has none. Stock backends such as QEMU's
// virtiofsd and DPDK's net_vhost (testpmd) do not offer VHOST_USER_PROTOCOL_F_CONFIG: under QEMU the VMM's
// own device model fills the config space (vhost-user-fs: the `tag` and `num-request-queues` properties;
// virtio-net: the MAC, link status, and it offers VIRTIO_NET_F_MAC/STATUS itself). Without this module a
// guest behind the bridge reads the fs tag as 0xff bytes and gets no MAC. Nothing here is Xen-specific.
import { defineStruct, bytes, u16, u32 } from "@xen-vhost/vmm-sys-util";
import { deviceType } from "@xen-vhost/virtio-mmio";

/** The options a user gives for a virtio-fs device (`"fs": {...}`, `--fs-tag`). */
export interface FsDeviceOptions {
  /** The mount tag (`mount -t virtiofs <tag> /mnt`): 1..36 bytes of UTF-8, no NUL or newline. */
  tag?: string;
  /** num_request_queues; default: the queues the backend reports minus hiprio, else 1. */
  requestQueues?: number;
}

/** The options a user gives for a virtio-net device (`"net": {...}`, `--mac`). */
export interface NetDeviceOptions {
  /** Unicast MAC, 6 octets (parsed from "52:54:00:12:34:56"). Without it no VIRTIO_NET_F_MAC is offered. */
  mac?: Uint8Array;
  /** The MTU to advise (VIRTIO_NET_F_MTU); default none, as QEMU without `host_mtu`. */
  mtu?: number;
}

export interface DeviceOptions {
  fs?: FsDeviceOptions;
  net?: NetDeviceOptions;
}

/** A config space built by the bridge, the feature bits that go with it, and the queue count it implies. */
export interface SuppliedConfig {
  bytes: Uint8Array;
  /** Offered to the guest on top of the backend's features, never passed to the backend's SET_FEATURES. */
  features: bigint;
  /** Backend feature bits not to offer the guest (their config fields are not what the backend would say). */
  withdraw: bigint;
  /** How many virtqueues the device has (fs: hiprio + request queues), when the config decides it. */
  queues?: number;
  /** What was built, for the log. */
  describe: Record<string, string | number>;
}

// virtio 1.2 section 5.11.4 "Device configuration layout" (virtio-fs); Linux include/uapi/linux/virtio_fs.h:
//   struct virtio_fs_config { __u8 tag[36]; __le32 num_request_queues; } __attribute__((packed));
export const VirtioFsConfig = defineStruct("virtio_fs_config", { size: 40, packed: true }, {
  tag: bytes(0, 36),
  num_request_queues: u32(36),
});
export const VIRTIO_FS_TAG_LEN = 36;

// virtio 1.2 section 5.1.4 "Device configuration layout" (network device); Linux include/uapi/linux/virtio_net.h
// struct virtio_net_config (packed), the fields up to `mtu` (the 12 bytes @xen-vhost/virtio-mmio's type table
// exposes; speed/duplex and RSS need VIRTIO_NET_F_SPEED_DUPLEX / F_RSS, which the bridge never offers).
export const VirtioNetConfig = defineStruct("virtio_net_config", { size: 12, packed: true }, {
  mac: bytes(0, 6),
  status: u16(6),
  max_virtqueue_pairs: u16(8),
  mtu: u16(10),
});

// virtio 1.2 section 5.1.3 "Feature bits" (include/uapi/linux/virtio_net.h).
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_MQ = 22;
export const VIRTIO_NET_F_CTRL_VQ = 17;
/**
 * VIRTIO_NET_F_CTRL_VQ and every bit that needs it (virtio 1.2 5.1.3.1; Linux's virtnet_validate_features
 * refuses the device if one is offered without CTRL_VQ): CTRL_GUEST_OFFLOADS 2, CTRL_VQ 17, CTRL_RX 18,
 * CTRL_VLAN 19, GUEST_ANNOUNCE 21, MQ 22, CTRL_MAC_ADDR 23, VQ_NOTF_COAL 52, NOTF_COAL 53, HASH_REPORT 57, RSS 60.
 */
export const VIRTIO_NET_CTRL_VQ_FEATURES = [2, 17, 18, 19, 21, 22, 23, 52, 53, 57, 60].reduce((m, b) => m | (1n << BigInt(b)), 0n);
/** virtio 1.2 section 5.1.4: status bit VIRTIO_NET_S_LINK_UP. */
export const VIRTIO_NET_S_LINK_UP = 1;
/** virtio 1.2 section 5.1.4.1: mtu must be at least 68 (the IPv4 minimum); the field is le16. */
export const NET_MTU_MIN = 68;
export const NET_MTU_MAX = 65535;

const FS_ID = deviceType("fs")!.id;
const NET_ID = deviceType("net")!.id;
/** Linux's virtio_fs caps request queues at nr_cpu_ids; the bridge caps the count at the mmio queue limit. */
export const FS_MAX_REQUEST_QUEUES = 1023;
/** The tag used when none is configured (the guest refuses an empty tag: virtio_fs_read_tag). */
export const DEFAULT_FS_TAG = "virtiofs";

const bit = (n: number): bigint => 1n << BigInt(n);

/** Why a value cannot be used; config.ts turns it into a ConfigError naming the flag or key. */
export function fsTagProblem(tag: string): string | undefined {
  const n = new TextEncoder().encode(tag).length;
  if (n === 0) return "the tag is empty (Linux refuses an empty virtio-fs tag)";
  if (n > VIRTIO_FS_TAG_LEN) return `the tag is ${n} bytes of UTF-8, at most ${VIRTIO_FS_TAG_LEN} fit in virtio_fs_config.tag`;
  if (/[\0\n]/.test(tag)) return "the tag contains a NUL or a newline";
  return undefined;
}

/** "52:54:00:12:34:56" (or with dashes) -> 6 octets; a multicast or all-zero address is refused (is_valid_ether_addr). */
export function parseMac(text: string): Uint8Array | string {
  const m = /^([0-9a-fA-F]{2})([:-])([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})$/.exec(text.trim());
  if (!m) return `expected a MAC address like 52:54:00:12:34:56, got ${JSON.stringify(text)}`;
  const mac = Uint8Array.from([m[1], m[3], m[4], m[5], m[6], m[7]].map((h) => parseInt(h!, 16)));
  if (mac[0]! & 1) return `${text} is a multicast address (the guest would pick a random MAC instead)`;
  if (mac.every((b) => b === 0)) return `${text} is the all-zero address (the guest would pick a random MAC instead)`;
  return mac;
}

export const formatMac = (mac: Uint8Array): string => [...mac].map((b) => b.toString(16).padStart(2, "0")).join(":");

/**
 * The config space for a device whose backend has no VHOST_USER_PROTOCOL_F_CONFIG, as QEMU's device model
 * would build it; undefined for a device type the bridge has nothing to say about (the config stays empty).
 * `backendQueues` is what the backend reported (GET_QUEUE_NUM with MQ), if anything.
 * @throws RangeError if the options do not fit what the backend reports (the bridge checked them at parse time)
 */
export function suppliedConfig(deviceId: number, options: DeviceOptions, backendQueues: number | undefined): SuppliedConfig | undefined {
  if (deviceId === FS_ID) {
    const tag = options.fs?.tag ?? DEFAULT_FS_TAG;
    const problem = fsTagProblem(tag);
    if (problem) throw new RangeError(`virtio-fs tag: ${problem}`);
    // vhost-user-fs: num-request-queues decides the queue count (hiprio + request queues); a backend that
    // reports its maximum bounds it.
    const requestQueues = options.fs?.requestQueues ?? (backendQueues !== undefined ? Math.max(1, backendQueues - 1) : 1);
    if (!Number.isInteger(requestQueues) || requestQueues < 1 || requestQueues > FS_MAX_REQUEST_QUEUES)
      throw new RangeError(`virtio-fs requestQueues ${requestQueues} is not in 1..${FS_MAX_REQUEST_QUEUES}`);
    if (backendQueues !== undefined && requestQueues + 1 > backendQueues)
      throw new RangeError(`virtio-fs requestQueues ${requestQueues} needs ${requestQueues + 1} queues, the backend has ${backendQueues}`);
    const tagBytes = new Uint8Array(VIRTIO_FS_TAG_LEN); // NUL-padded, not NUL-terminated when 36 bytes long
    tagBytes.set(new TextEncoder().encode(tag));
    return {
      bytes: VirtioFsConfig.encode({ tag: tagBytes, num_request_queues: requestQueues }),
      features: 0n,
      withdraw: 0n,
      queues: 1 + requestQueues,
      describe: { tag, requestQueues },
    };
  }
  if (deviceId === NET_ID) {
    const mac = options.net?.mac;
    const mtu = options.net?.mtu;
    if (mac && mac.length !== 6) throw new RangeError(`MAC of ${mac.length} bytes`);
    if (backendQueues !== undefined && backendQueues < 2) throw new RangeError(`virtio-net needs 2 queues (rx, tx), the backend has ${backendQueues}`);
    if (mtu !== undefined && (!Number.isInteger(mtu) || mtu < NET_MTU_MIN || mtu > NET_MTU_MAX)) throw new RangeError(`MTU ${mtu} not in ${NET_MTU_MIN}..${NET_MTU_MAX}`);
    // One rx/tx pair and no VIRTIO_NET_F_MQ, as QEMU's virtio-net by default (mq=off): what a backend reports
    // in GET_QUEUE_NUM is its own maximum (DPDK says 128 whatever testpmd serves), not a guest's queue count.
    // No control queue either: under QEMU the VMM serves it (virtio_net_handle_ctrl), vhost-user backends
    // only get the data queues, and DPDK 22.11's net_vhost never answers it, so a Linux guest would spin in
    // virtnet_send_command at `ip link set up`. CTRL_VQ goes, with every bit that needs it.
    return {
      bytes: VirtioNetConfig.encode({
        mac: mac ?? new Uint8Array(6),
        // QEMU's virtio-net reports the link up for a vhost-user peer (it has no link state to read).
        status: VIRTIO_NET_S_LINK_UP,
        max_virtqueue_pairs: 1,
        mtu: mtu ?? 0,
      }),
      features: (mac ? bit(VIRTIO_NET_F_MAC) : 0n) | bit(VIRTIO_NET_F_STATUS) | (mtu !== undefined ? bit(VIRTIO_NET_F_MTU) : 0n),
      withdraw: VIRTIO_NET_CTRL_VQ_FEATURES,
      // receiveq1 and transmitq1 (virtio 1.2 5.1.2) and nothing the guest could set up beyond them
      queues: 2,
      describe: { mac: mac ? formatMac(mac) : "(none: the guest picks one)", status: "link up", ...(mtu !== undefined ? { mtu } : {}) },
    };
  }
  return undefined;
}
