export { VirtqueueError, type VirtqueueErrorKind, type VirtqueueErrorOptions } from "./error.js";
export * from "./defs.js";
export { Descriptor } from "./descriptor.js";
export { DescriptorChain } from "./chain.js";
export { Queue, type QueueOptions } from "./queue.js";
export {
  DriverQueue,
  type AddOptions,
  type BufferSpec,
  type ChainSpec,
  type CreateOptions,
  type DriverQueueConfig,
  type QueueLayout,
  type UsedElement,
} from "./driver.js";
