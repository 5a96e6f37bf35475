// A small dom0 device model on the xen-sys API: the ioreq-server steps of the rig's ioreq-rng.c (create
// server, map the ioreq pages, map the MMIO range, enable, bind each vCPU's vp_eport) feeding a virtio-mmio
// register file (@xen-vhost/virtio-mmio) and raising the line with set_irq_level. It exists for the demo and
// for the guest kit's tests; the product's bridge is the real device model.
import { AtomicAccess, fence, noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import {
  IoReq, IOREQ_STATE_OFFSET, IOREQS_PER_PAGE, IOREQ_TYPE, STATE_IOREQ_INPROCESS, STATE_IOREQ_READY, STATE_IORESP_READY,
  type EventChannels, type GrantDevice, type Xen,
} from "@xen-vhost/xen-sys";
import { GuestMemory, MappedRegion } from "@xen-vhost/vm-memory";
import { VirtioMmioTransport, type AccessSize, type VirtioDevice } from "@xen-vhost/virtio-mmio";
import { GUEST_RAM0_BASE, PAGE_SIZE } from "../layout.js";
import { GrantDmaRegion } from "./grant-region.js";

export interface XenVirtioMmioOptions {
  domid: number;
  /** MMIO window base (the guest's `virtio,mmio` reg). */
  base: bigint;
  /** The SPI (set_irq_level). */
  irq: number;
  /** Guest RAM to map for the device (default: RAM0 of totPages from getdomaininfo). */
  ram?: { base: bigint; size: number }[];
  /**
   * "grant": the device sees only what the guest grants (a `xen,grant-dma` device): its memory is the grant
   * address space (1 << 63 | ref << 12), each access mapped through gntdev (GrantDmaRegion). Default
   * "foreign": all of guest RAM by foreign mapping.
   */
  dma?: "foreign" | "grant";
  /** Grant references reachable in grant mode (default 4096, from ref 0). */
  grantRefs?: number;
  /** Builds the device once guest memory is mapped. */
  device: (memory: GuestMemory, signal: () => void) => VirtioDevice;
  logger?: Logger;
  /** Called for each ioreq served (the demo prints them). */
  onAccess?: (access: { dir: "R" | "W"; offset: number; size: number; value: bigint }) => void;
}

export class XenVirtioMmioDevice implements Disposable {
  readonly transport: VirtioMmioTransport;
  readonly memory: GuestMemory;
  readonly serverId: number;
  readonly #xen: Xen;
  readonly #opts: XenVirtioMmioOptions;
  readonly #events: EventChannels;
  readonly #pages: ArrayBuffer;
  readonly #maps: ArrayBuffer[] = [];
  readonly #ports: number[] = [];
  readonly #slots: AtomicAccess[] = [];
  readonly #log: Logger;
  #gnt: GrantDevice | undefined;
  #closed = false;

  constructor(xen: Xen, opts: XenVirtioMmioOptions) {
    this.#xen = xen;
    this.#opts = opts;
    this.#log = opts.logger ?? noopLogger;
    const { domid } = opts;
    if (opts.dma === "grant") {
      this.#gnt = xen.transport.openGrantDevice();
      this.memory = new GuestMemory([new GrantDmaRegion(this.#gnt, domid, opts.grantRefs ?? 4096)]);
    } else {
      const ram = opts.ram ?? [{ base: GUEST_RAM0_BASE, size: Number(xen.getDomainInfo(domid).totPages) * PAGE_SIZE }];
      const regions = ram.map((r) => {
        const gfns = new BigUint64Array(r.size / PAGE_SIZE);
        for (let i = 0; i < gfns.length; i++) gfns[i] = (r.base >> 12n) + BigInt(i);
        const m = xen.mapForeignPages(domid, gfns);
        this.#maps.push(m.buffer);
        return new MappedRegion(r.base, m.buffer);
      });
      this.memory = new GuestMemory(regions);
    }
    let signal = (): void => undefined;
    this.transport = new VirtioMmioTransport(opts.device(this.memory, () => signal()), { logger: this.#log });
    signal = () => this.transport.signalUsedBuffers();
    this.transport.on("interrupt", (level) => {
      try {
        xen.setIrqLevel(domid, opts.irq, level ? 1 : 0);
      } catch (err) {
        this.#log.warn("set_irq_level failed", { err });
      }
    });
    this.serverId = xen.createIoreqServer(domid);
    this.#pages = xen.mapIoreqServerPages(domid, this.serverId).buffer;
    xen.mapIoRangeToIoreqServer(domid, this.serverId, opts.base, opts.base + 0x1ffn);
    xen.setIoreqServerState(domid, this.serverId, true);
    this.#events = xen.openEventChannels();
    const vcpus = xen.nrVcpus(domid);
    for (let v = 0; v < vcpus; v++) {
      const off = Math.floor(v / IOREQS_PER_PAGE) * PAGE_SIZE + (v % IOREQS_PER_PAGE) * IoReq.size;
      const vp = IoReq.read(new DataView(this.#pages), off).vp_eport;
      this.#slots.push(new AtomicAccess(this.#pages, off, IoReq.size));
      this.#ports.push(this.#events.bindInterdomain(domid, vp));
    }
    this.#events.on("event", (port) => {
      const v = this.#ports.indexOf(port);
      if (v >= 0) this.#serve(v);
    });
  }

  #serve(v: number): void {
    const s = this.#slots[v]!;
    const byte = s.load8(IOREQ_STATE_OFFSET);
    if ((byte & 0xf) !== STATE_IOREQ_READY) return;
    s.store8(IOREQ_STATE_OFFSET, (byte & ~0xf) | STATE_IOREQ_INPROCESS);
    fence();
    const type = s.load8(31);
    const addr = s.load64(0);
    const size = s.load32(20) as AccessSize;
    const read = ((byte >> 5) & 1) === 1;
    const offset = Number(addr - this.#opts.base);
    const finish = (data: bigint): void => {
      if (read) s.store64(8, data);
      fence();
      s.store8(IOREQ_STATE_OFFSET, (byte & ~0xf) | STATE_IORESP_READY);
      this.#events.notify(this.#ports[v]!);
    };
    if (type !== IOREQ_TYPE.COPY) {
      finish(read ? ~0n & 0xffff_ffff_ffff_ffffn : 0n);
      return;
    }
    if (read) {
      const r = this.transport.read(offset, size);
      const done = (x: number | bigint): void => {
        const value = BigInt(x);
        this.#opts.onAccess?.({ dir: "R", offset, size, value });
        finish(value);
      };
      if (r instanceof Promise) r.then(done, () => done(0xffffffffn));
      else done(r);
    } else {
      const value = s.load64(8);
      this.#opts.onAccess?.({ dir: "W", offset, size, value });
      const w = this.transport.write(offset, size, size === 8 ? value : Number(value));
      if (w instanceof Promise) w.then(() => finish(0n), () => finish(0n));
      else finish(0n);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#events.close();
    try {
      this.#xen.destroyIoreqServer(this.#opts.domid, this.serverId);
    } catch {
      // the domain is gone
    }
    this.#xen.unmap(this.#pages);
    this.memory.close();
    this.#gnt?.close();
    for (const m of this.#maps) this.#xen.unmap(m);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
