// The back-end → front-end request channel (SET_BACKEND_REQ_FD, formerly SLAVE_REQ): the front-end hands us
// one end of a socketpair; we send requests (CONFIG_CHANGE_MSG today) and, with REPLY_ACK, wait for the u64
// status. One request at a time, in order.
import { UnixStream, type Logger } from "@xen-vhost/vmm-sys-util";
import {
  BackendReq, Connection, VhostUserError, VhostUserHeaderFlag, ackExpectation, type Payload, type VhostUserMessage,
} from "@xen-vhost/vhost-user-protocol";

export class BackendRequestChannel implements Disposable {
  readonly #conn: Connection;
  readonly #replyAck: boolean;
  #chain: Promise<unknown> = Promise.resolve();
  #waiting: { request: number; resolve: (m: VhostUserMessage) => void; reject: (e: VhostUserError) => void } | undefined;

  /** Takes ownership of `fd`. */
  constructor(fd: number, options: { replyAck: boolean; logger: Logger }) {
    this.#replyAck = options.replyAck;
    this.#conn = new Connection(new UnixStream(fd), {
      name: "backend-req",
      logger: options.logger,
      unref: true,
      expect: (h) =>
        this.#waiting && h.request === this.#waiting.request
          ? ackExpectation("backend", this.#waiting.request)
          : new VhostUserError("InvalidMessage", `backend-req: unsolicited message ${h.request} from the front-end`),
    });
    this.#conn.on("message", (m) => {
      const w = this.#waiting;
      this.#waiting = undefined;
      w?.resolve(m);
    });
    this.#conn.on("close", (cause) => {
      const w = this.#waiting;
      this.#waiting = undefined;
      w?.reject(cause ?? new VhostUserError("Disconnected", "backend-req channel closed"));
    });
  }

  get closed(): boolean {
    return this.#conn.closed;
  }

  /**
   * Sends a request; with REPLY_ACK waits for the front-end's status.
   * @throws VhostUserError Disconnected, BackendFailure (non-zero status)
   */
  request(request: number, payload: Payload = { kind: "none" }): Promise<void> {
    const run = async (): Promise<void> => {
      const needReply = this.#replyAck;
      const reply = needReply
        ? new Promise<VhostUserMessage>((resolve, reject) => (this.#waiting = { request, resolve, reject }))
        : undefined;
      this.#conn.send({ request, flags: VhostUserHeaderFlag.VERSION | (needReply ? VhostUserHeaderFlag.NEED_REPLY : 0), payload });
      if (!reply) return;
      const m = await reply;
      if (m.payload.kind === "u64" && m.payload.value !== 0n)
        throw new VhostUserError("BackendFailure", `front-end answered backend request ${request} with status ${m.payload.value}`);
    };
    const p = this.#chain.then(run, run);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  /** VHOST_USER_BACKEND_CONFIG_CHANGE_MSG. */
  configChanged(): Promise<void> {
    return this.request(BackendReq.CONFIG_CHANGE_MSG);
  }

  close(): void {
    this.#conn.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
