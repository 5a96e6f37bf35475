import { binding } from "./native.js";
import { SysError } from "./errno.js";

export interface EventFdOptions {
  /** Initial counter value (default 0). */
  initval?: number;
  /** O_NONBLOCK: reads of a zero counter return null instead of blocking (default true: we live on an event loop). */
  nonblocking?: boolean;
  /** EFD_SEMAPHORE: each read takes 1 from the counter. */
  semaphore?: boolean;
}

/**
 * An eventfd(2) counter: the doorbell of vhost-user (kick/call fds) and of the notifier relays.
 * Owns its fd; `close()` is idempotent.
 */
let adopting: number | undefined;

export class EventFd implements Disposable {
  #fd: number;

  constructor(options: EventFdOptions = {}) {
    if (adopting !== undefined) {
      this.#fd = adopting;
      adopting = undefined;
      return;
    }
    const { initval = 0, nonblocking = true, semaphore = false } = options;
    if (!Number.isInteger(initval) || initval < 0 || initval > 0xffffffff)
      throw new RangeError(`eventfd initval ${initval} out of range`);
    const c = binding().constants;
    this.#fd = binding().eventfd(initval, (nonblocking ? c.EFD_NONBLOCK : 0) | (semaphore ? c.EFD_SEMAPHORE : 0));
  }

  /** Takes ownership of an existing eventfd (e.g. one received over SCM_RIGHTS). */
  static fromFd(fd: number): EventFd {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`invalid fd ${fd}`);
    adopting = fd;
    return new EventFd();
  }

  /** The fd, e.g. to send with SET_VRING_KICK. Stays owned by this object. */
  get fd(): number {
    if (this.#fd < 0) throw SysError.closed("eventfd");
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Adds `value` (default 1) to the counter; false if it would overflow on a nonblocking fd. */
  write(value: number | bigint = 1): boolean {
    if (typeof value === "number" && (!Number.isInteger(value) || value < 1))
      throw new RangeError(`eventfd value ${value} must be a positive integer`);
    return binding().eventfdWrite(this.fd, value);
  }

  /** Reads and resets the counter (or takes 1 in semaphore mode); null if it is zero on a nonblocking fd. */
  read(): bigint | null {
    return binding().eventfdRead(this.fd);
  }

  /**
   * `read()` for hot paths: the counter as a number (rounded above 2^53), 0 if it was zero on a nonblocking
   * fd. No bigint is allocated.
   */
  take(): number {
    return binding().eventfdTake(this.fd);
  }

  /** `write(1)` for hot paths (doorbells, interrupts): no value to convert. False if the counter would overflow. */
  signal(): boolean {
    return binding().eventfdSignal(this.fd);
  }

  /** Gives up ownership: the caller now owns the returned fd. */
  intoFd(): number {
    const fd = this.fd;
    this.#fd = -1;
    return fd;
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    binding().close(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
