// ioctl request encoding, as in the kernel's include/uapi/asm-generic/ioctl.h (x86_64 and arm64 both use
// the generic layout: nr 8 bits, type 8 bits, size 14 bits, dir 2 bits).
import { binding, type Bytes } from "./native.js";

/* #define _IOC_NONE 0U, _IOC_WRITE 1U, _IOC_READ 2U */
export const _IOC_NONE = 0;
export const _IOC_WRITE = 1;
export const _IOC_READ = 2;

const _IOC_NRBITS = 8;
const _IOC_TYPEBITS = 8;
const _IOC_SIZEBITS = 14;
const _IOC_NRSHIFT = 0;
const _IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS;
const _IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS;
const _IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS;

function typeCode(type: number | string): number {
  const t = typeof type === "string" ? type.charCodeAt(0) : type;
  if (!Number.isInteger(t) || t < 0 || t > 0xff) throw new RangeError(`ioctl type ${String(type)} out of range`);
  return t;
}

/** `#define _IOC(dir,type,nr,size)` → an unsigned 32-bit request number. */
export function _IOC(dir: number, type: number | string, nr: number, size: number): number {
  if (!Number.isInteger(nr) || nr < 0 || nr > 0xff) throw new RangeError(`ioctl nr ${nr} out of range`);
  if (!Number.isInteger(size) || size < 0 || size >= 1 << _IOC_SIZEBITS)
    throw new RangeError(`ioctl size ${size} out of range`);
  return (
    ((dir << _IOC_DIRSHIFT) | (typeCode(type) << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)) >>> 0
  );
}

/** `_IO(type,nr)`: no argument. */
export const _IO = (type: number | string, nr: number): number => _IOC(_IOC_NONE, type, nr, 0);
/** `_IOR(type,nr,size)`: the kernel writes `size` bytes to the argument. */
export const _IOR = (type: number | string, nr: number, size: number): number => _IOC(_IOC_READ, type, nr, size);
/** `_IOW(type,nr,size)`: the kernel reads `size` bytes from the argument. */
export const _IOW = (type: number | string, nr: number, size: number): number => _IOC(_IOC_WRITE, type, nr, size);
/** `_IOWR(type,nr,size)`: both. */
export const _IOWR = (type: number | string, nr: number, size: number): number =>
  _IOC(_IOC_READ | _IOC_WRITE, type, nr, size);

/** The fields of a request number (`_IOC_DIR`, `_IOC_TYPE`, `_IOC_NR`, `_IOC_SIZE`). */
export function decodeIoctl(request: number): { dir: number; type: number; nr: number; size: number } {
  return {
    dir: (request >>> _IOC_DIRSHIFT) & 0x3,
    type: (request >>> _IOC_TYPESHIFT) & 0xff,
    nr: (request >>> _IOC_NRSHIFT) & 0xff,
    size: (request >>> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1),
  };
}

function byteLength(arg: Bytes): number {
  return arg instanceof ArrayBuffer ? arg.byteLength : arg.byteLength;
}

/**
 * `ioctl(2)`. With a buffer argument the request's encoded size must fit in it, so the kernel can never
 * read or write past the view (a RangeError before the syscall otherwise). Returns the non-negative result.
 * @throws SysError with the request number in `detail`.
 */
export function ioctl(fd: number, request: number, arg?: number | bigint | Bytes): number {
  if (arg !== undefined && typeof arg !== "number" && typeof arg !== "bigint") {
    const { size, dir } = decodeIoctl(request);
    if (dir !== _IOC_NONE && size > byteLength(arg))
      throw new RangeError(`ioctl 0x${request.toString(16)} needs ${size} bytes, buffer has ${byteLength(arg)}`);
  }
  return binding().ioctl(fd, request, arg);
}

/**
 * The address of a view's first byte, for structs that hold user pointers (e.g. privcmd's page arrays).
 * Valid only while the view is referenced and not detached.
 */
export function addressOf(view: Bytes): bigint {
  return binding().addressOf(view);
}
