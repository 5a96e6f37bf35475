// A XenStore client over either transport: every request of xs_wire.h, replies correlated by req_id (so many
// requests can be in flight), XS_ERROR turned into XenStoreError with the errno name, watch events as typed
// events, transactions with an EAGAIN retry helper, and reconnect.
import { EventEmitter } from "eventemitter3";
import { errnoOf } from "@xen-vhost/vmm-sys-util";
import { XENSTORE_ABS_PATH_MAX, XS, xsTypeName, type XsMessageType } from "../abi/xs-wire.js";
import { XenStoreError } from "../error.js";
import { silentLogger, type Logger } from "../logger.js";
import { socketConnector, xenbusConnector, type XsConnector, type XsStream } from "./connection.js";
import {
  MessageReader, bytesOf, encodeMessage, firstString, formatPermission, parsePermission, pathAndValue, splitStrings,
  strings, text, type XsMessage, type XsPermission,
} from "./wire.js";

export interface XenStoreOptions {
  /** "auto" (default): the xenstored socket, else /dev/xen/xenbus. */
  transport?: "auto" | "socket" | "xenbus";
  socketPath?: string;
  xenbusPath?: string;
  /** A custom transport (e.g. packages/xen-sim's server); overrides `transport`. */
  connector?: XsConnector;
  /** Reconnect after the connection drops (default off). Watches are re-registered. */
  reconnect?: boolean | { maxAttempts?: number; delayMs?: number };
  logger?: Logger;
}

export interface XenStoreWatchEvent {
  path: string;
  token: string;
}

export interface XenStoreEvents {
  /** Every watch event of the connection. */
  watch: [event: XenStoreWatchEvent];
  /** The connection was re-established (watches re-registered; open transactions were lost). */
  reconnect: [];
  /** Closed by close(), or the connection dropped and could not be re-established (`cause`). */
  close: [cause?: Error];
}

export interface XenStoreWatchEvents {
  /** `path` (the watched node or a descendant) was written, created or removed. Fires once on registration. */
  change: [path: string];
}

/** A registered watch; `close()` unregisters it. */
export class XenStoreWatch extends EventEmitter<XenStoreWatchEvents> {
  readonly path: string;
  readonly token: string;
  readonly #store: XenStore;
  #active = true;

  /** @internal */
  constructor(store: XenStore, path: string, token: string) {
    super();
    this.#store = store;
    this.path = path;
    this.token = token;
  }

  get active(): boolean {
    return this.#active;
  }

  /** XS_UNWATCH. Idempotent. */
  async close(): Promise<void> {
    if (!this.#active) return;
    this.#active = false;
    this.removeAllListeners();
    await this.#store._unwatch(this);
  }
}

interface Pending {
  op: string;
  path: string | undefined;
  type: number;
  resolve: (payload: Uint8Array) => void;
  reject: (err: Error) => void;
}

interface RequestOptions {
  tx?: XsTransaction;
}

/** A transaction: the same operations, all inside it. End with `commit()` or `abort()`. */
export class XsTransaction {
  readonly id: number;
  readonly #store: XenStore;
  #ended = false;

  /** @internal */
  constructor(store: XenStore, id: number) {
    this.#store = store;
    this.id = id;
  }

  get ended(): boolean {
    return this.#ended;
  }

  read(path: string): Promise<string> { return this.#store.read(path, { tx: this }); }
  readBytes(path: string): Promise<Uint8Array> { return this.#store.readBytes(path, { tx: this }); }
  tryRead(path: string): Promise<string | undefined> { return this.#store.tryRead(path, { tx: this }); }
  write(path: string, value: string | Uint8Array): Promise<void> { return this.#store.write(path, value, { tx: this }); }
  mkdir(path: string): Promise<void> { return this.#store.mkdir(path, { tx: this }); }
  rm(path: string): Promise<void> { return this.#store.rm(path, { tx: this }); }
  directory(path: string): Promise<string[]> { return this.#store.directory(path, { tx: this }); }
  getPerms(path: string): Promise<XsPermission[]> { return this.#store.getPerms(path, { tx: this }); }
  setPerms(path: string, perms: readonly XsPermission[]): Promise<void> { return this.#store.setPerms(path, perms, { tx: this }); }

  /** XS_TRANSACTION_END "T". @throws XenStoreError EAGAIN when another writer got there first: retry. */
  commit(): Promise<void> { return this.#end(true); }
  /** XS_TRANSACTION_END "F". */
  abort(): Promise<void> { return this.#end(false); }

  async #end(commit: boolean): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    await this.#store._request(XS.TRANSACTION_END, strings(commit ? "T" : "F"), undefined, this.id);
  }
}

const defaultReconnect = { maxAttempts: 10, delayMs: 200 };

export class XenStore extends EventEmitter<XenStoreEvents> {
  readonly #connector: XsConnector;
  readonly #log: Logger;
  readonly #reconnect: { maxAttempts: number; delayMs: number } | undefined;
  readonly #pending = new Map<number, Pending>();
  readonly #watches = new Map<string, XenStoreWatch>();
  #stream: XsStream | undefined;
  #reader = new MessageReader();
  #nextReqId = 1;
  #nextToken = 1;
  #closed = false;
  #reconnecting = false;

  private constructor(connector: XsConnector, options: XenStoreOptions) {
    super();
    this.#connector = connector;
    this.#log = options.logger ?? silentLogger;
    const r = options.reconnect;
    this.#reconnect = r === true ? defaultReconnect : r ? { ...defaultReconnect, ...r } : undefined;
  }

  /**
   * Connects. @throws XenStoreError kind "DeviceMissing" naming the socket / device when neither exists
   */
  static async open(options: XenStoreOptions = {}): Promise<XenStore> {
    let connector = options.connector;
    if (!connector) {
      const sock = socketConnector(options.socketPath);
      const bus = xenbusConnector(options.xenbusPath);
      const mode = options.transport ?? "auto";
      connector =
        mode === "socket"
          ? sock
          : mode === "xenbus"
            ? bus
            : async (h) => {
                try {
                  return await sock(h);
                } catch (err) {
                  if (err instanceof XenStoreError && err.kind === "DeviceMissing") return bus(h);
                  throw err;
                }
              };
    }
    const store = new XenStore(connector, options);
    await store.#connect();
    return store;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** "socket /var/run/xenstored/socket" or "xenbus /dev/xen/xenbus". */
  get description(): string {
    return this.#stream?.description ?? "disconnected";
  }

  async #connect(): Promise<void> {
    this.#reader = new MessageReader();
    this.#stream = await this.#connector({
      onData: (chunk) => this.#onData(chunk),
      onClose: (cause) => this.#onDisconnect(cause),
    });
  }

  #onData(chunk: Uint8Array): void {
    let messages: XsMessage[];
    try {
      messages = this.#reader.push(chunk);
    } catch (err) {
      // A malformed header leaves the stream unframed: nothing after it can be trusted.
      this.#log.error("xenstore: malformed message, dropping the connection", { err });
      this.#stream?.close();
      this.#onDisconnect(err as Error);
      return;
    }
    for (const m of messages) this.#dispatch(m);
  }

  #dispatch(m: XsMessage): void {
    if (m.type === XS.WATCH_EVENT) {
      const [path, token] = splitStrings(m.payload);
      if (path === undefined || token === undefined) {
        this.#log.warn("xenstore: malformed watch event", { bytes: m.payload.byteLength });
        return;
      }
      const ev = { path, token };
      const w = this.#watches.get(token);
      try {
        this.emit("watch", ev);
        w?.emit("change", path);
      } catch (err) {
        this.#log.error("xenstore: watch listener threw", { path, token, err });
      }
      return;
    }
    const p = this.#pending.get(m.reqId);
    if (!p) {
      this.#log.warn("xenstore: reply to no request", { reqId: m.reqId, type: m.type });
      return;
    }
    this.#pending.delete(m.reqId);
    if (m.type === XS.ERROR) {
      const code = firstString(m.payload) || "EIO";
      let errno: number | undefined;
      try {
        errno = errnoOf(code);
      } catch {
        errno = undefined;
      }
      p.reject(new XenStoreError("XenStore", { op: p.op, code, ...(errno !== undefined ? { errno } : {}), ...(p.path !== undefined ? { path: p.path } : {}) }));
      return;
    }
    if (m.type !== p.type) {
      p.reject(new XenStoreError("Protocol", { op: p.op, code: "EPROTO", ...(p.path !== undefined ? { path: p.path } : {}) }));
      return;
    }
    p.resolve(m.payload);
  }

  #onDisconnect(cause?: Error): void {
    if (this.#closed || this.#stream === undefined) return;
    this.#stream = undefined;
    this.#failPending("Disconnected", "ECONNRESET", cause);
    if (!this.#reconnect) {
      this.#finish(cause ?? new XenStoreError("Disconnected", { op: "connection", code: "ECONNRESET" }));
      return;
    }
    void this.#reconnectLoop(cause);
  }

  async #reconnectLoop(cause?: Error): Promise<void> {
    const r = this.#reconnect!;
    this.#reconnecting = true;
    let last: unknown = cause;
    for (let attempt = 1; attempt <= r.maxAttempts && !this.#closed; attempt++) {
      await new Promise((res) => setTimeout(res, r.delayMs * Math.min(attempt, 5)));
      if (this.#closed) return;
      try {
        await this.#connect();
        this.#reconnecting = false;
        for (const w of this.#watches.values()) await this._request(XS.WATCH, strings(w.path, w.token), w.path);
        this.#log.info("xenstore: reconnected", { attempt, via: this.description });
        this.emit("reconnect");
        return;
      } catch (err) {
        last = err;
        this.#stream?.close();
        this.#stream = undefined;
        this.#log.warn("xenstore: reconnect failed", { attempt, err });
      }
    }
    this.#reconnecting = false;
    this.#finish(last instanceof Error ? last : new XenStoreError("Disconnected", { op: "reconnect", code: "ECONNREFUSED" }));
  }

  #failPending(kind: "Disconnected" | "Closed", code: string, cause?: Error): void {
    const all = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of all) {
      p.reject(new XenStoreError(kind, { op: p.op, code, ...(p.path !== undefined ? { path: p.path } : {}) }, cause ? { cause } : undefined));
    }
  }

  #finish(cause?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stream?.close();
    this.#stream = undefined;
    this.#failPending("Closed", "ECANCELED");
    for (const w of this.#watches.values()) w.removeAllListeners();
    this.#watches.clear();
    this.emit("close", cause);
  }

  /** Sends one request and resolves with the reply payload. @internal (used by XsTransaction/XenStoreWatch) */
  _request(type: XsMessageType, payload: Uint8Array, path?: string, txId = 0): Promise<Uint8Array> {
    const op = (xsTypeName(type) ?? `type${type}`).toLowerCase();
    if (this.#closed) return Promise.reject(new XenStoreError("Closed", { op, code: "EBADF", ...(path !== undefined ? { path } : {}) }));
    const stream = this.#stream;
    if (!stream) {
      return Promise.reject(new XenStoreError("Disconnected", { op, code: this.#reconnecting ? "EAGAIN" : "ENOTCONN", ...(path !== undefined ? { path } : {}) }));
    }
    const reqId = this.#nextReqId;
    this.#nextReqId = this.#nextReqId >= 0xffffffff ? 1 : this.#nextReqId + 1;
    let bytes: Uint8Array;
    try {
      bytes = encodeMessage({ type, reqId, txId, payload });
    } catch (err) {
      const e = err instanceof XenStoreError ? new XenStoreError(err.kind, { op, code: err.code ?? "E2BIG", ...(path !== undefined ? { path } : {}) }) : err instanceof Error ? err : new Error(String(err));
      return Promise.reject(e);
    }
    return new Promise<Uint8Array>((resolve, reject) => {
      this.#pending.set(reqId, { op, path, type, resolve, reject });
      try {
        stream.write(bytes);
      } catch (err) {
        this.#pending.delete(reqId);
        reject(err instanceof XenStoreError ? err : new XenStoreError("Disconnected", { op, code: "EIO", ...(path !== undefined ? { path } : {}) }, { cause: err }));
      }
    });
  }

  #req(type: XsMessageType, path: string, payload: Uint8Array, opts: RequestOptions = {}): Promise<Uint8Array> {
    if (opts.tx?.ended) {
      return Promise.reject(new XenStoreError("Closed", { op: (xsTypeName(type) ?? "").toLowerCase(), code: "EBADF", path }));
    }
    return this._request(type, payload, path, opts.tx?.id ?? 0);
  }

  /** XS_READ as UTF-8. @throws XenStoreError ENOENT read <path> */
  async read(path: string, opts?: RequestOptions): Promise<string> {
    return text(await this.readBytes(path, opts));
  }

  /** XS_READ, raw bytes. */
  async readBytes(path: string, opts?: RequestOptions): Promise<Uint8Array> {
    checkPath(path);
    return this.#req(XS.READ, path, strings(path), opts);
  }

  /** XS_READ, undefined when the node does not exist. */
  async tryRead(path: string, opts?: RequestOptions): Promise<string | undefined> {
    try {
      return await this.read(path, opts);
    } catch (err) {
      if (err instanceof XenStoreError && err.code === "ENOENT") return undefined;
      throw err;
    }
  }

  /** XS_WRITE (creates missing parents). */
  async write(path: string, value: string | Uint8Array, opts?: RequestOptions): Promise<void> {
    checkPath(path);
    await this.#req(XS.WRITE, path, pathAndValue(path, bytesOf(value)), opts);
  }

  /** XS_MKDIR. */
  async mkdir(path: string, opts?: RequestOptions): Promise<void> {
    checkPath(path);
    await this.#req(XS.MKDIR, path, strings(path), opts);
  }

  /** XS_RM (the node and everything below it). */
  async rm(path: string, opts?: RequestOptions): Promise<void> {
    checkPath(path);
    await this.#req(XS.RM, path, strings(path), opts);
  }

  /** XS_DIRECTORY: the child names. */
  async directory(path: string, opts?: RequestOptions): Promise<string[]> {
    checkPath(path);
    return splitStrings(await this.#req(XS.DIRECTORY, path, strings(path), opts));
  }

  /** XS_GET_PERMS: owner first, then the ACL. */
  async getPerms(path: string, opts?: RequestOptions): Promise<XsPermission[]> {
    checkPath(path);
    return splitStrings(await this.#req(XS.GET_PERMS, path, strings(path), opts)).map(parsePermission);
  }

  /** XS_SET_PERMS: owner first, then the ACL. */
  async setPerms(path: string, perms: readonly XsPermission[], opts?: RequestOptions): Promise<void> {
    checkPath(path);
    if (perms.length === 0) throw new RangeError("setPerms needs at least the owner permission");
    await this.#req(XS.SET_PERMS, path, strings(path, ...perms.map(formatPermission)), opts);
  }

  /**
   * XS_WATCH: `change` events for `path` and everything below it (also `@introduceDomain`,
   * `@releaseDomain`). Xen fires once right after registration, usually before this promise settles:
   * pass `onChange` to receive that first event too.
   */
  async watch(path: string, options: { token?: string; onChange?: (path: string) => void } = {}): Promise<XenStoreWatch> {
    checkPath(path);
    const t = options.token ?? `xen-sys:${this.#nextToken++}`;
    if (t.includes("\0") || t.length === 0) throw new RangeError("watch token must be a non-empty string without NUL");
    if (this.#watches.has(t)) throw new RangeError(`watch token ${t} already in use`);
    const w = new XenStoreWatch(this, path, t);
    if (options.onChange) w.on("change", options.onChange);
    // Registered before the request so the immediate first event is not lost.
    this.#watches.set(t, w);
    try {
      await this._request(XS.WATCH, strings(path, t), path);
    } catch (err) {
      this.#watches.delete(t);
      throw err;
    }
    return w;
  }

  /** @internal XS_UNWATCH for a watch object. */
  async _unwatch(w: XenStoreWatch): Promise<void> {
    if (!this.#watches.delete(w.token) || this.#closed || !this.#stream) return;
    await this._request(XS.UNWATCH, strings(w.path, w.token), w.path);
  }

  /** XS_GET_DOMAIN_PATH: "/local/domain/<domid>". */
  async getDomainPath(domid: number): Promise<string> {
    checkDomidArg(domid);
    return firstString(await this._request(XS.GET_DOMAIN_PATH, strings(String(domid))));
  }

  /** XS_IS_DOMAIN_INTRODUCED. */
  async isDomainIntroduced(domid: number): Promise<boolean> {
    checkDomidArg(domid);
    return firstString(await this._request(XS.IS_DOMAIN_INTRODUCED, strings(String(domid)))) === "T";
  }

  /** XS_INTRODUCE: tells xenstored about a domain's store ring (gfn) and event channel port (toolstack). */
  async introduce(domid: number, gfn: bigint | number, port: number): Promise<void> {
    checkDomidArg(domid);
    await this._request(XS.INTRODUCE, strings(String(domid), String(gfn), String(port)));
  }

  /** XS_RELEASE: xenstored forgets a domain (fires @releaseDomain). */
  async release(domid: number): Promise<void> {
    checkDomidArg(domid);
    await this._request(XS.RELEASE, strings(String(domid)));
  }

  /** XS_RESUME: clears a domain's shutdown flag in xenstored. */
  async resume(domid: number): Promise<void> {
    checkDomidArg(domid);
    await this._request(XS.RESUME, strings(String(domid)));
  }

  /** XS_SET_TARGET: lets `domid` (a device-model stub domain) act on `target`'s nodes. */
  async setTarget(domid: number, target: number): Promise<void> {
    checkDomidArg(domid);
    checkDomidArg(target);
    await this._request(XS.SET_TARGET, strings(String(domid), String(target)));
  }

  /** XS_CONTROL (a.k.a. XS_DEBUG): xenstored control commands, e.g. ["log", "on"]. Returns the reply text. */
  async control(...args: string[]): Promise<string> {
    if (args.length === 0) throw new RangeError("control needs a command");
    return firstString(await this._request(XS.CONTROL, strings(...args)));
  }

  /** XS_RESET_WATCHES: drops every watch of this connection on the server side too. */
  async resetWatches(): Promise<void> {
    await this._request(XS.RESET_WATCHES, new Uint8Array(0));
    for (const w of this.#watches.values()) w.removeAllListeners();
    this.#watches.clear();
  }

  /** XS_TRANSACTION_START. */
  async transactionStart(): Promise<XsTransaction> {
    const id = Number(firstString(await this._request(XS.TRANSACTION_START, strings(""))));
    if (!Number.isInteger(id) || id <= 0) throw new XenStoreError("Protocol", { op: "transaction_start", code: "EPROTO" });
    return new XsTransaction(this, id);
  }

  /**
   * Runs `fn` in a transaction and commits; when the commit (or an op inside) fails with EAGAIN because
   * another writer changed the store, starts over, up to `maxAttempts` times.
   */
  async transaction<T>(fn: (tx: XsTransaction) => Promise<T>, options: { maxAttempts?: number } = {}): Promise<T> {
    const max = options.maxAttempts ?? 16;
    for (let attempt = 1; ; attempt++) {
      const tx = await this.transactionStart();
      try {
        const result = await fn(tx);
        await tx.commit();
        return result;
      } catch (err) {
        if (!tx.ended) await tx.abort().catch(() => undefined);
        if (err instanceof XenStoreError && err.code === "EAGAIN" && attempt < max) {
          this.#log.debug("xenstore: transaction conflict, retrying", { attempt });
          continue;
        }
        throw err;
      }
    }
  }

  /** Closes the connection; pending requests fail with kind "Closed". Idempotent. */
  close(): void {
    this.#finish();
  }
}

function checkPath(path: string): void {
  if (typeof path !== "string" || path.length === 0) throw new TypeError("XenStore path must be a non-empty string");
  if (path.includes("\0")) throw new RangeError("XenStore path contains NUL");
  if (new TextEncoder().encode(path).byteLength > XENSTORE_ABS_PATH_MAX)
    throw new RangeError(`XenStore path longer than ${XENSTORE_ABS_PATH_MAX} bytes`);
}

function checkDomidArg(domid: number): void {
  if (!Number.isInteger(domid) || domid < 0 || domid > 0xffff) throw new RangeError(`domid ${domid} out of range`);
}
