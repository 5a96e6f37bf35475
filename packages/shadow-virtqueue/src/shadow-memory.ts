// The memory a backend is given in shadow mode: one memfd (so one SET_MEM_TABLE region, which every
// backend accepts), split per queue into the shadow ring (laid out as virtio-queue's DriverQueue.create
// does) and a bounded buffer pool. The guest's own memory is never shown to the backend. memfd pages are
// allocated when first touched, so a generous pool costs nothing until the guest actually keeps that much
// in flight; the pool size is the hard bound.
import { GuestMemory, MmapRegion, type VhostUserRegionDescription } from "@xen-vhost/vm-memory";
import { DriverQueue } from "@xen-vhost/virtio-queue";
import { pageSize } from "@xen-vhost/vmm-sys-util";
import { ShadowQueueError } from "./error.js";

/** Default pool per queue: enough for a 1 MiB virtio-fs request plus a queue depth of 4 KiB blocks. */
export const DEFAULT_POOL_BYTES = 4 << 20;

export interface ShadowQueueSpec {
  /** Queue index (the vring index the backend sees). */
  index: number;
  /** Shadow ring size (a power of two; normally the guest's queue size). */
  size: number;
  /** Buffer pool bytes for this queue (default DEFAULT_POOL_BYTES). */
  poolBytes?: number;
}

/** Where one queue's shadow ring and pool live in shadow memory. */
export interface ShadowQueueArea {
  readonly index: number;
  readonly size: number;
  /** Base of the ring (descriptor table; avail and used follow, see DriverQueue.layout). */
  readonly ringBase: number;
  readonly poolBase: number;
  readonly poolBytes: number;
}

export interface ShadowMemoryOptions {
  /** Guest-physical base of the shadow memory as the backend sees it (default 0). */
  base?: number;
  /** Default pool bytes per queue. */
  poolBytes?: number;
  /** memfd name (default "shadow-vq"). */
  name?: string;
}

function roundUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

export class ShadowMemory implements Disposable {
  readonly memory: GuestMemory;
  readonly areas: ReadonlyMap<number, ShadowQueueArea>;

  private constructor(memory: GuestMemory, areas: Map<number, ShadowQueueArea>) {
    this.memory = memory;
    this.areas = areas;
  }

  /**
   * Lays out and creates the shadow memory for these queues.
   * @throws ShadowQueueError `InvalidConfig` for a bad queue size or a duplicate index;
   *   GuestMemoryError `MapFailed` if the memfd cannot be made.
   */
  static create(queues: readonly ShadowQueueSpec[], options: ShadowMemoryOptions = {}): ShadowMemory {
    const page = pageSize();
    const base = options.base ?? 0;
    if (!Number.isSafeInteger(base) || base < 0 || base % page !== 0) throw new RangeError(`shadow base ${base} is not page-aligned`);
    const areas = new Map<number, ShadowQueueArea>();
    let at = base;
    for (const q of queues) {
      if (areas.has(q.index)) throw new ShadowQueueError("InvalidConfig", `queue ${q.index} given twice`, { queue: q.index });
      if (!Number.isInteger(q.size) || q.size < 1 || q.size > 32768 || (q.size & (q.size - 1)) !== 0)
        throw new ShadowQueueError("InvalidConfig", `queue ${q.index}: size ${q.size} is not a power of two <= 32768`, { queue: q.index });
      const poolBytes = roundUp(q.poolBytes ?? options.poolBytes ?? DEFAULT_POOL_BYTES, page);
      const ringBytes = roundUp(Number(DriverQueue.layout(0, q.size).end), page);
      areas.set(q.index, { index: q.index, size: q.size, ringBase: at, poolBase: at + ringBytes, poolBytes });
      at += ringBytes + poolBytes;
    }
    const total = Math.max(at - base, page);
    const memory = new GuestMemory([MmapRegion.memfd(base, total, { name: options.name ?? "shadow-vq" })]);
    return new ShadowMemory(memory, areas);
  }

  /** What SET_MEM_TABLE carries (one memfd region). */
  vhostUserRegions(): VhostUserRegionDescription[] {
    return this.memory.vhostUserRegions();
  }

  /** Bytes of shadow memory (rings and pools): the most a device's shadow mode can ever use. */
  get totalSize(): number {
    return this.memory.totalSize;
  }

  get closed(): boolean {
    return this.memory.closed;
  }

  close(): void {
    this.memory.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
