import { constants as osConstants } from "node:os";
import { binding, registerErrorClass } from "./native.js";

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(osConstants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** The `<errno.h>` name of an error number (`16` → `"EBUSY"`), or `"E<n>"` if Node does not know it. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** The error number for a name (`"EBUSY"` → 16). */
export function errnoOf(code: string): number {
  const v = (osConstants.errno as Record<string, number | undefined>)[code];
  if (v === undefined) throw new RangeError(`unknown errno name ${code}`);
  return v;
}

/**
 * A failed system call. `errno` is positive as in `<errno.h>`; `code` is its name, the same strings
 * Node's fs and net errors use, so callers match on `err.code === "EAGAIN"`.
 */
export class SysError extends Error {
  override readonly name = "SysError";
  readonly syscall: string;
  readonly errno: number;
  readonly code: string;
  readonly detail: string | undefined;

  constructor(syscall: string, errno: number, detail?: string, options?: ErrorOptions) {
    const code = errnoName(errno);
    super(`${syscall}${detail ? ` ${detail}` : ""}: ${code} (${describe(errno)})`, options);
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
    this.detail = detail;
  }

  /** A SysError for an operation on a closed object (`close()` then use). */
  static closed(what: string): SysError {
    return new SysError(what, osConstants.errno.EBADF, "already closed");
  }
}

function describe(errno: number): string {
  // util.getSystemErrorMessage is Node 22+; the addon gives libc's strerror text.
  try {
    return binding().strerror(errno);
  } catch {
    return `errno ${errno}`;
  }
}

registerErrorClass(SysError);
