// Single-instruction loads and stores on mapped memory, for values another agent reads concurrently:
// virtqueue ring indices (a busy-polling backend such as DPDK reads avail->idx while we write it) and the
// ioreq `state` byte Xen and the device model hand back and forth. DataView and Buffer.writeUInt16LE store
// byte by byte, so a concurrent reader can see half an index; an element of a typed array of the right
// width is one aligned load/store, and Atomics on it is sequentially consistent (V8 emits one
// xchg/stlr-class store and a plain/ldar load; it works on the non-shared external ArrayBuffers of mmap).
import { binding } from "./native.js";

/** A full memory barrier (`__atomic_thread_fence(__ATOMIC_SEQ_CST)`). */
export function fence(): void {
  binding().fence();
}

function checkAligned(offset: number, width: number, length: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + width > length)
    throw new RangeError(`offset ${offset} (+${width}) outside ${length} bytes`);
  if (offset % width !== 0) throw new RangeError(`offset ${offset} is not ${width}-byte aligned`);
}

/**
 * Aligned atomic access to a buffer (typically a mapping). Views are created once, so the hot path
 * allocates nothing. Byte order is the machine's (little-endian on x86_64 and arm64, as virtio requires).
 */
export class AtomicAccess {
  readonly #u8: Uint8Array;
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  readonly #u64: BigUint64Array;

  /** Views `buffer[byteOffset, byteOffset+byteLength)`; byteOffset must be 8-byte aligned. */
  constructor(buffer: ArrayBuffer, byteOffset = 0, byteLength = buffer.byteLength - byteOffset) {
    if (byteOffset % 8 !== 0) throw new RangeError(`byteOffset ${byteOffset} must be 8-byte aligned`);
    if (byteOffset < 0 || byteLength < 0 || byteOffset + byteLength > buffer.byteLength)
      throw new RangeError("range outside the buffer");
    this.#u8 = new Uint8Array(buffer, byteOffset, byteLength);
    this.#u16 = new Uint16Array(buffer, byteOffset, byteLength >>> 1);
    this.#u32 = new Uint32Array(buffer, byteOffset, byteLength >>> 2);
    this.#u64 = new BigUint64Array(buffer, byteOffset, byteLength >>> 3);
  }

  /** The viewed length; 0 once the underlying mapping is unmapped (detached). */
  get byteLength(): number {
    return this.#u8.byteLength;
  }

  load8(offset: number): number {
    checkAligned(offset, 1, this.#u8.byteLength);
    return Atomics.load(this.#u8, offset);
  }
  store8(offset: number, value: number): void {
    checkAligned(offset, 1, this.#u8.byteLength);
    Atomics.store(this.#u8, offset, value);
  }
  load16(offset: number): number {
    checkAligned(offset, 2, this.#u8.byteLength);
    return Atomics.load(this.#u16, offset >>> 1);
  }
  store16(offset: number, value: number): void {
    checkAligned(offset, 2, this.#u8.byteLength);
    Atomics.store(this.#u16, offset >>> 1, value);
  }
  load32(offset: number): number {
    checkAligned(offset, 4, this.#u8.byteLength);
    return Atomics.load(this.#u32, offset >>> 2);
  }
  store32(offset: number, value: number): void {
    checkAligned(offset, 4, this.#u8.byteLength);
    Atomics.store(this.#u32, offset >>> 2, value);
  }
  load64(offset: number): bigint {
    checkAligned(offset, 8, this.#u8.byteLength);
    return Atomics.load(this.#u64, offset >>> 3);
  }
  store64(offset: number, value: bigint): void {
    checkAligned(offset, 8, this.#u8.byteLength);
    Atomics.store(this.#u64, offset >>> 3, value);
  }
  /** Compare-and-exchange on a byte (e.g. ioreq state READY → INPROCESS); returns the old value. */
  compareExchange8(offset: number, expected: number, replacement: number): number {
    checkAligned(offset, 1, this.#u8.byteLength);
    return Atomics.compareExchange(this.#u8, offset, expected, replacement);
  }
}
