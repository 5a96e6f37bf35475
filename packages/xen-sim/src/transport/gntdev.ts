// The simulator's /dev/xen/gntdev (drivers/xen/gntdev.c contract): the simulator checks each grant in the
// granting domain's grant table (GTF_permit_access for dom0, GTF_readonly honoured) and pins it
// (GTF_reading/GTF_writing); the pages are then mapped here from the guest RAM memfd.
import { addressOf, mmap, munmap, MmapConstants } from "@xen-vhost/vmm-sys-util";
import {
  XenError, checkDomid, type GrantCopySegment, type GrantDevice, type GrantMapping,
} from "@xen-vhost/xen-sys";
import { GNTST, PAGE_SIZE } from "../layout.js";
import { assemblePages, closeAll, type SimRpc } from "./rpc.js";

interface Mapped {
  mapping: GrantMapping;
  base: bigint;
  notify: { clearByte?: number; eventChannelPort?: number } | undefined;
}

export class SimGrantDevice implements GrantDevice {
  readonly #rpc: SimRpc;
  readonly #id: number;
  #closed = false;
  readonly #maps = new Map<GrantMapping, Mapped>();

  private constructor(rpc: SimRpc, id: number) {
    this.#rpc = rpc;
    this.#id = id;
  }

  static open(rpc: SimRpc): SimGrantDevice {
    const { result } = rpc.call<{ device: number }>("open /dev/xen/gntdev", "gntdev.open");
    return new SimGrantDevice(rpc, result.device);
  }

  get closed(): boolean {
    return this.#closed;
  }

  #check(): void {
    if (this.#closed) throw XenError.closed("gntdev device");
  }

  setMaxGrants(_count: number): void {
    this.#check();
  }

  mapGrantRefs(domid: number, refs: readonly number[], options: { readOnly?: boolean } = {}): GrantMapping {
    this.#check();
    checkDomid(domid);
    if (refs.length === 0) throw new RangeError("mapGrantRefs needs at least one grant ref");
    const readOnly = options.readOnly ?? false;
    const { result, fds } = this.#rpc.call<{ index: bigint; fdIndex: number[]; offsets: number[] }>(
      "mmap gntdev", "gntdev.map", { device: this.#id, domid, refs: [...refs], readOnly }, { domid },
    );
    let buffer: ArrayBuffer;
    try {
      buffer = assemblePages(refs.length, result.fdIndex.map((k, i) => ({ fd: fds[k]!, offset: result.offsets[i]! })), readOnly);
    } catch (err) {
      this.#rpc.call("IOCTL_GNTDEV_UNMAP_GRANT_REF", "gntdev.unmap", { device: this.#id, index: result.index });
      throw XenError.fromSysError(err, "mmap gntdev", { domid });
    } finally {
      closeAll(fds);
    }
    const mapping: GrantMapping = { buffer, index: result.index, count: refs.length, domid };
    this.#maps.set(mapping, { mapping, base: addressOf(new Uint8Array(buffer, 0, 1)), notify: undefined });
    return mapping;
  }

  unmapGrantRefs(mapping: GrantMapping): void {
    const m = this.#maps.get(mapping);
    if (!m) return;
    this.#maps.delete(mapping);
    // gntdev unmap_grant_pages: UNMAP_NOTIFY_CLEAR_BYTE is applied before the page goes away.
    if (m.notify?.clearByte !== undefined) new Uint8Array(mapping.buffer)[m.notify.clearByte] = 0;
    munmap(mapping.buffer);
    this.#rpc.call("IOCTL_GNTDEV_UNMAP_GRANT_REF", "gntdev.unmap", {
      device: this.#id, index: mapping.index, ...(m.notify?.eventChannelPort !== undefined ? { notifyPort: m.notify.eventChannelPort } : {}),
    });
  }

  getOffsetForVaddr(vaddr: bigint): { offset: bigint; count: number } {
    this.#check();
    for (const m of this.#maps.values()) {
      if (vaddr >= m.base && vaddr < m.base + BigInt(m.mapping.count * PAGE_SIZE)) return { offset: m.mapping.index, count: m.mapping.count };
    }
    throw new XenError("OperationFailed", "IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR: EINVAL", { op: "IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR", code: "EINVAL", errno: 22 });
  }

  setUnmapNotify(mapping: GrantMapping, options: { clearByte?: number; eventChannelPort?: number }): void {
    this.#check();
    const m = this.#maps.get(mapping);
    if (!m) throw new XenError("OperationFailed", "IOCTL_GNTDEV_SET_UNMAP_NOTIFY: ENOENT", { op: "IOCTL_GNTDEV_SET_UNMAP_NOTIFY", code: "ENOENT", errno: 2 });
    if (options.clearByte !== undefined && (!Number.isInteger(options.clearByte) || options.clearByte < 0 || options.clearByte >= mapping.count * PAGE_SIZE))
      throw new RangeError(`clearByte ${options.clearByte} outside the mapping`);
    m.notify = { ...options };
  }

  grantCopy(segments: readonly GrantCopySegment[]): Int16Array {
    this.#check();
    const status = new Int16Array(segments.length);
    if (segments.length === 0) return status;
    const sides: { domid: number; ref: number; offset: number; len: number; write: boolean }[] = [];
    const where: { seg: number; dest: boolean }[] = [];
    segments.forEach((seg, i) => {
      if (!Number.isInteger(seg.len) || seg.len < 0 || seg.len > PAGE_SIZE) throw new RangeError(`grant copy segment ${i}: len ${seg.len}`);
      for (const [ptr, dest] of [[seg.source, false], [seg.dest, true]] as const) {
        if ("local" in ptr) {
          if (ptr.local.byteLength < seg.len) throw new RangeError(`grant copy segment ${i}: local buffer shorter than len ${seg.len}`);
          continue;
        }
        checkDomid(ptr.domid);
        sides.push({ domid: ptr.domid, ref: ptr.ref, offset: ptr.offset, len: seg.len, write: dest });
        where.push({ seg: i, dest });
      }
    });
    const { result, fds } = this.#rpc.call<{ sides: { status: number; fd?: number; fileOffset?: number }[] }>(
      "IOCTL_GNTDEV_GRANT_COPY", "gntdev.copy", { sides },
    );
    const maps: ArrayBuffer[] = [];
    try {
      const views = new Map<string, Uint8Array>();
      result.sides.forEach((s, k) => {
        const w = where[k]!;
        if (s.status !== GNTST.okay) {
          if (status[w.seg] === 0) status[w.seg] = s.status;
          return;
        }
        const page = mmap(PAGE_SIZE, { fd: fds[s.fd!]!, offset: s.fileOffset!, flags: MmapConstants.MAP_SHARED });
        maps.push(page);
        views.set(`${w.seg}:${w.dest ? "d" : "s"}`, new Uint8Array(page, sides[k]!.offset, sides[k]!.len));
      });
      segments.forEach((seg, i) => {
        if (status[i] !== 0) return;
        const src = "local" in seg.source ? seg.source.local.subarray(0, seg.len) : views.get(`${i}:s`)!;
        const dst = "local" in seg.dest ? seg.dest.local.subarray(0, seg.len) : views.get(`${i}:d`)!;
        dst.set(src);
      });
    } finally {
      for (const m of maps) munmap(m);
      closeAll(fds);
    }
    return status;
  }

  close(): void {
    if (this.#closed) return;
    for (const m of [...this.#maps.keys()]) {
      try {
        this.unmapGrantRefs(m);
      } catch {
        // the simulator drops the pins when the device closes
      }
    }
    this.#closed = true;
    try {
      if (!this.#rpc.client.closed) this.#rpc.call("close gntdev", "gntdev.close", { device: this.#id });
    } catch {
      // connection gone: nothing left to release
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
