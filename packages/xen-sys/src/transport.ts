// The one seam between "how a request reaches Xen" and the typed operations above it.
//
// Every method is one privileged operation with byte payloads: the structs are encoded ABOVE this interface
// (src/dm-op.ts, src/sysctl.ts, src/domctl.ts) so a simulator in another process (packages/xen-sim) decodes
// exactly the bytes Xen would see. Nothing here passes a user-space pointer: where the C ABI embeds one (a
// sysctl guest handle, a grant-copy buffer) the caller describes the buffer and the transport patches the
// address in (PrivcmdTransport) or reads the buffer directly (a simulator).
import type { XenArch } from "./abi/domctl.js";

/** A guest handle inside a sysctl/domctl struct: a u64 at `offset` that must point at `data` during the call. */
export interface GuestHandle {
  /** Byte offset of the XEN_GUEST_HANDLE_64 field within the op struct. */
  readonly offset: number;
  /** The buffer it points to; read and written in place. */
  readonly data: Uint8Array;
}

/** Result of a foreign mapping: the pages, and one errno per page (0 = mapped, positive errno otherwise). */
export interface ForeignMapping {
  readonly buffer: ArrayBuffer;
  readonly errors: Int32Array;
}

export interface ForeignMapOptions {
  /** Map read-only (default read-write). */
  readonly readOnly?: boolean;
  /** Rounds of retry for pages Xen reports paged out (ENOENT); default 64. */
  readonly pagedRetries?: number;
}

/** IOCTL_PRIVCMD_IRQFD: when `eventFd` is signalled the kernel issues `dmOp` (a xen_dm_op) for `domid`. */
export interface IrqfdRequest {
  readonly domid: number;
  readonly eventFd: number;
  /** The xen_dm_op bytes (e.g. set_irq_level(irq, 1)); the kernel copies them at assign time. */
  readonly dmOp: Uint8Array;
  readonly deassign?: boolean;
}

/** IOCTL_PRIVCMD_IOEVENTFD: the kernel completes virtio-mmio QUEUE_NOTIFY writes by signalling `eventFd`. */
export interface IoeventfdRequest {
  readonly domid: number;
  /** The ioreq page mapping returned by `mmapResource` (the kernel needs the start of that mapping). */
  readonly ioreq: ArrayBuffer;
  /** The per-vCPU event channel ports (ioreq[v].vp_eport), `vcpus` of them. */
  readonly ports: Uint32Array;
  /** Base address of the virtio-mmio device (the kernel matches base + 0x50). */
  readonly addr: bigint;
  /** Access size of the notify write: 1, 2, 4 or 8. */
  readonly addrLen: number;
  readonly eventFd: number;
  /** The queue index the write's data must carry. */
  readonly vq: number;
  readonly deassign?: boolean;
}

/** /dev/xen/evtchn: a pollable fd plus the ioctls and read/write of pending ports. */
export interface EventChannelDevice extends Disposable {
  /** Readable when ports are pending; watch it with FdWatcher. */
  readonly fd: number;
  readonly closed: boolean;
  bindInterdomain(remoteDomain: number, remotePort: number): number;
  bindUnboundPort(remoteDomain: number): number;
  bindVirq(virq: number): number;
  unbind(port: number): void;
  notify(port: number): void;
  /** Limits the fd to one domain (IOCTL_EVTCHN_RESTRICT_DOMID). */
  restrict(domid: number): void;
  /** The pending local ports (each now masked); empty when none are pending. */
  readPending(max?: number): Uint32Array;
  /**
   * Optional allocation-free `readPending`: fills `buffer` and returns the count (0 when none are pending).
   * EventChannels uses it when present (one buffer for the life of the device), else `readPending`.
   */
  readPendingInto?(buffer: Uint32Array): number;
  /** Unmasks ports so they can fire again. */
  unmask(ports: readonly number[] | Uint32Array): void;
  close(): void;
}

/** One mapped run of grant references. */
export interface GrantMapping {
  readonly buffer: ArrayBuffer;
  /** The gntdev "index" (mmap offset) of the run. */
  readonly index: bigint;
  readonly count: number;
  readonly domid: number;
}

/** One side of a grant copy: a local buffer, or a granted page of a domain. */
export type GrantCopyPtr =
  | { readonly local: Uint8Array }
  | { readonly ref: number; readonly offset: number; readonly domid: number };

export interface GrantCopySegment {
  readonly source: GrantCopyPtr;
  readonly dest: GrantCopyPtr;
  readonly len: number;
}

/** /dev/xen/gntdev. */
export interface GrantDevice extends Disposable {
  readonly closed: boolean;
  /** Only honoured as the first ioctl on old kernels; newer ones ignore it. */
  setMaxGrants(count: number): void;
  mapGrantRefs(domid: number, refs: readonly number[], options?: { readOnly?: boolean }): GrantMapping;
  /** munmap, then IOCTL_GNTDEV_UNMAP_GRANT_REF (the order the kernel requires). Idempotent. */
  unmapGrantRefs(mapping: GrantMapping): void;
  getOffsetForVaddr(vaddr: bigint): { offset: bigint; count: number };
  setUnmapNotify(mapping: GrantMapping, options: { clearByte?: number; eventChannelPort?: number }): void;
  /** IOCTL_GNTDEV_GRANT_COPY: returns one GNTST_* status per segment (0 = okay). */
  grantCopy(segments: readonly GrantCopySegment[]): Int16Array;
  close(): void;
}

/** What a transport can do beyond the baseline, probed once. */
export interface TransportCapabilities {
  /** IOCTL_PRIVCMD_IRQFD (Linux >= 6.7, CONFIG_XEN_PRIVCMD_EVENTFD). */
  readonly irqfd: boolean;
  /** IOCTL_PRIVCMD_IOEVENTFD (same). */
  readonly ioeventfd: boolean;
}

export interface XenTransport extends Disposable {
  /** "privcmd" for the kernel driver; simulators name themselves. */
  readonly kind: string;
  /** The hypervisor's architecture: selects arch-specific layouts (getdomaininfo). */
  readonly arch: XenArch;
  readonly closed: boolean;

  /** __HYPERVISOR_sysctl on a struct xen_sysctl (in/out). Returns the hypercall result. @throws XenError */
  sysctl(op: Uint8Array, handles?: readonly GuestHandle[]): number;
  /** __HYPERVISOR_domctl on a struct xen_domctl (in/out). @throws XenError */
  domctl(op: Uint8Array, handles?: readonly GuestHandle[]): number;
  /** __HYPERVISOR_console_io(cmd, data.length, data). Returns the result (bytes read for CONSOLEIO_read). */
  consoleIo(cmd: number, data: Uint8Array): number;
  /** IOCTL_PRIVCMD_DM_OP: buffer 0 is a struct xen_dm_op; buffers are read and written in place. */
  dmOp(domid: number, bufs: readonly Uint8Array[]): void;
  /** Maps guest frames (IOCTL_PRIVCMD_MMAPBATCH_V2, paged-out frames retried). Free with `unmap`. */
  mmapForeign(domid: number, gfns: BigUint64Array, options?: ForeignMapOptions): ForeignMapping;
  /** Frames of a resource, e.g. an ioreq server's pages (IOCTL_PRIVCMD_MMAP_RESOURCE). Free with `unmap`. */
  mmapResource(domid: number, type: number, id: number, frame: number, nrFrames: number): ArrayBuffer;
  /** The number of frames of a resource (MMAP_RESOURCE with num = 0). */
  resourceSize(domid: number, type: number, id: number): number;
  /** Releases a mapping from mmapForeign/mmapResource. Idempotent. */
  unmap(buffer: ArrayBuffer): void;
  /** Limits this transport to one domain (IOCTL_PRIVCMD_RESTRICT). */
  restrict(domid: number): void;
  /**
   * A fresh fd a vhost-user backend can redo a mapping of `domid`'s memory on (sent with XEN_MMAP regions).
   * Optional: without it, callers open /dev/xen/privcmd or /dev/xen/gntdev themselves (what dom0 does); a
   * simulator implements it because its backends map through their own simulator connection.
   */
  openMappingFd?(kind: "privcmd" | "gntdev", domid: number): number;
  /** Probes irqfd/ioeventfd support (cached). */
  capabilities(): TransportCapabilities;
  /** @throws XenError kind "Unsupported" when capabilities().irqfd is false. */
  irqfd(req: IrqfdRequest): void;
  /** @throws XenError kind "Unsupported" when capabilities().ioeventfd is false. */
  ioeventfd(req: IoeventfdRequest): void;
  openEventChannels(): EventChannelDevice;
  openGrantDevice(): GrantDevice;
  /** Idempotent. */
  close(): void;
}
