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

/**
 * virtio-i2c (device ID 34, virtio 1.2 section 5.20... "I2C Adapter Device") with one 256-byte EEPROM-like
 * target at 7-bit address 0x50: a write sets the word pointer (first byte) and stores the rest, a read
 * returns bytes from the pointer. Other addresses answer VIRTIO_I2C_MSG_ERR.
 */
export class I2cDevice extends QueueDevice {
  readonly deviceId = 34;
  readonly configSize = 0;
  /** VIRTIO_I2C_F_ZERO_LENGTH_REQUEST (bit 0): Linux's driver requires it. */
  override readonly features: bigint = bit(VirtioFeature.VERSION_1) | 1n;
  readonly eeprom = new Uint8Array(256);
  #pointer = 0;
  static readonly ADDRESS = 0x50;

  protected handle(chain: NonNullable<ReturnType<Queue["pop"]>>): number {
    const req = chain.readAll();
    const v = new DataView(req.buffer, req.byteOffset, req.byteLength);
    // struct virtio_i2c_out_hdr { le16 addr; le16 padding; le32 flags; }, addr = 7-bit address << 1
    const addr = v.getUint16(0, true) >> 1;
    const flags = v.getUint32(4, true);
    const read = (flags & 2) !== 0; // VIRTIO_I2C_FLAGS_M_RD
    const out = chain.writableLength;
    const reply = new Uint8Array(out);
    let status = 0; // VIRTIO_I2C_MSG_OK
    if (addr !== I2cDevice.ADDRESS) status = 1;
    else if (read) {
      for (let i = 0; i < out - 1; i++) reply[i] = this.eeprom[(this.#pointer + i) & 0xff]!;
      this.#pointer = (this.#pointer + out - 1) & 0xff;
    } else {
      const data = req.subarray(8);
      if (data.length > 0) {
        this.#pointer = data[0]!;
        for (const b of data.subarray(1)) {
          this.eeprom[this.#pointer] = b;
          this.#pointer = (this.#pointer + 1) & 0xff;
        }
      }
    }
    reply[out - 1] = status;
    return chain.writeAll(reply);
  }
}

/**
 * virtio-gpio (device ID 41, virtio 1.2 section 5.17 "GPIO Device"): `ngpio` lines named "gpio<N>", with
 * direction and value; requests are struct virtio_gpio_request {le16 type; le16 gpio; le32 value} answered
 * with struct virtio_gpio_response {u8 status; u8 value} (GET_NAMES: status, then the NUL-separated names).
 */
export class GpioDevice extends QueueDevice {
  readonly deviceId = 41;
  readonly configSize = 8;
  readonly directions: Uint8Array;
  readonly values: Uint8Array;
  readonly #names: Uint8Array;

  constructor(mem: GuestMemory, signal: () => void, ngpio = 8) {
    super(mem, signal);
    this.directions = new Uint8Array(ngpio);
    this.values = new Uint8Array(ngpio);
    this.#names = new TextEncoder().encode(Array.from({ length: ngpio }, (_, i) => `gpio${i}\0`).join(""));
  }

  override readConfig(offset: number, size: 1 | 2 | 4 | 8): ConfigValue {
    // struct virtio_gpio_config { le16 ngpio; u8 padding[2]; le32 gpio_names_size; }
    const cfg = new DataView(new ArrayBuffer(8));
    cfg.setUint16(0, this.values.length, true);
    cfg.setUint32(4, this.#names.length, true);
    if (offset + size > 8) return 0;
    return size === 1 ? cfg.getUint8(offset) : size === 2 ? cfg.getUint16(offset, true) : size === 4 ? cfg.getUint32(offset, true) : cfg.getBigUint64(0, true);
  }

  protected handle(chain: NonNullable<ReturnType<Queue["pop"]>>): number {
    const req = chain.readAll();
    const v = new DataView(req.buffer, req.byteOffset, req.byteLength);
    const type = v.getUint16(0, true);
    const gpio = v.getUint16(2, true);
    const value = v.getUint32(4, true);
    const out = new Uint8Array(chain.writableLength);
    const ok = (val = 0): void => {
      out[0] = 0;
      out[1] = val;
    };
    out[0] = 1; // VIRTIO_GPIO_STATUS_ERR unless handled
    if (type === 1) {
      out[0] = 0;
      out.set(this.#names.subarray(0, out.length - 1), 1);
    } else if (gpio < this.values.length) {
      switch (type) {
        case 2: ok(this.directions[gpio]); break; // GET_DIRECTION
        case 3: if (value <= 2) { this.directions[gpio] = value; ok(); } break; // SET_DIRECTION
        case 4: ok(this.values[gpio]); break; // GET_VALUE
        case 5: if (this.directions[gpio] === 1 && value <= 1) { this.values[gpio] = value; ok(); } break; // SET_VALUE (out lines)
        default: break;
      }
    }
    return chain.writeAll(out);
  }
}
