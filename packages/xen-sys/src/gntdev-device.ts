// The kernel's /dev/xen/gntdev (Linux include/uapi/xen/gntdev.h): the GrantDevice of PrivcmdTransport.
import { ioctl, mmap, munmap, addressOf, MmapConstants } from "@xen-vhost/vmm-sys-util";
import {
  GNTCOPY_dest_gref, GNTCOPY_source_gref, GNTDEV_DEVICE, GntdevGrantCopyForeign, GntdevGrantCopySegment,
  IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR, IOCTL_GNTDEV_GRANT_COPY, IOCTL_GNTDEV_MAP_GRANT_REF, IOCTL_GNTDEV_SET_MAX_GRANTS,
  IOCTL_GNTDEV_SET_UNMAP_NOTIFY, IOCTL_GNTDEV_UNMAP_GRANT_REF, IoctlGntdevGetOffsetForVaddr, IoctlGntdevGrantCopy,
  IoctlGntdevGrantRef, IoctlGntdevMapGrantRef, IoctlGntdevSetMaxGrants, IoctlGntdevUnmapGrantRef,
  IoctlGntdevUnmapNotify, UNMAP_NOTIFY_CLEAR_BYTE, UNMAP_NOTIFY_SEND_EVENT,
} from "./abi/gntdev.js";
import { XEN_PAGE_SIZE } from "./abi/privcmd.js";
import { XenError } from "./error.js";
import { checkDomid, checkU32, closeQuietly, openDevice } from "./device.js";
import type { GrantCopyPtr, GrantCopySegment, GrantDevice, GrantMapping } from "./transport.js";

/** The IOCTL_GNTDEV_MAP_GRANT_REF argument for `refs` (header + count refs from offset 16). */
export function encodeMapGrantRef(domid: number, refs: readonly number[]): Uint8Array {
  const refsOffset = IoctlGntdevMapGrantRef.offsetOf("refs0_domid");
  const buf = new Uint8Array(Math.max(IoctlGntdevMapGrantRef.size, refsOffset + refs.length * IoctlGntdevGrantRef.size));
  const view = new DataView(buf.buffer);
  IoctlGntdevMapGrantRef.write(view, 0, { count: refs.length });
  refs.forEach((ref, i) => IoctlGntdevGrantRef.write(view, refsOffset + i * IoctlGntdevGrantRef.size, { domid, ref }));
  return buf;
}

/** The segment array of IOCTL_GNTDEV_GRANT_COPY; `addressOfLocal` resolves local buffers (a user pointer). */
export function encodeGrantCopySegments(
  segments: readonly GrantCopySegment[],
  addressOfLocal: (b: Uint8Array) => bigint,
): Uint8Array {
  const buf = new Uint8Array(segments.length * GntdevGrantCopySegment.size);
  const view = new DataView(buf.buffer);
  segments.forEach((seg, i) => {
    const base = i * GntdevGrantCopySegment.size;
    let flags = 0;
    const side = (ptr: GrantCopyPtr, at: number, gref: number): void => {
      if ("local" in ptr) {
        if (ptr.local.byteLength < seg.len) throw new RangeError(`grant copy segment ${i}: local buffer shorter than len ${seg.len}`);
        view.setBigUint64(base + at, addressOfLocal(ptr.local), true);
      } else {
        checkDomid(ptr.domid);
        if (ptr.offset + seg.len > XEN_PAGE_SIZE) throw new RangeError(`grant copy segment ${i}: offset + len crosses the granted page`);
        GntdevGrantCopyForeign.write(view, base + at, { ref: ptr.ref, offset: ptr.offset, domid: ptr.domid });
        flags |= gref;
      }
    };
    if (!Number.isInteger(seg.len) || seg.len < 0 || seg.len > XEN_PAGE_SIZE) throw new RangeError(`grant copy segment ${i}: len ${seg.len}`);
    side(seg.source, GntdevGrantCopySegment.offsetOf("source_virt"), GNTCOPY_source_gref);
    side(seg.dest, GntdevGrantCopySegment.offsetOf("dest_virt"), GNTCOPY_dest_gref);
    GntdevGrantCopySegment.write(view, base, { len: seg.len, flags });
  });
  return buf;
}

export class GntdevDevice implements GrantDevice {
  #fd: number;
  readonly path: string;
  readonly #mappings = new Set<GrantMapping>();

  private constructor(fd: number, path: string) {
    this.#fd = fd;
    this.path = path;
  }

  /** @throws XenError DeviceMissing naming the node */
  static open(path: string = GNTDEV_DEVICE): GntdevDevice {
    return new GntdevDevice(openDevice(path), path);
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  get #f(): number {
    if (this.#fd < 0) throw XenError.closed("gntdev device");
    return this.#fd;
  }

  #ioctl(name: string, request: number, arg: Uint8Array, domid?: number): number {
    try {
      return ioctl(this.#f, request, arg);
    } catch (err) {
      throw XenError.fromSysError(err, name, domid === undefined ? { path: this.path } : { path: this.path, domid });
    }
  }

  setMaxGrants(count: number): void {
    checkU32(count, "count");
    this.#ioctl("IOCTL_GNTDEV_SET_MAX_GRANTS", IOCTL_GNTDEV_SET_MAX_GRANTS, IoctlGntdevSetMaxGrants.encode({ count }));
  }

  mapGrantRefs(domid: number, refs: readonly number[], options: { readOnly?: boolean } = {}): GrantMapping {
    checkDomid(domid);
    if (refs.length === 0) throw new RangeError("mapGrantRefs needs at least one grant ref");
    refs.forEach((r) => checkU32(r, "grant ref"));
    const arg = encodeMapGrantRef(domid, refs);
    this.#ioctl("IOCTL_GNTDEV_MAP_GRANT_REF", IOCTL_GNTDEV_MAP_GRANT_REF, arg, domid);
    const index = IoctlGntdevMapGrantRef.decode(arg).index;
    let buffer: ArrayBuffer;
    try {
      const prot = MmapConstants.PROT_READ | (options.readOnly ? 0 : MmapConstants.PROT_WRITE);
      buffer = mmap(refs.length * XEN_PAGE_SIZE, { fd: this.#f, prot, flags: MmapConstants.MAP_SHARED, offset: index });
    } catch (err) {
      // Release the kernel's reservation so a failed mmap (e.g. a bad grant, EFAULT) leaks nothing.
      this.#unmapIndex(index, refs.length, domid);
      throw XenError.fromSysError(err, "mmap gntdev", { path: this.path, domid });
    }
    const mapping: GrantMapping = { buffer, index, count: refs.length, domid };
    this.#mappings.add(mapping);
    return mapping;
  }

  #unmapIndex(index: bigint, count: number, domid: number): void {
    const arg = IoctlGntdevUnmapGrantRef.encode({ index, count });
    this.#ioctl("IOCTL_GNTDEV_UNMAP_GRANT_REF", IOCTL_GNTDEV_UNMAP_GRANT_REF, arg, domid);
  }

  unmapGrantRefs(mapping: GrantMapping): void {
    if (!this.#mappings.delete(mapping)) return;
    munmap(mapping.buffer);
    this.#unmapIndex(mapping.index, mapping.count, mapping.domid);
  }

  getOffsetForVaddr(vaddr: bigint): { offset: bigint; count: number } {
    const arg = IoctlGntdevGetOffsetForVaddr.encode({ vaddr });
    this.#ioctl("IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR", IOCTL_GNTDEV_GET_OFFSET_FOR_VADDR, arg);
    const out = IoctlGntdevGetOffsetForVaddr.decode(arg);
    return { offset: out.offset, count: out.count };
  }

  setUnmapNotify(mapping: GrantMapping, options: { clearByte?: number; eventChannelPort?: number }): void {
    let action = 0;
    let index = mapping.index;
    if (options.clearByte !== undefined) {
      if (!Number.isInteger(options.clearByte) || options.clearByte < 0 || options.clearByte >= mapping.count * XEN_PAGE_SIZE)
        throw new RangeError(`clearByte ${options.clearByte} outside the mapping`);
      action |= UNMAP_NOTIFY_CLEAR_BYTE;
      index += BigInt(options.clearByte);
    }
    if (options.eventChannelPort !== undefined) {
      checkU32(options.eventChannelPort, "event channel port");
      action |= UNMAP_NOTIFY_SEND_EVENT;
    }
    const arg = IoctlGntdevUnmapNotify.encode({ index, action, event_channel_port: options.eventChannelPort ?? 0 });
    this.#ioctl("IOCTL_GNTDEV_SET_UNMAP_NOTIFY", IOCTL_GNTDEV_SET_UNMAP_NOTIFY, arg, mapping.domid);
  }

  grantCopy(segments: readonly GrantCopySegment[]): Int16Array {
    if (segments.length === 0) return new Int16Array(0);
    const segs = encodeGrantCopySegments(segments, (b) => addressOf(b));
    const arg = IoctlGntdevGrantCopy.encode({ count: segments.length, segments: addressOf(segs) });
    this.#ioctl("IOCTL_GNTDEV_GRANT_COPY", IOCTL_GNTDEV_GRANT_COPY, arg);
    const view = new DataView(segs.buffer);
    const status = GntdevGrantCopySegment.offsetOf("status");
    return Int16Array.from(segments, (_, i) => view.getInt16(i * GntdevGrantCopySegment.size + status, true));
  }

  /** Unmaps what is still mapped, then closes the fd. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    for (const m of [...this.#mappings]) {
      try {
        this.unmapGrantRefs(m);
      } catch {
        // closing the fd below releases the kernel side anyway
      }
    }
    const fd = this.#fd;
    this.#fd = -1;
    closeQuietly(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
