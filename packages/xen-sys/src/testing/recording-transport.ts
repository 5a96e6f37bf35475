// A TEST DOUBLE FOR ENCODINGS ONLY. It records the bytes each typed operation hands the transport and lets a
// test answer with bytes of its own, so unit tests can check every struct the typed layer builds without
// Xen. It simulates nothing: no domains, no memory, no state. The Xen simulator is packages/xen-sim.
import { errnoOf } from "@xen-vhost/vmm-sys-util";
import { XenError } from "../error.js";
import type { XenArch } from "../abi/domctl.js";
import type {
  EventChannelDevice, ForeignMapOptions, ForeignMapping, GrantDevice, GuestHandle, IoeventfdRequest, IrqfdRequest,
  TransportCapabilities, XenTransport,
} from "../transport.js";

/** One recorded call: the method and copies of its byte arguments as passed in. */
export type RecordedCall =
  | { method: "sysctl"; op: Uint8Array; handles: { offset: number; data: Uint8Array }[] }
  | { method: "domctl"; op: Uint8Array; handles: { offset: number; data: Uint8Array }[] }
  | { method: "consoleIo"; cmd: number; data: Uint8Array }
  | { method: "dmOp"; domid: number; bufs: Uint8Array[] }
  | { method: "mmapForeign"; domid: number; gfns: bigint[]; options: ForeignMapOptions }
  | { method: "mmapResource"; domid: number; type: number; id: number; frame: number; nrFrames: number }
  | { method: "resourceSize"; domid: number; type: number; id: number }
  | { method: "restrict"; domid: number }
  | { method: "irqfd"; req: IrqfdRequest & { dmOp: Uint8Array } }
  | { method: "ioeventfd"; req: IoeventfdRequest };

/** Answers a call in place (write OUT fields into the live buffers) or throws; return a value where one is due. */
export interface Responders {
  sysctl?: (op: Uint8Array, handles: readonly GuestHandle[]) => number | void;
  domctl?: (op: Uint8Array, handles: readonly GuestHandle[]) => number | void;
  consoleIo?: (cmd: number, data: Uint8Array) => number | void;
  dmOp?: (domid: number, bufs: readonly Uint8Array[]) => void;
  mmapForeign?: (domid: number, gfns: BigUint64Array) => ForeignMapping;
  mmapResource?: (domid: number, type: number, id: number, frame: number, nrFrames: number) => ArrayBuffer;
  resourceSize?: (domid: number, type: number, id: number) => number;
  openEventChannels?: () => EventChannelDevice;
  openGrantDevice?: () => GrantDevice;
}

/** A XenError as a failing hypercall/ioctl would produce it, for responders: `fail("ESRCH", "dm_op")`. */
export function fail(code: string, op = "test"): XenError {
  return XenError.fromErrno(errnoOf(code), op);
}

export class RecordingTransport implements XenTransport {
  readonly kind = "recording";
  readonly arch: XenArch;
  readonly calls: RecordedCall[] = [];
  readonly respond: Responders;
  caps: TransportCapabilities = { irqfd: true, ioeventfd: true };
  #closed = false;

  constructor(options: { arch?: XenArch; respond?: Responders } = {}) {
    this.arch = options.arch ?? "x86_64";
    this.respond = options.respond ?? {};
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The calls of one method. */
  of<M extends RecordedCall["method"]>(method: M): Extract<RecordedCall, { method: M }>[] {
    return this.calls.filter((c): c is Extract<RecordedCall, { method: M }> => c.method === method);
  }

  sysctl(op: Uint8Array, handles: readonly GuestHandle[] = []): number {
    this.calls.push({ method: "sysctl", op: op.slice(), handles: handles.map((h) => ({ offset: h.offset, data: h.data.slice() })) });
    return this.respond.sysctl?.(op, handles) ?? 0;
  }

  domctl(op: Uint8Array, handles: readonly GuestHandle[] = []): number {
    this.calls.push({ method: "domctl", op: op.slice(), handles: handles.map((h) => ({ offset: h.offset, data: h.data.slice() })) });
    return this.respond.domctl?.(op, handles) ?? 0;
  }

  consoleIo(cmd: number, data: Uint8Array): number {
    this.calls.push({ method: "consoleIo", cmd, data: data.slice() });
    return this.respond.consoleIo?.(cmd, data) ?? 0;
  }

  dmOp(domid: number, bufs: readonly Uint8Array[]): void {
    this.calls.push({ method: "dmOp", domid, bufs: bufs.map((b) => b.slice()) });
    this.respond.dmOp?.(domid, bufs);
  }

  mmapForeign(domid: number, gfns: BigUint64Array, options: ForeignMapOptions = {}): ForeignMapping {
    this.calls.push({ method: "mmapForeign", domid, gfns: [...gfns], options });
    if (this.respond.mmapForeign) return this.respond.mmapForeign(domid, gfns);
    return { buffer: new ArrayBuffer(gfns.length * 4096), errors: new Int32Array(gfns.length) };
  }

  mmapResource(domid: number, type: number, id: number, frame: number, nrFrames: number): ArrayBuffer {
    this.calls.push({ method: "mmapResource", domid, type, id, frame, nrFrames });
    return this.respond.mmapResource?.(domid, type, id, frame, nrFrames) ?? new ArrayBuffer(nrFrames * 4096);
  }

  resourceSize(domid: number, type: number, id: number): number {
    this.calls.push({ method: "resourceSize", domid, type, id });
    return this.respond.resourceSize?.(domid, type, id) ?? 2;
  }

  unmap(_buffer: ArrayBuffer): void {}

  restrict(domid: number): void {
    this.calls.push({ method: "restrict", domid });
  }

  capabilities(): TransportCapabilities {
    return this.caps;
  }

  irqfd(req: IrqfdRequest): void {
    this.calls.push({ method: "irqfd", req: { ...req, dmOp: req.dmOp.slice() } });
  }

  ioeventfd(req: IoeventfdRequest): void {
    this.calls.push({ method: "ioeventfd", req });
  }

  openEventChannels(): EventChannelDevice {
    if (!this.respond.openEventChannels) throw new XenError("Unsupported", "recording transport: no event channel device", { op: "openEventChannels" });
    return this.respond.openEventChannels();
  }

  openGrantDevice(): GrantDevice {
    if (!this.respond.openGrantDevice) throw new XenError("Unsupported", "recording transport: no grant device", { op: "openGrantDevice" });
    return this.respond.openGrantDevice();
  }

  close(): void {
    this.#closed = true;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
