// A region mapped on demand, the shape vm-memory-xen's grant regions (no advance mapping) take: every
// borrow maps the pages it needs from a memfd, release unmaps them. Real mmap/munmap, so the tests prove
// GuestMemory works through `borrow` alone and never leaves a window mapped.
import { AtomicAccess, close, ftruncate, memfdCreate, mmap, munmap, pageSize } from "@xen-vhost/vmm-sys-util";
import {
  GuestAddress,
  GuestMemoryError,
  type GuestAddressLike,
  type GuestMemoryRegion,
  type RegionView,
  type VhostUserRegionDescription,
} from "../src/index.js";

export class OnDemandRegion implements GuestMemoryRegion {
  readonly guestBase: GuestAddress;
  readonly size: number;
  readonly fd: number;
  maps = 0;
  live = 0;
  /** Test hook: the next borrow fails with MapFailed (as a failing gntdev map would). */
  failNext = false;
  #closed = false;

  constructor(guestBase: GuestAddressLike, size: number) {
    this.guestBase = GuestAddress.from(guestBase);
    this.size = size;
    this.fd = memfdCreate("on-demand");
    ftruncate(this.fd, size);
  }

  get closed(): boolean {
    return this.#closed;
  }

  get mapping(): undefined {
    if (this.#closed) throw new GuestMemoryError("Closed", "closed");
    return undefined;
  }

  borrow(offset: number, length: number): RegionView {
    if (this.#closed) throw new GuestMemoryError("Closed", "closed");
    if (this.failNext) {
      this.failNext = false;
      throw new GuestMemoryError("MapFailed", "injected map failure");
    }
    const ps = pageSize();
    const start = Math.floor(offset / ps) * ps;
    const end = Math.max(start + ps, Math.ceil((offset + length) / ps) * ps);
    const buf = mmap(end - start, { fd: this.fd, offset: start });
    this.maps++;
    this.live++;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.live--;
      munmap(buf);
    };
    return {
      bytes: new Uint8Array(buf, offset - start, length),
      atomics: new AtomicAccess(buf),
      atomicsOffset: offset - start,
      release,
      [Symbol.dispose]: release,
    };
  }

  vhostUserDescription(): VhostUserRegionDescription | undefined {
    return undefined;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    close(this.fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
