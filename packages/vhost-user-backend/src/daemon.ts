// A vhost-user back-end daemon for one device on one socket (rust-vmm vhost-user-backend's VhostUserDaemon):
//  - server mode (the usual: QEMU's `-chardev socket,path=...` without `server`): we listen; one front-end
//    at a time is served, and when it goes away the next connection is accepted;
//  - client mode (QEMU `server=on`, or a front-end that listens): we connect, retrying until the front-end
//    is there, and reconnect after it goes away.
// The device is reset between connections, so every front-end sees a fresh device.
import { EventEmitter } from "eventemitter3";
import { existsSync, lstatSync, unlinkSync } from "node:fs";
import { FdWatcher, PollEvents, SysError, UnixListener, UnixStream, noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import type { VhostUserDevice } from "./device.js";
import { BackendError } from "./error.js";
import { BackendHandler, type BackendHandlerOptions } from "./handler.js";

export interface DaemonOptions extends BackendHandlerOptions {
  /** Socket path. */
  socket: string;
  /** "server" (default): listen on `socket`; "client": connect to it. */
  mode?: "server" | "client";
  /** Client mode: delay between connection attempts (default 1000 ms). */
  retryDelayMs?: number;
  /** Client mode: attempts before giving up (default Infinity). */
  maxAttempts?: number;
  /** Stop after the first front-end disconnects instead of waiting for the next (default false). */
  once?: boolean;
}

export interface DaemonEvents {
  /** Server mode: the socket is listening. */
  listening: [path: string];
  /** A front-end connected. */
  connected: [handler: BackendHandler];
  /** The front-end went away; `cause` is set when the connection failed (malformed message...). */
  disconnected: [cause?: Error];
  /** The daemon stopped (close(), `once`, or client mode gave up: `cause`). Emitted once. */
  close: [cause?: Error];
}

export class VhostUserDaemon extends EventEmitter<DaemonEvents> implements Disposable {
  readonly device: VhostUserDevice;
  readonly #opts: DaemonOptions;
  readonly #log: Logger;
  #listener: UnixListener | undefined;
  #watcher: FdWatcher | undefined;
  #handler: BackendHandler | undefined;
  #timer: NodeJS.Timeout | undefined;
  #attempts = 0;
  #closed = false;
  #started = false;
  /** Connections served so far. */
  connections = 0;

  constructor(device: VhostUserDevice, options: DaemonOptions) {
    super();
    if (typeof options.socket !== "string" || options.socket.length === 0) throw new TypeError("socket path required");
    this.device = device;
    this.#opts = options;
    this.#log = options.logger ?? noopLogger;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The handler of the connected front-end, if any. */
  get handler(): BackendHandler | undefined {
    return this.#handler;
  }

  /**
   * Starts listening (server) or connecting (client).
   * @throws BackendError Socket (server mode: the path cannot be bound)
   */
  start(): this {
    if (this.#started) return this;
    this.#started = true;
    if ((this.#opts.mode ?? "server") === "server") this.#listen();
    else this.#connect();
    return this;
  }

  #listen(): void {
    const path = this.#opts.socket;
    // A socket file left by an earlier run would make bind fail with EADDRINUSE (rust-vmm unlinks too);
    // anything that is not a socket is left alone.
    if (existsSync(path) && lstatSync(path).isSocket()) unlinkSync(path);
    try {
      this.#listener = new UnixListener(path).setNonblocking(true);
    } catch (err) {
      throw new BackendError("Socket", `cannot listen on ${path}: ${err instanceof SysError ? err.code : String(err)}`, { cause: err });
    }
    this.#watcher = new FdWatcher(this.#listener.fd, () => this.#accept(), {
      onError: (err) => this.#log.error("accept failed", { err: String(err) }),
    });
    this.#watcher.start(PollEvents.READABLE);
    this.#log.info("listening", { socket: path, device: this.device.name });
    this.emit("listening", path);
  }

  #accept(): void {
    if (this.#handler || !this.#listener) return;
    let stream: UnixStream | null;
    try {
      stream = this.#listener.accept();
    } catch (err) {
      this.#log.warn("accept failed", { err: String(err) });
      return;
    }
    if (!stream) return;
    // One front-end at a time: further connections wait in the backlog until this one ends.
    this.#watcher?.stop();
    this.#serve(stream);
  }

  #connect(): void {
    if (this.#closed) return;
    this.#timer = undefined;
    let stream: UnixStream;
    try {
      stream = UnixStream.connect(this.#opts.socket);
    } catch (err) {
      this.#attempts++;
      const max = this.#opts.maxAttempts ?? Infinity;
      const code = err instanceof SysError ? err.code : String(err);
      if (this.#attempts >= max) {
        this.#finish(new BackendError("Socket", `cannot connect to ${this.#opts.socket} after ${this.#attempts} attempts: ${code}`, { cause: err }));
        return;
      }
      this.#log.debug("front-end not there yet", { socket: this.#opts.socket, code });
      this.#timer = setTimeout(() => this.#connect(), this.#opts.retryDelayMs ?? 1000);
      return;
    }
    this.#attempts = 0;
    this.#serve(stream);
  }

  #serve(stream: UnixStream): void {
    const handler = new BackendHandler(this.device, stream, {
      ...(this.#opts.xenMapper ? { xenMapper: this.#opts.xenMapper } : {}),
      logger: this.#log,
    });
    this.#handler = handler;
    this.connections++;
    this.#log.info("front-end connected", { device: this.device.name, socket: this.#opts.socket });
    handler.on("close", (cause) => {
      if (this.#handler === handler) this.#handler = undefined;
      this.#log.info("front-end disconnected", { device: this.device.name, ...(cause ? { error: cause.message } : {}) });
      this.emit("disconnected", cause);
      if (this.#closed) return;
      if (this.#opts.once) {
        this.#finish(undefined);
        return;
      }
      if (this.#listener) {
        this.#watcher?.start(PollEvents.READABLE);
        // a front-end may already be waiting in the backlog
        setImmediate(() => this.#accept());
      } else {
        this.#timer = setTimeout(() => this.#connect(), this.#opts.retryDelayMs ?? 1000);
      }
    });
    this.emit("connected", handler);
  }

  #finish(cause: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#handler?.close();
    this.#handler = undefined;
    this.#watcher?.close();
    this.#watcher = undefined;
    if (this.#listener) {
      this.#listener.close();
      try {
        unlinkSync(this.#listener.path);
      } catch {
        // already gone
      }
      this.#listener = undefined;
    }
    this.emit("close", cause);
  }

  /** Stops serving: closes the connection and the listening socket (and removes its file). Idempotent. */
  close(): void {
    this.#finish(undefined);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** rust-vmm vhost-device naming: `-s PATH -c N` serves PATH0..PATH(N-1); N = 1 still appends 0. */
export function socketPaths(base: string, count: number): string[] {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`socket count ${count} must be a positive integer`);
  return Array.from({ length: count }, (_, i) => `${base}${i}`);
}
