// A framed, fd-carrying vhost-user connection on a nonblocking unix stream, driven by an FdWatcher on
// Node's event loop. Used by both sides: the front-end on its main socket and backend-request socket,
// the back-end on its listening side.
//
// Framing: the 12-byte header is read on its own, so the SCM_RIGHTS fds (which travel with the first
// byte of the sender's sendmsg) arrive with the header's recvmsg and can never be attributed to the
// next message. Reads may return any fraction of a message; the parts are reassembled. Fds arriving
// with payload bytes are a protocol error. Any error closes the connection, the fds of the message in
// flight and the fds of queued writes, and is reported once through the `close` event.
import { EventEmitter } from "eventemitter3";
import type { UnixStream} from "@xen-vhost/vmm-sys-util";
import { FdWatcher, PollEvents, TruncatedMessageError, close as closeFd, dup } from "@xen-vhost/vmm-sys-util";
import { VhostUserError, fromSysError } from "./error.js";
import {
  HEADER_SIZE, codecOptions, decodeHeader, decodeMessage, encodeMessage, type CodecOptions, type CodecSettings, type Expectation,
  type VhostUserHeaderValue, type VhostUserMessage,
} from "./codec.js";
import { noopLogger, type Logger } from "./logger.js";

export interface ConnectionEvents {
  /** A complete, validated message. The listener owns `msg.fds`. */
  message: [msg: VhostUserMessage];
  /** The connection is closed; `cause` is absent for a local `close()`. Emitted once. */
  close: [cause?: VhostUserError];
}

export interface ConnectionOptions {
  /**
   * What an incoming message should be, decided from its header (a request of some side, or the reply
   * to the request outstanding). Return a VhostUserError to refuse it (e.g. an unsolicited reply).
   */
  expect: (header: VhostUserHeaderValue) => Expectation | VhostUserError;
  codec?: CodecSettings;
  logger?: Logger;
  /** Name for log lines ("frontend", "backend-req"...). */
  name?: string;
  /** Let the process exit while this connection is open (default false: an open connection keeps it alive). */
  unref?: boolean;
}

interface QueuedWrite {
  data: Uint8Array;
  /** Dups owned by the queue, sent with the first byte of `data`; closed once sent or on close. */
  fds: number[];
}

/** A vhost-user message stream over one unix socket. */
export class Connection extends EventEmitter<ConnectionEvents> implements Disposable {
  readonly #stream: UnixStream;
  readonly #watcher: FdWatcher;
  readonly #log: Logger;
  readonly #name: string;
  #expect: ConnectionOptions["expect"];
  #codec: CodecOptions;
  #closed = false;
  // read state
  readonly #headerBuf = new Uint8Array(HEADER_SIZE);
  #headerHave = 0;
  #header: VhostUserHeaderValue | undefined;
  #body: Uint8Array | undefined;
  #bodyHave = 0;
  #fds: number[] = [];
  // write state
  readonly #queue: QueuedWrite[] = [];
  #watching = 0;

  /** Takes ownership of `stream` (made nonblocking). */
  constructor(stream: UnixStream, options: ConnectionOptions) {
    super();
    this.#stream = stream;
    this.#expect = options.expect;
    this.#codec = codecOptions(options.codec);
    this.#log = options.logger ?? noopLogger;
    this.#name = options.name ?? "vhost-user";
    stream.setNonblocking(true);
    this.#watcher = new FdWatcher(stream.fd, (events, errno) => this.#onPoll(events, errno), {
      onError: (err) => this.#fail(err instanceof VhostUserError ? err : new VhostUserError("SocketBroken", `${this.#name}: ${String(err)}`, { cause: err })),
    });
    this.#setWatch(PollEvents.READABLE);
    if (options.unref) this.#watcher.unref();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The codec settings in force; `setCodec` changes them (e.g. after XEN_MMAP is negotiated). */
  get codec(): Readonly<CodecOptions> {
    return this.#codec;
  }

  setCodec(update: CodecSettings): void {
    this.#codec = codecOptions({ ...this.#codec, ...update, quirks: { ...this.#codec.quirks, ...update.quirks } });
  }

  /** Replaces the expectation function (the front-end swaps it per outstanding request). */
  setExpect(expect: ConnectionOptions["expect"]): void {
    this.#expect = expect;
  }

  /** Keeps the process alive while open (default) or not. */
  ref(on = true): void {
    if (this.#closed) return;
    if (on) this.#watcher.ref();
    else this.#watcher.unref();
  }

  /**
   * Sends a message; `fds` are borrowed (dup'ed if the write has to be queued). Never blocks: what the
   * socket does not take now is queued and flushed when it becomes writable.
   * @throws VhostUserError Disconnected after close; InvalidParam/OversizedMsg for unencodable messages
   */
  send(msg: Pick<VhostUserMessage, "request" | "flags" | "payload">, fds: readonly number[] = []): void {
    if (this.#closed) throw new VhostUserError("Disconnected", `${this.#name}: connection is closed`);
    const data = encodeMessage(msg, this.#codec);
    if (fds.length > this.#codec.maxFds)
      throw new VhostUserError("InvalidParam", `${fds.length} fds exceed the ${this.#codec.maxFds}-fd limit of one message`);
    this.sendRaw(data, fds);
  }

  /** Sends already-encoded bytes (used by tests that play a hostile peer). */
  sendRaw(data: Uint8Array, fds: readonly number[] = []): void {
    if (this.#closed) throw new VhostUserError("Disconnected", `${this.#name}: connection is closed`);
    if (this.#queue.length === 0) {
      let sent: number | null;
      try {
        sent = this.#stream.send(data, fds);
      } catch (err) {
        const e = fromSysError(err, `${this.#name}: sendmsg`);
        this.#fail(e);
        throw e;
      }
      if (sent === data.length) return;
      // fds went with the first byte if anything was sent at all
      this.#queue.push({ data: data.slice(sent ?? 0), fds: sent === null || sent === 0 ? fds.map((fd) => dup(fd)) : [] });
    } else {
      this.#queue.push({ data: data.slice(), fds: fds.map((fd) => dup(fd)) });
    }
    this.#setWatch(PollEvents.READABLE | PollEvents.WRITABLE);
  }

  /** Closes the connection (idempotent); emits `close` without a cause. */
  close(): void {
    this.#shutdown(undefined);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  /** Closes with `cause` (emitted with `close`). */
  destroy(cause: VhostUserError): void {
    this.#shutdown(cause);
  }

  #setWatch(events: number): void {
    if (this.#closed || this.#watching === events) return;
    this.#watching = events;
    this.#watcher.start(events);
  }

  #onPoll(events: number, errno: number): void {
    if (this.#closed) return;
    if (errno !== 0) {
      // libuv reports POLLERR as UV_EBADF and stops the handle: read once to learn what happened (EOF,
      // ECONNRESET...), which fails the connection with the precise kind; else report the poll error.
      this.#readAll();
      if (!this.#closed)
        this.#fail(new VhostUserError("SocketBroken", `${this.#name}: socket error (poll errno ${errno}: POLLERR)`));
      return;
    }
    if (events & PollEvents.WRITABLE) this.#flush();
    if (this.#closed) return;
    if (events & (PollEvents.READABLE | PollEvents.DISCONNECT)) this.#readAll();
  }

  #flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const w = this.#queue[0]!;
      let sent: number | null;
      try {
        sent = this.#stream.send(w.data, w.fds);
      } catch (err) {
        this.#fail(fromSysError(err, `${this.#name}: sendmsg`));
        return;
      }
      if (sent === null) return;
      for (const fd of w.fds) closeFd(fd);
      w.fds = [];
      if (sent < w.data.length) {
        w.data = w.data.subarray(sent);
        return;
      }
      this.#queue.shift();
    }
    if (!this.#closed) this.#setWatch(PollEvents.READABLE);
  }

  #readAll(): void {
    for (;;) {
      if (this.#closed) return;
      const target = this.#header === undefined
        ? this.#headerBuf.subarray(this.#headerHave)
        : this.#body!.subarray(this.#bodyHave);
      let r: { bytes: number; fds: number[] } | null;
      try {
        r = this.#stream.recv(target, this.#codec.maxFds);
      } catch (err) {
        if (err instanceof TruncatedMessageError)
          this.#fail(new VhostUserError("IncorrectFds", `${this.#name}: more than ${this.#codec.maxFds} fds attached to one message`, { cause: err }));
        else this.#fail(fromSysError(err, `${this.#name}: recvmsg`));
        return;
      }
      if (r === null) return;
      if (r.bytes === 0) {
        for (const fd of r.fds) closeFd(fd);
        const mid = this.#headerHave > 0 || this.#header !== undefined;
        this.#fail(mid
          ? new VhostUserError("PartialMessage", `${this.#name}: peer closed the connection in the middle of a message`)
          : new VhostUserError("Disconnected", `${this.#name}: peer closed the connection`));
        return;
      }
      if (this.#header === undefined) {
        this.#fds.push(...r.fds);
        this.#headerHave += r.bytes;
        if (this.#headerHave < HEADER_SIZE) continue;
        let header: VhostUserHeaderValue;
        try {
          header = decodeHeader(this.#headerBuf, this.#codec);
        } catch (err) {
          this.#fail(err as VhostUserError);
          return;
        }
        if (this.#fds.length > this.#codec.maxFds) {
          this.#fail(new VhostUserError("IncorrectFds", `${this.#name}: request ${header.request} carries ${this.#fds.length} fds, more than ${this.#codec.maxFds}`));
          return;
        }
        this.#header = header;
        this.#body = new Uint8Array(header.size);
        this.#bodyHave = 0;
      } else {
        this.#bodyHave += r.bytes;
        if (r.fds.length > 0) {
          for (const fd of r.fds) closeFd(fd);
          this.#fail(new VhostUserError("IncorrectFds", `${this.#name}: request ${this.#header.request}: fds arrived with payload bytes instead of the header`));
          return;
        }
      }
      if (this.#bodyHave < this.#header.size) continue;
      this.#deliver();
    }
  }

  #deliver(): void {
    const header = this.#header!;
    const body = this.#body!;
    const fds = this.#fds;
    this.#header = undefined;
    this.#body = undefined;
    this.#headerHave = 0;
    this.#bodyHave = 0;
    this.#fds = [];
    let msg: VhostUserMessage;
    try {
      const expect = this.#expect(header);
      if (expect instanceof VhostUserError) {
        for (const fd of fds) closeFd(fd);
        throw expect;
      }
      msg = decodeMessage(header, body, fds, expect, this.#codec);
    } catch (err) {
      this.#fail(err instanceof VhostUserError ? err : new VhostUserError("InvalidMessage", `${this.#name}: ${String(err)}`, { cause: err }));
      return;
    }
    try {
      this.emit("message", msg);
    } catch (err) {
      // A throwing listener must not kill the event loop; it also must not leave the stream half-read.
      this.#log.error(`${this.#name}: message listener threw`, { err: String(err) });
    }
  }

  #fail(cause: VhostUserError): void {
    this.#shutdown(cause);
  }

  #shutdown(cause: VhostUserError | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    this.#stream.close();
    for (const fd of this.#fds) closeFd(fd);
    this.#fds = [];
    for (const w of this.#queue) for (const fd of w.fds) closeFd(fd);
    this.#queue.length = 0;
    if (cause) this.#log.warn(`${this.#name}: connection closed`, { kind: cause.kind, error: cause.message });
    try {
      this.emit("close", cause);
    } catch (err) {
      this.#log.error(`${this.#name}: close listener threw`, { err: String(err) });
    }
  }
}
