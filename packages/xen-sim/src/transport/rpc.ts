// The transport side of the sim socket: calls that turn the simulator's errno refusals into the XenErrors
// privcmd would produce, so code above the transport sees the same failures on the simulator and on Xen.
import { errnoOf, close as closeFd, mmap, munmap, mmapFixed, MmapConstants } from "@xen-vhost/vmm-sys-util";
import { XenError } from "@xen-vhost/xen-sys";
import type { BlockingClient } from "../protocol.js";
import { PAGE_SIZE } from "../layout.js";
import { SimError } from "../error.js";

export class SimRpc {
  readonly client: BlockingClient;

  constructor(client: BlockingClient) {
    this.client = client;
  }

  /** Calls the simulator; a refusal becomes XenError.fromErrno (same kinds as privcmd). */
  call<T>(op: string, method: string, params: unknown = {}, extra: { domid?: number } = {}, sendFds: readonly number[] = []): { result: T; fds: number[] } {
    let r;
    try {
      r = this.client.call(method, params, sendFds);
    } catch (err) {
      if (err instanceof SimError && err.kind === "Closed") throw XenError.closed("sim transport");
      // The simulator process is gone: what a dead /dev/xen would be; nothing on this connection works again.
      if (err instanceof SimError && err.kind === "Disconnected") {
        throw new XenError("Disconnected", `${op}: the simulator went away (${err.message})`, { op, code: "ECONNRESET", errno: 104 }, { cause: err });
      }
      throw new XenError("OperationFailed", `${op}: ${err instanceof Error ? err.message : String(err)}`, { op }, { cause: err });
    }
    if (r.refused) {
      let errno: number;
      try {
        errno = errnoOf(r.refused.code);
      } catch {
        errno = 22;
      }
      const e = XenError.fromErrno(errno, op, extra.domid !== undefined ? { domid: extra.domid } : {});
      if (r.refused.message && r.refused.message !== r.refused.code) {
        Object.defineProperty(e, "message", { value: `${e.message} (${r.refused.message})` });
      }
      throw e;
    }
    return { result: r.result as T, fds: r.fds };
  }
}

/** Closes received fds, ignoring errors (teardown paths). */
export function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeFd(fd);
    } catch {
      // already closed
    }
  }
}

/**
 * Assembles pages from memfds into one contiguous view: a PROT_NONE reservation with each mapped page (or
 * run of adjacent pages) placed over it with MAP_FIXED. Pages left out stay PROT_NONE: touching them faults,
 * as touching a frame privcmd failed to map does.
 */
export function assemblePages(count: number, pages: readonly ({ fd: number; offset: number } | undefined)[], readOnly: boolean): ArrayBuffer {
  const buffer = mmap(count * PAGE_SIZE, { prot: MmapConstants.PROT_NONE });
  const prot = MmapConstants.PROT_READ | (readOnly ? 0 : MmapConstants.PROT_WRITE);
  try {
    for (let i = 0; i < count; ) {
      const p = pages[i];
      if (!p) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < count && pages[j] && pages[j]!.fd === p.fd && pages[j]!.offset === p.offset + (j - i) * PAGE_SIZE) j++;
      mmapFixed(buffer, i * PAGE_SIZE, (j - i) * PAGE_SIZE, { fd: p.fd, fileOffset: p.offset, prot, flags: MmapConstants.MAP_SHARED });
      i = j;
    }
  } catch (err) {
    munmap(buffer);
    throw err;
  }
  return buffer;
}
