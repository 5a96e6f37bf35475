// A scriptable in-process vhost-user back-end for tests (virtio-queue's mock driver idea, turned
// around): by default it follows the spec (replies, REPLY_ACK, memory slots, rings, inflight area),
// and a `behaviour` hook can make it lie, stall or break the framing to test the front-end's defences.
import { EventEmitter } from "eventemitter3";
import { UnixStream, close as closeFd, ftruncate, memfdCreate } from "@xen-vhost/vmm-sys-util";
import {
  BackendReq, Connection, FrontendReq, VhostUserError, VhostUserHeaderFlag, VhostUserProtocolFeature,
  VhostUserVirtioFeatures, VirtioFeatures, ackExpectation, encodeMessage, hasProtocolFeature, messageInfo,
  type MemoryRegion, type Payload, type VhostUserMessage,
} from "@xen-vhost/vhost-user-protocol";

export interface FakeBackendApi {
  /** Replies with `payload` (REPLY flag set unless `flags` says otherwise). */
  reply(payload: Payload, fds?: number[], flags?: number, request?: number): void;
  /** Writes raw bytes (for framing attacks). */
  raw(bytes: Uint8Array, fds?: number[]): void;
  /** Closes the back-end's socket. */
  close(): void;
}

/** Returns true if it handled the message (the default handling is skipped). */
export type FakeBackendBehaviour = (msg: VhostUserMessage, api: FakeBackendApi) => boolean | undefined;

export interface FakeBackendOptions {
  features?: bigint;
  protocolFeatures?: bigint;
  queueNum?: number;
  maxMemSlots?: number;
  /** Device config space served by GET_CONFIG. */
  config?: Uint8Array;
  behaviour?: FakeBackendBehaviour;
}

interface FakeBackendEvents {
  message: [msg: VhostUserMessage];
  close: [cause?: VhostUserError];
}

const bit = (n: number) => 1n << BigInt(n);

/** The default offer: VERSION_1 | PROTOCOL_FEATURES | EVENT_IDX, and the protocol features the front-end implements. */
export const FAKE_FEATURES = bit(VirtioFeatures.VIRTIO_F_VERSION_1) | bit(VhostUserVirtioFeatures.VHOST_USER_F_PROTOCOL_FEATURES) | bit(VirtioFeatures.VIRTIO_RING_F_EVENT_IDX);
export const FAKE_PROTOCOL_FEATURES = [
  VhostUserProtocolFeature.MQ, VhostUserProtocolFeature.REPLY_ACK, VhostUserProtocolFeature.BACKEND_REQ, VhostUserProtocolFeature.CONFIG,
  VhostUserProtocolFeature.CONFIGURE_MEM_SLOTS, VhostUserProtocolFeature.STATUS, VhostUserProtocolFeature.INFLIGHT_SHMFD,
  VhostUserProtocolFeature.RESET_DEVICE,
].reduce((m, b) => m | bit(b), 0n);

/** An in-process back-end on one end of a socketpair. */
export class FakeBackend extends EventEmitter<FakeBackendEvents> {
  readonly conn: Connection;
  readonly options: FakeBackendOptions;
  /** Every request received, in order (fds already closed or kept below). */
  readonly log: { request: number; name: string; flags: number; payload: Payload; nfds: number }[] = [];
  features = 0n;
  protocolFeatures = 0n;
  status = 0;
  readonly memory = new Map<string, MemoryRegion>();
  readonly vrings = new Map<number, { num?: number; base: number; enabled?: boolean; kick?: boolean; call?: boolean }>();
  /** Fds the back-end keeps (kick/call eventfds, backend-req socket, inflight memfd): closed by close(). */
  readonly kept = new Map<string, number>();
  backendChannel: Connection | undefined;
  #pendingBackendReply: ((m: VhostUserMessage) => void) | undefined;

  constructor(stream: UnixStream, options: FakeBackendOptions = {}) {
    super();
    this.options = options;
    this.conn = new Connection(stream, { expect: () => ({ type: "request", channel: "frontend" }), name: "fake-backend" });
    this.conn.on("message", (m) => this.#onMessage(m));
    this.conn.on("close", (cause) => this.emit("close", cause));
  }

  /** A connected pair: the front-end's stream and this back-end. */
  static pair(options: FakeBackendOptions = {}): [UnixStream, FakeBackend] {
    const [a, b] = UnixStream.pair();
    return [a, new FakeBackend(b, options)];
  }

  get names(): string[] {
    return this.log.map((l) => l.name);
  }

  close(): void {
    this.conn.close();
    this.backendChannel?.close();
    for (const fd of this.kept.values()) closeFd(fd);
    this.kept.clear();
  }

  #keep(key: string, fd: number | undefined): void {
    const old = this.kept.get(key);
    if (old !== undefined) closeFd(old);
    if (fd === undefined) this.kept.delete(key);
    else this.kept.set(key, fd);
  }

  #api(msg: VhostUserMessage): FakeBackendApi {
    return {
      reply: (payload, fds = [], flags = VhostUserHeaderFlag.VERSION | VhostUserHeaderFlag.REPLY, request = msg.request) =>
        this.conn.send({ request, flags, payload }, fds),
      raw: (bytes, fds = []) => this.conn.sendRaw(bytes, fds),
      close: () => this.conn.close(),
    };
  }

  #onMessage(msg: VhostUserMessage): void {
    const name = messageInfo("frontend", msg.request)?.name ?? String(msg.request);
    this.log.push({ request: msg.request, name, flags: msg.flags, payload: msg.payload, nfds: msg.fds.length });
    this.emit("message", msg);
    const api = this.#api(msg);
    if (this.options.behaviour?.(msg, api)) {
      for (const fd of msg.fds) closeFd(fd);
      return;
    }
    let replied = false;
    const reply = (p: Payload, fds: number[] = []) => {
      api.reply(p, fds);
      replied = true;
    };
    const p = msg.payload;
    const fds = [...msg.fds];
    const take = () => fds.shift();
    switch (msg.request) {
      case FrontendReq.GET_FEATURES:
        reply({ kind: "u64", value: this.options.features ?? FAKE_FEATURES });
        break;
      case FrontendReq.SET_FEATURES:
        if (p.kind === "u64") this.features = p.value;
        break;
      case FrontendReq.GET_PROTOCOL_FEATURES:
        reply({ kind: "u64", value: this.options.protocolFeatures ?? FAKE_PROTOCOL_FEATURES });
        break;
      case FrontendReq.SET_PROTOCOL_FEATURES:
        if (p.kind === "u64") {
          this.protocolFeatures = p.value;
          this.conn.setCodec({ xenMmap: hasProtocolFeature(p.value, "XEN_MMAP") });
        }
        break;
      case FrontendReq.GET_QUEUE_NUM:
        reply({ kind: "u64", value: BigInt(this.options.queueNum ?? 2) });
        break;
      case FrontendReq.GET_MAX_MEM_SLOTS:
        reply({ kind: "u64", value: BigInt(this.options.maxMemSlots ?? 32) });
        break;
      case FrontendReq.SET_MEM_TABLE:
        if (p.kind === "memory") {
          this.memory.clear();
          p.regions.forEach((r, i) => {
            this.memory.set(`${r.guestPhysAddr}`, r);
            closeFd(fds[i]!);
          });
          fds.length = 0;
        }
        break;
      case FrontendReq.ADD_MEM_REG:
        if (p.kind === "single-region") this.memory.set(`${p.region.guestPhysAddr}`, p.region);
        closeFd(take()!);
        break;
      case FrontendReq.REM_MEM_REG:
        if (p.kind === "single-region") this.memory.delete(`${p.region.guestPhysAddr}`);
        break;
      case FrontendReq.SET_VRING_NUM:
        if (p.kind === "vring-state") this.#ring(p.index).num = p.num;
        break;
      case FrontendReq.SET_VRING_BASE:
        if (p.kind === "vring-state") this.#ring(p.index).base = p.num;
        break;
      case FrontendReq.GET_VRING_BASE:
        if (p.kind === "vring-state") reply({ kind: "vring-state", index: p.index, num: this.#ring(p.index).base });
        break;
      case FrontendReq.SET_VRING_KICK:
      case FrontendReq.SET_VRING_CALL:
      case FrontendReq.SET_VRING_ERR:
        if (p.kind === "u64") {
          const idx = Number(p.value & 0xffn);
          const which = msg.request === FrontendReq.SET_VRING_KICK ? "kick" : msg.request === FrontendReq.SET_VRING_CALL ? "call" : "err";
          this.#keep(`${which}${idx}`, take());
          if (which !== "err") this.#ring(idx)[which] = this.kept.has(`${which}${idx}`);
        }
        break;
      case FrontendReq.SET_VRING_ENABLE:
        if (p.kind === "vring-state") this.#ring(p.index).enabled = p.num === 1;
        break;
      case FrontendReq.GET_CONFIG:
        if (p.kind === "config") {
          const cfg = this.options.config ?? new Uint8Array(0);
          if (p.offset + p.data.length > cfg.length) reply({ kind: "none" });
          else reply({ kind: "config", offset: p.offset, flags: p.flags, data: cfg.slice(p.offset, p.offset + p.data.length) });
        }
        break;
      case FrontendReq.SET_STATUS:
        if (p.kind === "u64") this.status = Number(p.value);
        break;
      case FrontendReq.GET_STATUS:
        reply({ kind: "u64", value: BigInt(this.status) });
        break;
      case FrontendReq.SET_BACKEND_REQ_FD: {
        const fd = take()!;
        this.backendChannel?.close();
        const ch = new Connection(new UnixStream(fd), {
          expect: (h) => ackExpectation("backend", h.request),
          name: "fake-backend-req",
        });
        ch.on("message", (m) => {
          const r = this.#pendingBackendReply;
          this.#pendingBackendReply = undefined;
          if (r) r(m);
          else for (const f of m.fds) closeFd(f);
        });
        this.backendChannel = ch;
        break;
      }
      case FrontendReq.GET_INFLIGHT_FD:
        if (p.kind === "inflight") {
          // libvhost-user layout: per queue 16-byte header + 16 bytes per descriptor, 64-byte aligned
          const per = Math.ceil((16 + 16 * p.queueSize) / 64) * 64;
          const size = per * p.numQueues;
          const fd = memfdCreate("fake-inflight");
          ftruncate(fd, size);
          this.#keep("inflight", fd);
          reply({ kind: "inflight", mmapSize: BigInt(size), mmapOffset: 0n, numQueues: p.numQueues, queueSize: p.queueSize }, [fd]);
        }
        break;
      case FrontendReq.SET_INFLIGHT_FD:
        this.#keep("inflight", take());
        break;
      case FrontendReq.SET_OWNER:
      case FrontendReq.RESET_OWNER:
      case FrontendReq.RESET_DEVICE:
        break;
      default:
        break;
    }
    for (const fd of fds) closeFd(fd);
    // REPLY_ACK: a u64 0 for every NEED_REPLY request that had no reply of its own.
    if (!replied && (msg.flags & VhostUserHeaderFlag.NEED_REPLY) !== 0) reply({ kind: "u64", value: 0n });
  }

  #ring(i: number) {
    let r = this.vrings.get(i);
    if (!r) {
      r = { base: 0 };
      this.vrings.set(i, r);
    }
    return r;
  }

  /**
   * Sends a back-end request on the SET_BACKEND_REQ_FD channel; with `needReply` resolves with the
   * front-end's reply (fds owned by the caller).
   */
  backendRequest(request: number, payload: Payload, fds: number[] = [], needReply = true): Promise<VhostUserMessage | null> {
    const ch = this.backendChannel;
    if (!ch) return Promise.reject(new VhostUserError("Disconnected", "no backend-request channel"));
    const always = request === BackendReq.SHARED_OBJECT_LOOKUP;
    const flags = VhostUserHeaderFlag.VERSION | (needReply ? VhostUserHeaderFlag.NEED_REPLY : 0);
    if (!needReply && !always) {
      ch.send({ request, flags, payload }, fds);
      return Promise.resolve(null);
    }
    return new Promise((resolve, reject) => {
      this.#pendingBackendReply = resolve;
      ch.setExpect((h) => (always ? { type: "reply", channel: "backend", request, payloads: ["u64"], fds: { kind: "up-to", max: 1 } } : ackExpectation("backend", h.request)));
      ch.once("close", (c) => reject(c ?? new VhostUserError("Disconnected", "backend channel closed")));
      ch.send({ request, flags, payload }, fds);
    });
  }

  /** Raw bytes on the backend-request channel. */
  backendRaw(bytes: Uint8Array, fds: number[] = []): void {
    this.backendChannel?.sendRaw(bytes, fds);
  }

  /** Encodes a message for `raw` (convenience). */
  static encode(request: number, flags: number, payload: Payload, xenMmap = false): Uint8Array {
    return encodeMessage({ request, flags, payload }, { xenMmap });
  }
}


