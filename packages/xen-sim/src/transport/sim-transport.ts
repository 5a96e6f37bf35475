// SimTransport: xen-sys's XenTransport over the simulator socket. Every method carries the same bytes the
// privcmd transport hands the kernel (sysctl/domctl/dm_op structs), and returns mappings the caller uses the
// same way (ArrayBuffers over guest RAM / ioreq pages, freed with unmap). Synchronous, like privcmd: one
// blocking request per call. Events never go through here (see SimEventChannelDevice).
import { memfdCreate, mmap, munmap, MmapConstants } from "@xen-vhost/vmm-sys-util";
import {
  XenError, checkDomid, type EventChannelDevice, type ForeignMapOptions, type ForeignMapping, type GrantDevice,
  type GuestHandle, type IoeventfdRequest, type IrqfdRequest, type TransportCapabilities, type XenArch, type XenTransport,
} from "@xen-vhost/xen-sys";
import { BlockingClient } from "../protocol.js";
import { PAGE_SIZE } from "../layout.js";
import { SimEventChannelDevice } from "./evtchn.js";
import { SimGrantDevice } from "./gntdev.js";
import { SimRpc, assemblePages, closeAll } from "./rpc.js";

/** The environment variable naming the simulator socket a bridge should use instead of /dev/xen. */
export const XEN_VHOST_SIM_ENV = "XEN_VHOST_SIM";

export class SimTransport implements XenTransport {
  readonly kind = "xen-sim";
  readonly arch: XenArch;
  /** The simulated Xen release ("4.17", ...). */
  readonly release: string;
  /** The simulator's XenStore socket, if it runs one (connect xen-sys's XenStore with socketConnector). */
  readonly xenstorePath: string | undefined;
  readonly socketPath: string;
  readonly #rpc: SimRpc;
  readonly #mappings = new Set<ArrayBuffer>();
  #caps: TransportCapabilities = { irqfd: true, ioeventfd: true };
  readonly #irqfds = new Map<number, number>();
  readonly #ioeventfds = new Map<string, number>();
  #closed = false;

  private constructor(path: string, rpc: SimRpc, hello: { arch: XenArch; release: string; xenstore: string | null }) {
    this.socketPath = path;
    this.#rpc = rpc;
    this.arch = hello.arch;
    this.release = hello.release;
    this.xenstorePath = hello.xenstore ?? undefined;
  }

  /**
   * Connects to a simulator socket (blocking).
   * @throws XenError "DeviceMissing" naming the socket when nothing listens there.
   */
  static connect(path: string): SimTransport {
    let client: BlockingClient;
    try {
      client = BlockingClient.connect(path);
    } catch (err) {
      throw new XenError("DeviceMissing", `xen-sim: no simulator listening at ${path}`, { op: "connect", path }, { cause: err });
    }
    const rpc = new SimRpc(client);
    try {
      const { result } = rpc.call<{ arch: XenArch; release: string; xenstore: string | null }>("hello", "hello");
      return new SimTransport(path, rpc, result);
    } catch (err) {
      client.close();
      throw err;
    }
  }

  /** A SimTransport when XEN_VHOST_SIM names a socket, else undefined (use PrivcmdTransport). */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): SimTransport | undefined {
    const path = env[XEN_VHOST_SIM_ENV];
    return path ? SimTransport.connect(path) : undefined;
  }

  get closed(): boolean {
    return this.#closed;
  }

  #rpcOpen(): SimRpc {
    if (this.#closed) throw XenError.closed("sim transport");
    return this.#rpc;
  }

  sysctl(op: Uint8Array, handles: readonly GuestHandle[] = []): number {
    const { result } = this.#rpcOpen().call<{ op: Uint8Array; handles: Uint8Array[]; rc: number }>("sysctl", "sysctl", {
      op, handles: handles.map((h) => ({ offset: h.offset, data: h.data })),
    });
    op.set(result.op.subarray(0, op.byteLength));
    handles.forEach((h, i) => h.data.set(result.handles[i]!.subarray(0, h.data.byteLength)));
    return result.rc;
  }

  domctl(op: Uint8Array, _handles: readonly GuestHandle[] = []): number {
    const { result } = this.#rpcOpen().call<{ op: Uint8Array; rc: number }>("domctl", "domctl", { op });
    op.set(result.op.subarray(0, op.byteLength));
    return result.rc;
  }

  consoleIo(cmd: number, data: Uint8Array): number {
    const { result } = this.#rpcOpen().call<{ rc: number; data: Uint8Array }>("console_io", "consoleIo", { cmd, data });
    data.set(result.data.subarray(0, data.byteLength));
    return result.rc;
  }

  dmOp(domid: number, bufs: readonly Uint8Array[]): void {
    checkDomid(domid);
    if (bufs.length === 0 || bufs.length > 0xffff) throw new RangeError(`dm_op takes 1..65535 buffers, got ${bufs.length}`);
    const { result } = this.#rpcOpen().call<{ bufs: Uint8Array[] }>("IOCTL_PRIVCMD_DM_OP", "dmOp", { domid, bufs: [...bufs] }, { domid });
    // DM_OP buffers are in/out: copy the OUT fields back, as the hypervisor writes the caller's memory.
    bufs.forEach((b, i) => b.set(result.bufs[i]!.subarray(0, b.byteLength)));
  }

  mmapForeign(domid: number, gfns: BigUint64Array, options: ForeignMapOptions = {}): ForeignMapping {
    checkDomid(domid);
    const n = gfns.length;
    if (n === 0 || n > 0x7fffffff / PAGE_SIZE) throw new RangeError(`cannot map ${n} frames`);
    const { result, fds } = this.#rpcOpen().call<{ fdIndex: Uint8Array; offsets: Uint8Array; errors: Uint8Array }>(
      "IOCTL_PRIVCMD_MMAPBATCH_V2", "mmapForeign", { domid, gfns: new Uint8Array(gfns.buffer, gfns.byteOffset, gfns.byteLength) }, { domid },
    );
    try {
      const offsets = new BigUint64Array(result.offsets.slice().buffer);
      const errors = new Int32Array(result.errors.slice().buffer);
      const pages = Array.from(result.fdIndex, (k, i) => (k === 255 ? undefined : { fd: fds[k]!, offset: Number(offsets[i]!) }));
      const buffer = assemblePages(n, pages, options.readOnly ?? false);
      this.#mappings.add(buffer);
      return { buffer, errors };
    } catch (err) {
      throw XenError.fromSysError(err, "IOCTL_PRIVCMD_MMAPBATCH_V2", { domid });
    } finally {
      closeAll(fds);
    }
  }

  mmapResource(domid: number, type: number, id: number, frame: number, nrFrames: number): ArrayBuffer {
    checkDomid(domid);
    if (!Number.isInteger(nrFrames) || nrFrames < 1 || nrFrames > 0x80000) throw new RangeError(`nrFrames ${nrFrames}`);
    const { result, fds } = this.#rpcOpen().call<{ fileOffset: number }>(
      "IOCTL_PRIVCMD_MMAP_RESOURCE", "mmapResource", { domid, type, id, frame, nr: nrFrames }, { domid },
    );
    try {
      const buffer = mmap(nrFrames * PAGE_SIZE, { fd: fds[0]!, offset: result.fileOffset, flags: MmapConstants.MAP_SHARED });
      this.#mappings.add(buffer);
      return buffer;
    } catch (err) {
      throw XenError.fromSysError(err, "IOCTL_PRIVCMD_MMAP_RESOURCE", { domid });
    } finally {
      closeAll(fds);
    }
  }

  resourceSize(domid: number, type: number, id: number): number {
    checkDomid(domid);
    return this.#rpcOpen().call<{ frames: number }>("IOCTL_PRIVCMD_MMAP_RESOURCE (size query)", "resourceSize", { domid, type, id }, { domid }).result.frames;
  }

  unmap(buffer: ArrayBuffer): void {
    if (!this.#mappings.delete(buffer)) return;
    munmap(buffer);
  }

  /**
   * The fd a XEN_MMAP region carries to a backend. A simulated backend maps guest memory through its own
   * simulator connection (see vm-memory-xen's mapper), so any fresh fd the backend owns and closes stands in
   * for dom0's restricted /dev/xen/privcmd or /dev/xen/gntdev.
   */
  openMappingFd(kind: "privcmd" | "gntdev", domid: number): number {
    this.#rpcOpen();
    return memfdCreate(`xen-sim-${kind}-d${domid}`);
  }

  restrict(domid: number): void {
    checkDomid(domid);
    this.#rpcOpen().call("IOCTL_PRIVCMD_RESTRICT", "restrict", { domid }, { domid });
  }

  capabilities(): TransportCapabilities {
    // The simulator emulates the kernel's privcmd irqfd/ioeventfd (Linux >= 6.7 with XEN_PRIVCMD_EVENTFD).
    return this.#caps;
  }

  /** Makes capabilities() report a kernel without privcmd eventfd support (to test the userspace path). */
  disableEventfdOffload(): void {
    this.#caps = { irqfd: false, ioeventfd: false };
  }

  irqfd(req: IrqfdRequest): void {
    if (!this.#caps.irqfd) throw new XenError("Unsupported", "IOCTL_PRIVCMD_IRQFD: ENOTTY", { op: "IOCTL_PRIVCMD_IRQFD", code: "ENOTTY", errno: 25 });
    checkDomid(req.domid);
    const rpc = this.#rpcOpen();
    if (req.deassign) {
      const id = this.#irqfds.get(req.eventFd);
      if (id === undefined) throw new XenError("OperationFailed", "IOCTL_PRIVCMD_IRQFD (deassign): ENOENT", { op: "IOCTL_PRIVCMD_IRQFD", code: "ENOENT", errno: 2 });
      rpc.call("IOCTL_PRIVCMD_IRQFD", "irqfd.deassign", { id }, { domid: req.domid });
      this.#irqfds.delete(req.eventFd);
      return;
    }
    if (this.#irqfds.has(req.eventFd)) throw new XenError("OperationFailed", "IOCTL_PRIVCMD_IRQFD: EBUSY", { op: "IOCTL_PRIVCMD_IRQFD", code: "EBUSY", errno: 16 });
    const { result } = rpc.call<{ id: number }>("IOCTL_PRIVCMD_IRQFD", "irqfd.assign", { domid: req.domid, dmOp: req.dmOp }, { domid: req.domid }, [req.eventFd]);
    this.#irqfds.set(req.eventFd, result.id);
  }

  ioeventfd(req: IoeventfdRequest): void {
    if (!this.#caps.ioeventfd) throw new XenError("Unsupported", "IOCTL_PRIVCMD_IOEVENTFD: ENOTTY", { op: "IOCTL_PRIVCMD_IOEVENTFD", code: "ENOTTY", errno: 25 });
    checkDomid(req.domid);
    const rpc = this.#rpcOpen();
    const key = `${req.domid}:${req.eventFd}`;
    if (req.deassign) {
      const id = this.#ioeventfds.get(key);
      if (id === undefined) throw new XenError("OperationFailed", "IOCTL_PRIVCMD_IOEVENTFD (deassign): ENOENT", { op: "IOCTL_PRIVCMD_IOEVENTFD", code: "ENOENT", errno: 2 });
      rpc.call("IOCTL_PRIVCMD_IOEVENTFD", "ioeventfd.deassign", { domid: req.domid, id }, { domid: req.domid });
      this.#ioeventfds.delete(key);
      return;
    }
    // drivers/xen/privcmd.c privcmd_ioeventfd_assign: the same eventfd twice is -EBUSY.
    if (this.#ioeventfds.has(key)) throw new XenError("OperationFailed", "IOCTL_PRIVCMD_IOEVENTFD: EBUSY", { op: "IOCTL_PRIVCMD_IOEVENTFD", code: "EBUSY", errno: 16 });
    const { result } = rpc.call<{ id: number }>("IOCTL_PRIVCMD_IOEVENTFD", "ioeventfd.assign", {
      domid: req.domid, ports: [...req.ports], addr: req.addr, addrLen: req.addrLen, vq: req.vq,
    }, { domid: req.domid }, [req.eventFd]);
    this.#ioeventfds.set(key, result.id);
  }

  openEventChannels(): EventChannelDevice {
    return SimEventChannelDevice.open(this.#rpcOpen());
  }

  openGrantDevice(): GrantDevice {
    return SimGrantDevice.open(this.#rpcOpen());
  }

  /**
   * Unmaps what mmapForeign/mmapResource mapped and closes the connection. Idempotent. Like PrivcmdTransport,
   * event channel and grant devices stay open until their owners close them: closing an evtchn fd under a
   * live FdWatcher would let a new fd reuse its number while the loop still polls it.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const b of [...this.#mappings]) this.unmap(b);
    this.#rpc.client.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
