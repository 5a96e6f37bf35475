// A tiny device model written directly on xen-sys, as the first proof of the whole ioreq path: the same
// steps as /work/shared/xen-rig/ioreq-demo/ioreq-rng.c (create server, map the ioreq page, map the range,
// enable, bind each vCPU's vp_eport, then answer ioreqs and notify).
import { AtomicAccess, fence } from "@xen-vhost/vmm-sys-util";
import type { Xen} from "@xen-vhost/xen-sys";
import {
  IoReq, IOREQ_STATE_OFFSET, IOREQS_PER_PAGE, STATE_IOREQ_INPROCESS, STATE_IOREQ_READY, STATE_IORESP_READY,
  type EventChannels,
} from "@xen-vhost/xen-sys";

export interface MmioHandler {
  read(addr: bigint, size: number): bigint;
  write(addr: bigint, size: number, value: bigint): void;
}

export class TinyDeviceModel implements Disposable {
  readonly xen: Xen;
  readonly id: number;
  readonly events: EventChannels;
  readonly ports: number[] = [];
  readonly pages: ArrayBuffer;
  readonly served: { dir: "r" | "w"; addr: bigint; size: number; data: bigint }[] = [];
  readonly #domid: number;

  constructor(xen: Xen, domid: number, range: [bigint, bigint], handler: MmioHandler) {
    this.xen = xen;
    this.#domid = domid;
    this.id = xen.createIoreqServer(domid);
    this.pages = xen.mapIoreqServerPages(domid, this.id).buffer;
    xen.mapIoRangeToIoreqServer(domid, this.id, range[0], range[1]);
    xen.setIoreqServerState(domid, this.id, true);
    this.events = xen.openEventChannels();
    const vcpus = xen.nrVcpus(domid);
    const slots: AtomicAccess[] = [];
    for (let v = 0; v < vcpus; v++) {
      const off = Math.floor(v / IOREQS_PER_PAGE) * 4096 + (v % IOREQS_PER_PAGE) * IoReq.size;
      const vp = IoReq.read(new DataView(this.pages), off).vp_eport;
      this.ports.push(this.events.bindInterdomain(domid, vp));
      slots.push(new AtomicAccess(this.pages, off, IoReq.size));
    }
    this.events.on("event", (port) => {
      const v = this.ports.indexOf(port);
      if (v < 0) return;
      const s = slots[v]!;
      const byte = s.load8(IOREQ_STATE_OFFSET);
      if ((byte & 0xf) !== STATE_IOREQ_READY) return;
      s.store8(IOREQ_STATE_OFFSET, (byte & ~0xf) | STATE_IOREQ_INPROCESS);
      fence();
      const addr = s.load64(0);
      const size = s.load32(20);
      const dir = (byte >> 5) & 1;
      if (dir === 1) {
        const data = handler.read(addr, size);
        s.store64(8, data);
        this.served.push({ dir: "r", addr, size, data });
      } else {
        const data = s.load64(8);
        handler.write(addr, size, data);
        this.served.push({ dir: "w", addr, size, data });
      }
      fence();
      s.store8(IOREQ_STATE_OFFSET, (byte & ~0xf) | STATE_IORESP_READY);
      this.events.notify(port);
    });
  }

  /** The state nibble of vCPU 0's ioreq slot. */
  pagesState(): number {
    return new Uint8Array(this.pages)[IOREQ_STATE_OFFSET]! & 0xf;
  }

  close(): void {
    this.events.close();
    try {
      this.xen.destroyIoreqServer(this.#domid, this.id);
    } catch {
      // the domain may be gone
    }
    this.xen.unmap(this.pages);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
