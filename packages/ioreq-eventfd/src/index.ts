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
export { NotifierError, classifyErrno, type NotifierErrorKind } from "./error.js";
export { nullLogger, type Logger } from "./logger.js";
export { UserspaceNotifier, type UserspaceNotifierOptions, type GuestWrite } from "./userspace.js";
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
