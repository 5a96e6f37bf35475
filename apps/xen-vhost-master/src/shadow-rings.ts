// Shadow mode for one device: the backend gets a memfd memory table (ShadowMemory) and shadow rings, and a
// ShadowQueue per queue relays between those and the guest's rings in the guest's own memory (Xen foreign
// or grant mappings, or memfd in tests). The guest's QueueNotify doorbell (ioeventfd, or `notify`) drives
// the relay instead of kicking the backend; the backend's call eventfd is watched here and the relay raises
// the guest's interrupt itself when the guest wants one.
import { EventEmitter } from "eventemitter3";
import { EventFd, FdWatcher, noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import { guestToUserAddr, type GuestMemory } from "@xen-vhost/vm-memory";
import { ShadowMemory, ShadowQueue, policyFor, type ShadowQueueError, type ShadowQueueStats } from "@xen-vhost/shadow-virtqueue";
import { bit, VirtioFeature, type QueueConfig } from "@xen-vhost/virtio-mmio";
import { fromCRegion, type Frontend } from "@xen-vhost/vhost-user-master";

import type { ShadowMode } from "./config.js";

export type { ShadowMode };

const F_INDIRECT = 1n << 28n;
const F_EVENT_IDX = 1n << 29n;
const F_VERSION_1 = bit(VirtioFeature.VERSION_1);
/** virtio 1.2 section 6 "Reserved Feature Bits": device-type bits are 0..23 and 50..127. */
const DEVICE_BITS = 0xff_ffffn | (((1n << 14n) - 1n) << 50n);

/**
 * The features to offer the guest in shadow mode: the backend's device-type bits, VERSION_1, and the ring
 * features the relay implements on the guest side itself (indirect descriptors, EVENT_IDX) whatever the
 * backend does. Packed rings, IN_ORDER, NOTIFICATION_DATA and the like are not offered: the guest side is a
 * split ring served by virtio-queue.
 */
export function shadowGuestFeatures(backendOffered: bigint): bigint {
  return (backendOffered & DEVICE_BITS) | F_VERSION_1 | F_INDIRECT | F_EVENT_IDX;
}

/** What to ack to the backend for the guest's choice: its device bits, plus the backend's own ring options. */
export function shadowBackendFeatures(guestAcked: bigint, backendOffered: bigint, protocolBit: bigint): bigint {
  return (guestAcked & DEVICE_BITS & backendOffered) | (backendOffered & (F_VERSION_1 | F_EVENT_IDX | protocolBit));
}

export interface ShadowRingsOptions {
  frontend: Frontend;
  deviceId: number;
  guestMemory: GuestMemory;
  /** Close `guestMemory` when the rings stop (it was made for them, e.g. a ShadowGuestMemory). */
  ownsGuestMemory?: boolean;
  /** Pool bytes per queue (default: the package's). */
  poolBytes?: number;
  /** The guest's doorbell of a queue when a notifier delivers QueueNotify itself (ioeventfd). Borrowed. */
  guestKickEventFd?: (queue: number) => EventFd | undefined;
  logger?: Logger;
}

export interface ShadowRingsEvents {
  /** Raise the guest's used-buffer interrupt. */
  used: [queue: number];
  /** A queue stopped (malformed guest chain, backend broke the ring): the device needs a reset. */
  broken: [error: ShadowQueueError];
}

interface Ring {
  relay: ShadowQueue;
  backendKick: EventFd;
  backendCall: EventFd;
  watchers: FdWatcher[];
}

export class ShadowRings extends EventEmitter<ShadowRingsEvents> implements Disposable {
  readonly memory: ShadowMemory;
  readonly #rings = new Map<number, Ring>();
  #ownedGuestMemory: GuestMemory | undefined;
  readonly #log: Logger;
  readonly #offDisconnect: () => void;
  #closed = false;

  private constructor(fe: Frontend, memory: ShadowMemory, log: Logger) {
    super();
    this.memory = memory;
    this.#log = log;
    const lost = (): void => {
      for (const r of this.#rings.values()) r.relay.backendLost();
    };
    const restored = (): void => {
      for (const r of this.#rings.values()) r.relay.backendRestored();
    };
    fe.on("disconnect", lost);
    fe.on("reconnect", restored);
    this.#offDisconnect = () => {
      fe.off("disconnect", lost);
      fe.off("reconnect", restored);
    };
  }

  /**
   * DRIVER_OK in shadow mode: creates the shadow memory and relays, then gives the backend its features,
   * the shadow memory table and the shadow rings, and starts it. Everything made is released on failure.
   */
  static async start(o: ShadowRingsOptions, features: bigint, backendFeatures: bigint, queues: readonly QueueConfig[]): Promise<ShadowRings> {
    const log = o.logger ?? noopLogger;
    let memory: ShadowMemory;
    try {
      memory = ShadowMemory.create(
        queues.map((q) => ({ index: q.index, size: q.size })),
        { ...(o.poolBytes !== undefined ? { poolBytes: o.poolBytes } : {}), name: `shadow-vq-dev${o.deviceId}` },
      );
    } catch (err) {
      if (o.ownsGuestMemory) o.guestMemory.close();
      throw err;
    }
    const self = new ShadowRings(o.frontend, memory, log);
    if (o.ownsGuestMemory) self.#ownedGuestMemory = o.guestMemory;
    // Guest memory with grant mappings drops them after completions (see shadow-grants.ts).
    const flushable = o.guestMemory as Partial<{ flushGrants(): void }>;
    const afterCompletions = typeof flushable.flushGrants === "function" ? () => flushable.flushGrants!() : undefined;
    try {
      await o.frontend.setFeatures(backendFeatures);
      const regions = memory.vhostUserRegions();
      await o.frontend.setMemory(regions.map(fromCRegion));
      const user = (gpa: bigint, len: number): bigint => guestToUserAddr(regions, gpa, len);
      const policy = policyFor(o.deviceId);
      for (const q of queues) {
        const area = memory.areas.get(q.index)!;
        const backendKick = new EventFd();
        const backendCall = new EventFd();
        const ring: Ring = { relay: undefined as unknown as ShadowQueue, backendKick, backendCall, watchers: [] };
        self.#rings.set(q.index, ring);
        ring.relay = new ShadowQueue({
          index: q.index,
          guest: o.guestMemory,
          ring: { size: q.size, desc: q.desc, avail: q.avail, used: q.used, eventIdx: (features & F_EVENT_IDX) !== 0n, indirect: (features & F_INDIRECT) !== 0n },
          shadow: memory.memory,
          area,
          backendEventIdx: (backendFeatures & F_EVENT_IDX) !== 0n,
          ...policy,
          kickBackend: () => backendKick.write(1),
          interruptGuest: () => self.emit("used", q.index),
          ...(afterCompletions ? { afterCompletions } : {}),
          logger: log,
        });
        ring.relay.on("broken", (err) => self.emit("broken", err));
        ring.watchers.push(
          new FdWatcher(backendCall.fd, () => {
            if (backendCall.read() !== null) ring.relay.onBackendCall();
          }, { onError: (err) => log.error("shadow call handler threw", { queue: q.index, error: String(err) }) }).start(),
        );
        const guestKick = o.guestKickEventFd?.(q.index);
        if (guestKick) {
          ring.watchers.push(
            new FdWatcher(guestKick.fd, () => {
              if (guestKick.read() !== null) ring.relay.onGuestKick();
            }, { onError: (err) => log.error("shadow kick handler threw", { queue: q.index, error: String(err) }) }).start(),
          );
        }
        const s = ring.relay.shadowRing;
        await o.frontend.setupVring(q.index, {
          num: s.size,
          base: 0,
          desc: user(s.desc, 16 * s.size),
          avail: user(s.avail, 6 + 2 * s.size),
          used: user(s.used, 6 + 8 * s.size),
          kick: backendKick.fd,
          call: backendCall.fd,
        });
      }
      await o.frontend.driverOk();
      log.info("shadow rings started", { queues: queues.map((q) => q.index), shadowBytes: memory.totalSize });
      return self;
    } catch (err) {
      self.close();
      throw err;
    }
  }

  /**
   * The vring base for a queue as a (re)connecting backend gets it: the shadow ring is rebuilt for that
   * connection first (see ShadowQueue.prepareReplay). For the Frontend's `restoreVringBase` option.
   */
  restoreVringBase(queue: number, lastKnown: number): number {
    const r = this.#rings.get(queue);
    return r ? r.relay.prepareReplay() : lastKnown;
  }

  /** QueueNotify that reached the device (no ioeventfd): relay the queue. */
  notify(queue: number): void {
    this.#rings.get(queue)?.relay.scheduleGuestKick();
  }

  /** Per-queue relay counters. */
  stats(): Map<number, ShadowQueueStats & { inFlight: number; poolUsed: number }> {
    const out = new Map<number, ShadowQueueStats & { inFlight: number; poolUsed: number }>();
    for (const [i, r] of this.#rings) out.set(i, { ...r.relay.stats, inFlight: r.relay.inFlight, poolUsed: r.relay.poolUsed });
    return out;
  }

  /** The relay of a queue (tests, metrics). */
  relay(queue: number): ShadowQueue | undefined {
    return this.#rings.get(queue)?.relay;
  }

  get queues(): number[] {
    return [...this.#rings.keys()];
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops the relays and watchers and unmaps the shadow memory (the front-end keeps its own fd copies). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#offDisconnect();
    for (const r of this.#rings.values()) {
      for (const w of r.watchers) w.close();
      r.relay?.close();
      r.backendKick.close();
      r.backendCall.close();
    }
    this.#rings.clear();
    this.memory.close();
    this.#ownedGuestMemory?.close();
    this.#log.debug("shadow rings closed", {});
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
