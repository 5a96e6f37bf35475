import { binding } from "./native.js";

export interface MemfdOptions {
  /** MFD_ALLOW_SEALING. */
  allowSealing?: boolean;
}

/**
 * `memfd_create(2)` (close-on-exec): anonymous shared memory with an fd, the memory a vhost-user front-end
 * can hand to a backend. Size it with `ftruncate`.
 */
export function memfdCreate(name: string, options: MemfdOptions = {}): number {
  if (typeof name !== "string" || name.length === 0 || name.length > 249)
    throw new RangeError("memfd name must be 1..249 characters");
  return binding().memfdCreate(name, options.allowSealing ? binding().constants.MFD_ALLOW_SEALING : 0);
}

/** `ftruncate(2)`. */
export function ftruncate(fd: number, length: number | bigint): void {
  if ((typeof length === "number" && (!Number.isSafeInteger(length) || length < 0)) || (typeof length === "bigint" && length < 0n))
    throw new RangeError(`length ${String(length)} must be a non-negative integer`);
  binding().ftruncate(fd, length);
}
