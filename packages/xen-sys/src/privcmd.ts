// The real transport: Linux privcmd (/dev/xen/privcmd) plus privcmd-buf (/dev/xen/hypercall) for hypercall
// arguments, /dev/xen/evtchn and /dev/xen/gntdev.
//
// Why mmap first, then the ioctl: privcmd cannot create a mapping of foreign frames by itself. A user process
// first reserves address space with mmap() on the privcmd fd (a VM_IO|VM_PFNMAP area with no pages, owned by
// the driver), then IOCTL_PRIVCMD_MMAPBATCH_V2 / MMAP_RESOURCE name that area by its address, and the kernel
// asks Xen to install the guest's frames into it. The ioctl refuses addresses that are not such a privcmd VMA,
// so the order is fixed; munmap() later releases the frames.
import {
  ioctl, mmap, munmap, addressOf, MmapConstants, pageSize, SysError,
} from "@xen-vhost/vmm-sys-util";
import {
  HYPERCALL_BUFFER_DEVICE, IOCTL_PRIVCMD_DM_OP, IOCTL_PRIVCMD_HYPERCALL, IOCTL_PRIVCMD_IOEVENTFD, IOCTL_PRIVCMD_IRQFD,
  IOCTL_PRIVCMD_MMAPBATCH_V2, IOCTL_PRIVCMD_MMAP_RESOURCE, IOCTL_PRIVCMD_RESTRICT, PRIVCMD_DEVICE,
  PRIVCMD_IOEVENTFD_FLAG_DEASSIGN, PRIVCMD_IRQFD_FLAG_DEASSIGN, PRIVCMD_MMAPBATCH_PAGED_ERRNO, PrivcmdIoeventfd, PrivcmdIrqfd, PrivcmdMmapResource,
  XEN_PAGE_SIZE,
} from "./abi/privcmd.js";
import { dmOpArg, hypercallArg, ioeventfdArg, irqfdArg, mmapResourceArg, mmapbatchV2Arg, restrictArg } from "./privcmd-args.js";
import { EVTCHN_DEVICE } from "./abi/evtchn.js";
import { GNTDEV_DEVICE } from "./abi/gntdev.js";
import { __HYPERVISOR } from "./abi/xen.js";
import { hostXenArch, type XenArch } from "./abi/domctl.js";
import { XenError } from "./error.js";
import { checkDomid, checkU32, closeQuietly, openDevice } from "./device.js";
import { EvtchnDevice } from "./evtchn-device.js";
import { GntdevDevice } from "./gntdev-device.js";
import { silentLogger, type Logger } from "./logger.js";
import type {
  EventChannelDevice, ForeignMapOptions, ForeignMapping, GrantDevice, GuestHandle, IoeventfdRequest, IrqfdRequest,
  TransportCapabilities, XenTransport,
} from "./transport.js";

export interface PrivcmdTransportOptions {
  /** Default /dev/xen/privcmd. */
  privcmdPath?: string;
  /** Default /dev/xen/hypercall. */
  hypercallPath?: string;
  /** Default /dev/xen/evtchn. */
  evtchnPath?: string;
  /** Default /dev/xen/gntdev. */
  gntdevPath?: string;
  /** Default: the host's. */
  arch?: XenArch;
  logger?: Logger;
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));

/** Blocks for `ms` (the paged-out retry of MMAPBATCH_V2 is synchronous, as in libxenforeignmemory). */
function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

export class PrivcmdTransport implements XenTransport {
  readonly kind = "privcmd";
  readonly arch: XenArch;
  readonly #paths: Required<Omit<PrivcmdTransportOptions, "arch" | "logger">>;
  readonly #log: Logger;
  #fd: number;
  #bufferFd: number | undefined;
  #caps: TransportCapabilities | undefined;
  readonly #mappings = new Set<ArrayBuffer>();

  private constructor(fd: number, options: PrivcmdTransportOptions) {
    this.#fd = fd;
    this.arch = options.arch ?? hostXenArch();
    this.#log = options.logger ?? silentLogger;
    this.#paths = {
      privcmdPath: options.privcmdPath ?? PRIVCMD_DEVICE,
      hypercallPath: options.hypercallPath ?? HYPERCALL_BUFFER_DEVICE,
      evtchnPath: options.evtchnPath ?? EVTCHN_DEVICE,
      gntdevPath: options.gntdevPath ?? GNTDEV_DEVICE,
    };
  }

  /** Opens privcmd. @throws XenError DeviceMissing ("open /dev/xen/privcmd: ... does not exist") */
  static open(options: PrivcmdTransportOptions = {}): PrivcmdTransport {
    if (pageSize() !== XEN_PAGE_SIZE) {
      throw new XenError("Unsupported", `privcmd mappings need 4 KiB kernel pages (this kernel uses ${pageSize()})`, {
        op: "open privcmd",
      });
    }
    const fd = openDevice(options.privcmdPath ?? PRIVCMD_DEVICE);
    return new PrivcmdTransport(fd, options);
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  get #f(): number {
    if (this.#fd < 0) throw XenError.closed("privcmd transport");
    return this.#fd;
  }

  #ioctl(op: string, request: number, arg: Uint8Array, domid?: number): number {
    try {
      return ioctl(this.#f, request, arg);
    } catch (err) {
      throw XenError.fromSysError(err, op, domid === undefined ? { path: this.#paths.privcmdPath } : { domid });
    }
  }

  // ---- hypercalls ----------------------------------------------------------------------------------------

  /**
   * Runs one hypercall whose arguments point into hypercall memory: `op` at offset 0 and each guest handle's
   * buffer after it. Hypercall memory comes from /dev/xen/hypercall (memory the kernel lets Xen access without
   * faulting); kernels without it (< 4.18) fall back to an anonymous populated mapping.
   */
  #hypercall(name: string, nr: number, args: (buf: { base: bigint; offsets: number[] }) => bigint[], op: Uint8Array, handles: readonly GuestHandle[]): number {
    const offsets: number[] = [];
    let size = align(op.byteLength, 64);
    for (const h of handles) {
      if (!Number.isInteger(h.offset) || h.offset < 0 || h.offset + 8 > op.byteLength)
        throw new RangeError(`${name}: guest handle offset ${h.offset} outside the ${op.byteLength}-byte op`);
      offsets.push(size);
      size = align(size + h.data.byteLength, 64);
    }
    const length = align(Math.max(size, 1), XEN_PAGE_SIZE);
    const mem = this.#hypercallMemory(length);
    try {
      const bytes = new Uint8Array(mem);
      const view = new DataView(mem);
      const base = addressOf(mem);
      bytes.set(op, 0);
      handles.forEach((h, i) => {
        bytes.set(h.data, offsets[i]);
        view.setBigUint64(h.offset, base + BigInt(offsets[i]!), true);
      });
      const a = args({ base, offsets });
      const call = hypercallArg(nr, a);
      let rc: number;
      try {
        rc = ioctl(this.#f, IOCTL_PRIVCMD_HYPERCALL, call);
      } finally {
        // Copy results back even on failure (Xen may report details in the struct); the handle fields go
        // back to 0 so the caller sees the same bytes a simulator transport would leave.
        handles.forEach((h, i) => {
          h.data.set(bytes.subarray(offsets[i], offsets[i]! + h.data.byteLength));
          view.setBigUint64(h.offset, 0n, true);
        });
        op.set(bytes.subarray(0, op.byteLength));
      }
      return rc;
    } catch (err) {
      throw XenError.fromSysError(err, name);
    } finally {
      munmap(mem);
    }
  }

  #hypercallMemory(length: number): ArrayBuffer {
    if (this.#bufferFd === undefined) {
      try {
        this.#bufferFd = openDevice(this.#paths.hypercallPath);
      } catch (err) {
        if (!(err instanceof XenError) || err.kind !== "DeviceMissing") throw err;
        this.#log.debug("no hypercall buffer device; using anonymous populated memory", { path: this.#paths.hypercallPath });
        this.#bufferFd = -1;
      }
    }
    if (this.#bufferFd >= 0) return mmap(length, { fd: this.#bufferFd, flags: MmapConstants.MAP_SHARED });
    return mmap(length, { flags: MmapConstants.MAP_PRIVATE | MmapConstants.MAP_ANONYMOUS | MmapConstants.MAP_POPULATE });
  }

  sysctl(op: Uint8Array, handles: readonly GuestHandle[] = []): number {
    return this.#hypercall("sysctl", __HYPERVISOR.sysctl, ({ base }) => [base], op, handles);
  }

  domctl(op: Uint8Array, handles: readonly GuestHandle[] = []): number {
    return this.#hypercall("domctl", __HYPERVISOR.domctl, ({ base }) => [base], op, handles);
  }

  consoleIo(cmd: number, data: Uint8Array): number {
    checkU32(cmd, "console_io cmd");
    // console_io takes (cmd, count, buffer): the buffer is the only memory argument, placed at offset 0.
    return this.#hypercall(
      "console_io",
      __HYPERVISOR.console_io,
      ({ base }) => [BigInt(cmd), BigInt(data.byteLength), base],
      data,
      [],
    );
  }

  // ---- device model --------------------------------------------------------------------------------------

  dmOp(domid: number, bufs: readonly Uint8Array[]): void {
    checkDomid(domid);
    if (bufs.length === 0 || bufs.length > 0xffff) throw new RangeError(`dm_op takes 1..65535 buffers, got ${bufs.length}`);
    const { arg, table } = dmOpArg(domid, bufs, addressOf);
    this.#ioctl("IOCTL_PRIVCMD_DM_OP", IOCTL_PRIVCMD_DM_OP, arg, domid);
    void table; // referenced until here: the kernel reads it during the ioctl
  }

  mmapForeign(domid: number, gfns: BigUint64Array, options: ForeignMapOptions = {}): ForeignMapping {
    checkDomid(domid);
    const n = gfns.length;
    if (n === 0 || n > 0x7fffffff / XEN_PAGE_SIZE) throw new RangeError(`cannot map ${n} frames`);
    const prot = MmapConstants.PROT_READ | (options.readOnly ? 0 : MmapConstants.PROT_WRITE);
    const buffer = this.#reserve(n * XEN_PAGE_SIZE, prot);
    const err = new Int32Array(n);
    const base = addressOf(buffer);
    const batch = (count: number, first: number): void => {
      const arg = mmapbatchV2Arg(domid, base, gfns, err, first, count, addressOf);
      ioctl(this.#f, IOCTL_PRIVCMD_MMAPBATCH_V2, arg);
    };
    try {
      mapBatchRetryingPaged(n, batch, err, { rounds: options.pagedRetries ?? 64, sleep: sleepSync });
    } catch (e) {
      this.unmap(buffer);
      throw XenError.fromSysError(e, "IOCTL_PRIVCMD_MMAPBATCH_V2", { domid });
    }
    // The kernel reports negative errnos; callers get positive ones (0 = mapped).
    for (let i = 0; i < n; i++) err[i] = -err[i]!;
    return { buffer, errors: err };
  }

  #reserve(length: number, prot: number): ArrayBuffer {
    let buffer: ArrayBuffer;
    try {
      buffer = mmap(length, { fd: this.#f, prot, flags: MmapConstants.MAP_SHARED });
    } catch (err) {
      throw XenError.fromSysError(err, "mmap privcmd", { path: this.#paths.privcmdPath });
    }
    this.#mappings.add(buffer);
    return buffer;
  }

  mmapResource(domid: number, type: number, id: number, frame: number, nrFrames: number): ArrayBuffer {
    checkDomid(domid);
    checkU32(type, "resource type");
    checkU32(id, "resource id");
    checkU32(frame, "frame");
    if (!Number.isInteger(nrFrames) || nrFrames < 1 || nrFrames > 0x80000) throw new RangeError(`nrFrames ${nrFrames}`);
    const buffer = this.#reserve(nrFrames * XEN_PAGE_SIZE, MmapConstants.PROT_READ | MmapConstants.PROT_WRITE);
    try {
      const arg = mmapResourceArg(domid, type, id, frame, nrFrames, addressOf(buffer));
      this.#ioctl("IOCTL_PRIVCMD_MMAP_RESOURCE", IOCTL_PRIVCMD_MMAP_RESOURCE, arg, domid);
    } catch (err) {
      this.unmap(buffer);
      throw err;
    }
    return buffer;
  }

  resourceSize(domid: number, type: number, id: number): number {
    checkDomid(domid);
    checkU32(type, "resource type");
    checkU32(id, "resource id");
    const arg = mmapResourceArg(domid, type, id, 0, 0, 0n);
    this.#ioctl("IOCTL_PRIVCMD_MMAP_RESOURCE (size query)", IOCTL_PRIVCMD_MMAP_RESOURCE, arg, domid);
    return Number(PrivcmdMmapResource.decode(arg).num);
  }

  unmap(buffer: ArrayBuffer): void {
    if (!this.#mappings.delete(buffer)) return;
    munmap(buffer);
  }

  restrict(domid: number): void {
    checkDomid(domid);
    const arg = restrictArg(domid);
    this.#ioctl("IOCTL_PRIVCMD_RESTRICT", IOCTL_PRIVCMD_RESTRICT, arg, domid);
  }

  // ---- eventfd offload (Linux >= 6.7) --------------------------------------------------------------------

  /**
   * Probes by deassigning fd -1: a kernel with the feature answers EBADF (no such eventfd), one without
   * answers ENOTTY (unknown ioctl) or EOPNOTSUPP (CONFIG_XEN_PRIVCMD_EVENTFD off). Nothing is registered.
   */
  capabilities(): TransportCapabilities {
    if (this.#caps) return this.#caps;
    const probe = (request: number, arg: Uint8Array): boolean => {
      try {
        ioctl(this.#f, request, arg);
        return true;
      } catch (err) {
        // The package's one errno classifier decides (errno 95 is named ENOTSUP, not EOPNOTSUPP).
        return !(err instanceof SysError && XenError.fromSysError(err, "probe").kind === "Unsupported");
      }
    };
    const irqfd = probe(
      IOCTL_PRIVCMD_IRQFD,
      PrivcmdIrqfd.encode({ fd: 0xffffffff, flags: PRIVCMD_IRQFD_FLAG_DEASSIGN, dom: 0 }),
    );
    const ioeventfd = probe(
      IOCTL_PRIVCMD_IOEVENTFD,
      PrivcmdIoeventfd.encode({ event_fd: 0xffffffff, flags: PRIVCMD_IOEVENTFD_FLAG_DEASSIGN, vcpus: 1, addr_len: 4 }),
    );
    this.#caps = { irqfd, ioeventfd };
    this.#log.debug("privcmd capabilities", { irqfd, ioeventfd });
    return this.#caps;
  }

  #requireCap(cap: keyof TransportCapabilities, op: string): void {
    if (!this.capabilities()[cap]) {
      throw new XenError("Unsupported", `${op}: this kernel has no privcmd ${cap} (needs Linux >= 6.7 with CONFIG_XEN_PRIVCMD_EVENTFD)`, {
        op,
        code: "ENOTTY",
        path: this.#paths.privcmdPath,
      });
    }
  }

  irqfd(req: IrqfdRequest): void {
    checkDomid(req.domid);
    checkU32(req.eventFd, "eventFd");
    this.#requireCap("irqfd", "IOCTL_PRIVCMD_IRQFD");
    const arg = irqfdArg(req, addressOf);
    this.#ioctl("IOCTL_PRIVCMD_IRQFD", IOCTL_PRIVCMD_IRQFD, arg, req.domid);
  }

  ioeventfd(req: IoeventfdRequest): void {
    checkDomid(req.domid);
    checkU32(req.eventFd, "eventFd");
    checkU32(req.vq, "vq");
    if (![1, 2, 4, 8].includes(req.addrLen)) throw new RangeError(`addrLen ${req.addrLen} must be 1, 2, 4 or 8`);
    if (req.ports.length < 1 || req.ports.length > 4096) throw new RangeError(`ports: ${req.ports.length} vCPUs (1..4096)`);
    this.#requireCap("ioeventfd", "IOCTL_PRIVCMD_IOEVENTFD");
    const arg = ioeventfdArg(req, addressOf);
    this.#ioctl("IOCTL_PRIVCMD_IOEVENTFD", IOCTL_PRIVCMD_IOEVENTFD, arg, req.domid);
  }

  openEventChannels(): EventChannelDevice {
    void this.#f;
    return EvtchnDevice.open(this.#paths.evtchnPath);
  }

  openGrantDevice(): GrantDevice {
    void this.#f;
    return GntdevDevice.open(this.#paths.gntdevPath);
  }

  /** Unmaps every mapping still held, closes the fds. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    for (const b of [...this.#mappings]) this.unmap(b);
    if (this.#bufferFd !== undefined && this.#bufferFd >= 0) closeQuietly(this.#bufferFd);
    this.#bufferFd = undefined;
    const fd = this.#fd;
    this.#fd = -1;
    closeQuietly(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Runs IOCTL_PRIVCMD_MMAPBATCH_V2 over `n` frames and retries the paged-out ones. The kernel fails the whole
 * call with ENOENT when any frame is paged out (err[i] = -ENOENT) and Xen starts paging it in; other per-page
 * errors come back in `err` with a 0 result. Paged frames are retried one by one with a growing pause, as
 * libxenforeignmemory does. A successful single-frame call does not write its err slot, so it is cleared
 * first. Leaves -ENOENT in `err` for frames still paged out after `rounds`.
 */
export function mapBatchRetryingPaged(
  n: number,
  batch: (count: number, first: number) => void,
  err: Int32Array,
  options: { rounds: number; sleep: (ms: number) => void },
): void {
  try {
    batch(n, 0);
    return;
  } catch (e) {
    if (!(e instanceof SysError) || e.code !== "ENOENT") throw e;
  }
  for (let round = 0; round < options.rounds; round++) {
    const paged: number[] = [];
    err.forEach((v, i) => {
      if (v === -PRIVCMD_MMAPBATCH_PAGED_ERRNO) paged.push(i);
    });
    if (paged.length === 0) return;
    options.sleep(Math.min(1 + round, 20));
    for (const i of paged) {
      err[i] = 0;
      try {
        batch(1, i);
      } catch (e) {
        if (!(e instanceof SysError) || e.code !== "ENOENT") throw e;
      }
    }
  }
}

function align(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
