export { ShadowQueueError, type ShadowQueueErrorKind, type ShadowQueueErrorOptions } from "./error.js";
export { ExtentPool, type Extent } from "./pool.js";
export { ShadowMemory, DEFAULT_POOL_BYTES, type ShadowMemoryOptions, type ShadowQueueArea, type ShadowQueueSpec } from "./shadow-memory.js";
export {
  ShadowQueue,
  type BackendLossPolicy,
  type FailRequest,
  type GuestRingConfig,
  type ShadowQueueEvents,
  type ShadowQueueOptions,
  type ShadowQueueStats,
  type WriteBackPolicy,
} from "./shadow-queue.js";
export { failBlk, failFs, policyFor, VIRTIO_BLK_S_IOERR, type DevicePolicy } from "./fail.js";
export { ShadowRing, type ShadowBuffer } from "./shadow-ring.js";
