// The vhost-user front-end: one method per front-end request, serialized (the protocol allows one
// outstanding request), REPLY_ACK on every request without a reply of its own once negotiated, replies
// matched to the request by id and payload kind, per-request timeouts. It records what it told the
// back-end (features, memory, rings, inflight area, status) so that after a reconnect the same state
// can be replayed to a fresh back-end process.
import { AsyncLocalStorage } from "node:async_hooks";
import { rmSync } from "node:fs";
import { EventEmitter } from "eventemitter3";
import { UnixListener, UnixStream, close as closeFd, dup } from "@xen-vhost/vmm-sys-util";
import {
  Connection, FrontendReq, VhostUserError, VhostUserHeaderFlag, VhostUserVirtioFeatures, VirtioDeviceStatus,
  ackExpectation, closeMessageFds, configFlagsFor, describeProtocolFeatures, hasProtocolFeature, messageInfo,
  missingPrerequisites, noopLogger, protocolFeatureSet, replyExpectation, requestName, VHOST_MEMORY_BASELINE_NREGIONS,
  VHOST_USER_VRING_NOFD_MASK, type Expectation, type FrontendReqName, type Logger, type MemoryRegion, type Payload,
  type PayloadOf, type ProtocolFeatureName, type ProtocolQuirks, type VhostUserMessage,
} from "@xen-vhost/vhost-user-protocol";
import { BackendRequestChannel, type BackendRequestHandlers, type ShmemMapRequest } from "./backend-channel.js";
import { GpuSocket, type GpuSocketHandlers } from "./gpu-socket.js";
import { InflightRegion, type InflightArea } from "./inflight.js";
import { checkNoOverlap, regionKey, toWireRegion, type MemoryRegionDescription } from "./memory.js";
import { acceptOne, connectWithRetry, type RetryOptions } from "./socket.js";

/** Protocol features this front-end implements fully and acks by default when offered. */
export const DEFAULT_PROTOCOL_FEATURES: readonly ProtocolFeatureName[] = [
  "MQ", "REPLY_ACK", "BACKEND_REQ", "BACKEND_SEND_FD", "CONFIG", "INFLIGHT_SHMFD", "RESET_DEVICE", "CONFIGURE_MEM_SLOTS", "STATUS",
];

export interface FrontendOptions {
  /** Time to wait for each reply, ms (default 5000). */
  timeoutMs?: number;
  /**
   * Time to wait for the reply to a memory-table request (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG), ms
   * (default 30000, or `timeoutMs` if that is longer). A back-end maps the regions before it answers: a Xen
   * back-end foreign-mapping a guest's RAM page by page takes seconds for 128 MiB on a loaded host.
   */
  memoryTimeoutMs?: number;
  logger?: Logger;
  /** The peer's numbering quirks (SHMEM bit, Xen no-advance-map value, config flags). */
  quirks?: Partial<ProtocolQuirks>;
  /** Most fds per message and so most regions one SET_MEM_TABLE may carry (default 32). */
  maxFds?: number;
  /**
   * Regions sent in one SET_MEM_TABLE before the front-end needs CONFIGURE_MEM_SLOTS (default 8, the
   * spec's VHOST_MEMORY_BASELINE_NREGIONS that every back-end accepts).
   */
  maxMemTableRegions?: number;
  /** Answers for back-end requests the front-end cannot decide alone (SHMEM_MAP...). */
  backendHandlers?: BackendRequestHandlers;
  /**
   * Reconnect on an unexpected disconnect (client and server mode only): retry, then replay the
   * recorded state. Default: off (`disconnect` then `close`).
   */
  reconnect?: boolean | RetryOptions;
  /**
   * The ring's next avail index to give a fresh back-end after a crash (SET_VRING_BASE): usually the
   * used index in guest memory. Default: the inflight area's used_idx if INFLIGHT_SHMFD is in use, else
   * the last value known (from GET_VRING_BASE or SET_VRING_BASE).
   */
  restoreVringBase?: (index: number, lastKnown: number) => number;
  /** Let the process exit while connected (default false). */
  unref?: boolean;
}

export interface FrontendEvents {
  /** The connection was lost (the cause says why); a reconnect may follow. */
  disconnect: [cause: VhostUserError];
  /** A new connection is up and the recorded state was replayed to it. */
  reconnect: [];
  /** The front-end is closed for good (after `close()`, or a disconnect without reconnect). */
  close: [cause?: VhostUserError];
  /** CONFIG_CHANGE_MSG from the back-end. */
  configChange: [];
  /** In-band VRING_CALL / VRING_ERR from the back-end. */
  vringCall: [index: number];
  vringErr: [index: number];
  /** SHMEM_MAP/UNMAP seen on the backend channel, and whether a handler accepted it. */
  shmemMap: [req: ShmemMapRequest, accepted: boolean];
  shmemUnmap: [req: ShmemMapRequest, accepted: boolean];
  /** A back-end request that was refused, and why. */
  backendRequestRefused: [request: string, reason: string];
}

/** Ring addresses for SET_VRING_ADDR, in the front-end's user address space (see MemoryRegionDescription.userAddr). */
export interface VringAddresses {
  desc: bigint | number;
  used: bigint | number;
  avail: bigint | number;
  log?: bigint | number;
  /** VHOST_VRING_F_LOG. */
  flags?: number;
}

/** Everything needed to start one ring. */
export interface VringSetup extends VringAddresses {
  num: number;
  /** Next avail index (0 on a fresh ring). */
  base?: number;
  /** Eventfds (borrowed): kick from the driver, call to the driver, err. `null` = poll/in-band. */
  kick: number | null;
  call: number | null;
  err?: number | null;
  /** SET_VRING_ENABLE 1 afterwards (default true; needed when PROTOCOL_FEATURES is negotiated). */
  enable?: boolean;
}

export interface NegotiateOptions {
  /** Virtio features the front-end can use; the back-end's offer is masked with it (default: all offered). */
  features?: bigint;
  /** Protocol features wanted (default DEFAULT_PROTOCOL_FEATURES), masked with the offer. */
  protocolFeatures?: readonly ProtocolFeatureName[];
  /** Protocol features that must be offered, else FeatureMismatch (e.g. XEN_MMAP for a Xen guest). */
  requireProtocolFeatures?: readonly ProtocolFeatureName[];
  /** Send SET_FEATURES now with the masked features (default true). */
  setFeatures?: boolean;
}

export interface Negotiated {
  /** GET_FEATURES. */
  offeredFeatures: bigint;
  /** What SET_FEATURES acked (or would). */
  features: bigint;
  /** GET_PROTOCOL_FEATURES, 0 if the back-end has no VHOST_USER_F_PROTOCOL_FEATURES. */
  offeredProtocolFeatures: bigint;
  /** SET_PROTOCOL_FEATURES. */
  protocolFeatures: bigint;
  /** GET_QUEUE_NUM if MQ was negotiated. */
  queueNum?: number;
  /** GET_MAX_MEM_SLOTS if CONFIGURE_MEM_SLOTS was negotiated. */
  maxMemSlots?: number;
}


interface VringRecord {
  num?: number;
  addr?: PayloadOf<"vring-addr">;
  base?: number;
  kick?: number | null;
  call?: number | null;
  err?: number | null;
  enabled?: boolean;
}

interface Pending {
  expect: Expectation;
  resolve: (m: VhostUserMessage) => void;
  reject: (e: VhostUserError) => void;
  timer: NodeJS.Timeout;
}

const F_PROTOCOL_FEATURES = 1n << BigInt(VhostUserVirtioFeatures.VHOST_USER_F_PROTOCOL_FEATURES);

/** Marks the requests of a reconnect/replay, which pass the gate that holds callers' requests meanwhile. */
const replaying = new AsyncLocalStorage<true>();
const REQ = VhostUserHeaderFlag.VERSION;

function u64(v: bigint | number, what: string): bigint {
  const b = typeof v === "bigint" ? v : Number.isSafeInteger(v) && v >= 0 ? BigInt(v) : -1n;
  if (b < 0n || b > 0xffff_ffff_ffff_ffffn) throw new VhostUserError("InvalidParam", `${what} ${String(v)} is not a u64`);
  return b;
}

function checkIndex(i: number): void {
  if (!Number.isInteger(i) || i < 0 || i > 0xff) throw new VhostUserError("InvalidParam", `vring index ${i} must be 0..255`);
}

function checkU32(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new VhostUserError("InvalidParam", `${what} ${v} is not a u32`);
}

/** Requests whose reply waits for the back-end to map (or unmap) guest memory: `memoryTimeoutMs`. */
const MEMORY_TABLE_REQUESTS: ReadonlySet<FrontendReqName> = new Set<FrontendReqName>(["SET_MEM_TABLE", "ADD_MEM_REG", "REM_MEM_REG"]);

/** A vhost-user front-end on one back-end socket. */
export class Frontend extends EventEmitter<FrontendEvents> implements Disposable {
  readonly #opts: FrontendOptions;
  readonly #log: Logger;
  readonly #timeoutMs: number;
  readonly #memoryTimeoutMs: number;
  readonly #dial: (() => Promise<UnixStream>) | undefined;
  readonly #listener: UnixListener | undefined;
  #conn: Connection | undefined;
  #backendChannel: BackendRequestChannel | undefined;
  #pending: Pending | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  #closed = false;
  #reconnecting = false;
  /** Open while no reconnect runs; callers' requests wait on it so they never interleave with a replay. */
  #gate: Promise<void> | undefined;
  // negotiated state
  #offeredFeatures: bigint | undefined;
  #features: bigint | undefined;
  #offeredProtocol = 0n;
  #protocol = 0n;
  #protocolNegotiated = false;
  #xenMmap = false;
  // recorded state for replay
  #owner = false;
  #wantBackendReq = false;
  #memory = new Map<string, { region: MemoryRegion; fd: number }>();
  #vrings = new Map<number, VringRecord>();
  #inflight: InflightArea | undefined;
  #status: number | undefined;
  #negotiateOptions: NegotiateOptions | undefined;

  private constructor(stream: UnixStream, opts: FrontendOptions, dial?: () => Promise<UnixStream>, listener?: UnixListener) {
    super();
    this.#opts = opts;
    this.#log = opts.logger ?? noopLogger;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    this.#memoryTimeoutMs = opts.memoryTimeoutMs ?? Math.max(30_000, this.#timeoutMs);
    this.#dial = dial;
    this.#listener = listener;
    this.#attach(stream);
  }

  /** A front-end on an already connected socket (e.g. one end of a socketpair). No reconnect. */
  static fromStream(stream: UnixStream, options: FrontendOptions = {}): Frontend {
    return new Frontend(stream, options);
  }

  /** Client mode: connects to a listening back-end, retrying with backoff while it is not up yet. */
  static async connect(path: string, options: FrontendOptions & { retry?: RetryOptions } = {}): Promise<Frontend> {
    const dial = () => connectWithRetry(path, options.retry ?? (typeof options.reconnect === "object" ? options.reconnect : {}));
    return new Frontend(await dial(), options, dial);
  }

  /**
   * Server mode: listens on `path` (mode 0600) and waits for the back-end to connect (`--socket-path`
   * back-ends in client mode). After a disconnect the next back-end is accepted on the same socket.
   */
  static async listen(path: string, options: FrontendOptions & { acceptTimeoutMs?: number } = {}): Promise<Frontend> {
    const listener = new UnixListener(path);
    const timeout = options.acceptTimeoutMs ?? 30_000;
    try {
      const stream = await acceptOne(listener, timeout);
      return new Frontend(stream, options, () => acceptOne(listener, timeout), listener);
    } catch (err) {
      listener.close();
      throw err;
    }
  }

  // ------------------------------------------------------------------ connection plumbing

  get closed(): boolean {
    return this.#closed;
  }

  /** True while a connection to the back-end is up. */
  get connected(): boolean {
    return this.#conn !== undefined && !this.#conn.closed;
  }

  /** The protocol features acked with SET_PROTOCOL_FEATURES. */
  get protocolFeatures(): bigint {
    return this.#protocol;
  }

  /** The virtio features acked with SET_FEATURES (undefined before). */
  get features(): bigint | undefined {
    return this.#features;
  }

  /** True if `name` was negotiated (with the peer's quirks). */
  hasProtocolFeature(name: ProtocolFeatureName): boolean {
    return hasProtocolFeature(this.#protocol, name, this.#opts.quirks);
  }

  /** The backend-request channel, once `enableBackendRequests` ran. */
  get backendChannel(): BackendRequestChannel | undefined {
    return this.#backendChannel;
  }

  #attach(stream: UnixStream): void {
    const conn = new Connection(stream, {
      expect: (h) => this.#pending?.expect ?? new VhostUserError("InvalidMessage", `unsolicited ${requestName("frontend", h.request)} (flags 0x${h.flags.toString(16)}) with no request outstanding`),
      codec: { xenMmap: this.#xenMmap, quirks: { ...this.#opts.quirks }, ...(this.#opts.maxFds !== undefined ? { maxFds: this.#opts.maxFds } : {}) },
      logger: this.#log,
      name: "vhost-user-master",
      unref: this.#opts.unref ?? false,
    });
    conn.on("message", (m) => {
      const p = this.#pending;
      if (!p) {
        closeMessageFds(m);
        return;
      }
      this.#pending = undefined;
      clearTimeout(p.timer);
      p.resolve(m);
    });
    conn.on("close", (cause) => this.#onConnClose(conn, cause));
    this.#conn = conn;
  }

  #onConnClose(conn: Connection, cause: VhostUserError | undefined): void {
    if (this.#conn !== conn) return;
    const err = cause ?? new VhostUserError("Disconnected", "connection closed");
    const p = this.#pending;
    if (p) {
      this.#pending = undefined;
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.#backendChannel?.close();
    this.#backendChannel = undefined;
    if (this.#closed || this.#reconnecting) return;
    this.#log.warn("back-end disconnected", { kind: err.kind, error: err.message });
    this.#safeEmit("disconnect", err);
    if (this.#dial && this.#opts.reconnect) {
      void this.#autoReconnect();
    } else {
      this.#finish(err);
    }
  }

  async #autoReconnect(): Promise<void> {
    try {
      await this.#reconnectNow(false);
    } catch (err) {
      const e = err instanceof VhostUserError ? err : new VhostUserError("SocketBroken", String(err), { cause: err });
      this.#log.error("reconnect failed", { kind: e.kind, error: e.message });
      this.#finish(e);
    }
  }

  #safeEmit<K extends keyof FrontendEvents>(event: K, ...args: FrontendEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: FrontendEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.#log.error(`listener of ${event} threw`, { err: String(err) });
    }
  }

  #finish(cause?: VhostUserError): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#conn?.close();
    this.#backendChannel?.close();
    if (this.#listener) {
      this.#listener.close();
      // the front-end created the socket file in listen(): remove it so a later listen() can bind again
      rmSync(this.#listener.path, { force: true });
    }
    for (const { fd } of this.#memory.values()) closeFd(fd);
    this.#memory.clear();
    for (const r of this.#vrings.values()) for (const fd of [r.kick, r.call, r.err]) if (typeof fd === "number") closeFd(fd);
    this.#vrings.clear();
    if (this.#inflight) closeFd(this.#inflight.fd);
    this.#inflight = undefined;
    this.#safeEmit("close", cause);
  }

  /** Closes the connection and every fd the front-end holds (idempotent). */
  close(): void {
    this.#finish(undefined);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /**
   * Planned reconnect: saves every started ring's base with GET_VRING_BASE, drops the connection,
   * connects again (client mode) or accepts the next back-end (server mode), and replays the state.
   */
  async reconnect(): Promise<void> {
    if (!this.#dial) throw new VhostUserError("InvalidParam", "reconnect needs a front-end made by connect() or listen()");
    await this.#reconnectNow(true);
  }

  /** Reconnect attempts (dial + replay) before giving up: `reconnect.attempts`, default 50. */
  get #reconnectAttempts(): number {
    const r = this.#opts.reconnect;
    return typeof r === "object" ? (r.attempts ?? 50) : 50;
  }

  async #reconnectNow(saveState: boolean): Promise<void> {
    let open!: () => void;
    this.#gate = new Promise<void>((r) => (open = r));
    this.#reconnecting = true;
    try {
      await replaying.run(true, async () => {
        if (saveState && this.connected) {
          for (const [index, r] of this.#vrings) {
            if (r.addr === undefined) continue;
            try {
              r.base = await this.getVringBase(index);
            } catch (err) {
              this.#log.warn("GET_VRING_BASE before reconnect failed", { index, err: String(err) });
            }
          }
        }
        const attempts = this.#reconnectAttempts;
        // What the old back-end had, taken once: a failed attempt must not shrink it for the next one.
        const wanted = { features: this.#features, protocol: this.#protocol };
        for (let attempt = 1; ; attempt++) {
          this.#conn?.close();
          this.#backendChannel?.close();
          this.#backendChannel = undefined;
          try {
            const stream = await this.#dial!();
            if (this.#closed) {
              stream.close();
              throw new VhostUserError("Disconnected", "front-end closed while reconnecting");
            }
            this.#attach(stream);
            await this.#replay(wanted);
            return;
          } catch (err) {
            // A dying back-end can still accept a connection and then reset it mid-replay: dial again.
            const e = err instanceof VhostUserError ? err : new VhostUserError("SocketBroken", String(err), { cause: err });
            if (this.#closed || !e.shouldReconnect || attempt >= attempts) throw e;
            this.#log.warn("reconnect attempt failed; retrying", { attempt, kind: e.kind, error: e.message });
            await new Promise((r) => setTimeout(r, Math.min(20 * attempt, 500)));
          }
        }
      });
    } finally {
      this.#reconnecting = false;
      this.#gate = undefined;
      open();
    }
    this.#log.info("reconnected and replayed state");
    this.#safeEmit("reconnect");
  }

  /** Sends the recorded state to a fresh back-end (after reconnect). */
  async #replay(wanted: { features: bigint | undefined; protocol: bigint }): Promise<void> {
    const wantedFeatures = wanted.features;
    const wantedProtocol = wanted.protocol;
    this.#protocol = 0n;
    this.#protocolNegotiated = false;
    const offered = await this.getFeatures();
    if (wantedFeatures !== undefined && (offered & wantedFeatures) !== wantedFeatures)
      throw new VhostUserError("FeatureMismatch", `the new back-end lacks features 0x${(wantedFeatures & ~offered).toString(16)} acked before`);
    if ((offered & F_PROTOCOL_FEATURES) !== 0n) {
      const offeredP = await this.getProtocolFeatures();
      if ((offeredP & wantedProtocol) !== wantedProtocol)
        throw new VhostUserError("FeatureMismatch", `the new back-end lacks protocol features ${describeProtocolFeatures(wantedProtocol & ~offeredP, this.#opts.quirks).join(", ")}`);
      await this.setProtocolFeatures(wantedProtocol);
    }
    if (this.#owner) await this.setOwner();
    if (this.#wantBackendReq && this.hasProtocolFeature("BACKEND_REQ")) await this.enableBackendRequests();
    if (wantedFeatures !== undefined) await this.setFeatures(wantedFeatures);
    if (this.#memory.size > 0) {
      // The record stays intact until the new back-end has the memory: a failed attempt retries with it.
      const saved = this.#memory;
      this.#memory = new Map();
      try {
        await this.#sendMemory([...saved.values()].map((e) => ({ region: e.region, fd: e.fd })));
      } catch (err) {
        for (const { fd } of this.#memory.values()) closeFd(fd);
        this.#memory = saved;
        throw err;
      }
      for (const { fd } of saved.values()) closeFd(fd);
    }
    if (this.#inflight) {
      const inf = this.#inflight;
      await this.#transact("SET_INFLIGHT_FD", { kind: "inflight", mmapSize: inf.mmapSize, mmapOffset: inf.mmapOffset, numQueues: inf.numQueues, queueSize: inf.queueSize }, [inf.fd]);
    }
    const inflightBases = this.#inflight ? this.#readInflightUsedIdx(this.#inflight) : undefined;
    for (const [index, r] of [...this.#vrings]) {
      if (r.num !== undefined) await this.setVringNum(index, r.num);
      if (r.addr !== undefined || r.base !== undefined) {
        const last = inflightBases?.[index] ?? r.base ?? 0;
        const base = this.#opts.restoreVringBase ? this.#opts.restoreVringBase(index, last) : last;
        await this.setVringBase(index, base);
      }
      if (r.addr !== undefined) await this.#transact("SET_VRING_ADDR", r.addr);
      for (const [name, fd] of [["SET_VRING_KICK", r.kick], ["SET_VRING_CALL", r.call], ["SET_VRING_ERR", r.err]] as const)
        if (fd !== undefined) await this.#sendVringFd(name, index, fd);
      if (r.enabled !== undefined && this.#protocolNegotiated) await this.setVringEnable(index, r.enabled);
    }
    if (this.#status !== undefined && this.hasProtocolFeature("STATUS")) await this.setStatus(this.#status);
  }

  #readInflightUsedIdx(inf: InflightArea): number[] | undefined {
    if (inf.numQueues === 0 || inf.mmapSize === 0n) return undefined;
    let region: InflightRegion | undefined;
    try {
      region = new InflightRegion(inf);
      const r = region;
      return Array.from({ length: inf.numQueues }, (_, q) => r.usedIdx(q));
    } catch (err) {
      this.#log.warn("could not read the inflight area", { err: String(err) });
      return undefined;
    } finally {
      region?.close();
    }
  }

  // ------------------------------------------------------------------ request core

  #enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn, fn);
    this.#chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Sends a request and waits for its reply (a reply body, or the REPLY_ACK u64 when negotiated and
   * `ack` is not false). Returns the reply message (caller owns its fds) or null.
   */
  #transact(name: FrontendReqName, payload: Payload, fds: readonly number[] = [], opts: { ack?: boolean } = {}): Promise<VhostUserMessage | null> {
    // During a reconnect, callers wait for the replay to finish (their borrowed fds must stay open).
    const gate = this.#gate;
    if (gate && !replaying.getStore()) return gate.then(() => this.#transact(name, payload, fds, opts));
    return this.#enqueue(() => this.#transactNow(name, payload, fds, opts));
  }

  async #transactNow(name: FrontendReqName, payload: Payload, fds: readonly number[], opts: { ack?: boolean }): Promise<VhostUserMessage | null> {
    if (this.#closed) throw new VhostUserError("Disconnected", `${name}: the front-end is closed`);
    const conn = this.#conn;
    if (!conn || conn.closed) throw new VhostUserError("Disconnected", `${name}: not connected to a back-end`);
    const id = FrontendReq[name];
    const info = messageInfo("frontend", id)!;
    if (info.feature && !this.hasProtocolFeature(info.feature))
      throw new VhostUserError("InactiveFeature", `${name} needs VHOST_USER_PROTOCOL_F_${info.feature}, which was not negotiated`);
    const replyExp = replyExpectation("frontend", info, (f) => this.hasProtocolFeature(f));
    const ack = replyExp === null && (opts.ack ?? true) && this.hasProtocolFeature("REPLY_ACK");
    const flags = REQ | (ack ? VhostUserHeaderFlag.NEED_REPLY : 0);
    if (!replyExp && !ack) {
      conn.send({ request: id, flags, payload }, fds);
      this.#log.debug("request", { request: name, answer: "none" });
      return null;
    }
    const expect = replyExp ?? ackExpectation("frontend", id);
    const timeoutMs = MEMORY_TABLE_REQUESTS.has(name) ? this.#memoryTimeoutMs : this.#timeoutMs;
    const reply = await new Promise<VhostUserMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.#pending?.timer !== timer) return;
        this.#pending = undefined;
        const e = new VhostUserError("Timeout", `no reply to ${name} within ${timeoutMs} ms`);
        reject(e);
        // A late reply would desynchronise the stream: the connection is unusable now.
        conn.destroy(e);
      }, timeoutMs);
      this.#pending = { expect, resolve, reject, timer };
      try {
        conn.send({ request: id, flags, payload }, fds);
      } catch (err) {
        clearTimeout(timer);
        this.#pending = undefined;
        reject(err instanceof VhostUserError ? err : new VhostUserError("SocketBroken", String(err), { cause: err }));
      }
    });
    if (ack) {
      closeMessageFds(reply);
      const status = reply.payload.kind === "u64" ? reply.payload.value : -1n;
      if (status !== 0n) throw new VhostUserError("BackendFailure", `back-end failed ${name}: REPLY_ACK status ${status}`);
      this.#log.debug("request", { request: name, answer: "ack" });
      return null;
    }
    this.#log.debug("request", { request: name, answer: "reply" });
    return reply;
  }

  async #u64Reply(name: FrontendReqName, payload: Payload = { kind: "none" }): Promise<bigint> {
    const r = await this.#transact(name, payload);
    if (!r) throw new VhostUserError("InvalidMessage", `${name}: expected a reply`);
    closeMessageFds(r);
    if (r.payload.kind !== "u64") throw new VhostUserError("InvalidMessage", `${name}: reply is ${r.payload.kind}, expected u64`);
    return r.payload.value;
  }

  // ------------------------------------------------------------------ features

  /** GET_FEATURES (1): the back-end's virtio features (bit 30 = VHOST_USER_F_PROTOCOL_FEATURES). */
  async getFeatures(): Promise<bigint> {
    const f = await this.#u64Reply("GET_FEATURES");
    this.#offeredFeatures = f;
    return f;
  }

  /** SET_FEATURES (2). Features not offered are refused before sending. */
  async setFeatures(features: bigint): Promise<void> {
    if (this.#offeredFeatures !== undefined && (features & ~this.#offeredFeatures) !== 0n)
      throw new VhostUserError("FeatureMismatch", `SET_FEATURES acks 0x${(features & ~this.#offeredFeatures).toString(16)}, which the back-end did not offer`);
    await this.#transact("SET_FEATURES", { kind: "u64", value: u64(features, "features") });
    this.#features = features;
  }

  /** GET_PROTOCOL_FEATURES (15). */
  async getProtocolFeatures(): Promise<bigint> {
    if (this.#offeredFeatures !== undefined && (this.#offeredFeatures & F_PROTOCOL_FEATURES) === 0n)
      throw new VhostUserError("FeatureMismatch", "the back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES");
    const f = await this.#u64Reply("GET_PROTOCOL_FEATURES");
    this.#offeredProtocol = f;
    return f;
  }

  /** SET_PROTOCOL_FEATURES (16). Never with NEED_REPLY: REPLY_ACK is not in force until this completes. */
  async setProtocolFeatures(features: bigint): Promise<void> {
    if ((features & ~this.#offeredProtocol) !== 0n)
      throw new VhostUserError("FeatureMismatch", `SET_PROTOCOL_FEATURES acks ${describeProtocolFeatures(features & ~this.#offeredProtocol, this.#opts.quirks).join(", ")}, not offered`);
    const missing = missingPrerequisites(features, this.#opts.quirks);
    if (missing.length > 0)
      throw new VhostUserError("InvalidParam", `protocol features without their prerequisites: ${missing.map(([f, r]) => `${f} needs ${r}`).join("; ")}`);
    await this.#transact("SET_PROTOCOL_FEATURES", { kind: "u64", value: features }, [], { ack: false });
    this.#protocol = features;
    this.#protocolNegotiated = true;
    this.#log.debug("protocol features", { acked: describeProtocolFeatures(features, this.#opts.quirks) });
    this.#xenMmap = this.hasProtocolFeature("XEN_MMAP");
    this.#conn?.setCodec({ xenMmap: this.#xenMmap });
  }

  /**
   * The usual start of a session: GET_FEATURES, GET/SET_PROTOCOL_FEATURES (masked with what is wanted),
   * SET_OWNER, SET_BACKEND_REQ_FD if BACKEND_REQ was acked, GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, and
   * SET_FEATURES.
   */
  async negotiate(options: NegotiateOptions = {}): Promise<Negotiated> {
    this.#negotiateOptions = options;
    const offeredFeatures = await this.getFeatures();
    let offeredProtocolFeatures = 0n;
    let protocolFeatures = 0n;
    if ((offeredFeatures & F_PROTOCOL_FEATURES) !== 0n) {
      offeredProtocolFeatures = await this.getProtocolFeatures();
      for (const r of options.requireProtocolFeatures ?? [])
        if (!hasProtocolFeature(offeredProtocolFeatures, r, this.#opts.quirks))
          throw new VhostUserError("FeatureMismatch", `the back-end does not offer VHOST_USER_PROTOCOL_F_${r}`);
      const wanted = protocolFeatureSet([...(options.protocolFeatures ?? DEFAULT_PROTOCOL_FEATURES), ...(options.requireProtocolFeatures ?? [])], this.#opts.quirks);
      protocolFeatures = offeredProtocolFeatures & wanted;
      // Drop features whose prerequisites did not make it (e.g. BACKEND_SEND_FD without REPLY_ACK).
      for (let changed = true; changed; ) {
        changed = false;
        for (const [f] of missingPrerequisites(protocolFeatures, this.#opts.quirks)) {
          protocolFeatures &= ~protocolFeatureSet([f], this.#opts.quirks);
          changed = true;
        }
      }
      await this.setProtocolFeatures(protocolFeatures);
    } else if (options.requireProtocolFeatures?.length) {
      throw new VhostUserError("FeatureMismatch", "the back-end does not offer VHOST_USER_F_PROTOCOL_FEATURES");
    }
    await this.setOwner();
    if (this.hasProtocolFeature("BACKEND_REQ")) await this.enableBackendRequests();
    const out: Negotiated = { offeredFeatures, features: offeredFeatures & (options.features ?? offeredFeatures), offeredProtocolFeatures, protocolFeatures };
    if (this.hasProtocolFeature("MQ")) out.queueNum = await this.getQueueNum();
    if (this.hasProtocolFeature("CONFIGURE_MEM_SLOTS")) out.maxMemSlots = await this.getMaxMemSlots();
    if (options.setFeatures ?? true) await this.setFeatures(out.features);
    return out;
  }

  /** The options of the last `negotiate` call. */
  get negotiateOptions(): NegotiateOptions | undefined {
    return this.#negotiateOptions;
  }

  // ------------------------------------------------------------------ ownership and device

  /** SET_OWNER (3). */
  async setOwner(): Promise<void> {
    await this.#transact("SET_OWNER", { kind: "none" });
    this.#owner = true;
  }

  /** RESET_OWNER (4), deprecated by the spec; prefer resetDevice. */
  async resetOwner(): Promise<void> {
    await this.#transact("RESET_OWNER", { kind: "none" });
  }

  /** RESET_DEVICE (34). */
  async resetDevice(): Promise<void> {
    await this.#transact("RESET_DEVICE", { kind: "none" });
    this.#status = undefined;
  }

  /** GET_QUEUE_NUM (17). */
  async getQueueNum(): Promise<number> {
    return Number(await this.#u64Reply("GET_QUEUE_NUM"));
  }

  /** SET_STATUS (39): the virtio device status byte. */
  async setStatus(status: number): Promise<void> {
    if (!Number.isInteger(status) || status < 0 || status > 0xff) throw new VhostUserError("InvalidParam", `status ${status} is not a byte`);
    await this.#transact("SET_STATUS", { kind: "u64", value: BigInt(status) });
    this.#status = status;
  }

  /** GET_STATUS (40). */
  async getStatus(): Promise<number> {
    return Number(await this.#u64Reply("GET_STATUS") & 0xffn);
  }

  /**
   * Tells the back-end the driver is ready when STATUS was negotiated (SET_STATUS ACKNOWLEDGE | DRIVER
   * | FEATURES_OK | DRIVER_OK): DPDK does not start the device otherwise. A no-op without STATUS.
   */
  async driverOk(): Promise<void> {
    if (!this.hasProtocolFeature("STATUS")) return;
    const s = VirtioDeviceStatus.ACKNOWLEDGE | VirtioDeviceStatus.DRIVER | VirtioDeviceStatus.FEATURES_OK | VirtioDeviceStatus.DRIVER_OK;
    await this.setStatus(s);
  }

  // ------------------------------------------------------------------ config space

  /** GET_CONFIG (24): `size` bytes of device config at `offset`. A reply without payload is BackendFailure. */
  async getConfig(offset: number, size: number, purpose: "writable" | "live-migration" = "writable"): Promise<Uint8Array> {
    checkU32(offset, "config offset");
    if (!Number.isInteger(size) || size < 1 || size > 256) throw new VhostUserError("InvalidParam", `config size ${size} must be 1..256`);
    const r = await this.#transact("GET_CONFIG", { kind: "config", offset, flags: configFlagsFor(purpose, this.#opts.quirks), data: new Uint8Array(size) });
    if (!r) throw new VhostUserError("InvalidMessage", "GET_CONFIG: expected a reply");
    closeMessageFds(r);
    if (r.payload.kind !== "config") throw new VhostUserError("BackendFailure", `back-end failed GET_CONFIG (offset ${offset}, size ${size})`);
    if (r.payload.data.length !== size || r.payload.offset !== offset)
      throw new VhostUserError("InvalidMessage", `GET_CONFIG reply covers ${r.payload.data.length} bytes at ${r.payload.offset}, asked ${size} at ${offset}`);
    return r.payload.data;
  }

  /** SET_CONFIG (25). */
  async setConfig(offset: number, data: Uint8Array, purpose: "writable" | "live-migration" = "writable"): Promise<void> {
    checkU32(offset, "config offset");
    await this.#transact("SET_CONFIG", { kind: "config", offset, flags: configFlagsFor(purpose, this.#opts.quirks), data });
  }

  // ------------------------------------------------------------------ memory

  /** How many regions one SET_MEM_TABLE may carry here. */
  get maxMemTableRegions(): number {
    return Math.min(this.#opts.maxMemTableRegions ?? VHOST_MEMORY_BASELINE_NREGIONS, this.#opts.maxFds ?? 32);
  }

  /** SET_MEM_TABLE (5): the whole table in one message, one fd per region. */
  async setMemTable(regions: readonly MemoryRegionDescription[]): Promise<void> {
    const wire = regions.map((r, i) => toWireRegion(r, i));
    checkNoOverlap(wire);
    if (wire.length === 0) throw new VhostUserError("InvalidParam", "SET_MEM_TABLE needs at least one region");
    if (wire.length > this.maxMemTableRegions)
      throw new VhostUserError("InvalidParam", `${wire.length} regions do not fit one SET_MEM_TABLE (limit ${this.maxMemTableRegions}); CONFIGURE_MEM_SLOTS is needed`);
    this.#checkXen(wire);
    await this.#transact("SET_MEM_TABLE", { kind: "memory", regions: wire }, regions.map((r) => r.fd));
    this.#replaceMemory(wire.map((region, i) => ({ region, fd: regions[i]!.fd })));
  }

  #checkXen(wire: readonly MemoryRegion[]): void {
    if (!this.#xenMmap && wire.some((r) => r.xen))
      throw new VhostUserError("InactiveFeature", "regions with a Xen mapping need VHOST_USER_PROTOCOL_F_XEN_MMAP, which was not negotiated");
  }

  #replaceMemory(entries: { region: MemoryRegion; fd: number }[]): void {
    const next = new Map<string, { region: MemoryRegion; fd: number }>();
    for (const e of entries) next.set(regionKey(e.region), { region: e.region, fd: dup(e.fd) });
    for (const { fd } of this.#memory.values()) closeFd(fd);
    this.#memory = next;
  }

  /** GET_MAX_MEM_SLOTS (36). */
  async getMaxMemSlots(): Promise<number> {
    return Number(await this.#u64Reply("GET_MAX_MEM_SLOTS"));
  }

  /** ADD_MEM_REG (37). */
  async addMemReg(region: MemoryRegionDescription): Promise<void> {
    const wire = toWireRegion(region);
    this.#checkXen([wire]);
    await this.#transact("ADD_MEM_REG", { kind: "single-region", region: wire }, [region.fd]);
    const key = regionKey(wire);
    const old = this.#memory.get(key);
    if (old) closeFd(old.fd);
    this.#memory.set(key, { region: wire, fd: dup(region.fd) });
  }

  /** REM_MEM_REG (38): identified by guest address, user address and size; no fd is sent. */
  async remMemReg(region: Omit<MemoryRegionDescription, "fd"> & { fd?: number }): Promise<void> {
    const wire = toWireRegion({ ...region, fd: region.fd ?? 0 });
    await this.#transact("REM_MEM_REG", { kind: "single-region", region: wire });
    const key = regionKey(wire);
    const old = this.#memory.get(key);
    if (old) closeFd(old.fd);
    this.#memory.delete(key);
  }

  /**
   * Gives the back-end this memory table by the best path: with CONFIGURE_MEM_SLOTS, REM_MEM_REG for
   * regions that went away and ADD_MEM_REG for new ones (any number up to GET_MAX_MEM_SLOTS); without,
   * one SET_MEM_TABLE (at most `maxMemTableRegions` regions).
   */
  async setMemory(regions: readonly MemoryRegionDescription[]): Promise<void> {
    const wire = regions.map((r, i) => toWireRegion(r, i));
    checkNoOverlap(wire);
    this.#checkXen(wire);
    await this.#sendMemory(wire.map((region, i) => ({ region, fd: regions[i]!.fd })));
  }

  async #sendMemory(entries: { region: MemoryRegion; fd: number }[]): Promise<void> {
    if (!this.hasProtocolFeature("CONFIGURE_MEM_SLOTS")) {
      if (entries.length > this.maxMemTableRegions)
        throw new VhostUserError("InvalidParam", `${entries.length} regions do not fit one SET_MEM_TABLE (limit ${this.maxMemTableRegions}) and the back-end has no CONFIGURE_MEM_SLOTS`);
      await this.#transact("SET_MEM_TABLE", { kind: "memory", regions: entries.map((e) => e.region) }, entries.map((e) => e.fd));
      this.#replaceMemory(entries);
      return;
    }
    const slots = await this.getMaxMemSlots();
    if (entries.length > slots)
      throw new VhostUserError("InvalidParam", `${entries.length} regions exceed the back-end's ${slots} memory slots`);
    const wanted = new Map(entries.map((e) => [regionKey(e.region), e]));
    for (const [key, cur] of [...this.#memory]) {
      if (wanted.has(key)) continue;
      await this.#transact("REM_MEM_REG", { kind: "single-region", region: cur.region });
      closeFd(cur.fd);
      this.#memory.delete(key);
    }
    for (const [key, e] of wanted) {
      if (this.#memory.has(key)) continue;
      await this.#transact("ADD_MEM_REG", { kind: "single-region", region: e.region }, [e.fd]);
      this.#memory.set(key, { region: e.region, fd: dup(e.fd) });
    }
  }

  /** The regions the back-end currently has (as recorded by the front-end). */
  get memoryRegions(): MemoryRegion[] {
    return [...this.#memory.values()].map((e) => ({ ...e.region }));
  }

  /**
   * The front-end user address of guest physical address `gpa` in the current table: what SET_VRING_ADDR
   * wants for a ring placed at `gpa` (without GPA_ADDRESSES / IOMMU_PLATFORM).
   */
  userAddrOf(gpa: bigint | number): bigint {
    const g = u64(gpa, "guest address");
    for (const { region: r } of this.#memory.values())
      if (g >= r.guestPhysAddr && g < r.guestPhysAddr + r.memorySize) return r.userAddr + (g - r.guestPhysAddr);
    throw new VhostUserError("InvalidParam", `guest address 0x${g.toString(16)} is in no memory region given to the back-end`);
  }

  /** SET_LOG_BASE (6): the dirty log (live migration). With LOG_SHMFD the back-end replies once mapped. */
  async setLogBase(mmapSize: bigint | number, mmapOffset: bigint | number, fd: number): Promise<void> {
    const r = await this.#transact("SET_LOG_BASE", { kind: "log", mmapSize: u64(mmapSize, "log size"), mmapOffset: u64(mmapOffset, "log offset") }, [fd]);
    if (r) closeMessageFds(r);
  }

  /** SET_LOG_FD (7): an eventfd the back-end signals when the log changed. */
  async setLogFd(fd: number): Promise<void> {
    await this.#transact("SET_LOG_FD", { kind: "none" }, [fd]);
  }

  // ------------------------------------------------------------------ rings

  #ring(i: number): VringRecord {
    let r = this.#vrings.get(i);
    if (!r) {
      r = {};
      this.#vrings.set(i, r);
    }
    return r;
  }

  /** SET_VRING_NUM (8). */
  async setVringNum(index: number, num: number): Promise<void> {
    checkIndex(index);
    if (!Number.isInteger(num) || num < 1 || num > 32768) throw new VhostUserError("InvalidParam", `ring size ${num} must be 1..32768`);
    await this.#transact("SET_VRING_NUM", { kind: "vring-state", index, num });
    this.#ring(index).num = num;
  }

  /** SET_VRING_ADDR (9). */
  async setVringAddr(index: number, a: VringAddresses): Promise<void> {
    checkIndex(index);
    const payload: PayloadOf<"vring-addr"> = {
      kind: "vring-addr", index, flags: a.flags ?? 0,
      desc: u64(a.desc, "desc address"), used: u64(a.used, "used address"), avail: u64(a.avail, "avail address"), log: u64(a.log ?? 0, "log address"),
    };
    await this.#transact("SET_VRING_ADDR", payload);
    this.#ring(index).addr = payload;
  }

  /** SET_VRING_BASE (10): the next avail index (split); packed rings pack wrap counters in. */
  async setVringBase(index: number, base: number): Promise<void> {
    checkIndex(index);
    checkU32(base, "vring base");
    await this.#transact("SET_VRING_BASE", { kind: "vring-state", index, num: base });
    this.#ring(index).base = base;
  }

  /** GET_VRING_BASE (11): stops the ring and returns its next avail index. */
  async getVringBase(index: number): Promise<number> {
    return this.#getBase("GET_VRING_BASE", index);
  }

  /** GET_VRING_BASE_SKIP_DRAIN (45). */
  async getVringBaseSkipDrain(index: number): Promise<number> {
    return this.#getBase("GET_VRING_BASE_SKIP_DRAIN", index);
  }

  async #getBase(name: "GET_VRING_BASE" | "GET_VRING_BASE_SKIP_DRAIN", index: number): Promise<number> {
    checkIndex(index);
    const r = await this.#transact(name, { kind: "vring-state", index, num: 0 });
    if (!r || r.payload.kind !== "vring-state") throw new VhostUserError("InvalidMessage", `${name}: expected a vring state reply`);
    if (r.payload.index !== index) throw new VhostUserError("InvalidMessage", `${name}: reply is for ring ${r.payload.index}, asked ${index}`);
    const rec = this.#ring(index);
    rec.base = r.payload.num;
    return r.payload.num;
  }

  async #sendVringFd(name: "SET_VRING_KICK" | "SET_VRING_CALL" | "SET_VRING_ERR", index: number, fd: number | null): Promise<void> {
    checkIndex(index);
    const value = BigInt(index) | (fd === null ? BigInt(VHOST_USER_VRING_NOFD_MASK) : 0n);
    await this.#transact(name, { kind: "u64", value }, fd === null ? [] : [fd]);
  }

  #recordFd(index: number, key: "kick" | "call" | "err", fd: number | null): void {
    const r = this.#ring(index);
    const old = r[key];
    if (typeof old === "number") closeFd(old);
    r[key] = fd === null ? null : dup(fd);
  }

  /** SET_VRING_KICK (12): the eventfd the driver kicks; null = the back-end polls (or in-band VRING_KICK). */
  async setVringKick(index: number, fd: number | null): Promise<void> {
    await this.#sendVringFd("SET_VRING_KICK", index, fd);
    this.#recordFd(index, "kick", fd);
  }

  /** SET_VRING_CALL (13): the eventfd the back-end signals; null = in-band VRING_CALL. */
  async setVringCall(index: number, fd: number | null): Promise<void> {
    await this.#sendVringFd("SET_VRING_CALL", index, fd);
    this.#recordFd(index, "call", fd);
  }

  /** SET_VRING_ERR (14). */
  async setVringErr(index: number, fd: number | null): Promise<void> {
    await this.#sendVringFd("SET_VRING_ERR", index, fd);
    this.#recordFd(index, "err", fd);
  }

  /** SET_VRING_ENABLE (18). */
  async setVringEnable(index: number, enable: boolean): Promise<void> {
    checkIndex(index);
    await this.#transact("SET_VRING_ENABLE", { kind: "vring-state", index, num: enable ? 1 : 0 });
    this.#ring(index).enabled = enable;
  }

  /** SET_VRING_ENDIAN (23): legacy cross-endian rings. */
  async setVringEndian(index: number, bigEndian: boolean): Promise<void> {
    checkIndex(index);
    await this.#transact("SET_VRING_ENDIAN", { kind: "vring-state", index, num: bigEndian ? 1 : 0 });
  }

  /** VRING_KICK (35): in-band kick (INBAND_NOTIFICATIONS). */
  async vringKick(index: number): Promise<void> {
    checkIndex(index);
    await this.#transact("VRING_KICK", { kind: "vring-state", index, num: 0 });
  }

  /** The usual ring start: NUM, BASE, ADDR, KICK, CALL, (ERR), ENABLE. */
  async setupVring(index: number, s: VringSetup): Promise<void> {
    await this.setVringNum(index, s.num);
    await this.setVringBase(index, s.base ?? 0);
    await this.setVringAddr(index, s);
    await this.setVringKick(index, s.kick);
    await this.setVringCall(index, s.call);
    if (s.err !== undefined) await this.setVringErr(index, s.err);
    if ((s.enable ?? true) && this.#protocolNegotiated) await this.setVringEnable(index, true);
  }

  // ------------------------------------------------------------------ inflight

  /**
   * GET_INFLIGHT_FD (31): the back-end allocates the inflight area (a memfd) for `numQueues` rings of
   * `queueSize`. The front-end keeps the fd (closed with it) and replays it with SET_INFLIGHT_FD after a
   * reconnect; the returned description shares that fd (borrow it, `dup` to keep it). Call before the rings
   * start. `mapInflight()` looks inside.
   * @throws VhostUserError `InactiveFeature` without INFLIGHT_SHMFD; `InvalidMessage` if the reply lacks the fd
   * or describes an area too small for the rings (split layout: 16 + 16 * queueSize bytes a queue).
   */
  async getInflightFd(numQueues: number, queueSize: number): Promise<InflightArea> {
    if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 0xffff) throw new VhostUserError("InvalidParam", `numQueues ${numQueues}`);
    if (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 0xffff) throw new VhostUserError("InvalidParam", `queueSize ${queueSize}`);
    const r = await this.#transact("GET_INFLIGHT_FD", { kind: "inflight", mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize });
    if (!r || r.payload.kind !== "inflight" || r.fds.length !== 1) {
      if (r) closeMessageFds(r);
      throw new VhostUserError("InvalidMessage", "GET_INFLIGHT_FD: expected an inflight description with one fd");
    }
    const p = r.payload;
    const minimum = BigInt(numQueues) * BigInt(16 + 16 * queueSize);
    if (p.mmapSize < minimum || p.numQueues !== numQueues || p.queueSize !== queueSize) {
      closeMessageFds(r);
      throw new VhostUserError("InvalidMessage", `GET_INFLIGHT_FD: ${p.mmapSize} bytes for ${p.numQueues} queue(s) of ${p.queueSize}, asked ${numQueues} of ${queueSize} (at least ${minimum} bytes)`);
    }
    if (this.#inflight) closeFd(this.#inflight.fd);
    this.#inflight = { fd: r.fds[0]!, mmapSize: p.mmapSize, mmapOffset: p.mmapOffset, numQueues: p.numQueues, queueSize: p.queueSize };
    return { ...this.#inflight };
  }

  /**
   * SET_INFLIGHT_FD (32): hands an inflight area to the back-end (`area.fd` is borrowed; the front-end keeps
   * a dup for replay unless it is the area it already holds). Used after GET_INFLIGHT_FD, and by a new
   * front-end process that inherited the area of a previous one.
   */
  async setInflightFd(area: InflightArea): Promise<void> {
    await this.#transact("SET_INFLIGHT_FD", { kind: "inflight", mmapSize: area.mmapSize, mmapOffset: area.mmapOffset, numQueues: area.numQueues, queueSize: area.queueSize }, [area.fd]);
    if (this.#inflight?.fd !== area.fd) {
      if (this.#inflight) closeFd(this.#inflight.fd);
      this.#inflight = { ...area, fd: dup(area.fd) };
    }
  }

  /** The inflight area the front-end holds (its fd is the front-end's: borrow it), or undefined. */
  get inflightArea(): InflightArea | undefined {
    return this.#inflight ? { ...this.#inflight } : undefined;
  }

  /** A mapping of the inflight area the front-end holds (per-queue used_idx and descriptor states); close it when done. */
  mapInflight(): InflightRegion {
    if (!this.#inflight) throw new VhostUserError("InvalidParam", "no inflight area: GET_INFLIGHT_FD or SET_INFLIGHT_FD first");
    return new InflightRegion(this.#inflight);
  }

  // ------------------------------------------------------------------ backend channel and others

  /**
   * SET_BACKEND_REQ_FD (21) with a fresh socketpair: back-end requests arrive on the front-end's end,
   * are answered per spec and surface as events.
   */
  async enableBackendRequests(): Promise<BackendRequestChannel> {
    const [mine, theirs] = UnixStream.pair();
    try {
      await this.#transact("SET_BACKEND_REQ_FD", { kind: "none" }, [theirs.fd]);
    } catch (err) {
      mine.close();
      throw err;
    } finally {
      theirs.close();
    }
    this.#backendChannel?.close();
    const ch = new BackendRequestChannel(mine, {
      ...(this.#opts.backendHandlers ? { handlers: this.#opts.backendHandlers } : {}),
      codec: { quirks: { ...this.#opts.quirks } },
      logger: this.#log,
      unref: this.#opts.unref ?? false,
    });
    ch.on("configChange", () => this.#safeEmit("configChange"));
    ch.on("vringCall", (i) => this.#safeEmit("vringCall", i));
    ch.on("vringErr", (i) => this.#safeEmit("vringErr", i));
    ch.on("shmemMap", (r, a) => this.#safeEmit("shmemMap", r, a));
    ch.on("shmemUnmap", (r, a) => this.#safeEmit("shmemUnmap", r, a));
    ch.on("refused", (r, why) => this.#safeEmit("backendRequestRefused", r, why));
    ch.on("close", (cause) => {
      if (cause) this.#log.warn("backend-request channel closed", { kind: cause.kind, error: cause.message });
    });
    this.#backendChannel = ch;
    this.#wantBackendReq = true;
    return ch;
  }

  /** SET_BACKEND_REQ_FD (21) with a socket the caller provides (borrowed). */
  async setBackendReqFd(fd: number): Promise<void> {
    await this.#transact("SET_BACKEND_REQ_FD", { kind: "none" }, [fd]);
  }

  /** SEND_RARP (19): `mac` is 6 bytes. */
  async sendRarp(mac: Uint8Array): Promise<void> {
    if (mac.length !== 6) throw new VhostUserError("InvalidParam", `a MAC address is 6 bytes, got ${mac.length}`);
    let v = 0n;
    for (let i = 5; i >= 0; i--) v = (v << 8n) | BigInt(mac[i]!);
    await this.#transact("SEND_RARP", { kind: "u64", value: v });
  }

  /** NET_SET_MTU (20). */
  async netSetMtu(mtu: number): Promise<void> {
    checkU32(mtu, "mtu");
    await this.#transact("NET_SET_MTU", { kind: "u64", value: BigInt(mtu) });
  }

  /** IOTLB_MSG (22): an IOTLB update/invalidate for a back-end using VIRTIO_F_IOMMU_PLATFORM. */
  async iotlbMsg(m: Omit<PayloadOf<"iotlb">, "kind">): Promise<void> {
    await this.#transact("IOTLB_MSG", { kind: "iotlb", ...m });
  }

  /** CREATE_CRYPTO_SESSION (26): opaque session parameters; returns the reply (first 8 bytes = session id). */
  async createCryptoSession(data: Uint8Array): Promise<Uint8Array> {
    const r = await this.#transact("CREATE_CRYPTO_SESSION", { kind: "crypto-session", data });
    if (!r || r.payload.kind !== "crypto-session") throw new VhostUserError("InvalidMessage", "CREATE_CRYPTO_SESSION: expected a session reply");
    return r.payload.data;
  }

  /** CLOSE_CRYPTO_SESSION (27). */
  async closeCryptoSession(sessionId: bigint): Promise<void> {
    await this.#transact("CLOSE_CRYPTO_SESSION", { kind: "u64", value: BigInt.asUintN(64, sessionId) });
  }

  /** POSTCOPY_ADVISE (28): returns the back-end's userfaultfd (caller owns it). */
  async postcopyAdvise(): Promise<number> {
    const r = await this.#transact("POSTCOPY_ADVISE", { kind: "none" });
    if (!r || r.fds.length !== 1) throw new VhostUserError("IncorrectFds", "POSTCOPY_ADVISE: expected a userfaultfd");
    return r.fds[0]!;
  }

  /** POSTCOPY_LISTEN (29). */
  async postcopyListen(): Promise<void> {
    await this.#transact("POSTCOPY_LISTEN", { kind: "none" });
  }

  /** POSTCOPY_END (30): the back-end's u64 result (0 = success). */
  async postcopyEnd(): Promise<bigint> {
    return this.#u64Reply("POSTCOPY_END");
  }

  /** GPU_SET_SOCKET (33): the vhost-user-gpu protocol socket (borrowed). */
  async gpuSetSocket(fd: number): Promise<void> {
    await this.#transact("GPU_SET_SOCKET", { kind: "none" }, [fd]);
  }

  /**
   * GPU_SET_SOCKET with a fresh socketpair: the vhost-user-gpu protocol runs on the returned GpuSocket
   * (display info, EDID, scanouts, updates, cursor). The socket is up before the request goes out: a
   * libvhost-user GPU back-end asks GET_PROTOCOL_FEATURES on it before it acks GPU_SET_SOCKET.
   */
  async openGpuSocket(options: { handlers?: GpuSocketHandlers } = {}): Promise<GpuSocket> {
    const [mine, theirs] = UnixStream.pair();
    const gpu = new GpuSocket(mine, { ...options, logger: this.#log, unref: this.#opts.unref ?? false });
    try {
      await this.gpuSetSocket(theirs.fd);
    } catch (err) {
      gpu.close();
      throw err;
    } finally {
      theirs.close();
    }
    return gpu;
  }

  /** GET_SHARED_OBJECT (41): a dma-buf fd for `uuid` (caller owns it), or null if the back-end has none. */
  async getSharedObject(uuid: Uint8Array): Promise<number | null> {
    const r = await this.#transact("GET_SHARED_OBJECT", { kind: "shared-object", uuid });
    if (!r) return null;
    if (r.payload.kind === "u64" && r.payload.value !== 0n) {
      closeMessageFds(r);
      return null;
    }
    return r.fds[0] ?? null;
  }

  /**
   * SET_DEVICE_STATE_FD (42): starts a state transfer over `fd` (a pipe end, borrowed). Returns the
   * back-end's own fd if it wants to use a different one (caller owns it), else null.
   */
  async setDeviceStateFd(direction: "save" | "load", fd: number): Promise<number | null> {
    const r = await this.#transact("SET_DEVICE_STATE_FD", { kind: "device-state", direction: direction === "save" ? 0 : 1, phase: 0 }, [fd]);
    if (!r || r.payload.kind !== "u64") throw new VhostUserError("InvalidMessage", "SET_DEVICE_STATE_FD: expected a u64 reply");
    const v = r.payload.value;
    if ((v & 0xffn) !== 0n) {
      closeMessageFds(r);
      throw new VhostUserError("BackendFailure", `back-end failed SET_DEVICE_STATE_FD: error ${v & 0xffn}`);
    }
    const noFd = (v & 0x100n) !== 0n;
    if (noFd && r.fds.length > 0) {
      closeMessageFds(r);
      throw new VhostUserError("IncorrectFds", "SET_DEVICE_STATE_FD reply says no fd but carries one");
    }
    if (!noFd && r.fds.length !== 1) throw new VhostUserError("IncorrectFds", "SET_DEVICE_STATE_FD reply lacks the back-end's fd");
    return noFd ? null : r.fds[0]!;
  }

  /** CHECK_DEVICE_STATE (43): throws BackendFailure if the transfer failed. */
  async checkDeviceState(): Promise<void> {
    const v = await this.#u64Reply("CHECK_DEVICE_STATE");
    if (v !== 0n) throw new VhostUserError("BackendFailure", `device state transfer failed: ${v}`);
  }

  /** GET_SHMEM_CONFIG (44): sizes of the device's VIRTIO shared memory regions. */
  async getShmemConfig(): Promise<bigint[]> {
    const r = await this.#transact("GET_SHMEM_CONFIG", { kind: "none" });
    if (!r || r.payload.kind !== "shmem-config") throw new VhostUserError("InvalidMessage", "GET_SHMEM_CONFIG: expected a shared memory config");
    return r.payload.memorySizes;
  }
}
