// virtio-gpio (virtio 1.2 section 5.19, "GPIO Device"): queue 0 carries requests
//   struct virtio_gpio_request (device-readable, 8 bytes) | response (device-writable: status + value, or
//   status + gpio_names_size bytes of names for GET_NAMES);
// queue 1 (with VIRTIO_GPIO_F_IRQ) carries one buffer per line whose interrupt is enabled
//   struct virtio_gpio_irq_request {le16 gpio} | struct virtio_gpio_irq_response {u8 status}:
// the device keeps it until the line's interrupt fires (status VALID) or its interrupt is disabled
// (status INVALID). An edge with no buffer queued is latched and reported when the buffer comes back.
// Config space: struct virtio_gpio_config {le16 ngpio; u8 padding[2]; le32 gpio_names_size}.
import type { DescriptorChain } from "@xen-vhost/virtio-queue";
import { readBuffers, writeBuffers, type DeviceContext, type DeviceVring, type VhostUserDevice } from "@xen-vhost/vhost-user-backend";
import { noopLogger, type Logger } from "@xen-vhost/vmm-sys-util";
import {
  VIRTIO_GPIO_F_IRQ, VIRTIO_GPIO_IRQ_STATUS_INVALID, VIRTIO_GPIO_IRQ_STATUS_VALID, VIRTIO_GPIO_IRQ_TYPE_NONE, VIRTIO_GPIO_MSG_GET_DIRECTION,
  VIRTIO_GPIO_MSG_GET_NAMES, VIRTIO_GPIO_MSG_GET_VALUE, VIRTIO_GPIO_MSG_IRQ_TYPE, VIRTIO_GPIO_MSG_SET_DIRECTION, VIRTIO_GPIO_MSG_SET_VALUE,
  VIRTIO_GPIO_STATUS_ERR, VIRTIO_GPIO_STATUS_OK, VirtioGpioConfig, VirtioGpioIrqRequest, VirtioGpioRequest, VirtioGpioResponse,
} from "./abi.js";
import type { GpioChip } from "./chip.js";
import { GpioError } from "./error.js";

// linux/virtio_config.h, virtio_ring.h
const VIRTIO_F_VERSION_1 = 1n << 32n;
const VIRTIO_F_NOTIFY_ON_EMPTY = 1n << 24n;
const VIRTIO_RING_F_INDIRECT_DESC = 1n << 28n;
const VIRTIO_RING_F_EVENT_IDX = 1n << 29n;

const REQUESTQ = 0;
const EVENTQ = 1;

/** The names block of GET_NAMES: every name NUL-terminated, back to back. */
export function namesBlock(names: readonly string[]): Uint8Array {
  const enc = new TextEncoder();
  const parts = names.map((n) => enc.encode(n));
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length + 1, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length + 1;
  }
  return out;
}

export class GpioDevice implements VhostUserDevice {
  readonly name = "virtio-gpio";
  readonly numQueues = 2;
  readonly maxQueueSize = 256;
  readonly features = VIRTIO_F_VERSION_1 | VIRTIO_F_NOTIFY_ON_EMPTY | VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX | (1n << BigInt(VIRTIO_GPIO_F_IRQ));
  readonly configSize = VirtioGpioConfig.size;
  /**
   * INFLIGHT_SHMFD: request-queue messages set or read line state, so running one twice is harmless; the
   * event queue's buffers are held until an interrupt by design, and without the area a reconnect would
   * lose them (and with them the guest's interrupts on those lines until it re-arms them).
   */
  readonly inflightTracking = true;
  readonly chip: GpioChip;
  readonly #names: Uint8Array;
  readonly #log: Logger;
  #ctx: DeviceContext | undefined;
  #irq = false;
  /** eventq buffers waiting for their line's interrupt. */
  readonly #held = new Map<number, DescriptorChain>();
  /** Edges seen while no buffer was queued. */
  readonly #latched = new Set<number>();

  constructor(chip: GpioChip, options: { logger?: Logger } = {}) {
    this.chip = chip;
    this.#names = namesBlock(chip.names());
    this.#log = options.logger ?? noopLogger;
    chip.onEvent = (line) => this.#interrupt(line);
  }

  getConfig(offset: number, size: number): Uint8Array {
    const cfg = VirtioGpioConfig.encode({ ngpio: this.chip.ngpio, gpio_names_size: this.#names.length });
    return cfg.slice(offset, offset + size);
  }

  setFeatures(features: bigint): void {
    this.#irq = (features & (1n << BigInt(VIRTIO_GPIO_F_IRQ))) !== 0n;
  }

  attach(ctx: DeviceContext): void {
    this.#ctx = ctx;
  }

  handleQueue(vring: DeviceVring): void {
    if (vring.index === REQUESTQ) {
      for (let c = vring.pop(); c; c = vring.pop()) this.#request(vring, c);
    } else if (vring.index === EVENTQ) {
      for (let c = vring.pop(); c; c = vring.pop()) this.#eventBuffer(vring, c);
    }
  }

  #request(vring: DeviceVring, chain: DescriptorChain): void {
    const wlen = chain.writableLength;
    const respond = (_status: typeof VIRTIO_GPIO_STATUS_OK, value: Uint8Array | number = 0): void => {
      const body = typeof value === "number" ? VirtioGpioResponse.encode({ status: VIRTIO_GPIO_STATUS_OK, value }) : Uint8Array.of(VIRTIO_GPIO_STATUS_OK, ...value);
      vring.addUsed(chain.head, writeBuffers(vring.memory, chain.writable, body));
    };
    if (wlen === 0) {
      vring.addUsed(chain.head, 0);
      return;
    }
    const fail = (why: string): void => {
      this.#log.debug("gpio request refused", { why });
      // The spec's error response is status ERR; write it as far as the response buffer goes.
      vring.addUsed(chain.head, writeBuffers(vring.memory, chain.writable, VirtioGpioResponse.encode({ status: VIRTIO_GPIO_STATUS_ERR, value: 0 }).subarray(0, Math.min(2, wlen))));
    };
    if (chain.readableLength !== VirtioGpioRequest.size) return fail(`request of ${chain.readableLength} bytes, not ${VirtioGpioRequest.size}`);
    const req = VirtioGpioRequest.decode(readBuffers(vring.memory, chain.readable));
    const want = req.type === VIRTIO_GPIO_MSG_GET_NAMES ? 1 + this.#names.length : VirtioGpioResponse.size;
    if (wlen !== want) return fail(`response buffer of ${wlen} bytes for type ${req.type}, not ${want}`);
    try {
      switch (req.type) {
        case VIRTIO_GPIO_MSG_GET_NAMES:
          if (req.gpio !== 0 || req.value !== 0) return fail("GET_NAMES with gpio or value set");
          return respond(VIRTIO_GPIO_STATUS_OK, this.#names);
        case VIRTIO_GPIO_MSG_GET_DIRECTION:
          return respond(VIRTIO_GPIO_STATUS_OK, this.chip.getDirection(req.gpio));
        case VIRTIO_GPIO_MSG_SET_DIRECTION:
          this.chip.setDirection(req.gpio, req.value);
          return respond(VIRTIO_GPIO_STATUS_OK);
        case VIRTIO_GPIO_MSG_GET_VALUE:
          return respond(VIRTIO_GPIO_STATUS_OK, this.chip.getValue(req.gpio));
        case VIRTIO_GPIO_MSG_SET_VALUE:
          this.chip.setValue(req.gpio, req.value);
          return respond(VIRTIO_GPIO_STATUS_OK);
        case VIRTIO_GPIO_MSG_IRQ_TYPE:
          if (!this.#irq) return fail("SET_IRQ_TYPE without VIRTIO_GPIO_F_IRQ");
          this.chip.setIrqType(req.gpio, req.value);
          if (req.value === VIRTIO_GPIO_IRQ_TYPE_NONE) {
            this.#latched.delete(req.gpio);
            this.#complete(req.gpio, VIRTIO_GPIO_IRQ_STATUS_INVALID);
          }
          return respond(VIRTIO_GPIO_STATUS_OK);
        default:
          return fail(`unknown request type ${req.type}`);
      }
    } catch (err) {
      if (err instanceof GpioError) return fail(err.message);
      throw err;
    }
  }

  #eventBuffer(vring: DeviceVring, chain: DescriptorChain): void {
    const invalid = (why: string): void => {
      this.#log.debug("gpio eventq buffer refused", { why });
      const n = writeBuffers(vring.memory, chain.writable, Uint8Array.of(VIRTIO_GPIO_IRQ_STATUS_INVALID));
      vring.addUsed(chain.head, n);
    };
    if (chain.readableLength !== VirtioGpioIrqRequest.size || chain.writableLength !== 1) return invalid("malformed irq request");
    const { gpio } = VirtioGpioIrqRequest.decode(readBuffers(vring.memory, chain.readable));
    if (!this.#irq || gpio >= this.chip.ngpio) return invalid(`line ${gpio}`);
    // A second buffer for the same line replaces the first, which goes back INVALID.
    this.#complete(gpio, VIRTIO_GPIO_IRQ_STATUS_INVALID, vring);
    this.#held.set(gpio, chain);
    if (this.#latched.delete(gpio) || this.chip.levelActive(gpio)) this.#complete(gpio, VIRTIO_GPIO_IRQ_STATUS_VALID, vring);
  }

  #interrupt(line: number): void {
    if (!this.#held.has(line)) {
      this.#latched.add(line);
      return;
    }
    const v = this.#ctx?.vring(EVENTQ);
    if (!v) {
      this.#latched.add(line);
      return;
    }
    this.#complete(line, VIRTIO_GPIO_IRQ_STATUS_VALID, v);
    v.signalUsedQueue();
  }

  /** Returns the held buffer of `line` with `status`. */
  #complete(line: number, status: number, vring = this.#ctx?.vring(EVENTQ)): void {
    const chain = this.#held.get(line);
    if (!chain || !vring) return;
    this.#held.delete(line);
    const n = writeBuffers(vring.memory, chain.writable, Uint8Array.of(status));
    vring.addUsed(chain.head, n);
    vring.signalUsedQueue();
  }

  /**
   * The connection went away: the held eventq buffers belonged to it (the next front-end resubmits them
   * from the inflight area); line configuration and latched edges stay for the guest that continues.
   */
  disconnected(): void {
    this.#held.clear();
  }

  queueStopped(index: number): void {
    if (index === EVENTQ) this.#held.clear();
  }

  reset(): void {
    this.#held.clear();
    this.#latched.clear();
    for (let i = 0; i < this.chip.ngpio; i++) {
      try {
        this.chip.setIrqType(i, VIRTIO_GPIO_IRQ_TYPE_NONE);
      } catch {
        // a host line we never requested
      }
    }
  }
}
