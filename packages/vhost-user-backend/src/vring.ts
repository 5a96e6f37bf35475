// One vring of a connection: what the front-end told us about it (size, addresses, base, kick/call/err fds,
// enabled) and, while it runs, a virtio-queue device-side `Queue` and the kick watcher. vhost-user.rst
// "Starting and stopping rings": a ring starts when it gets a kick fd; with VHOST_USER_F_PROTOCOL_FEATURES it
// also needs SET_VRING_ENABLE 1 to process; GET_VRING_BASE stops it.
//
// Processing (rust-vmm vhost-user-backend's handle_event with EVENT_IDX): drain the kick eventfd, then
// loop { disable notifications; run the device } until enable_notification finds nothing new, then signal
// the call eventfd if the driver asked for it (used_event with EVENT_IDX, NO_INTERRUPT otherwise).
import { EventFd, FdWatcher, PollEvents, type Logger } from "@xen-vhost/vmm-sys-util";
import type { GuestMemory } from "@xen-vhost/vm-memory";
import { Queue, VirtqueueError, type DescriptorChain } from "@xen-vhost/virtio-queue";
import { walkChain } from "./chain-walk.js";
import type { DeviceVring, VhostUserDevice } from "./device.js";
import { BackendError } from "./error.js";
import type { InflightQueue } from "./inflight.js";
import type { MemoryTable } from "./memory.js";

export interface VringAddresses {
  /** Front-end virtual addresses (as SET_VRING_ADDR carries them). */
  desc: bigint;
  used: bigint;
  avail: bigint;
  flags: number;
}

export class Vring implements DeviceVring {
  readonly index: number;
  size = 0;
  addr: VringAddresses | undefined;
  base = 0;
  enabled = false;
  kick: EventFd | undefined;
  call: EventFd | undefined;
  err: EventFd | undefined;
  #queue: Queue | undefined;
  #watcher: FdWatcher | undefined;
  #memory: GuestMemory | undefined;
  readonly #device: VhostUserDevice;
  readonly #log: Logger;
  #running = false;
  #again = false;
  #triggerPending = false;
  /** Chains popped during the current handler run. */
  #popped = 0;
  /** The ring itself is broken (avail idx jumped): stop until the front-end restarts it. */
  #broken = false;
  /**
   * The queue's inflight region (INFLIGHT_SHMFD), as the handler last set it; it takes effect when the ring
   * starts, so every chain the ring hands out while tracked was recorded when fetched.
   */
  inflight: InflightQueue | undefined;
  #tracking: InflightQueue | undefined;
  /** Inflight heads of a previous back-end or connection, handed out before the avail ring (fetch order). */
  #resubmit: number[] = [];
  #descTable = 0n;
  #indirect = false;

  constructor(index: number, device: VhostUserDevice, log: Logger) {
    this.index = index;
    this.#device = device;
    this.#log = log;
  }

  /** Started: the front-end sent the kick and the queue is built over the memory. */
  get started(): boolean {
    return this.#queue !== undefined;
  }

  /** Processing: started and enabled. */
  get ready(): boolean {
    return this.#queue !== undefined && this.enabled && !this.#broken;
  }

  get memory(): GuestMemory {
    if (!this.#memory) throw new BackendError("InvalidVring", `vring ${this.index} is not running`);
    return this.#memory;
  }

  /** The device-side queue while running. */
  get queue(): Queue | undefined {
    return this.#queue;
  }

  /**
   * Builds the queue over `table` (vring addresses translated from front-end VAs) and starts watching the
   * kick fd. @throws BackendError InvalidVring / AddressTranslation
   */
  start(table: MemoryTable, opts: { eventIdx: boolean; indirect: boolean; nextUsed?: number; remap?: boolean }): void {
    if (this.#queue) return;
    if (!this.addr) throw new BackendError("InvalidVring", `vring ${this.index}: started before SET_VRING_ADDR`);
    if (this.size === 0) throw new BackendError("InvalidVring", `vring ${this.index}: started before SET_VRING_NUM`);
    const s = this.size;
    const q = new Queue(table.memory, { maxSize: this.#device.maxQueueSize, indirect: opts.indirect });
    try {
      q.size = s;
      q.descTable = table.vaToGpa(this.addr.desc, 16 * s);
      q.availRing = table.vaToGpa(this.addr.avail, 6 + 2 * s);
      q.usedRing = table.vaToGpa(this.addr.used, 6 + 8 * s);
      q.eventIdx = opts.eventIdx;
      q.nextAvail = this.base;
      // The used index continues where the ring was (the driver compares it with its own last_used).
      q.nextUsed = opts.nextUsed ?? this.base;
      q.ready = true;
      q.validate();
      if (!opts.remap) this.#recoverInflight(q);
    } catch (err) {
      if (err instanceof BackendError) throw err;
      throw new BackendError("InvalidVring", `vring ${this.index}: ${(err as Error).message}`, { cause: err });
    }
    this.#descTable = q.descTable.value;
    this.#indirect = opts.indirect;
    this.#queue = q;
    this.#memory = table.memory;
    this.#broken = false;
    this.#watchKick();
    if (this.enabled) this.trigger();
  }

  /**
   * vhost-user.rst "Inflight I/O tracking", when reconnecting: the used ring's idx is where the driver is;
   * the chains still marked in flight are resubmitted first, and the avail ring continues after them
   * (last_avail_idx = used idx + in flight, as libvhost-user's vu_check_queue_inflights), whatever base the
   * front-end remembered.
   */
  #recoverInflight(q: Queue): void {
    this.#tracking = this.inflight;
    this.#resubmit = [];
    const inf = this.#tracking;
    if (!inf) return;
    const used = q.usedIdx();
    const heads = inf.recover(q.size, used);
    const nextAvail = (used + heads.length) & 0xffff;
    if (nextAvail !== q.nextAvail || used !== q.nextUsed)
      this.#log.info(`vring ${this.index}: position taken from the inflight area`, { base: q.nextAvail, nextAvail, usedIdx: used, inflight: heads.length });
    q.nextUsed = used;
    q.nextAvail = nextAvail;
    this.#resubmit = heads;
    if (heads.length > 0) this.#log.info(`vring ${this.index}: resubmitting ${heads.length} inflight request(s)`, { heads });
  }

  #watchKick(): void {
    this.#watcher?.close();
    this.#watcher = undefined;
    if (!this.#queue || !this.kick) return;
    this.#watcher = new FdWatcher(this.kick.fd, () => this.#onKick(), {
      onError: (err) => this.#log.error(`vring ${this.index}: kick handler failed`, { err: String(err) }),
    });
    this.#watcher.start(PollEvents.READABLE);
  }

  /** Rebuilds the queue over new memory (SET_MEM_TABLE / ADD_MEM_REG while running), keeping its indices. */
  remap(table: MemoryTable, opts: { eventIdx: boolean; indirect: boolean }): void {
    const q = this.#queue;
    if (!q) return;
    this.base = q.nextAvail;
    const nextUsed = q.nextUsed;
    this.#stopQueue();
    this.start(table, { ...opts, nextUsed, remap: true });
  }

  #stopQueue(): void {
    this.#watcher?.close();
    this.#watcher = undefined;
    this.#queue = undefined;
    this.#memory = undefined;
  }

  /** Stopped for good (not a remap): chains not resubmitted yet stay marked in the inflight area. */
  #forgetInflight(): void {
    this.#resubmit = [];
    this.#tracking = undefined;
  }

  /** GET_VRING_BASE: stops the ring and returns the next avail index. */
  stop(): number {
    const q = this.#queue;
    const base = q ? q.nextAvail : this.base;
    const wasStarted = q !== undefined;
    this.#stopQueue();
    this.#forgetInflight();
    this.kick?.close();
    this.kick = undefined;
    this.base = base;
    this.enabled = false;
    if (wasStarted) this.#device.queueStopped?.(this.index);
    return base;
  }

  /** SET_VRING_KICK; undefined = the no-fd bit (the front-end polls or never kicks). */
  setKick(fd: number | undefined): void {
    this.kick?.close();
    this.kick = fd === undefined ? undefined : EventFd.fromFd(fd);
    this.#watchKick();
  }

  setCall(fd: number | undefined): void {
    this.call?.close();
    this.call = fd === undefined ? undefined : EventFd.fromFd(fd);
  }

  setErr(fd: number | undefined): void {
    this.err?.close();
    this.err = fd === undefined ? undefined : EventFd.fromFd(fd);
  }

  #onKick(): void {
    try {
      this.kick?.read();
    } catch {
      // the read only resets the counter; the kick happened either way
    }
    if (this.ready) this.#process();
  }

  /** Runs the device on this queue soon (on the event loop, never re-entrantly). */
  trigger(): void {
    if (this.#triggerPending) return;
    this.#triggerPending = true;
    setImmediate(() => {
      this.#triggerPending = false;
      if (this.ready) this.#process();
    });
  }

  #process(): void {
    const q = this.#queue;
    if (!q) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    try {
      // Loop while the device makes progress or the driver published while it ran: a device that leaves
      // chains in the ring on purpose (a rate limit, an event queue waiting for interrupts) must not spin
      // here (it calls trigger() when ready), but a chain published after the device's last look, while
      // notifications were off, came without a kick: nobody else will ever look at it.
      let again: boolean;
      do {
        this.#again = false;
        this.#popped = 0;
        q.disableNotification();
        const seen = q.availIdx();
        this.#device.handleQueue(this);
        if (this.#queue !== q || this.#broken) return;
        const progress = this.#popped > 0;
        again = q.enableNotification() && (progress || q.availIdx() !== seen);
      } while (again || this.#again);
    } catch (err) {
      this.#fault(err);
    } finally {
      this.#running = false;
    }
    this.signalUsedQueue();
  }

  /** A ring-level failure (not one chain): tell the front-end on the err eventfd and stop processing. */
  #fault(err: unknown): void {
    this.#broken = true;
    this.#log.error(`vring ${this.index}: ${this.#device.name} stopped processing`, { err: String(err) });
    try {
      this.err?.write(1);
    } catch {
      // the front-end closed its end; nothing else to tell it
    }
  }

  // ------------------------------------------------------------------ DeviceVring

  pending(): number {
    const q = this.#queue;
    if (!q || this.#broken) return 0;
    return this.#resubmit.length + ((q.availIdx() - q.nextAvail) & 0xffff);
  }

  pop(): DescriptorChain | null {
    const q = this.#queue;
    if (!q || this.#broken) return null;
    const inf = this.#tracking;
    for (;;) {
      try {
        const resubmitted = this.#resubmit.shift();
        // Resubmitted chains are still marked in flight (with their old counters): nothing to record.
        const c = resubmitted !== undefined
          ? walkChain(q.memory, this.#descTable, q.size, resubmitted, { indirect: this.#indirect })
          : (q.pop() ?? null);
        if (c) {
          this.#popped++;
          if (inf && resubmitted === undefined) inf.fetched(c.head);
        }
        return c;
      } catch (err) {
        if (err instanceof VirtqueueError && err.head !== undefined) {
          // One malformed chain: give it back empty so the driver can reclaim it, and go on.
          this.#log.warn(`vring ${this.index}: malformed chain returned unused`, { head: err.head, kind: err.kind, error: err.message });
          this.#putUsed(q, err.head, 0);
          continue;
        }
        throw err;
      }
    }
  }

  addUsed(head: number, len: number): void {
    const q = this.#queue;
    if (!q) throw new BackendError("InvalidVring", `vring ${this.index} is not running`);
    const inf = this.#tracking;
    // With tracking on, every chain the device got is marked: a second completion is a device bug that
    // would hand the driver a buffer it may already have reused.
    if (inf && Number.isInteger(head) && head >= 0 && head < q.size && !inf.isInflight(head))
      throw new BackendError("Device", `vring ${this.index}: chain ${head} is not in flight (completed twice?)`);
    this.#putUsed(q, head, len);
  }

  /** The used element, with the inflight bookkeeping around it in the spec's order. */
  #putUsed(q: Queue, head: number, len: number): void {
    const inf = this.#tracking;
    if (!inf || !Number.isInteger(head) || head < 0 || head >= q.size) {
      q.addUsed(head, len);
      return;
    }
    inf.beforeUsed(head);
    q.addUsed(head, len);
    inf.afterUsed(head, q.nextUsed);
  }

  signalUsedQueue(): void {
    const q = this.#queue;
    if (!q || !this.call) return;
    try {
      if (q.needsNotification()) this.call.write(1);
    } catch (err) {
      this.#fault(err);
    }
  }

  /** Closes fds and watchers (disconnect, reset). */
  close(): void {
    const wasStarted = this.#queue !== undefined;
    this.#stopQueue();
    this.#forgetInflight();
    this.kick?.close();
    this.call?.close();
    this.err?.close();
    this.kick = this.call = this.err = undefined;
    this.enabled = false;
    this.size = 0;
    this.addr = undefined;
    this.base = 0;
    if (wasStarted) this.#device.queueStopped?.(this.index);
  }
}
