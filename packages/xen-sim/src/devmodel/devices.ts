// Two in-process virtio devices for the demo and the guest kit's tests (virtio 1.2 sections 5.4 and 5.2),
// on virtio-queue's device-side Queue over guest memory the device model mapped.
import { randomFillSync } from "node:crypto";
import type { GuestMemory } from "@xen-vhost/vm-memory";
import { Queue } from "@xen-vhost/virtio-queue";
import { bit, VirtioFeature, type ConfigValue, type QueueConfig, type VirtioDevice } from "@xen-vhost/virtio-mmio";

abstract class QueueDevice implements VirtioDevice {
  abstract readonly deviceId: number;
  abstract readonly configSize: number;
  readonly features: bigint = bit(VirtioFeature.VERSION_1);
  readonly numQueues: number = 1;
  protected queues: Queue[] = [];
  protected readonly mem: GuestMemory;
  protected readonly signal: () => void;
  /** Requests served. */
  served = 0;

  constructor(mem: GuestMemory, signal: () => void) {
    this.mem = mem;
    this.signal = signal;
  }

  queueMaxSize(): number {
    return 256;
  }

  readConfig(_offset: number, _size: 1 | 2 | 4 | 8): ConfigValue {
    return 0;
  }

  writeConfig(): void {}

  activate(_features: bigint, queues: readonly QueueConfig[]): void {
    this.queues = queues.map((qc) => {
      const q = new Queue(this.mem, { maxSize: 256, indirect: false });
      q.size = qc.size;
      q.descTable = qc.desc;
      q.availRing = qc.avail;
      q.usedRing = qc.used;
      q.ready = true;
      q.validate();
      return q;
    });
  }

  reset(): void {
    this.queues = [];
  }

  notify(queue: number): void {
    const q = this.queues[queue];
    if (!q) return;
    let any = false;
    for (let chain = q.pop(); chain; chain = q.pop()) {
      const written = this.handle(chain);
      q.addUsed(chain.head, written);
      this.served++;
      any = true;
    }
    if (any) this.signal();
  }

  protected abstract handle(chain: NonNullable<ReturnType<Queue["pop"]>>): number;
}

/** virtio-rng (device ID 4): fills each writable buffer with random bytes. */
export class RngDevice extends QueueDevice {
  readonly deviceId = 4;
  readonly configSize = 0;

  protected handle(chain: NonNullable<ReturnType<Queue["pop"]>>): number {
    const data = new Uint8Array(chain.writableLength);
    randomFillSync(data);
    return chain.writeAll(data);
  }
}

/** virtio-blk (device ID 2) over an in-memory disk: IN, OUT, FLUSH, GET_ID. */
export class BlkDevice extends QueueDevice {
  readonly deviceId = 2;
  readonly configSize = 8;
  readonly disk: Uint8Array;

  constructor(mem: GuestMemory, signal: () => void, sectors = 2048) {
    super(mem, signal);
    this.disk = new Uint8Array(sectors * 512);
  }

  override readConfig(offset: number, size: 1 | 2 | 4 | 8): ConfigValue {
    // struct virtio_blk_config: le64 capacity (512-byte sectors) at 0.
    const cap = BigInt(this.disk.length / 512);
    if (offset === 0 && size === 8) return cap;
    if (offset === 0 && size === 4) return Number(cap & 0xffff_ffffn);
    if (offset === 4 && size === 4) return Number(cap >> 32n);
    return 0;
  }

  protected handle(chain: NonNullable<ReturnType<Queue["pop"]>>): number {
    const req = chain.readAll();
    const v = new DataView(req.buffer, req.byteOffset, req.byteLength);
    const type = v.getUint32(0, true);
    const sector = Number(v.getBigUint64(8, true));
    const out = chain.writableLength;
    let status = 0; // VIRTIO_BLK_S_OK
    let reply = new Uint8Array(0);
    const off = sector * 512;
    if (type === 0) {
      // VIRTIO_BLK_T_IN: data is every writable byte but the status byte.
      const len = out - 1;
      if (off + len > this.disk.length) status = 1;
      else reply = this.disk.slice(off, off + len);
    } else if (type === 1) {
      const data = req.subarray(16);
      if (off + data.length > this.disk.length) status = 1;
      else this.disk.set(data, off);
    } else if (type === 8) {
      reply = new TextEncoder().encode("xen-sim-blk".padEnd(20, "\0"));
    } else if (type !== 4) {
      status = 2; // VIRTIO_BLK_S_UNSUPP
    }
    const full = new Uint8Array(out);
    full.set(reply.subarray(0, out - 1));
    full[out - 1] = status;
    return chain.writeAll(full);
  }
}
