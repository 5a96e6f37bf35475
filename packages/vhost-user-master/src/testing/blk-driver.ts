// A virtio-blk driver for tests and benchmarks: keeps up to `depth` requests in flight on one ring, each in its
// own slot of guest memory (struct virtio_blk_outhdr, data, status byte), and reports every completion with its
// status, the data read and its latency. Completions are found by checking the used ring between event-loop
// turns, or through a DriverRing ("interrupt": the call eventfd; "poll": spinning on the used ring with the
// back-end's calls turned off, as DPDK's virtio-user PMD drives a busy-polling back-end).
import type { EventFd } from "@xen-vhost/vmm-sys-util";
import type { GuestMemory } from "@xen-vhost/vm-memory";
import type { ChainSpec, DriverQueue } from "@xen-vhost/virtio-queue";
import { DriverRing, type DriverRingStats } from "../driver-ring.js";

/** virtio 1.2 5.2.6: VIRTIO_BLK_T_IN / OUT / FLUSH / GET_ID. */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;

export interface BlkRequest {
  type: number;
  /** In 512-byte sectors. */
  sector: bigint | number;
  /** Bytes to read (IN) or the length of `data` (OUT). */
  len: number;
  /** The payload of a write. */
  data?: Uint8Array;
}

export interface BlkCompletion {
  status: number;
  /** used.len as the back-end reported it. */
  usedLen: number;
  /** What an IN request read (a copy). */
  data?: Uint8Array;
  /** Submit (kick) to harvest, ms. */
  latencyMs: number;
}

export interface BlkRunOptions {
  /** Requests in flight at once (default 1). */
  depth?: number;
  /**
   * How to wait for completions: "yield" (setImmediate between checks of the used ring, lets other work run;
   * default), or one of DriverRing's completion modes, which need the call eventfd given to the constructor:
   * "interrupt" (sleep on the call eventfd, as a device model would) or "poll" (ask the back-end not to
   * signal and poll the used ring for up to `spinUs`, then fall back to the call eventfd). "event" and
   * "spin" are the older names of "interrupt" and "poll".
   */
  wait?: "yield" | "interrupt" | "poll" | "event" | "spin";
  /** Poll mode's spin budget before sleeping on the call eventfd, us (default 200). */
  spinUs?: number;
  /** Give up after this long without a completion (default 10 s). */
  stallMs?: number;
  /** Copy what IN requests read into `BlkCompletion.data` (default true; a benchmark that ignores it saves a 4 KiB copy). */
  copyData?: boolean;
  /** Receives the DriverRing's counters after the run (kicks, suppressed kicks, sleeps, call signals). */
  stats?: (stats: DriverRingStats) => void;
}

/** One slot's buffers and the three chain shapes, built once: posting a request allocates nothing. */
interface Slot {
  readonly addr: number;
  /** `{ token: slot index }`, the add options of every request in this slot. */
  readonly add: { readonly token: number };
  readonly data: { addr: number; len: number };
  readonly read: ChainSpec;
  readonly write: ChainSpec;
  readonly bare: ChainSpec;
  i: number;
  req: BlkRequest | undefined;
  t0: number;
}

/** One slot per in-flight request: header, status and data live in `slotSize` bytes from `base`. */
export class BlkDriver {
  readonly #mem: GuestMemory;
  readonly #q: DriverQueue<number>;
  readonly #kick: EventFd;
  readonly #call: EventFd | undefined;
  readonly #base: number;
  readonly #slotSize: number;
  readonly #maxLen: number;
  readonly #hdr = new Uint8Array(16);
  readonly #hdrView = new DataView(this.#hdr.buffer);
  readonly #slots: Slot[] = [];

  /** `maxLen`: the largest data buffer (default 4096); slots are 4 KiB + maxLen, page aligned. */
  constructor(mem: GuestMemory, queue: DriverQueue<number>, kick: EventFd, options: { base: number; maxLen?: number; call?: EventFd }) {
    this.#mem = mem;
    this.#q = queue;
    this.#kick = kick;
    this.#call = options.call;
    this.#base = options.base;
    this.#maxLen = options.maxLen ?? 4096;
    this.#slotSize = 4096 + Math.ceil(this.#maxLen / 4096) * 4096;
  }

  /** Guest memory one slot needs; `depth` slots need depth times this from `base`. */
  get slotSize(): number {
    return this.#slotSize;
  }

  #slot(s: number): Slot {
    for (let k = this.#slots.length; k <= s; k++) {
      const addr = this.#base + k * this.#slotSize;
      const hdr = { addr, len: 16 };
      const status = { addr: addr + 16, len: 1 };
      const data = { addr: addr + 4096, len: 0 };
      this.#slots.push({
        addr, data, i: 0, req: undefined, t0: 0, add: { token: k },
        read: { readable: [hdr], writable: [data, status] },
        write: { readable: [hdr, data], writable: [status] },
        bare: { readable: [hdr], writable: [status] },
      });
    }
    return this.#slots[s]!;
  }

  /**
   * Runs `count` requests made by `make(i)` with up to `depth` in flight, calling `done(i, completion)` for each
   * (in completion order). Rejects if a request stalls or `done` throws.
   */
  async run(count: number, make: (i: number) => BlkRequest, done: (i: number, c: BlkCompletion) => void, options: BlkRunOptions = {}): Promise<void> {
    const depth = options.depth ?? 1;
    if (depth < 1 || depth * 3 > this.#q.size) throw new RangeError(`depth ${depth} needs ${depth * 3} descriptors, the ring has ${this.#q.size}`);
    const wait = options.wait ?? "yield";
    const stallMs = options.stallMs ?? 10_000;
    if (wait === "yield") {
      await this.#loop(count, make, done, depth, stallMs, options.copyData ?? true, undefined);
      return;
    }
    const call = this.#call;
    if (!call) throw new TypeError(`wait "${wait}" needs the call eventfd (constructor option call)`);
    const ring = new DriverRing(this.#q, this.#kick, call, {
      completion: wait === "poll" || wait === "spin" ? "poll" : "interrupt",
      spinUs: options.spinUs ?? 200,
    });
    // one timer for the whole run (a timer per wait costs more than a fast request): wakes a sleeper now and
    // then so a lost signal or a stall is noticed
    const stallTimer = setInterval(() => ring.wake(), 100);
    try {
      await this.#loop(count, make, done, depth, stallMs, options.copyData ?? true, ring);
    } finally {
      clearInterval(stallTimer);
      ring.close();
      // leave the queue as the next run expects it (interrupts on)
      this.#q.enableInterrupts();
      options.stats?.({ ...ring.stats });
    }
  }

  async #loop(count: number, make: (i: number) => BlkRequest, done: (i: number, c: BlkCompletion) => void, depth: number, stallMs: number,
    copyData: boolean, ring: DriverRing<number> | undefined): Promise<void> {
    for (let s = 0; s < depth; s++) this.#slot(s);
    const free: number[] = [];
    for (let s = depth - 1; s >= 0; s--) free.push(s);
    const used = { id: 0, len: 0, token: undefined as number | undefined };
    const q = this.#q;
    let next = 0;
    let finished = 0;
    // when the current run of empty harvests began (0: the last harvest found something); read the clock only then
    let stalledSince = 0;
    while (finished < count) {
      let posted = 0;
      while (next < count && free.length > 0) {
        const slot = this.#slots[free.pop()!]!;
        const req = make(next);
        slot.i = next;
        slot.req = req;
        this.#post(slot, req);
        slot.t0 = performance.now();
        next++;
        posted++;
      }
      if (posted > 0) {
        if (ring) ring.notify();
        else if (q.needsNotification()) this.#kick.write(1);
      }
      if (ring) ring.spin();
      let harvested = 0;
      while (q.getUsedInto(used)) {
        const slot = this.#slots[used.token!]!;
        const req = slot.req!;
        slot.req = undefined;
        const c: BlkCompletion = { status: this.#mem.load8(slot.addr + 16), usedLen: used.len, latencyMs: performance.now() - slot.t0 };
        if (copyData && (req.type === VIRTIO_BLK_T_IN || req.type === VIRTIO_BLK_T_GET_ID)) c.data = this.#mem.read(slot.addr + 4096, req.len);
        free.push(used.token!);
        finished++;
        harvested++;
        done(slot.i, c);
      }
      if (harvested > 0) stalledSince = 0;
      else {
        const now = performance.now();
        if (stalledSince === 0) stalledSince = now;
        else if (now - stalledSince > stallMs) throw new Error(`no completion for ${stallMs} ms: ${finished} of ${count} done, ${depth - free.length} in flight`);
        // the eventfd counter persists: a completion between the harvest above and this wait still wakes it
        if (ring) await ring.sleep();
        else await new Promise((r) => setImmediate(r));
      }
    }
  }

  #post(slot: Slot, req: BlkRequest): void {
    if (req.len > this.#maxLen) throw new RangeError(`request of ${req.len} bytes exceeds the slot's ${this.#maxLen}`);
    const addr = slot.addr;
    this.#hdrView.setUint32(0, req.type, true);
    const sector = req.sector;
    if (typeof sector === "number") {
      this.#hdrView.setUint32(8, sector % 0x1_0000_0000, true);
      this.#hdrView.setUint32(12, Math.floor(sector / 0x1_0000_0000), true);
    } else this.#hdrView.setBigUint64(8, sector, true);
    this.#mem.write(addr, this.#hdr);
    this.#mem.store8(addr + 16, 0xff);
    slot.data.len = req.len;
    if (req.type === VIRTIO_BLK_T_OUT) {
      if (!req.data || req.data.length !== req.len) throw new RangeError("a write needs data of len bytes");
      this.#mem.write(addr + 4096, req.data);
      this.#q.add(slot.write, slot.add);
    } else if (req.len > 0) {
      this.#q.add(slot.read, slot.add);
    } else {
      this.#q.add(slot.bare, slot.add);
    }
  }
}
