// Unix stream sockets that carry fds (SCM_RIGHTS). Node's net.Socket drops ancillary data, and vhost-user
// passes memory and eventfds in it, so these go through sendmsg/recvmsg in the addon.
import { binding, type Bytes } from "./native.js";
import { SysError } from "./errno.js";
import { setNonblocking } from "./fd.js";

/** What one `recv` returned. `bytes === 0` means the peer closed. */
export interface ReceivedMessage {
  bytes: number;
  /** Fds received with the data; the caller owns (and must close) them. */
  fds: number[];
}

/** More fds arrived than the caller allowed, or the message did not fit: the connection is unusable. */
export class TruncatedMessageError extends Error {
  override readonly name = "TruncatedMessageError";
  readonly what: "data" | "fds";
  constructor(what: "data" | "fds") {
    super(what === "fds" ? "more fds arrived than were expected (MSG_CTRUNC)" : "message longer than the buffer (MSG_TRUNC)");
    this.what = what;
  }
}

/** A connected unix stream socket that owns its fd. */
export class UnixStream implements Disposable {
  #fd: number;

  /** Takes ownership of a connected socket fd. */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`invalid fd ${fd}`);
    this.#fd = fd;
  }

  /** Connects to a listening socket; blocking (a unix connect completes at once or fails). */
  static connect(path: string): UnixStream {
    return new UnixStream(binding().unixConnect(path));
  }

  /** A connected pair, e.g. a front-end and a backend in one test, or a backend-request channel. */
  static pair(): [UnixStream, UnixStream] {
    const [a, b] = binding().socketpair();
    return [new UnixStream(a), new UnixStream(b)];
  }

  get fd(): number {
    if (this.#fd < 0) throw SysError.closed("UnixStream");
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  setNonblocking(on = true): this {
    setNonblocking(this.fd, on);
    return this;
  }

  /**
   * Sends `data` with `fds` attached (in one sendmsg). Returns bytes sent (possibly short on a stream
   * socket: send the rest without fds) or null on EAGAIN.
   */
  send(data: Bytes, fds: readonly number[] = []): number | null {
    return binding().sendmsg(this.fd, data, fds);
  }

  /**
   * Receives into `buf`, accepting up to `maxFds` fds. Returns null on EAGAIN. If more fds arrived than
   * allowed, the ones that did arrive are closed and TruncatedMessageError is thrown.
   */
  recv(buf: Bytes, maxFds = 0): ReceivedMessage | null {
    const r = binding().recvmsg(this.fd, buf, maxFds);
    if (r === null) return null;
    if (r.ctruncated) {
      for (const fd of r.fds) binding().close(fd);
      throw new TruncatedMessageError("fds");
    }
    return { bytes: r.bytes, fds: r.fds };
  }

  /** Gives up ownership of the fd. */
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

/** A listening unix socket. The socket file is created with mode 0600. */
export class UnixListener implements Disposable {
  #fd: number;
  readonly path: string;

  constructor(path: string, backlog = 16) {
    this.#fd = binding().unixListen(path, backlog);
    this.path = path;
  }

  get fd(): number {
    if (this.#fd < 0) throw SysError.closed("UnixListener");
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  setNonblocking(on = true): this {
    setNonblocking(this.fd, on);
    return this;
  }

  /** Accepts one connection; null if none is pending on a nonblocking listener. */
  accept(): UnixStream | null {
    const fd = binding().accept(this.fd);
    return fd === null ? null : new UnixStream(fd);
  }

  /** Closes the socket. The socket file stays; the owner decides whether to unlink it. */
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
