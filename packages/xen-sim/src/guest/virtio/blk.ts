// Guest virtio-blk driver (virtio 1.2 section 5.2): requests of a 16-byte header (type, reserved, sector),
// data, and a status byte.
import { SimError } from "../../error.js";
import type { VirtioTransport } from "./transport.js";

export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;

export class VirtioBlkDriver {
  readonly capacity: bigint;
  readonly #drv: VirtioTransport;
  readonly #hdr: bigint;
  readonly #data: bigint;
  readonly #status: bigint;
  readonly #max: number;

  private constructor(drv: VirtioTransport, capacity: bigint, max: number) {
    this.#drv = drv;
    this.capacity = capacity;
    this.#max = max;
    this.#hdr = drv.alloc.alloc(16, 16);
    this.#status = drv.alloc.alloc(1, 16);
    this.#data = drv.alloc.alloc(max, 4096);
  }

  static init(drv: VirtioTransport, maxTransfer = 64 * 1024): VirtioBlkDriver {
    const id = drv.probe();
    if (id.deviceId !== 2) throw new SimError("GuestFailed", `device ${id.deviceId} is not virtio-blk (2)`);
    drv.negotiate(0n);
    const capacity = drv.readConfig64(0);
    drv.setupQueue(0, 64);
    drv.driverOk();
    return new VirtioBlkDriver(drv, capacity, maxTransfer);
  }

  #request(type: number, sector: bigint, data: Uint8Array | undefined, readLen: number): Uint8Array {
    const mem = this.#drv.memory;
    const hdr = new Uint8Array(16);
    const v = new DataView(hdr.buffer);
    v.setUint32(0, type, true);
    v.setBigUint64(8, sector, true);
    mem.write(this.#hdr, hdr);
    mem.store8(this.#status, 0xff);
    const readable = [{ addr: this.#hdr, len: 16 }];
    const writable: { addr: bigint; len: number }[] = [];
    if (data) {
      mem.write(this.#data, data);
      readable.push({ addr: this.#data, len: data.length });
    } else if (readLen > 0) {
      writable.push({ addr: this.#data, len: readLen });
    }
    writable.push({ addr: this.#status, len: 1 });
    this.#drv.submit(0, { readable, writable });
    this.#drv.waitUsed(0);
    const status = mem.load8(this.#status);
    if (status !== 0) throw new SimError("GuestFailed", `virtio-blk request type ${type} sector ${sector}: status ${status}`);
    return readLen > 0 ? mem.read(this.#data, readLen) : new Uint8Array(0);
  }

  read(sector: bigint, sectors: number): Uint8Array {
    if (sectors * 512 > this.#max) throw new RangeError("transfer too large");
    return this.#request(VIRTIO_BLK_T_IN, sector, undefined, sectors * 512);
  }

  write(sector: bigint, data: Uint8Array): void {
    if (data.length % 512 !== 0 || data.length > this.#max) throw new RangeError("write must be whole sectors within the transfer limit");
    this.#request(VIRTIO_BLK_T_OUT, sector, data, 0);
  }

  flush(): void {
    this.#request(VIRTIO_BLK_T_FLUSH, 0n, undefined, 0);
  }

  id(): string {
    return new TextDecoder().decode(this.#request(VIRTIO_BLK_T_GET_ID, 0n, undefined, 20)).replace(/\0+$/, "");
  }
}
