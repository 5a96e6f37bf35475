// A guest driver on the virtio-mmio register file, for the shadow-mode tests and benchmark: probes and
// negotiates like Linux's virtio_mmio, lays out its rings with virtio-queue's DriverQueue (EVENT_IDX and
// indirect descriptors when the device offers them), kicks only when the device asks (avail_event), and
// completes requests from its interrupt handler (InterruptStatus, ACK, harvest), as a real guest would.
// On Xen the register accesses arrive as ioreqs; here they are calls on the transport.
import type { GuestMemory } from "@xen-vhost/vm-memory";
import { DriverQueue, type ChainSpec } from "@xen-vhost/virtio-queue";
import {
  VirtioMmioTransport, VirtioStatus as S,
  VIRTIO_MMIO_STATUS, VIRTIO_MMIO_DEVICE_FEATURES, VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL, VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH, VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_INTERRUPT_ACK,
} from "@xen-vhost/virtio-mmio";
import type { VhostUserDevice } from "./vhost-user-device.js";

const F_INDIRECT = 1n << 28n;
const F_EVENT_IDX = 1n << 29n;
const F_VERSION_1 = 1n << 32n;

export interface MmioGuestOptions {
  /** Guest RAM to put rings and the bump allocator in. */
  mem: GuestMemory;
  /** First byte the guest may use (rings, then buffers). */
  base: bigint;
  /** Bytes from `base` on. */
  bytes: number;
  /** Queue sizes, one per queue to set up. */
  queueSizes: readonly number[];
  /** Device-type feature bits the driver wants (acked if offered); ring features are taken if offered. */
  wantFeatures?: bigint;
  /** Use EVENT_IDX if offered (default true). */
  eventIdx?: boolean;
}

export interface Completion {
  readonly len: number;
}

export class MmioGuest implements Disposable {
  readonly mmio: VirtioMmioTransport;
  readonly mem: GuestMemory;
  readonly queues: DriverQueue<number>[] = [];
  features = 0n;
  interrupts = 0;
  #next: bigint;
  readonly #end: bigint;
  #token = 0;
  readonly #pending = new Map<number, (c: Completion) => void>();
  /** Chains waiting for free descriptors, per queue. */
  readonly #waiting: { chain: ChainSpec; indirect: boolean; token: number }[][] = [];
  #closed = false;

  private constructor(mmio: VirtioMmioTransport, o: MmioGuestOptions) {
    this.mmio = mmio;
    this.mem = o.mem;
    this.#next = o.base;
    this.#end = o.base + BigInt(o.bytes);
  }

  /** Brings the device up to DRIVER_OK. */
  static async start(dev: VhostUserDevice, o: MmioGuestOptions): Promise<MmioGuest> {
    const mmio = new VirtioMmioTransport(dev);
    const g = new MmioGuest(mmio, o);
    dev.on("used", () => mmio.signalUsedBuffers());
    dev.on("broken", (e) => mmio.setNeedsReset(e.message));
    mmio.on("interrupt", (level) => {
      if (level) void g.#onInterrupt();
    });
    const r = async (off: number) => Number(await mmio.read(off, 4));
    const w = async (off: number, v: number) => mmio.write(off, 4, v);
    await w(VIRTIO_MMIO_STATUS, 0);
    await w(VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER);
    let offered = 0n;
    for (const sel of [0, 1]) {
      await w(VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
      offered |= BigInt(await r(VIRTIO_MMIO_DEVICE_FEATURES)) << BigInt(32 * sel);
    }
    const ring = F_INDIRECT | ((o.eventIdx ?? true) ? F_EVENT_IDX : 0n) | F_VERSION_1;
    g.features = offered & ((o.wantFeatures ?? 0n) | ring);
    for (const sel of [0, 1]) {
      await w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
      await w(VIRTIO_MMIO_DRIVER_FEATURES, Number((g.features >> BigInt(32 * sel)) & 0xffffffffn));
    }
    await w(VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    if (((await r(VIRTIO_MMIO_STATUS)) & S.FEATURES_OK) === 0) throw new Error("device refused the features");
    const eventIdx = (g.features & F_EVENT_IDX) !== 0n;
    const indirect = (g.features & F_INDIRECT) !== 0n ? 8 : 0;
    for (const [i, size] of o.queueSizes.entries()) {
      await w(VIRTIO_MMIO_QUEUE_SEL, i);
      const max = await r(VIRTIO_MMIO_QUEUE_NUM_MAX);
      if (max < size) throw new Error(`queue ${i}: max size ${max} < ${size}`);
      const base = g.alloc(Number(DriverQueue.layout(0, size, { indirectMaxEntries: indirect }).end), 4096);
      const q = DriverQueue.create<number>(o.mem, base, size, { eventIdx, indirectMaxEntries: indirect });
      g.queues.push(q);
      g.#waiting.push([]);
      await w(VIRTIO_MMIO_QUEUE_NUM, size);
      const lo = (a: bigint) => Number(a & 0xffffffffn);
      const hi = (a: bigint) => Number(a >> 32n);
      await w(VIRTIO_MMIO_QUEUE_DESC_LOW, lo(q.descTable.value));
      await w(VIRTIO_MMIO_QUEUE_DESC_HIGH, hi(q.descTable.value));
      await w(VIRTIO_MMIO_QUEUE_AVAIL_LOW, lo(q.availRing.value));
      await w(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, hi(q.availRing.value));
      await w(VIRTIO_MMIO_QUEUE_USED_LOW, lo(q.usedRing.value));
      await w(VIRTIO_MMIO_QUEUE_USED_HIGH, hi(q.usedRing.value));
      await w(VIRTIO_MMIO_QUEUE_READY, 1);
    }
    await w(VIRTIO_MMIO_STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
    if (!mmio.running) throw new Error(`device did not start (status 0x${mmio.status.toString(16)})`);
    return g;
  }

  /** Guest RAM for buffers (a bump allocator, like the simulated guest's kmalloc). */
  alloc(len: number, align = 64): bigint {
    const a = BigInt(align);
    const at = (this.#next + a - 1n) & ~(a - 1n);
    if (at + BigInt(len) > this.#end) throw new Error(`guest allocator out of memory (${len} bytes)`);
    this.#next = at + BigInt(len);
    return at;
  }

  /** Posts a chain (waiting for descriptors if the ring is full) and resolves with its used entry. */
  submit(queue: number, chain: ChainSpec, options: { indirect?: boolean } = {}): Promise<Completion> {
    const token = this.#token++;
    const done = new Promise<Completion>((res) => this.#pending.set(token, res));
    this.#waiting[queue]!.push({ chain, indirect: options.indirect ?? false, token });
    this.#fill(queue);
    return done;
  }

  #fill(queue: number): void {
    const q = this.queues[queue]!;
    const w = this.#waiting[queue]!;
    let added = 0;
    while (w.length > 0) {
      const next = w[0]!;
      const n = next.indirect && q.indirectMaxEntries > 0 ? 1 : (next.chain.readable?.length ?? 0) + (next.chain.writable?.length ?? 0);
      if (q.numFree < n) break;
      w.shift();
      q.add(next.chain, { token: next.token, indirect: next.indirect && q.indirectMaxEntries > 0, publish: false });
      added++;
    }
    if (added > 0 && q.needsNotification()) void this.mmio.write(VIRTIO_MMIO_QUEUE_NOTIFY, 4, queue);
  }

  /** Linux vm_interrupt: read InterruptStatus, ACK it, then harvest every queue. */
  async #onInterrupt(): Promise<void> {
    this.interrupts++;
    const status = Number(await this.mmio.read(VIRTIO_MMIO_INTERRUPT_STATUS, 4));
    await this.mmio.write(VIRTIO_MMIO_INTERRUPT_ACK, 4, status);
    this.poll();
  }

  /** Whether the guest is gone (closed, or its RAM unmapped): a late interrupt then finds nothing to do. */
  get #gone(): boolean {
    return this.#closed || this.mem.closed;
  }

  /** Harvests used entries on every queue (also what the interrupt handler does). */
  poll(): void {
    if (this.#gone) return;
    for (const [i, q] of this.queues.entries()) {
      for (;;) {
        for (const u of q.harvest()) {
          const res = this.#pending.get(u.token!);
          this.#pending.delete(u.token!);
          res?.({ len: u.len });
        }
        // virtio_ring's virtqueue_enable_cb: re-arm, and look again if entries came meanwhile.
        if (!q.enableInterrupts()) break;
      }
      this.#fill(i);
    }
  }

  get pending(): number {
    return this.#pending.size;
  }

  /** Status 0 (the device stops its rings). */
  async reset(): Promise<void> {
    await this.mmio.write(VIRTIO_MMIO_STATUS, 4, 0);
  }

  close(): void {
    this.#closed = true;
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
