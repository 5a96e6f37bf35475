// The back-end → front-end request channel (SET_BACKEND_REQ_FD, vhost-user.rst "Back-end message
// types"). Each request is answered or refused per the spec: a u64 status when the back-end set
// NEED_REPLY (REPLY_ACK), always for SHARED_OBJECT_LOOKUP. Requests surface as typed events; refusals
// close any fd the back-end sent.
import { EventEmitter } from "eventemitter3";
import type { UnixStream } from "@xen-vhost/vmm-sys-util";
import type { VhostUserError} from "@xen-vhost/vhost-user-protocol";
import {
  BackendReq, Connection, VhostUserHeaderFlag, closeMessageFds, noopLogger, requestName,
  type CodecSettings, type Logger, type Payload, type PayloadOf, type VhostUserMessage,
} from "@xen-vhost/vhost-user-protocol";

/** A SHMEM_MAP / SHMEM_UNMAP request. */
export type ShmemMapRequest = Omit<PayloadOf<"shmem-map">, "kind">;

/** How the front-end answers what it cannot do itself; every hook is optional (default: refuse). */
export interface BackendRequestHandlers {
  /**
   * SHMEM_MAP: map `len` bytes of `fd` at `fdOffset` into shared memory region `shmid` at `shmOffset`.
   * Return true to accept; the handler then owns `fd`. On false (or no handler) the fd is closed and the
   * back-end gets a failure status.
   */
  shmemMap?(req: ShmemMapRequest, fd: number): boolean;
  /** SHMEM_UNMAP: true if the range was mapped and is now unmapped. */
  shmemUnmap?(req: ShmemMapRequest): boolean;
  /** SHARED_OBJECT_LOOKUP: a dma-buf fd for `uuid` (borrowed: it is sent, not closed), or null. */
  sharedObjectLookup?(uuid: Uint8Array): number | null;
  /** IOTLB_MSG (miss / access fail): true if handled. Without an IOMMU the default refuses. */
  iotlb?(msg: Omit<PayloadOf<"iotlb">, "kind">): boolean;
}

export interface BackendChannelEvents {
  /** CONFIG_CHANGE_MSG: the device config space changed; re-read it (GET_CONFIG). */
  configChange: [];
  /** VRING_CALL (in-band notification): the back-end used buffers of ring `index`. */
  vringCall: [index: number];
  /** VRING_ERR (in-band): ring `index` hit an error. */
  vringErr: [index: number];
  /** IOTLB_MSG from the back-end. */
  iotlb: [msg: Omit<PayloadOf<"iotlb">, "kind">];
  /** SHARED_OBJECT_ADD / REMOVE: the front-end's table of shared objects changed. */
  sharedObject: [op: "add" | "remove", uuid: string];
  shmemMap: [req: ShmemMapRequest, accepted: boolean];
  shmemUnmap: [req: ShmemMapRequest, accepted: boolean];
  /** A refused request (unsupported or invalid), with the reason. */
  refused: [request: string, reason: string];
  close: [cause?: VhostUserError];
}

const OK = 0n;
/** Non-zero status for a refused request (the spec only says "non-zero"; QEMU uses -EINVAL style values, we use 1). */
const FAIL = 1n;

function uuidString(u: Uint8Array): string {
  const h = Buffer.from(u).toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The front-end's end of the backend-request socket. */
export class BackendRequestChannel extends EventEmitter<BackendChannelEvents> implements Disposable {
  readonly #conn: Connection;
  readonly #handlers: BackendRequestHandlers;
  readonly #log: Logger;
  /** Shared objects the back-end exported (virtio-dmabuf table), by uuid. */
  readonly sharedObjects = new Set<string>();

  constructor(stream: UnixStream, options: { handlers?: BackendRequestHandlers; codec?: CodecSettings; logger?: Logger; unref?: boolean } = {}) {
    super();
    this.#handlers = options.handlers ?? {};
    this.#log = options.logger ?? noopLogger;
    this.#conn = new Connection(stream, {
      expect: () => ({ type: "request", channel: "backend" }),
      name: "backend-req",
      logger: this.#log,
      unref: options.unref ?? false,
      ...(options.codec ? { codec: options.codec } : {}),
    });
    this.#conn.on("message", (m) => this.#onMessage(m));
    this.#conn.on("close", (cause) => this.emit("close", cause));
  }

  get closed(): boolean {
    return this.#conn.closed;
  }

  close(): void {
    this.#conn.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #reply(msg: VhostUserMessage, value: bigint, fds: number[] = [], always = false): void {
    if (!always && (msg.flags & VhostUserHeaderFlag.NEED_REPLY) === 0) return;
    const payload: Payload = { kind: "u64", value };
    try {
      this.#conn.send({ request: msg.request, flags: VhostUserHeaderFlag.VERSION | VhostUserHeaderFlag.REPLY, payload }, fds);
    } catch (err) {
      this.#log.warn("backend-req: reply failed", { request: msg.request, err: String(err) });
    }
  }

  #refuse(msg: VhostUserMessage, reason: string, always = false): void {
    closeMessageFds(msg);
    this.emit("refused", requestName("backend", msg.request), reason);
    this.#reply(msg, FAIL, [], always);
  }

  #onMessage(msg: VhostUserMessage): void {
    const p = msg.payload;
    switch (msg.request) {
      case BackendReq.CONFIG_CHANGE_MSG:
        this.emit("configChange");
        this.#reply(msg, OK);
        return;
      case BackendReq.VRING_CALL:
      case BackendReq.VRING_ERR:
        if (p.kind !== "vring-state") break;
        this.emit(msg.request === BackendReq.VRING_CALL ? "vringCall" : "vringErr", p.index);
        this.#reply(msg, OK);
        return;
      case BackendReq.IOTLB_MSG: {
        if (p.kind !== "iotlb") break;
        const { kind: _k, ...rest } = p;
        this.emit("iotlb", rest);
        const ok = this.#handlers.iotlb?.(rest) ?? false;
        if (ok) this.#reply(msg, OK);
        else this.#refuse(msg, "no IOMMU translation in this front-end");
        return;
      }
      case BackendReq.VRING_HOST_NOTIFIER_MSG:
        // Optional per spec: refusing makes the back-end keep using the kick eventfd.
        this.#refuse(msg, "host notifiers are not supported; the kick eventfd stays in use");
        return;
      case BackendReq.SHARED_OBJECT_ADD:
      case BackendReq.SHARED_OBJECT_REMOVE: {
        if (p.kind !== "shared-object") break;
        const id = uuidString(p.uuid);
        const add = msg.request === BackendReq.SHARED_OBJECT_ADD;
        if (add) this.sharedObjects.add(id);
        const existed = add || this.sharedObjects.delete(id);
        this.emit("sharedObject", add ? "add" : "remove", id);
        this.#reply(msg, existed ? OK : FAIL);
        return;
      }
      case BackendReq.SHARED_OBJECT_LOOKUP: {
        if (p.kind !== "shared-object") break;
        const fd = this.#handlers.sharedObjectLookup?.(p.uuid) ?? null;
        if (fd === null) this.#refuse(msg, `no shared object ${uuidString(p.uuid)}`, true);
        else this.#reply(msg, OK, [fd], true);
        return;
      }
      case BackendReq.SHMEM_MAP: {
        if (p.kind !== "shmem-map") break;
        const { kind: _k, ...req } = p;
        const fd = msg.fds[0]!;
        let accepted = false;
        try {
          accepted = this.#handlers.shmemMap?.(req, fd) ?? false;
        } catch (err) {
          this.#log.warn("backend-req: shmemMap handler threw", { err: String(err) });
        }
        this.emit("shmemMap", req, accepted);
        if (accepted) this.#reply(msg, OK);
        else this.#refuse(msg, "no shared memory region handler accepted the mapping");
        return;
      }
      case BackendReq.SHMEM_UNMAP: {
        if (p.kind !== "shmem-map") break;
        const { kind: _k, ...req } = p;
        const accepted = this.#handlers.shmemUnmap?.(req) ?? false;
        this.emit("shmemUnmap", req, accepted);
        if (accepted) this.#reply(msg, OK);
        else this.#refuse(msg, "no such shared memory mapping");
        return;
      }
    }
    // Unreachable for messages the codec accepted; kept so a table change cannot leak fds.
    this.#refuse(msg, "unhandled request");
  }
}
