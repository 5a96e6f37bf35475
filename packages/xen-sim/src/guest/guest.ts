// The simulated guest: a process attached to one domain of the simulator. It owns the guest's view of its
// RAM (the memfds, as GuestMemory), its grant table frames, its vCPU wake eventfds and the domain page, and
// runs guest code synchronously - a vCPU blocks in an MMIO access exactly as a real one is descheduled
// while its ioreq is out.
import { EventFd, close as closeFd, mmap, munmap, MmapConstants } from "@xen-vhost/vmm-sys-util";
import { GuestMemory, MmapRegion } from "@xen-vhost/vm-memory";
import type { XenArch } from "@xen-vhost/xen-sys";
import { BlockingClient } from "../protocol.js";
import { SimError } from "../error.js";
import {
  DOMPAGE_FLAGS, DOMPAGE_FLAG_DYING, DOMPAGE_FLAG_PAUSED, DOMPAGE_GENERATION, DOMPAGE_IRQ_LEVELS, DOMPAGE_PENDING, EVTCHN_NR_PORTS,
  PAGE_SIZE, isPending, reselect, takePending, type EndpointDescription,
} from "../layout.js";
import { peerFrom, type Peer } from "../transport/evtchn.js";
import { GrantTable } from "./grants.js";
import { Vcpu } from "./vcpu.js";
import { sleepSync } from "./sleep.js";
import { XenBus } from "./xenbus.js";

export interface GuestInfo {
  domid: number;
  vcpus: number;
  arch: XenArch;
  nrSpis: number;
  grantFrames: number;
  ram: { base: bigint; size: number }[];
}

export { sleepSync } from "./sleep.js";

export class Guest implements Disposable {
  readonly info: GuestInfo;
  readonly memory: GuestMemory;
  readonly grants: GrantTable;
  readonly rpc: BlockingClient;
  readonly #page: ArrayBuffer;
  readonly #words: Uint32Array;
  readonly #upcall: EventFd;
  readonly #wake: EventFd[];
  readonly #vcpus = new Map<number, Vcpu>();
  readonly #evtMask = new Uint8Array(EVTCHN_NR_PORTS);
  readonly #peers = new Map<number, Peer | undefined>();
  #peersGeneration = -1;
  #closed = false;

  private constructor(rpc: BlockingClient, info: GuestInfo, fds: number[]) {
    this.rpc = rpc;
    this.info = info;
    const [pageFd, grantFd, upcallFd, ...rest] = fds;
    const wakeFds = rest.slice(0, info.vcpus);
    const ramFds = rest.slice(info.vcpus);
    this.#page = mmap(PAGE_SIZE, { fd: pageFd!, flags: MmapConstants.MAP_SHARED });
    this.#words = new Uint32Array(this.#page);
    this.grants = new GrantTable(grantFd!, info.grantFrames);
    this.#upcall = EventFd.fromFd(upcallFd!);
    this.#wake = wakeFds.map((fd) => EventFd.fromFd(fd));
    this.memory = new GuestMemory(info.ram.map((b, i) => MmapRegion.fromFd(ramFds[i]!, b.base, b.size, { ownsFd: true })));
    closeFd(pageFd!);
  }

  /** Attaches to domain `domid` of the simulator at `socket`. */
  static attach(socket: string, domid: number): Guest {
    const rpc = BlockingClient.connect(socket);
    const r = rpc.call("guest.attach", { domid });
    if (r.refused) {
      rpc.close();
      throw new SimError("StartFailed", `attach to domain ${domid}: ${r.refused.code} ${r.refused.message}`);
    }
    return new Guest(rpc, r.result as GuestInfo, r.fds);
  }

  get generation(): number {
    return Atomics.load(this.#words, DOMPAGE_GENERATION / 4);
  }

  get paused(): boolean {
    return (Atomics.load(this.#words, DOMPAGE_FLAGS / 4) & DOMPAGE_FLAG_PAUSED) !== 0;
  }

  get dying(): boolean {
    return (Atomics.load(this.#words, DOMPAGE_FLAGS / 4) & DOMPAGE_FLAG_DYING) !== 0;
  }

  /** Blocks until the domain is unpaused (xl unpause). @throws SimError "Disconnected" when it is destroyed. */
  waitRunnable(): void {
    if (!this.paused) return;
    const r = this.rpc.call("guest.waitRunnable", { domid: this.info.domid });
    if (r.refused) throw new SimError("Disconnected", `domain ${this.info.domid} went away while paused`);
  }

  /** vCPU `index` (one per guest process is the usual arrangement: each blocks independently). */
  vcpu(index = 0, options: { ioreqTimeoutMs?: number } = {}): Vcpu {
    if (!Number.isInteger(index) || index < 0 || index >= this.info.vcpus) throw new RangeError(`vcpu ${index} of ${this.info.vcpus}`);
    let v = this.#vcpus.get(index);
    if (!v) {
      v = new Vcpu(this, index, this.#wake[index]!, options);
      this.#vcpus.set(index, v);
    }
    return v;
  }

  /** The level of interrupt line `irq` as the device model last set it (XEN_DMOP_set_irq_level). */
  irqLevel(irq: number): boolean {
    return ((Atomics.load(this.#words, DOMPAGE_IRQ_LEVELS / 4 + (irq >>> 5)) >>> (irq & 31)) & 1) === 1;
  }

  /**
   * Waits until line `irq` is asserted (a vGIC would take the interrupt then). Polls the line with a short
   * backoff; returns false on timeout.
   */
  waitForIrq(irq: number, timeoutMs = 5000): boolean {
    const deadline = Date.now() + timeoutMs;
    let spins = 0;
    let nap = 0.02;
    for (;;) {
      if (this.irqLevel(irq)) return true;
      if (this.dying) throw new SimError("Disconnected", `domain ${this.info.domid} is dying`);
      this.#upcall.read();
      if (++spins < 2000) continue;
      if (Date.now() > deadline) return false;
      sleepSync(nap);
      nap = Math.min(nap * 2, 1);
    }
  }

  /**
   * Opens this guest's xenbus: a XenStore connection on which xenstored treats every request as coming from
   * this domain (its permissions, its relative paths). One per call; the caller closes it.
   */
  xenbus(): XenBus {
    const r = this.rpc.call("guest.xenbus", { domid: this.info.domid });
    if (r.refused) throw new SimError("InvalidArgument", `xenbus: ${r.refused.code} ${r.refused.message}`);
    return new XenBus(r.fds[0]!, this.info.domid);
  }

  // ---- the guest's own event channels (EVTCHNOP_alloc_unbound / send, 2-level pending bits) ----------------

  /** EVTCHNOP_alloc_unbound: a port of this guest that `remoteDomid` may bind. */
  allocUnboundPort(remoteDomid = 0): number {
    const r = this.rpc.call("guest.allocUnbound", { domid: this.info.domid, remote: remoteDomid });
    if (r.refused) throw new SimError("InvalidArgument", `alloc_unbound: ${r.refused.code} ${r.refused.message}`);
    return (r.result as { port: number }).port;
  }

  /** EVTCHNOP_send: raises the peer of `port` (nothing while it is unbound). */
  notify(port: number): void {
    if (this.generation !== this.#peersGeneration) {
      for (const p of this.#peers.values()) p?.close();
      this.#peers.clear();
      this.#peersGeneration = this.generation;
    }
    let peer = this.#peers.get(port);
    if (!this.#peers.has(port)) {
      const r = this.rpc.call("guest.endpoint", { domid: this.info.domid, port });
      if (r.refused) throw new SimError("InvalidArgument", `send on port ${port}: ${r.refused.code}`);
      peer = peerFrom((r.result as { endpoint: EndpointDescription | null }).endpoint, r.fds);
      this.#peers.set(port, peer);
    }
    peer?.notify();
  }

  /** Pending, unmasked ports of this guest (each masked as it is returned, like the Linux evtchn upcall). */
  pendingEvents(max = 64): number[] {
    const ports = takePending(this.#words, DOMPAGE_PENDING / 4, (p) => this.#evtMask[p] === 1, max);
    for (const p of ports) this.#evtMask[p] = 1;
    return ports;
  }

  unmaskEvent(port: number): void {
    this.#evtMask[port] = 0;
    if (isPending(this.#words, DOMPAGE_PENDING / 4, port)) reselect(this.#words, DOMPAGE_PENDING / 4, port);
  }

  /** Waits for events on the guest's ports; returns them (empty on timeout). */
  waitEvents(timeoutMs = 5000): number[] {
    const deadline = Date.now() + timeoutMs;
    let nap = 0.02;
    for (let spins = 0; ; spins++) {
      const got = this.pendingEvents();
      if (got.length > 0) return got;
      if (this.dying) throw new SimError("Disconnected", `domain ${this.info.domid} is dying`);
      this.#upcall.read();
      if (spins < 2000) continue;
      if (Date.now() > deadline) return [];
      sleepSync(nap);
      nap = Math.min(nap * 2, 1);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const p of this.#peers.values()) p?.close();
    this.#peers.clear();
    for (const v of this.#vcpus.values()) v.close();
    this.grants.close();
    this.memory.close();
    for (const w of this.#wake) w.close();
    this.#upcall.close();
    munmap(this.#page);
    this.rpc.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
