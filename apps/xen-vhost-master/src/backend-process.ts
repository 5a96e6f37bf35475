// --backend-cmd: the bridge spawns the vhost-user backend ("spawn the vhost-user slave process" in the
// seed), waits for its socket to appear, and restarts it when it dies, with a growing delay so a backend
// that crashes at start-up does not spin. The device reconnects through the front-end's own reconnect.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { EventEmitter } from "eventemitter3";
import { noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";

export interface BackendProcessEvents {
  /** The process started and its socket exists. */
  ready: [pid: number];
  /** The process exited (a restart follows unless stopped). */
  exit: [code: number | null, signal: NodeJS.Signals | null];
}

export interface BackendProcessOptions {
  /** argv of the backend. */
  command: readonly string[];
  /** The socket the backend creates (client-mode front-end) - awaited before `ready`. */
  socket?: string;
  /** How long to wait for the socket, ms (default 10 s). */
  startTimeoutMs?: number;
  /** First restart delay, doubled per quick crash up to 10 s (default 100 ms). */
  restartDelayMs?: number;
  logger?: Logger;
}

export class BackendProcess extends EventEmitter<BackendProcessEvents> {
  readonly #opts: BackendProcessOptions;
  readonly #log: Logger;
  #child: ChildProcess | undefined;
  #stopped = false;
  #delay: number;
  #restartTimer: NodeJS.Timeout | undefined;
  restarts = 0;

  constructor(options: BackendProcessOptions) {
    super();
    if (options.command.length === 0) throw new RangeError("backend command is empty");
    this.#opts = options;
    this.#log = options.logger ?? noopLogger;
    this.#delay = options.restartDelayMs ?? 100;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts the backend and resolves once its socket exists (if one was given). */
  async start(): Promise<number> {
    this.#stopped = false;
    const [cmd, ...args] = this.#opts.command as [string, ...string[]];
    const child = spawn(cmd, args, { stdio: ["ignore", "inherit", "inherit"] });
    this.#child = child;
    const startedAt = Date.now();
    // spawn() reports a missing or non-executable command asynchronously, as an 'error' event.
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    const spawnError = new Promise<never>((_, reject) => child.once("error", reject));
    child.once("exit", (code, signal) => {
      if (this.#child !== child) return;
      this.#child = undefined;
      this.#log.warn("backend exited", { command: this.#opts.command.join(" "), code, signal });
      this.emit("exit", code, signal);
      if (this.#stopped) return;
      // A backend that ran for a while gets a fast restart; one that keeps crashing backs off.
      this.#delay = Date.now() - startedAt > 5000 ? (this.#opts.restartDelayMs ?? 100) : Math.min(this.#delay * 2, 10_000);
      this.#restartTimer = setTimeout(() => {
        this.restarts++;
        this.start().catch((err: unknown) => this.#log.error("backend restart failed", { error: String(err) }));
      }, this.#delay);
    });
    await Promise.race([spawnError, this.#waitForSocket(child)]);
    const pid = child.pid ?? -1;
    this.#log.info("backend started", { command: this.#opts.command.join(" "), pid });
    this.emit("ready", pid);
    return pid;
  }

  async #waitForSocket(child: ChildProcess): Promise<void> {
    const socket = this.#opts.socket;
    if (!socket) return;
    const deadline = Date.now() + (this.#opts.startTimeoutMs ?? 10_000);
    while (!existsSync(socket)) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`backend exited before creating ${socket}`);
      if (Date.now() > deadline) throw new Error(`backend did not create ${socket} within ${this.#opts.startTimeoutMs ?? 10_000} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stops the backend (SIGTERM, then SIGKILL after a second) and any pending restart. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#restartTimer);
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 1000);
    await exited;
    clearTimeout(timer);
  }
}
