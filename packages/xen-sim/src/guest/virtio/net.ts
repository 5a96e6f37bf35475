// Guest virtio-net driver (virtio 1.2 section 5.1): receiveq1 (0) and transmitq1 (1), every frame preceded
// by struct virtio_net_hdr_v1, the MAC address from config space when VIRTIO_NET_F_MAC is offered.
// No offloads and no control queue: the smallest driver Linux's virtio_net.c would still be, in its "small
// buffers" receive mode or, with `mergeable`, its mergeable-buffers mode (VIRTIO_NET_F_MRG_RXBUF: a frame
// may span several receive buffers, the count in the header's num_buffers).
import { SimError } from "../../error.js";
import type { VirtioTransport } from "./transport.js";

// include/uapi/linux/virtio_net.h
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_S_LINK_UP = 1;
/**
 * struct virtio_net_hdr_v1 { u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size; le16 csum_start;
 * le16 csum_offset; le16 num_buffers; }: 12 bytes, the header of every frame once VERSION_1 is negotiated
 * (virtio 1.2 5.1.6), with or without MRG_RXBUF.
 */
export const VIRTIO_NET_HDR_SIZE = 12;
/** struct virtio_net_config offsets: mac[6], status, max_virtqueue_pairs, mtu. */
export const VIRTIO_NET_CONFIG = { mac: 0, status: 6, maxVirtqueuePairs: 8, mtu: 10 } as const;
/** Ethernet header, the smallest frame the driver sends. */
export const ETH_HLEN = 14;

const RXQ = 0;
const TXQ = 1;

export interface VirtioNetOptions {
  /** Receive buffers kept posted (default 16). */
  rxBuffers?: number;
  /** Size of each receive buffer, header included (default 2048: a 1514-byte frame fits). */
  bufferSize?: number;
  /** Queue size for both queues (default 64, capped by the device). */
  queueSize?: number;
  /** Ask for VIRTIO_NET_F_MRG_RXBUF (default false); used if the device offers it. */
  mergeable?: boolean;
}

/** A received frame: the header as the device wrote it and the Ethernet frame after it. */
export interface NetFrame {
  header: Uint8Array;
  frame: Uint8Array;
  /** Receive buffers the frame used (more than 1 only with mergeable buffers). */
  buffers: number;
}

export class VirtioNetDriver {
  /** From config space if the device offered VIRTIO_NET_F_MAC, else undefined (Linux picks a random one). */
  readonly mac: Uint8Array | undefined;
  readonly features: bigint;
  /** VIRTIO_NET_F_MRG_RXBUF was negotiated. */
  readonly mergeable: boolean;
  /** Frames sent and received. */
  txFrames = 0;
  rxFrames = 0;
  readonly #drv: VirtioTransport;
  readonly #bufSize: number;
  /** The receive buffer behind each posted head. */
  readonly #rxByHead = new Map<number, bigint>();
  readonly #tx: bigint;
  /** The transmit buffer: a whole frame (up to 64 KiB) whatever the receive buffers' size. */
  readonly #txSize = 65536;

  private constructor(drv: VirtioTransport, mac: Uint8Array | undefined, options: VirtioNetOptions) {
    this.#drv = drv;
    this.mac = mac;
    this.features = drv.features;
    this.mergeable = (drv.features & (1n << BigInt(VIRTIO_NET_F_MRG_RXBUF))) !== 0n;
    this.#bufSize = options.bufferSize ?? 2048;
    this.#tx = drv.alloc.alloc(this.#txSize, 4096);
    for (let i = 0; i < (options.rxBuffers ?? 16); i++) this.#postRx(drv.alloc.alloc(this.#bufSize, 64));
  }

  /** Probes (device ID 1), negotiates MAC and STATUS, sets both queues up, DRIVER_OK, posts receive buffers. */
  static init(drv: VirtioTransport, options: VirtioNetOptions = {}): VirtioNetDriver {
    const bufferSize = options.bufferSize ?? 2048;
    if (!Number.isInteger(bufferSize) || bufferSize < VIRTIO_NET_HDR_SIZE + ETH_HLEN || bufferSize > 65536) {
      throw new RangeError(`bufferSize ${bufferSize} (${VIRTIO_NET_HDR_SIZE + ETH_HLEN}..65536)`);
    }
    const id = drv.probe();
    if (id.deviceId !== 1) throw new SimError("GuestFailed", `device ${id.deviceId} is not virtio-net (1)`);
    const want = (1n << BigInt(VIRTIO_NET_F_MAC)) | (1n << BigInt(VIRTIO_NET_F_STATUS)) | (options.mergeable ? 1n << BigInt(VIRTIO_NET_F_MRG_RXBUF) : 0n);
    const f = drv.negotiate(want);
    const mac = (f & (1n << BigInt(VIRTIO_NET_F_MAC))) !== 0n ? drv.readConfigBytes(VIRTIO_NET_CONFIG.mac, 6) : undefined;
    drv.setupQueue(RXQ, options.queueSize ?? 64);
    drv.setupQueue(TXQ, options.queueSize ?? 64);
    drv.driverOk();
    return new VirtioNetDriver(drv, mac, options);
  }

  /** The MAC as "52:54:00:..." (undefined without VIRTIO_NET_F_MAC). */
  get macString(): string | undefined {
    return this.mac ? [...this.mac].map((b) => b.toString(16).padStart(2, "0")).join(":") : undefined;
  }

  /** Link state from config space when VIRTIO_NET_F_STATUS was negotiated (otherwise the link is up). */
  get linkUp(): boolean {
    if ((this.features & (1n << BigInt(VIRTIO_NET_F_STATUS))) === 0n) return true;
    return (this.#drv.readConfigBytes(VIRTIO_NET_CONFIG.status, 2)[0]! & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  #postRx(addr: bigint): void {
    const head = this.#drv.submit(RXQ, { writable: [{ addr, len: this.#bufSize }] });
    this.#rxByHead.set(head, addr);
  }

  /**
   * Sends one Ethernet frame (destination, source, type, payload) behind a zeroed header (no checksum or
   * GSO offload) and waits until the device has consumed it.
   */
  send(frame: Uint8Array, timeoutMs = 5000): void {
    if (frame.length < ETH_HLEN || frame.length + VIRTIO_NET_HDR_SIZE > this.#txSize) {
      throw new RangeError(`frame of ${frame.length} bytes (${ETH_HLEN}..${this.#txSize - VIRTIO_NET_HDR_SIZE})`);
    }
    const mem = this.#drv.memory;
    mem.fill(this.#tx, VIRTIO_NET_HDR_SIZE, 0);
    mem.write(this.#tx + BigInt(VIRTIO_NET_HDR_SIZE), frame);
    // One descriptor for header and data, as Linux does when the header fits in front of the frame
    // (VIRTIO_F_ANY_LAYOUT is implied by VERSION_1, virtio 1.2 2.7.4).
    const head = this.#drv.submit(TXQ, { readable: [{ addr: this.#tx, len: VIRTIO_NET_HDR_SIZE + frame.length }] });
    const used = this.#drv.waitUsed(TXQ, timeoutMs);
    if (used.id !== head) throw new SimError("GuestFailed", `transmit queue returned head ${used.id}, expected ${head}`);
    this.txFrames++;
  }

  /** The next received frame, or undefined if none is there yet. Reposts the buffer(s). */
  tryReceive(timeoutMs = 5000): NetFrame | undefined {
    return this.#take(this.#drv.pollUsed(RXQ), timeoutMs);
  }

  /** Waits for the next received frame. @throws SimError "Timeout" */
  receive(timeoutMs = 5000): NetFrame {
    return this.#take(this.#drv.waitUsed(RXQ, timeoutMs), timeoutMs)!;
  }

  /** The buffer behind a used element, checked against what was posted (a hostile device's values). */
  #buffer(used: { id: number; len: number }, min: number): bigint {
    const addr = this.#rxByHead.get(used.id);
    if (addr === undefined) throw new SimError("GuestFailed", `receive queue returned unknown head ${used.id}`);
    this.#rxByHead.delete(used.id);
    if (used.len < min || used.len > this.#bufSize) {
      this.#postRx(addr);
      throw new SimError("GuestFailed", `receive buffer returned with length ${used.len} (buffer ${this.#bufSize})`);
    }
    return addr;
  }

  #take(used: { id: number; len: number } | undefined, timeoutMs: number): NetFrame | undefined {
    if (!used) return undefined;
    const mem = this.#drv.memory;
    // Small buffers: header and whole frame in one. Mergeable: the header (num_buffers) opens the first.
    const addr = this.#buffer(used, this.mergeable ? VIRTIO_NET_HDR_SIZE : VIRTIO_NET_HDR_SIZE + ETH_HLEN);
    const header = mem.read(addr, VIRTIO_NET_HDR_SIZE);
    const parts = [mem.read(addr + BigInt(VIRTIO_NET_HDR_SIZE), used.len - VIRTIO_NET_HDR_SIZE)];
    const posted = [addr];
    const count = this.mergeable ? header[10]! | (header[11]! << 8) : 1;
    try {
      if (count < 1 || count > this.#rxByHead.size + 1) throw new SimError("GuestFailed", `num_buffers ${count} in a received header (${this.#rxByHead.size + 1} buffers posted)`);
      // virtio 1.2 5.1.6.4.2: the device uses the frame's buffers in order, all before it signals.
      for (let i = 1; i < count; i++) {
        const next = this.#drv.waitUsed(RXQ, timeoutMs);
        const at = this.#buffer(next, 1);
        posted.push(at);
        parts.push(mem.read(at, next.len));
      }
    } finally {
      for (const a of posted) this.#postRx(a);
    }
    const frame = parts.length === 1 ? parts[0]! : Uint8Array.from(Buffer.concat(parts));
    if (frame.length < ETH_HLEN) throw new SimError("GuestFailed", `received frame of ${frame.length} bytes`);
    this.rxFrames++;
    return { header, frame, buffers: count };
  }
}
