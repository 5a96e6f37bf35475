// Guest virtio-i2c driver (Linux drivers/i2c/busses/i2c-virtio.c): one request queue; each message is an
// out header (addr << 1, flags), the data, and an in header (status byte).
import { SimError } from "../../error.js";
import type { VirtioTransport } from "./transport.js";

export const VIRTIO_I2C_F_ZERO_LENGTH_REQUEST = 0;
export const VIRTIO_I2C_FLAGS_M_RD = 1 << 1;

export class VirtioI2cDriver {
  readonly #drv: VirtioTransport;
  readonly #hdr: bigint;
  readonly #buf: bigint;
  readonly #status: bigint;

  private constructor(drv: VirtioTransport) {
    this.#drv = drv;
    this.#hdr = drv.alloc.alloc(8, 16);
    this.#status = drv.alloc.alloc(1, 16);
    this.#buf = drv.alloc.alloc(4096, 4096);
  }

  static init(drv: VirtioTransport): VirtioI2cDriver {
    const id = drv.probe();
    if (id.deviceId !== 34) throw new SimError("GuestFailed", `device ${id.deviceId} is not virtio-i2c (34)`);
    const f = drv.negotiate(1n << BigInt(VIRTIO_I2C_F_ZERO_LENGTH_REQUEST));
    if ((f & 1n) === 0n) throw new SimError("GuestFailed", "virtio-i2c without VIRTIO_I2C_F_ZERO_LENGTH_REQUEST");
    drv.setupQueue(0, 64);
    drv.driverOk();
    return new VirtioI2cDriver(drv);
  }

  /** One message to 7-bit `addr`: a write of `data`, or a read of `readLen` bytes. Returns the bytes read. */
  transfer(addr: number, op: { write: Uint8Array } | { read: number }): { ok: boolean; data: Uint8Array } {
    const mem = this.#drv.memory;
    const hdr = new Uint8Array(8);
    const v = new DataView(hdr.buffer);
    v.setUint16(0, addr << 1, true);
    const reading = "read" in op;
    v.setUint32(4, reading ? VIRTIO_I2C_FLAGS_M_RD : 0, true);
    mem.write(this.#hdr, hdr);
    mem.store8(this.#status, 0xff);
    const readable = [{ addr: this.#hdr, len: 8 }];
    const writable: { addr: bigint; len: number }[] = [];
    if (reading) {
      if (op.read > 0) writable.push({ addr: this.#buf, len: op.read });
    } else if (op.write.length > 0) {
      mem.write(this.#buf, op.write);
      readable.push({ addr: this.#buf, len: op.write.length });
    }
    writable.push({ addr: this.#status, len: 1 });
    this.#drv.submit(0, { readable, writable });
    this.#drv.waitUsed(0);
    const ok = mem.load8(this.#status) === 0;
    return { ok, data: reading && ok && op.read > 0 ? mem.read(this.#buf, op.read) : new Uint8Array(0) };
  }
}
