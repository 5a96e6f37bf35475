// A virtio device whose implementation is a vhost-user backend: the piece between the virtio-mmio register
// file (what the guest driver sees) and the vhost-user front-end (what the backend sees). Nothing here is
// Xen-specific; the bridge gives it guest memory descriptions, an address translation for vring addresses,
// and optionally the kick/call eventfds of its notifier (Xen ioeventfd/irqfd, or KVM's).
//
// Shadow mode (issue 9): a backend without VHOST_USER_PROTOCOL_F_XEN_MMAP cannot map a Xen guest's memory,
// so it gets memfd shadow memory and shadow rings, and ShadowRings relays between those and the guest's
// rings (see shadow-rings.ts and @xen-vhost/shadow-virtqueue). `shadow` picks the mode per device.
import { EventEmitter } from "eventemitter3";
import { EventFd, FdWatcher, noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import type { GuestMemory } from "@xen-vhost/vm-memory";
import { bit, VirtioFeature, type ConfigValue, type QueueConfig, type VirtioDevice } from "@xen-vhost/virtio-mmio";
import { VhostUserError, VhostUserVirtioFeatures, type ProtocolFeatureName } from "@xen-vhost/vhost-user-protocol";
import { DEFAULT_PROTOCOL_FEATURES, type Frontend, type MemoryRegionDescription, type Negotiated } from "@xen-vhost/vhost-user-master";
import type { ShadowQueueError, ShadowQueueStats } from "@xen-vhost/shadow-virtqueue";
import { ShadowRings, shadowBackendFeatures, shadowGuestFeatures, type ShadowMode } from "./shadow-rings.js";
import type { SuppliedConfig } from "./device-config.js";

export interface VhostUserDeviceOptions {
  /** A connected front-end (client or server mode); the device owns it from now on. */
  frontend: Frontend;
  /** The virtio device ID the guest sees (from xenstore's `type` or the command line). */
  deviceId: number;
  /** Queues to expose when the backend cannot say (no MQ): the type's default. */
  defaultQueues: number;
  /** Largest queue size to offer. */
  queueMaxSize: number;
  /** Bytes of config space to expose (the type's size); 0 for devices without config. */
  configSize: number;
  /** Guest memory as the backend must map it, read at every activation (the guest may have changed). */
  memory: () => readonly MemoryRegionDescription[];
  /** Translates a guest address of a ring into the front-end address space sent in SET_VRING_ADDR. */
  translate: (gpa: bigint, len: number) => bigint;
  /** Feature bits the transport adds (ACCESS_PLATFORM when the guest uses grants). */
  extraFeatures?: bigint;
  /**
   * The config space to expose when the backend has no VHOST_USER_PROTOCOL_F_CONFIG (stock virtiofsd and
   * DPDK: under QEMU the VMM's device model supplies it; see device-config.ts), given the queue count the
   * backend reported. Its feature bits are offered to the guest but reach the backend only if it offered them.
   */
  suppliedConfig?: (backendQueues: number | undefined) => SuppliedConfig | undefined;
  /** Protocol features the backend must offer (XEN_MMAP for a Xen guest's foreign/grant memory). */
  requireProtocolFeatures?: readonly ProtocolFeatureName[];
  /**
   * The kick eventfd of a queue when a notifier delivers QueueNotify itself (ioeventfd): the device then
   * never sees `notify`. Borrowed. Without it the device creates one and `notify` writes it.
   */
  kickEventFd?: (queue: number) => EventFd | undefined;
  /**
   * The call eventfd of a queue when a notifier turns it into the interrupt itself (irqfd). Borrowed.
   * Without it the device creates one, watches it, and emits `used`.
   */
  callEventFd?: (queue: number) => EventFd | undefined;
  /**
   * Shadow mode: "never" (default) needs `requireProtocolFeatures` from the backend; "always" relays through
   * shadow rings; "auto" relays only if the backend lacks one of `requireProtocolFeatures` (XEN_MMAP).
   */
  shadow?: ShadowMode;
  /** The guest's memory, for shadow mode (the relay copies through it); asked for at every activation. */
  guestMemory?: () => GuestMemory;
  /** Close each memory `guestMemory` returned when its shadow rings stop (it was made for them). */
  ownsGuestMemory?: boolean;
  /** Shadow buffer pool bytes per queue (default 4 MiB). */
  shadowPoolBytes?: number;
  logger?: Logger;
}

export interface VhostUserDeviceEvents {
  /** The backend signalled a queue's call eventfd: raise the used-buffer interrupt. */
  used: [queue: number];
  /** The backend's configuration changed (CONFIG_CHANGE_MSG); the cache is refreshed already. */
  configChange: [];
  /** The backend is gone for good (no reconnect): the device needs a reset. */
  failed: [cause: Error];
  /** Shadow mode: a queue stopped (malformed guest chain, backend broke a ring): the device needs a reset. */
  broken: [cause: ShadowQueueError];
}

const F_PROTOCOL = bit(VhostUserVirtioFeatures.VHOST_USER_F_PROTOCOL_FEATURES);
const F_LOG_ALL = bit(VhostUserVirtioFeatures.VHOST_F_LOG_ALL);

interface QueueRuntime {
  kick: EventFd;
  ownsKick: boolean;
  call: EventFd;
  ownsCall: boolean;
  watcher: FdWatcher | undefined;
}

/**
 * A VirtioDevice backed by a vhost-user backend. Create with `VhostUserDevice.create`, which negotiates
 * features and reads the config space before the guest can see the device.
 */
export class VhostUserDevice extends EventEmitter<VhostUserDeviceEvents> implements VirtioDevice, Disposable {
  readonly deviceId: number;
  readonly features: bigint;
  readonly numQueues: number;
  readonly configSize: number;
  readonly negotiated: Negotiated;
  readonly #fe: Frontend;
  readonly #opts: VhostUserDeviceOptions;
  readonly #log: Logger;
  readonly #queueMax: number;
  #config: Uint8Array;
  /** The config space is the bridge's own (the backend has none): read-only, never refreshed. */
  readonly configSupplied: boolean;
  #running = new Map<number, QueueRuntime>();
  #closed = false;
  /** Shadow mode was chosen at negotiation. */
  readonly shadow: boolean;
  #shadowRings: ShadowRings | undefined;
  /** Relay counters of shadow rings already stopped (device resets), so the totals only ever grow. */
  readonly #shadowTotals = new Map<number, ShadowQueueStats>();

  private constructor(opts: VhostUserDeviceOptions, negotiated: Negotiated, config: Uint8Array, shadow: boolean, supplied: SuppliedConfig | undefined) {
    super();
    this.#opts = opts;
    this.#fe = opts.frontend;
    this.#log = opts.logger ?? noopLogger;
    this.negotiated = negotiated;
    this.deviceId = opts.deviceId;
    // What the driver may accept: the backend's virtio features, minus vhost-user's own bits (protocol
    // features, dirty logging) which mean nothing to a guest, plus VERSION_1 (virtio-mmio v2 is modern only).
    this.shadow = shadow;
    const offered = shadow ? shadowGuestFeatures(negotiated.offeredFeatures) : negotiated.offeredFeatures & ~F_PROTOCOL & ~F_LOG_ALL;
    this.features = (offered & ~(supplied?.withdraw ?? 0n)) | bit(VirtioFeature.VERSION_1) | (opts.extraFeatures ?? 0n) | (supplied?.features ?? 0n);
    this.numQueues = supplied?.queues ?? negotiated.queueNum ?? opts.defaultQueues;
    this.configSupplied = supplied !== undefined;
    this.#queueMax = opts.queueMaxSize;
    this.configSize = config.length;
    this.#config = config;
    this.#fe.on("configChange", () => void this.#refreshConfig());
    this.#fe.on("close", (cause) => {
      if (this.#closed) return;
      this.emit("failed", cause ?? new VhostUserError("Disconnected", "back-end connection closed"));
    });
  }

  /**
   * Negotiates with the backend (features are only set at activation, when the driver's choice is known)
   * and reads the config space if the backend offers VHOST_USER_PROTOCOL_F_CONFIG.
   */
  static async create(opts: VhostUserDeviceOptions): Promise<VhostUserDevice> {
    const log = opts.logger ?? noopLogger;
    const mode = opts.shadow ?? "never";
    const wanted = opts.requireProtocolFeatures ?? [];
    if (mode !== "never" && !opts.guestMemory) throw new VhostUserError("InvalidParam", `shadow mode "${mode}" needs the guest's memory (guestMemory)`);
    const negotiated = await opts.frontend.negotiate({
      setFeatures: false,
      // never: the backend must have them; auto: ack them if offered, else shadow; always: leave them out
      // (a XEN_MMAP backend told nothing of Xen maps the shadow memfd like any other).
      ...(mode === "never" && wanted.length ? { requireProtocolFeatures: wanted } : {}),
      ...(mode === "auto" ? { protocolFeatures: [...DEFAULT_PROTOCOL_FEATURES, ...wanted] } : {}),
    });
    const shadow = mode === "always" || (mode === "auto" && !wanted.every((f) => opts.frontend.hasProtocolFeature(f)));
    let config: Uint8Array = new Uint8Array(0);
    let supplied: SuppliedConfig | undefined;
    if (opts.configSize > 0 && opts.frontend.hasProtocolFeature("CONFIG")) {
      config = await readConfig(opts.frontend, opts.configSize, log);
    } else if (opts.suppliedConfig) {
      try {
        supplied = opts.suppliedConfig(negotiated.queueNum);
      } catch (err) {
        throw new VhostUserError("InvalidParam", `device config: ${(err as Error).message}`, { cause: err });
      }
      if (supplied) {
        config = supplied.bytes;
        log.info("backend has no config space (no CONFIG protocol feature); the bridge supplies it", supplied.describe);
      }
    }
    log.info("backend negotiated", {
      features: `0x${negotiated.offeredFeatures.toString(16)}`,
      protocolFeatures: `0x${negotiated.protocolFeatures.toString(16)}`,
      queues: negotiated.queueNum,
      configSize: config.length,
      mode: shadow ? "shadow" : "direct",
    });
    return new VhostUserDevice(opts, negotiated, config, shadow, supplied);
  }

  get frontend(): Frontend {
    return this.#fe;
  }

  /**
   * For the Frontend's `restoreVringBase` option: in shadow mode every (re)connection attempt gets a freshly
   * built shadow ring with the in-flight requests re-posted, at base 0; in direct mode the last known base.
   */
  restoreVringBase(queue: number, lastKnown: number): number {
    return this.#shadowRings ? this.#shadowRings.restoreVringBase(queue, lastKnown) : lastKnown;
  }

  /** Shadow mode's relays while the device runs (undefined in direct mode or before DRIVER_OK). */
  get shadowRings(): ShadowRings | undefined {
    return this.#shadowRings;
  }

  /**
   * Shadow mode's relay counters per queue over the device's lifetime (every activation since it was
   * created, for metrics), with the running rings' in-flight requests and pool bytes (0 when stopped).
   */
  shadowStats(): Map<number, ShadowQueueStats & { inFlight: number; poolUsed: number }> {
    const out = new Map<number, ShadowQueueStats & { inFlight: number; poolUsed: number }>();
    for (const [q, t] of this.#shadowTotals) out.set(q, { ...t, inFlight: 0, poolUsed: 0 });
    for (const [q, s] of this.#shadowRings?.stats() ?? []) {
      const t = this.#shadowTotals.get(q);
      out.set(q, t ? { ...addStats(t, s), inFlight: s.inFlight, poolUsed: s.poolUsed } : s);
    }
    return out;
  }

  /** Stops the shadow rings, keeping their counters in the lifetime totals. */
  #retireShadowRings(): void {
    const rings = this.#shadowRings;
    if (!rings) return;
    this.#shadowRings = undefined;
    for (const [q, s] of rings.stats()) {
      const t = this.#shadowTotals.get(q);
      const { inFlight: _i, poolUsed: _p, ...counters } = s;
      this.#shadowTotals.set(q, t ? addStats(t, counters) : counters);
    }
    rings.close();
  }

  queueMaxSize(index: number): number {
    return index < this.numQueues ? this.#queueMax : 0;
  }

  /** Config reads come from the cache (the spec lets a front-end cache; CONFIG_CHANGE_MSG invalidates). */
  readConfig(offset: number, size: 1 | 2 | 4 | 8): ConfigValue {
    const dv = new DataView(this.#config.buffer, this.#config.byteOffset, this.#config.byteLength);
    switch (size) {
      case 1:
        return dv.getUint8(offset);
      case 2:
        return dv.getUint16(offset, true);
      case 4:
        return dv.getUint32(offset, true);
      case 8:
        return dv.getBigUint64(offset, true);
    }
  }

  async writeConfig(offset: number, size: 1 | 2 | 4 | 8, value: ConfigValue): Promise<void> {
    const bytes = new Uint8Array(size);
    const dv = new DataView(bytes.buffer);
    if (size === 8) dv.setBigUint64(0, BigInt(value), true);
    else if (size === 4) dv.setUint32(0, Number(value) >>> 0, true);
    else if (size === 2) dv.setUint16(0, Number(value) & 0xffff, true);
    else dv.setUint8(0, Number(value) & 0xff);
    if (this.configSupplied) throw new VhostUserError("InvalidParam", "the config space is supplied by the bridge and read-only (the backend has none)");
    if (!this.#fe.hasProtocolFeature("CONFIG")) throw new VhostUserError("InvalidParam", "the backend has no config space (no CONFIG protocol feature)");
    await this.#fe.setConfig(offset, bytes);
    this.#config.set(bytes, offset);
  }

  async #refreshConfig(): Promise<void> {
    try {
      if (this.configSize > 0 && !this.configSupplied) this.#config = await readConfig(this.#fe, this.configSize, this.#log);
      this.emit("configChange");
    } catch (err) {
      this.#log.warn("config refresh failed", { error: String(err) });
    }
  }

  /** DRIVER_OK: tells the backend the features, the memory and every ring, then starts it. */
  async activate(features: bigint, queues: readonly QueueConfig[]): Promise<void> {
    if (this.shadow) {
      this.#retireShadowRings();
      const rings = await ShadowRings.start(
        {
          frontend: this.#fe,
          deviceId: this.deviceId,
          guestMemory: this.#opts.guestMemory!(),
          ...(this.#opts.ownsGuestMemory ? { ownsGuestMemory: true } : {}),
          ...(this.#opts.shadowPoolBytes !== undefined ? { poolBytes: this.#opts.shadowPoolBytes } : {}),
          ...(this.#opts.kickEventFd ? { guestKickEventFd: this.#opts.kickEventFd } : {}),
          logger: this.#log,
        },
        features,
        shadowBackendFeatures(features, this.negotiated.offeredFeatures, F_PROTOCOL),
        queues,
      );
      this.#shadowRings = rings;
      rings.on("used", (q) => this.emit("used", q));
      rings.on("broken", (err) => this.emit("broken", err));
      this.#log.info("device started (shadow rings)", { queues: queues.map((q) => q.index), features: `0x${features.toString(16)}` });
      return;
    }
    // The guest's choice, plus the protocol-features bit the session was negotiated with; masked with the
    // backend's offer, so bits the bridge added itself (ACCESS_PLATFORM, a supplied config's NET_F_MAC/STATUS)
    // never reach a backend that did not offer them (shadowBackendFeatures does the same in shadow mode).
    const backendFeatures = features & ~bit(VirtioFeature.ACCESS_PLATFORM) | (this.negotiated.offeredFeatures & F_PROTOCOL);
    await this.#fe.setFeatures(backendFeatures & this.negotiated.offeredFeatures);
    await this.#fe.setMemory(this.#opts.memory());
    for (const q of queues) {
      const rt = this.#startQueue(q.index);
      await this.#fe.setupVring(q.index, {
        num: q.size,
        base: 0,
        desc: this.#opts.translate(q.desc, 16 * q.size),
        avail: this.#opts.translate(q.avail, 6 + 2 * q.size),
        used: this.#opts.translate(q.used, 6 + 8 * q.size),
        kick: rt.kick.fd,
        call: rt.call.fd,
      });
    }
    await this.#fe.driverOk();
    this.#log.info("device started", { queues: queues.map((q) => q.index), features: `0x${features.toString(16)}` });
  }

  #startQueue(index: number): QueueRuntime {
    this.#stopQueue(index);
    const kick = this.#opts.kickEventFd?.(index);
    const call = this.#opts.callEventFd?.(index);
    const rt: QueueRuntime = {
      kick: kick ?? new EventFd(),
      ownsKick: kick === undefined,
      call: call ?? new EventFd(),
      ownsCall: call === undefined,
      watcher: undefined,
    };
    if (rt.ownsCall) {
      const fd = rt.call;
      // drainEventfd: the watcher reads the counter in C and passes it in (one native call less per
      // interrupt; a wake-up that found nothing runs no JavaScript).
      rt.watcher = new FdWatcher(
        fd.fd,
        (_events, _errno, count) => {
          if (count > 0) this.emit("used", index);
        },
        { drainEventfd: true, onError: (err) => this.#log.error("used listener threw", { queue: index, error: String(err) }) },
      ).start();
    }
    this.#running.set(index, rt);
    return rt;
  }

  #stopQueue(index: number): void {
    const rt = this.#running.get(index);
    if (!rt) return;
    this.#running.delete(index);
    rt.watcher?.close();
    if (rt.ownsKick) rt.kick.close();
    if (rt.ownsCall) rt.call.close();
  }

  /** QueueNotify from the guest (only when no notifier consumed it): kick the backend. */
  notify(queue: number): void {
    if (this.#shadowRings) {
      this.#shadowRings.notify(queue);
      return;
    }
    const rt = this.#running.get(queue);
    if (!rt) return;
    rt.kick.write(1);
  }

  /**
   * Status 0: stop every ring (GET_VRING_BASE stops a ring per the spec), then reset the backend's device
   * state (RESET_DEVICE, else SET_STATUS 0 where STATUS is negotiated).
   */
  async reset(): Promise<void> {
    const indices = [...this.#running.keys(), ...(this.#shadowRings?.queues ?? [])];
    for (const i of indices) {
      try {
        if (this.#fe.connected) await this.#fe.getVringBase(i);
      } catch (err) {
        this.#log.warn("GET_VRING_BASE failed during reset", { queue: i, error: String(err) });
      }
      this.#stopQueue(i);
    }
    this.#retireShadowRings();
    if (!this.#fe.connected) return;
    if (this.#fe.hasProtocolFeature("RESET_DEVICE")) await this.#fe.resetDevice();
    else if (this.#fe.hasProtocolFeature("STATUS")) await this.#fe.setStatus(0);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops the queues and closes the front-end (the backend sees a disconnect). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const i of [...this.#running.keys()]) this.#stopQueue(i);
    this.#retireShadowRings();
    this.#fe.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** GET_CONFIG of `size` bytes; a backend that refuses that size gets asked for what it has, down to 0. */
async function readConfig(fe: Frontend, size: number, log: Logger): Promise<Uint8Array> {
  try {
    return await fe.getConfig(0, size);
  } catch (err) {
    if (!(err instanceof VhostUserError) || err.kind !== "BackendFailure") throw err;
    log.warn("backend refused GET_CONFIG; exposing no config space", { size, error: err.message });
    return new Uint8Array(0);
  }
}

function addStats(a: ShadowQueueStats, b: ShadowQueueStats): ShadowQueueStats {
  return {
    posted: a.posted + b.posted, completed: a.completed + b.completed, bytesIn: a.bytesIn + b.bytesIn, bytesOut: a.bytesOut + b.bytesOut,
    stalls: a.stalls + b.stalls, reposted: a.reposted + b.reposted, failed: a.failed + b.failed, kicks: a.kicks + b.kicks,
    interrupts: a.interrupts + b.interrupts,
  };
}
