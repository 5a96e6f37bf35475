// IOREQ servers, following xen/common/ioreq.c (Xen 4.17): up to MAX_NR_IOREQ_SERVERS per domain, one
// Xen-consumed event channel per vCPU (offered to the emulator's domain), the synchronous ioreq pages as
// frames 1.. of the XENMEM_resource_ioreq_server resource and the buffered page as frame 0.
import { ftruncate, memfdCreate, mmap, munmap, close as closeFd } from "@xen-vhost/vmm-sys-util";
import { IoReq, IOREQS_PER_PAGE } from "@xen-vhost/xen-sys";
import { PAGE_SIZE } from "../layout.js";
import type { Domain } from "./domain.js";

/** xen/include/xen/ioreq.h: MAX_NR_IOREQ_SERVERS. */
export const MAX_NR_IOREQ_SERVERS = 8;

export interface IoRange {
  /** XEN_DMOP_IO_RANGE_PORT 0, _MEMORY 1, _PCI 2. */
  type: number;
  start: bigint;
  /** Inclusive. */
  end: bigint;
}

export class IoreqServer {
  readonly id: number;
  readonly domid: number;
  readonly emulatorDomid: number;
  readonly bufioreq: number;
  /** Ports in the target domain, one per vCPU (ioreq_vcpu.ioreq_evtchn). */
  readonly ports: number[];
  readonly bufioreqPort: number;
  readonly ranges: IoRange[] = [];
  enabled = false;
  /** privcmd ioeventfds registered on this server's ports (the simulator holds a dup of each eventfd). */
  ioeventfds: { id: number; fd: number; addr: bigint; addrLen: number; vq: number; client: number }[] = [];
  /** 1 buffered frame + the synchronous frames. */
  readonly frames: number;
  readonly fd: number;
  readonly #mapping: ArrayBuffer;

  constructor(id: number, dom: Domain, emulatorDomid: number, bufioreq: number) {
    this.id = id;
    this.domid = dom.domid;
    this.emulatorDomid = emulatorDomid;
    this.bufioreq = bufioreq;
    this.frames = 1 + Math.ceil(dom.vcpus / IOREQS_PER_PAGE);
    this.fd = memfdCreate(`xen-sim-d${dom.domid}-ioreq${id}`);
    try {
      ftruncate(this.fd, this.frames * PAGE_SIZE);
      this.#mapping = mmap(this.frames * PAGE_SIZE, { fd: this.fd });
    } catch (err) {
      closeFd(this.fd);
      throw err;
    }
    // alloc_unbound_xen_event_channel(d, vcpu, s->emulator->domain_id, ...) per vCPU.
    this.ports = Array.from({ length: dom.vcpus }, (_, v) =>
      dom.allocPort({ state: "unbound", remoteDomid: emulatorDomid, remotePort: 0, consumer: { kind: "ioreq", vcpu: v } }),
    );
    this.bufioreqPort = bufioreq !== 0 ? dom.allocPort({ state: "unbound", remoteDomid: emulatorDomid, remotePort: 0, consumer: { kind: "ioreq", vcpu: 0 } }) : 0;
    // ioreq_update_evtchn: each vCPU's slot carries its port. Xen writes it once the page exists and the
    // vCPU is added; here the page exists from creation, so the port is visible as soon as it is mapped.
    const view = new DataView(this.#mapping);
    for (let v = 0; v < dom.vcpus; v++) {
      const off = PAGE_SIZE * (1 + Math.floor(v / IOREQS_PER_PAGE)) + (v % IOREQS_PER_PAGE) * IoReq.size;
      IoReq.write(view, off, { vp_eport: this.ports[v]! });
    }
  }

  /** The rangeset of `type` overlaps [start, end]? */
  overlaps(type: number, start: bigint, end: bigint): boolean {
    return this.ranges.some((r) => r.type === type && r.start <= end && start <= r.end);
  }

  release(dom: Domain): void {
    for (const e of this.ioeventfds) closeFd(e.fd);
    this.ioeventfds = [];
    munmap(this.#mapping);
    closeFd(this.fd);
    void dom;
  }
}
