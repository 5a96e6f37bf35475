// A simulated vCPU doing MMIO through ioreqs, playing the part of Xen's ioreq_send/handle_mmio for its own
// accesses (xen/common/ioreq.c, xen/arch/arm/ioreq.c): select the ioreq server whose MEMORY range covers the
// access (FOR_EACH_IOREQ_SERVER order: highest id first), fill this vCPU's slot of its shared ioreq page,
// publish IOREQ_READY after a barrier, notify the emulator's port, and wait for IORESP_READY. Accesses no
// server claims read as all-ones and writes are dropped (x86's null handler; Arm Xen would inject a data
// abort instead - a simulated guest that wants to probe "nothing there" can rely on all-ones).
import { AtomicAccess, EventFd, close as closeFd, fence, mmap, munmap, MmapConstants } from "@xen-vhost/vmm-sys-util";
import { IOREQ_STATE_OFFSET, IOREQS_PER_PAGE, IOREQ_TYPE, IoReq, STATE_IOREQ_NONE, STATE_IOREQ_READY, STATE_IORESP_READY } from "@xen-vhost/xen-sys";
import { Worker } from "node:worker_threads";
import { SimError } from "../error.js";
import { PAGE_SIZE, type EndpointDescription } from "../layout.js";
import { Peer } from "../transport/evtchn.js";
import type { Guest } from "./guest.js";

interface Route {
  id: number;
  ranges: { type: number; start: bigint; end: bigint }[];
  pages: ArrayBuffer;
  slot: AtomicAccess;
  peer: Peer | undefined;
  ioeventfds: { addr: bigint; addrLen: number; vq: number; fd: EventFd }[];
}

/** Counters of what the vCPU did. */
export interface VcpuCounters {
  ioreqs: number;
  unclaimed: number;
  /** Times the vCPU blocked in the kernel waiting for the answer (the rest completed while spinning). */
  blocked: number;
  /** QUEUE_NOTIFY writes completed by a privcmd ioeventfd (the device model never saw them). */
  ioeventfds: number;
}

const XEN_DMOP_IO_RANGE_MEMORY = 1;
const SPIN = 4000;
/** An ioreq unanswered this long fails the vCPU with SimError "Timeout" (a device model that hung). */
export const DEFAULT_IOREQ_TIMEOUT_MS = 15_000;

/**
 * A watchdog thread for a vCPU blocked in read(2) on its wake eventfd: once a second it checks when the
 * vCPU blocked (a shared timestamp) and, past the timeout, writes the eventfd so the vCPU wakes and reports
 * the stuck ioreq instead of hanging forever. It needs no native code (fs.writeSync on the eventfd), so it
 * is safe in a worker; the hot path only stores two numbers when it actually blocks.
 */
const WATCHDOG = `
const { workerData } = require("node:worker_threads");
const { writeSync } = require("node:fs");
const shared = new Float64Array(workerData.sab);
const one = Buffer.alloc(8); one.writeBigUInt64LE(1n);
setInterval(() => {
  const since = shared[0];
  if (since > 0 && Date.now() - since > workerData.timeoutMs) { shared[0] = -1; try { writeSync(workerData.fd, one); } catch {} }
}, 250);
`;

export class Vcpu implements Disposable {
  readonly index: number;
  readonly counters: VcpuCounters = { ioreqs: 0, unclaimed: 0, blocked: 0, ioeventfds: 0 };
  readonly #guest: Guest;
  readonly #wake: EventFd;
  #routes: Route[] = [];
  #generation = -1;
  readonly #timeoutMs: number;
  #blockedSince: Float64Array | undefined;
  #watchdog: Worker | undefined;

  constructor(guest: Guest, index: number, wake: EventFd, options: { ioreqTimeoutMs?: number } = {}) {
    this.#guest = guest;
    this.index = index;
    this.#wake = wake;
    this.#timeoutMs = options.ioreqTimeoutMs ?? DEFAULT_IOREQ_TIMEOUT_MS;
  }

  #startWatchdog(): Float64Array {
    const sab = new SharedArrayBuffer(8);
    this.#watchdog = new Worker(WATCHDOG, { eval: true, workerData: { sab, fd: this.#wake.fd, timeoutMs: this.#timeoutMs } });
    this.#watchdog.unref();
    return (this.#blockedSince = new Float64Array(sab));
  }

  /** Re-reads the routing table when the simulator changed it (ioreq servers, ranges, bindings). */
  #refresh(): void {
    const g = this.#guest.generation;
    if (g === this.#generation) return;
    this.#dropRoutes();
    const r = this.#guest.rpc.call("guest.routes", { domid: this.#guest.info.domid });
    if (r.refused) throw new SimError("Disconnected", `routes of domain ${this.#guest.info.domid}: ${r.refused.code}`);
    const res = r.result as {
      generation: number;
      servers: {
        id: number; ranges: Route["ranges"]; pagesFd: number; frames: number; endpoints: (EndpointDescription | null)[];
        ioeventfds: { addr: bigint; addrLen: number; vq: number; fd: number }[];
      }[];
    };
    const used = new Set<number>();
    try {
      for (const s of res.servers) {
        const pages = mmap(s.frames * PAGE_SIZE, { fd: r.fds[s.pagesFd]!, flags: MmapConstants.MAP_SHARED });
        const v = this.index;
        const slotOffset = PAGE_SIZE * (1 + Math.floor(v / IOREQS_PER_PAGE)) + (v % IOREQS_PER_PAGE) * IoReq.size;
        const ep = s.endpoints[v];
        let peer: Peer | undefined;
        if (ep) {
          peer = new Peer(ep, r.fds);
          used.add(ep.eventFd);
        }
        const ioeventfds = s.ioeventfds.map((e) => {
          used.add(e.fd);
          return { addr: e.addr, addrLen: e.addrLen, vq: e.vq, fd: EventFd.fromFd(r.fds[e.fd]!) };
        });
        this.#routes.push({ id: s.id, ranges: s.ranges, pages, slot: new AtomicAccess(pages, slotOffset, IoReq.size), peer, ioeventfds });
      }
    } finally {
      r.fds.forEach((fd, i) => {
        if (!used.has(i)) closeFd(fd);
      });
    }
    this.#generation = res.generation;
  }

  #dropRoutes(): void {
    for (const r of this.#routes) {
      r.peer?.close();
      for (const e of r.ioeventfds) e.fd.close();
      munmap(r.pages);
    }
    this.#routes = [];
  }

  #select(addr: bigint, size: number): Route | undefined {
    const last = addr + BigInt(size) - 1n;
    return this.#routes.find((r) => r.ranges.some((x) => x.type === XEN_DMOP_IO_RANGE_MEMORY && x.start <= addr && last <= x.end));
  }

  #access(addr: bigint, size: 1 | 2 | 4 | 8, write: boolean, value: bigint): bigint {
    if (this.#guest.paused) this.#guest.waitRunnable();
    if (this.#guest.dying) throw new SimError("Disconnected", `domain ${this.#guest.info.domid} is dying`);
    this.#refresh();
    const route = this.#select(addr, size);
    if (!route) {
      this.counters.unclaimed++;
      return write ? 0n : (1n << BigInt(size * 8)) - 1n;
    }
    if (write) {
      // privcmd ioeventfd_interrupt: a matching QUEUE_NOTIFY write is completed in dom0's kernel, which
      // signals the eventfd and answers IORESP_READY without waking the device model.
      const e = route.ioeventfds.find((x) => addr === x.addr + 0x50n && size === x.addrLen && Number(value & 0xffffn) === x.vq);
      if (e) {
        e.fd.write(1);
        this.counters.ioeventfds++;
        return 0n;
      }
    }
    const s = route.slot;
    const state = s.load8(IOREQ_STATE_OFFSET) & 0xf;
    // ioreq_send: a slot that is not idle means the emulator broke the protocol; Xen crashes the domain.
    if (state !== STATE_IOREQ_NONE) throw new SimError("GuestFailed", `vcpu ${this.index}: ioreq slot in state ${state}, expected NONE (device model bug)`);
    s.store64(0, addr);
    s.store64(8, write ? value : 0n);
    s.store32(16, 1);
    s.store32(20, size);
    s.store8(31, IOREQ_TYPE.COPY);
    // Fields before the state (smp_wmb in ioreq_send), then READY with dir in the same byte.
    fence();
    s.store8(IOREQ_STATE_OFFSET, STATE_IOREQ_READY | ((write ? 0 : 1) << 5));
    this.counters.ioreqs++;
    route.peer?.notify();
    for (let i = 0; ; i++) {
      const st = s.load8(IOREQ_STATE_OFFSET) & 0xf;
      if (st === STATE_IORESP_READY) break;
      if (i >= SPIN) {
        // The emulator notifies our port after IORESP_READY; a count left from an earlier notify only
        // costs one more look at the state.
        this.counters.blocked++;
        const since = this.#blockedSince ?? this.#startWatchdog();
        if (since[0] === -1) {
          since[0] = 0;
          throw new SimError("Timeout", `vcpu ${this.index}: no answer to the ioreq for 0x${addr.toString(16)} in ${this.#timeoutMs} ms (slot state ${s.load8(IOREQ_STATE_OFFSET) & 0xf}; is the device model bound to vp_eport and running?)`);
        }
        if (since[0] === 0) since[0] = Date.now();
        this.#wake.read();
        if (this.#guest.dying) throw new SimError("Disconnected", `domain ${this.#guest.info.domid} destroyed during an ioreq`);
        i = SPIN - 64;
      }
    }
    if (this.#blockedSince && this.#blockedSince[0] !== 0) this.#blockedSince[0] = 0;
    fence();
    const data = s.load64(8);
    s.store8(IOREQ_STATE_OFFSET, STATE_IOREQ_NONE);
    if (write) return 0n;
    return size === 8 ? data : data & ((1n << BigInt(size * 8)) - 1n);
  }

  /** An MMIO read of `size` bytes at guest physical `addr`. */
  read(addr: bigint, size: 1 | 2 | 4 | 8 = 4): bigint {
    return this.#access(addr, size, false, 0n);
  }

  /** An MMIO write. */
  write(addr: bigint, size: 1 | 2 | 4 | 8, value: bigint | number): void {
    const v = BigInt(value) & (size === 8 ? 0xffff_ffff_ffff_ffffn : (1n << BigInt(size * 8)) - 1n);
    this.#access(addr, size, true, v);
  }

  read32(addr: bigint): number {
    return Number(this.read(addr, 4));
  }

  write32(addr: bigint, value: number): void {
    this.write(addr, 4, BigInt(value >>> 0));
  }

  close(): void {
    this.#dropRoutes();
    void this.#watchdog?.terminate();
    this.#watchdog = undefined;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
