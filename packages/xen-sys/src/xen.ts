// The typed API: one method per Xen operation a dom0 device model uses, over any XenTransport.
import { errnoName } from "@xen-vhost/vmm-sys-util";
import {
  XenDmOpCreateIoreqServer, XenDmOpGetIoreqServerInfo, XenDmOpNrVcpus, XEN_DMOP_IO_RANGE, type XenDmOpIoRangeType,
} from "./abi/dm-op.js";
import { XENMEM_resource_ioreq_server, XENMEM_resource_ioreq_server_frame_ioreq } from "./abi/hvm-ioreq.js";
import { CONSOLEIO_read, CONSOLEIO_write } from "./abi/xen.js";
import { decodeDmOp, dmOps, dmOpName, type BufIoreqMode } from "./dm-op.js";
import { XenError } from "./error.js";
import { EventChannels, type EventChannelsOptions } from "./event-channels.js";
import { silentLogger, type Logger } from "./logger.js";
import { PrivcmdTransport, type PrivcmdTransportOptions } from "./privcmd.js";
import { ControlOps, relabel, type DomainInfo, type PhysInfo } from "./sysctl.js";
import type {
  ForeignMapOptions, ForeignMapping, GrantDevice, IoeventfdRequest, TransportCapabilities, XenTransport,
} from "./transport.js";

export interface XenOpenOptions {
  /** Defaults to a PrivcmdTransport on the /dev/xen nodes. */
  transport?: XenTransport;
  /** Options for the default PrivcmdTransport. */
  privcmd?: PrivcmdTransportOptions;
  /** Pin the sysctl interface version instead of probing. */
  sysctlVersion?: number;
  /** Pin the domctl interface version instead of probing. */
  domctlVersion?: number;
  logger?: Logger;
}

/** An ioreq server's event channel and (legacy) page frames. */
export interface IoreqServerInfo {
  bufioreqPort: number;
  ioreqGfn: bigint;
  bufioreqGfn: bigint;
}

/** The synchronous ioreq pages of a server, mapped: slot v is vCPU v's `struct ioreq`. */
export interface IoreqPages {
  buffer: ArrayBuffer;
  /** Frames mapped (each holds 128 vCPUs' ioreqs). */
  frames: number;
}

export class Xen implements Disposable {
  readonly transport: XenTransport;
  readonly control: ControlOps;
  readonly #log: Logger;
  readonly #ownsTransport: boolean;

  private constructor(transport: XenTransport, owns: boolean, options: XenOpenOptions) {
    this.transport = transport;
    this.#ownsTransport = owns;
    this.#log = options.logger ?? silentLogger;
    const v: { sysctlVersion?: number; domctlVersion?: number } = {};
    if (options.sysctlVersion !== undefined) v.sysctlVersion = options.sysctlVersion;
    if (options.domctlVersion !== undefined) v.domctlVersion = options.domctlVersion;
    this.control = new ControlOps(transport, v);
  }

  /**
   * Opens Xen through `options.transport`, or privcmd by default.
   * @throws XenError "DeviceMissing" naming /dev/xen/privcmd when not running in dom0.
   */
  static open(options: XenOpenOptions = {}): Xen {
    if (options.transport) return new Xen(options.transport, false, options);
    const privcmd = { ...options.privcmd, ...(options.logger ? { logger: options.logger } : {}) };
    return new Xen(PrivcmdTransport.open(privcmd), true, options);
  }

  get closed(): boolean {
    return this.transport.closed;
  }

  // ---- domains (sysctl/domctl) ---------------------------------------------------------------------------

  /** Every domain, paging through XEN_SYSCTL_getdomaininfolist. */
  listDomains(): DomainInfo[] {
    const out: DomainInfo[] = [];
    const page = 256;
    for (let first = 0; ; ) {
      const batch = this.control.getDomainInfoList(first, page);
      out.push(...batch);
      if (batch.length < page) return out;
      first = batch[batch.length - 1]!.domid + 1;
    }
  }

  /** One domain (XEN_DOMCTL_getdomaininfo). @throws XenError "NoSuchDomain" */
  getDomainInfo(domid: number): DomainInfo {
    return this.control.getDomainInfo(domid);
  }

  /** XEN_SYSCTL_physinfo. */
  physinfo(): PhysInfo {
    return this.control.physinfo();
  }

  /** Writes to the Xen console (__HYPERVISOR_console_io CONSOLEIO_write). */
  consoleWrite(text: string | Uint8Array): void {
    const data = typeof text === "string" ? new TextEncoder().encode(text) : Uint8Array.from(text);
    if (data.byteLength === 0) return;
    try {
      this.transport.consoleIo(CONSOLEIO_write, data);
    } catch (err) {
      throw relabel(err, "console_io write");
    }
  }

  /** Reads up to `max` bytes of console input (CONSOLEIO_read; dom0 only). */
  consoleRead(max = 4096): Uint8Array {
    if (!Number.isInteger(max) || max < 1 || max > 1 << 20) throw new RangeError(`max ${max} must be 1..1 MiB`);
    const data = new Uint8Array(max);
    let n: number;
    try {
      n = this.transport.consoleIo(CONSOLEIO_read, data);
    } catch (err) {
      throw relabel(err, "console_io read");
    }
    return data.slice(0, Math.min(n, max));
  }

  // ---- device model (dm_op) ------------------------------------------------------------------------------

  /** Issues DM_OP buffers for `domid`, naming the op in errors ("dm_op create_ioreq_server (domain 7): ESRCH"). */
  dmOp(domid: number, bufs: readonly Uint8Array[]): void {
    const name = bufs[0] ? (dmOpName(bufs[0]) ?? "unknown") : "empty";
    try {
      this.transport.dmOp(domid, bufs);
    } catch (err) {
      throw relabel(err, `dm_op ${name}`, domid);
    }
  }

  /** XEN_DMOP_create_ioreq_server; returns the server id. Default: no buffered ioreqs. */
  createIoreqServer(domid: number, options: { bufioreq?: BufIoreqMode } = {}): number {
    const buf = dmOps.createIoreqServer(options.bufioreq ?? "OFF");
    this.dmOp(domid, [buf]);
    return decodeDmOp(XenDmOpCreateIoreqServer, buf).id;
  }

  /** XEN_DMOP_get_ioreq_server_info. */
  getIoreqServerInfo(domid: number, id: number, options: { noGfns?: boolean } = {}): IoreqServerInfo {
    const buf = dmOps.getIoreqServerInfo(id, options.noGfns ?? true);
    this.dmOp(domid, [buf]);
    const r = decodeDmOp(XenDmOpGetIoreqServerInfo, buf);
    return { bufioreqPort: r.bufioreq_port, ioreqGfn: r.ioreq_gfn, bufioreqGfn: r.bufioreq_gfn };
  }

  /** XEN_DMOP_map_io_range_to_ioreq_server: [start, end] inclusive; type MEMORY (MMIO) by default. */
  mapIoRangeToIoreqServer(domid: number, id: number, start: bigint, end: bigint, type: XenDmOpIoRangeType = XEN_DMOP_IO_RANGE.MEMORY): void {
    this.dmOp(domid, [dmOps.mapIoRange(id, type, start, end)]);
  }

  /** XEN_DMOP_unmap_io_range_from_ioreq_server. */
  unmapIoRangeFromIoreqServer(domid: number, id: number, start: bigint, end: bigint, type: XenDmOpIoRangeType = XEN_DMOP_IO_RANGE.MEMORY): void {
    this.dmOp(domid, [dmOps.unmapIoRange(id, type, start, end)]);
  }

  /** XEN_DMOP_set_ioreq_server_state. */
  setIoreqServerState(domid: number, id: number, enabled: boolean): void {
    this.dmOp(domid, [dmOps.setIoreqServerState(id, enabled)]);
  }

  /** XEN_DMOP_destroy_ioreq_server. */
  destroyIoreqServer(domid: number, id: number): void {
    this.dmOp(domid, [dmOps.destroyIoreqServer(id)]);
  }

  /** XEN_DMOP_set_irq_level (Arm SPIs). */
  setIrqLevel(domid: number, irq: number, level: 0 | 1): void {
    this.dmOp(domid, [dmOps.setIrqLevel(irq, level)]);
  }

  /** XEN_DMOP_set_isa_irq_level (x86). */
  setIsaIrqLevel(domid: number, isaIrq: number, level: 0 | 1): void {
    this.dmOp(domid, [dmOps.setIsaIrqLevel(isaIrq, level)]);
  }

  /** XEN_DMOP_set_pci_intx_level (x86). */
  setPciIntxLevel(domid: number, sbdf: { segment: number; bus: number; device: number }, intx: number, level: 0 | 1): void {
    this.dmOp(domid, [dmOps.setPciIntxLevel(sbdf, intx, level)]);
  }

  /** XEN_DMOP_inject_msi (x86). */
  injectMsi(domid: number, addr: bigint, data: number): void {
    this.dmOp(domid, [dmOps.injectMsi(addr, data)]);
  }

  /** XEN_DMOP_modified_memory: tells Xen (log-dirty) which guest frames the device model wrote. */
  modifiedMemory(domid: number, extents: readonly { firstPfn: bigint; nr: number }[]): void {
    if (extents.length === 0) return;
    this.dmOp(domid, dmOps.modifiedMemory(extents));
  }

  /** XEN_DMOP_nr_vcpus. */
  nrVcpus(domid: number): number {
    const buf = dmOps.nrVcpus();
    this.dmOp(domid, [buf]);
    return decodeDmOp(XenDmOpNrVcpus, buf).vcpus;
  }

  // ---- memory --------------------------------------------------------------------------------------------

  /**
   * Maps guest frames. Pages that fail make this throw "MappingFailed" (with `pageErrors`) unless
   * `allowPartial` is set, in which case the caller inspects `errors` (0 = mapped).
   */
  mapForeignPages(domid: number, gfns: BigUint64Array | readonly (number | bigint)[], options: ForeignMapOptions & { allowPartial?: boolean } = {}): ForeignMapping {
    const frames = gfns instanceof BigUint64Array ? gfns : BigUint64Array.from(gfns, (g) => BigInt(g));
    const m = this.transport.mmapForeign(domid, frames, options);
    if (!options.allowPartial) {
      const bad = m.errors.findIndex((e) => e !== 0);
      if (bad >= 0) {
        this.transport.unmap(m.buffer);
        const code = errnoName(m.errors[bad]!);
        throw new XenError("MappingFailed", `IOCTL_PRIVCMD_MMAPBATCH_V2 (domain ${domid}): frame 0x${frames[bad]!.toString(16)} (page ${bad}): ${code}`, {
          op: "IOCTL_PRIVCMD_MMAPBATCH_V2", code, errno: m.errors[bad]!, domid, pageErrors: m.errors,
        });
      }
    }
    return m;
  }

  /** Frames of a resource (IOCTL_PRIVCMD_MMAP_RESOURCE). */
  mapResource(domid: number, type: number, id: number, frame: number, nrFrames: number): ArrayBuffer {
    return this.transport.mmapResource(domid, type, id, frame, nrFrames);
  }

  /** Frames a resource has (MMAP_RESOURCE size query). */
  resourceSize(domid: number, type: number, id: number): number {
    return this.transport.resourceSize(domid, type, id);
  }

  /**
   * Maps every synchronous ioreq page of a server: the resource has 1 + n frames (frame 0 is the buffered
   * page), so frames 1..size-1, enough for any vCPU count. Falls back to one frame if the size query fails.
   */
  mapIoreqServerPages(domid: number, id: number): IoreqPages {
    let frames = 1;
    try {
      frames = Math.max(1, this.transport.resourceSize(domid, XENMEM_resource_ioreq_server, id) - 1);
    } catch (err) {
      this.#log.debug("ioreq resource size query failed; mapping one frame", { domid, id, err });
    }
    const buffer = this.transport.mmapResource(domid, XENMEM_resource_ioreq_server, id, XENMEM_resource_ioreq_server_frame_ioreq(0), frames);
    return { buffer, frames };
  }

  /** Releases a mapping from mapForeignPages / mapResource / mapIoreqServerPages. Idempotent. */
  unmap(buffer: ArrayBuffer): void {
    this.transport.unmap(buffer);
  }

  /** IOCTL_PRIVCMD_RESTRICT: this handle may only target `domid` from now on. */
  restrict(domid: number): void {
    this.transport.restrict(domid);
  }

  // ---- notifications -------------------------------------------------------------------------------------

  /** Whether privcmd irqfd/ioeventfd exist (Linux >= 6.7). */
  capabilities(): TransportCapabilities {
    return this.transport.capabilities();
  }

  /** Routes an eventfd to a level-1 IRQ: each signal issues `set_irq_level(irq, 1)` (Arm) in the kernel. */
  assignIrqfd(domid: number, eventFd: number, irq: number, options: { deassign?: boolean } = {}): void {
    this.transport.irqfd({ domid, eventFd, dmOp: dmOps.setIrqLevel(irq, 1), deassign: options.deassign ?? false });
  }

  /** Kernel-side virtio-mmio QUEUE_NOTIFY → eventfd. */
  assignIoeventfd(req: IoeventfdRequest): void {
    this.transport.ioeventfd(req);
  }

  /** Opens /dev/xen/evtchn on the event loop. */
  openEventChannels(options: EventChannelsOptions = {}): EventChannels {
    return new EventChannels(this.transport.openEventChannels(), { logger: this.#log, ...options });
  }

  /** Opens /dev/xen/gntdev. */
  openGrantDevice(): GrantDevice {
    return this.transport.openGrantDevice();
  }

  /** Closes the transport if this object opened it. Idempotent. */
  close(): void {
    if (this.#ownsTransport) this.transport.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
