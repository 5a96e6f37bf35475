// The message table: every request of vhost-user in both directions, with its payload kind, fds and
// reply, as data. The codec, the front-end and the back-end all read this one table.
// Source: QEMU docs/interop/vhost-user.rst, "Front-end message types" and "Back-end message types"
// (2026 copy, ids 1..45 and 1..10). Ids never change; names did (SLAVE -> BACKEND in QEMU 8.1).
import type { ProtocolFeatureName } from "./features.js";

/** How a payload is laid out (see structs.ts). */
export type PayloadKind =
  | "none"
  | "u64"
  | "vring-state"
  | "vring-addr"
  | "memory"
  | "single-region"
  | "log"
  | "iotlb"
  | "config"
  | "vring-area"
  | "inflight"
  | "shared-object"
  | "device-state"
  | "shmem-map"
  | "shmem-config"
  | "crypto-session";

/**
 * How many fds travel with a message: none; exactly `n`; one per memory region (SET_MEM_TABLE); one
 * unless the u64 payload has VHOST_USER_VRING_NOFD_MASK (SET_VRING_KICK/CALL/ERR, host notifier);
 * up to `max` (tolerated for compatibility, e.g. REM_MEM_REG).
 */
export type FdRule =
  | { readonly kind: "none" }
  | { readonly kind: "exact"; readonly n: number }
  | { readonly kind: "per-region" }
  | { readonly kind: "unless-nofd" }
  | { readonly kind: "up-to"; readonly max: number };

export const NO_FDS: FdRule = { kind: "none" };
const ONE_FD: FdRule = { kind: "exact", n: 1 };
const UNLESS_NOFD: FdRule = { kind: "unless-nofd" };
const OPTIONAL_FD: FdRule = { kind: "up-to", max: 1 };

/** When a request gets a reply (besides the REPLY_ACK u64 that NEED_REPLY asks for). */
export type ReplyRule =
  /** Never a reply of its own; with REPLY_ACK negotiated and NEED_REPLY set, a u64 ack. */
  | { readonly when: "ack-only" }
  /** Always answered with `payloads` (one of them), whatever was negotiated. */
  | { readonly when: "always"; readonly payloads: readonly PayloadKind[]; readonly fds: FdRule }
  /** Answered with `payloads` only if `feature` was negotiated (else ack-only). */
  | { readonly when: "if-feature"; readonly feature: ProtocolFeatureName; readonly payloads: readonly PayloadKind[]; readonly fds: FdRule };

export interface MessageInfo {
  readonly id: number;
  /** The spec name without the VHOST_USER_ / VHOST_USER_BACKEND_ prefix. */
  readonly name: string;
  readonly payload: PayloadKind;
  readonly fds: FdRule;
  readonly reply: ReplyRule;
  /** The protocol feature that must be negotiated before the request may be sent. */
  readonly feature?: ProtocolFeatureName;
  /** A note from the spec that the code depends on. */
  readonly note?: string;
}

const ACK: ReplyRule = { when: "ack-only" };
const always = (payloads: PayloadKind[], fds: FdRule = NO_FDS): ReplyRule => ({ when: "always", payloads, fds });

function m(id: number, name: string, payload: PayloadKind, fds: FdRule, reply: ReplyRule, extra: Partial<Pick<MessageInfo, "feature" | "note">> = {}): MessageInfo {
  return { id, name, payload, fds, reply, ...extra };
}

/** Front-end → back-end requests (vhost-user.rst "Front-end message types"). */
export const frontendRequests: readonly MessageInfo[] = [
  m(1, "GET_FEATURES", "none", NO_FDS, always(["u64"])),
  m(2, "SET_FEATURES", "u64", NO_FDS, ACK),
  m(3, "SET_OWNER", "none", NO_FDS, ACK),
  m(4, "RESET_OWNER", "none", NO_FDS, ACK, { note: "deprecated; back-ends may ignore it" }),
  m(5, "SET_MEM_TABLE", "memory", { kind: "per-region" }, ACK, {
    note: "one fd per region; with PAGEFAULT (postcopy) the back-end replies with its own table",
  }),
  m(6, "SET_LOG_BASE", "log", ONE_FD, { when: "if-feature", feature: "LOG_SHMFD", payloads: ["u64"], fds: NO_FDS }),
  m(7, "SET_LOG_FD", "none", ONE_FD, ACK),
  m(8, "SET_VRING_NUM", "vring-state", NO_FDS, ACK),
  m(9, "SET_VRING_ADDR", "vring-addr", NO_FDS, ACK),
  m(10, "SET_VRING_BASE", "vring-state", NO_FDS, ACK, {
    note: "split ring: num = next avail index; packed: bits 0-14 avail idx, 15 avail wrap, 16-30 used idx, 31 used wrap",
  }),
  m(11, "GET_VRING_BASE", "vring-state", NO_FDS, always(["vring-state"]), { note: "stops the ring" }),
  m(12, "SET_VRING_KICK", "u64", UNLESS_NOFD, ACK, { note: "u64: bits 0-7 index, bit 8 = no fd (poll / in-band)" }),
  m(13, "SET_VRING_CALL", "u64", UNLESS_NOFD, ACK),
  m(14, "SET_VRING_ERR", "u64", UNLESS_NOFD, ACK),
  m(15, "GET_PROTOCOL_FEATURES", "none", NO_FDS, always(["u64"])),
  m(16, "SET_PROTOCOL_FEATURES", "u64", NO_FDS, ACK),
  m(17, "GET_QUEUE_NUM", "none", NO_FDS, always(["u64"]), { feature: "MQ" }),
  m(18, "SET_VRING_ENABLE", "vring-state", NO_FDS, ACK),
  m(19, "SEND_RARP", "u64", NO_FDS, ACK, { feature: "RARP", note: "MAC address in the low 6 bytes" }),
  m(20, "NET_SET_MTU", "u64", NO_FDS, ACK, { feature: "MTU" }),
  m(21, "SET_BACKEND_REQ_FD", "none", ONE_FD, ACK, { feature: "BACKEND_REQ", note: "formerly SET_SLAVE_REQ_FD" }),
  m(22, "IOTLB_MSG", "iotlb", NO_FDS, ACK),
  m(23, "SET_VRING_ENDIAN", "vring-state", NO_FDS, ACK, { feature: "CROSS_ENDIAN" }),
  m(24, "GET_CONFIG", "config", NO_FDS, always(["config", "none"]), { feature: "CONFIG", note: "a reply with no payload (size 0) = failure" }),
  m(25, "SET_CONFIG", "config", NO_FDS, ACK, { feature: "CONFIG" }),
  m(26, "CREATE_CRYPTO_SESSION", "crypto-session", NO_FDS, always(["crypto-session"]), { feature: "CRYPTO_SESSION" }),
  m(27, "CLOSE_CRYPTO_SESSION", "u64", NO_FDS, ACK, { feature: "CRYPTO_SESSION" }),
  m(28, "POSTCOPY_ADVISE", "none", NO_FDS, always(["none", "u64"], ONE_FD), { feature: "PAGEFAULT", note: "reply carries the userfaultfd" }),
  m(29, "POSTCOPY_LISTEN", "none", NO_FDS, ACK, { feature: "PAGEFAULT" }),
  m(30, "POSTCOPY_END", "none", NO_FDS, always(["u64"]), { feature: "PAGEFAULT" }),
  m(31, "GET_INFLIGHT_FD", "inflight", NO_FDS, { when: "if-feature", feature: "INFLIGHT_SHMFD", payloads: ["inflight"], fds: ONE_FD }, {
    feature: "INFLIGHT_SHMFD",
  }),
  m(32, "SET_INFLIGHT_FD", "inflight", ONE_FD, ACK, { feature: "INFLIGHT_SHMFD" }),
  m(33, "GPU_SET_SOCKET", "none", ONE_FD, ACK),
  m(34, "RESET_DEVICE", "none", NO_FDS, ACK, { feature: "RESET_DEVICE" }),
  m(35, "VRING_KICK", "vring-state", NO_FDS, ACK, { feature: "INBAND_NOTIFICATIONS" }),
  m(36, "GET_MAX_MEM_SLOTS", "none", NO_FDS, always(["u64"]), { feature: "CONFIGURE_MEM_SLOTS" }),
  m(37, "ADD_MEM_REG", "single-region", ONE_FD, ACK, { feature: "CONFIGURE_MEM_SLOTS" }),
  m(38, "REM_MEM_REG", "single-region", OPTIONAL_FD, ACK, {
    feature: "CONFIGURE_MEM_SLOTS",
    note: "no fd should be sent; back-ends must accept and close one for compatibility",
  }),
  m(39, "SET_STATUS", "u64", NO_FDS, ACK, { feature: "STATUS" }),
  m(40, "GET_STATUS", "none", NO_FDS, always(["u64"]), { feature: "STATUS" }),
  m(41, "GET_SHARED_OBJECT", "shared-object", NO_FDS, always(["none", "u64", "shared-object"], OPTIONAL_FD), {
    feature: "SHARED_OBJECT",
    note: "reply carries the dma-buf fd",
  }),
  m(42, "SET_DEVICE_STATE_FD", "device-state", ONE_FD, always(["u64"], OPTIONAL_FD), {
    feature: "DEVICE_STATE",
    note: "reply u64: bits 0-7 error, bit 8 = no fd (else the back-end returns a pipe end)",
  }),
  m(43, "CHECK_DEVICE_STATE", "none", NO_FDS, always(["u64"]), { feature: "DEVICE_STATE" }),
  m(44, "GET_SHMEM_CONFIG", "none", NO_FDS, always(["shmem-config"]), { feature: "SHMEM" }),
  m(45, "GET_VRING_BASE_SKIP_DRAIN", "vring-state", NO_FDS, always(["vring-state"]), { feature: "GET_VRING_BASE_SKIP_DRAIN" }),
];

/** Back-end → front-end requests on the SET_BACKEND_REQ_FD socket (vhost-user.rst "Back-end message types"). */
export const backendRequests: readonly MessageInfo[] = [
  m(1, "IOTLB_MSG", "iotlb", NO_FDS, ACK),
  m(2, "CONFIG_CHANGE_MSG", "none", NO_FDS, ACK, { feature: "CONFIG" }),
  m(3, "VRING_HOST_NOTIFIER_MSG", "vring-area", UNLESS_NOFD, ACK, { feature: "HOST_NOTIFIER" }),
  m(4, "VRING_CALL", "vring-state", NO_FDS, ACK, { feature: "INBAND_NOTIFICATIONS" }),
  m(5, "VRING_ERR", "vring-state", NO_FDS, ACK, { feature: "INBAND_NOTIFICATIONS" }),
  m(6, "SHARED_OBJECT_ADD", "shared-object", NO_FDS, ACK, { feature: "SHARED_OBJECT" }),
  m(7, "SHARED_OBJECT_REMOVE", "shared-object", NO_FDS, ACK, { feature: "SHARED_OBJECT" }),
  m(8, "SHARED_OBJECT_LOOKUP", "shared-object", NO_FDS, always(["u64"], OPTIONAL_FD), {
    feature: "SHARED_OBJECT",
    note: "reply u64 0 + the dma-buf fd, or non-zero without fd",
  }),
  m(9, "SHMEM_MAP", "shmem-map", ONE_FD, ACK, { feature: "SHMEM" }),
  m(10, "SHMEM_UNMAP", "shmem-map", NO_FDS, ACK, { feature: "SHMEM" }),
];

/** Named ids (`FrontendReq.GET_FEATURES === 1`), for code that sends a specific request. */
export const FrontendReq = Object.freeze(Object.fromEntries(frontendRequests.map((e) => [e.name, e.id]))) as {
  readonly [K in FrontendReqName]: number;
};
export type FrontendReqName =
  | "GET_FEATURES" | "SET_FEATURES" | "SET_OWNER" | "RESET_OWNER" | "SET_MEM_TABLE" | "SET_LOG_BASE" | "SET_LOG_FD"
  | "SET_VRING_NUM" | "SET_VRING_ADDR" | "SET_VRING_BASE" | "GET_VRING_BASE" | "SET_VRING_KICK" | "SET_VRING_CALL"
  | "SET_VRING_ERR" | "GET_PROTOCOL_FEATURES" | "SET_PROTOCOL_FEATURES" | "GET_QUEUE_NUM" | "SET_VRING_ENABLE"
  | "SEND_RARP" | "NET_SET_MTU" | "SET_BACKEND_REQ_FD" | "IOTLB_MSG" | "SET_VRING_ENDIAN" | "GET_CONFIG" | "SET_CONFIG"
  | "CREATE_CRYPTO_SESSION" | "CLOSE_CRYPTO_SESSION" | "POSTCOPY_ADVISE" | "POSTCOPY_LISTEN" | "POSTCOPY_END"
  | "GET_INFLIGHT_FD" | "SET_INFLIGHT_FD" | "GPU_SET_SOCKET" | "RESET_DEVICE" | "VRING_KICK" | "GET_MAX_MEM_SLOTS"
  | "ADD_MEM_REG" | "REM_MEM_REG" | "SET_STATUS" | "GET_STATUS" | "GET_SHARED_OBJECT" | "SET_DEVICE_STATE_FD"
  | "CHECK_DEVICE_STATE" | "GET_SHMEM_CONFIG" | "GET_VRING_BASE_SKIP_DRAIN";

export const BackendReq = Object.freeze(Object.fromEntries(backendRequests.map((e) => [e.name, e.id]))) as {
  readonly [K in BackendReqName]: number;
};
export type BackendReqName =
  | "IOTLB_MSG" | "CONFIG_CHANGE_MSG" | "VRING_HOST_NOTIFIER_MSG" | "VRING_CALL" | "VRING_ERR" | "SHARED_OBJECT_ADD"
  | "SHARED_OBJECT_REMOVE" | "SHARED_OBJECT_LOOKUP" | "SHMEM_MAP" | "SHMEM_UNMAP";

/** Which side sent a request: the table to look it up in. */
export type Channel = "frontend" | "backend";

const byId = {
  frontend: new Map(frontendRequests.map((e) => [e.id, e])),
  backend: new Map(backendRequests.map((e) => [e.id, e])),
};

/** The table entry of a request id sent by `channel`'s side, or undefined for an unknown id. */
export function messageInfo(channel: Channel, id: number): MessageInfo | undefined {
  return byId[channel].get(id);
}

/** "GET_FEATURES (1)" style name for messages and logs. */
export function requestName(channel: Channel, id: number): string {
  const e = messageInfo(channel, id);
  return e ? `${channel === "backend" ? "BACKEND_" : ""}${e.name} (${id})` : `unknown ${channel} request ${id}`;
}
