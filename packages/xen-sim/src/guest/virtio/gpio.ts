// Guest virtio-gpio driver (Linux drivers/gpio/gpio-virtio.c): requests on queue 0.
import { SimError } from "../../error.js";
import type { VirtioTransport } from "./transport.js";

export const VIRTIO_GPIO_MSG = { GET_NAMES: 1, GET_DIRECTION: 2, SET_DIRECTION: 3, GET_VALUE: 4, SET_VALUE: 5, SET_IRQ_TYPE: 6 } as const;
export const VIRTIO_GPIO_DIRECTION = { NONE: 0, OUT: 1, IN: 2 } as const;

export class VirtioGpioDriver {
  readonly ngpio: number;
  readonly namesSize: number;
  readonly #drv: VirtioTransport;
  readonly #req: bigint;
  readonly #resp: bigint;

  private constructor(drv: VirtioTransport, ngpio: number, namesSize: number) {
    this.#drv = drv;
    this.ngpio = ngpio;
    this.namesSize = namesSize;
    this.#req = drv.alloc.alloc(8, 16);
    this.#resp = drv.alloc.alloc(4096, 4096);
  }

  static init(drv: VirtioTransport): VirtioGpioDriver {
    const id = drv.probe();
    if (id.deviceId !== 41) throw new SimError("GuestFailed", `device ${id.deviceId} is not virtio-gpio (41)`);
    drv.negotiate(0n);
    const ngpio = drv.readConfig32(0) & 0xffff;
    const namesSize = drv.readConfig32(4);
    drv.setupQueue(0, 64);
    drv.driverOk();
    return new VirtioGpioDriver(drv, ngpio, namesSize);
  }

  #request(type: number, gpio: number, value: number, respLen = 2): Uint8Array {
    const mem = this.#drv.memory;
    const req = new Uint8Array(8);
    const v = new DataView(req.buffer);
    v.setUint16(0, type, true);
    v.setUint16(2, gpio, true);
    v.setUint32(4, value, true);
    mem.write(this.#req, req);
    this.#drv.submit(0, { readable: [{ addr: this.#req, len: 8 }], writable: [{ addr: this.#resp, len: respLen }] });
    this.#drv.waitUsed(0);
    const resp = mem.read(this.#resp, respLen);
    if (resp[0] !== 0) throw new SimError("GuestFailed", `gpio request ${type} on line ${gpio}: status ${resp[0]}`);
    return resp;
  }

  names(): string[] {
    const r = this.#request(VIRTIO_GPIO_MSG.GET_NAMES, 0, 0, 1 + this.namesSize);
    return new TextDecoder().decode(r.subarray(1)).split("\0").filter((x) => x.length > 0);
  }

  direction(gpio: number): number {
    return this.#request(VIRTIO_GPIO_MSG.GET_DIRECTION, gpio, 0)[1]!;
  }

  setDirection(gpio: number, dir: number): void {
    this.#request(VIRTIO_GPIO_MSG.SET_DIRECTION, gpio, dir);
  }

  get(gpio: number): number {
    return this.#request(VIRTIO_GPIO_MSG.GET_VALUE, gpio, 0)[1]!;
  }

  set(gpio: number, value: 0 | 1): void {
    this.#request(VIRTIO_GPIO_MSG.SET_VALUE, gpio, value);
  }
}
