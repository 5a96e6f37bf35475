// Simulated I2C adapters and devices, for machines without I2C hardware (CI, development, demos). The
// devices behave like their datasheets at the level a Linux driver sees: a register pointer set by the first
// written byte, auto-increment, wrap-around.
import { I2cError } from "./error.js";
import type { I2cAdapter, I2cMessage } from "./adapter.js";

/** A simulated client on the bus. */
export interface SimI2cDevice {
  readonly type: string;
  /** A transfer begins (START addressed to this device): devices latch state here (the RTC's time). */
  start?(): void;
  /** A write message (possibly empty: an address probe). */
  write(data: Uint8Array): void;
  /** A read message of `out.length` bytes. */
  read(out: Uint8Array): void;
}

const bcd = (n: number): number => ((Math.floor(n / 10) << 4) | n % 10) & 0xff;
const unbcd = (b: number): number => (b >> 4) * 10 + (b & 0x0f);

/**
 * Maxim DS1338 real-time clock (the seed's `ds1338` at 0x20): registers 0x00-0x06 seconds, minutes, hours,
 * day (1-7, 1 = Sunday as Linux rtc-ds1307 writes it), date, month, year (BCD, 24-hour mode), 0x07 control,
 * 0x08-0x3F battery-backed RAM; the pointer wraps from 0x3F to 0x00. The time follows the host clock (UTC)
 * plus the offset the guest sets by writing the time registers.
 */
export class Ds1338Rtc implements SimI2cDevice {
  readonly type = "rtc";
  readonly regs = new Uint8Array(0x40);
  #ptr = 0;
  /** Guest time minus host time, ms. */
  offsetMs = 0;
  readonly #now: () => number;

  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
    this.regs[0x07] = 0x03; // control: RS1|RS0 (32.768 kHz square wave selected, output off), as after power-on
    this.#latch();
  }

  /** The clock's time now. */
  time(): Date {
    return new Date(this.#now() + this.offsetMs);
  }

  #latch(): void {
    const t = this.time();
    const ch = this.regs[0]! & 0x80;
    this.regs[0] = ch | bcd(t.getUTCSeconds());
    this.regs[1] = bcd(t.getUTCMinutes());
    this.regs[2] = bcd(t.getUTCHours()); // bit 6 = 0: 24-hour mode
    this.regs[3] = t.getUTCDay() + 1;
    this.regs[4] = bcd(t.getUTCDate());
    this.regs[5] = bcd(t.getUTCMonth() + 1);
    this.regs[6] = bcd(t.getUTCFullYear() % 100);
  }

  start(): void {
    // The DS1338 copies the running time into its user registers at every START.
    this.#latch();
  }

  write(data: Uint8Array): void {
    if (data.length === 0) return;
    this.#ptr = data[0]! & 0x3f;
    let timeWritten = false;
    for (let i = 1; i < data.length; i++) {
      if (this.#ptr <= 6) timeWritten = true;
      this.regs[this.#ptr] = data[i]!;
      this.#ptr = (this.#ptr + 1) & 0x3f;
    }
    if (timeWritten) this.#setTimeFromRegs();
  }

  #setTimeFromRegs(): void {
    const r = this.regs;
    let hours: number;
    if (r[2]! & 0x40) {
      // 12-hour mode: bit 5 = PM
      const h12 = unbcd(r[2]! & 0x1f);
      hours = (h12 % 12) + (r[2]! & 0x20 ? 12 : 0);
      r[2] = bcd(hours);
    } else hours = unbcd(r[2]! & 0x3f);
    const year = 2000 + unbcd(r[6]!);
    const t = Date.UTC(year, unbcd(r[5]! & 0x1f) - 1, unbcd(r[4]! & 0x3f), hours, unbcd(r[1]! & 0x7f), unbcd(r[0]! & 0x7f));
    this.offsetMs = t - this.#now();
  }

  read(out: Uint8Array): void {
    for (let i = 0; i < out.length; i++) {
      out[i] = this.regs[this.#ptr]!;
      this.#ptr = (this.#ptr + 1) & 0x3f;
    }
  }
}

/**
 * A 24C02 EEPROM (2 Kbit = 256 bytes, 8-byte pages): the first written byte is the word address; further
 * bytes are written within the current page (the address rolls over inside the page, as the datasheet
 * says); reads continue from the address and roll over at 256. Erased cells read 0xff.
 */
export class At24c02Eeprom implements SimI2cDevice {
  readonly type = "eeprom";
  readonly size: number;
  readonly pageSize: number;
  readonly cells: Uint8Array;
  #ptr = 0;

  constructor(options: { size?: number; pageSize?: number; contents?: Uint8Array } = {}) {
    this.size = options.size ?? 256;
    this.pageSize = options.pageSize ?? 8;
    this.cells = new Uint8Array(this.size).fill(0xff);
    if (options.contents) this.cells.set(options.contents.subarray(0, this.size));
  }

  write(data: Uint8Array): void {
    if (data.length === 0) return;
    this.#ptr = data[0]! % this.size;
    const page = this.#ptr - (this.#ptr % this.pageSize);
    let off = this.#ptr % this.pageSize;
    for (let i = 1; i < data.length; i++) {
      this.cells[page + off] = data[i]!;
      off = (off + 1) % this.pageSize;
    }
    if (data.length > 1) this.#ptr = page + off;
  }

  read(out: Uint8Array): void {
    for (let i = 0; i < out.length; i++) {
      out[i] = this.cells[this.#ptr]!;
      this.#ptr = (this.#ptr + 1) % this.size;
    }
  }
}

/** The simulated device types the -l syntax knows. */
export const simDeviceTypes = {
  rtc: () => new Ds1338Rtc(),
  ds1338: () => new Ds1338Rtc(),
  eeprom: () => new At24c02Eeprom(),
  "24c02": () => new At24c02Eeprom(),
} as const satisfies Record<string, () => SimI2cDevice>;
export type SimDeviceType = keyof typeof simDeviceTypes;

/** A simulated bus with devices at fixed addresses. */
export class SimAdapter implements I2cAdapter {
  readonly name: string;
  readonly devices: ReadonlyMap<number, SimI2cDevice>;

  constructor(devices: ReadonlyMap<number, SimI2cDevice>, name = "sim") {
    this.devices = devices;
    this.name = name;
  }

  get addresses(): number[] {
    return [...this.devices.keys()];
  }

  transfer(msgs: readonly I2cMessage[]): void {
    // Address every device first: a NACK anywhere aborts the transfer before any device changes state.
    const targets = msgs.map((m) => {
      const d = this.devices.get(m.addr);
      if (!d) throw new I2cError("NoDevice", `${this.name}: no device at 0x${m.addr.toString(16)}`);
      return d;
    });
    const started = new Set<SimI2cDevice>();
    msgs.forEach((m, i) => {
      const d = targets[i]!;
      if (!started.has(d)) {
        d.start?.();
        started.add(d);
      }
      if (m.read) d.read(m.data);
      else d.write(m.data);
    });
  }

  close(): void {}

  [Symbol.dispose](): void {}
}
