// xen/include/public/io/xs_wire.h: the XenStore wire protocol (unix socket, /dev/xen/xenbus and the ring).
import { defineStruct, u32, bytes } from "@xen-vhost/vmm-sys-util";

/** `enum xsd_sockmsg_type`. XS_CONTROL is also XS_DEBUG; 20 (XS_RESTRICT) was removed. */
export const XS = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
  INVALID: 0xffff,
} as const;
export type XsMessageType = (typeof XS)[keyof typeof XS];
export type XsMessageName = keyof typeof XS;

/** The name of a message type (`2` → `"READ"`), or undefined. */
export function xsTypeName(type: number): XsMessageName | undefined {
  for (const [k, v] of Object.entries(XS)) if (v === type) return k as XsMessageName;
  return undefined;
}

/** `xsd_errors[]`: the errno names an XS_ERROR payload may carry. */
export const XSD_ERRORS = [
  "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO", "ENOTEMPTY", "ENOSYS", "EROFS",
  "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM",
] as const;
export type XsdErrorName = (typeof XSD_ERRORS)[number];

// struct xsd_sockmsg { uint32_t type; uint32_t req_id; uint32_t tx_id; uint32_t len; };
export const XsdSockmsg = defineStruct("xsd_sockmsg", { size: 16, align: 4 }, {
  type: u32(0), req_id: u32(4), tx_id: u32(8), len: u32(12),
});

/* enum xs_watch_type { XS_WATCH_PATH = 0, XS_WATCH_TOKEN }; */
export const XS_WATCH_PATH = 0;
export const XS_WATCH_TOKEN = 1;

/* #define XENSTORE_PAYLOAD_MAX 4096, XENSTORE_ABS_PATH_MAX 3072, XENSTORE_REL_PATH_MAX 2048 */
export const XENSTORE_PAYLOAD_MAX = 4096;
export const XENSTORE_ABS_PATH_MAX = 3072;
export const XENSTORE_REL_PATH_MAX = 2048;

/* #define XENSTORE_RING_SIZE 1024 */
export const XENSTORE_RING_SIZE = 1024;
// struct xenstore_domain_interface { char req[1024]; char rsp[1024]; XENSTORE_RING_IDX req_cons, req_prod;
//   XENSTORE_RING_IDX rsp_cons, rsp_prod; uint32_t server_features; uint32_t connection; uint32_t error; };
export const XenstoreDomainInterface = defineStruct("xenstore_domain_interface", { size: 2076, align: 4 }, {
  req: bytes(0, 1024), rsp: bytes(1024, 1024), req_cons: u32(2048), req_prod: u32(2052), rsp_cons: u32(2056),
  rsp_prod: u32(2060), server_features: u32(2064), connection: u32(2068), error: u32(2072),
});

/** Default paths of the two transports. */
export const XENSTORED_SOCKET = "/var/run/xenstored/socket";
export const XENBUS_DEVICE = "/dev/xen/xenbus";

/** XenBus device states (public/io/xenbus.h `enum xenbus_state`). */
export const XenbusState = {
  Unknown: 0, Initialising: 1, InitWait: 2, Initialised: 3, Connected: 4, Closing: 5, Closed: 6,
  Reconfiguring: 7, Reconfigured: 8,
} as const;
export type XenbusState = (typeof XenbusState)[keyof typeof XenbusState];
