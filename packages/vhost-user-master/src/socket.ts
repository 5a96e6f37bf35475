// Getting a connected socket to a back-end: client mode (connect, retrying with exponential backoff
// while the back-end is not listening yet) and server mode (listen and accept the back-end).
import type { UnixListener} from "@xen-vhost/vmm-sys-util";
import { FdWatcher, PollEvents, SysError, UnixStream } from "@xen-vhost/vmm-sys-util";
import { VhostUserError, fromSysError } from "@xen-vhost/vhost-user-protocol";

export interface RetryOptions {
  /** Connection attempts before giving up (default 50). */
  attempts?: number;
  /** First delay between attempts in ms (default 20), doubled each time... */
  initialDelayMs?: number;
  /** ...up to this (default 1000). */
  maxDelayMs?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Errors that mean "the back-end is not there yet": retrying can help. */
const RETRYABLE = new Set(["ENOENT", "ECONNREFUSED", "EAGAIN"]);

/**
 * Connects to a back-end's socket, retrying while it does not exist or refuses.
 * @throws VhostUserError SocketBroken (with the SysError as cause) after the last attempt
 */
export async function connectWithRetry(path: string, retry: RetryOptions = {}): Promise<UnixStream> {
  const attempts = retry.attempts ?? 50;
  let delay = retry.initialDelayMs ?? 20;
  const max = retry.maxDelayMs ?? 1000;
  for (let attempt = 1; ; attempt++) {
    try {
      return UnixStream.connect(path);
    } catch (err) {
      if (!(err instanceof SysError) || !RETRYABLE.has(err.code) || attempt >= attempts)
        throw fromSysError(err, `connect ${path} (attempt ${attempt}/${attempts})`);
      await sleep(delay);
      delay = Math.min(delay * 2, max);
    }
  }
}

/** Waits for one connection on `listener` without blocking the event loop. */
export function acceptOne(listener: UnixListener, timeoutMs: number): Promise<UnixStream> {
  listener.setNonblocking(true);
  const now = listener.accept();
  if (now) return Promise.resolve(now);
  return new Promise((resolve, reject) => {
    const done = (f: () => void) => {
      clearTimeout(timer);
      watcher.close();
      f();
    };
    const watcher = new FdWatcher(listener.fd, (_events, errno) => {
      if (errno !== 0) {
        done(() => reject(new VhostUserError("SocketBroken", `accept on ${listener.path}: poll errno ${errno}`)));
        return;
      }
      let s: UnixStream | null;
      try {
        s = listener.accept();
      } catch (err) {
        done(() => reject(fromSysError(err, `accept on ${listener.path}`)));
        return;
      }
      if (s) {
        const stream = s;
        done(() => resolve(stream));
      }
    });
    watcher.start(PollEvents.READABLE);
    const timer = setTimeout(() => done(() => reject(new VhostUserError("Timeout", `no back-end connected to ${listener.path} within ${timeoutMs} ms`))), timeoutMs);
  });
}
