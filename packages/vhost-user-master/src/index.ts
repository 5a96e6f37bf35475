export {
  Frontend, DEFAULT_PROTOCOL_FEATURES, type FrontendOptions, type FrontendEvents, type VringAddresses, type VringSetup,
  type NegotiateOptions, type Negotiated, type InflightArea,
} from "./frontend.js";
export { BackendRequestChannel, type BackendRequestHandlers, type BackendChannelEvents, type ShmemMapRequest } from "./backend-channel.js";
export { toWireRegion, checkNoOverlap, fromCRegion, type MemoryRegionDescription } from "./memory.js";
export { connectWithRetry, acceptOne, type RetryOptions } from "./socket.js";
export { VhostUserError, type VhostUserErrorKind, XenMmapFlags, VirtioDeviceStatus } from "@xen-vhost/vhost-user-protocol";
