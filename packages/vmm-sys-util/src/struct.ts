// Declarative binary layouts: one declaration per C struct, offsets written out (reads like `pahole`),
// checked at load for overlap and fit. Used for Xen and kernel ABI structs (xen-sys) and vhost-user
// messages. Every platform this project supports (x86_64, arm64) is little-endian, and so are virtio and
// vhost-user, so all fields are little-endian; `assertLittleEndian()` guards the assumption at load.
import { endianness } from "node:os";

/** The kinds a field can have. u64/i64 read as bigint; bit fields live inside one byte/word. */
export type FieldSpec =
  | { readonly kind: "u8" | "u16" | "u32" | "i8" | "i16" | "i32"; readonly offset: number }
  | { readonly kind: "u64" | "i64"; readonly offset: number }
  | { readonly kind: "bits"; readonly offset: number; readonly shift: number; readonly width: number; readonly unit: 1 | 2 | 4 }
  | { readonly kind: "bytes"; readonly offset: number; readonly length: number };

const sizes = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, u64: 8, i64: 8 } as const;

export const u8 = (offset: number) => ({ kind: "u8", offset }) as const;
export const i8 = (offset: number) => ({ kind: "i8", offset }) as const;
export const u16 = (offset: number) => ({ kind: "u16", offset }) as const;
export const i16 = (offset: number) => ({ kind: "i16", offset }) as const;
export const u32 = (offset: number) => ({ kind: "u32", offset }) as const;
export const i32 = (offset: number) => ({ kind: "i32", offset }) as const;
export const u64 = (offset: number) => ({ kind: "u64", offset }) as const;
export const i64 = (offset: number) => ({ kind: "i64", offset }) as const;
/** A C bit field: `width` bits starting at bit `shift` of the `unit`-byte word at `offset`. */
export const bits = (offset: number, shift: number, width: number, unit: 1 | 2 | 4 = 1) =>
  ({ kind: "bits", offset, shift, width, unit }) as const;
/** A fixed-size byte array (char[N], uint8_t[N], or an embedded struct handled by the caller). */
export const bytes = (offset: number, length: number) => ({ kind: "bytes", offset, length }) as const;

type FieldValue<F> = F extends { kind: "u64" | "i64" } ? bigint : F extends { kind: "bytes" } ? Uint8Array : number;

/** The JS object for a layout: u64 → bigint, bytes → Uint8Array, everything else → number. */
export type StructValue<S> = S extends StructLayout<infer F> ? { -readonly [K in keyof F]: FieldValue<F[K]> } : never;

export interface StructOptions {
  /** sizeof(struct). */
  size: number;
  /** _Alignof(struct); 1 for packed structs. */
  align?: number;
  /** `__attribute__((packed))`: fields need not be naturally aligned. */
  packed?: boolean;
}

function fieldSize(f: FieldSpec): number {
  switch (f.kind) {
    case "bits":
      return f.unit;
    case "bytes":
      return f.length;
    default:
      return sizes[f.kind];
  }
}

/** A struct layout: read/write/encode/decode over little-endian bytes, and the field table for ABI tests. */
export class StructLayout<F extends Record<string, FieldSpec>> {
  readonly name: string;
  readonly size: number;
  readonly align: number;
  readonly packed: boolean;
  readonly fields: F;

  constructor(name: string, options: StructOptions, fields: F) {
    this.name = name;
    this.size = options.size;
    this.packed = options.packed ?? false;
    this.align = options.align ?? (this.packed ? 1 : 8);
    this.fields = fields;
    check(this.name, this.size, this.align, this.packed, this.fields);
  }

  /** Reads the struct at `offset` of `view`. */
  read(view: DataView, offset = 0): StructValue<this> {
    if (offset < 0 || offset + this.size > view.byteLength)
      throw new RangeError(`${this.name}: ${this.size} bytes at ${offset} outside a ${view.byteLength}-byte view`);
    const out: Record<string, unknown> = {};
    for (const [name, f] of Object.entries(this.fields)) out[name] = readField(view, offset, f);
    return out as StructValue<this>;
  }

  /** Writes the given fields (others untouched) at `offset` of `view`. */
  write(view: DataView, offset: number, value: Partial<StructValue<this>>): void {
    if (offset < 0 || offset + this.size > view.byteLength)
      throw new RangeError(`${this.name}: ${this.size} bytes at ${offset} outside a ${view.byteLength}-byte view`);
    for (const [name, v] of Object.entries(value as Record<string, unknown>)) {
      const f = this.fields[name];
      if (!f) throw new TypeError(`${this.name} has no field ${name}`);
      writeField(view, offset, f, v, `${this.name}.${name}`);
    }
  }

  /** A new zeroed buffer of `size` bytes with the given fields set. */
  encode(value: Partial<StructValue<this>> = {}): Uint8Array {
    const buf = new Uint8Array(this.size);
    this.write(new DataView(buf.buffer), 0, value);
    return buf;
  }

  /** Reads from the start of a byte array (which must hold at least `size` bytes). */
  decode(data: Uint8Array): StructValue<this> {
    return this.read(new DataView(data.buffer, data.byteOffset, data.byteLength), 0);
  }

  /** Offset of a field, like `offsetof`. */
  offsetOf(field: keyof F & string): number {
    const f = this.fields[field];
    if (!f) throw new TypeError(`${this.name} has no field ${field}`);
    return f.offset;
  }
}

/** Declares a layout. Offsets are written out; overlap, overflow and misalignment are errors at load. */
export function defineStruct<F extends Record<string, FieldSpec>>(
  name: string,
  options: StructOptions,
  fields: F,
): StructLayout<F> {
  return new StructLayout(name, options, fields);
}

function check(name: string, size: number, align: number, packed: boolean, fields: Record<string, FieldSpec>): void {
  const s = { name, size, align, packed, fields };
  if (!Number.isInteger(s.size) || s.size <= 0) throw new RangeError(`${s.name}: bad size ${s.size}`);
  if (s.size % s.align !== 0) throw new RangeError(`${s.name}: size ${s.size} not a multiple of align ${s.align}`);
  // Bit fields share their storage unit with siblings; everything else owns its bytes.
  const owner = new Array<string | undefined>(s.size);
  const bitsUsed = new Map<number, number>();
  for (const [name, f] of Object.entries(s.fields)) {
    const size = fieldSize(f);
    if (f.offset < 0 || f.offset + size > s.size)
      throw new RangeError(`${s.name}.${name}: bytes ${f.offset}..${f.offset + size} outside size ${s.size}`);
    if (!s.packed && f.kind !== "bytes" && f.offset % size !== 0)
      throw new RangeError(`${s.name}.${name}: offset ${f.offset} not aligned to ${size}`);
    if (f.kind === "bits") {
      if (f.width < 1 || f.shift < 0 || f.shift + f.width > f.unit * 8)
        throw new RangeError(`${s.name}.${name}: bits ${f.shift}+${f.width} do not fit ${f.unit} byte(s)`);
      const mask = ((2 ** f.width - 1) * 2 ** f.shift) >>> 0;
      const used = bitsUsed.get(f.offset) ?? 0;
      if ((used & mask) !== 0) throw new RangeError(`${s.name}.${name}: bits overlap another bit field`);
      bitsUsed.set(f.offset, (used | mask) >>> 0);
      for (let i = f.offset; i < f.offset + size; i++) {
        const o = owner[i];
        if (o !== undefined && !o.startsWith("bits:")) throw new RangeError(`${s.name}.${name}: overlaps ${o}`);
        owner[i] = `bits:${name}`;
      }
      continue;
    }
    for (let i = f.offset; i < f.offset + size; i++) {
      if (owner[i] !== undefined) throw new RangeError(`${s.name}.${name}: overlaps ${owner[i]}`);
      owner[i] = name;
    }
  }
}

function readField(view: DataView, base: number, f: FieldSpec): unknown {
  const o = base + f.offset;
  switch (f.kind) {
    case "u8":
      return view.getUint8(o);
    case "i8":
      return view.getInt8(o);
    case "u16":
      return view.getUint16(o, true);
    case "i16":
      return view.getInt16(o, true);
    case "u32":
      return view.getUint32(o, true);
    case "i32":
      return view.getInt32(o, true);
    case "u64":
      return view.getBigUint64(o, true);
    case "i64":
      return view.getBigInt64(o, true);
    case "bits": {
      const word = f.unit === 1 ? view.getUint8(o) : f.unit === 2 ? view.getUint16(o, true) : view.getUint32(o, true);
      return Math.floor(word / 2 ** f.shift) % 2 ** f.width;
    }
    case "bytes":
      return new Uint8Array(view.buffer.slice(view.byteOffset + o, view.byteOffset + o + f.length));
  }
}

function intRange(kind: string): [number, number] {
  switch (kind) {
    case "u8":
      return [0, 0xff];
    case "i8":
      return [-0x80, 0x7f];
    case "u16":
      return [0, 0xffff];
    case "i16":
      return [-0x8000, 0x7fff];
    case "u32":
      return [0, 0xffffffff];
    default:
      return [-0x80000000, 0x7fffffff];
  }
}

function writeField(view: DataView, base: number, f: FieldSpec, v: unknown, what: string): void {
  const o = base + f.offset;
  switch (f.kind) {
    case "u64":
    case "i64": {
      const b = typeof v === "number" && Number.isSafeInteger(v) ? BigInt(v) : v;
      if (typeof b !== "bigint") throw new TypeError(`${what} must be a bigint`);
      if (f.kind === "u64") {
        if (b < 0n || b > 0xffff_ffff_ffff_ffffn) throw new RangeError(`${what} ${b} out of u64 range`);
        view.setBigUint64(o, b, true);
      } else {
        if (b < -(2n ** 63n) || b >= 2n ** 63n) throw new RangeError(`${what} ${b} out of i64 range`);
        view.setBigInt64(o, b, true);
      }
      return;
    }
    case "bytes": {
      if (!(v instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
      if (v.length > f.length) throw new RangeError(`${what}: ${v.length} bytes do not fit ${f.length}`);
      new Uint8Array(view.buffer, view.byteOffset + o, f.length).fill(0).set(v);
      return;
    }
    case "bits": {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= 2 ** f.width)
        throw new RangeError(`${what} ${String(v)} does not fit ${f.width} bit(s)`);
      const get = () => (f.unit === 1 ? view.getUint8(o) : f.unit === 2 ? view.getUint16(o, true) : view.getUint32(o, true));
      const mask = (2 ** f.width - 1) * 2 ** f.shift;
      const word = (get() & ~mask) + v * 2 ** f.shift;
      if (f.unit === 1) view.setUint8(o, word >>> 0);
      else if (f.unit === 2) view.setUint16(o, word >>> 0, true);
      else view.setUint32(o, word >>> 0, true);
      return;
    }
    default: {
      if (typeof v !== "number" || !Number.isInteger(v)) throw new TypeError(`${what} must be an integer`);
      const [lo, hi] = intRange(f.kind);
      if (v < lo || v > hi) throw new RangeError(`${what} ${v} out of ${f.kind} range`);
      switch (f.kind) {
        case "u8":
          view.setUint8(o, v);
          return;
        case "i8":
          view.setInt8(o, v);
          return;
        case "u16":
          view.setUint16(o, v, true);
          return;
        case "i16":
          view.setInt16(o, v, true);
          return;
        case "u32":
          view.setUint32(o, v, true);
          return;
        case "i32":
          view.setInt32(o, v, true);
          return;
      }
    }
  }
}

/** Throws on a big-endian host: every layout here is little-endian. */
export function assertLittleEndian(): void {
  if (endianness() !== "LE") throw new Error("xen-vhost supports little-endian hosts only (x86_64, arm64)");
}
assertLittleEndian();
