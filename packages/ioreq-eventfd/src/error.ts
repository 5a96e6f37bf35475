// The package's one error class (STYLE.md section 5). errno is classified in exactly one place,
// `classifyErrno`, so every binding (KVM now, Xen later) reports the same kinds for the same failures.
import { SysError } from "@xen-vhost/vmm-sys-util";

/**
 * What went wrong, hypervisor-agnostic:
 * - `DeviceUnavailable`: the hypervisor device node is missing or not accessible (`/dev/kvm`, `/dev/xen/privcmd`).
 * - `ApiVersion`: the device speaks an API version this package does not (KVM_GET_API_VERSION != 12).
 * - `Unsupported`: the hypervisor lacks a capability (no in-kernel irqchip, no KVM_CAP_IRQFD_RESAMPLE...).
 * - `AddressInUse`: an ioeventfd with the same address/length/datamatch is already registered.
 * - `EventfdInUse`: this eventfd is already bound as an irqfd.
 * - `NotRegistered`: deassign of something the hypervisor does not know.
 * - `InvalidArgument`: the hypervisor rejected an argument (bad GSI, overlapping memory slot...).
 * - `GuestFault`: the guest could not run (entry failure, internal emulation error, triple fault).
 * - `Hypervisor`: any other failure of the hypervisor interface; `cause` holds the SysError.
 */
export type NotifierErrorKind =
  | "DeviceUnavailable"
  | "ApiVersion"
  | "Unsupported"
  | "AddressInUse"
  | "EventfdInUse"
  | "NotRegistered"
  | "InvalidArgument"
  | "GuestFault"
  | "Hypervisor";

export class NotifierError extends Error {
  override readonly name = "NotifierError";
  readonly kind: NotifierErrorKind;

  constructor(kind: NotifierErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }

  /**
   * True when retrying with other arguments or a fallback path can help (a device model can switch from
   * the kernel path to a userspace relay); false for broken environments and guest faults.
   */
  get canFallBack(): boolean {
    switch (this.kind) {
      case "Unsupported":
      case "AddressInUse":
      case "EventfdInUse":
      case "InvalidArgument":
        return true;
      case "DeviceUnavailable":
      case "ApiVersion":
      case "NotRegistered":
      case "GuestFault":
      case "Hypervisor":
        return false;
    }
  }
}

/**
 * Maps a failed hypervisor syscall to a NotifierError, keeping the SysError as `cause`. `what` names the
 * operation ("KVM_IOEVENTFD assign at 0x10000"). Non-SysErrors (RangeError, TypeError) pass through.
 */
export function classifyErrno(err: unknown, what: string, overrides: Partial<Record<string, NotifierErrorKind>> = {}): unknown {
  if (!(err instanceof SysError)) return err;
  const kind: NotifierErrorKind =
    overrides[err.code] ??
    (() => {
      switch (err.code) {
        case "ENOENT":
        case "ENODEV":
        case "ENXIO":
        case "EACCES":
        case "EPERM":
          return "DeviceUnavailable";
        case "ENOTTY":
        case "EOPNOTSUPP":
        case "ENOTSUP": // same errno (95) on Linux; Node names it ENOTSUP
        case "ENOSYS":
          return "Unsupported";
        case "EEXIST":
          return "AddressInUse";
        case "EBUSY":
          return "EventfdInUse";
        case "EINVAL":
          return "InvalidArgument";
        default:
          return "Hypervisor";
      }
    })();
  return new NotifierError(kind, `${what}: ${err.code}`, { cause: err });
}

/**
 * Maps a failed Xen operation (a `XenError` from @xen-vhost/xen-sys, or a SysError) to a NotifierError, keeping
 * it as `cause`. Recognised by shape (`kind` + `code`) so this module does not depend on xen-sys.
 */
export function classifyXenError(err: unknown, what: string): unknown {
  if (err instanceof NotifierError || !(err instanceof Error)) return err;
  if (err instanceof SysError) return classifyErrno(err, what);
  const { kind, code } = err as Error & { kind?: unknown; code?: unknown };
  if (typeof kind !== "string") return err;
  const byKind: NotifierErrorKind | undefined =
    kind === "DeviceMissing" || kind === "PermissionDenied"
      ? "DeviceUnavailable"
      : kind === "Unsupported"
        ? "Unsupported"
        : kind === "NoSuchDomain"
          ? "InvalidArgument"
          : undefined;
  const byCode: NotifierErrorKind | undefined =
    code === "EEXIST"
      ? "AddressInUse"
      : code === "EBUSY"
        ? "EventfdInUse"
        : code === "EINVAL"
          ? "InvalidArgument"
          : code === "ENOENT"
            ? "NotRegistered"
            : // privcmd without CONFIG_XEN_PRIVCMD_EVENTFD answers -EOPNOTSUPP (Node names errno 95 ENOTSUP).
              code === "ENOTTY" || code === "EOPNOTSUPP" || code === "ENOTSUP" || code === "ENOSYS"
              ? "Unsupported"
              : undefined;
  return new NotifierError(byKind ?? byCode ?? "Hypervisor", `${what}: ${err.message}`, { cause: err });
}
