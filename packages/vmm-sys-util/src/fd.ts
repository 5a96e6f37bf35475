// Raw fd operations. Every fd the package creates is close-on-exec, so spawned processes (a backend the
// bridge starts) never inherit privcmd, evtchn or eventfds.
import { binding, type Bytes } from "./native.js";

export const constants = {
  get O_RDONLY() { return binding().constants.O_RDONLY; },
  get O_WRONLY() { return binding().constants.O_WRONLY; },
  get O_RDWR() { return binding().constants.O_RDWR; },
  get O_NONBLOCK() { return binding().constants.O_NONBLOCK; },
  get O_CREAT() { return binding().constants.O_CREAT; },
  get O_TRUNC() { return binding().constants.O_TRUNC; },
  get PAGE_SIZE() { return binding().constants.PAGE_SIZE; },
};

function checkFd(fd: number): void {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw new RangeError(`invalid fd ${fd}`);
}

/** `open(2)` with O_CLOEXEC. @throws SysError (`ENOENT` for a missing device node, `EACCES`...). */
export function open(path: string, flags: number, mode = 0o600): number {
  if (typeof path !== "string" || path.length === 0) throw new TypeError("path must be a non-empty string");
  return binding().open(path, flags, mode);
}

/** `close(2)`. */
export function close(fd: number): void {
  checkFd(fd);
  binding().close(fd);
}

/** `read(2)` into the view; `null` when a nonblocking fd has nothing (EAGAIN). */
export function read(fd: number, buf: Bytes): number | null {
  checkFd(fd);
  return binding().read(fd, buf);
}

/** `write(2)` from the view; `null` when a nonblocking fd is full (EAGAIN). */
export function write(fd: number, buf: Bytes): number | null {
  checkFd(fd);
  return binding().write(fd, buf);
}

/** Sets or clears O_NONBLOCK. */
export function setNonblocking(fd: number, on = true): void {
  checkFd(fd);
  binding().setNonblocking(fd, on);
}

/** `fcntl(F_DUPFD_CLOEXEC)`. */
export function dup(fd: number): number {
  checkFd(fd);
  return binding().dup(fd);
}
