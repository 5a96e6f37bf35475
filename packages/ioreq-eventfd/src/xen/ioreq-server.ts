// An ioreq server for one guest: the Xen side of a device model. It asks Xen to forward the guest's accesses
// to registered MMIO/PIO ranges, receives them on one event channel per vCPU, runs them through the ioreq
// state machine (ioreq-processor.ts) against the registered handlers, and answers.
//
// Set-up order (xen/common/ioreq.c; the sequence verified on real Xen in xen-rig/ioreq-demo/ioreq-rng.c):
// nr_vcpus -> create_ioreq_server -> [get_ioreq_server_info for the buffered port] -> MMAP_RESOURCE of every
// ioreq frame (frames 1..n, 128 vCPUs each; frame 0 is the buffered page) -> set_ioreq_server_state(1) ->
// read each slot's vp_eport and bind it. The order matters: Xen writes vp_eport into the slots only when
// the server is enabled (ioreq_server_enable -> ioreq_update_evtchn), so ports read before enabling are 0.
// Then the evtchn fd and (optionally) the privcmd transport are restricted to the guest.
import { EventEmitter } from "eventemitter3";
import { SysError } from "@xen-vhost/vmm-sys-util";
import {
  IoReq, XEN_DMOP_IO_RANGE, XENMEM_resource_ioreq_server, XENMEM_resource_ioreq_server_frame_bufioreq, IOREQS_PER_PAGE,
  type BufIoreqMode, type EventChannels, type Xen,
} from "@xen-vhost/xen-sys";
import { NotifierError, classifyXenError } from "../error.js";
import { nullLogger, type Logger } from "../logger.js";
import type { IoSpace } from "../notifier.js";
import { BufferedIoreqReader } from "./buffered-ioreq.js";
import { IoRangeTable, MAX_IO_ADDRESS, type IoHandler, type IoRange } from "./io-range.js";
import { IoreqProcessor, type DoorbellTable, type IoreqGuestMemory, type IoreqStats } from "./ioreq-processor.js";

export interface IoreqServerOptions {
  /** The Xen handle (privcmd, or a simulator's transport). Borrowed: close() does not close it. */
  xen: Xen;
  /** The guest. */
  domid: number;
  /** Buffered ioreqs (x86 stdvga-style posted writes). Default "OFF", as virtio-mmio needs none. */
  bufioreq?: BufIoreqMode;
  /** Guest memory for `data_is_ptr` (rep string I/O) requests; without it they are ignored with a warning. */
  guestMemory?: IoreqGuestMemory;
  /** Called for IOREQ_TYPE_INVALIDATE: drop cached foreign mappings of guest memory. */
  onInvalidate?: () => void;
  /**
   * Restrict the Xen transport to this guest once set up (IOCTL_PRIVCMD_RESTRICT; least privilege).
   * Default true: give each ioreq server its own transport. Pass false when the transport is shared with
   * work for other domains (sysctls, other guests), which a restricted privcmd fd refuses with EPERM.
   */
  restrictTransport?: boolean;
  logger?: Logger;
}

export interface IoreqServerEvents {
  /** The server stopped (close(), or the event channel device failed: `cause`). */
  close: [cause?: Error];
}

/** A registered range; `unmap()` stops Xen forwarding it and drops the handler. Idempotent. */
export interface IoRangeHandle extends Disposable {
  readonly space: IoSpace;
  readonly start: bigint;
  readonly length: number;
  readonly closed: boolean;
  unmap(): void;
}

/** Something attached to the server's write path (XenNotifier): consulted for every write, told first on close. */
export interface DoorbellAttachment extends DoorbellTable {
  serverClosing(): void;
}

// Servers still open when the process exits are destroyed from one 'exit' listener: an ioreq server outlives
// its creator in Xen (it is not tied to the privcmd fd), and a stale one keeps claiming the guest's ranges.
const live = new Set<IoreqServer>();
function closeAllOnExit(): void {
  for (const s of [...live]) {
    try {
      s.close();
    } catch {
      // exiting anyway; nothing left to report to
    }
  }
}
function track(s: IoreqServer): void {
  if (live.size === 0) process.on("exit", closeAllOnExit);
  live.add(s);
}
function untrack(s: IoreqServer): void {
  if (live.delete(s) && live.size === 0) process.off("exit", closeAllOnExit);
}

function checkDomid(domid: number): void {
  if (!Number.isInteger(domid) || domid < 0 || domid >= 0x7ff0) throw new RangeError(`domid ${domid} is not a guest domain id`);
}

class RangeHandle implements IoRangeHandle {
  readonly space: IoSpace;
  readonly start: bigint;
  readonly length: number;
  readonly #onUnmap: () => void;
  #closed = false;

  constructor(space: IoSpace, start: bigint, length: number, onUnmap: () => void) {
    this.space = space;
    this.start = start;
    this.length = length;
    this.#onUnmap = onUnmap;
  }

  get closed(): boolean {
    return this.#closed;
  }

  unmap(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#onUnmap();
  }

  [Symbol.dispose](): void {
    this.unmap();
  }
}

export class IoreqServer extends EventEmitter<IoreqServerEvents> implements Disposable {
  readonly xen: Xen;
  readonly domid: number;
  /** The ioservid_t Xen assigned. */
  readonly id: number;
  /** vCPUs of the guest (XEN_DMOP_nr_vcpus), each with its ioreq slot and event channel. */
  readonly vcpus: number;
  /** ioreq frames mapped (ceil(vcpus / 128) or more). */
  readonly frames: number;
  readonly #pages: ArrayBuffer;
  readonly #bufPage: ArrayBuffer | undefined;
  readonly #evtchn: EventChannels;
  readonly #localPorts: readonly number[];
  readonly #portToVcpu: Map<number, number>;
  readonly #bufPort: number;
  readonly #ranges = new IoRangeTable();
  readonly #handles = new Set<RangeHandle>();
  readonly #handleOf = new Map<IoRange, RangeHandle>();
  readonly #processor: IoreqProcessor;
  readonly #buffered: BufferedIoreqReader | undefined;
  readonly #log: Logger;
  #attachment: DoorbellAttachment | undefined;
  #enabled = true;
  #closed = false;

  private constructor(init: {
    options: IoreqServerOptions;
    id: number;
    vcpus: number;
    frames: number;
    pages: ArrayBuffer;
    bufPage: ArrayBuffer | undefined;
    evtchn: EventChannels;
    localPorts: number[];
    bufPort: number;
  }) {
    super();
    const { options } = init;
    this.xen = options.xen;
    this.domid = options.domid;
    this.id = init.id;
    this.vcpus = init.vcpus;
    this.frames = init.frames;
    this.#pages = init.pages;
    this.#bufPage = init.bufPage;
    this.#evtchn = init.evtchn;
    this.#localPorts = init.localPorts;
    this.#portToVcpu = new Map(init.localPorts.map((p, v) => [p, v]));
    this.#bufPort = init.bufPort;
    this.#log = options.logger ?? nullLogger;
    const evtchn = init.evtchn;
    const ports = this.#localPorts;
    this.#processor = new IoreqProcessor({
      pages: init.pages,
      vcpus: init.vcpus,
      ranges: this.#ranges,
      notify: (v) => evtchn.notify(ports[v]!),
      guestMemory: options.guestMemory,
      onInvalidate: options.onInvalidate,
      logger: this.#log,
    });
    this.#buffered =
      init.bufPage !== undefined
        ? new BufferedIoreqReader(init.bufPage, this.#ranges, this.#processor.stats, () => this.#attachment, this.#log)
        : undefined;
    evtchn.on("event", (port) => this.#onEvent(port));
    evtchn.on("close", (cause) => {
      if (!this.#closed) this.#close(cause ?? new NotifierError("Hypervisor", "the event channel device closed"));
    });
  }

  /**
   * Creates, maps, enables and binds an ioreq server for `domid`. On failure everything done so far is
   * undone (the server destroyed, pages unmapped, ports unbound).
   * @throws NotifierError `DeviceUnavailable`, `InvalidArgument` (no such domain), `Unsupported` (Xen built
   *   without CONFIG_IOREQ_SERVER, or >128 vCPUs without a resource size query), `Hypervisor`.
   */
  static create(options: IoreqServerOptions): IoreqServer {
    if (typeof options !== "object" || options === null) throw new TypeError("IoreqServer options must be an object");
    const { xen, domid } = options;
    checkDomid(domid);
    const bufioreq = options.bufioreq ?? "OFF";
    if (bufioreq !== "OFF" && bufioreq !== "LEGACY" && bufioreq !== "ATOMIC") throw new RangeError(`bufioreq ${String(bufioreq)}`);
    const log = options.logger ?? nullLogger;
    const undo: (() => void)[] = [];
    const step = <T>(what: string, fn: () => T): T => {
      try {
        return fn();
      } catch (err) {
        throw classifyXenError(err, `ioreq server for domain ${domid}: ${what}`);
      }
    };
    try {
      const vcpus = step("nr_vcpus", () => xen.nrVcpus(domid));
      if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 0x10000)
        throw new NotifierError("Hypervisor", `domain ${domid} reports ${vcpus} vCPUs`);
      const id = step("create_ioreq_server", () => xen.createIoreqServer(domid, { bufioreq }));
      undo.push(() => xen.destroyIoreqServer(domid, id));
      let bufPort = -1;
      let bufPage: ArrayBuffer | undefined;
      if (bufioreq !== "OFF") {
        bufPort = step("get_ioreq_server_info", () => xen.getIoreqServerInfo(domid, id).bufioreqPort);
        bufPage = step("map buffered ioreq frame", () => xen.mapResource(domid, XENMEM_resource_ioreq_server, id, XENMEM_resource_ioreq_server_frame_bufioreq, 1));
        const p = bufPage;
        undo.push(() => xen.unmap(p));
      }
      const { buffer: pages, frames } = step("map ioreq frames", () => xen.mapIoreqServerPages(domid, id));
      undo.push(() => xen.unmap(pages));
      if (frames * IOREQS_PER_PAGE < vcpus || pages.byteLength < vcpus * IoReq.size)
        throw new NotifierError(
          "Unsupported",
          `ioreq server for domain ${domid}: ${frames} ioreq frame(s) hold ${frames * IOREQS_PER_PAGE} vCPUs, the guest has ${vcpus}`,
        );
      // vp_eport is only valid once the server is enabled (see the header comment).
      step("set_ioreq_server_state(1)", () => xen.setIoreqServerState(domid, id, true));
      const evtchn = step("open /dev/xen/evtchn", () => xen.openEventChannels({ logger: log }));
      undo.push(() => evtchn.close());
      const slots = new DataView(pages);
      const localPorts: number[] = [];
      for (let v = 0; v < vcpus; v++) {
        const remote = slots.getUint32(v * IoReq.size + 24, true);
        localPorts.push(step(`bind vCPU ${v}'s port ${remote}`, () => evtchn.bindInterdomain(domid, remote)));
      }
      let localBufPort = -1;
      if (bufPort >= 0) localBufPort = step(`bind buffered ioreq port ${bufPort}`, () => evtchn.bindInterdomain(domid, bufPort));
      // Least privilege: from here on these fds can only reach this guest.
      step("IOCTL_EVTCHN_RESTRICT_DOMID", () => evtchn.restrict(domid));
      if (options.restrictTransport !== false) step("IOCTL_PRIVCMD_RESTRICT", () => xen.restrict(domid));
      const server = new IoreqServer({ options, id, vcpus, frames, pages, bufPage, evtchn, localPorts, bufPort: localBufPort });
      track(server);
      log.info("ioreq server created", { domid, id, vcpus, frames, bufioreq });
      return server;
    } catch (err) {
      for (const fn of undo.reverse()) {
        try {
          fn();
        } catch (e) {
          log.warn("ioreq server: undoing a set-up step failed", { domid, err: e });
        }
      }
      throw err;
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  get enabled(): boolean {
    return this.#enabled;
  }

  /** The event channel ports bound here, indexed by vCPU (privcmd's kernel ioeventfd needs them). */
  get localPorts(): readonly number[] {
    return this.#localPorts;
  }

  /** The mapping of the ioreq frames (privcmd's kernel ioeventfd needs its start). */
  get ioreqPages(): ArrayBuffer {
    this.#open();
    return this.#pages;
  }

  /** What the loop has seen so far (live counters). */
  get stats(): Readonly<IoreqStats> {
    return this.#processor.stats;
  }

  #open(): void {
    if (this.#closed) throw SysError.closed("IoreqServer");
  }

  /** XEN_DMOP_set_ioreq_server_state: a disabled server gets no requests (ranges stay registered). */
  setEnabled(enabled: boolean): void {
    this.#open();
    if (enabled === this.#enabled) return;
    try {
      this.xen.setIoreqServerState(this.domid, this.id, enabled);
    } catch (err) {
      throw classifyXenError(err, `set_ioreq_server_state(${enabled ? 1 : 0})`);
    }
    this.#enabled = enabled;
  }

  /**
   * Forwards guest MMIO [start, start + length) to `handler` (XEN_DMOP_map_io_range_to_ioreq_server, type
   * MEMORY). Offsets passed to the handler are relative to `start`.
   * @throws NotifierError `AddressInUse` (overlaps a range of this server, or Xen's EEXIST for another server's).
   */
  mapMmio(start: bigint, length: number, handler: IoHandler, options: { weak?: boolean } = {}): IoRangeHandle {
    return this.#map("mmio", start, length, handler, options.weak === true);
  }

  /** Forwards x86 port I/O [port, port + length) to `handler` (range type PORT). */
  mapPio(port: number, length: number, handler: IoHandler, options: { weak?: boolean } = {}): IoRangeHandle {
    if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new RangeError(`port ${port} must be 0..0xffff`);
    if (port + length > 0x10000) throw new RangeError(`ports 0x${port.toString(16)}+${length} exceed 0xffff`);
    return this.#map("pio", BigInt(port), length, handler, options.weak === true);
  }

  /** Whether a range of this server holds all of [addr, addr + size). */
  covers(space: IoSpace, addr: bigint, size: number): boolean {
    if (addr > BigInt(MAX_IO_ADDRESS)) return false;
    return this.#ranges.find(space, Number(addr), size) !== undefined;
  }

  #map(space: IoSpace, start: bigint, length: number, handler: IoHandler, weak: boolean): IoRangeHandle {
    this.#open();
    if (typeof start !== "bigint" || start < 0n) throw new RangeError("range start must be a non-negative bigint");
    if (!Number.isInteger(length) || length < 1) throw new RangeError(`range length ${length} must be a positive integer`);
    if (start + BigInt(length) > BigInt(MAX_IO_ADDRESS)) throw new RangeError(`range 0x${start.toString(16)}+${length} beyond 2^53`);
    if (typeof handler?.read !== "function" || typeof handler.write !== "function")
      throw new TypeError("handler must have read(offset, size) and write(offset, size, value)");
    const s = Number(start);
    const range: IoRange = { space, start: s, end: s + length, handler, weak };
    const clashes = this.#ranges.allOverlapping(space, range.start, range.end);
    const clash = clashes.find((c) => weak || c.weak !== true);
    if (clash)
      throw new NotifierError(
        "AddressInUse",
        `${space} 0x${s.toString(16)}+0x${length.toString(16)} overlaps 0x${clash.start.toString(16)}..0x${clash.end.toString(16)}`,
      );
    const type = space === "mmio" ? XEN_DMOP_IO_RANGE.MEMORY : XEN_DMOP_IO_RANGE.PORT;
    const end = start + BigInt(length) - 1n;
    // Placeholders under a real device range give way to it (the doorbells they carried stay in the
    // notifier's table and are now reached through the device's range).
    for (const w of clashes) {
      const h = this.#handleOf.get(w);
      if (h !== undefined) h.unmap();
      else this.#unmapRange(w);
    }
    this.#ranges.add(range);
    try {
      this.xen.mapIoRangeToIoreqServer(this.domid, this.id, start, end, type);
    } catch (err) {
      this.#ranges.remove(range);
      throw classifyXenError(err, `map ${space} 0x${start.toString(16)}..0x${end.toString(16)} to ioreq server ${this.id}`);
    }
    const handle = new RangeHandle(space, start, length, () => {
      this.#handles.delete(handle);
      this.#handleOf.delete(range);
      if (!this.#closed) this.#unmapRange(range);
    });
    this.#handles.add(handle);
    this.#handleOf.set(range, handle);
    return handle;
  }

  /** Stops Xen forwarding `range` and drops it (no-op if it was already replaced or removed). */
  #unmapRange(range: IoRange): void {
    if (!this.#ranges.has(range)) return;
    const type = range.space === "mmio" ? XEN_DMOP_IO_RANGE.MEMORY : XEN_DMOP_IO_RANGE.PORT;
    const start = BigInt(range.start);
    const end = BigInt(range.end) - 1n;
    try {
      this.xen.unmapIoRangeFromIoreqServer(this.domid, this.id, start, end, type);
    } catch (err) {
      this.#log.warn("unmap_io_range_from_ioreq_server failed", { space: range.space, start, end, err });
    }
    // Dropped after Xen stopped forwarding: a request already queued still finds its handler.
    this.#ranges.remove(range);
  }

  /**
   * Hooks the write path: every guest write (plain and rep) is offered to `table.dispatch` before the range
   * handlers. One attachment at a time (XenNotifier attaches itself). Returns the detach function.
   */
  attachDoorbells(table: DoorbellAttachment): () => void {
    this.#open();
    if (this.#attachment !== undefined) throw new NotifierError("AddressInUse", "a notifier is already attached to this ioreq server");
    this.#attachment = table;
    this.#processor.doorbells = table;
    return () => {
      if (this.#attachment !== table) return;
      this.#attachment = undefined;
      this.#processor.doorbells = undefined;
    };
  }

  /**
   * Serves vCPU `vcpu`'s slot now if it holds a request (the event loop calls this when the vCPU's port
   * fires). Out-of-range vCPUs are counted and logged, not thrown.
   */
  service(vcpu: number): void {
    if (!this.#closed) this.#processor.service(vcpu);
  }

  #onEvent(port: number): void {
    if (this.#closed) return;
    const v = this.#portToVcpu.get(port);
    if (v !== undefined) {
      this.#processor.service(v);
    } else if (port === this.#bufPort && this.#buffered !== undefined) {
      this.#buffered.drain();
    } else {
      this.#processor.stats.badVcpu++;
      this.#log.warn("event on a port that belongs to no vCPU of this server", { port });
    }
  }

  /**
   * Stops serving and destroys the server in Xen: answers requests still held by async handlers (so no
   * vCPU stays blocked), disables and destroys the server (which drops its ranges), unbinds the ports and
   * unmaps the pages. Idempotent. A failure to destroy (other than the domain being gone) is thrown after
   * everything else was released.
   */
  close(): void {
    this.#close();
  }

  #close(cause?: Error): void {
    if (this.#closed) return;
    const attachment = this.#attachment;
    if (attachment !== undefined) {
      try {
        attachment.serverClosing();
      } catch (err) {
        this.#log.warn("ioreq server: notifier teardown failed", { err });
      }
    }
    this.#processor.close();
    this.#closed = true;
    untrack(this);
    let failure: unknown;
    // Already gone: the domain (ESRCH), or the server itself (ENOENT: Xen destroys a dying domain's ioreq
    // servers in ioreq_server_destroy_all(), common/ioreq.c, before the toolstack tells us it is closing).
    const gone = (err: unknown): boolean => {
      const e = err as { kind?: unknown; code?: unknown };
      return e.kind === "NoSuchDomain" || e.code === "ESRCH" || e.code === "ENOENT";
    };
    try {
      this.xen.setIoreqServerState(this.domid, this.id, false);
    } catch (err) {
      if (!gone(err)) this.#log.warn("ioreq server: disabling failed", { domid: this.domid, id: this.id, err });
    }
    try {
      this.xen.destroyIoreqServer(this.domid, this.id);
    } catch (err) {
      if (!gone(err)) failure = classifyXenError(err, `destroy ioreq server ${this.id} of domain ${this.domid}`);
    }
    for (const h of [...this.#handles]) h.unmap();
    this.#evtchn.close();
    for (const buf of [this.#pages, this.#bufPage]) {
      if (buf === undefined) continue;
      try {
        this.xen.unmap(buf);
      } catch (err) {
        this.#log.warn("ioreq server: unmapping a frame failed", { err });
      }
    }
    this.#log.info("ioreq server destroyed", { domid: this.domid, id: this.id, ...this.#processor.stats });
    try {
      this.emit("close", cause);
    } catch (err) {
      this.#log.error("ioreq server: a close listener threw", { err });
    }
    if (failure instanceof Error) throw failure;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
