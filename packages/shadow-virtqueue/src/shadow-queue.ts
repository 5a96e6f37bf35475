// The relay between a guest's split virtqueue and a shadow ring a backend serves (virtio 1.2 2.7).
//
// Guest side: virtio-queue's device-side Queue over the guest's GuestMemory (any regions: memfd, Xen foreign
// or grant mappings). Every chain is validated before anything is copied; a malformed one is a typed error
// and the queue stops (the device needs a reset), so a hostile guest never makes the relay touch memory
// outside its RAM, loop, or allocate without bound.
//
// Shadow side: virtio-queue's DriverQueue over bounded memfd shadow memory. Each guest chain becomes one
// shadow chain with the same buffer boundaries (indirect tables flattened; so device-specific framing and
// used.len mean the same on both sides) in one contiguous extent of the queue's pool. Driver-readable bytes
// are copied guest -> shadow once, straight into the shadow mapping; device-writable bytes are copied
// shadow -> guest once on completion, only as many as the device reports written (used.len) unless the
// device type says otherwise. When the pool or the shadow ring is full the relay stops popping: the guest's
// own avail ring holds the rest, and completions resume it (back-pressure).
//
// Completions may come in any order. The in-flight table (shadow head -> guest head, extent, buffers) lives
// outside shared memory, so a backend cannot make the relay complete a chain twice or free foreign extents.
import { EventEmitter } from "eventemitter3";
import { GuestMemoryError, type GuestMemory, type RegionMapping } from "@xen-vhost/vm-memory";
import { Queue, VirtqueueError, type DescriptorChain } from "@xen-vhost/virtio-queue";
import { noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import { ShadowQueueError } from "./error.js";
import { ExtentPool, type Extent } from "./pool.js";
import type { ShadowQueueArea } from "./shadow-memory.js";
import { ShadowRing, type ShadowBuffer } from "./shadow-ring.js";

/** The guest's ring as the driver configured it (virtio-mmio QueueDesc/Driver/Device, QueueNum). */
export interface GuestRingConfig {
  size: number;
  desc: bigint;
  avail: bigint;
  used: bigint;
  /** VIRTIO_RING_F_EVENT_IDX negotiated with the guest. */
  eventIdx: boolean;
  /** VIRTIO_RING_F_INDIRECT_DESC negotiated with the guest. */
  indirect: boolean;
}

/**
 * How much of the device-writable area goes back to the guest on completion:
 * - `used-len`: the first min(used.len, writable) bytes (virtio 1.2 2.7.8.1: the driver must not rely on
 *   anything past len). Right for net RX, fs and most devices.
 * - `whole`: all writable bytes. For devices whose drivers read past used.len (virtio-blk's status byte
 *   is the last writable byte and Linux ignores len; DPDK's vhost_blk reports len 4096 for every request).
 */
export type WriteBackPolicy = "used-len" | "whole";

/**
 * What happens to requests in flight when the backend goes away (crash, restart):
 * - `repost`: posted again, from the same shadow buffers, to the next backend (block I/O: a read or a write
 *   done twice gives the same result; net: a frame may be sent twice, RX buffers are simply offered again).
 * - `fail`: completed to the guest at once with the device type's error (see `failRequest`).
 */
export type BackendLossPolicy = "repost" | "fail";

/**
 * Writes the device type's error into a guest chain's writable buffers (the chain is validated) and returns
 * the used.len to report. Default: writes nothing, len 0.
 */
export type FailRequest = (chain: DescriptorChain, guest: GuestMemory) => number;

export interface ShadowQueueOptions {
  /** Queue index (for messages and errors). */
  index: number;
  /** The guest's memory (the relay reads chains and copies buffers through it only). */
  guest: GuestMemory;
  ring: GuestRingConfig;
  /** Shadow memory (from ShadowMemory) and this queue's area in it. */
  shadow: GuestMemory;
  area: ShadowQueueArea;
  /** VIRTIO_RING_F_EVENT_IDX negotiated with the backend (for the shadow ring). */
  backendEventIdx: boolean;
  writeBack?: WriteBackPolicy;
  onBackendLoss?: BackendLossPolicy;
  failRequest?: FailRequest;
  /** Most descriptors per guest chain, indirect entries included (default: virtio-queue's). */
  maxChainLength?: number;
  /** Signals the backend's kick eventfd. */
  kickBackend: () => void;
  /** Raises the guest's used-buffer interrupt. */
  interruptGuest: () => void;
  /**
   * Runs after a batch of completions was copied back and published, before the guest is interrupted
   * (e.g. dropping cached grant mappings so the guest can end foreign access to its buffers at once).
   */
  afterCompletions?: () => void;
  logger?: Logger;
}

export interface ShadowQueueEvents {
  /** The queue stopped relaying for good: the device needs a reset (DEVICE_NEEDS_RESET). */
  broken: [error: ShadowQueueError];
}

/** Counters, for metrics and tests. */
export interface ShadowQueueStats {
  /** Guest chains posted to the shadow ring. */
  posted: number;
  /** Guest chains returned to the guest's used ring. */
  completed: number;
  /** Bytes copied guest -> shadow and shadow -> guest. */
  bytesIn: number;
  bytesOut: number;
  /** Times popping stopped because the pool or the shadow ring was full. */
  stalls: number;
  /** Requests posted again after a backend loss, and requests failed instead. */
  reposted: number;
  failed: number;
  /** Backend kicks and guest interrupts raised. */
  kicks: number;
  interrupts: number;
}

interface Segment {
  /** Shadow address. */
  readonly addr: number;
  readonly len: number;
}

interface InFlight {
  readonly chain: DescriptorChain;
  readonly extent: Extent;
  readonly readable: readonly Segment[];
  readonly writable: readonly Segment[];
  /** Guest writable descriptors, in chain order, matching `writable` 1:1 (unless coalesced). */
  readonly writableLength: number;
  readonly coalesced: boolean;
}

/** Segments of at least this size start on this boundary in the extent (sector-aligned data for O_DIRECT). */
const BIG_ALIGN = 512;
const SMALL_ALIGN = 16;

function roundUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

export class ShadowQueue extends EventEmitter<ShadowQueueEvents> implements Disposable {
  readonly index: number;
  readonly stats: ShadowQueueStats = { posted: 0, completed: 0, bytesIn: 0, bytesOut: 0, stalls: 0, reposted: 0, failed: 0, kicks: 0, interrupts: 0 };
  readonly #o: ShadowQueueOptions;
  readonly #log: Logger;
  readonly #guest: GuestMemory;
  /** The pool as one view of the shadow mapping (the hot path slices it rather than going through GuestMemory). */
  readonly #poolView: Uint8Array;
  readonly #poolBase: number;
  readonly #gq: Queue;
  #driver: ShadowRing<InFlight>;
  readonly #mapping: RegionMapping;
  readonly #mappingBase: number;
  readonly #pool: ExtentPool;
  readonly #writeBack: WriteBackPolicy;
  /** A popped guest chain waiting for pool or ring space (back-pressure). */
  #stalled: DescriptorChain | undefined;
  /** Every request the backend holds (the driver's tokens), for backend loss. */
  readonly #inFlight = new Set<InFlight>();
  #broken: ShadowQueueError | undefined;
  #closed = false;
  #backendDown = false;
  /** Re-entrancy guard: a completion can resume popping, which must not nest. */
  #busy = false;
  #kickScheduled = false;

  /**
   * @throws ShadowQueueError `InvalidConfig` if the guest ring is invalid (size, alignment, outside guest
   *   RAM) or the shadow area does not fit the shadow memory.
   */
  constructor(options: ShadowQueueOptions) {
    super();
    this.#o = options;
    this.index = options.index;
    this.#log = options.logger ?? noopLogger;
    this.#guest = options.guest;
    this.#writeBack = options.writeBack ?? "used-len";
    const r = options.ring;
    const gq = new Queue(options.guest, {
      indirect: r.indirect,
      ...(options.maxChainLength !== undefined ? { maxChainLength: options.maxChainLength } : {}),
    });
    try {
      gq.size = r.size;
      gq.descTable = r.desc;
      gq.availRing = r.avail;
      gq.usedRing = r.used;
      gq.eventIdx = r.eventIdx;
      gq.ready = true;
      gq.validate();
    } catch (e) {
      throw new ShadowQueueError("InvalidConfig", `queue ${this.index}: guest ring: ${(e as Error).message}`, { cause: e, queue: this.index });
    }
    this.#gq = gq;
    if (options.area.size !== r.size)
      throw new ShadowQueueError("InvalidConfig", `queue ${this.index}: shadow ring size ${options.area.size} differs from the guest's ${r.size}`, { queue: this.index });
    const region = options.shadow.findRegion(options.area.ringBase);
    const mapping = region?.mapping;
    if (!region || !mapping)
      throw new ShadowQueueError("InvalidConfig", `queue ${this.index}: the shadow ring must lie in a region mapped up front`, { queue: this.index });
    this.#mapping = mapping;
    this.#mappingBase = Number(region.guestBase.value);
    this.#driver = this.#newDriver();
    this.#pool = new ExtentPool(options.area.poolBytes, BIG_ALIGN);
    this.#poolBase = options.area.poolBase;
    try {
      this.#poolView = options.shadow.slice(options.area.poolBase, options.area.poolBytes);
    } catch (e) {
      throw new ShadowQueueError("InvalidConfig", `queue ${this.index}: the shadow pool must lie in one region mapped up front: ${(e as Error).message}`, { cause: e, queue: this.index });
    }
  }

  #newDriver(): ShadowRing<InFlight> {
    const a = this.#o.area;
    try {
      return new ShadowRing<InFlight>(this.#mapping, this.#mappingBase, a.ringBase, a.size, this.#o.backendEventIdx);
    } catch (e) {
      throw new ShadowQueueError("InvalidConfig", `queue ${this.index}: shadow ring: ${(e as Error).message}`, { cause: e, queue: this.index });
    }
  }

  /** Where the backend finds the shadow ring (shadow guest-physical addresses for SET_VRING_ADDR). */
  get shadowRing(): { size: number; desc: bigint; avail: bigint; used: bigint } {
    const d = this.#driver;
    return { size: d.size, desc: BigInt(d.descTable), avail: BigInt(d.availRing), used: BigInt(d.usedRing) };
  }

  /** Requests the backend holds now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** Pool bytes in use now. */
  get poolUsed(): number {
    return this.#pool.used;
  }

  get poolSize(): number {
    return this.#pool.size;
  }

  /** The error that stopped the queue, if any. */
  get broken(): ShadowQueueError | undefined {
    return this.#broken;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #fail(err: ShadowQueueError): void {
    if (this.#broken) return;
    this.#broken = err;
    this.#log.error("shadow queue stopped", { queue: this.index, kind: err.kind, error: err.message });
    try {
      this.emit("broken", err);
    } catch (e) {
      this.#log.error("broken listener threw", { queue: this.index, error: String(e) });
    }
  }

  #classify(e: unknown, side: "guest" | "backend"): ShadowQueueError {
    if (e instanceof ShadowQueueError) return e;
    const q = { cause: e, queue: this.index };
    if (e instanceof VirtqueueError) {
      if (side === "backend") return new ShadowQueueError("Backend", `queue ${this.index}: backend broke the shadow ring: ${e.message}`, q);
      if (e.kind === "GuestMemory") return new ShadowQueueError("GuestMemory", `queue ${this.index}: ${e.message}`, q);
      return new ShadowQueueError("GuestChain", `queue ${this.index}: ${e.message}`, q);
    }
    if (e instanceof GuestMemoryError) return new ShadowQueueError("GuestMemory", `queue ${this.index}: guest memory: ${e.message}`, q);
    throw e;
  }

  /**
   * A kick from a path that delivers every QueueNotify separately (a trapped MMIO write rather than an
   * eventfd, which coalesces): relays once per batch, after the current job's other kicks (a microtask).
   */
  scheduleGuestKick(): void {
    if (this.#kickScheduled) return;
    this.#kickScheduled = true;
    queueMicrotask(() => {
      this.#kickScheduled = false;
      this.onGuestKick();
    });
  }

  /** The guest kicked the queue (QueueNotify): move what it made available to the shadow ring. */
  onGuestKick(): void {
    if (this.#closed || this.#broken || this.#busy) return;
    this.#busy = true;
    try {
      this.#pump();
    } catch (e) {
      this.#fail(this.#classify(e, "guest"));
    } finally {
      this.#busy = false;
    }
  }

  #pump(): void {
    let posted = 0;
    for (;;) {
      for (;;) {
        const chain = this.#stalled ?? this.#gq.pop();
        if (!chain) break;
        this.#stalled = undefined;
        const r = this.#post(chain);
        if (r === "full") {
          this.#stalled = chain;
          this.stats.stalls++;
          break;
        }
        if (r === "posted") posted++;
      }
      // Stalled: completions resume us. Otherwise ask for kicks again and look once more (the guest may
      // have added chains before it saw the request: virtio 1.2 2.7.10).
      if (this.#stalled || !this.#gq.enableNotification()) break;
    }
    if (posted > 0 && !this.#backendDown) {
      if (this.#driver.needsNotification()) {
        this.stats.kicks++;
        this.#o.kickBackend();
      }
    } else this.#driver.publish();
  }

  /** Lays the chain's buffers out in one extent and posts it; "full" if it must wait. */
  #post(chain: DescriptorChain): "posted" | "full" | "done" {
    const descs = chain.descriptors;
    // Sector-sized buffers first, each on a 512-byte boundary; small ones (headers, status bytes) after.
    let big = 0;
    let small = 0;
    let writableLength = 0;
    let nonEmpty = 0;
    for (const d of descs) {
      if (d.len === 0) continue;
      nonEmpty++;
      if (d.len >= BIG_ALIGN) big += roundUp(d.len, BIG_ALIGN);
      else small += roundUp(d.len, SMALL_ALIGN);
      if (d.isWriteOnly) writableLength += d.len;
    }
    if (nonEmpty === 0) {
      // Nothing for a device to read or write: complete it here.
      this.#gq.addUsed(chain.head, 0);
      this.#afterUsed(1);
      return "done";
    }
    const need = big + small;
    if (need > this.#pool.size)
      throw new ShadowQueueError("ChainTooLarge", `queue ${this.index}: chain ${chain.head} needs ${need} bytes, more than the ${this.#pool.size}-byte shadow pool`, { queue: this.index });
    // A chain longer than the shadow ring (possible with guest indirect tables) goes as one readable and one
    // writable buffer: the layout changes, but it is the only way it can be posted at all.
    const coalesce = nonEmpty > this.#driver.size;
    const wantDescs = coalesce ? 2 : nonEmpty;
    if (this.#driver.numFree < wantDescs) return "full";
    const extent = this.#pool.alloc(need);
    if (!extent) return "full";
    const base = this.#o.area.poolBase + extent.offset;
    let bigAt = base;
    let smallAt = base + big;
    const readable: Segment[] = [];
    const writable: Segment[] = [];
    try {
      for (const d of descs) {
        if (d.len === 0) continue;
        let addr: number;
        if (coalesce) {
          // contiguous per direction: readable first, then writable
          addr = bigAt;
          bigAt += d.len;
        } else if (d.len >= BIG_ALIGN) {
          addr = bigAt;
          bigAt += roundUp(d.len, BIG_ALIGN);
        } else {
          addr = smallAt;
          smallAt += roundUp(d.len, SMALL_ALIGN);
        }
        if (d.isWriteOnly) writable.push({ addr, len: d.len });
        else {
          // The one copy in: guest -> the shadow mapping directly.
          const off = addr - this.#poolBase;
          this.#guest.readInto(d.addr < MAX_SAFE ? Number(d.addr) : d.addr, this.#poolView.subarray(off, off + d.len));
          this.stats.bytesIn += d.len;
          readable.push({ addr, len: d.len });
        }
      }
    } catch (e) {
      this.#pool.free(extent);
      throw e;
    }
    const req: InFlight = { chain, extent, readable, writable, writableLength, coalesced: coalesce };
    this.#add(req);
    this.#inFlight.add(req);
    this.stats.posted++;
    return "posted";
  }

  #add(req: InFlight): void {
    let r: readonly ShadowBuffer[] = req.readable;
    let w: readonly ShadowBuffer[] = req.writable;
    if (req.coalesced) {
      const len = (s: readonly Segment[]) => s.reduce((n, x) => n + x.len, 0);
      r = req.readable.length ? [{ addr: req.readable[0]!.addr, len: len(req.readable) }] : [];
      w = req.writable.length ? [{ addr: req.writable[0]!.addr, len: len(req.writable) }] : [];
    }
    this.#driver.add(r, w, req);
  }

  /** The backend signalled its call eventfd: return what it completed to the guest. */
  onBackendCall(): void {
    if (this.#closed || this.#broken) return;
    let n = 0;
    try {
      for (;;) {
        for (;;) {
          const u = this.#driver.getUsed();
          if (!u) break;
          this.#complete(u.token, u.len);
          n++;
        }
        if (!this.#driver.enableInterrupts()) break;
      }
    } catch (e) {
      if (n > 0) this.#safeAfterUsed(n);
      this.#fail(this.#classify(e, e instanceof VirtqueueError ? "backend" : "guest"));
      return;
    }
    if (n === 0) return;
    this.#safeAfterUsed(n);
    // Space was freed: resume popping if we stopped, or if the guest added more meanwhile.
    if (!this.#backendDown) this.onGuestKick();
  }

  #safeAfterUsed(n: number): void {
    try {
      this.#afterUsed(n);
    } catch (e) {
      this.#fail(this.#classify(e, "guest"));
    }
  }

  /** Publishes used entries and interrupts the guest if it wants one (EVENT_IDX / NO_INTERRUPT). */
  #afterUsed(n: number): void {
    if (n === 0) return;
    this.#gq.publishUsed();
    this.#o.afterCompletions?.();
    if (this.#gq.needsNotification()) {
      this.stats.interrupts++;
      this.#o.interruptGuest();
    }
  }

  /** Copies the device-written bytes back and adds the guest used entry (published by #afterUsed). */
  #complete(req: InFlight, len: number): void {
    this.#inFlight.delete(req);
    try {
      const total = this.#writeBack === "whole" ? req.writableLength : Math.min(len, req.writableLength);
      this.#copyBack(req, total);
      this.#gq.addUsed(req.chain.head, Math.min(len, req.writableLength), { publish: false });
      this.stats.completed++;
    } finally {
      this.#pool.free(req.extent);
    }
  }

  #copyBack(req: InFlight, total: number): void {
    let left = total;
    let seg = 0;
    let segOff = 0;
    const segs = req.writable;
    for (const d of req.chain.descriptors) {
      if (left === 0) break;
      if (!d.isWriteOnly || d.len === 0) continue;
      let done = 0;
      while (done < d.len && left > 0) {
        const s = segs[seg]!;
        const n = Math.min(d.len - done, s.len - segOff, left);
        const off = s.addr + segOff - this.#poolBase;
        this.#guest.write(d.addr < MAX_SAFE ? Number(d.addr) + done : d.addr + BigInt(done), this.#poolView.subarray(off, off + n));
        done += n;
        left -= n;
        segOff += n;
        if (segOff === s.len) {
          seg++;
          segOff = 0;
        }
      }
      this.stats.bytesOut += done;
    }
  }

  /**
   * The backend connection is gone (crash or restart). Completions it published are harvested first;
   * the rest are re-posted on a fresh shadow ring (index 0) or failed to the guest, per `onBackendLoss`.
   * Until `backendRestored()`, new guest requests are posted but the backend is not kicked.
   */
  backendLost(): void {
    if (this.#closed || this.#broken) return;
    this.#backendDown = true;
    const n = this.#resetShadowRing(this.#o.onBackendLoss ?? "repost");
    this.#log.info("backend lost", { queue: this.index, inFlight: n, policy: this.#o.onBackendLoss ?? "repost" });
  }

  /**
   * A backend connection is about to be given the shadow ring (vhost-user front-ends: from the
   * `restoreVringBase` hook, i.e. at SET_VRING_BASE of every replay attempt). A half-finished earlier
   * attempt may have let a backend start on the ring, so it is built afresh once more: what that backend
   * published is harvested, everything still in flight is re-posted. Returns the vring base to send (0).
   */
  prepareReplay(): number {
    if (this.#closed || this.#broken) return 0;
    this.#backendDown = true;
    this.#resetShadowRing("repost");
    return 0;
  }

  /** Harvests, builds a fresh ring at index 0 and re-posts or fails what is in flight; returns that count. */
  #resetShadowRing(policy: BackendLossPolicy): number {
    this.onBackendCall();
    if (this.#broken) return 0;
    const pending = [...this.#inFlight];
    try {
      this.#driver = this.#newDriver();
      if (policy === "repost") {
        for (const req of pending) this.#add(req);
        this.#driver.publish();
        this.stats.reposted += pending.length;
      } else {
        let n = 0;
        for (const req of pending) {
          this.#inFlight.delete(req);
          this.#pool.free(req.extent);
          const len = this.#o.failRequest?.(req.chain, this.#guest) ?? 0;
          this.#gq.addUsed(req.chain.head, Math.min(len, req.writableLength), { publish: false });
          n++;
        }
        this.stats.failed += n;
        this.#afterUsed(n);
      }
    } catch (e) {
      this.#fail(this.#classify(e, "guest"));
    }
    return pending.length;
  }

  /** A backend serves the shadow ring again (after the front-end replayed it): kick it for what waits. */
  backendRestored(): void {
    if (this.#closed || this.#broken) return;
    this.#backendDown = false;
    this.onGuestKick();
    if (this.#inFlight.size > 0) {
      this.stats.kicks++;
      this.#o.kickBackend();
    }
  }

  /** Stops relaying; the shadow memory stays its owner's. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#inFlight.clear();
    this.#stalled = undefined;
    this.#pool.reset();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER) - 0x1_0000_0000n;
