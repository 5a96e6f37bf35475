// The request side of a vhost-user back-end: one BackendHandler per front-end connection. It answers every
// front-end request (vhost-user.rst "Front-end message types"), keeps the negotiated state, maps the memory
// table and runs the vrings for the device.
//
// Error policy (as rust-vmm vhost-user-backend, but keeping the connection where the spec lets us report):
//  - a malformed message, a request for a feature that was not negotiated, or an id we do not know is a
//    protocol violation: the connection is closed (fds of the message closed, everything unmapped);
//  - a well-formed request that fails (a region that cannot be mapped, a bad vring index) is answered with a
//    non-zero REPLY_ACK status when the front-end asked for one, and closes the connection otherwise (the
//    front-end would carry on with a device that is not in the state it thinks).
import { EventEmitter } from "eventemitter3";
import { noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import {
  Connection, VhostUserError, VhostUserHeaderFlag, VhostUserVirtioFeatures, VirtioFeatures, closeMessageFds, describeProtocolFeatures,
  hasProtocolFeature, messageInfo, protocolFeatureSet, requestName, VHOST_USER_VRING_IDX_MASK, VHOST_USER_VRING_NOFD_MASK,
  type Payload, type ProtocolFeatureName, type VhostUserMessage,
} from "@xen-vhost/vhost-user-protocol";
import { close as closeFd, type UnixStream } from "@xen-vhost/vmm-sys-util";
import type { GuestMemoryRegion } from "@xen-vhost/vm-memory";
import { BackendRequestChannel } from "./backend-req.js";
import type { DeviceContext, DeviceVring, VhostUserDevice } from "./device.js";
import { BackendError, hex } from "./error.js";
import { InflightArea } from "./inflight.js";
import { MemoryTable, type XenRegionMapper } from "./memory.js";
import { Vring } from "./vring.js";

/** VHOST_USER_F_PROTOCOL_FEATURES as a mask. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 1n << BigInt(VhostUserVirtioFeatures.VHOST_USER_F_PROTOCOL_FEATURES);
const EVENT_IDX = 1n << BigInt(VirtioFeatures.VIRTIO_RING_F_EVENT_IDX);
const INDIRECT_DESC = 1n << BigInt(VirtioFeatures.VIRTIO_RING_F_INDIRECT_DESC);

/** Memory slots reported by GET_MAX_MEM_SLOTS (the codec's fd limit bounds SET_MEM_TABLE the same way). */
export const MAX_MEM_SLOTS = 32;

export interface BackendHandlerOptions {
  /** Maps Xen foreign/grant regions; with it XEN_MMAP is offered. */
  xenMapper?: XenRegionMapper;
  logger?: Logger;
}

export interface BackendHandlerEvents {
  /** The connection closed; `cause` says why (absent for a local close or an orderly peer close). */
  close: [cause?: Error];
}

/** The protocol features a back-end built on this handler implements for `device`. */
export function offeredProtocolFeatures(device: VhostUserDevice, xenMapper: XenRegionMapper | undefined): bigint {
  const names: ProtocolFeatureName[] = ["MQ", "REPLY_ACK", "BACKEND_REQ", "CONFIGURE_MEM_SLOTS", "RESET_DEVICE", "STATUS"];
  if (device.configSize !== undefined && device.getConfig) names.push("CONFIG");
  if (device.inflightTracking) names.push("INFLIGHT_SHMFD");
  if (xenMapper) names.push("XEN_MMAP");
  return protocolFeatureSet(names);
}

export class BackendHandler extends EventEmitter<BackendHandlerEvents> implements Disposable, DeviceContext {
  readonly device: VhostUserDevice;
  readonly #conn: Connection;
  readonly #log: Logger;
  readonly #mapper: XenRegionMapper | undefined;
  readonly #vrings: Vring[];
  readonly offeredFeatures: bigint;
  readonly offeredProtocolFeatures: bigint;
  #ackedFeatures = 0n;
  #ackedProtocol = 0n;
  #owner = false;
  #status = 0;
  #table = MemoryTable.empty();
  #backendReq: BackendRequestChannel | undefined;
  #inflight: InflightArea | undefined;
  #closed = false;

  /** Serves `device` on `stream` (taken over). */
  constructor(device: VhostUserDevice, stream: UnixStream, options: BackendHandlerOptions = {}) {
    super();
    this.device = device;
    this.#log = options.logger ?? noopLogger;
    this.#mapper = options.xenMapper;
    this.offeredFeatures = device.features | VHOST_USER_F_PROTOCOL_FEATURES;
    this.offeredProtocolFeatures = offeredProtocolFeatures(device, this.#mapper);
    this.#vrings = Array.from({ length: device.numQueues }, (_, i) => new Vring(i, device, this.#log));
    this.#conn = new Connection(stream, {
      name: `${device.name}:frontend`,
      logger: this.#log,
      expect: () => ({ type: "request", channel: "frontend" }),
    });
    this.#conn.on("message", (m) => this.#onMessage(m));
    this.#conn.on("close", (cause) => this.#teardown(cause));
    device.attach?.(this);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** SET_OWNER was received. */
  get owner(): boolean {
    return this.#owner;
  }

  get ackedFeatures(): bigint {
    return this.#ackedFeatures;
  }

  get ackedProtocolFeatures(): bigint {
    return this.#ackedProtocol;
  }

  /** The inflight area (GET/SET_INFLIGHT_FD), if the front-end set one up. */
  get inflightArea(): InflightArea | undefined {
    return this.#inflight;
  }

  /** The current memory table (empty before SET_MEM_TABLE). */
  get memoryTable(): MemoryTable {
    return this.#table;
  }

  // ------------------------------------------------------------------ DeviceContext

  vring(index: number): DeviceVring | undefined {
    const v = this.#vrings[index];
    return v?.ready ? v : undefined;
  }

  async signalConfigChange(): Promise<boolean> {
    const ch = this.#backendReq;
    if (!ch || ch.closed || !this.#negotiated("CONFIG")) return false;
    await ch.configChanged();
    return true;
  }

  // ------------------------------------------------------------------ dispatch

  #negotiated(name: ProtocolFeatureName): boolean {
    return hasProtocolFeature(this.#ackedProtocol, name);
  }

  #reply(m: VhostUserMessage, payload: Payload, fds: readonly number[] = []): void {
    this.#conn.send({ request: m.request, flags: VhostUserHeaderFlag.VERSION | VhostUserHeaderFlag.REPLY, payload }, fds);
  }

  #onMessage(m: VhostUserMessage): void {
    const info = messageInfo("frontend", m.request)!;
    const name = requestName("frontend", m.request);
    const needAck = (m.flags & VhostUserHeaderFlag.NEED_REPLY) !== 0 && hasProtocolFeature(this.#ackedProtocol, "REPLY_ACK");
    const hasOwnReply = info.reply.when === "always" || (info.reply.when === "if-feature" && this.#negotiated(info.reply.feature));
    this.#log.debug(`${this.device.name}: ${name}`, { flags: m.flags });
    try {
      if (info.feature && !hasProtocolFeature(this.#ackedProtocol, info.feature))
        throw new VhostUserError("InactiveFeature", `${name} needs protocol feature ${info.feature}, which was not negotiated`);
      this.#handle(info.name, m);
      if (needAck && !hasOwnReply) this.#reply(m, { kind: "u64", value: 0n });
    } catch (err) {
      closeMessageFds(m);
      if (err instanceof BackendError && !this.#conn.closed) {
        this.#log.warn(`${this.device.name}: ${name} failed`, { kind: err.kind, error: err.message });
        if (needAck && !hasOwnReply) {
          this.#reply(m, { kind: "u64", value: 1n });
          return;
        }
        if (info.name === "GET_CONFIG") {
          this.#reply(m, { kind: "none" });
          return;
        }
        this.#conn.destroy(new VhostUserError("InvalidParam", `${name}: ${err.message}`, { cause: err }));
        return;
      }
      const e = err instanceof VhostUserError ? err : new VhostUserError("InvalidMessage", `${name}: ${String(err)}`, { cause: err });
      this.#log.warn(`${this.device.name}: closing the connection`, { kind: e.kind, error: e.message });
      this.#conn.destroy(e);
    }
  }

  #vringAt(index: number, what: string): Vring {
    const v = this.#vrings[index];
    if (!v) throw new BackendError("InvalidVring", `${what}: vring ${index} out of range (${this.#vrings.length} queues)`);
    return v;
  }

  #ringOpts(): { eventIdx: boolean; indirect: boolean } {
    return { eventIdx: (this.#ackedFeatures & EVENT_IDX) !== 0n, indirect: (this.#ackedFeatures & INDIRECT_DESC) !== 0n };
  }

  #handle(name: string, m: VhostUserMessage): void {
    const p = m.payload;
    switch (name) {
      case "GET_FEATURES":
        this.#reply(m, { kind: "u64", value: this.offeredFeatures });
        return;
      case "SET_FEATURES": {
        const v = (p as Extract<Payload, { kind: "u64" }>).value;
        if ((v & ~this.offeredFeatures) !== 0n)
          throw new VhostUserError("FeatureMismatch", `SET_FEATURES acks ${hex(v & ~this.offeredFeatures)}, which were not offered`);
        this.#ackedFeatures = v;
        // Without VHOST_USER_F_PROTOCOL_FEATURES rings are enabled as soon as they start.
        if ((v & VHOST_USER_F_PROTOCOL_FEATURES) === 0n) for (const r of this.#vrings) r.enabled = true;
        for (const r of this.#vrings) {
          if (!r.queue) continue;
          r.queue.eventIdx = this.#ringOpts().eventIdx;
          r.queue.indirect = this.#ringOpts().indirect;
        }
        this.device.setFeatures?.(v & ~VHOST_USER_F_PROTOCOL_FEATURES);
        return;
      }
      case "SET_OWNER":
        this.#owner = true;
        return;
      case "RESET_OWNER":
      case "RESET_DEVICE":
        this.#reset();
        return;
      case "GET_PROTOCOL_FEATURES":
        this.#reply(m, { kind: "u64", value: this.offeredProtocolFeatures });
        return;
      case "SET_PROTOCOL_FEATURES": {
        const v = (p as Extract<Payload, { kind: "u64" }>).value;
        if ((v & ~this.offeredProtocolFeatures) !== 0n)
          throw new VhostUserError("FeatureMismatch", `SET_PROTOCOL_FEATURES acks ${describeProtocolFeatures(v & ~this.offeredProtocolFeatures).join(", ")}, which were not offered`);
        this.#ackedProtocol = v;
        this.#conn.setCodec({ xenMmap: hasProtocolFeature(v, "XEN_MMAP") });
        return;
      }
      case "GET_QUEUE_NUM":
        this.#reply(m, { kind: "u64", value: BigInt(this.device.numQueues) });
        return;
      case "SET_MEM_TABLE": {
        const regions = (p as Extract<Payload, { kind: "memory" }>).regions;
        const fds = m.fds.splice(0);
        this.#replaceTable(MemoryTable.fromRegions(regions, fds, this.#mapper));
        return;
      }
      case "GET_MAX_MEM_SLOTS":
        this.#reply(m, { kind: "u64", value: BigInt(MAX_MEM_SLOTS) });
        return;
      case "ADD_MEM_REG": {
        const region = (p as Extract<Payload, { kind: "single-region" }>).region;
        if (this.#table.regionCount >= MAX_MEM_SLOTS) {
          throw new BackendError("InvalidMemoryTable", `ADD_MEM_REG: all ${MAX_MEM_SLOTS} memory slots are in use`);
        }
        const fd = m.fds.splice(0)[0]!;
        this.#replaceTable(this.#table.withRegion(region, fd, this.#mapper), true);
        return;
      }
      case "REM_MEM_REG": {
        const region = (p as Extract<Payload, { kind: "single-region" }>).region;
        closeMessageFds(m); // the spec tolerates an fd here; we never need it
        const { table, removed } = this.#table.withoutRegion(region);
        this.#replaceTable(table, true, removed);
        return;
      }
      case "SET_VRING_NUM": {
        const s = p as Extract<Payload, { kind: "vring-state" }>;
        const v = this.#vringAt(s.index, "SET_VRING_NUM");
        if (s.num === 0 || s.num > this.device.maxQueueSize || (s.num & (s.num - 1)) !== 0)
          throw new BackendError("InvalidVring", `SET_VRING_NUM: size ${s.num} is not a power of 2 in 1..${this.device.maxQueueSize}`);
        if (v.started) throw new BackendError("InvalidVring", `SET_VRING_NUM: vring ${s.index} is running`);
        v.size = s.num;
        return;
      }
      case "SET_VRING_ADDR": {
        const a = p as Extract<Payload, { kind: "vring-addr" }>;
        const v = this.#vringAt(a.index, "SET_VRING_ADDR");
        if (a.flags & ~1) throw new BackendError("InvalidVring", `SET_VRING_ADDR: unknown flags ${hex(a.flags)}`);
        if (v.started) throw new BackendError("InvalidVring", `SET_VRING_ADDR: vring ${a.index} is running`);
        v.addr = { desc: a.desc, used: a.used, avail: a.avail, flags: a.flags };
        return;
      }
      case "SET_VRING_BASE": {
        const s = p as Extract<Payload, { kind: "vring-state" }>;
        const v = this.#vringAt(s.index, "SET_VRING_BASE");
        if (s.num > 0xffff) throw new BackendError("InvalidVring", `SET_VRING_BASE: ${s.num} is not a split-ring index (packed rings are not offered)`);
        if (v.started) throw new BackendError("InvalidVring", `SET_VRING_BASE: vring ${s.index} is running`);
        v.base = s.num;
        return;
      }
      case "GET_VRING_BASE":
      case "GET_VRING_BASE_SKIP_DRAIN": {
        const s = p as Extract<Payload, { kind: "vring-state" }>;
        const v = this.#vringAt(s.index, name);
        const base = v.stop();
        this.#reply(m, { kind: "vring-state", index: s.index, num: base });
        return;
      }
      case "SET_VRING_KICK":
      case "SET_VRING_CALL":
      case "SET_VRING_ERR": {
        const u = (p as Extract<Payload, { kind: "u64" }>).value;
        const index = Number(u & BigInt(VHOST_USER_VRING_IDX_MASK));
        const v = this.#vringAt(index, name);
        const fd = (u & BigInt(VHOST_USER_VRING_NOFD_MASK)) !== 0n ? undefined : m.fds.splice(0)[0];
        if (name === "SET_VRING_CALL") v.setCall(fd);
        else if (name === "SET_VRING_ERR") v.setErr(fd);
        else {
          v.setKick(fd);
          if ((this.#ackedFeatures & VHOST_USER_F_PROTOCOL_FEATURES) === 0n) v.enabled = true;
          v.start(this.#table, this.#ringOpts());
        }
        return;
      }
      case "SET_VRING_ENABLE": {
        const s = p as Extract<Payload, { kind: "vring-state" }>;
        const v = this.#vringAt(s.index, "SET_VRING_ENABLE");
        if ((this.#ackedFeatures & VHOST_USER_F_PROTOCOL_FEATURES) === 0n)
          throw new BackendError("InvalidVring", "SET_VRING_ENABLE without VHOST_USER_F_PROTOCOL_FEATURES negotiated");
        if (s.num > 1) throw new BackendError("InvalidVring", `SET_VRING_ENABLE: ${s.num} is neither 0 nor 1`);
        v.enabled = s.num === 1;
        if (v.ready) v.trigger();
        return;
      }
      case "GET_CONFIG": {
        const c = p as Extract<Payload, { kind: "config" }>;
        const size = c.data.length;
        this.#checkConfig(c.offset, size, "GET_CONFIG");
        const data = this.device.getConfig!(c.offset, size);
        if (data.length !== size) throw new BackendError("ConfigAccess", `GET_CONFIG: device returned ${data.length} of ${size} bytes`);
        this.#reply(m, { kind: "config", offset: c.offset, flags: c.flags, data });
        return;
      }
      case "SET_CONFIG": {
        const c = p as Extract<Payload, { kind: "config" }>;
        this.#checkConfig(c.offset, c.data.length, "SET_CONFIG");
        if (!this.device.setConfig) throw new BackendError("ConfigAccess", `SET_CONFIG: ${this.device.name} has no writable config fields`);
        try {
          this.device.setConfig(c.offset, c.data);
        } catch (err) {
          throw new BackendError("ConfigAccess", `SET_CONFIG: ${(err as Error).message}`, { cause: err });
        }
        return;
      }
      case "SET_BACKEND_REQ_FD": {
        const fd = m.fds.splice(0)[0]!;
        this.#backendReq?.close();
        this.#backendReq = new BackendRequestChannel(fd, {
          replyAck: hasProtocolFeature(this.#ackedProtocol, "REPLY_ACK"),
          logger: this.#log,
        });
        return;
      }
      case "GET_INFLIGHT_FD": {
        const d = p as Extract<Payload, { kind: "inflight" }>;
        this.#checkInflightCounts(d.numQueues, d.queueSize, name);
        const { area, fd, description } = InflightArea.allocate(d.numQueues, d.queueSize);
        try {
          this.#reply(m, { kind: "inflight", ...description }, [fd]);
        } catch (err) {
          area.close();
          throw err;
        } finally {
          closeFd(fd); // sent (the socket holds its own reference until the front-end takes it)
        }
        this.#setInflight(area);
        return;
      }
      case "SET_INFLIGHT_FD": {
        const d = p as Extract<Payload, { kind: "inflight" }>;
        const fd = m.fds.splice(0)[0]!;
        let area: InflightArea;
        try {
          this.#checkInflightCounts(d.numQueues, d.queueSize, name);
          area = InflightArea.fromFd(fd, d);
        } finally {
          closeFd(fd);
        }
        this.#setInflight(area);
        return;
      }
      case "SET_STATUS": {
        const v = (p as Extract<Payload, { kind: "u64" }>).value;
        if (v > 0xffn) throw new BackendError("InvalidParam", `SET_STATUS: ${hex(v)} is not a status byte`);
        this.#status = Number(v);
        // virtio 1.2 2.1: writing 0 resets the device.
        if (this.#status === 0) this.#reset();
        return;
      }
      case "GET_STATUS":
        this.#reply(m, { kind: "u64", value: BigInt(this.#status) });
        return;
      default: {
        // SET_LOG_BASE/SET_LOG_FD (no VHOST_F_LOG_ALL / LOG_SHMFD offered), IOTLB_MSG (no ACCESS_PLATFORM),
        // GPU_SET_SOCKET, and the requests of features we never offer (already refused above).
        closeMessageFds(m);
        throw new BackendError("NotSupported", `${requestName("frontend", m.request)} is not implemented by this back-end`);
      }
    }
  }

  #checkInflightCounts(numQueues: number, queueSize: number, what: string): void {
    if (numQueues < 1 || numQueues > this.device.numQueues)
      throw new BackendError("InvalidParam", `${what}: ${numQueues} queues, the device has ${this.device.numQueues}`);
    if (queueSize < 1 || queueSize > 32768) throw new BackendError("InvalidParam", `${what}: queue size ${queueSize} outside 1..32768`);
  }

  #setInflight(area: InflightArea): void {
    this.#inflight?.close();
    this.#inflight = area;
    for (const v of this.#vrings) {
      v.inflight = area.queue(v.index);
      if (v.started) this.#log.warn(`vring ${v.index}: inflight area set while running; tracking starts when the ring restarts`);
    }
  }

  #checkConfig(offset: number, size: number, what: string): void {
    const cs = this.device.configSize ?? 0;
    if (!this.device.getConfig) throw new BackendError("ConfigAccess", `${what}: ${this.device.name} has no config space`);
    if (size === 0 || offset + size > cs)
      throw new BackendError("ConfigAccess", `${what}: ${size} bytes at offset ${offset} outside the ${cs}-byte config space`);
  }

  #replaceTable(table: MemoryTable, shared = false, removed?: GuestMemoryRegion): void {
    const old = this.#table;
    this.#table = table;
    for (const v of this.#vrings) {
      try {
        v.remap(table, this.#ringOpts());
      } catch (err) {
        this.#log.warn(`vring ${v.index} cannot run on the new memory table`, { error: (err as Error).message });
        v.stop();
      }
    }
    if (shared) old.release();
    else old.close();
    removed?.close();
  }

  #reset(): void {
    for (const v of this.#vrings) v.close();
    // The driver rebuilds its rings after a reset: nothing it had queued is in flight any more.
    this.#inflight?.clear();
    this.#ackedFeatures = 0n;
    this.#status = 0;
    this.device.reset?.();
  }

  #teardown(cause: VhostUserError | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const v of this.#vrings) v.close();
    this.#backendReq?.close();
    this.#backendReq = undefined;
    this.#table.close();
    this.#table = MemoryTable.empty();
    // The front-end keeps the area (its fd) for the next back-end; our mapping goes.
    this.#inflight?.close();
    this.#inflight = undefined;
    try {
      if (this.device.disconnected) this.device.disconnected();
      else this.device.reset?.();
    } catch (err) {
      this.#log.error(`${this.device.name}: reset failed`, { err: String(err) });
    }
    const orderly = cause?.kind === "Disconnected";
    this.emit("close", orderly ? undefined : cause);
  }

  /** Closes the connection and releases everything. Idempotent. */
  close(): void {
    this.#conn.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
