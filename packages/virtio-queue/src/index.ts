export { VirtqueueError, type VirtqueueErrorKind, type VirtqueueErrorOptions } from "./error.js";
export * from "./defs.js";
export { Descriptor } from "./descriptor.js";
export { DescriptorChain } from "./chain.js";
export { Queue, type QueueOptions } from "./queue.js";
export { walkChain, type WalkChainOptions } from "./walk.js";
export {
  DriverQueue,
  type AddOptions,
  type BufferSpec,
  type ChainSpec,
  type CreateOptions,
  type DriverQueueConfig,
  type QueueLayout,
  type UsedElement,
  type UsedSlot,
} from "./driver.js";
export {
  PackedDriverQueue,
  PackedQueue,
  PackedDescriptorChain,
  PvirtqDesc,
  PvirtqEventSuppress,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  RING_EVENT_FLAGS_ENABLE,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_DESC,
  PACKED_RING_ALIGN,
  EVENT_SUPPRESS_ALIGN,
  type PackedDriverConfig,
  type PackedQueueLayout,
  type PackedQueueOptions,
} from "./packed.js";
