export { SysError, errnoName, errnoOf } from "./errno.js";
export { EventFd, type EventFdOptions } from "./eventfd.js";
export { FdWatcher, PollEvents, type FdWatcherOptions } from "./poller.js";
export { ioctl, addressOf, _IOC, _IO, _IOR, _IOW, _IOWR, _IOC_NONE, _IOC_READ, _IOC_WRITE, decodeIoctl } from "./ioctl.js";
export { mmap, munmap, mmapFixed, leakedMappings, pageSize, MemoryMapping, MmapConstants, type MmapOptions } from "./mmap.js";
export { memfdCreate, ftruncate, type MemfdOptions } from "./memfd.js";
export { open, close, read, write, setNonblocking, dup, constants } from "./fd.js";
export { UnixStream, UnixListener, TruncatedMessageError, type ReceivedMessage } from "./unix-socket.js";
export { AtomicAccess, fence } from "./atomics.js";
export { setBinding, type NativeBinding, type Bytes, type RecvResult } from "./native.js";
export {
  defineStruct, StructLayout, u8, i8, u16, i16, u32, i32, u64, i64, bits, bytes,
  type FieldSpec, type StructValue, type StructOptions,
} from "./struct.js";
export { type Logger, noopLogger } from "./logger.js";
