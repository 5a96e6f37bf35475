// The package's one error class (STYLE.md §5). Guest-memory accesses still fail with vm-memory's
// GuestMemoryError (virtio-queue and every other consumer match on that); this error is its `cause` when a
// Xen mapping was refused, and is thrown directly by the setup calls (mapping a region, opening the fd a
// backend needs, discovering a domain's RAM).
import { errnoName } from "@xen-vhost/vmm-sys-util";

/**
 * - `ForeignMapFailed`: IOCTL_PRIVCMD_MMAPBATCH_V2 refused a frame (`gfn`, `errno`, `code` name the first bad
 *   one) or the whole call failed (the XenError is the cause).
 * - `GrantMapFailed`: IOCTL_GNTDEV_MAP_GRANT_REF / mmap refused a run of grant references (`grantRef` is the
 *   first of the run; a reference the guest never granted is the usual reason).
 * - `GrantCopyFailed`: IOCTL_GNTDEV_GRANT_COPY refused a segment (`grantRef` names its reference: not granted,
 *   revoked, or read-only for a copy back) or the call failed (the errno, when there is one).
 * - `NotAGrantAddress`: an address given as a grant address lacks bit 63 or names a reference above 2^32 - 1.
 * - `FdUnavailable`: the fd a vhost-user backend needs (privcmd or gntdev) could not be opened.
 * - `LayoutUnavailable`: the domain's RAM layout cannot be derived (unknown domain, bogus page counts).
 * - `Closed`: the region was closed.
 */
export type XenMemoryErrorKind =
  | "ForeignMapFailed"
  | "GrantMapFailed"
  | "GrantCopyFailed"
  | "NotAGrantAddress"
  | "FdUnavailable"
  | "LayoutUnavailable"
  | "Closed";

export interface XenMemoryErrorDetails {
  domid?: number;
  /** The first guest frame that could not be mapped. */
  gfn?: bigint;
  /** The first grant reference of a run that could not be mapped. */
  grantRef?: number;
  /** Positive errno of the failure, when there was one. */
  errno?: number;
  /** Per-page errno values of a failed foreign mapping (0 = mapped). */
  pageErrors?: Int32Array;
}

export class XenMemoryError extends Error {
  override readonly name = "XenMemoryError";
  readonly kind: XenMemoryErrorKind;
  readonly domid: number | undefined;
  readonly gfn: bigint | undefined;
  readonly grantRef: number | undefined;
  readonly errno: number | undefined;
  /** The errno name ("EFAULT"), when `errno` is set. */
  readonly code: string | undefined;
  readonly pageErrors: Int32Array | undefined;

  constructor(kind: XenMemoryErrorKind, message: string, details: XenMemoryErrorDetails = {}, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
    this.domid = details.domid;
    this.gfn = details.gfn;
    this.grantRef = details.grantRef;
    this.errno = details.errno;
    this.code = details.errno === undefined ? undefined : errnoName(details.errno);
    this.pageErrors = details.pageErrors;
  }
}

/** Hex form for messages ("0x1000"). */
export function hex(v: bigint | number): string {
  return `0x${v.toString(16)}`;
}

/** The errno name and number of a lower-level error (XenError / SysError), if it has them. */
export function errnoOfCause(err: unknown): number | undefined {
  const e = err as { errno?: unknown } | null;
  return e && typeof e.errno === "number" ? e.errno : undefined;
}
