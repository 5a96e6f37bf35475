// The one place that types the addon (node-pty's native.d.ts pattern). Everything else in the package goes
// through `binding()`; tests and other platforms can inject a replacement with `setBinding()`
// (better-sqlite3's `nativeBinding` option).
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

export interface RecvResult {
  /** Bytes received; 0 means the peer closed the connection. */
  bytes: number;
  /** Fds that arrived with the message (close-on-exec); the caller owns them. */
  fds: number[];
  /** The message was longer than the buffer (MSG_TRUNC). */
  truncated: boolean;
  /** More fds were sent than fit (MSG_CTRUNC); the kernel closed the rest. */
  ctruncated: boolean;
}

/** An opaque uv_poll handle. */
export type WatcherHandle = { readonly __watcher: unique symbol };

export interface NativeConstants {
  readonly O_RDONLY: number;
  readonly O_WRONLY: number;
  readonly O_RDWR: number;
  readonly O_NONBLOCK: number;
  readonly O_CREAT: number;
  readonly O_TRUNC: number;
  readonly EFD_NONBLOCK: number;
  readonly EFD_SEMAPHORE: number;
  readonly PROT_NONE: number;
  readonly PROT_READ: number;
  readonly PROT_WRITE: number;
  readonly MAP_SHARED: number;
  readonly MAP_PRIVATE: number;
  readonly MAP_ANONYMOUS: number;
  readonly MAP_POPULATE: number;
  readonly MAP_NORESERVE: number;
  readonly MS_SYNC: number;
  readonly MS_ASYNC: number;
  readonly MFD_ALLOW_SEALING: number;
  readonly UV_READABLE: number;
  readonly UV_WRITABLE: number;
  readonly UV_DISCONNECT: number;
  readonly UV_PRIORITIZED: number;
  readonly PAGE_SIZE: number;
}

export type Bytes = ArrayBufferView | ArrayBuffer;

/** The addon's functions. Failing syscalls throw the registered SysError class. */
export interface NativeBinding {
  setErrorClass(ctor: new (syscall: string, errno: number, detail?: string) => Error): void;
  strerror(errno: number): string;
  open(path: string, flags: number, mode?: number): number;
  close(fd: number): void;
  read(fd: number, buf: Bytes): number | null;
  write(fd: number, buf: Bytes): number | null;
  setNonblocking(fd: number, on: boolean): void;
  dup(fd: number): number;
  eventfd(initval: number, flags: number): number;
  eventfdRead(fd: number): bigint | null;
  eventfdWrite(fd: number, value: number | bigint): boolean;
  /** The counter as a number, 0 if it was zero (EAGAIN). */
  eventfdTake(fd: number): number;
  /** Adds 1; false on EAGAIN. */
  eventfdSignal(fd: number): boolean;
  ioctl(fd: number, request: number | bigint, arg?: number | bigint | Bytes): number;
  addressOf(view: Bytes): bigint;
  mmap(length: number | bigint, prot: number, flags: number, fd: number, offset: number | bigint): ArrayBuffer;
  munmap(buffer: ArrayBuffer): boolean;
  mmapFixed(buffer: ArrayBuffer, offset: number, length: number, prot: number, flags: number, fd: number, fileOffset: number | bigint): void;
  msync(buffer: Bytes, offset: number, length: number, flags: number): void;
  leakedMappings(): number;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, length: number | bigint): void;
  fence(): void;
  socketpair(): [number, number];
  unixConnect(path: string): number;
  unixListen(path: string, backlog?: number): number;
  accept(fd: number): number | null;
  sendmsg(fd: number, data: Bytes, fds?: readonly number[]): number | null;
  recvmsg(fd: number, buf: Bytes, maxFds?: number): RecvResult | null;
  /** With `drainEventfd`, the watcher reads the eventfd's counter before each callback and passes it as `count`. */
  watcherCreate(fd: number, callback: (events: number, errno: number, count: number) => void, drainEventfd?: boolean): WatcherHandle;
  watcherStart(handle: WatcherHandle, events: number): void;
  watcherStop(handle: WatcherHandle): void;
  watcherRef(handle: WatcherHandle, on: boolean): void;
  watcherClose(handle: WatcherHandle): void;
  readonly constants: NativeConstants;
}

let loaded: NativeBinding | undefined;
let errorClass: (new (syscall: string, errno: number, detail?: string) => Error) | undefined;

/** Registers the class thrown for failed syscalls (done once by errno.ts). */
export function registerErrorClass(ctor: new (syscall: string, errno: number, detail?: string) => Error): void {
  errorClass = ctor;
  loaded?.setErrorClass(ctor);
}

/** Replaces the addon, e.g. with a fake in unit tests or a binding for another runtime. */
export function setBinding(binding: NativeBinding): void {
  loaded = binding;
  if (errorClass) binding.setErrorClass(errorClass);
}

/** The addon, loaded on first use from prebuilds/ or build/Release (node-gyp-build's search order). */
export function binding(): NativeBinding {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  const load = require("node-gyp-build") as (dir: string) => NativeBinding;
  const root = join(dirname(fileURLToPath(import.meta.url)), "..");
  const b = load(root);
  setBinding(b);
  return b;
}
