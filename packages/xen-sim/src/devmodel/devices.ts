// In-process virtio devices for the demo and the guest kit's tests (virtio 1.2 section 5: rng, blk, i2c,
// gpio, net, fs), on virtio-queue's device-side Queue over guest memory the device model mapped.
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

/**
 * virtio-net (device ID 1, virtio 1.2 section 5.1) as a loopback cable: every frame the driver transmits
 * (transmitq1) comes back on its receive queue (receiveq1) with a zeroed virtio_net_hdr_v1, as DPDK testpmd's
 * io forwarding on a looped port does. Offers VIRTIO_NET_F_MAC and VIRTIO_NET_F_STATUS (link up).
 */
export class NetDevice extends QueueDevice {
  readonly deviceId = 1;
  readonly configSize = 12;
  override readonly features: bigint = bit(VirtioFeature.VERSION_1) | (1n << 5n) | (1n << 16n);
  override readonly numQueues: number = 2;
  readonly mac: Uint8Array;
  /** Frames transmitted and not yet delivered (no receive buffer was posted). */
  readonly backlog: Uint8Array[] = [];
  /** Frames that did not fit the receive buffer they were given. */
  dropped = 0;

  constructor(mem: GuestMemory, signal: () => void, mac = new Uint8Array([0x52, 0x54, 0x00, 0x5e, 0x00, 0x01])) {
    super(mem, signal);
    this.mac = mac;
  }

  override readConfig(offset: number, size: 1 | 2 | 4 | 8): ConfigValue {
    // struct virtio_net_config: mac[6], le16 status (VIRTIO_NET_S_LINK_UP), le16 max_virtqueue_pairs.
    const cfg = new Uint8Array(12);
    cfg.set(this.mac, 0);
    cfg[6] = 1;
    cfg[8] = 1;
    if (offset + size > cfg.length) return 0;
    const v = new DataView(cfg.buffer);
    return size === 1 ? v.getUint8(offset) : size === 2 ? v.getUint16(offset, true) : size === 4 ? v.getUint32(offset, true) : v.getBigUint64(offset, true);
  }

  override notify(queue: number): void {
    const tx = this.queues[1];
    let any = false;
    if (queue === 1 && tx) {
      for (let chain = tx.pop(); chain; chain = tx.pop()) {
        this.backlog.push(chain.readAll());
        tx.addUsed(chain.head, 0);
        this.served++;
        any = true;
      }
    }
    const rx = this.queues[0];
    while (rx && this.backlog.length > 0) {
      const chain = rx.pop();
      if (!chain) break;
      const frame = this.backlog.shift()!;
      // The header goes back zeroed (no checksum or GSO information) but for num_buffers = 1: one buffer per
      // frame (virtio 1.2 5.1.6.4).
      const out = frame.slice();
      out.fill(0, 0, 12);
      out[10] = 1;
      if (out.length > chain.writableLength) {
        this.dropped++;
        rx.addUsed(chain.head, 0);
      } else {
        rx.addUsed(chain.head, chain.writeAll(out));
      }
      any = true;
    }
    if (any) this.signal();
  }

  protected handle(): number {
    return 0;
  }
}

/**
 * virtio-fs (device ID 26, virtio 1.2 section 5.11) serving a flat, read-only directory of in-memory files
 * over FUSE: INIT, LOOKUP, GETATTR, OPEN, READ, RELEASE on the request queue, FORGET on hiprio. Anything
 * else answers -ENOSYS, as a FUSE server does for an opcode it does not implement.
 */
export class FsDevice extends QueueDevice {
  readonly deviceId = 26;
  readonly configSize = 40;
  override readonly numQueues: number = 2;
  readonly tag: string;
  readonly #files: { name: string; data: Uint8Array }[];
  /** Lookup references held by the driver, per nodeid (LOOKUP adds one, FORGET drops nlookup). */
  readonly lookups = new Map<bigint, bigint>();
  readonly opcodes: number[] = [];

  constructor(mem: GuestMemory, signal: () => void, tag: string, files: Record<string, string | Uint8Array>) {
    super(mem, signal);
    this.tag = tag;
    this.#files = Object.entries(files).map(([name, d]) => ({ name, data: typeof d === "string" ? new TextEncoder().encode(d) : d }));
  }

  override readConfig(offset: number, size: 1 | 2 | 4 | 8): ConfigValue {
    // struct virtio_fs_config: u8 tag[36], le32 num_request_queues.
    const cfg = new Uint8Array(40);
    cfg.set(new TextEncoder().encode(this.tag).subarray(0, 36), 0);
    new DataView(cfg.buffer).setUint32(36, 1, true);
    if (offset + size > cfg.length) return 0;
    const v = new DataView(cfg.buffer);
    return size === 1 ? v.getUint8(offset) : size === 2 ? v.getUint16(offset, true) : size === 4 ? v.getUint32(offset, true) : v.getBigUint64(offset, true);
  }

  #attr(out: DataView, at: number, nodeid: bigint): void {
    // struct fuse_attr: ino, size, blocks, atime, mtime, ctime, *nsec, mode, nlink, uid, gid, rdev, blksize.
    const f = nodeid === 1n ? undefined : this.#files[Number(nodeid) - 2];
    out.setBigUint64(at, nodeid, true);
    out.setBigUint64(at + 8, BigInt(f?.data.length ?? 0), true);
    out.setUint32(at + 60, f ? 0o100444 : 0o40555, true);
    out.setUint32(at + 64, 1, true);
    out.setUint32(at + 84, 4096, true);
  }

  protected handle(chain: NonNullable<ReturnType<Queue["pop"]>>): number {
    const req = chain.readAll();
    if (req.length < 40) return 0;
    const v = new DataView(req.buffer, req.byteOffset, req.byteLength);
    const opcode = v.getUint32(4, true);
    const unique = v.getBigUint64(8, true);
    const nodeid = v.getBigUint64(16, true);
    const args = req.subarray(40);
    const av = new DataView(args.buffer, args.byteOffset, args.byteLength);
    this.opcodes.push(opcode);
    if (opcode === 2) {
      // FUSE_FORGET: no reply.
      const left = (this.lookups.get(nodeid) ?? 0n) - av.getBigUint64(0, true);
      if (left > 0n) this.lookups.set(nodeid, left);
      else this.lookups.delete(nodeid);
      return 0;
    }
    let error = 0;
    let body = new Uint8Array(0);
    const file = nodeid >= 2n ? this.#files[Number(nodeid) - 2] : undefined;
    switch (opcode) {
      case 26: { // INIT -> fuse_init_out
        body = new Uint8Array(64);
        const o = new DataView(body.buffer);
        o.setUint32(0, 7, true);
        o.setUint32(4, 31, true);
        o.setUint32(8, av.getUint32(8, true), true);
        o.setUint32(20, 128 * 1024, true);
        break;
      }
      case 1: { // LOOKUP -> fuse_entry_out
        const name = new TextDecoder().decode(args.subarray(0, Math.max(0, args.indexOf(0))));
        const i = this.#files.findIndex((f) => f.name === name);
        if (nodeid !== 1n || i < 0) {
          error = -2;
          break;
        }
        const id = BigInt(i + 2);
        this.lookups.set(id, (this.lookups.get(id) ?? 0n) + 1n);
        body = new Uint8Array(128);
        const o = new DataView(body.buffer);
        o.setBigUint64(0, id, true);
        this.#attr(o, 40, id);
        break;
      }
      case 3: { // GETATTR -> fuse_attr_out
        if (nodeid !== 1n && !file) error = -2;
        else {
          body = new Uint8Array(104);
          this.#attr(new DataView(body.buffer), 16, nodeid);
        }
        break;
      }
      case 14: // OPEN -> fuse_open_out {fh}
        if (!file) error = nodeid === 1n ? -21 : -2;
        else {
          body = new Uint8Array(16);
          new DataView(body.buffer).setBigUint64(0, nodeid, true);
        }
        break;
      case 15: { // READ
        if (!file) {
          error = -9;
          break;
        }
        const off = Number(av.getBigUint64(8, true));
        body = file.data.slice(off, off + av.getUint32(16, true));
        break;
      }
      case 18: // RELEASE
        break;
      default:
        error = -38;
    }
    const out = new Uint8Array(16 + body.length);
    const o = new DataView(out.buffer);
    o.setUint32(0, out.length, true);
    o.setInt32(4, error, true);
    o.setBigUint64(8, unique, true);
    out.set(body, 16);
    return chain.writeAll(out.subarray(0, Math.min(out.length, chain.writableLength)));
  }
}
