// Per device type: how a request the backend lost is failed to the guest (BackendLossPolicy "fail"), and
// which relay policies suit the type. Values from the virtio 1.2 device sections and linux/fuse.h.
import type { GuestMemory } from "@xen-vhost/vm-memory";
import type { DescriptorChain } from "@xen-vhost/virtio-queue";
import type { BackendLossPolicy, FailRequest, WriteBackPolicy } from "./shadow-queue.js";

/** virtio 1.2 5.2.6: VIRTIO_BLK_S_IOERR. */
export const VIRTIO_BLK_S_IOERR = 1;
/** Linux errno EIO, negated in fuse_out_header.error (linux/fuse.h). */
const EIO = 5;

/** virtio-blk: the status byte (the last writable byte) says VIRTIO_BLK_S_IOERR. */
export const failBlk: FailRequest = (chain: DescriptorChain, guest: GuestMemory): number => {
  const w = chain.writable.filter((d) => d.len > 0);
  const last = w[w.length - 1];
  if (!last) return 0;
  guest.write(last.addr + BigInt(last.len - 1), new Uint8Array([VIRTIO_BLK_S_IOERR]));
  return chain.writableLength;
};

/**
 * virtio-fs: a fuse_out_header { u32 len; i32 error; u64 unique } with error -EIO and the request's unique
 * (from fuse_in_header { u32 len; u32 opcode; u64 unique; ... } at the start of the readable bytes).
 */
export const failFs: FailRequest = (chain: DescriptorChain, guest: GuestMemory): number => {
  if (chain.readableLength < 16 || chain.writableLength < 16) return 0;
  const inHdr = chain.readAll().subarray(0, 16);
  const out = new Uint8Array(16);
  const v = new DataView(out.buffer);
  v.setUint32(0, 16, true);
  v.setInt32(4, -EIO, true);
  out.set(inHdr.subarray(8, 16), 8);
  let at = 0;
  for (const d of chain.writable) {
    if (at >= 16) break;
    const n = Math.min(d.len, 16 - at);
    guest.write(d.addr, out.subarray(at, at + n));
    at += n;
  }
  return 16;
};

/** The relay policies for a virtio device type (virtio 1.2 5: 1 net, 2 blk, 26 fs; others generic). */
export interface DevicePolicy {
  writeBack: WriteBackPolicy;
  onBackendLoss: BackendLossPolicy;
  failRequest?: FailRequest;
}

export function policyFor(deviceId: number): DevicePolicy {
  switch (deviceId) {
    case 2:
      // Linux virtio_blk reads the status byte whatever used.len says; DPDK vhost_blk reports 4096 always.
      // Reads and writes are idempotent, so a new backend can simply redo them.
      return { writeBack: "whole", onBackendLoss: "repost", failRequest: failBlk };
    case 1:
      // TX frames may go out twice (networks allow duplicates); RX buffers are just offered again.
      return { writeBack: "used-len", onBackendLoss: "repost" };
    case 26:
      // A new virtiofsd has no FUSE session: the guest must see the requests fail.
      return { writeBack: "used-len", onBackendLoss: "fail", failRequest: failFs };
    default:
      return { writeBack: "used-len", onBackendLoss: "fail" };
  }
}
