// The buffered ioreq ring (xen/include/public/hvm/ioreq.h struct buffered_iopage): writes Xen does not wait
// for (x86 stdvga and the like), only when the server was created with bufioreq LEGACY or ATOMIC. Xen
// produces at write_pointer; the emulator consumes at read_pointer and never answers. With ATOMIC, Xen may
// rebase both pointers with a 64-bit cmpxchg while we run, so read_pointer only ever moves by atomic add
// and is re-read around each slot, as QEMU's handle_buffered_iopage does.
import { BufferedIopage, IOREQ_BUFFER_SLOT_NUM, IOREQ_TYPE } from "@xen-vhost/xen-sys";
import { fence } from "@xen-vhost/vmm-sys-util";
import type { Logger } from "../logger.js";
import type { AccessSize, IoRangeTable } from "./io-range.js";
import type { DoorbellTable, IoreqStats } from "./ioreq-processor.js";

const SLOTS_WORD = 8 / 4; // buf_ioreq[] starts at byte 8
const DIR_READ = 1;

export class BufferedIoreqReader {
  readonly #words: Uint32Array;
  readonly #ranges: IoRangeTable;
  readonly #log: Logger;
  readonly #stats: IoreqStats;
  readonly #doorbells: () => DoorbellTable | undefined;

  constructor(page: ArrayBuffer, ranges: IoRangeTable, stats: IoreqStats, doorbells: () => DoorbellTable | undefined, logger: Logger) {
    if (page.byteLength < BufferedIopage.size) throw new RangeError(`buffered ioreq page of ${page.byteLength} bytes is too small`);
    this.#words = new Uint32Array(page, 0, BufferedIopage.size / 4);
    this.#ranges = ranges;
    this.#stats = stats;
    this.#doorbells = doorbells;
    this.#log = logger;
  }

  /** Consumes every complete entry; returns how many requests were handled. */
  drain(): number {
    const w = this.#words;
    let handled = 0;
    for (;;) {
      const rp = Atomics.load(w, 0);
      const wp = Atomics.load(w, 1);
      // A rebase between the two loads shows as a changed read_pointer: start over.
      if (Atomics.load(w, 0) !== rp || rp === wp) return handled;
      fence();
      const at = SLOTS_WORD + 2 * (rp % IOREQ_BUFFER_SLOT_NUM);
      const word = Atomics.load(w, at);
      const lo = Atomics.load(w, at + 1);
      let hi = 0;
      const type = word & 0xff;
      const dir = (word >>> 9) & 1;
      const size = 1 << ((word >>> 10) & 3);
      const addr = word >>> 12;
      let used = 1;
      if (size === 8) {
        // An 8-byte write takes two slots, the second carrying the high half; Xen publishes both at once.
        if (((rp + 1) >>> 0) === wp) {
          this.#log.warn("incomplete quad-word buffered ioreq; waiting", { rp, wp });
          return handled;
        }
        hi = Atomics.load(w, SLOTS_WORD + 2 * (((rp + 1) >>> 0) % IOREQ_BUFFER_SLOT_NUM) + 1);
        used = 2;
      }
      fence();
      this.#handle(type, dir, size, addr, lo, hi);
      handled++;
      Atomics.add(w, 0, used);
    }
  }

  #handle(type: number, dir: number, size: number, addr: number, lo: number, hi: number): void {
    const space = type === IOREQ_TYPE.PIO ? "pio" : type === IOREQ_TYPE.COPY ? "mmio" : undefined;
    if (space === undefined || dir === DIR_READ) {
      // Xen only buffers writes of these two types; anything else is consumed and reported.
      this.#stats.unknownType++;
      this.#log.warn("buffered ioreq of an unexpected kind; dropped", { type, dir });
      return;
    }
    this.#stats.handled++;
    if (this.#doorbells()?.dispatch(space, addr, size, lo, hi) === true) {
      this.#stats.doorbells++;
      return;
    }
    const r = this.#ranges.find(space, addr, size);
    if (r === undefined) {
      this.#stats.unmapped++;
      this.#log.warn("buffered write to an unmapped address; ignored", { space, addr, size });
      return;
    }
    const value = size === 8 ? (BigInt(hi) << 32n) | BigInt(lo) : size === 4 ? lo >>> 0 : lo & ((1 << (8 * size)) - 1);
    const fail = (err: unknown): void => {
      this.#stats.handlerErrors++;
      this.#log.warn("device write handler failed on a buffered write; ignored", { space, addr, size, err });
    };
    try {
      const done = r.handler.write(addr - r.start, size as AccessSize, value);
      // Nobody waits for a buffered write: an async handler runs on, its failure is only logged.
      if (done instanceof Promise) done.catch(fail);
    } catch (err) {
      fail(err);
    }
  }
}
