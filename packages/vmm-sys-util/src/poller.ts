import { binding, type WatcherHandle } from "./native.js";
import { SysError } from "./errno.js";

/** Readiness bits, as libuv reports them (`UV_READABLE`...). */
export const PollEvents = {
  get READABLE() { return binding().constants.UV_READABLE; },
  get WRITABLE() { return binding().constants.UV_WRITABLE; },
  get DISCONNECT() { return binding().constants.UV_DISCONNECT; },
  get PRIORITIZED() { return binding().constants.UV_PRIORITIZED; },
};

export interface FdWatcherOptions {
  /**
   * The fd is an eventfd and the callback would read it first: the watcher reads (and so resets) the counter
   * in C before calling back, passing it as the third argument, and a wake-up that finds it zero calls
   * nothing. Saves one native call per event. As with a read in the callback, this happens only after poll
   * reported the fd readable (a blocking eventfd shared with another reader could still block).
   */
  drainEventfd?: boolean;
  /**
   * Called when the callback throws. Without it the error is rethrown, which ends the process as any
   * uncaught exception would; daemons pass a handler that logs and tears down only the affected device.
   */
  onError?: (err: unknown) => void;
}

/**
 * Readiness callbacks for a raw fd on Node's own event loop (libuv `uv_poll`): eventfds, `/dev/xen/evtchn`,
 * unix sockets. The fd stays owned by the caller; the watcher must be closed before the fd is.
 * The callback gets the ready events mask, an errno (non-zero when polling failed, e.g. EBADF) and, with
 * `drainEventfd`, the eventfd counter the watcher read (0 otherwise).
 */
export class FdWatcher implements Disposable {
  #handle: WatcherHandle | undefined;
  readonly fd: number;

  constructor(fd: number, callback: (events: number, errno: number, count: number) => void, options: FdWatcherOptions = {}) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`invalid fd ${fd}`);
    if (typeof callback !== "function") throw new TypeError("callback must be a function");
    const { onError } = options;
    const cb = onError
      ? (events: number, errno: number, count: number): void => {
          try {
            callback(events, errno, count);
          } catch (err) {
            onError(err);
          }
        }
      : callback;
    this.fd = fd;
    this.#handle = binding().watcherCreate(fd, cb, options.drainEventfd === true);
  }

  get closed(): boolean {
    return this.#handle === undefined;
  }

  #h(): WatcherHandle {
    if (!this.#handle) throw SysError.closed("FdWatcher");
    return this.#handle;
  }

  /** Starts (or changes) watching for `events` (default READABLE). */
  start(events: number = PollEvents.READABLE): this {
    binding().watcherStart(this.#h(), events);
    return this;
  }

  /** Stops delivering callbacks; `start` resumes. */
  stop(): this {
    binding().watcherStop(this.#h());
    return this;
  }

  /** Keeps the process alive while started (the default). */
  ref(): this {
    binding().watcherRef(this.#h(), true);
    return this;
  }

  /** Lets the process exit even while this watcher is started. */
  unref(): this {
    binding().watcherRef(this.#h(), false);
    return this;
  }

  /** Stops and releases the watcher (not the fd). Idempotent. */
  close(): void {
    const h = this.#handle;
    if (!h) return;
    this.#handle = undefined;
    binding().watcherClose(h);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
