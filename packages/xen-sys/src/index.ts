// @xen-vhost/xen-sys: the Xen interfaces a dom0 device model needs, as a standalone binding (no libxen*).
export { XenError, XenStoreError, type XenErrorKind, type XenErrorDetails } from "./error.js";
export type { Logger } from "./logger.js";
export type {
  XenTransport, GuestHandle, ForeignMapping, ForeignMapOptions, IrqfdRequest, IoeventfdRequest, EventChannelDevice,
  GrantDevice, GrantMapping, GrantCopyPtr, GrantCopySegment, TransportCapabilities,
} from "./transport.js";
export { PrivcmdTransport, type PrivcmdTransportOptions } from "./privcmd.js";
export { EvtchnDevice } from "./evtchn-device.js";
export { GntdevDevice, encodeMapGrantRef, encodeGrantCopySegments } from "./gntdev-device.js";
export { EventChannels, type EventChannelsEvents, type EventChannelsOptions } from "./event-channels.js";
export { Xen, type XenOpenOptions, type IoreqServerInfo, type IoreqPages } from "./xen.js";
export { dmOps, encodeDmOp, decodeDmOp, dmOpName, type BufIoreqMode } from "./dm-op.js";
export {
  ControlOps, InterfaceVersion, encodeSysctl, encodeDomctl, decodeDomainInfo, type DomainInfo, type PhysInfo,
} from "./sysctl.js";
export { checkDomid } from "./device.js";
export {
  XenStore, XenStoreWatch, XsTransaction, type XenStoreOptions, type XenStoreEvents, type XenStoreWatchEvent,
  type XenStoreWatchEvents,
} from "./xenstore/client.js";
export { socketConnector, xenbusConnector, type XsConnector, type XsStream, type XsStreamHandlers } from "./xenstore/connection.js";
export {
  MessageReader, encodeMessage, splitStrings, strings, pathAndValue, parsePermission, formatPermission,
  type XsMessage, type XsPermission,
} from "./xenstore/wire.js";

// ABI tables (one module per header).
export * from "./abi/privcmd.js";
export * from "./abi/evtchn.js";
export * from "./abi/gntdev.js";
export * from "./abi/dm-op.js";
export * from "./abi/hvm-ioreq.js";
export * from "./abi/sysctl.js";
export * from "./abi/domctl.js";
export * from "./abi/xs-wire.js";
export * from "./abi/xen.js";
