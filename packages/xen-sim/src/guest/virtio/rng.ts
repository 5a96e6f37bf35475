// Guest virtio-rng driver (virtio 1.2 section 5.4): one request queue of device-writable buffers.
import { SimError } from "../../error.js";
import type { VirtioTransport } from "./transport.js";

export class VirtioRngDriver {
  readonly #drv: VirtioTransport;
  readonly #buf: bigint;
  readonly #max: number;

  private constructor(drv: VirtioTransport, max: number) {
    this.#drv = drv;
    this.#max = max;
    this.#buf = drv.alloc.alloc(max, 4096);
  }

  /** Probes (device ID 4), negotiates, sets up the request queue, DRIVER_OK. */
  static init(drv: VirtioTransport, maxRequest = 4096): VirtioRngDriver {
    const id = drv.probe();
    if (id.deviceId !== 4) throw new SimError("GuestFailed", `device ${id.deviceId} is not virtio-rng (4)`);
    drv.negotiate(0n);
    drv.setupQueue(0, 64);
    drv.driverOk();
    return new VirtioRngDriver(drv, maxRequest);
  }

  /** Asks the device for `n` random bytes; returns what it wrote. */
  read(n: number): Uint8Array {
    if (n < 1 || n > this.#max) throw new RangeError(`rng read of ${n} bytes (1..${this.#max})`);
    this.#drv.memory.fill(this.#buf, n, 0);
    this.#drv.submit(0, { writable: [{ addr: this.#buf, len: n }] });
    const used = this.#drv.waitUsed(0);
    if (used.len === 0 || used.len > n) throw new SimError("GuestFailed", `rng device returned ${used.len} bytes for a ${n}-byte buffer`);
    return this.#drv.memory.read(this.#buf, used.len);
  }
}
