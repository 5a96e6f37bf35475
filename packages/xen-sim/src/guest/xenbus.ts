// The simulated guest's xenbus: a synchronous XenStore client on the connection the simulator's xenstored
// binds to this domain (what Linux's drivers/xen/xenbus/xenbus_xs.c does over the shared ring). Requests are
// checked as coming from the guest's domid, relative paths resolve under /local/domain/<domid>, and watch
// events only arrive for nodes the guest may read.
import { UnixStream, setNonblocking } from "@xen-vhost/vmm-sys-util";
import {
  XS, MessageReader, encodeMessage, pathAndValue, splitStrings, strings, parsePermission, formatPermission,
  type XsMessage, type XsPermission,
} from "@xen-vhost/xen-sys";
import { SimError } from "../error.js";
import { sleepSync } from "./sleep.js";

/** An XS_ERROR answer: `code` is the errno name xenstored sent (EACCES, ENOENT, EAGAIN...). */
export class XenBusError extends SimError {
  readonly code: string;
  readonly op: string;
  readonly path: string | undefined;

  constructor(code: string, op: string, path?: string) {
    super("GuestFailed", `xenbus ${op}${path !== undefined ? ` ${path}` : ""}: ${code}`);
    this.code = code;
    this.op = op;
    this.path = path;
  }
}

export interface XenBusWatchEvent {
  path: string;
  token: string;
}

export class XenBus implements Disposable {
  readonly domid: number;
  readonly #stream: UnixStream;
  readonly #reader = new MessageReader();
  readonly #chunk = new Uint8Array(8192);
  readonly #events: XenBusWatchEvent[] = [];
  readonly #replies: XsMessage[] = [];
  #reqId = 1;

  /** Takes ownership of `fd`, the guest end of its xenstored connection. */
  constructor(fd: number, domid: number) {
    this.#stream = new UnixStream(fd);
    setNonblocking(fd, true);
    this.domid = domid;
  }

  get closed(): boolean {
    return this.#stream.closed;
  }

  /** Reads what has arrived; returns false if nothing did. */
  #pump(): boolean {
    let got;
    try {
      got = this.#stream.recv(this.#chunk);
    } catch (err) {
      throw new SimError("Disconnected", "xenbus connection failed", { cause: err });
    }
    if (got === null) return false;
    if (got.bytes === 0) throw new SimError("Disconnected", "xenstored closed the xenbus connection (domain released?)");
    for (const m of this.#reader.push(this.#chunk.subarray(0, got.bytes))) {
      if (m.type === XS.WATCH_EVENT) {
        const [path, token] = splitStrings(m.payload);
        this.#events.push({ path: path ?? "", token: token ?? "" });
      } else {
        this.#replies.push(m);
      }
    }
    return true;
  }

  #waitFor(done: () => boolean, timeoutMs: number): boolean {
    const deadline = Date.now() + timeoutMs;
    let nap = 0.02;
    for (let spins = 0; ; spins++) {
      if (done()) return true;
      if (this.#pump()) continue;
      if (Date.now() > deadline) return false;
      if (spins > 200) {
        sleepSync(nap);
        nap = Math.min(nap * 2, 2);
      }
    }
  }

  /** One request/response; XS_ERROR becomes XenBusError. */
  request(type: number, payload: Uint8Array, txId = 0, timeoutMs = 5000): Uint8Array {
    const op = (Object.entries(XS).find(([, v]) => v === type)?.[0] ?? String(type)).toLowerCase();
    const reqId = this.#reqId++;
    const bytes = encodeMessage({ type, reqId, txId, payload });
    for (let off = 0; off < bytes.length; ) {
      let n: number | null;
      try {
        n = this.#stream.send(bytes.subarray(off));
      } catch (err) {
        // EPIPE/ECONNRESET: xenstored dropped this domain's connection (the domain was released).
        throw new SimError("Disconnected", `xenbus ${op}: xenstored closed the connection`, { cause: err });
      }
      if (n === null) {
        sleepSync(0.05);
        continue;
      }
      off += n;
    }
    let reply: XsMessage | undefined;
    const found = this.#waitFor(() => {
      const i = this.#replies.findIndex((r) => r.reqId === reqId);
      if (i >= 0) reply = this.#replies.splice(i, 1)[0];
      return reply !== undefined;
    }, timeoutMs);
    if (!found || !reply) throw new SimError("Timeout", `xenbus ${op}: no answer from xenstored`);
    if (reply.type === XS.ERROR) throw new XenBusError(splitStrings(reply.payload)[0] ?? "EIO", op, splitStrings(payload)[0]);
    return reply.payload;
  }

  read(path: string, txId = 0): string {
    return new TextDecoder().decode(this.request(XS.READ, strings(path), txId));
  }

  /** read() that answers undefined for ENOENT. */
  tryRead(path: string, txId = 0): string | undefined {
    try {
      return this.read(path, txId);
    } catch (err) {
      if (err instanceof XenBusError && err.code === "ENOENT") return undefined;
      throw err;
    }
  }

  write(path: string, value: string, txId = 0): void {
    this.request(XS.WRITE, pathAndValue(path, new TextEncoder().encode(value)), txId);
  }

  mkdir(path: string, txId = 0): void {
    this.request(XS.MKDIR, strings(path), txId);
  }

  rm(path: string, txId = 0): void {
    this.request(XS.RM, strings(path), txId);
  }

  directory(path: string, txId = 0): string[] {
    return splitStrings(this.request(XS.DIRECTORY, strings(path), txId));
  }

  getPerms(path: string, txId = 0): XsPermission[] {
    return splitStrings(this.request(XS.GET_PERMS, strings(path), txId)).map(parsePermission);
  }

  setPerms(path: string, perms: XsPermission[], txId = 0): void {
    this.request(XS.SET_PERMS, strings(path, ...perms.map(formatPermission)), txId);
  }

  /** XS_GET_DOMAIN_PATH for this domain: "/local/domain/<domid>". */
  domainPath(): string {
    return splitStrings(this.request(XS.GET_DOMAIN_PATH, strings(String(this.domid))))[0] ?? "";
  }

  watch(path: string, token: string): void {
    this.request(XS.WATCH, strings(path, token));
  }

  unwatch(path: string, token: string): void {
    this.request(XS.UNWATCH, strings(path, token));
  }

  /** The next watch event (xenstored sends one when a watch is registered), or undefined on timeout. */
  nextEvent(timeoutMs = 5000): XenBusWatchEvent | undefined {
    this.#waitFor(() => this.#events.length > 0, timeoutMs);
    return this.#events.shift();
  }

  /** Waits for an event on `path` with `token`, skipping others; undefined on timeout. */
  waitEvent(path: string, token: string, timeoutMs = 5000): XenBusWatchEvent | undefined {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#events.findIndex((e) => e.path === path && e.token === token);
      if (i >= 0) return this.#events.splice(i, 1)[0];
      if (!this.#waitFor(() => this.#events.some((e) => e.path === path && e.token === token), Math.max(0, deadline - Date.now()))) return undefined;
    }
  }

  transactionStart(): number {
    return Number(splitStrings(this.request(XS.TRANSACTION_START, strings("")))[0]);
  }

  /** Ends a transaction; `commit` false aborts. @throws XenBusError EAGAIN when it must be retried */
  transactionEnd(txId: number, commit = true): void {
    this.request(XS.TRANSACTION_END, strings(commit ? "T" : "F"), txId);
  }

  close(): void {
    this.#stream.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
