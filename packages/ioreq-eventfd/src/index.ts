export {
  checkIoeventfdOptions,
  checkIrqfdOptions,
  type Notifier,
  type NotifierKind,
  type Ioeventfd,
  type IoeventfdOptions,
  type IoeventfdLength,
  type IoSpace,
  type Irqfd,
  type IrqfdOptions,
  type IrqTrigger,
} from "./notifier.js";
export { NotifierError, classifyErrno, classifyXenError, type NotifierErrorKind } from "./error.js";
export { nullLogger, type Logger } from "./logger.js";
export { UserspaceNotifier, ioeventfdsCollide, type UserspaceNotifierOptions, type GuestWrite } from "./userspace.js";
export { KvmNotifier, type KvmNotifierOptions } from "./kvm/notifier.js";
export {
  Kvm,
  KvmVm,
  KvmVcpu,
  kvmAvailable,
  type KvmExit,
  type UserMemoryRegion,
  type KvmIoeventfdArgs,
  type KvmIrqfdArgs,
} from "./kvm/kvm.js";
export * as kvmAbi from "./kvm/abi.js";
export { XenNotifier, VIRTIO_MMIO_QUEUE_NOTIFY, type XenNotifierOptions, type XenIrqMethod } from "./xen/notifier.js";
export {
  IoreqServer,
  type IoreqServerOptions,
  type IoreqServerEvents,
  type IoRangeHandle,
  type DoorbellAttachment,
} from "./xen/ioreq-server.js";
export {
  IoreqProcessor,
  MAX_REP_COUNT,
  type IoreqProcessorOptions,
  type IoreqGuestMemory,
  type IoreqStats,
  type DoorbellTable,
} from "./xen/ioreq-processor.js";
export { BufferedIoreqReader } from "./xen/buffered-ioreq.js";
export { IoRangeTable, type IoHandler, type IoRange, type AccessSize, type IoValue, type MaybePromise } from "./xen/io-range.js";
