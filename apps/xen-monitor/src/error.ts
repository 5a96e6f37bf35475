// The app's one error class: what went wrong in words a person running the monitor can act on, and the
// exit status a script can branch on.
import { XenError } from "@xen-vhost/xen-sys";

export type MonitorErrorKind =
  /** Bad command line. */
  | "Usage"
  /** /dev/xen/privcmd does not exist: not running on Xen, or the xen_privcmd module is not loaded. */
  | "PrivcmdMissing"
  /** privcmd cannot be opened (not root), or Xen refused the sysctl (EPERM: not dom0 / no control privilege). */
  | "NotPrivileged"
  /** Xen accepted none of the sysctl interface versions xen-sys knows. */
  | "InterfaceVersion"
  /** Anything else (a hypercall failing mid-run, the simulator going away). */
  | "Failed";

/** Exit statuses, one per kind (documented in --help and the README). */
export const EXIT_CODES = { ok: 0, Failed: 1, Usage: 2, PrivcmdMissing: 3, NotPrivileged: 4, InterfaceVersion: 5 } as const;

export class MonitorError extends Error {
  override readonly name = "MonitorError";
  readonly kind: MonitorErrorKind;

  constructor(kind: MonitorErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }

  get exitCode(): number {
    switch (this.kind) {
      case "Usage":
        return EXIT_CODES.Usage;
      case "PrivcmdMissing":
        return EXIT_CODES.PrivcmdMissing;
      case "NotPrivileged":
        return EXIT_CODES.NotPrivileged;
      case "InterfaceVersion":
        return EXIT_CODES.InterfaceVersion;
      case "Failed":
        return EXIT_CODES.Failed;
    }
  }

  /** Classifies a failure of opening privcmd or of the first hypercalls (xen-sys's XenError kinds). */
  static from(err: unknown): MonitorError {
    if (err instanceof MonitorError) return err;
    if (!(err instanceof XenError)) {
      return new MonitorError("Failed", err instanceof Error ? err.message : String(err), { cause: err });
    }
    const what = `${err.op}${err.code !== undefined ? ` (${err.code})` : ""}`;
    switch (err.kind) {
      case "DeviceMissing":
        return new MonitorError(
          "PrivcmdMissing",
          `${err.path ?? "/dev/xen/privcmd"} does not exist: this is not a Xen domain, or the xen_privcmd module is not loaded ` +
            "(set XEN_VHOST_SIM to a xen-sim socket to watch the simulator)",
          { cause: err },
        );
      case "PermissionDenied":
        return err.op.startsWith("open")
          ? new MonitorError("NotPrivileged", `cannot open ${err.path ?? "/dev/xen/privcmd"} (${err.code ?? "EACCES"}): run as root in dom0`, { cause: err })
          : new MonitorError("NotPrivileged", `not dom0: Xen refused ${what}; run xen-monitor in dom0 (or a domain with control privileges)`, { cause: err });
      case "InterfaceVersion":
        return new MonitorError("InterfaceVersion", `unsupported Xen: ${err.message}`, { cause: err });
      case "Unsupported":
      case "NoSuchDomain":
      case "OperationFailed":
      case "MappingFailed":
      case "XenStore":
      case "Disconnected":
      case "Protocol":
      case "Closed":
        return new MonitorError("Failed", err.message, { cause: err });
    }
  }
}
