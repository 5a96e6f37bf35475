// The ioctl argument structs of Linux include/uapi/xen/privcmd.h, built from a request plus the user
// addresses they must carry. Pure functions (addresses come from a resolver), so the encodings are unit-tested
// without the device; PrivcmdTransport passes vmm-sys-util's addressOf.
import {
  PRIVCMD_IOEVENTFD_FLAG_DEASSIGN, PRIVCMD_IRQFD_FLAG_DEASSIGN, PrivcmdDmOp, PrivcmdDmOpBuf, PrivcmdHypercall,
  PrivcmdIoeventfd, PrivcmdIrqfd, PrivcmdMmapResource, PrivcmdMmapbatchV2, XEN_PAGE_SIZE,
} from "./abi/privcmd.js";
import type { IoeventfdRequest, IrqfdRequest } from "./transport.js";

export type AddressOf = (view: ArrayBufferView | ArrayBuffer) => bigint;

/** struct privcmd_hypercall: op and up to five arguments. */
export function hypercallArg(op: number, args: readonly bigint[]): Uint8Array {
  if (args.length > 5) throw new RangeError(`a hypercall takes at most 5 arguments, got ${args.length}`);
  return PrivcmdHypercall.encode({
    op: BigInt(op), arg0: args[0] ?? 0n, arg1: args[1] ?? 0n, arg2: args[2] ?? 0n, arg3: args[3] ?? 0n, arg4: args[4] ?? 0n,
  });
}

/** struct privcmd_dm_op plus its privcmd_dm_op_buf table (which must stay alive during the ioctl). */
export function dmOpArg(domid: number, bufs: readonly Uint8Array[], addressOf: AddressOf): { arg: Uint8Array; table: Uint8Array } {
  const table = new Uint8Array(bufs.length * PrivcmdDmOpBuf.size);
  const view = new DataView(table.buffer);
  bufs.forEach((b, i) => PrivcmdDmOpBuf.write(view, i * PrivcmdDmOpBuf.size, { uptr: addressOf(b), size: BigInt(b.byteLength) }));
  return { arg: PrivcmdDmOp.encode({ dom: domid, num: bufs.length, ubufs: addressOf(table) }), table };
}

/** struct privcmd_mmapbatch_v2 for `count` frames from index `first` of a mapping at `base`. */
export function mmapbatchV2Arg(
  domid: number,
  base: bigint,
  gfns: BigUint64Array,
  err: Int32Array,
  first: number,
  count: number,
  addressOf: AddressOf,
): Uint8Array {
  return PrivcmdMmapbatchV2.encode({
    num: count, dom: domid, addr: base + BigInt(first * XEN_PAGE_SIZE),
    arr: addressOf(gfns.subarray(first, first + count)), err: addressOf(err.subarray(first, first + count)),
  });
}

/** struct privcmd_mmap_resource; `addr` 0 and `nrFrames` 0 ask for the resource's size. */
export function mmapResourceArg(domid: number, type: number, id: number, frame: number, nrFrames: number, addr: bigint): Uint8Array {
  return PrivcmdMmapResource.encode({ dom: domid, type, id, idx: frame, num: BigInt(nrFrames), addr });
}

/** The IOCTL_PRIVCMD_RESTRICT argument: a bare domid_t. */
export function restrictArg(domid: number): Uint8Array {
  const arg = new Uint8Array(2);
  new DataView(arg.buffer).setUint16(0, domid, true);
  return arg;
}

/** struct privcmd_irqfd. */
export function irqfdArg(req: IrqfdRequest, addressOf: AddressOf): Uint8Array {
  return PrivcmdIrqfd.encode({
    dm_op: addressOf(req.dmOp), size: req.dmOp.byteLength, fd: req.eventFd,
    flags: req.deassign ? PRIVCMD_IRQFD_FLAG_DEASSIGN : 0, dom: req.domid,
  });
}

/** struct privcmd_ioeventfd. */
export function ioeventfdArg(req: IoeventfdRequest, addressOf: AddressOf): Uint8Array {
  return PrivcmdIoeventfd.encode({
    ioreq: addressOf(req.ioreq), ports: addressOf(req.ports), addr: req.addr, addr_len: req.addrLen,
    event_fd: req.eventFd, vcpus: req.ports.length, vq: req.vq,
    flags: req.deassign ? PRIVCMD_IOEVENTFD_FLAG_DEASSIGN : 0, dom: req.domid,
  });
}
