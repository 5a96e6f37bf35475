// The package's one error class (STYLE.md §5). Every failure of a Xen operation carries the operation's name
// and, when a syscall or the hypervisor refused, the errno name; XenStore replies add the path.
import { SysError, errnoName } from "@xen-vhost/vmm-sys-util";

export type XenErrorKind =
  /** A /dev/xen node does not exist (not dom0, or the xen modules are not loaded). */
  | "DeviceMissing"
  /** The node exists but cannot be opened or the operation was refused (EACCES/EPERM). */
  | "PermissionDenied"
  /**
   * The kernel or hypervisor lacks the feature (ENOTTY, EOPNOTSUPP = ENOTSUP, ENOSYS), e.g. privcmd irqfd before
   * Linux 6.7, or a dm_op a Xen build does not have.
   */
  | "Unsupported"
  /** No sysctl/domctl interface version this package knows was accepted by the hypervisor. */
  | "InterfaceVersion"
  /** The domain does not exist (ESRCH) or the domid is not a valid domid_t. */
  | "NoSuchDomain"
  /** A hypercall, ioctl or DM_OP failed with another errno. */
  | "OperationFailed"
  /** Some pages of a foreign mapping could not be mapped (see `pageErrors`). */
  | "MappingFailed"
  /** A XenStore request got XS_ERROR (the errno name is in `code`). */
  | "XenStore"
  /** The XenStore connection closed or broke; pending requests fail with this. */
  | "Disconnected"
  /** A malformed or unexpected message / short read from a device or xenstored. */
  | "Protocol"
  /** The object was closed. */
  | "Closed";

export interface XenErrorDetails {
  /** The operation, e.g. "IOCTL_PRIVCMD_MMAPBATCH_V2", "sysctl getdomaininfolist", "read". */
  op: string;
  /** The errno name (`"ENOENT"`), when there was one. */
  code?: string;
  /** The positive errno, when known. */
  errno?: number;
  /** The device node or XenStore path involved. */
  path?: string;
  /** The domain involved. */
  domid?: number;
  /** Per-page errno values of a failed foreign mapping (0 = mapped). */
  pageErrors?: Int32Array;
}

export class XenError extends Error {
  override readonly name: string = "XenError";
  readonly kind: XenErrorKind;
  readonly op: string;
  readonly code: string | undefined;
  readonly errno: number | undefined;
  readonly path: string | undefined;
  readonly domid: number | undefined;
  readonly pageErrors: Int32Array | undefined;

  constructor(kind: XenErrorKind, message: string, details: XenErrorDetails, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
    this.op = details.op;
    this.code = details.code;
    this.errno = details.errno;
    this.path = details.path;
    this.domid = details.domid;
    this.pageErrors = details.pageErrors;
  }

  /** Whether retrying the same request may succeed (EAGAIN/EBUSY/EINTR, a reconnectable XenStore). */
  get retryable(): boolean {
    switch (this.kind) {
      case "Disconnected":
        return true;
      case "XenStore":
      case "OperationFailed":
        return this.code === "EAGAIN" || this.code === "EBUSY" || this.code === "EINTR";
      case "DeviceMissing":
      case "PermissionDenied":
      case "Unsupported":
      case "InterfaceVersion":
      case "NoSuchDomain":
      case "MappingFailed":
      case "Protocol":
      case "Closed":
        return false;
    }
  }

  /**
   * Classifies a failed syscall (the one errno classifier of the package): ENOENT on open → DeviceMissing,
   * EACCES/EPERM → PermissionDenied, ENOTTY/EOPNOTSUPP(ENOTSUP)/ENOSYS → Unsupported, ESRCH → NoSuchDomain.
   */
  static fromSysError(err: unknown, op: string, extra: { path?: string; domid?: number; opening?: boolean } = {}): XenError {
    if (err instanceof XenError) return err;
    if (!(err instanceof SysError)) {
      const message = err instanceof Error ? err.message : String(err);
      return new XenError("OperationFailed", `${op} failed: ${message}`, { op, ...pick(extra) }, { cause: err });
    }
    const kind = classify(err.code, extra.opening === true);
    const where = extra.path ? ` ${extra.path}` : extra.domid !== undefined ? ` (domain ${extra.domid})` : "";
    const text =
      kind === "DeviceMissing"
        ? `${op}: ${extra.path ?? "device"} does not exist (is this dom0 with the xen modules loaded?)`
        : `${op}${where}: ${err.code}`;
    return new XenError(kind, text, { op, code: err.code, errno: err.errno, ...pick(extra) }, { cause: err });
  }

  /** A failure reported as a negative return value (hypercall rc, per-page error). */
  static fromErrno(errno: number, op: string, extra: { path?: string; domid?: number } = {}): XenError {
    const code = errnoName(errno);
    const kind = classify(code, false);
    const where = extra.domid !== undefined ? ` (domain ${extra.domid})` : "";
    return new XenError(kind, `${op}${where}: ${code}`, { op, code, errno, ...pick(extra) });
  }

  /** The object was used after close(). */
  static closed(what: string): XenError {
    return new XenError("Closed", `${what} is closed`, { op: what, code: "EBADF" });
  }
}

function pick(extra: { path?: string; domid?: number }): { path?: string; domid?: number } {
  const out: { path?: string; domid?: number } = {};
  if (extra.path !== undefined) out.path = extra.path;
  if (extra.domid !== undefined) out.domid = extra.domid;
  return out;
}

function classify(code: string, opening: boolean): XenErrorKind {
  switch (code) {
    case "ENOENT":
    case "ENODEV":
    case "ENXIO":
      return opening ? "DeviceMissing" : "OperationFailed";
    case "EACCES":
    case "EPERM":
      return "PermissionDenied";
    // Linux's EOPNOTSUPP and ENOTSUP are one errno (95); errnoName() spells it ENOTSUP, so both names are
    // listed (Xen answers -EOPNOTSUPP for operations its build or the domain's configuration lacks).
    case "ENOTTY":
    case "ENOTSUP":
    case "EOPNOTSUPP":
    case "ENOSYS":
      return "Unsupported";
    case "ESRCH":
      return "NoSuchDomain";
    default:
      return "OperationFailed";
  }
}

/**
 * A XenStore failure: `XenStoreError ENOENT read /local/domain/7/name`. `code` is the errno name from the
 * XS_ERROR reply (or of the transport failure), `op` the request (read, write, watch...), `path` its path.
 */
export class XenStoreError extends XenError {
  override readonly name = "XenStoreError";

  constructor(kind: XenErrorKind, details: XenErrorDetails & { code: string }, options?: ErrorOptions) {
    super(kind, `XenStoreError ${details.code} ${details.op}${details.path !== undefined ? ` ${details.path}` : ""}`, details, options);
  }
}
