import { binding } from "./native.js";
import { SysError } from "./errno.js";

export const MmapConstants = {
  get PROT_NONE() { return binding().constants.PROT_NONE; },
  get PROT_READ() { return binding().constants.PROT_READ; },
  get PROT_WRITE() { return binding().constants.PROT_WRITE; },
  get MAP_SHARED() { return binding().constants.MAP_SHARED; },
  get MAP_PRIVATE() { return binding().constants.MAP_PRIVATE; },
  get MAP_ANONYMOUS() { return binding().constants.MAP_ANONYMOUS; },
  get MAP_POPULATE() { return binding().constants.MAP_POPULATE; },
  get MAP_NORESERVE() { return binding().constants.MAP_NORESERVE; },
};

/** The system page size. */
export function pageSize(): number {
  return binding().constants.PAGE_SIZE;
}

export interface MmapOptions {
  /** PROT_* bits (default read + write). */
  prot?: number;
  /** MAP_* bits (default MAP_SHARED, or MAP_PRIVATE|MAP_ANONYMOUS without an fd). */
  flags?: number;
  /** The file or device to map; -1 or absent for anonymous memory. */
  fd?: number;
  /** Offset into the file, a multiple of the page size (for privcmd MMAP_RESOURCE, gntdev: an index). */
  offset?: number | bigint;
}

/**
 * `mmap(2)`: the mapping as an external ArrayBuffer, no copy. Release it with `munmap`; a mapping that is
 * garbage-collected first is unmapped by the finalizer and counted by `leakedMappings()`.
 */
export function mmap(length: number, options: MmapOptions = {}): ArrayBuffer {
  if (!Number.isSafeInteger(length) || length <= 0) throw new RangeError(`mmap length ${length} must be positive`);
  const c = binding().constants;
  const fd = options.fd ?? -1;
  const prot = options.prot ?? c.PROT_READ | c.PROT_WRITE;
  const flags = options.flags ?? (fd < 0 ? c.MAP_PRIVATE | c.MAP_ANONYMOUS : c.MAP_SHARED);
  const offset = options.offset ?? 0;
  if ((typeof offset === "number" && (!Number.isSafeInteger(offset) || offset < 0)) || (typeof offset === "bigint" && offset < 0n))
    throw new RangeError(`mmap offset ${String(offset)} must be a non-negative integer`);
  if (BigInt(offset) % BigInt(c.PAGE_SIZE) !== 0n)
    throw new RangeError(`mmap offset ${String(offset)} is not a multiple of the page size`);
  return binding().mmap(length, prot, flags, fd, offset);
}

/**
 * Detaches the buffer (every view of it now has length 0) and unmaps it. Returns false if it was already
 * unmapped: calling twice is safe.
 */
export function munmap(buffer: ArrayBuffer): boolean {
  if (!(buffer instanceof ArrayBuffer)) throw new TypeError("munmap takes the ArrayBuffer returned by mmap");
  return binding().munmap(buffer);
}

/**
 * Replaces `length` bytes at `offset` of a live mapping with a mapping of `fd` at `fileOffset` (MAP_FIXED).
 * Builds one contiguous view from several sources, e.g. non-contiguous frames of a memfd. The range must be
 * page-aligned and inside the mapping (checked by the addon), so nothing outside it can be replaced.
 */
export function mmapFixed(
  buffer: ArrayBuffer,
  offset: number,
  length: number,
  options: { fd: number; fileOffset?: number | bigint; prot?: number; flags?: number },
): void {
  const c = binding().constants;
  binding().mmapFixed(
    buffer,
    offset,
    length,
    options.prot ?? c.PROT_READ | c.PROT_WRITE,
    options.flags ?? c.MAP_SHARED,
    options.fd,
    options.fileOffset ?? 0,
  );
}

/** How many mappings were garbage-collected without `munmap` (each also logged to stderr by the addon). */
export function leakedMappings(): number {
  return binding().leakedMappings();
}

/** An owned mapping: `using m = new MemoryMapping(len, { fd })`. */
export class MemoryMapping implements Disposable {
  #buffer: ArrayBuffer | undefined;
  readonly length: number;

  constructor(length: number, options: MmapOptions = {}) {
    this.#buffer = mmap(length, options);
    this.length = length;
  }

  /** The mapped bytes. Throws EBADF after close. */
  get buffer(): ArrayBuffer {
    if (!this.#buffer) throw SysError.closed("MemoryMapping");
    return this.#buffer;
  }

  get closed(): boolean {
    return this.#buffer === undefined;
  }

  close(): void {
    const b = this.#buffer;
    if (!b) return;
    this.#buffer = undefined;
    munmap(b);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
