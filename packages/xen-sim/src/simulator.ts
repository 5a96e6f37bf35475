// Starting a simulator from a test or the demo: spawns the simulator process, connects transports to it,
// starts guest vCPU processes and drives the toolstack side (create/pause/unpause/destroy, xenstore nodes).
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { XenArch, XsPermission } from "@xen-vhost/xen-sys";
import { SimError } from "./error.js";
import { BlockingClient } from "./protocol.js";
import { SimTransport } from "./transport/sim-transport.js";
import type { DomainConfig } from "./sim/domain.js";
import type { XenRelease } from "./sim/hypervisor.js";
import type { VirtioDeviceSpec, VirtioDiskSpec } from "./sim/libxl.js";

export type { DomainConfig } from "./sim/domain.js";

export interface SimulatorOptions {
  /** Hypervisor ABI (default arm64). */
  arch?: XenArch;
  /** Interface versions of this Xen release (default 4.17). */
  release?: XenRelease;
  /** Domains to create at start (default: one guest, domid 1, 64 MiB, 1 vCPU, paused). */
  domains?: DomainConfig[];
  /** Run a XenStore (default true). */
  xenstore?: boolean;
  /** Socket path (default: a fresh temporary directory). */
  socket?: string;
}

export interface GuestOptions {
  domid: number;
  vcpu?: number;
  /** A built-in program name ("mmio", "virtio-rng", "virtio-blk", "virtio-probe") or an absolute .js path. */
  program: string;
  args?: unknown;
  /** Fail the vCPU when an ioreq stays unanswered this long (default 15 s). */
  ioreqTimeoutMs?: number;
  /** Called for each step the guest reports. */
  onLog?: (message: string) => void;
}

/** A running guest vCPU process. */
export class GuestProcess {
  readonly child: ChildProcess;
  readonly logs: string[] = [];
  /** Settles when the guest program ends: its result, or a SimError "GuestFailed". */
  readonly result: Promise<unknown>;
  counters: unknown;

  constructor(child: ChildProcess, onLog?: (m: string) => void) {
    this.child = child;
    let result: unknown;
    let error: string | undefined;
    const rl = createInterface({ input: child.stdout! });
    rl.on("line", (line) => {
      let msg: { log?: string; result?: unknown; error?: string; counters?: unknown };
      try {
        msg = JSON.parse(line) as typeof msg;
      } catch {
        this.logs.push(line);
        return;
      }
      if (msg.log !== undefined) {
        this.logs.push(msg.log);
        onLog?.(msg.log);
      }
      if ("result" in msg) {
        result = msg.result;
        this.counters = msg.counters;
      }
      if (msg.error !== undefined) error = msg.error;
    });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    this.result = new Promise((resolve, reject) => {
      child.once("close", (code, signal) => {
        if (code === 0 && error === undefined) resolve(result);
        else reject(new SimError("GuestFailed", `guest exited (${signal ?? code}): ${error ?? stderr.trim()}`));
      });
    });
    // Callers that never await the result must not get an unhandled rejection.
    this.result.catch(() => undefined);
  }

  /** Kills the vCPU process (e.g. when it blocks in an ioreq nobody answers). */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}

// The simulator and guests always run the compiled dist/ (also when this module is loaded from src/ by tests).
const self = dirname(fileURLToPath(import.meta.url));
const here = basename(self) === "src" ? join(self, "..", "dist") : self;

export class Simulator {
  readonly socketPath: string;
  readonly xenstorePath: string | undefined;
  readonly pid: number;
  readonly #child: ChildProcess;
  readonly #dir: string | undefined;
  readonly #guests = new Set<GuestProcess>();
  readonly #transports = new Set<SimTransport>();
  #control: BlockingClient | undefined;
  #closed = false;

  private constructor(child: ChildProcess, socketPath: string, xenstore: string | undefined, dir: string | undefined) {
    this.#child = child;
    this.socketPath = socketPath;
    this.xenstorePath = xenstore;
    this.#dir = dir;
    this.pid = child.pid!;
  }

  /** Spawns the simulator process and waits until it listens. @throws SimError "StartFailed" */
  static async start(options: SimulatorOptions = {}): Promise<Simulator> {
    const dir = options.socket ? undefined : mkdtempSync(join(tmpdir(), "xen-sim-"));
    const socket = options.socket ?? join(dir!, "sim.sock");
    const config = {
      socket, arch: options.arch ?? "arm64", release: options.release ?? "4.17", xenstore: options.xenstore ?? true,
      domains: options.domains ?? [{ domid: 1, name: "guest1" }],
    };
    const child = spawn(process.execPath, [join(here, "sim", "main.js"), JSON.stringify(config)], { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    try {
      const ready = await new Promise<{ xenstore: string | null }>((resolve, reject) => {
        const rl = createInterface({ input: child.stdout });
        rl.once("line", (line) => {
          try {
            resolve(JSON.parse(line) as { xenstore: string | null });
          } catch (err) {
            reject(new SimError("StartFailed", `simulator said: ${line}`, { cause: err }));
          }
        });
        child.once("exit", (code) => reject(new SimError("StartFailed", `simulator exited (${code}): ${stderr.trim()}`)));
        child.once("error", (err) => reject(new SimError("StartFailed", "cannot spawn the simulator", { cause: err })));
      });
      return new Simulator(child, socket, ready.xenstore ?? undefined, dir);
    } catch (err) {
      child.kill("SIGKILL");
      if (dir) rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** A new XenTransport to the simulator (what a bridge gets with XEN_VHOST_SIM=<socketPath>). */
  connect(): SimTransport {
    const t = SimTransport.connect(this.socketPath);
    this.#transports.add(t);
    return t;
  }

  /** The environment a bridge process needs to use this simulator. */
  env(): Record<string, string> {
    return { XEN_VHOST_SIM: this.socketPath, ...(this.xenstorePath ? { XENSTORED_PATH: this.xenstorePath } : {}) };
  }

  #ctl(): BlockingClient {
    if (this.#closed) throw new SimError("Closed", "simulator is closed");
    this.#control ??= BlockingClient.connect(this.socketPath);
    return this.#control;
  }

  /** A toolstack call on the simulator; refusals throw SimError "InvalidArgument" with the errno name. */
  control<T = unknown>(method: string, params: unknown = {}): T {
    const r = this.#ctl().call(`control.${method}`, params);
    if (r.refused) throw new SimError("InvalidArgument", `${method}: ${r.refused.code} ${r.refused.message}`);
    return r.result as T;
  }

  createDomain(config: DomainConfig = {}): number {
    return this.control<{ domid: number }>("createDomain", { config }).domid;
  }

  pause(domid: number): void {
    this.control("pause", { domid });
  }

  /** xl unpause: lets the guest's vCPUs run. */
  unpause(domid: number): void {
    this.control("unpause", { domid });
  }

  destroy(domid: number): void {
    this.control("destroy", { domid });
  }

  irqLevel(domid: number, irq: number): boolean {
    return this.control<{ level: boolean }>("irqLevel", { domid, irq }).level;
  }

  /** What the toolstack writes for a virtio-mmio device (xl >= 4.18 `virtio = [...]`). Returns the backend path. */
  addVirtioDevice(spec: VirtioDeviceSpec): string {
    return this.control<{ path: string }>("addVirtioDevice", { spec }).path;
  }

  /** What xl 4.17 writes for a `specification=virtio` disk. Returns the backend path. */
  addVirtioDisk(spec: VirtioDiskSpec): string {
    return this.control<{ path: string }>("addVirtioDisk", { spec }).path;
  }

  /** The simulator's own view: open connections, domains, and its open fd count (for leak checks). */
  stats(): { connections: number; domains: number[]; fds: number } {
    return this.control("stats");
  }

  xenstoreRead(path: string): string | undefined {
    return this.control<{ value: string | null }>("xsRead", { path }).value ?? undefined;
  }

  /** Writes a node as the toolstack (dom0) would, optionally setting its permissions (owner first). */
  xenstoreWrite(path: string, value: string, perms?: XsPermission[]): void {
    this.control("xsWrite", { path, value, ...(perms ? { perms } : {}) });
  }

  /** A node's permissions, or undefined if it does not exist. */
  xenstorePerms(path: string): XsPermission[] | undefined {
    return this.control<{ perms: XsPermission[] | null }>("xsPerms", { path }).perms ?? undefined;
  }

  /** SCHEDOP_shutdown / `xl shutdown`: the domain stops but stays until destroyed (reason 0 poweroff .. 5). */
  shutdown(domid: number, reason = 0): void {
    this.control("shutdown", { domid, reason });
  }

  /** Starts a guest vCPU process running `program`. */
  startGuest(options: GuestOptions): GuestProcess {
    const cfg = {
      socket: this.socketPath, domid: options.domid, vcpu: options.vcpu ?? 0, program: options.program, args: options.args ?? {},
      ...(options.ioreqTimeoutMs !== undefined ? { ioreqTimeoutMs: options.ioreqTimeoutMs } : {}),
    };
    const child = spawn(process.execPath, [join(here, "guest", "main.js"), JSON.stringify(cfg)], { stdio: ["ignore", "pipe", "pipe"] });
    const g = new GuestProcess(child, options.onLog);
    this.#guests.add(g);
    void g.result.finally(() => this.#guests.delete(g)).catch(() => undefined);
    return g;
  }

  /** Kills guests, closes transports made by connect(), stops the simulator. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const g of this.#guests) g.kill();
    await Promise.allSettled([...this.#guests].map((g) => g.result));
    for (const t of this.#transports) t.close();
    this.#control?.close();
    const exited = new Promise<void>((resolve) => {
      if (this.#child.exitCode !== null || this.#child.signalCode !== null) resolve();
      else this.#child.once("exit", () => resolve());
    });
    this.#child.stdin?.end();
    const timer = setTimeout(() => this.#child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
    if (this.#dir) rmSync(this.#dir, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Starts a simulator: `const sim = await startSimulator(); const transport = sim.connect();` */
export function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  return Simulator.start(options);
}
