// The ioreq state machine over the real page layout: a memfd holding struct ioreq slots, mapped twice (the
// "Xen" side writes requests through one mapping, the processor serves through the other), as Xen and the
// emulator share the ioreq frames. The vCPU side here is the test, so every field and transition is visible.
import { setImmediate as tick } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { close, ftruncate, memfdCreate, mmap, munmap } from "@xen-vhost/vmm-sys-util";
import { fdLeakCheck } from "@xen-vhost/vmm-sys-util/testing";
import { GuestMemory } from "@xen-vhost/vm-memory";
import { IoReq, IOREQ_TYPE, STATE_IOREQ_INPROCESS, STATE_IOREQ_NONE, STATE_IOREQ_READY, STATE_IORESP_READY } from "@xen-vhost/xen-sys";
import type { Logger } from "../logger.js";
import { BufferedIoreqReader } from "./buffered-ioreq.js";
import { IoRangeTable, type AccessSize, type IoHandler, type IoValue } from "./io-range.js";
import { IoreqProcessor, type IoreqGuestMemory } from "./ioreq-processor.js";

interface Req {
  addr: bigint;
  data?: bigint;
  size: number;
  count?: number;
  dir: "read" | "write";
  type?: number;
  ptr?: boolean;
  df?: boolean;
}

/** A memfd of `frames` pages mapped twice: `xen` (the requester's view) and `dm` (the processor's). */
class SharedFrames {
  readonly fd: number;
  readonly xen: ArrayBuffer;
  readonly dm: ArrayBuffer;
  readonly view: DataView;
  constructor(frames: number) {
    this.fd = memfdCreate("ioreq-test");
    ftruncate(this.fd, frames * 4096);
    this.xen = mmap(frames * 4096, { fd: this.fd });
    this.dm = mmap(frames * 4096, { fd: this.fd });
    this.view = new DataView(this.xen);
  }
  /** What Xen does in ioreq_send: fill the slot, barrier, state READY. */
  post(v: number, r: Req): void {
    IoReq.write(this.view, v * 32, {
      addr: r.addr, data: r.data ?? 0n, count: r.count ?? 1, size: r.size, vp_eport: 100 + v, state: STATE_IOREQ_NONE,
      data_is_ptr: r.ptr ? 1 : 0, dir: r.dir === "read" ? 1 : 0, df: r.df ? 1 : 0, type: r.type ?? IOREQ_TYPE.COPY,
    });
    const b = new Uint8Array(this.xen);
    Atomics.store(b, v * 32 + 30, (Atomics.load(b, v * 32 + 30) & 0xf0) | STATE_IOREQ_READY);
  }
  state(v: number): number {
    return Atomics.load(new Uint8Array(this.xen), v * 32 + 30) & 0x0f;
  }
  slot(v: number) {
    return IoReq.read(this.view, v * 32);
  }
  /** Xen's side after IORESP_READY: the vCPU consumed the answer. */
  consume(v: number): void {
    const b = new Uint8Array(this.xen);
    Atomics.store(b, v * 32 + 30, Atomics.load(b, v * 32 + 30) & 0xf0);
  }
  close(): void {
    munmap(this.xen);
    munmap(this.dm);
    close(this.fd);
  }
}

function recordingLogger() {
  const warnings: string[] = [];
  const logger: Logger = { debug: () => {}, info: () => {}, warn: (m) => void warnings.push(m), error: (m) => void warnings.push(`error: ${m}`) };
  return { logger, warnings };
}

/** A register file that records accesses and answers reads with a pattern per offset. */
function device(values: Record<number, IoValue> = {}) {
  const log: string[] = [];
  const handler: IoHandler = {
    read: (offset: number, size: AccessSize) => {
      log.push(`r ${offset}/${size}`);
      return values[offset] ?? 0x1122334455667788n;
    },
    write: (offset: number, size: AccessSize, value: IoValue) => {
      log.push(`w ${offset}/${size}=${typeof value}:${value.toString(16)}`);
    },
  };
  return { handler, log };
}

describe("IoreqProcessor", () => {
  let leaks: ReturnType<typeof fdLeakCheck>;
  let frames: SharedFrames;
  let notified: number[];
  let ranges: IoRangeTable;
  beforeEach(() => {
    leaks = fdLeakCheck();
    frames = new SharedFrames(2);
    notified = [];
    ranges = new IoRangeTable();
  });
  afterEach(() => {
    frames.close();
    expect(leaks.check()).toEqual([]);
  });

  function processor(options: { vcpus?: number; guestMemory?: IoreqGuestMemory; onInvalidate?: () => void; logger?: Logger } = {}) {
    return new IoreqProcessor({
      pages: frames.dm,
      vcpus: options.vcpus ?? 4,
      ranges,
      notify: (v) => void notified.push(v),
      guestMemory: options.guestMemory,
      onInvalidate: options.onInvalidate,
      logger: options.logger ?? recordingLogger().logger,
    });
  }

  it("answers MMIO reads of every width with the handler's value, masked, relative offset, then notifies", () => {
    const dev = device({ 0: 0x74726976, 8: 0xdeadbeefcafef00dn, 0x10: -1 });
    ranges.add({ space: "mmio", start: 0x2000000, end: 0x2000200, handler: dev.handler });
    const p = processor();
    for (const [size, off, want] of [
      [1, 0, 0x76n], [2, 0, 0x6976n], [4, 0, 0x74726976n], [8, 8, 0xdeadbeefcafef00dn], [4, 8, 0xcafef00dn], [8, 0x10, 0xffffffffffffffffn],
    ] as const) {
      frames.post(1, { addr: 0x2000000n + BigInt(off), size, dir: "read", data: 0x5555n });
      p.service(1);
      expect(frames.state(1)).toBe(STATE_IORESP_READY);
      expect(frames.slot(1).data).toBe(want);
      frames.consume(1);
    }
    expect(notified).toEqual([1, 1, 1, 1, 1, 1]);
    expect(dev.log).toEqual(["r 0/1", "r 0/2", "r 0/4", "r 8/8", "r 8/4", "r 16/8"]);
    expect(p.stats.handled).toBe(6);
  });

  it("passes writes to the handler: numbers up to 4 bytes (masked), a bigint for 8", () => {
    const dev = device();
    ranges.add({ space: "mmio", start: 0x1000, end: 0x1100, handler: dev.handler });
    const p = processor();
    frames.post(0, { addr: 0x1070n, size: 1, dir: "write", data: 0xffffff0fn });
    p.service(0);
    frames.post(0, { addr: 0x1070n, size: 4, dir: "write", data: 0x1_8000_0001n });
    p.service(0);
    frames.post(0, { addr: 0x1080n, size: 8, dir: "write", data: 0x8000_0000_0000_0001n });
    p.service(0);
    expect(dev.log).toEqual(["w 112/1=number:f", "w 112/4=number:80000001", "w 128/8=bigint:8000000000000001"]);
    expect(frames.slot(0).data).toBe(0x8000_0000_0000_0001n); // writes leave data alone
    expect(frames.state(0)).toBe(STATE_IORESP_READY);
  });

  it("keeps the dir/data_is_ptr bits that share the state byte", () => {
    ranges.add({ space: "mmio", start: 0x1000, end: 0x1100, handler: device().handler });
    const p = processor();
    frames.post(2, { addr: 0x1000n, size: 4, dir: "read" });
    p.service(2);
    const s = frames.slot(2);
    expect([s.state, s.dir, s.data_is_ptr, s.type, s.vp_eport]).toEqual([STATE_IORESP_READY, 1, 0, IOREQ_TYPE.COPY, 102]);
  });

  it("serves PIO ranges apart from MMIO ones", () => {
    const pio = device({ 0: 0xab });
    const mmio = device({ 0: 0xcd });
    ranges.add({ space: "pio", start: 0x3f8, end: 0x400, handler: pio.handler });
    ranges.add({ space: "mmio", start: 0x3f8, end: 0x400, handler: mmio.handler });
    const p = processor();
    frames.post(0, { addr: 0x3f8n, size: 1, dir: "read", type: IOREQ_TYPE.PIO });
    p.service(0);
    expect(frames.slot(0).data).toBe(0xabn);
    frames.post(0, { addr: 0x3f8n, size: 1, dir: "read" });
    p.service(0);
    expect(frames.slot(0).data).toBe(0xcdn);
    frames.post(0, { addr: 0x3f8n, size: 8, dir: "read", type: IOREQ_TYPE.PIO });
    p.service(0);
    expect(frames.slot(0).data).toBe(0xffff_ffff_ffff_ffffn); // x86 port I/O is at most 4 bytes
    expect(p.stats.badSize).toBe(1);
  });

  it("answers bad input without hanging the vCPU: unmapped, bad sizes, straddling, throwing handlers", () => {
    const { logger, warnings } = recordingLogger();
    ranges.add({
      space: "mmio", start: 0x1000, end: 0x1010,
      handler: { read: () => { throw new Error("boom"); }, write: () => { throw new Error("boom"); } },
    });
    const p = processor({ logger });
    const cases: [Req, bigint][] = [
      [{ addr: 0x9000n, size: 2, dir: "read" }, 0xffffn], // unmapped
      [{ addr: 0x9000n, size: 4, dir: "write", data: 7n }, 7n], // unmapped write: ignored, data untouched
      [{ addr: 0x1000n, size: 3, dir: "read" }, 0xffff_ffff_ffff_ffffn], // size not in {1,2,4,8}
      [{ addr: 0x1000n, size: 16, dir: "write", data: 1n }, 1n],
      [{ addr: 0x100cn, size: 8, dir: "read" }, 0xffff_ffff_ffff_ffffn], // straddles the range end
      [{ addr: 0x1000n, size: 4, dir: "read" }, 0xffff_ffffn], // handler throws
      [{ addr: 0x1000n, size: 4, dir: "write", data: 3n }, 3n],
      [{ addr: 0xffff_ffff_ffff_f000n, size: 4, dir: "read" }, 0xffff_ffffn], // beyond 2^53
    ];
    for (const [req, data] of cases) {
      frames.post(3, req);
      p.service(3);
      expect(frames.state(3)).toBe(STATE_IORESP_READY);
      expect(frames.slot(3).data).toBe(data);
      frames.consume(3);
    }
    expect(notified).toHaveLength(cases.length);
    expect(p.stats).toMatchObject({ unmapped: 4, badSize: 2, handlerErrors: 2, handled: 8 });
    expect(warnings).toHaveLength(8);
  });

  it("ignores events with no READY request, and vCPUs out of range", () => {
    const p = processor();
    p.service(0); // state NONE
    frames.post(1, { addr: 0n, size: 4, dir: "read" });
    p.service(1);
    p.service(1); // already answered: IORESP_READY
    p.service(4);
    p.service(-1);
    p.service(Number.NaN);
    expect(notified).toEqual([1]);
    expect(p.stats).toMatchObject({ spurious: 2, badVcpu: 3 });
  });

  it("holds an async handler's request INPROCESS while other vCPUs are served", async () => {
    let resolve!: (v: number) => void;
    ranges.add({
      space: "mmio", start: 0x1000, end: 0x1100,
      handler: { read: (off) => (off === 0 ? new Promise<number>((r) => (resolve = r)) : 42), write: () => {} },
    });
    const p = processor();
    frames.post(0, { addr: 0x1000n, size: 4, dir: "read" });
    p.service(0);
    expect(frames.state(0)).toBe(STATE_IOREQ_INPROCESS);
    expect(p.busy(0)).toBe(true);
    p.service(0); // a second event while held: nothing happens
    frames.post(1, { addr: 0x1004n, size: 4, dir: "read" });
    p.service(1);
    expect(frames.slot(1).data).toBe(42n);
    expect(notified).toEqual([1]);
    resolve(0x1234);
    await tick();
    expect(frames.state(0)).toBe(STATE_IORESP_READY);
    expect(frames.slot(0).data).toBe(0x1234n);
    expect(notified).toEqual([1, 0]);
    expect(p.busy(0)).toBe(false);
  });

  it("answers a rejected async handler with all-ones, and close() answers what is still held", async () => {
    ranges.add({
      space: "mmio", start: 0x1000, end: 0x1100,
      handler: {
        read: (off) => (off === 0 ? Promise.reject(new Error("backend gone")) : new Promise<number>(() => {})),
        write: () => new Promise<void>(() => {}),
      },
    });
    const p = processor();
    frames.post(0, { addr: 0x1000n, size: 2, dir: "read" });
    p.service(0);
    await tick();
    expect(frames.slot(0).data).toBe(0xffffn);
    expect(p.stats.handlerErrors).toBe(1);
    frames.post(1, { addr: 0x1008n, size: 4, dir: "read" }); // never settles
    frames.post(2, { addr: 0x1008n, size: 4, dir: "write" }); // never settles
    p.service(1);
    p.service(2);
    expect([frames.state(1), frames.state(2)]).toEqual([STATE_IOREQ_INPROCESS, STATE_IOREQ_INPROCESS]);
    p.close();
    expect([frames.state(1), frames.state(2)]).toEqual([STATE_IORESP_READY, STATE_IORESP_READY]);
    expect(frames.slot(1).data).toBe(0xffff_ffffn);
    expect(notified).toEqual([0, 1, 2]);
    p.service(1); // closed: no-op
  });

  it("takes a request another agent held INPROCESS once it is put back to READY (privcmd's kernel ioeventfd)", async () => {
    ranges.add({ space: "mmio", start: 0x1000, end: 0x1100, handler: device({ 0: 9 }).handler });
    const p = processor();
    frames.post(0, { addr: 0x1000n, size: 4, dir: "read" });
    const b = new Uint8Array(frames.xen);
    Atomics.store(b, 30, (Atomics.load(b, 30) & 0xf0) | STATE_IOREQ_INPROCESS); // the kernel looks at it
    p.service(0);
    expect(notified).toEqual([]);
    Atomics.store(b, 30, (Atomics.load(b, 30) & 0xf0) | STATE_IOREQ_READY); // not its doorbell: restored
    await tick();
    await tick();
    expect(notified).toEqual([0]);
    expect(frames.slot(0).data).toBe(9n);
  });

  it("serves vCPUs beyond 128 from the second ioreq frame", () => {
    ranges.add({ space: "mmio", start: 0x1000, end: 0x1100, handler: device({ 4: 0x77 }).handler });
    const p = processor({ vcpus: 200 });
    frames.post(130, { addr: 0x1004n, size: 1, dir: "read" });
    p.service(130);
    expect(frames.slot(130).data).toBe(0x77n);
    expect(new DataView(frames.xen).getUint8(4096 + 2 * 32 + 8)).toBe(0x77); // frame 1, slot 2
    expect(notified).toEqual([130]);
    expect(() => new IoreqProcessor({ pages: frames.dm, vcpus: 257, ranges, notify: () => {}, logger: recordingLogger().logger })).toThrow(RangeError);
  });

  it("lets the doorbell table consume writes before the handlers see them", () => {
    const dev = device();
    ranges.add({ space: "mmio", start: 0x1000, end: 0x1100, handler: dev.handler });
    const p = processor();
    const seen: string[] = [];
    p.doorbells = {
      dispatch: (space, addr, size, lo, hi) => {
        seen.push(`${space} ${addr.toString(16)}/${size} ${lo}:${hi}`);
        return addr === 0x1050 && lo === 1;
      },
    };
    frames.post(0, { addr: 0x1050n, size: 4, dir: "write", data: 1n });
    p.service(0);
    frames.post(0, { addr: 0x1050n, size: 4, dir: "write", data: 2n });
    p.service(0);
    frames.post(0, { addr: 0x1050n, size: 4, dir: "read" });
    p.service(0);
    expect(seen).toEqual(["mmio 1050/4 1:0", "mmio 1050/4 2:0"]);
    expect(dev.log).toEqual(["w 80/4=number:2", "r 80/4"]);
    expect(p.stats.doorbells).toBe(1);
  });

  it("answers INVALIDATE after the callback, and unknown types without touching a device", () => {
    let invalidated = 0;
    const dev = device();
    ranges.add({ space: "mmio", start: 0, end: 0x100, handler: dev.handler });
    const p = processor({ onInvalidate: () => void invalidated++ });
    frames.post(0, { addr: 0n, size: 0, dir: "write", type: IOREQ_TYPE.INVALIDATE });
    p.service(0);
    frames.post(1, { addr: 0n, size: 4, dir: "read", type: IOREQ_TYPE.PCI_CONFIG });
    p.service(1);
    frames.post(2, { addr: 0n, size: 4, dir: "read", type: 0x7e });
    p.service(2);
    expect(invalidated).toBe(1);
    expect(notified).toEqual([0, 1, 2]);
    expect(frames.slot(1).data).toBe(0xffff_ffff_ffff_ffffn);
    expect(dev.log).toEqual([]);
    expect(p.stats).toMatchObject({ invalidate: 1, unknownType: 2 });
  });

  describe("rep and data_is_ptr forms (QEMU cpu_ioreq_move / cpu_ioreq_pio semantics)", () => {
    let mem: GuestMemory;
    beforeEach(() => {
      mem = GuestMemory.fromRanges([[0x4000_0000n, 0x10000]]);
    });
    afterEach(() => mem.close());

    it("rep MMIO write from guest memory walks both addresses, forwards and backwards (df)", async () => {
      const dev = device();
      ranges.add({ space: "mmio", start: 0x1000, end: 0x1100, handler: dev.handler });
      mem.write(0x4000_0100n, Uint8Array.from([1, 0, 2, 0, 3, 0]));
      const p = processor({ guestMemory: mem });
      frames.post(0, { addr: 0x1010n, data: 0x4000_0100n, size: 2, count: 3, dir: "write", ptr: true });
      p.service(0);
      await tick();
      expect(frames.state(0)).toBe(STATE_IORESP_READY);
      frames.consume(0);
      frames.post(0, { addr: 0x1014n, data: 0x4000_0104n, size: 2, count: 3, dir: "write", ptr: true, df: true });
      p.service(0);
      await tick();
      expect(dev.log).toEqual([
        "w 16/2=number:1", "w 18/2=number:2", "w 20/2=number:3",
        "w 20/2=number:3", "w 18/2=number:2", "w 16/2=number:1",
      ]);
      expect(notified).toEqual([0, 0]);
    });

    it("rep MMIO read into guest memory; rep PIO stays on one port", async () => {
      let n = 0;
      ranges.add({ space: "mmio", start: 0x1000, end: 0x1100, handler: { read: (off) => off + 0x10, write: () => {} } });
      ranges.add({ space: "pio", start: 0x60, end: 0x61, handler: { read: () => ++n, write: () => {} } });
      const p = processor({ guestMemory: mem });
      frames.post(0, { addr: 0x1000n, data: 0x4000_0200n, size: 4, count: 2, dir: "read", ptr: true });
      p.service(0);
      await tick();
      expect([...mem.read(0x4000_0200n, 8)]).toEqual([0x10, 0, 0, 0, 0x14, 0, 0, 0]);
      frames.post(1, { addr: 0x60n, data: 0x4000_0300n, size: 1, count: 4, dir: "read", ptr: true, type: IOREQ_TYPE.PIO });
      p.service(1);
      await tick();
      expect([...mem.read(0x4000_0300n, 4)]).toEqual([1, 2, 3, 4]);
      expect(notified).toEqual([0, 1]);
    });

    it("rep without data_is_ptr: a write repeats the value, a read answers the last item", async () => {
      const dev = device({ 0: 5, 4: 6 });
      ranges.add({ space: "mmio", start: 0x1000, end: 0x1100, handler: dev.handler });
      const p = processor();
      frames.post(0, { addr: 0x1000n, data: 0xaan, size: 1, count: 2, dir: "write" });
      p.service(0);
      await tick();
      frames.post(1, { addr: 0x1000n, data: 0n, size: 4, count: 2, dir: "read" });
      p.service(1);
      await tick();
      expect(dev.log).toEqual(["w 0/1=number:aa", "w 1/1=number:aa", "r 0/4", "r 4/4"]);
      expect(frames.slot(1).data).toBe(6n);
    });

    it("data_is_ptr with no guest memory, a guest-memory fault, a huge count: answered and logged", async () => {
      const dev = device();
      ranges.add({ space: "mmio", start: 0x1000, end: 0x1100, handler: dev.handler });
      const { logger, warnings } = recordingLogger();
      const bare = processor({ logger });
      frames.post(0, { addr: 0x1000n, data: 0x4000_0000n, size: 4, count: 1, dir: "write", ptr: true });
      bare.service(0);
      await tick();
      expect(frames.state(0)).toBe(STATE_IORESP_READY);
      const p = processor({ guestMemory: mem, logger });
      frames.post(1, { addr: 0x1000n, data: 0x9000_0000n, size: 4, count: 2, dir: "write", ptr: true }); // not RAM
      p.service(1);
      frames.post(2, { addr: 0x1000n, data: 0n, size: 4, count: 0x7fff_ffff, dir: "read" });
      p.service(2);
      await tick();
      expect([frames.state(1), frames.state(2)]).toEqual([STATE_IORESP_READY, STATE_IORESP_READY]);
      expect(frames.slot(2).data).toBe(0xffff_ffffn);
      expect(dev.log).toEqual([]);
      expect(bare.stats.badRep + p.stats.badRep).toBe(3);
      expect(warnings).toHaveLength(3);
    });
  });

  it("buffered ioreqs: consumes complete entries (two slots for 8 bytes) and moves read_pointer", () => {
    const dev = device();
    ranges.add({ space: "mmio", start: 0xa0000, end: 0xc0000, handler: dev.handler });
    const stats = processor().stats;
    const page = frames.dm;
    const w = new Uint32Array(frames.xen);
    const slot = (i: number, type: number, size: number, addr: number, data: number): void => {
      w[2 + 2 * i] = (type | (0 << 9) | (size << 10) | (addr << 12)) >>> 0;
      w[2 + 2 * i + 1] = data;
    };
    slot(0, IOREQ_TYPE.COPY, 0, 0xa0001, 0x7f); // 1 byte
    slot(1, IOREQ_TYPE.COPY, 3, 0xa0008, 0x89abcdef); // 8 bytes: low half
    slot(2, 0, 0, 0, 0x01234567); // high half
    slot(3, IOREQ_TYPE.COPY, 2, 0xfff00, 1); // unmapped
    Atomics.store(w, 1, 4);
    const reader = new BufferedIoreqReader(page, ranges, stats, () => undefined, recordingLogger().logger);
    expect(reader.drain()).toBe(3);
    expect(Atomics.load(w, 0)).toBe(4);
    expect(dev.log).toEqual(["w 1/1=number:7f", "w 8/8=bigint:123456789abcdef"]);
    expect(stats.unmapped).toBe(1);
    // A quad word whose second half is not published yet waits.
    slot(4, IOREQ_TYPE.COPY, 3, 0xa0010, 1);
    Atomics.store(w, 1, 5);
    expect(reader.drain()).toBe(0);
    expect(Atomics.load(w, 0)).toBe(4);
  });
});
