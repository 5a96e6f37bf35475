// A simulated domain: guest RAM in memfds, vCPUs, the domain page (pending set, irq lines, flags), the grant
// table frames and the event channel port space. Follows xen/common/domain.c (lifecycle) and
// xen/common/event_channel.c (port states) where it models them.
import { EventFd, ftruncate, memfdCreate, mmap, munmap, close as closeFd } from "@xen-vhost/vmm-sys-util";
import {
  DOMPAGE_FLAGS, DOMPAGE_FLAG_DYING, DOMPAGE_FLAG_PAUSED, DOMPAGE_GENERATION, DOMPAGE_IRQ_LEVELS, DOMPAGE_NR_IRQS,
  EVTCHN_NR_PORTS, PAGE_SIZE,
} from "../layout.js";
import { refuse } from "../error.js";
import type { IoreqServer } from "./ioreq-server.js";
import type { EvtchnDeviceRec } from "./evtchn.js";

export interface RamBank {
  /** Guest physical base address. */
  base: bigint;
  size: number;
  /** memfd holding the bank (offset 0 = base). */
  fd: number;
}

/** Who consumes events on a port (Xen: the channel's `xen_consumer`, or the guest's upcall). */
export type PortConsumer =
  | { kind: "device"; device: EvtchnDeviceRec }
  | { kind: "ioreq"; vcpu: number }
  | { kind: "guest" };

/** An allocated port (common/event_channel.c ECS_UNBOUND / ECS_INTERDOMAIN / ECS_VIRQ). */
export interface PortRec {
  state: "unbound" | "interdomain" | "virq";
  /** unbound: the domain allowed to bind; interdomain: the peer domain. */
  remoteDomid: number;
  remotePort: number;
  consumer: PortConsumer;
}

export interface DomainConfig {
  domid?: number;
  name?: string;
  /** RAM0 bytes at GUEST_RAM0_BASE (default 64 MiB). */
  ram?: number;
  /** RAM1 bytes at GUEST_RAM1_BASE (default none). */
  ram1?: number;
  vcpus?: number;
  /** Start paused, as `xl create -p` (default true). */
  paused?: boolean;
  /** Arm vGIC SPIs (default 64: lines 32..95). */
  nrSpis?: number;
  /** Grant table frames (default 4: 2048 v1 entries). */
  grantFrames?: number;
}

export class Domain {
  readonly domid: number;
  readonly name: string;
  readonly uuid: Uint8Array;
  readonly vcpus: number;
  readonly nrSpis: number;
  readonly ram: RamBank[];
  readonly ports = new Map<number, PortRec>();
  readonly ioreqServers = new Map<number, IoreqServer>();
  /** The domain page memfd (shared with guest processes). */
  readonly pageFd: number;
  readonly page: ArrayBuffer;
  readonly words: Uint32Array;
  /** Grant table frames memfd (v1 entries), written by the guest, read here. */
  readonly grantFd: number;
  readonly grantFrames: number;
  readonly grantTable: ArrayBuffer;
  /** Per-vCPU eventfd a vCPU blocks on while its ioreq is out (blocking reads; only written here). */
  readonly vcpuWake: EventFd[];
  /** The guest's upcall: events on guest-consumed ports and interrupt line changes. */
  readonly upcall: EventFd;
  readonly createdAt = process.hrtime.bigint();
  /** vCPUs online (`xl vcpu-set`): 1..vcpus; getdomaininfo's nr_online_vcpus. */
  onlineVcpus: number;
  /** Pages handed back by the balloon (`xl mem-set` below the boot size): tot_pages = RAM - this. */
  balloonedPages = 0;
  pauseCount = 0;
  dying = false;
  /** Guest processes attached (a vCPU "running"). */
  attached = 0;
  /** Callbacks waiting for the domain to become runnable. */
  readonly runnableWaiters: (() => void)[] = [];

  constructor(domid: number, cfg: DomainConfig, ramLayout: { base: bigint; size: number }[]) {
    this.domid = domid;
    this.name = cfg.name ?? `guest${domid}`;
    this.vcpus = cfg.vcpus ?? 1;
    this.onlineVcpus = this.vcpus;
    this.nrSpis = cfg.nrSpis ?? 64;
    this.uuid = new Uint8Array(16);
    crypto.getRandomValues(this.uuid);
    this.uuid[6] = (this.uuid[6]! & 0x0f) | 0x40;
    this.uuid[8] = (this.uuid[8]! & 0x3f) | 0x80;
    this.ram = [];
    const opened: number[] = [];
    try {
      for (const b of ramLayout) {
        const fd = memfdCreate(`xen-sim-d${domid}-ram@${b.base.toString(16)}`);
        opened.push(fd);
        ftruncate(fd, b.size);
        this.ram.push({ base: b.base, size: b.size, fd });
      }
      this.pageFd = memfdCreate(`xen-sim-d${domid}-page`);
      opened.push(this.pageFd);
      ftruncate(this.pageFd, PAGE_SIZE);
      this.grantFrames = cfg.grantFrames ?? 4;
      this.grantFd = memfdCreate(`xen-sim-d${domid}-gnttab`);
      opened.push(this.grantFd);
      ftruncate(this.grantFd, this.grantFrames * PAGE_SIZE);
    } catch (err) {
      for (const fd of opened) closeFd(fd);
      throw err;
    }
    this.page = mmap(PAGE_SIZE, { fd: this.pageFd });
    this.words = new Uint32Array(this.page);
    this.grantTable = mmap(this.grantFrames * PAGE_SIZE, { fd: this.grantFd });
    this.vcpuWake = Array.from({ length: this.vcpus }, () => new EventFd({ nonblocking: false }));
    this.upcall = new EventFd();
    if (cfg.paused ?? true) this.pause();
  }

  get paused(): boolean {
    return this.pauseCount > 0;
  }

  /** Bumps the generation guests use to invalidate their route and endpoint caches. */
  touch(): void {
    Atomics.add(this.words, DOMPAGE_GENERATION / 4, 1);
  }

  /** domain_pause_by_systemcontroller: nests (common/domain.c uses a counter). */
  pause(): void {
    this.pauseCount++;
    Atomics.or(this.words, DOMPAGE_FLAGS / 4, DOMPAGE_FLAG_PAUSED);
  }

  /** domain_unpause_by_systemcontroller: EINVAL when not paused by the controller. */
  unpause(): void {
    if (this.pauseCount === 0) refuse("EINVAL", `domain ${this.domid} is not paused`);
    if (--this.pauseCount === 0) {
      Atomics.and(this.words, DOMPAGE_FLAGS / 4, ~DOMPAGE_FLAG_PAUSED);
      for (const w of this.runnableWaiters.splice(0)) w();
    }
  }

  /** The lowest free port >= 1 (common/event_channel.c get_free_port; port 0 is reserved). */
  allocPort(rec: PortRec): number {
    for (let p = 1; p < EVTCHN_NR_PORTS; p++) {
      if (!this.ports.has(p)) {
        this.ports.set(p, rec);
        return p;
      }
    }
    return refuse("ENOSPC", `domain ${this.domid} has no free event channel`);
  }

  /** Sets or clears an interrupt line; returns whether it rose. */
  setIrqLevel(irq: number, level: boolean): boolean {
    if (irq < 0 || irq >= DOMPAGE_NR_IRQS) refuse("EINVAL");
    const word = DOMPAGE_IRQ_LEVELS / 4 + (irq >>> 5);
    const bit = (1 << (irq & 31)) >>> 0;
    const old = level ? Atomics.or(this.words, word, bit) : Atomics.and(this.words, word, ~bit);
    return level && (old & bit) === 0;
  }

  irqLevel(irq: number): boolean {
    return ((Atomics.load(this.words, DOMPAGE_IRQ_LEVELS / 4 + (irq >>> 5)) >>> (irq & 31)) & 1) === 1;
  }

  /** Which RAM bank holds guest frame `gfn`, and the byte offset in its memfd. */
  locate(gfn: bigint): { bank: RamBank; offset: number } | undefined {
    const addr = gfn << 12n;
    for (const bank of this.ram) {
      if (addr >= bank.base && addr < bank.base + BigInt(bank.size)) return { bank, offset: Number(addr - bank.base) };
    }
    return undefined;
  }

  /** Pages of RAM the domain was built with (max_pages). */
  totPages(): bigint {
    return BigInt(this.ram.reduce((n, b) => n + b.size, 0) / PAGE_SIZE);
  }

  /** Pages the domain holds now (tot_pages): the boot RAM minus what the balloon gave back. */
  currentPages(): bigint {
    return this.totPages() - BigInt(this.balloonedPages);
  }

  /** `xl vcpu-set`: vCPUs above `n` go offline (the guest hot-unplugs them). */
  setOnlineVcpus(n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > this.vcpus) refuse("EINVAL", `vcpus ${n} must be 1..${this.vcpus}`);
    this.onlineVcpus = n;
  }

  /** `xl mem-set` as a cooperating balloon driver carries it out: tot_pages becomes `pages`. */
  setCurrentPages(pages: number): void {
    const max = Number(this.totPages());
    if (!Number.isInteger(pages) || pages < 1 || pages > max) refuse("EINVAL", `${pages} pages must be 1..${max}`);
    this.balloonedPages = max - pages;
  }

  /** SHUTDOWN_* code once shut down (SCHEDOP_shutdown or XEN_DMOP_remote_shutdown). */
  shutdownReason: number | undefined;

  /** domain_shutdown: vCPUs stop running (the guest processes see the domain as dying). */
  shutdown(reason: number): void {
    if (this.shutdownReason !== undefined) return;
    this.shutdownReason = reason;
    Atomics.or(this.words, DOMPAGE_FLAGS / 4, DOMPAGE_FLAG_DYING);
    for (const w of this.vcpuWake) w.write(1);
    this.upcall.write(1);
  }

  /** domain_kill: marks dying, wakes every vCPU so blocked guests notice, releases memory. */
  destroy(): void {
    if (this.dying) return;
    this.dying = true;
    Atomics.or(this.words, DOMPAGE_FLAGS / 4, DOMPAGE_FLAG_DYING);
    this.touch();
    for (const w of this.vcpuWake) w.write(1);
    this.upcall.write(1);
    for (const w of this.runnableWaiters.splice(0)) w();
  }

  /** Releases the simulator's own handles (guest processes keep theirs until they exit). */
  release(): void {
    for (const w of this.vcpuWake) w.close();
    this.upcall.close();
    munmap(this.page);
    munmap(this.grantTable);
    for (const b of this.ram) closeFd(b.fd);
    closeFd(this.pageFd);
    closeFd(this.grantFd);
  }
}
