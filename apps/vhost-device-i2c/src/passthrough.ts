// A host I2C adapter through the i2c-dev character device (/dev/i2c-N, Documentation/i2c/dev-interface.rst).
// Adapters that can do plain I2C (I2C_FUNC_I2C) get the whole transfer as one I2C_RDWR ioctl, so a
// register write followed by a read keeps its repeated START. SMBus-only adapters (many PC SMBus
// controllers) get the transfer translated into the one SMBus transaction it matches, as rust-vmm's
// vhost-device-i2c does; anything else is `Unsupported`.
import { SysError, addressOf, close, constants, ioctl, open } from "@xen-vhost/vmm-sys-util";
import {
  I2C_FUNCS, I2C_FUNC_I2C, I2C_FUNC_SMBUS_QUICK, I2C_FUNC_SMBUS_READ_BYTE, I2C_FUNC_SMBUS_READ_BYTE_DATA, I2C_FUNC_SMBUS_READ_I2C_BLOCK,
  I2C_FUNC_SMBUS_READ_WORD_DATA, I2C_FUNC_SMBUS_WRITE_BYTE, I2C_FUNC_SMBUS_WRITE_BYTE_DATA, I2C_FUNC_SMBUS_WRITE_I2C_BLOCK,
  I2C_FUNC_SMBUS_WRITE_WORD_DATA, I2C_M_RD, I2C_RDWR, I2C_RDWR_IOCTL_MAX_MSGS, I2C_SLAVE, I2C_SMBUS, I2C_SMBUS_BLOCK_MAX, I2C_SMBUS_BYTE,
  I2C_SMBUS_BYTE_DATA, I2C_SMBUS_DATA_SIZE, I2C_SMBUS_I2C_BLOCK_DATA, I2C_SMBUS_QUICK, I2C_SMBUS_READ, I2C_SMBUS_WORD_DATA, I2C_SMBUS_WRITE,
  I2cMsg, I2cRdwrIoctlData, I2cSmbusIoctlData,
} from "./abi.js";
import type { I2cAdapter, I2cMessage } from "./adapter.js";
import { I2cError } from "./error.js";

/** The syscalls the adapter makes; tests substitute them to check the encoding without hardware. */
export interface I2cDevOps {
  open(path: string): number;
  ioctl(fd: number, request: number, arg: number | Uint8Array): number;
  close(fd: number): void;
}

export const realOps: I2cDevOps = {
  open: (path) => open(path, constants.O_RDWR),
  ioctl: (fd, request, arg) => ioctl(fd, request, arg),
  close: (fd) => close(fd),
};

/** A buffer whose address may go into a struct the kernel follows (an explicit, off-heap ArrayBuffer). */
function pinned(n: number): Uint8Array {
  return new Uint8Array(new ArrayBuffer(Math.max(n, 1)), 0, n);
}

/** Encodes an I2C_RDWR request: the msgs array and the ioctl data, pointing at `bufs`. */
export function encodeRdwr(msgs: readonly I2cMessage[], bufs: readonly Uint8Array[]): { data: Uint8Array; array: Uint8Array } {
  const array = pinned(I2cMsg.size * msgs.length);
  const view = new DataView(array.buffer);
  msgs.forEach((m, i) => {
    I2cMsg.write(view, i * I2cMsg.size, {
      addr: m.addr, flags: m.read ? I2C_M_RD : 0, len: m.data.length, buf: m.data.length === 0 ? 0n : addressOf(bufs[i]!),
    });
  });
  const data = pinned(I2cRdwrIoctlData.size);
  I2cRdwrIoctlData.write(new DataView(data.buffer), 0, { msgs: addressOf(array), nmsgs: msgs.length });
  return { data, array };
}

/** The SMBus transaction a transfer maps to, or undefined (rust-vmm vhost-device-i2c's SMBus translation). */
export interface SmbusPlan {
  readWrite: number;
  command: number;
  size: number;
  /** Bytes to put in the data union before the call (writes). */
  payload: Uint8Array;
  /** For reads: the message whose data receives the result, and how many bytes. */
  result?: { msg: I2cMessage; len: number };
  func: number;
}

export function smbusPlan(msgs: readonly I2cMessage[]): SmbusPlan | undefined {
  const [a, b] = msgs;
  if (!a) return undefined;
  if (msgs.length === 1) {
    const d = a.data;
    if (a.read) {
      if (d.length === 0) return { readWrite: I2C_SMBUS_READ, command: 0, size: I2C_SMBUS_QUICK, payload: new Uint8Array(0), func: I2C_FUNC_SMBUS_QUICK };
      if (d.length === 1) return { readWrite: I2C_SMBUS_READ, command: 0, size: I2C_SMBUS_BYTE, payload: new Uint8Array(0), result: { msg: a, len: 1 }, func: I2C_FUNC_SMBUS_READ_BYTE };
      return undefined;
    }
    if (d.length === 0) return { readWrite: I2C_SMBUS_WRITE, command: 0, size: I2C_SMBUS_QUICK, payload: new Uint8Array(0), func: I2C_FUNC_SMBUS_QUICK };
    if (d.length === 1) return { readWrite: I2C_SMBUS_WRITE, command: d[0]!, size: I2C_SMBUS_BYTE, payload: new Uint8Array(0), func: I2C_FUNC_SMBUS_WRITE_BYTE };
    if (d.length === 2) return { readWrite: I2C_SMBUS_WRITE, command: d[0]!, size: I2C_SMBUS_BYTE_DATA, payload: d.subarray(1, 2), func: I2C_FUNC_SMBUS_WRITE_BYTE_DATA };
    if (d.length === 3) return { readWrite: I2C_SMBUS_WRITE, command: d[0]!, size: I2C_SMBUS_WORD_DATA, payload: d.subarray(1, 3), func: I2C_FUNC_SMBUS_WRITE_WORD_DATA };
    if (d.length - 1 <= I2C_SMBUS_BLOCK_MAX) {
      const p = new Uint8Array(d.length);
      p[0] = d.length - 1; // block[0] = length
      p.set(d.subarray(1), 1);
      return { readWrite: I2C_SMBUS_WRITE, command: d[0]!, size: I2C_SMBUS_I2C_BLOCK_DATA, payload: p, func: I2C_FUNC_SMBUS_WRITE_I2C_BLOCK };
    }
    return undefined;
  }
  // write [command] then read n from the same client: a register read
  if (msgs.length === 2 && b && !a.read && b.read && a.addr === b.addr && a.data.length === 1) {
    const n = b.data.length;
    const command = a.data[0]!;
    if (n === 1) return { readWrite: I2C_SMBUS_READ, command, size: I2C_SMBUS_BYTE_DATA, payload: new Uint8Array(0), result: { msg: b, len: 1 }, func: I2C_FUNC_SMBUS_READ_BYTE_DATA };
    if (n === 2) return { readWrite: I2C_SMBUS_READ, command, size: I2C_SMBUS_WORD_DATA, payload: new Uint8Array(0), result: { msg: b, len: 2 }, func: I2C_FUNC_SMBUS_READ_WORD_DATA };
    if (n > 0 && n <= I2C_SMBUS_BLOCK_MAX)
      return { readWrite: I2C_SMBUS_READ, command, size: I2C_SMBUS_I2C_BLOCK_DATA, payload: Uint8Array.of(n), result: { msg: b, len: n }, func: I2C_FUNC_SMBUS_READ_I2C_BLOCK };
  }
  return undefined;
}

/** Encodes an I2C_SMBUS request for `plan`: the ioctl struct and the data union it points at. */
export function encodeSmbus(plan: SmbusPlan): { data: Uint8Array; union: Uint8Array } {
  const union = pinned(I2C_SMBUS_DATA_SIZE);
  union.set(plan.payload, 0);
  const data = pinned(I2cSmbusIoctlData.size);
  I2cSmbusIoctlData.write(new DataView(data.buffer), 0, {
    read_write: plan.readWrite, command: plan.command, size: plan.size,
    data: plan.size === I2C_SMBUS_QUICK ? 0n : addressOf(union),
  });
  return { data, union };
}

export class PhysicalAdapter implements I2cAdapter {
  readonly name: string;
  readonly bus: number;
  readonly addresses: readonly number[];
  readonly funcs: number;
  readonly #ops: I2cDevOps;
  #fd: number;

  /**
   * Opens /dev/i2c-`bus` and reads its functionality.
   * @throws I2cError AdapterMissing (no such node, or not an i2c-dev adapter), Unsupported (neither I2C nor SMBus)
   */
  constructor(bus: number, addresses: readonly number[], ops: I2cDevOps = realOps) {
    this.bus = bus;
    this.name = `/dev/i2c-${bus}`;
    this.addresses = addresses;
    this.#ops = ops;
    try {
      this.#fd = ops.open(this.name);
    } catch (err) {
      const code = err instanceof SysError ? err.code : String(err);
      const hint = code === "ENOENT" ? " (is the i2c-dev module loaded? is the bus number right?)" : "";
      throw new I2cError("AdapterMissing", `${this.name}: cannot open: ${code}${hint}`, { cause: err });
    }
    try {
      const f = pinned(8);
      ops.ioctl(this.#fd, I2C_FUNCS, f);
      this.funcs = Number(new DataView(f.buffer).getBigUint64(0, true) & 0xffff_ffffn);
    } catch (err) {
      ops.close(this.#fd);
      throw new I2cError("AdapterMissing", `${this.name}: I2C_FUNCS failed, not an i2c-dev adapter: ${(err as Error).message}`, { cause: err });
    }
    if ((this.funcs & 0x0fff_0001) === 0) {
      ops.close(this.#fd);
      throw new I2cError("Unsupported", `${this.name}: adapter supports neither I2C nor SMBus (funcs 0x${this.funcs.toString(16)})`);
    }
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  transfer(msgs: readonly I2cMessage[]): void {
    if (this.#fd < 0) throw new I2cError("TransferFailed", `${this.name} is closed`);
    if (this.funcs & I2C_FUNC_I2C) this.#rdwr(msgs);
    else this.#smbus(msgs);
  }

  #rdwr(msgs: readonly I2cMessage[]): void {
    if (msgs.length > I2C_RDWR_IOCTL_MAX_MSGS) throw new I2cError("Unsupported", `${this.name}: ${msgs.length} messages exceed I2C_RDWR's ${I2C_RDWR_IOCTL_MAX_MSGS}`);
    const bufs = msgs.map((m) => {
      const b = pinned(m.data.length);
      if (!m.read) b.set(m.data);
      return b;
    });
    const { data, array } = encodeRdwr(msgs, bufs);
    try {
      this.#ops.ioctl(this.#fd, I2C_RDWR, data);
    } catch (err) {
      throw this.#failed("I2C_RDWR", err);
    }
    void array; // kept alive across the ioctl: the kernel follows its address
    msgs.forEach((m, i) => {
      if (m.read) m.data.set(bufs[i]!);
    });
  }

  #smbus(msgs: readonly I2cMessage[]): void {
    const plan = smbusPlan(msgs);
    if (!plan || (this.funcs & plan.func) === 0)
      throw new I2cError("Unsupported", `${this.name}: SMBus-only adapter cannot do this transfer (${msgs.map((m) => `${m.read ? "read" : "write"} ${m.data.length}`).join(", ")})`);
    const { data, union } = encodeSmbus(plan);
    try {
      this.#ops.ioctl(this.#fd, I2C_SLAVE, msgs[0]!.addr);
      this.#ops.ioctl(this.#fd, I2C_SMBUS, data);
    } catch (err) {
      throw this.#failed("I2C_SMBUS", err);
    }
    if (plan.result) {
      const off = plan.size === I2C_SMBUS_I2C_BLOCK_DATA ? 1 : 0;
      plan.result.msg.data.set(union.subarray(off, off + plan.result.len));
    }
  }

  #failed(what: string, err: unknown): I2cError {
    const code = err instanceof SysError ? err.code : String(err);
    // ENXIO / EREMOTEIO: no ACK from the client (i2c fault-codes.rst)
    const kind = code === "ENXIO" || code === "EREMOTEIO" ? "NoDevice" : "TransferFailed";
    return new I2cError(kind, `${this.name}: ${what} failed: ${code}`, { cause: err });
  }

  close(): void {
    if (this.#fd < 0) return;
    const fd = this.#fd;
    this.#fd = -1;
    this.#ops.close(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
