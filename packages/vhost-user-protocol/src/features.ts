// Feature bits of vhost-user as data: the virtio bits vhost-user itself defines, every protocol feature
// bit of the current spec, and the numbers that changed over time (with the implementations that still
// use the old numbers), so a peer's quirks are a setting instead of a code change.
//
// Source: QEMU docs/interop/vhost-user.rst, "Protocol features" (2025/2026 copy: bits 0..23) and
// rust-vmm vhost `VhostUserProtocolFeatures` (vhost/src/vhost_user/message.rs).

/** Virtio feature bits with a vhost-user meaning (vhost-user.rst "Communication"; linux/vhost.h). */
export const VhostUserVirtioFeatures = {
  /** Reserved virtio bit 30 reused by vhost-user: the back-end speaks GET/SET_PROTOCOL_FEATURES. */
  VHOST_USER_F_PROTOCOL_FEATURES: 30,
  /** linux/vhost.h VHOST_F_LOG_ALL: log all writes (live migration). */
  VHOST_F_LOG_ALL: 26,
} as const;

/** Common virtio feature bits front-ends check (linux/virtio_config.h, virtio_ring.h). */
export const VirtioFeatures = {
  VIRTIO_F_NOTIFY_ON_EMPTY: 24,
  VIRTIO_RING_F_INDIRECT_DESC: 28,
  VIRTIO_RING_F_EVENT_IDX: 29,
  VIRTIO_F_VERSION_1: 32,
  VIRTIO_F_ACCESS_PLATFORM: 33,
  VIRTIO_F_RING_PACKED: 34,
  VIRTIO_F_IN_ORDER: 35,
  VIRTIO_F_NOTIFICATION_DATA: 38,
} as const;

/** One protocol feature: its bit in the current spec and what it gates. */
export interface ProtocolFeatureInfo {
  readonly name: ProtocolFeatureName;
  readonly bit: number;
  /** Protocol features this one requires (spec text). */
  readonly requires: readonly ProtocolFeatureName[];
  readonly summary: string;
}

/**
 * VHOST_USER_PROTOCOL_F_* bit numbers of the current spec (vhost-user.rst "Protocol features").
 * BACKEND_REQ and BACKEND_SEND_FD were called SLAVE_REQ / SLAVE_SEND_FD before QEMU 8.1.
 */
export const VhostUserProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
  GET_VRING_BASE_INFLIGHT: 20,
  GPA_ADDRESSES: 21,
  SHMEM: 22,
  GET_VRING_BASE_SKIP_DRAIN: 23,
} as const;
export type ProtocolFeatureName = keyof typeof VhostUserProtocolFeature;

const requiresTable: Partial<Record<ProtocolFeatureName, readonly ProtocolFeatureName[]>> = {
  // "VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD ... requires BACKEND_REQ and REPLY_ACK" and likewise below.
  BACKEND_SEND_FD: ["BACKEND_REQ", "REPLY_ACK"],
  HOST_NOTIFIER: ["BACKEND_REQ", "BACKEND_SEND_FD"],
  INBAND_NOTIFICATIONS: ["BACKEND_REQ", "REPLY_ACK"],
  SHARED_OBJECT: ["BACKEND_REQ"],
  SHMEM: ["BACKEND_REQ"],
};

const summaries: Record<ProtocolFeatureName, string> = {
  MQ: "GET_QUEUE_NUM: the back-end reports its maximum number of queues",
  LOG_SHMFD: "SET_LOG_BASE carries a shared-memory fd for the dirty log",
  RARP: "SEND_RARP (net)",
  REPLY_ACK: "NEED_REPLY flag: the back-end acknowledges any request with a u64 status",
  MTU: "NET_SET_MTU (net)",
  BACKEND_REQ: "SET_BACKEND_REQ_FD: a socket for back-end to front-end requests",
  CROSS_ENDIAN: "SET_VRING_ENDIAN (legacy cross-endian rings)",
  CRYPTO_SESSION: "CREATE/CLOSE_CRYPTO_SESSION",
  PAGEFAULT: "POSTCOPY_* (userfaultfd postcopy migration)",
  CONFIG: "GET_CONFIG/SET_CONFIG and CONFIG_CHANGE_MSG",
  BACKEND_SEND_FD: "back-end requests may carry fds",
  HOST_NOTIFIER: "VRING_HOST_NOTIFIER_MSG (mapped doorbell area)",
  INFLIGHT_SHMFD: "GET/SET_INFLIGHT_FD: inflight descriptor tracking across back-end restarts",
  RESET_DEVICE: "RESET_DEVICE",
  INBAND_NOTIFICATIONS: "VRING_KICK, VRING_CALL, VRING_ERR as messages instead of eventfds",
  CONFIGURE_MEM_SLOTS: "GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG",
  STATUS: "SET_STATUS/GET_STATUS (virtio device status byte)",
  XEN_MMAP: "memory regions carry xen_mmap_flags + domid (40-byte regions)",
  SHARED_OBJECT: "SHARED_OBJECT_ADD/REMOVE/LOOKUP and GET_SHARED_OBJECT (virtio-dmabuf)",
  DEVICE_STATE: "SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE (state transfer for migration)",
  GET_VRING_BASE_INFLIGHT: "GET_VRING_BASE may return while requests are still inflight",
  GPA_ADDRESSES: "vring addresses are guest physical addresses instead of front-end user addresses",
  SHMEM: "GET_SHMEM_CONFIG, SHMEM_MAP, SHMEM_UNMAP (VIRTIO shared memory regions)",
  GET_VRING_BASE_SKIP_DRAIN: "GET_VRING_BASE_SKIP_DRAIN request",
};

/** Every protocol feature of the current spec, by bit. */
export const protocolFeatures: readonly ProtocolFeatureInfo[] = (
  Object.entries(VhostUserProtocolFeature) as [ProtocolFeatureName, number][]
).map(([name, bit]) => ({ name, bit, requires: requiresTable[name] ?? [], summary: summaries[name] }));

/**
 * Which numbering a peer uses where the spec and implementations diverged. Each field is one quirk;
 * the defaults are what real back-ends accept today.
 */
export interface ProtocolQuirks {
  /**
   * The bit a peer uses for SHMEM: 22 in the current spec; 21 in rust-vmm vhost <= 0.16 (where it
   * collides with GPA_ADDRESSES, rust-vmm/vhost#367); 20 in an early spec draft. Default 22.
   */
  shmemBit: 20 | 21 | 22;
  /**
   * The value of the Xen "no advance map" region flag on the wire: "rust-vmm" = 0x8 (vm-memory
   * `MmapXenFlags::NO_ADVANCE_MAP`, what every rust-vmm backend and xen-vhost-frontend use) or
   * "spec" = 0x100 (vhost-user.rst: bit 8). Decoding accepts both. Default "rust-vmm".
   */
  xenNoAdvanceMap: "rust-vmm" | "spec";
  /**
   * Config-space flags on the wire: "spec" (0 = front-end access to writable fields, 1 = live
   * migration; QEMU) or "rust-vmm" (WRITABLE = 0x1, LIVE_MIGRATION = 0x2). Default "spec": QEMU sends
   * 0 and rust-vmm back-ends accept 0..3.
   */
  configFlags: "spec" | "rust-vmm";
}

export const defaultQuirks: Readonly<ProtocolQuirks> = Object.freeze({
  shmemBit: 22,
  xenNoAdvanceMap: "rust-vmm",
  configFlags: "spec",
});

/** The bit of `name` for a peer with `quirks` (only SHMEM moves today). */
export function protocolFeatureBit(name: ProtocolFeatureName, quirks: Partial<ProtocolQuirks> = {}): number {
  if (name === "SHMEM") return quirks.shmemBit ?? defaultQuirks.shmemBit;
  return VhostUserProtocolFeature[name];
}

/** The mask of `name`. */
export function protocolFeatureMask(name: ProtocolFeatureName, quirks: Partial<ProtocolQuirks> = {}): bigint {
  return 1n << BigInt(protocolFeatureBit(name, quirks));
}

/** True if `features` has `name` (with the peer's quirks). */
export function hasProtocolFeature(features: bigint, name: ProtocolFeatureName, quirks: Partial<ProtocolQuirks> = {}): boolean {
  return (features & protocolFeatureMask(name, quirks)) !== 0n;
}

/** Builds a mask from names. */
export function protocolFeatureSet(names: readonly ProtocolFeatureName[], quirks: Partial<ProtocolQuirks> = {}): bigint {
  let m = 0n;
  for (const n of names) m |= protocolFeatureMask(n, quirks);
  return m;
}

/** Names of the bits set in `features` (unknown bits as "bit<n>"), for logs and reports. */
export function describeProtocolFeatures(features: bigint, quirks: Partial<ProtocolQuirks> = {}): string[] {
  const out: string[] = [];
  const byBit = new Map<number, string>();
  for (const f of protocolFeatures) byBit.set(protocolFeatureBit(f.name, quirks), f.name);
  for (let bit = 0; bit < 64; bit++) {
    if ((features & (1n << BigInt(bit))) === 0n) continue;
    out.push(byBit.get(bit) ?? `bit${bit}`);
  }
  return out;
}

/**
 * Protocol features whose prerequisites are missing from `features` (spec: e.g. INBAND_NOTIFICATIONS
 * needs BACKEND_REQ and REPLY_ACK). A front-end must not ack such a feature.
 */
export function missingPrerequisites(features: bigint, quirks: Partial<ProtocolQuirks> = {}): [ProtocolFeatureName, ProtocolFeatureName][] {
  const out: [ProtocolFeatureName, ProtocolFeatureName][] = [];
  for (const f of protocolFeatures) {
    if (!hasProtocolFeature(features, f.name, quirks)) continue;
    for (const r of f.requires) if (!hasProtocolFeature(features, r, quirks)) out.push([f.name, r]);
  }
  return out;
}

/**
 * Xen mmap flags of a 40-byte memory region (vhost-user.rst "Memory region description" with
 * XEN_MMAP; rust-vmm vm-memory src/mmap/xen.rs `MmapXenFlags`). Exactly one of UNIX/FOREIGN/GRANT;
 * NO_ADVANCE_MAP only with GRANT. In this package's decoded values NO_ADVANCE_MAP is always the spec
 * value 0x100; the encoder writes 0x8 or 0x100 per `ProtocolQuirks.xenNoAdvanceMap`.
 */
export const XenMmapFlags = {
  UNIX: 0x0,
  FOREIGN: 0x1,
  GRANT: 0x2,
  /** Spec value (bit 8). */
  NO_ADVANCE_MAP: 0x100,
  /** rust-vmm vm-memory value (bit 3) of the same flag. */
  NO_ADVANCE_MAP_RUST_VMM: 0x8,
} as const;

/** Config-space message flags (vhost-user.rst "Virtio device config space"). */
export const VhostUserConfigFlags = {
  /** Spec: 0 = front-end message used for writable fields. */
  WRITABLE: 0,
  /** Spec: 1 = front-end message used for live migration. */
  LIVE_MIGRATION: 1,
} as const;

/** rust-vmm `VhostUserConfigFlags` values of the same meanings (bit flags). */
export const VhostUserConfigFlagsRustVmm = { WRITABLE: 0x1, LIVE_MIGRATION: 0x2 } as const;

/** The wire value for a config access purpose under `quirks`. */
export function configFlagsFor(purpose: "writable" | "live-migration", quirks: Partial<ProtocolQuirks> = {}): number {
  const mode = quirks.configFlags ?? defaultQuirks.configFlags;
  if (mode === "rust-vmm")
    return purpose === "writable" ? VhostUserConfigFlagsRustVmm.WRITABLE : VhostUserConfigFlagsRustVmm.LIVE_MIGRATION;
  return purpose === "writable" ? VhostUserConfigFlags.WRITABLE : VhostUserConfigFlags.LIVE_MIGRATION;
}

/** Virtio device status bits (virtio spec 2.1; linux/virtio_config.h), sent with SET_STATUS. */
export const VirtioDeviceStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 0x40,
  FAILED: 0x80,
} as const;
