// A virtio-blk driver for tests and benchmarks: keeps up to `depth` requests in flight on one ring, each in its
// own slot of guest memory (struct virtio_blk_outhdr, data, status byte), and reports every completion with its
// status, the data read and its latency. Completions are found by polling the used ring (busy-polling back-ends
// such as DPDK do not need to signal the call eventfd for that).
import { FdWatcher, PollEvents, type EventFd } from "@xen-vhost/vmm-sys-util";
import type { GuestMemory } from "@xen-vhost/vm-memory";
import type { DriverQueue } from "@xen-vhost/virtio-queue";

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
   * How to wait for completions: "yield" (setImmediate between polls, lets other work run; default), "event"
   * (sleep on the call eventfd given to the constructor, as a device model would) or "spin" (poll the used ring
   * in a tight loop for up to 200 us, for busy-polling back-ends where a wake-up costs more than the request;
   * then sleep on the call eventfd if there is one, so a descheduled back-end gets the CPU, else yield).
   */
  wait?: "yield" | "spin" | "event";
  /** Give up after this long without a completion (default 10 s). */
  stallMs?: number;
  /** Copy what IN requests read into `BlkCompletion.data` (default true; a benchmark that ignores it saves a 4 KiB copy). */
  copyData?: boolean;
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

  /**
   * Runs `count` requests made by `make(i)` with up to `depth` in flight, calling `done(i, completion)` for each
   * (in completion order). Rejects if a request stalls or `done` throws.
   */
  async run(count: number, make: (i: number) => BlkRequest, done: (i: number, c: BlkCompletion) => void, options: BlkRunOptions = {}): Promise<void> {
    const depth = options.depth ?? 1;
    if (depth < 1 || depth * 3 > this.#q.size) throw new RangeError(`depth ${depth} needs ${depth * 3} descriptors, the ring has ${this.#q.size}`);
    const spin = options.wait === "spin";
    const stallMs = options.stallMs ?? 10_000;
    let wake: (() => void) | undefined;
    let watcher: FdWatcher | undefined;
    const call = this.#call;
    if (options.wait === "event" && !call) throw new TypeError('wait "event" needs the call eventfd (constructor option call)');
    let stallTimer: NodeJS.Timeout | undefined;
    if ((options.wait === "event" || spin) && call) {
      watcher = new FdWatcher(call.fd, () => {
        call.read();
        wake?.();
      }).start(PollEvents.READABLE);
      // one timer for the whole run (a timer per wait costs more than a fast request): wakes a sleeper now and
      // then so a lost signal or a stall is noticed
      stallTimer = setInterval(() => wake?.(), 100);
    }
    try {
      await this.#loop(count, make, done, depth, spin, stallMs, options.copyData ?? true, watcher ? () => new Promise<void>((r) => (wake = r)) : undefined);
    } finally {
      clearInterval(stallTimer);
      watcher?.close();
    }
  }

  async #loop(count: number, make: (i: number) => BlkRequest, done: (i: number, c: BlkCompletion) => void, depth: number, spin: boolean, stallMs: number,
    copyData: boolean, sleep: (() => Promise<void>) | undefined): Promise<void> {
    const free = Array.from({ length: depth }, (_, s) => depth - 1 - s);
    const slotOf = new Map<number, { i: number; req: BlkRequest; t0: number }>();
    let next = 0;
    let finished = 0;
    let lastProgress = performance.now();
    while (finished < count) {
      let posted = 0;
      while (next < count && free.length > 0) {
        const slot = free.pop()!;
        const req = make(next);
        this.#post(slot, req);
        slotOf.set(slot, { i: next, req, t0: performance.now() });
        next++;
        posted++;
      }
      if (posted > 0 && this.#q.needsNotification()) this.#kick.write(1);
      let harvested = 0;
      const spinUntil = spin ? performance.now() + 0.2 : 0;
      for (;;) {
        let u;
        while ((u = this.#q.getUsed()) !== undefined) {
          const slot = u.token!;
          const rec = slotOf.get(slot)!;
          slotOf.delete(slot);
          const addr = this.#base + slot * this.#slotSize;
          const c: BlkCompletion = { status: this.#mem.read(addr + 16, 1)[0]!, usedLen: u.len, latencyMs: performance.now() - rec.t0 };
          if (copyData && (rec.req.type === VIRTIO_BLK_T_IN || rec.req.type === VIRTIO_BLK_T_GET_ID)) c.data = this.#mem.read(addr + 4096, rec.req.len);
          free.push(slot);
          finished++;
          harvested++;
          done(rec.i, c);
        }
        if (harvested > 0 || !spin || performance.now() > spinUntil) break;
      }
      if (harvested > 0) lastProgress = performance.now();
      else {
        if (performance.now() - lastProgress > stallMs) throw new Error(`no completion for ${stallMs} ms: ${finished} of ${count} done, ${slotOf.size} in flight`);
        if (sleep) {
          // the eventfd counter persists: a completion between the harvest above and this wait still wakes it
          await sleep();
        } else await new Promise((r) => setImmediate(r));
      }
    }
  }

  #post(slot: number, req: BlkRequest): void {
    if (req.len > this.#maxLen) throw new RangeError(`request of ${req.len} bytes exceeds the slot's ${this.#maxLen}`);
    const addr = this.#base + slot * this.#slotSize;
    this.#hdrView.setUint32(0, req.type, true);
    this.#hdrView.setBigUint64(8, BigInt(req.sector), true);
    this.#mem.write(addr, this.#hdr);
    this.#mem.write(addr + 16, Uint8Array.of(0xff));
    const hdr = { addr, len: 16 };
    const status = { addr: addr + 16, len: 1 };
    const data = { addr: addr + 4096, len: req.len };
    if (req.type === VIRTIO_BLK_T_OUT) {
      if (!req.data || req.data.length !== req.len) throw new RangeError("a write needs data of len bytes");
      this.#mem.write(addr + 4096, req.data);
      this.#q.add({ readable: [hdr, data], writable: [status] }, { token: slot });
    } else if (req.len > 0) {
      this.#q.add({ readable: [hdr], writable: [data, status] }, { token: slot });
    } else {
      this.#q.add({ readable: [hdr], writable: [status] }, { token: slot });
    }
  }
}
