// virtio-rng (virtio 1.2 section 5.4, "Entropy Device"): one request queue; the driver posts device-writable
// buffers and the device fills them with random bytes. No config space, no device feature bits.
// Entropy comes from the kernel's CSPRNG (getrandom(2), through Web Crypto's getRandomValues) by default,
// or from a file such as /dev/hwrng. An optional rate limit (rust-vmm vhost-device-rng's --period and
// --max-bytes) caps the bytes handed out per period; buffers wait in the ring until the next period.
import { openSync, readSync, closeSync } from "node:fs";
import { writeBuffers, type DeviceVring, type VhostUserDevice } from "@xen-vhost/vhost-user-backend";

// linux/virtio_config.h, virtio_ring.h
const VIRTIO_F_VERSION_1 = 1n << 32n;
const VIRTIO_F_NOTIFY_ON_EMPTY = 1n << 24n;
const VIRTIO_RING_F_INDIRECT_DESC = 1n << 28n;
const VIRTIO_RING_F_EVENT_IDX = 1n << 29n;

/** Largest fill of one chain: a guest asking for 4 GiB gets this much and may ask again. */
export const MAX_CHAIN_BYTES = 1 << 20;

export interface RngOptions {
  /** Bytes allowed per period (default unlimited). */
  maxBytes?: number;
  /** Period of the rate limit in ms (default 65536, as rust-vmm). */
  periodMs?: number;
  /** Entropy file (default: the kernel CSPRNG via getrandom). */
  filename?: string;
  /** Clock for the rate limit (tests). */
  now?: () => number;
}

/** Fills `buf` with random bytes. */
export type EntropySource = ((buf: Uint8Array) => void) & { close?(): void };

export function kernelEntropy(): EntropySource {
  return (buf) => {
    // getRandomValues takes at most 65536 bytes per call
    for (let at = 0; at < buf.length; at += 65536) crypto.getRandomValues(buf.subarray(at, Math.min(buf.length, at + 65536)));
  };
}

export function fileEntropy(path: string): EntropySource {
  const fd = openSync(path, "r");
  const src: EntropySource = (buf) => {
    let at = 0;
    while (at < buf.length) {
      const n = readSync(fd, buf, at, buf.length - at, null);
      if (n <= 0) throw new Error(`${path}: end of file after ${at} of ${buf.length} bytes`);
      at += n;
    }
  };
  src.close = () => closeSync(fd);
  return src;
}

export class RngDevice implements VhostUserDevice, Disposable {
  readonly name = "virtio-rng";
  readonly numQueues = 1;
  readonly maxQueueSize = 1024;
  readonly features = VIRTIO_F_VERSION_1 | VIRTIO_F_NOTIFY_ON_EMPTY | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX;
  /**
   * INFLIGHT_SHMFD: filling a buffer again with fresh random bytes is harmless, and with the area a
   * restarted daemon continues from the used ring instead of a base the front-end may have lost.
   */
  readonly inflightTracking = true;
  readonly #source: EntropySource;
  readonly #maxBytes: number;
  readonly #periodMs: number;
  readonly #now: () => number;
  #periodStart = 0;
  #used = 0;
  #timer: NodeJS.Timeout | undefined;
  /** Bytes handed out since start (all connections). */
  bytesServed = 0;

  constructor(options: RngOptions = {}, source?: EntropySource) {
    this.#maxBytes = options.maxBytes ?? Infinity;
    this.#periodMs = options.periodMs ?? 65536;
    if (!(this.#maxBytes > 0)) throw new RangeError("maxBytes must be positive");
    if (!(this.#periodMs > 0)) throw new RangeError("periodMs must be positive");
    this.#now = options.now ?? Date.now;
    this.#source = source ?? (options.filename ? fileEntropy(options.filename) : kernelEntropy());
  }

  /** Bytes still allowed in the current period. */
  #quota(): number {
    if (this.#maxBytes === Infinity) return Infinity;
    const now = this.#now();
    if (now - this.#periodStart >= this.#periodMs) {
      this.#periodStart = now;
      this.#used = 0;
    }
    return this.#maxBytes - this.#used;
  }

  handleQueue(vring: DeviceVring): void {
    for (;;) {
      const quota = this.#quota();
      if (quota <= 0) {
        // Leave the buffers in the ring; look again when the period rolls over.
        if (!this.#timer) {
          const wait = Math.max(1, this.#periodStart + this.#periodMs - this.#now());
          this.#timer = setTimeout(() => {
            this.#timer = undefined;
            vring.trigger();
          }, wait);
        }
        return;
      }
      const chain = vring.pop();
      if (!chain) return;
      const n = Math.min(chain.writableLength, quota, MAX_CHAIN_BYTES);
      const bytes = new Uint8Array(n);
      this.#source(bytes);
      const written = writeBuffers(vring.memory, chain.writable, bytes);
      this.#used += written;
      this.bytesServed += written;
      vring.addUsed(chain.head, written);
    }
  }

  queueStopped(): void {
    this.#cancel();
  }

  reset(): void {
    this.#cancel();
  }

  #cancel(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  close(): void {
    this.#cancel();
    this.#source.close?.();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
