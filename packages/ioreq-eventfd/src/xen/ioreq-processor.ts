// The ioreq state machine of one ioreq server, over its mapped synchronous ioreq pages (xen/include/public/
// hvm/ioreq.h, struct ioreq, one 32-byte slot per vCPU, 128 per frame, frames contiguous in the mapping).
//
// Protocol (xen/common/ioreq.c, QEMU hw/xen/xen-hvm-common.c): Xen fills the slot, smp_wmb, sets state
// IOREQ_READY and notifies the vCPU's port. The emulator sees READY, takes it (READY -> INPROCESS), reads the
// fields after a barrier, emulates (READ: result into `data`), barrier, sets IORESP_READY, notifies.
// `state` shares its byte with data_is_ptr/dir/df, so every transition is a whole-byte atomic access that
// keeps the upper bits; READY -> INPROCESS is a compare-exchange, so a request is taken exactly once even
// when privcmd's in-kernel ioeventfd handler looks at the same slot.
//
// The barriers are the state byte's accesses themselves: it changes only through `Atomics` (compare-exchange,
// store) on a typed-array view of the mapping, which V8 emits as ldar / ldaxr-stlxr / stlr
// on arm64 and mov / lock cmpxchg / xchg on x86-64. The compare-exchange is an acquire: the field loads after
// it see what Xen wrote before READY (its smp_wmb pairs with it). The IORESP_READY store is a release: the
// `data` stores before it are visible first (QEMU: xen_wmb(); state = IORESP_READY; notify). The other
// fields are read and written as single aligned typed-array elements (one instruction each, as C does them),
// not through Atomics, whose builtin calls V8 does not inline on these non-shared buffers; no separate
// fence() call (a native call per barrier) is needed either.
//
// Every request is answered, whatever it holds: a vCPU whose ioreq is never answered is frozen.
import { IOREQ_STATE_OFFSET, IoReq, IOREQ_TYPE, STATE_IOREQ_INPROCESS, STATE_IOREQ_READY, STATE_IORESP_READY } from "@xen-vhost/xen-sys";
import type { Logger } from "../logger.js";
import type { IoSpace } from "../notifier.js";
import type { AccessSize, IoRangeTable } from "./io-range.js";

const SLOT = IoReq.size;
const OFF_ADDR = 0;
const OFF_DATA = 8;
const OFF_COUNT = 16;
const OFF_SIZE = 20;
const OFF_STATE = IOREQ_STATE_OFFSET;
const OFF_TYPE = 31;
const STATE_MASK = 0x0f;
const BIT_DATA_IS_PTR = 0x10;
const BIT_DIR_READ = 0x20;
const BIT_DF = 0x40;
const TWO32 = 0x1_0000_0000;
/** Above this the address does not fit a JS number exactly; no range can hold it. */
const MAX_ADDR_HI = 0x1f_ffff;
/** Rep counts beyond this are refused (answered all-ones): Xen splits string I/O far below it. */
export const MAX_REP_COUNT = 1 << 16;
/** How often a slot another agent holds INPROCESS is looked at again before giving up (see #recheck). */
const RECHECKS = 64;

/** Guest memory for `data_is_ptr` requests: @xen-vhost/vm-memory's GuestMemory fits. */
export interface IoreqGuestMemory {
  readInto(addr: bigint, dst: Uint8Array): void;
  write(addr: bigint, data: Uint8Array): void;
}

/** Doorbells consulted before a write reaches a handler (XenNotifier's userspace ioeventfd table). */
export interface DoorbellTable {
  /** True if a doorbell consumed the write (its eventfd was signalled). Must not allocate or throw. */
  dispatch(space: IoSpace, addr: number, size: number, valueLo: number, valueHi: number): boolean;
}

/** Counters of what the loop saw; bad input increments one of them and logs (rate-limited). */
export interface IoreqStats {
  /** Requests answered (every kind). */
  handled: number;
  /** Writes consumed by a userspace doorbell. */
  doorbells: number;
  /** Events with no READY request behind them (normal when the kernel ioeventfd path took the request). */
  spurious: number;
  /** Accesses to addresses no range holds (read all-ones, write ignored). */
  unmapped: number;
  /** Sizes outside {1,2,4,8} (PIO: {1,2,4}). */
  badSize: number;
  /** Rep counts above MAX_REP_COUNT, or data_is_ptr with no guest memory or a guest-memory fault. */
  badRep: number;
  /** Handlers that threw or rejected. */
  handlerErrors: number;
  /** Request types this server does not emulate (PCI_CONFIG, TIMEOFFSET, unknown): answered and logged. */
  unknownType: number;
  /** IOREQ_TYPE_INVALIDATE (mapcache invalidation) requests. */
  invalidate: number;
  /** Events on ports that belong to no vCPU, or vCPU numbers out of range. */
  badVcpu: number;
}

export interface IoreqProcessorOptions {
  /** The mapped ioreq frames (slot v at v * 32). */
  pages: ArrayBuffer;
  vcpus: number;
  ranges: IoRangeTable;
  /** Signals vCPU v's event channel after its slot went IORESP_READY. */
  notify: (vcpu: number) => void;
  guestMemory?: IoreqGuestMemory | undefined;
  /** Called for IOREQ_TYPE_INVALIDATE (drop cached foreign mappings) before it is answered. */
  onInvalidate?: (() => void) | undefined;
  logger: Logger;
}

const ALL_ONES = 0xffff_ffff;

function maskLo(lo: number, size: number): number {
  return size >= 4 ? lo >>> 0 : lo & ((1 << (8 * size)) - 1);
}

/** All-ones of an access width as (lo, hi); widths outside {1,2,4,8} get all 64 bits. */
function onesLo(size: number): number {
  return size === 1 || size === 2 ? (1 << (8 * size)) - 1 : ALL_ONES;
}
function onesHi(size: number): number {
  return size === 1 || size === 2 || size === 4 ? 0 : ALL_ONES;
}

/** The ioreq state machine. Not tied to event channels: `service(v)` is called when vCPU v's port fires. */
export class IoreqProcessor {
  readonly vcpus: number;
  readonly stats: IoreqStats = {
    handled: 0, doorbells: 0, spurious: 0, unmapped: 0, badSize: 0, badRep: 0, handlerErrors: 0, unknownType: 0,
    invalidate: 0, badVcpu: 0,
  };
  doorbells: DoorbellTable | undefined;
  // Views of the slots, made once (no allocation per request). The state byte changes only through Atomics.
  readonly #u8: Uint8Array;
  readonly #u32: Uint32Array;
  readonly #u64: BigUint64Array;
  readonly #ranges: IoRangeTable;
  readonly #notify: (vcpu: number) => void;
  readonly #guest: IoreqGuestMemory | undefined;
  readonly #onInvalidate: (() => void) | undefined;
  readonly #log: Logger;
  /** 1 while this process holds vCPU v's request INPROCESS waiting for an async handler. */
  readonly #inflight: Uint8Array;
  /** Bumped per request: a late async completion for an abandoned request is dropped. */
  readonly #tokens: Uint32Array;
  readonly #rechecks: Uint8Array;
  #closed = false;

  constructor(options: IoreqProcessorOptions) {
    const { pages, vcpus } = options;
    if (!Number.isInteger(vcpus) || vcpus < 1) throw new RangeError(`vcpus ${vcpus} must be a positive integer`);
    if (pages.byteLength < vcpus * SLOT)
      throw new RangeError(`ioreq pages of ${pages.byteLength} bytes hold fewer than ${vcpus} slots`);
    this.vcpus = vcpus;
    this.#u8 = new Uint8Array(pages, 0, vcpus * SLOT);
    this.#u32 = new Uint32Array(pages, 0, (vcpus * SLOT) >>> 2);
    this.#u64 = new BigUint64Array(pages, 0, (vcpus * SLOT) >>> 3);
    this.#ranges = options.ranges;
    this.#notify = options.notify;
    this.#guest = options.guestMemory;
    this.#onInvalidate = options.onInvalidate;
    this.#log = options.logger;
    this.#inflight = new Uint8Array(vcpus);
    this.#tokens = new Uint32Array(vcpus);
    this.#rechecks = new Uint8Array(vcpus);
  }

  /** Bad input is counted always and logged for the first few and then every 1024th occurrence. */
  #warn(kind: keyof IoreqStats, msg: string, fields: Record<string, unknown>): void {
    const n = ++this.stats[kind];
    if (n <= 8 || n % 1024 === 0) this.#log.warn(msg, { ...fields, occurrences: n });
  }

  /** Whether vCPU v has a request held for an async handler. */
  busy(vcpu: number): boolean {
    return this.#inflight[vcpu] === 1;
  }

  /** Serves vCPU v's slot if it holds a READY request. Never throws for guest-controlled input. */
  service(v: number): void {
    if (this.#closed) return;
    if (!(v >= 0 && v < this.vcpus)) {
      this.#warn("badVcpu", "ioreq for a vCPU out of range", { vcpu: v, vcpus: this.vcpus });
      return;
    }
    const u8 = this.#u8;
    const off = v * SLOT;
    // A plain byte load is enough to look: the compare-exchange below is what takes the request.
    const b = u8[off + OFF_STATE]!;
    const state = b & STATE_MASK;
    if (state !== STATE_IOREQ_READY) {
      if (state === STATE_IOREQ_INPROCESS && this.#inflight[v] === 0) this.#recheck(v);
      else this.stats.spurious++;
      return;
    }
    // Xen wrote the fields before READY (smp_wmb); the compare-exchange orders the loads below after it.
    if (Atomics.compareExchange(u8, off + OFF_STATE, b, (b & ~STATE_MASK) | STATE_IOREQ_INPROCESS) !== b) {
      this.#recheck(v);
      return;
    }
    this.#rechecks[v] = 0;
    const type = u8[off + OFF_TYPE]!;
    if (type === IOREQ_TYPE.COPY) this.#io(v, off, "mmio", b);
    else if (type === IOREQ_TYPE.PIO) this.#io(v, off, "pio", b);
    else if (type === IOREQ_TYPE.INVALIDATE) {
      this.stats.invalidate++;
      try {
        this.#onInvalidate?.();
      } catch (err) {
        this.#log.error("ioreq: invalidate callback threw", { err });
      }
      this.#finish(v, b, 0, 0);
    } else {
      this.#warn("unknownType", "ioreq of a type this server does not emulate; answered", { vcpu: v, type });
      this.#finish(v, b, ALL_ONES, ALL_ONES);
    }
  }

  /**
   * The slot is INPROCESS but not ours: privcmd's kernel ioeventfd handler (which shares the event channel's
   * IRQ) may be looking at it and restores READY when the write is not a doorbell it knows. Look again
   * shortly instead of dropping the event, or the vCPU would wait forever.
   */
  #recheck(v: number): void {
    if (this.#rechecks[v]! >= RECHECKS) {
      this.#rechecks[v] = 0;
      this.stats.spurious++;
      return;
    }
    this.#rechecks[v]!++;
    setImmediate(() => this.service(v));
  }

  #io(v: number, off: number, space: IoSpace, b: number): void {
    const u32 = this.#u32;
    const w = off >>> 2;
    const size = u32[w + (OFF_SIZE >>> 2)]!;
    const count = u32[w + (OFF_COUNT >>> 2)]!;
    const read = (b & BIT_DIR_READ) !== 0;
    if (!(size === 1 || size === 2 || size === 4 || (size === 8 && space === "mmio"))) {
      this.#warn("badSize", "ioreq with an access size outside {1,2,4,8}; answered all-ones", { vcpu: v, space, size });
      this.#finish(v, b, onesLo(0), onesHi(0));
      return;
    }
    if ((b & BIT_DATA_IS_PTR) !== 0 || count !== 1) {
      this.#trackRep(v, this.#rep(v, off, space, b, size, count));
      return;
    }
    const addrLo = u32[w + (OFF_ADDR >>> 2)]!;
    const addrHi = u32[w + (OFF_ADDR >>> 2) + 1]!;
    const addr = addrHi <= MAX_ADDR_HI ? addrHi * TWO32 + addrLo : -1;
    const dataLo = u32[w + (OFF_DATA >>> 2)]!;
    const dataHi = u32[w + (OFF_DATA >>> 2) + 1]!;
    if (!read && addr >= 0 && this.doorbells !== undefined && this.doorbells.dispatch(space, addr, size, dataLo, dataHi)) {
      this.stats.doorbells++;
      this.#finish(v, b, 0, 0);
      return;
    }
    const r = addr >= 0 ? this.#ranges.find(space, addr, size) : undefined;
    if (r === undefined) {
      this.#warn("unmapped", read ? "read of an unmapped address; answered all-ones" : "write to an unmapped address; ignored", {
        vcpu: v, space, addr: addrHi * TWO32 + addrLo, size,
      });
      this.#finish(v, b, onesLo(size), onesHi(size));
      return;
    }
    const at = addr - r.start;
    const sz: AccessSize = size;
    try {
      if (read) {
        const value = r.handler.read(at, sz);
        if (value instanceof Promise) this.#track(v, value, b, true);
        else this.#answerRead(v, b, value, size);
      } else {
        const done = r.handler.write(at, sz, size === 8 ? (BigInt(dataHi) << 32n) | BigInt(dataLo) : maskLo(dataLo, size));
        if (done instanceof Promise) this.#track(v, done, b, false);
        else this.#finish(v, b, 0, 0);
      }
    } catch (err) {
      this.#warn("handlerErrors", read ? "device read handler threw; answered all-ones" : "device write handler threw; ignored", {
        vcpu: v, space, offset: at, size, err,
      });
      this.#finish(v, b, onesLo(size), onesHi(size));
    }
  }

  #answerRead(v: number, b: number, value: unknown, size: number): void {
    let lo: number;
    let hi: number;
    if (typeof value === "number" && Number.isFinite(value)) {
      lo = maskLo(value % TWO32, size);
      hi = size === 8 ? Math.floor(value / TWO32) >>> 0 : 0;
    } else if (typeof value === "bigint") {
      const u = BigInt.asUintN(size * 8, value);
      lo = Number(u & 0xffff_ffffn);
      hi = size === 8 ? Number(u >> 32n) : 0;
    } else {
      this.#warn("handlerErrors", "device read handler returned no number; answered all-ones", { vcpu: v, value: typeof value });
      lo = onesLo(size);
      hi = onesHi(size);
    }
    this.#finish(v, b, lo, hi);
  }

  /** Holds vCPU v's request INPROCESS until `p` settles; other vCPUs keep being served meanwhile. */
  #track(v: number, p: Promise<unknown>, b: number, read: boolean): void {
    this.#inflight[v] = 1;
    const token = ++this.#tokens[v]!;
    const size = this.#u32[(v * SLOT + OFF_SIZE) >>> 2]!;
    p.then(
      (value) => {
        if (this.#closed || this.#tokens[v] !== token) return;
        this.#inflight[v] = 0;
        if (read) this.#answerRead(v, b, value, size);
        else this.#finish(v, b, 0, 0);
      },
      (err: unknown) => {
        if (this.#closed || this.#tokens[v] !== token) return;
        this.#inflight[v] = 0;
        this.#warn("handlerErrors", "device handler rejected; answered all-ones", { vcpu: v, err });
        this.#finish(v, b, onesLo(size), onesHi(size));
      },
    );
  }

  /** Rep (count > 1) and data_is_ptr forms, item by item as QEMU's cpu_ioreq_move / cpu_ioreq_pio do. */
  async #rep(v: number, off: number, space: IoSpace, b: number, size: number, count: number): Promise<void> {
    const read = (b & BIT_DIR_READ) !== 0;
    const ptr = (b & BIT_DATA_IS_PTR) !== 0;
    const addr = this.#u64[(off + OFF_ADDR) >>> 3]!;
    const data = this.#u64[(off + OFF_DATA) >>> 3]!;
    if (count > MAX_REP_COUNT) {
      this.#warn("badRep", "ioreq rep count too large; answered all-ones", { vcpu: v, count });
      this.#storeData(v, onesLo(size), onesHi(size), read && !ptr);
      return;
    }
    if (ptr && this.#guest === undefined) {
      this.#warn("badRep", "ioreq with data_is_ptr but no guest memory was given; ignored", { vcpu: v, space, dir: read ? "read" : "write" });
      return;
    }
    const step = BigInt((b & BIT_DF) !== 0 ? -size : size);
    const bytes = new Uint8Array(8);
    const view = new DataView(bytes.buffer);
    const item = bytes.subarray(0, size);
    let last = -1n;
    for (let i = 0n; i < BigInt(count); i++) {
      // PIO string instructions repeat on one port; MMIO ones walk the address (cpu_ioreq_move).
      const dev = space === "pio" ? addr : BigInt.asUintN(64, addr + i * step);
      const gpa = BigInt.asUintN(64, data + i * step);
      if (read) {
        const value = await this.#deviceRead(v, space, dev, size);
        if (!ptr) {
          last = value;
          continue;
        }
        view.setBigUint64(0, value, true);
        try {
          this.#guest!.write(gpa, item);
        } catch (err) {
          this.#warn("badRep", "guest memory write for a data_is_ptr read failed; stopped", { vcpu: v, addr: gpa, err });
          return;
        }
      } else {
        let value = data;
        if (ptr) {
          bytes.fill(0);
          try {
            this.#guest!.readInto(gpa, item);
          } catch (err) {
            this.#warn("badRep", "guest memory read for a data_is_ptr write failed; stopped", { vcpu: v, addr: gpa, err });
            return;
          }
          value = view.getBigUint64(0, true);
        }
        await this.#deviceWrite(v, space, dev, size, BigInt.asUintN(size * 8, value));
      }
    }
    if (read && !ptr) this.#storeData(v, Number(last & 0xffff_ffffn), Number((last >> 32n) & 0xffff_ffffn), true);
  }

  async #deviceRead(v: number, space: IoSpace, addr: bigint, size: number): Promise<bigint> {
    const a = addr <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(addr) : -1;
    const r = a >= 0 ? this.#ranges.find(space, a, size) : undefined;
    const ones = BigInt.asUintN(size * 8, -1n);
    if (r === undefined) {
      this.#warn("unmapped", "read of an unmapped address; answered all-ones", { vcpu: v, space, addr, size });
      return ones;
    }
    try {
      const value = await r.handler.read(a - r.start, size as AccessSize);
      if (typeof value === "bigint") return BigInt.asUintN(size * 8, value);
      if (typeof value === "number" && Number.isFinite(value)) return BigInt.asUintN(size * 8, BigInt(Math.trunc(value)));
      throw new TypeError(`read handler returned ${typeof value}`);
    } catch (err) {
      this.#warn("handlerErrors", "device read handler failed; answered all-ones", { vcpu: v, space, addr, size, err });
      return ones;
    }
  }

  async #deviceWrite(v: number, space: IoSpace, addr: bigint, size: number, value: bigint): Promise<void> {
    const a = addr <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(addr) : -1;
    if (a >= 0 && this.doorbells !== undefined && this.doorbells.dispatch(space, a, size, Number(value & 0xffff_ffffn), Number(value >> 32n))) {
      this.stats.doorbells++;
      return;
    }
    const r = a >= 0 ? this.#ranges.find(space, a, size) : undefined;
    if (r === undefined) {
      this.#warn("unmapped", "write to an unmapped address; ignored", { vcpu: v, space, addr, size });
      return;
    }
    try {
      await r.handler.write(a - r.start, size as AccessSize, size === 8 ? value : Number(value));
    } catch (err) {
      this.#warn("handlerErrors", "device write handler failed; ignored", { vcpu: v, space, addr, size, err });
    }
  }

  /** For the rep path: the result goes to `data` only for reads that are not data_is_ptr. */
  #storeData(v: number, lo: number, hi: number, store: boolean): void {
    if (!store) return;
    const w = (v * SLOT + OFF_DATA) >>> 2;
    this.#u32[w] = lo >>> 0;
    this.#u32[w + 1] = hi >>> 0;
  }

  /**
   * Answers vCPU v: for reads `data` = (lo, hi), then IORESP_READY, then the notification. The rep path
   * stores `data` itself (or must not touch it) and goes straight to #respond.
   */
  #finish(v: number, b: number, lo: number, hi: number): void {
    if ((b & BIT_DIR_READ) !== 0 && (b & BIT_DATA_IS_PTR) === 0) this.#storeData(v, lo, hi, true);
    this.#respond(v);
  }

  #respond(v: number): void {
    const u8 = this.#u8;
    const at = v * SLOT + OFF_STATE;
    // The result must be visible before the state says so (smp_wmb in Xen's terms): the atomic store is a
    // release (stlr) after the atomic `data` stores, and the notification's syscall follows it.
    // INPROCESS is ours: nobody else writes the byte until the store below hands it back.
    const cur = u8[at]!;
    Atomics.store(u8, at, (cur & ~STATE_MASK) | STATE_IORESP_READY);
    this.stats.handled++;
    try {
      this.#notify(v);
    } catch (err) {
      this.#log.error("ioreq: notifying the vCPU failed", { vcpu: v, err });
    }
  }

  /** The rep path's completion: whatever happened inside, the vCPU gets its answer. */
  #trackRep(v: number, p: Promise<void>): void {
    this.#inflight[v] = 1;
    const token = ++this.#tokens[v]!;
    const done = (): void => {
      if (this.#closed || this.#tokens[v] !== token) return;
      this.#inflight[v] = 0;
      this.#respond(v);
    };
    p.then(done, (err: unknown) => {
      this.#log.error("ioreq: rep request failed", { vcpu: v, err });
      done();
    });
  }

  /**
   * Stops serving. Requests still held for async handlers are answered now (all-ones reads, ignored writes)
   * so no vCPU is left waiting; later settlements are dropped.
   */
  close(): void {
    if (this.#closed) return;
    for (let v = 0; v < this.vcpus; v++) {
      if (this.#inflight[v] !== 1) continue;
      this.#inflight[v] = 0;
      this.#tokens[v]!++;
      const mapped = this.#u8.byteLength > 0; // 0 once the mapping is gone (detached)
      const b = mapped ? Atomics.load(this.#u8, v * SLOT + OFF_STATE) : 0;
      const size = mapped ? this.#u32[(v * SLOT + OFF_SIZE) >>> 2]! : 0;
      if ((b & STATE_MASK) === STATE_IOREQ_INPROCESS) this.#finish(v, b, onesLo(size), onesHi(size));
    }
    this.#closed = true;
  }

  get closed(): boolean {
    return this.#closed;
  }
}
