export {
  Frontend, DEFAULT_PROTOCOL_FEATURES, type FrontendOptions, type FrontendEvents, type VringAddresses, type VringSetup,
  type NegotiateOptions, type Negotiated,
} from "./frontend.js";
export { InflightRegion, QueueRegionSplit, DescStateSplit, type InflightArea } from "./inflight.js";
export { BackendRequestChannel, type BackendRequestHandlers, type BackendChannelEvents, type ShmemMapRequest } from "./backend-channel.js";
export { toWireRegion, checkNoOverlap, fromCRegion, type MemoryRegionDescription } from "./memory.js";
export { DriverRing, type CompletionMode, type DriverRingOptions, type DriverRingStats } from "./driver-ring.js";
export { connectWithRetry, acceptOne, type RetryOptions } from "./socket.js";
export { VhostUserError, type VhostUserErrorKind, XenMmapFlags, VirtioDeviceStatus } from "@xen-vhost/vhost-user-protocol";
export {
  GpuSocket, VhostUserGpuRequest, VhostUserGpuProtocolFeature, VHOST_USER_GPU_MSG_FLAG_REPLY, VirtioGpuCtrlHdr, VirtioGpuDisplayOne,
  VIRTIO_GPU_MAX_SCANOUTS, VIRTIO_GPU_RESP_OK_DISPLAY_INFO, VIRTIO_GPU_RESP_OK_EDID, DISPLAY_INFO_SIZE, EDID_RESP_SIZE,
  type GpuSocketHandlers, type GpuSocketEvents, type DisplayMode,
} from "./gpu-socket.js";
